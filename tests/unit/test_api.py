"""sgpfab.api: bad input raises an SgpfabError subclass before anything connects (the inventory's
hosts are unresolvable *.invalid names, so a connection attempt would show as a RemoteError), and
FleetStatus.ok reads the rows as `fab status` does."""

from pathlib import Path
from typing import TypedDict

import pytest

from sgpfab import api
from sgpfab.errors import InputError, InventoryError, RemoteError

INVENTORY = """\
hosts:
  h1: {hostname: h1.invalid}
  h2: {hostname: h2.invalid}
groups:
  g: [h1, h2]
apps:
  a1:
    source: app
    processes: {web: {server: command, command: "python -m http.server $PORT"}}
"""


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    p = tmp_path / "fleet.yaml"
    p.write_text(INVENTORY)
    return p


class _Quiet(TypedDict):
    say: api.Say


QUIET: _Quiet = {"say": lambda _: None}


@pytest.mark.parametrize(
    "call, error",
    [
        (
            lambda i: api.deploy("nope", "1.0.0", inventory=i, **QUIET),
            "-H: unknown host or group 'nope' (known: g, h1, h2)",
        ),
        (lambda i: api.deploy([], "1.0.0", inventory=i, **QUIET), "no hosts given"),
        (lambda i: api.deploy("g", "1.x", inventory=i, **QUIET), "invalid version '1.x'"),
        (lambda i: api.deploy("g", None, inventory=i, **QUIET), "no version: give the version to deploy"),
        (lambda i: api.deploy("g", "1.0.0", app="zz", inventory=i, **QUIET), "unknown app 'zz' (known: a1)"),
        (lambda i: api.deploy("g", "1.0.0", parallel=0, inventory=i, **QUIET), "--parallel must be at least 1"),
        (
            lambda i: api.deploy("g", "1.0.0", source=i.parent / "app", bundle=i.parent, inventory=i, **QUIET),
            "give either bundle or source, not both",
        ),
        (lambda i: api.deploy("g", "1.0.0", bundle=i.parent / "missing", inventory=i, **QUIET), "no bundle at "),
        (lambda i: api.rollback("h1", db="drop", inventory=i, **QUIET), "db must be one of: keep, restore"),
        (lambda i: api.rollback("h1", "v1", inventory=i, **QUIET), "invalid version 'v1'"),
        (lambda i: api.status(["h1", "zz"], inventory=i, **QUIET), "-H: unknown host or group 'zz'"),
    ],
)
def test_bad_input_raises_before_connecting(inv, call, error):
    with pytest.raises(InputError) as e:
        call(inv)
    assert str(e.value).startswith(error) and "\n" not in str(e.value)


def test_a_missing_inventory_is_an_inventory_error(tmp_path):
    with pytest.raises(InventoryError, match="inventory not found"):
        api.status("h1", inventory=tmp_path / "none.yaml", **QUIET)


def test_the_default_inventory_is_hosts_fleet_yaml_in_the_current_directory(inv, tmp_path, monkeypatch):
    monkeypatch.delenv("SGPFAB_INVENTORY", raising=False)
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "fleet.yaml").write_text(INVENTORY.replace("source: app", "source: ../app"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="known: g, h1, h2"):
        api.status("nope", **QUIET)


def test_good_input_goes_on_to_connect(inv):
    """The checks above are not refusing everything: valid input reaches the hosts."""
    with pytest.raises(RemoteError, match=r"h1: cannot connect.*\(nothing was changed\)"):
        api.status("h1", inventory=inv, **QUIET)


def row(host, version="1.0.0", digest="abc", health="healthy"):
    return {"host": host, "version": version, "digest": digest, "health": health}


@pytest.mark.parametrize(
    "rows, drift, ok",
    [
        ([row("h1"), row("h2")], "", True),
        ([row("h1"), row("h2", health="web: failed")], "", False),
        ([row("h1"), row("h2", "1.0.1", "def")], "version drift: ...", False),
    ],
)
def test_fleet_status_ok(rows, drift, ok):
    assert api.FleetStatus(rows, drift).ok is ok
