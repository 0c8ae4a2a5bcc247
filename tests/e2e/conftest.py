"""End-to-end fixtures: one real sandbox fleet (nspawn hosts with systemd + sshd) for the run.

With pytest-xdist the workers share the fleet: the first one to need it boots it under a file
lock, and the controlling process tears it down at the end. Each test gets its own app "slot" on
those hosts (an API_ROOT, service name and port of its own), driven through the real `fab`
command, so tests do not depend on each other's leftovers.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.e2e_fleet import FLEET_HOSTS, FLEET_NAME, FLEET_SUBNET, LOCK

from sgpfab.sandbox import fleet as sandbox

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FAB = str(Path(sys.executable).with_name("fab"))
SECRETS = {"SGPFAB_SECRET_TASKS_SECRET_KEY": "tasks-e2e-secret-Zq9", "SGPFAB_SECRET_BLOG_SECRET_KEY": "blog-e2e-s3cret"}


def _run_id(config) -> str:
    return config.workerinput["sgpfab_run"] if hasattr(config, "workerinput") else config.sgpfab_run


@pytest.fixture(scope="session")
def fleet(request):
    """The run's fleet: booted by whichever worker needs it first."""
    if os.geteuid() != 0:
        pytest.fail("the end-to-end tests need root to boot the sandbox fleet (run: sudo bash scripts/test.sh)")
    run = _run_id(request.config)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        f = sandbox.Fleet.load(FLEET_NAME)
        mine = f is not None and (f.dir / "run-id").is_file() and (f.dir / "run-id").read_text() == run
        if not mine:
            f = sandbox.up(FLEET_NAME, FLEET_HOSTS, FLEET_SUBNET, log=lambda *_: None)
            (f.dir / "run-id").write_text(run)
    return f


def next_slot() -> int:
    """A slot number unique in this run across every worker (even one that was restarted)."""
    path = Path(f"/run/sgpfab-e2e-slots-{os.environ.get('SGPFAB_E2E_RUN', 'x')}")
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        n = int(path.read_text() or 0) + 1 if path.exists() else 1
        path.write_text(str(n))
    return n


