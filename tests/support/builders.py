"""Builders shared by the unit tests: inventories from YAML text, the real host helper run
in-process, stand-in host sessions for the rollout engine, and hostile strings.

Every helper takes keyword arguments after its first one (no positional booleans).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import textwrap
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sgpfab.inventory import Inventory

# -- inventories ---------------------------------------------------------------------------------

MINIMAL_APP = {"source": "app", "processes": {"web": {"server": "uvicorn", "app": "shop.main:app"}}}


def write_inventory(
    directory: Path, *, text: str | None = None, data: dict | None = None, name: str = "fleet.yaml"
) -> Path:
    """Write an inventory file (YAML text, or a mapping dumped as YAML) and return its path.
    The apps' `source` folders need not exist (nothing here reads them)."""
    if (text is None) == (data is None):
        raise TypeError("give exactly one of text= or data=")
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text) if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def load_inventory(directory: Path, *, text: str | None = None, data: dict | None = None) -> Inventory:
    return Inventory.load(write_inventory(directory, text=text, data=data))


def inventory_data(*, hosts: dict | None = None, apps: dict | None = None, groups: dict | None = None, **top) -> dict:
    """An inventory mapping with one host and one app unless told otherwise."""
    data = {
        "hosts": hosts if hosts is not None else {"h1": {"user": "deploy"}},
        "apps": apps if apps is not None else {"shop": dict(MINIMAL_APP)},
    }
    if groups is not None:
        data["groups"] = groups
    data.update(top)
    return data


def app_with(**overrides) -> dict:
    """MINIMAL_APP with some keys replaced (a None value removes the key)."""
    out = dict(MINIMAL_APP)
    for k, val in overrides.items():
        if val is None:
            out.pop(k, None)
        else:
            out[k] = val
    return out


# The realistic instance the golden tests pin: a FastAPI-style app served by gunicorn with
# uvicorn workers, a background worker with a hostile-but-valid command, two release hooks,
# an api_root with '.' and '-', and a version with pre-release and build metadata.
GOLDEN_INVENTORY = """\
defaults:
  user: deploy
hosts:
  prod1: {hostname: 10.0.0.5}
groups:
  prod:
    hosts: [prod1]
    python: /usr/bin/python3.11
apps:
  shop:
    source: ../shop
    api_root: /srv/shop-api.v2
    service: shop-api
    port: 8001
    bind: 127.0.0.1
    run_as: shopsvc
    processes:
      web: {server: gunicorn, app: "shop.main:create_app()", interface: asgi, workers: 3,
            args: ["--timeout=30", "--graceful-timeout", "20"]}
      worker: "python -m shop.worker --queue 'high prio' --note \\"$HOME\\" ; echo done"
      beat: {command: "celery -A shop beat --schedule=/tmp/beat.db"}
    release:
      - alembic upgrade head
      - python -c 'import os; print(os.environ["DATABASE_URL"])' | tee /dev/null
    writable: [static/cache, media]
    health: {path: /healthz, status: [200, 204], body: '"status": ?"ok"', host_header: shop.example.com}
    env:
      SECRET_KEY: {secret: shop_secret_key}
      MEDIA_ROOT: "{shared}/media"
  blog:
    source: ../blog
    bind: "::"
    port: 8002
    run_as: blog
    database: {engine: postgresql}
    processes:
      web: {server: uvicorn, app: "blog.asgi:make_app", factory: true, workers: 2, args: [--proxy-headers]}
    release: [python manage.py migrate --noinput]
  legacy:
    source: ../legacy
    service: legacy.app
    bind: fd00::5
    port: 9000
    run_as: legacy
    processes:
      web: {server: command, command: "bin/legacy-server --port $PORT --listen-fds", socket: true}
  batch:
    source: ../batch
    port: 9001
    run_as: batch
    database: {engine: none}
    processes:
      web: {server: command, command: "python -m http.server $PORT"}
      worker: python -m batch.run
  cron:
    source: ../cron
    run_as: cron_user
    processes:
      tick: "while true; do python -m cron.tick; sleep 60; done"
"""
GOLDEN_RELEASE = "v1.0.1-rc.1+b7"


def golden_instance(directory: Path, *, app: str = "shop"):
    """A golden Instance (an app of GOLDEN_INVENTORY on prod1), built through Inventory."""
    return load_inventory(directory, text=GOLDEN_INVENTORY).instance(app, "prod1")


