import textwrap

import pytest

from sgpfab.errors import InputError, InventoryError
from sgpfab.inventory import Inventory


def write(tmp_path, text):
    (tmp_path / "ssh_config").touch()  # the file GOOD names
    p = tmp_path / "fleet.yaml"
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
    ssh_config: ssh_config
    defaults: {user: deploy, api_root: /srv/sgp-api, port: 8000}
    hosts:
      staging1: {hostname: 10.0.0.5}
      prod1: null
      prod2: {port: 8001, run_as: sgpapi}
      win1: {os: windows, api_root: 'C:\\api', user: administrator, run_as: sgpsvc}
    groups:
      staging: [staging1]
      prod: [prod1, prod2]
"""


def test_hosts_inherit_defaults_and_know_their_groups(tmp_path):
    inv = Inventory.load(write(tmp_path, GOOD))
    p2 = inv.hosts["prod2"]
    assert (p2.user, p2.api_root, p2.port, p2.service_user, p2.groups) == ("deploy", "/srv/sgp-api", 8001, "sgpapi", ("prod",))
    assert inv.hosts["staging1"].address == "10.0.0.5"
    assert inv.hosts["prod1"].address == "prod1"
    assert inv.hosts["win1"].os == "windows"
    assert inv.ssh_config == tmp_path / "ssh_config"


def test_resolve_expands_groups_in_order_without_repeats(tmp_path):
    inv = Inventory.load(write(tmp_path, GOOD))
    assert [h.name for h in inv.resolve("prod2,prod,staging")] == ["prod2", "prod1", "staging1"]
    assert [h.name for h in inv.resolve(["all"])] == ["staging1", "prod1", "prod2", "win1"]


def test_unknown_host_is_a_one_line_input_error(tmp_path):
    inv = Inventory.load(write(tmp_path, GOOD))
    with pytest.raises(InputError, match="unknown host or group 'prod9'"):
        inv.resolve("prod1,prod9")
    with pytest.raises(InputError, match="no hosts given"):
        inv.resolve([])


@pytest.mark.parametrize("bad, message", [
    ("hosts: {h1: {api_root: /srv/../etc}}", "api_root"),
    ("hosts: {h1: {api_root: 'relative/path'}}", "api_root"),
    ("hosts: {h1: {api_root: '/srv/x y'}}", "api_root"),
    ("hosts: {h1: {service: 'a;b'}}", "invalid service"),
    ("hosts: {h1: {user: root}}", "must not run as root"),
    ("hosts: {h1: {os: solaris}}", "os"),
    ("hosts: {h1: {port: 70000}}", "port"),
    ("hosts: {h1: {colour: blue}}", "colour"),
    ("hosts: {'bad host': null}", "invalid host name"),
    ("hosts: {h1: null}\ngroups: {g: [h2]}", "unknown host"),
    ("hosts: {h1: null}\ngroups: {h1: [h1]}", "clash"),
    ("hosts: [", "not valid YAML"),
])
def test_malformed_inventory_is_refused(tmp_path, bad, message):
    with pytest.raises(InventoryError, match=message):
        Inventory.load(write(tmp_path, bad))


def test_missing_ssh_files_are_named(tmp_path):
    with pytest.raises(InventoryError, match="ssh_config file not found: .*nope"):
        Inventory.load(write(tmp_path, "ssh_config: nope\nhosts: {h1: null}"))
    with pytest.raises(InventoryError, match="known_hosts file not found"):
        Inventory.load(write(tmp_path, "known_hosts: /nonexistent/kh\nhosts: {h1: null}"))


def test_missing_inventory(tmp_path):
    with pytest.raises(InventoryError, match="not found"):
        Inventory.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize("field", ["service", "user", "api_root", "hostname", "health_path"])
def test_trailing_newline_does_not_slip_through_validation(tmp_path, field):
    value = {"service": "sgp", "user": "deploy", "api_root": "/srv/x", "hostname": "h", "health_path": "/health"}[field]
    with pytest.raises(InventoryError):
        Inventory.load(write(tmp_path, f'hosts: {{h1: {{{field}: "{value}\\n"}}}}'))