class Slot:
    """One app installation on every fleet host, driven through the real `fab` command."""

    fab_path, cwd = FAB, ROOT

    def __init__(self, fleet: sandbox.Fleet, tmp: Path, n: int, kind: str = "sgp"):
        self.fleet, self.tmp, self.n, self.kind = fleet, tmp, n, kind
        self.api_root, self.service, self.port = f"/srv/e2e-{n}", f"e2e{n}", 9000 + n
        self.app = kind
        examples = yaml.safe_load((ROOT / "hosts" / "fleet.yaml").read_text())["apps"]
        app = examples[kind]
        app["source"] = str((ROOT / "hosts" / app["source"]).resolve())
        app.update(api_root=self.api_root, service=self.service, port=self.port)
        app.setdefault("health", {})["timeout"] = 40
        self.inv: dict[str, Any] = {
            "ssh_config": str(fleet.ssh_config),
            "known_hosts": str(fleet.known_hosts),
            "defaults": {"user": "deploy"},
            "hosts": {h.name: None for h in fleet.hosts},
            "groups": {"staging": ["staging1"], "prod": [h.name for h in fleet.hosts[1:]]},
            "apps": {kind: app},
        }
        self.inventory = tmp / "fleet.yaml"
        self._write()
        self.hosts = [h.name for h in fleet.hosts][:2]  # most tests need two; rollout tests use all_hosts
        self.all_hosts = [h.name for h in fleet.hosts]
        self.dist = tmp / "dist"  # bundles built by this test only
        self.env = dict(SECRETS)

    def _write(self) -> None:
        self.inventory.write_text(yaml.safe_dump(self.inv, sort_keys=False))

    def configure(self, **settings) -> None:
        """Change this slot's app settings (apps.KIND.*); a None value removes a setting."""
        app = self.inv["apps"][self.kind]
        for k, v in settings.items():
            if v is None:
                app.pop(k, None)
            else:
                app[k] = v
        self._write()

    def configure_host(self, host: str, **settings) -> None:
        self.inv["hosts"][host] = {**(self.inv["hosts"][host] or {}), **settings}
        self._write()

    @property
    def app_config(self) -> dict:
        return self.inv["apps"][self.kind]

    def variant(self, name: str, append: dict[str, str] | None = None, files: dict | None = None) -> Path:
        """A copy of this slot's example app, changed: `append` adds text to files, `files` writes them."""
        d = self.tmp / name
        shutil.copytree(self.app_config["source"], d)
        for rel, text in (append or {}).items():
            with open(d / rel, "a") as f:
                f.write("\n" + text + "\n")
        for rel, content in (files or {}).items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
        return d

    def _env(self, inventory: Path | None = None, extra: dict | None = None) -> dict:
        return {
            **os.environ,
            **self.env,
            "SGPFAB_INVENTORY": str(inventory or self.inventory),
            "COLUMNS": "220",
            "SGPFAB_DIST": str(self.dist),
            **(extra or {}),
        }

    def popen(self, *args: str, extra_env: dict | None = None) -> subprocess.Popen:
        """Start `fab` in its own process group (so a test can kill it like a dying laptop, or
        press Ctrl+C: SIGINT is reset to its default, as in a terminal, even when this test run
        was started in the background and inherited it ignored)."""
        return subprocess.Popen(
            [FAB, *args],
            cwd=ROOT,
            env=self._env(extra=extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def fab(
        self,
        *args: str,
        ok: bool | None = True,
        inventory: Path | None = None,
        extra_env: dict | None = None,
        timeout: float = 900,
    ) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [FAB, *args], cwd=ROOT, env=self._env(inventory, extra_env), capture_output=True, text=True, timeout=timeout
        )
        if ok is True:
            assert r.returncode == 0, f"fab {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
        elif ok is False:
            assert r.returncode != 0, f"fab {' '.join(args)} should have failed:\n{r.stdout}\n{r.stderr}"
        return r

    def url(self, host: str, path: str) -> str:
        return f"http://{self.fleet.ip(host)}:{self.port}{path}"

    def http(
        self,
        host: str,
        path: str = "/",
        data: bytes | None = None,
        headers: dict | None = None,
        method: str | None = None,
    ) -> tuple[int, bytes]:
        """A real HTTP request from the controller to the host: (status, body); (0, b'') if nothing answers."""
        req = urllib.request.Request(self.url(host, path), data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def get_json(self, host: str, path: str):
        code, body = self.http(host, path)
        return json.loads(body) if code == 200 else None

    def post_json(self, host: str, path: str, obj: dict) -> tuple[int, dict | None]:
        code, body = self.http(host, path, json.dumps(obj).encode(), {"content-type": "application/json"}, "POST")
        try:
            return code, json.loads(body)
        except ValueError:
            return code, None

    def ssh(self, host: str, command: str, check: bool = True) -> str:
        r = subprocess.run(
            ["ssh", "-F", str(self.fleet.ssh_config), host, command], capture_output=True, text=True, timeout=120
        )
        if check:
            assert r.returncode == 0, f"{host}: {command}: {r.stderr}"
        return r.stdout

    def current(self, host: str) -> str | None:
        out = self.ssh(host, f"readlink {self.api_root}/releases/current || true").strip()
        return out or None

    def releases(self, host: str) -> list[str]:
        return sorted(self.ssh(host, f"ls -A {self.api_root}/releases 2>/dev/null || true").split())

    def units(self, host: str) -> list[str]:
        """This app's running units (processes and socket)."""
        out = self.ssh(
            host,
            f"systemctl list-units --plain --no-legend --state=active '{self.service}-*' "
            f"'{self.service}.socket' | awk '{{print $1}}'",
        )
        return sorted(out.split())

    def snapshot(self, host: str) -> str:
        """Everything under API_ROOT (names, sizes, link targets) plus the units: to prove 'nothing changed'."""
        return self.ssh(
            host,
            f"find {self.api_root} /etc/systemd/system/{self.service}* -printf '%p %s %l\\n'"
            " 2>/dev/null | grep -v -e /.sgpfab/audit.jsonl -e /.sgpfab/uv-cache/ | sort || true",
        )

    def release_state(self, host: str) -> tuple:
        """What a refused deploy must leave alone: releases, current, units and their state."""
        return (
            self.ssh(
                host,
                f"find {self.api_root}/releases /etc/systemd/system/{self.service}* -maxdepth 1"
                " -printf '%p %l\\n' 2>/dev/null | sort",
            ),
            self.units(host),
        )


@pytest.fixture
def slot_factory(fleet, tmp_path, request):
    made = []

    def make(kind: str = "sgp") -> Slot:
        s = Slot(fleet, tmp_path / f"slot{len(made)}", next_slot(), kind)
        made.append(s)
        return s

    (tmp_path).mkdir(exist_ok=True)
    for i in range(8):
        (tmp_path / f"slot{i}").mkdir(exist_ok=True)
    yield make
    for s in made:  # stop this slot's processes so later tests run on quiet hosts
        for h in s.all_hosts:
            subprocess.run(
                [
                    "ssh",
                    "-F",
                    str(fleet.ssh_config),
                    h,
                    f"sudo systemctl stop '{s.service}-*' {s.service}.socket {s.service}.target 2>/dev/null;"
                    f" sudo systemctl disable {s.service}.socket {s.service}.target 2>/dev/null; true",
                ],
                capture_output=True,
                timeout=120,
            )


@pytest.fixture
def slot(slot_factory) -> Slot:
    """The FastAPI example (sgp_api) in a slot of its own."""
    return slot_factory("sgp")


@pytest.fixture
def tasks_slot(slot_factory) -> Slot:
    """The Flask example (gunicorn + worker) in a slot of its own."""
    return slot_factory("tasks")


@pytest.fixture
def blog_slot(slot_factory) -> Slot:
    """The Django example in a slot of its own."""
    return slot_factory("blog")


# An ASGI app that imports fine but cannot start (its lifespan fails): never serves.
BROKEN_SGP = """
@asynccontextmanager
async def _broken_lifespan(_app):
    raise RuntimeError("this release is broken on purpose")
    yield

app.router.lifespan_context = _broken_lifespan
"""