# -- the host helper, run for real ---------------------------------------------------------------

_stdio_lock = threading.Lock()


@dataclass
class HostctlResult:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> dict | None:
        """The answer, without the `_cmd` tag every answer carries (checked here once)."""
        lines = self.out.strip().splitlines()
        if not lines:
            return None
        data = json.loads(lines[-1])
        assert isinstance(data.pop("_cmd", None), str), "every answer names its sub-command"
        return data


def hostctl(root: Path, *args: str, stdin: object = None) -> HostctlResult:
    """Run sgpfab/remote/hostctl.py's main() in this process against API_ROOT `root`, with
    stdin (a str, or an object sent as JSON) and stdout/stderr captured. An exception that
    escapes main() is reported as the interpreter would: exit 1 and a traceback on stderr."""
    from sgpfab.remote import hostctl as hc

    text = "" if stdin is None else (stdin if isinstance(stdin, str) else json.dumps(stdin))
    out, err = io.StringIO(), io.StringIO()
    with _stdio_lock:
        old_in = sys.stdin
        sys.stdin = io.StringIO(text)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = hc.main(["--root", str(root), *args])
                except SystemExit as e:  # argparse refusals
                    rc = e.code if isinstance(e.code, int) else 1
                except Exception:
                    traceback.print_exc()
                    rc = 1
        finally:
            sys.stdin = old_in
    return HostctlResult(rc, out.getvalue(), err.getvalue())


def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def stage_release(
    root: Path,
    name: str,
    *,
    files: dict[str, str | bytes] | None = None,
    manifest: dict | None = None,
    version: str | None = None,
) -> Path:
    """A staged release releases/.partial-NAME with `files`, and its manifest in incoming/NAME
    (by default one that matches the files exactly)."""
    files = {"app/main.py": "print('hi')\n", "README": "r\n"} if files is None else files
    partial = root / "releases" / f".partial-{name}"
    partial.mkdir(parents=True)
    for rel, content in files.items():
        p = partial / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    if manifest is None:
        manifest = {"version": version or name[1:], "files": {rel: sha256(c) for rel, c in files.items()}, "wheels": {}}
    inc = root / "incoming" / name
    inc.mkdir(parents=True, exist_ok=True)
    (inc / "manifest.json").write_text(json.dumps(manifest))
    return partial


def complete_release(root: Path, name: str, *, meta: dict | None = None, bad: str | None = None) -> Path:
    """A finished release directory (with its completion marker), optionally marked bad."""
    d = root / "releases" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / ".sgpfab-release.json").write_text(json.dumps(meta if meta is not None else {"version": name[1:]}))
    if bad is not None:
        (d / ".sgpfab-bad").write_text(bad)
    return d


# -- stand-in host sessions for the rollout engine ----------------------------------------------


@dataclass
class FakeState:
    current: str | None


@dataclass
class FakeSession:
    """What rollout.run uses of a HostSession: name, current_version, state(), timings."""

    name: str
    current_version: str | None = "1.0.0"
    timings: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    state_fails: bool = False

    def state(self) -> FakeState:
        if self.state_fails:
            raise OSError("connection lost")
        return FakeState(f"v{self.current_version}" if self.current_version else None)


class Gauge:
    """How many hosts are being worked on at once (and the most ever)."""

    def __init__(self):
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    @contextlib.contextmanager
    def inside(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self.lock:
                self.now -= 1


# -- hostile strings -----------------------------------------------------------------------------

# Single-line values that must survive quoting exactly.
HOSTILE_ONE_LINE = [
    "plain",
    "with space",
    " leading and trailing ",
    "it's",
    "''",
    '"',
    '"double"',
    "$HOME",
    "${HOME}",
    "$(id)",
    "`id`",
    "a\\b",
    "\\",
    "back\\\\slash",
    "#not a comment",
    "a # b",
    "semi;colon|pipe&amp",
    "glob*?[x]",
    "tab\there",
    "€ ünïcödé 中文",
    "%I %n %%",
    "=equals=",
    "'mixed\" quotes$`\\",
    "~user",
    "!bang",
    "",
]
# Values that must never reach a host: line breaks and control characters.
CONTROL = [
    "new\nline",
    "carriage\rreturn",
    "nul\x00byte",
    "esc\x1b[31m",
    "del\x7f",
    "bell\x07",
    "vt\x0b",
    "ff\x0c",
    "fs\x1c",
]
