"""End-to-end fixtures: a real sandbox fleet (nspawn hosts with systemd + sshd), booted once.

Each test gets its own app "slot" on the same hosts (API_ROOT, service name and port of its own),
so tests do not depend on each other's leftovers.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from sgpfab.sandbox import fleet as sandbox

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).with_name("fab"))
FLEET_NAME, FLEET_HOSTS, FLEET_SUBNET = "pytest", 4, 251  # staging1, prod1, prod2, prod3
_slots = itertools.count(1)


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def fleet():
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests need root to boot the sandbox fleet (run: sudo bash scripts/test.sh)")
    f = sandbox.up(FLEET_NAME, FLEET_HOSTS, FLEET_SUBNET, log=lambda *_: None)
    try:
        yield f
    finally:
        sandbox.down(FLEET_NAME, log=lambda *_: None)


class Slot:
    """One app installation on every fleet host, driven through the real `fab` command."""

    def __init__(self, fleet: sandbox.Fleet, tmp: Path):
        n = next(_slots)
        self.fleet, self.tmp = fleet, tmp
        self.api_root, self.service, self.port = f"/srv/e2e-{n}", f"sgp-e2e-{n}", 8100 + n
        inv = yaml.safe_load(fleet.inventory.read_text())
        inv["ssh_config"], inv["known_hosts"] = str(fleet.ssh_config), str(fleet.known_hosts)
        inv["defaults"].update(api_root=self.api_root, service=self.service, port=self.port, health_timeout=25)
        self.inventory = tmp / "fleet.yaml"
        self.inventory.write_text(yaml.safe_dump(inv))
        self.hosts = [h.name for h in fleet.hosts][:2]  # most tests need two; rollout tests use all_hosts
        self.all_hosts = [h.name for h in fleet.hosts]
        self.dist = tmp / "dist"  # bundles built by this test only

    def configure(self, app: dict | None = None, **defaults) -> None:
        """Change this slot's inventory: host defaults and/or app settings."""
        inv = yaml.safe_load(self.inventory.read_text())
        inv["defaults"].update(defaults)
        inv["app"].update(app or {})
        self.inventory.write_text(yaml.safe_dump(inv))

    def popen(self, *args: str) -> subprocess.Popen:
        """Start `fab` in its own process group (so a test can kill it like a dying laptop)."""
        env = {**os.environ, "SGPFAB_INVENTORY": str(self.inventory), "COLUMNS": "200",
               "SGPFAB_DIST": str(self.dist)}
        return subprocess.Popen([FAB, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def fab(self, *args: str, ok: bool | None = True, inventory: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "SGPFAB_INVENTORY": str(inventory or self.inventory), "COLUMNS": "200",
               "SGPFAB_DIST": str(self.dist)}
        r = subprocess.run([FAB, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if ok is True:
            assert r.returncode == 0, f"fab {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        elif ok is False:
            assert r.returncode != 0, f"fab {' '.join(args)} should have failed:\n{r.stdout}"
        return r

    def url(self, host: str, path: str) -> str:
        return f"http://{self.fleet.ip(host)}:{self.port}{path}"

    def get(self, host: str, path: str = "/health"):
        """A real HTTP request from the controller to the host; None if nothing answers."""
        try:
            with urllib.request.urlopen(self.url(host, path), timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError):
            return None

    def version(self, host: str) -> str | None:
        h = self.get(host)
        return h["version"] if h else None

    def post_item(self, host: str, name: str) -> dict:
        req = urllib.request.Request(self.url(host, "/items"), data=json.dumps({"name": name}).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def item_names(self, host: str) -> list[str]:
        return [i["name"] for i in self.get(host, "/items")]

    def ssh(self, host: str, command: str) -> str:
        r = subprocess.run(["ssh", "-F", str(self.fleet.ssh_config), host, command],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def current(self, host: str) -> str | None:
        out = self.ssh(host, f"readlink {self.api_root}/releases/current || true").strip()
        return out or None

    def releases(self, host: str) -> list[str]:
        return sorted(self.ssh(host, f"ls -A {self.api_root}/releases").split())

    def snapshot(self, host: str) -> str:
        """Everything under API_ROOT (names, sizes, link targets) plus the unit: to prove 'nothing changed'."""
        return self.ssh(host, f"find {self.api_root} /etc/systemd/system/{self.service}.service "
                              "-printf '%p %s %l\\n' 2>/dev/null | sort || true")


@pytest.fixture
def slot(fleet, tmp_path):
    s = Slot(fleet, tmp_path)
    yield s
    for h in s.all_hosts:  # stop this slot's service (and socket) so later tests run on quiet hosts
        subprocess.run(["ssh", "-F", str(fleet.ssh_config), h, f"sudo systemctl stop {s.service}.socket {s.service} || true"],
                       capture_output=True, timeout=60)


@pytest.fixture
def app_variant(tmp_path):
    """make(name, append=..., files={...}): a copy of the example app, changed."""
    def make(name: str, append: str = "", files: dict | None = None) -> Path:
        d = tmp_path / name
        subprocess.run(["cp", "-r", str(ROOT / "examples" / "sgp_api"), str(d)], check=True)
        if append:
            with open(d / "main.py", "a") as f:
                f.write("\n" + append + "\n")
        for rel, content in (files or {}).items():
            (d / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
        return d
    return make


@pytest.fixture
def broken_app(app_variant) -> Path:
    """The example app with a fatal error at import: the service can never start."""
    return app_variant("broken_app", append=BROKEN_AT_STARTUP)


# Imports fine (so the bundle builds and schema.sql is generated) but cannot start serving.
BROKEN_AT_STARTUP = """
@asynccontextmanager
async def _broken_lifespan(_app):
    raise RuntimeError("this release is broken on purpose")
    yield

app.router.lifespan_context = _broken_lifespan
"""
