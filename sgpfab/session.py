"""One host, connected: hostctl calls, the deploy lock, health waits and the audit log."""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from .hostos import steps_for
from .errors import LockedError, RemoteError
from .inventory import Host
from .layout import Layout
from .state import HostState
from .versions import Version

log = logging.getLogger(__name__)
HOSTCTL_SOURCE = Path(__file__).parent / "remote" / "hostctl.py"
SERVE_SOURCE = Path(__file__).parent / "remote" / "serve.py"


@dataclass(frozen=True)
class HostNote:
    """One step of one host; prints as a line, and a live display can show it per host."""

    host: str
    seconds: float
    message: str

    def __str__(self) -> str:
        return f"[{self.host} +{self.seconds:5.1f}s] {self.message}"


def controller_user() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


class HostSession:
    """Wraps a transport with the host-level operations sgpfab needs."""

    def __init__(self, transport, say=print):
        self.t = transport
        self.host: Host = transport.host
        self.layout = Layout.for_host(self.host)
        self.steps = steps_for(self.host)  # what to run there: the linux or the windows module
        self.say = say
        self.started = time.monotonic()
        self.current_version: str | None = None  # as found by the preflight

    def note(self, msg: str) -> None:
        """A progress step: host, seconds since we connected, what it is doing now."""
        self.say(HostNote(self.host.name, time.monotonic() - self.started, msg))

    # -- setup ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """API_ROOT tree and the current host helpers (hostctl, and serve on Linux) on the host;
        idempotent, and a helper is uploaded only when it differs."""
        self.t.run(self.steps.prepare_dirs(self.host, self.t.login_user), sudo=True)
        helpers = [(HOSTCTL_SOURCE, self.layout.hostctl)]
        if self.host.os == "linux":
            helpers.append((SERVE_SOURCE, self.layout.serve))
        for local, remote in helpers:
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            if self.t.run(self.steps.file_sha256(remote)).stdout.split()[:1] != [digest]:
                self.t.put(local, remote)

    def has_helper(self) -> bool:
        return self.t.run(self.steps.file_exists(self.layout.hostctl)).stdout.strip() == "yes"

    def as_service_user(self, command: str, check: bool = True):
        """Run as the service's user (it owns shared/ and backups/)."""
        user = self.host.service_user
        if user and user != self.t.login_user:
            command = self.steps.as_user(user, command)
        return self.t.run(command, check=check)

    def hostctl(self, *args: str, as_service_user: bool = False) -> dict:
        cmd = self.steps.hostctl(self.host, *args)
        r = self.as_service_user(cmd) if as_service_user else self.t.run(cmd)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def backup(self, label: str) -> dict:
        """Online DB backup with retention; a no-op when there is no database yet."""
        r = self.hostctl("backup", "--label", label, "--keep", str(self.host.backups_keep), as_service_user=True)
        if r.get("backup"):
            self.note(f"database saved to {r['backup']}")
        return r

    def state(self) -> HostState:
        return HostState.from_json(self.hostctl("state"))

    # -- lock ----------------------------------------------------------------------------------
    @contextmanager
    def lock(self, what: str):
        """One deploy at a time per host. A lock left by a dead process of this same controller
        is stale and taken over; any other holder makes us fail with who/when/what."""
        token = uuid.uuid4().hex
        args = ("lock", "--token", token, "--who", controller_user(), "--what", what,
                "--controller", socket.gethostname(), "--pid", str(os.getpid()))
        r = self.hostctl(*args)
        if not r.get("locked") and _stale(r.get("holder", {})):
            self.note(f"taking over a stale lock left by dead process {r['holder'].get('pid')}")
            self.force_unlock()
            r = self.hostctl(*args)
        if not r.get("locked"):
            h = r.get("holder", {})
            raise LockedError(f"{self.host.name}: locked by {h.get('who', '?')} since {h.get('since', '?')}"
                              f" ({h.get('what', '?')}); if that deploy is gone, use --force-unlock")
        try:
            yield
        finally:
            try:
                self.hostctl("lock", "--release", "--token", token)
            except Exception as e:  # never hide the original error
                log.warning("%s: could not release the lock: %s", self.host.name, e)

    def force_unlock(self) -> None:
        self.hostctl("lock", "--release")

    # -- service -------------------------------------------------------------------------------
    def restart(self) -> None:
        self.t.run(self.steps.restart(self.host), sudo=True, check=False)

    def service_state(self) -> str:
        return self.t.run(self.steps.service_state(self.host), check=False).stdout.strip() or "unknown"

    def wait_healthy(self, version: Version | None, timeout: float | None = None) -> dict:
        """Probe until healthy with the expected version; give up at the deadline or when the
        service is crash-looping (several automatic restarts). Returns the last probe."""
        timeout = timeout or self.host.health_timeout

        def attempt() -> dict:
            r = self.t.run(self.steps.health_check(self.host, version), check=False)
            lines = r.stdout.strip().splitlines()
            try:
                result = json.loads(lines[0])
                result["restarts"] = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else 0
            except (ValueError, IndexError):
                result = {"healthy": False, "error": (r.stderr or r.stdout).strip()[-200:]}
            return result

        def unhealthy(r: dict) -> bool:
            return not r.get("healthy") and r.get("restarts", 0) < 3

        def waiting(rs) -> None:  # each retry is reported with what the probe saw
            r = rs.outcome.result()
            seen = r.get("error") or f"HTTP {r.get('code')} version {r.get('version')!r}"
            self.note(f"not healthy yet ({seen[:80]}); probing again in {rs.next_action.sleep:.1f}s")

        retrying = Retrying(retry=retry_if_result(unhealthy), stop=stop_after_delay(timeout),
                            wait=wait_exponential(multiplier=0.2, max=2), before_sleep=waiting,
                            retry_error_callback=lambda rs: rs.outcome.result())
        return retrying(attempt)

    def last_logs(self, lines: int = 15) -> str:
        return self.t.run(self.steps.service_logs(self.host, lines), check=False).stdout.strip()

    # -- records -------------------------------------------------------------------------------
    def audit(self, **record) -> None:
        record.setdefault("user", controller_user())
        try:
            self.hostctl("audit", "--record", json.dumps(record, sort_keys=True))
        except RemoteError as e:
            log.warning("%s: could not write the audit log: %s", self.host.name, e)


def _stale(holder: dict) -> bool:
    pid = holder.get("pid") or 0
    if holder.get("controller") != socket.gethostname() or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def elapsed(start: float) -> float:
    return round(time.monotonic() - start, 2)
