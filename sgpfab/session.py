"""One app instance on one connected host: the intent-level operations deploy, rollback and the
other tasks are made of. Each runs a command from the host's OS module (`linux` or `windows`,
pure builders) through the transport; nothing above this module assembles host commands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .bundle import manifestpatch
from .cmd import Cmd
from .errors import InputError, LockedError, RemoteError
from .hostos import steps_for
from .identity import controller_user
from .layout import Layout, Units
from .state import BackupReply, GateResult, HostFacts, HostState, LockReply, Release
from .transport.base import Result, Transport
from .transport.rsync import ProgressFn

if TYPE_CHECKING:
    from .appspec import AppSpec, WebProcess
    from .bundle import Bundle
    from .inventory import Instance
    from .settings import Settings

log = logging.getLogger("sgpfab")
REMOTE = Path(__file__).parent / "remote"
HOSTCTL_SOURCE = REMOTE / "hostctl.py"
LAUNCHERS = sorted((REMOTE / "launch").glob("*.py"))
HOOK_ENV = "SGPFAB_TEST_HOOK"  # tests only: "STEP=action" stops or pauses a run at a named step


@dataclass(frozen=True)
class HostNote:
    """One step of one host; prints as a line, and a live display can show it per host."""

    host: str
    seconds: float
    message: str

    def __str__(self) -> str:
        return f"[{self.host} +{self.seconds:5.1f}s] {self.message}"


def resolve_service_user(inst: Instance, login_user: str) -> str:
    """The user the app's processes run as: run_as, else the login user; never root (or, on
    Windows, a virtual service account when nothing is set)."""
    if inst.host.os == "windows":
        return inst.run_as or f"NT SERVICE\\{inst.service}"
    user = inst.run_as or login_user
    if not user or user == "root":
        raise InputError(
            f"{inst.host.name}: the app would run as root (the login user): set run_as to an"
            " unprivileged user in the inventory"
        )
    return user


class HostSession:
    """Wraps a transport and an app instance with the operations sgpfab needs on that host."""

    def __init__(
        self,
        transport: Transport,
        inst: Instance,
        say: Callable[[object], None] = print,
        account_password: str | None = None,
    ) -> None:
        self.t = transport
        self.inst = inst
        self.host = inst.host
        self.layout = Layout.for_instance(inst)
        self.units = Units(inst.service)
        self.steps = steps_for(self.host)
        self.say = say
        self.started = time.monotonic()
        self.service_user = resolve_service_user(inst, transport.login_user)
        # Windows, a named run_as account: its password (never printed; on stdin only)
        self._account = {"password": account_password} if account_password is not None else {}
        self.state_at_connect: HostState | None = None
        self.facts: HostFacts | None = None
        self.timings: dict[str, float] = {}
        self._pending_audit: list[dict[str, Any]] | None = None
        self._files_written: set[str] = set()
        self._last_step = time.monotonic()
        self._settings_written = False

    @property
    def name(self) -> str:
        return self.host.name

    def note(self, msg: str) -> None:
        """A progress step: host, seconds since we connected, what it is doing now."""
        self.say(HostNote(self.host.name, time.monotonic() - self.started, msg))

    @property
    def can_overlap(self) -> bool:
        """Whether two releases' web processes can serve side by side here (systemd sockets)."""
        overlap: bool = self.steps.CAN_OVERLAP
        return overlap

    def step(self, name: str) -> None:
        """End of a named step: its duration goes into the timings, and tests may stop here."""
        now = time.monotonic()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self._last_step, 3)
        self._last_step = now
        self.checkpoint(name)

    def checkpoint(self, step: str) -> None:
        """A named step boundary. Tests set SGPFAB_TEST_HOOK=STEP=kill to kill the controller
        there (like a laptop dying), or STEP=pause:FILE to wait until FILE exists."""
        hook = os.environ.get(HOOK_ENV, "")
        name, _, action = hook.partition("=")
        if name != step:
            return
        if action == "kill":
            os.kill(os.getpid(), 9)
        if action.startswith("pause:"):
            flag = Path(action[len("pause:") :])
            Path(str(flag) + ".reached").touch()
            while not flag.exists():
                time.sleep(0.05)

    # -- running ---------------------------------------------------------------------------------
    def run(self, cmd: Cmd, check: bool = True) -> Result:
        return self.t.run(cmd.text, privileged=cmd.privileged, check=check, timeout=cmd.timeout, stdin=cmd.stdin)

    def run_chain(self, parts: Sequence[Cmd | None], check: bool = True) -> Result:
        """Several commands in one round trip where the OS module can chain them (each with
        its own stdin), else one after the other; stops at the first that fails."""
        cmds = [p for p in parts if p is not None]
        if hasattr(self.steps, "chain"):
            return self.run(self.steps.chain(cmds, self.t.login_user == "root"), check=check)
        outs, errs, last = [], [], None
        for c in cmds:
            last = self.run(c, check=check)
            outs.append(last.stdout)
            errs.append(last.stderr)
            if not last.ok:
                break
        return Result("(sequence)", "".join(outs), "".join(errs), last.exited if last else 0)

    def hostctl_cmd(self, *args: str, data: Any = None, as_service: bool = False, timeout: float = 600) -> Cmd:
        """The command for a host-helper sub-command; structured input goes on stdin as JSON."""
        stdin = json.dumps(data).encode() if data is not None else None
        user = self.service_user if as_service and self.service_user != self.t.login_user else None
        cmd: Cmd = self.steps.hostctl(self.inst, *args, stdin=stdin, as_user=user, timeout=timeout)
        return cmd

    def hostctl(self, *args: str, data: Any = None, as_service: bool = False, timeout: float = 600) -> dict[str, Any]:
        """Run a host-helper sub-command and return its answer."""
        r = self.run(self.hostctl_cmd(*args, data=data, as_service=as_service, timeout=timeout))
        return _last_json(self.host.name, r)

    def hostctl_unprepared(self, *args: str, data: bytes | None = None) -> dict[str, Any]:
        """A read-only host-helper call on a host that may not have the helper yet; nothing is
        written anywhere. Where the OS module can check it, the helper installed on the host runs
        when it is this sgpfab's own (same SHA-256), else the source goes on stdin."""
        source = HOSTCTL_SOURCE.read_bytes()
        if not hasattr(self.steps, "hostctl_verified"):  # Windows: the source every time (no `data`)
            return _last_json(self.host.name, self.run(self.steps.hostctl_from_stdin(self.inst, source, *args)))
        digest = hashlib.sha256(source).hexdigest()
        r = self.run(self.steps.hostctl_verified(self.inst, digest, *args, data=data), check=False)
        if r.exited == self.steps.EXIT_NO_HELPER and self.steps.NO_HELPER in r.stdout.splitlines():
            r = self.run(self.steps.hostctl_verified(self.inst, digest, *args, source=source, data=data), check=False)
        if not r.ok:
            raise self.t.fail(r)
        return _last_json(self.host.name, r)

    # -- facts -------------------------------------------------------------------------------------
    def preflight(self) -> HostFacts:
        try:
            facts = self.hostctl_unprepared("preflight", "--python", self.inst.interpreter, "--with-state")
        except RemoteError as e:
            if "exit 127" in str(e) or "No such file" in str(e):
                raise InputError(
                    f"{self.host.name}: no Python at {self.host.interpreter} (set python: to the"
                    " host's interpreter in the inventory)"
                ) from None
            raise
        if self.host.os == "windows":
            facts["nssm"] = self.run(self.steps.nssm_version(), check=False).stdout.strip()
        self.facts = HostFacts.model_validate(facts)
        self.state_at_connect = HostState.parse(facts["state"])
        return self.facts

    def state(self) -> HostState:
        return HostState.parse(self.hostctl("state"))

    @property
    def current_version(self) -> str | None:
        st = self.state_at_connect
        return st.active.meta.version or None if st and st.active else None

    # -- setup -------------------------------------------------------------------------------------
    def helper_files(self) -> dict[str, tuple[bytes, int]]:
        """Files sgpfab keeps under API_ROOT/.sgpfab (relative path -> (content, mode))."""
        files: dict[str, tuple[bytes, int]] = {"hostctl.py": (HOSTCTL_SOURCE.read_bytes(), 0o644)}
        for f in LAUNCHERS:
            if self.host.os == "windows" or f.name != "winrun.py":
                files[f"launch/{f.name}"] = (f.read_bytes(), 0o644)
        text = self.layout.host_json_text(self.inst, self.t.login_user, self.service_user)
        files["host.json"] = (text.encode(), 0o644)
        return files

    def prepare(self) -> None:
        """The API_ROOT tree and the health-probe token (made once, on the host), then the host
        helpers and host.json, each written only when it changed: usually one round trip."""
        files = self.helper_files()
        paths = {rel: self.steps.join(self.layout.tools, rel) for rel in files}
        r = self.run_chain(
            [
                self.steps.prepare(self.inst, self.t.login_user, self.service_user),
                self.steps.ensure_probe_token(self.inst),
                self.steps.sha256_many(list(paths.values())),
            ]
        )
        have_by_path = {p.strip(): h for h, _, p in (ln.partition(" ") for ln in r.stdout.splitlines()) if p}
        changed = {
            rel: f for rel, f in files.items() if have_by_path.get(paths[rel]) != hashlib.sha256(f[0]).hexdigest()
        }
        if changed:
            self.run(self.steps.write_files(self.layout.tools, changed))

    # -- lock and recovery -------------------------------------------------------------------------
    @contextmanager
    def lock(self, what: str) -> Iterator[HostState]:
        """One deploy-changing run at a time per app on a host; yields the host's state as found
        once locked. A lock left by a dead process of this same controller is stale and taken
        over (compare-and-swap on its token, after the dead run's host-side operations have
        finished); any other holder makes us fail with who/when/what. The audit record of the
        run is written together with the release of the lock."""
        token = uuid.uuid4().hex
        info = {"who": controller_user(), "what": what, "controller": socket.gethostname(), "pid": os.getpid()}
        r = LockReply.model_validate(self.hostctl("lock", "take", "--token", token, "--with-state", data=info))
        if not r.locked and _stale(r.holder):
            self.note(f"taking over a stale lock left by dead process {r.holder.get('pid')}")
            self.checkpoint("lock-takeover")
            r = LockReply.model_validate(
                self.hostctl(
                    "lock",
                    "takeover",
                    "--token",
                    token,
                    "--expect-token",
                    str(r.holder.get("token", "")),
                    "--with-state",
                    data=info,
                )
            )
        if not r.locked:
            h = r.holder
            raise LockedError(
                f"{self.host.name}: locked by {h.get('who', '?')} since {h.get('since', '?')}"
                f" ({h.get('what', '?')}); if that run is gone, use --force-unlock"
            )
        self._pending_audit = []
        try:
            yield HostState.parse(r.state or {})
        finally:
            records, self._pending_audit = self._pending_audit, None
            try:
                self.run_chain(
                    [
                        *(self.hostctl_cmd("audit", data=rec) for rec in records),
                        self.hostctl_cmd("lock", "release", "--token", token),
                    ]
                )
            except Exception as e:  # never hide the original error
                log.warning("%s: could not release the lock: %s", self.host.name, str(e).splitlines()[0])

    def force_unlock(self) -> None:
        self.hostctl("lock", "release", "--force")

    # -- releases ----------------------------------------------------------------------------------
    def push_uv(self, local: Path) -> str:
        self.t.put(local, self.layout.uv, mode=0o755, progress=self._progress("uv"))
        return self.layout.uv

    def _progress(self, what: str) -> ProgressFn:
        """A progress callback for uploads of a megabyte or more: notes the bytes copied at most
        once a second, and when the upload is complete."""
        last = [0.0]

        def tell(done: int, pct: int | None) -> None:
            now = time.monotonic()
            if done >= 1_000_000 and (now - last[0] >= 1.0 or pct == 100):
                last[0] = now
                self.note(f"uploading {what}: {done / 1e6:.1f} MB" + (f" ({pct}%)" if pct is not None else ""))

        return tell

    def upload(self, bundle: Bundle, link_dest: str | None) -> None:
        """Wheels into the wheelhouse, the app's files into the partial release (unchanged files
        hard-linked, not sent); the manifest and requirements follow with `build_release`."""
        version = bundle.version
        lay = self.layout
        self.t.sync(bundle.wheels_dir, lay.wheelhouse, delete=False, progress=self._progress("wheels"))
        # Anything a killed earlier build left in the partial directory is deleted by the sync.
        self.t.sync(bundle.unpacked(), lay.partial(version), link_dest=link_dest, progress=self._progress("app files"))

    def build_release(
        self,
        bundle: Bundle,
        uv: str,
        requirements_file: str,
        meta: dict[str, Any],
        base: tuple[str, dict[str, Any]] | None = None,
    ) -> HostState:
        """On the host, in one go: the bundle's manifest and requirements into incoming/, verify
        every file against the manifest, build the venv offline, and mark the release complete
        (metadata) under its final name. With `base` (a release on the host and its bundle's
        manifest), the manifest goes as its difference from that one (manifestpatch.py); when
        the host cannot rebuild it from that, the same again with the whole manifest. Returns
        the host's state with the new release in it."""
        lay, version, name = self.layout, bundle.version, bundle.version.release_name
        project_wheel = bundle.metadata.install.project
        req = self.steps.join(lay.incoming(version), "requirements", requirements_file)
        extra = (self.steps.join(lay.wheelhouse, project_wheel),) if project_wheel else ()
        files = manifest_and_requirements(bundle.path)
        then = [
            self.hostctl_cmd("verify", "--name", name),
            self.steps.build_venv(self.inst, version, uv, req, extra),
            self.hostctl_cmd("finalize", "--name", name, "--with-state", data=meta),
        ]
        no_base: int | None = self.steps.EXIT_NO_BASE  # None where hostctl's exit code does not reach us
        r: Result | None = None
        if base is not None and no_base is not None:
            manifest = json.loads(files["manifest.json"][0])
            patch, digest = manifestpatch.make(base[1], manifest), manifestpatch.digest(manifest)
            rebuild = self.hostctl_cmd("manifest", "--name", name, "--base", base[0], "--sha256", digest, data=patch)
            requirements = {k: v for k, v in files.items() if k != "manifest.json"}
            r = self.run_chain(
                [self.steps.write_files(lay.incoming(version), requirements), rebuild, *then], check=False
            )
            if not r.ok:
                if r.exited != no_base or "manifest" in _answers(r):  # it failed after the rebuild
                    raise self.t.fail(r)
                self.note(f"no usable copy of the manifest of {base[0]} here: sending the whole manifest")
                r = None
        if r is None:
            r = self.run_chain([self.steps.write_files(lay.incoming(version), files), *then])
        state = _answers(r).get("finalize", {}).get("state")
        return HostState.parse(state) if state else self.state()

    def write_release_files(self, release: str, spec: AppSpec) -> None:
        """The scripts the release's processes and hooks start through (regenerated at every
        activation, so they follow the host's current settings)."""
        cmd = self.steps.release_files(self.inst, release, spec)
        if cmd is not None:
            self.run(cmd)

    def make_writable(self, release: str, dirs: Iterable[str]) -> None:
        if dirs:
            self.run(self.steps.make_writable(self.inst, release, tuple(dirs), self.service_user))

    def remove(self, *names: str) -> list[str]:
        removed: list[str] = self.hostctl("remove", *names)["removed"] if names else []
        return removed

    def mark_bad(self, release: str, reason: str) -> None:
        self.hostctl("mark", "--name", release, "--bad", "--reason", _token_safe(reason))

    def clear_bad(self, release: str) -> None:
        self.hostctl("mark", "--name", release)

    # -- database ----------------------------------------------------------------------------------
    def backup(self, label: str) -> BackupReply:
        """A consistent database backup with retention; nothing when there is no database yet."""
        if self.inst.database.engine == "none":
            return BackupReply()
        r = BackupReply.model_validate(
            self.hostctl(
                "backup", "--label", label, "--keep", str(self.inst.backups_keep), as_service=True, timeout=7200
            )
        )
        if r.name:
            self.note(f"database saved as {r.name}")
        return r

    def backups(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.hostctl("backups", as_service=True)["backups"]
        return found

    def restore(self, name: str) -> None:
        self.hostctl("restore", "--name", name, as_service=True, timeout=7200)

    def check_database(self, settings: Settings) -> dict[str, Any]:
        """Can this host reach the app's database with `settings` (nothing written)? The
        helper's source goes on stdin when the host has none yet."""
        data = {"engine": self.inst.database.engine, "env_key": self.inst.database.env, "env": settings.env}
        return self.hostctl_unprepared("dbcheck", "--stdin", data=json.dumps(data).encode())

    # -- settings ----------------------------------------------------------------------------------
    def stage(self, release: str, spec: AppSpec, settings: Settings | None, label: str) -> tuple[str, BackupReply]:
        """Before the release commands, in one go: the release's scripts, the app's settings
        (when given; the previous ones kept until commit or revert) and a database backup.
        Returns the settings' fingerprint and the backup."""
        parts = [self.steps.release_files(self.inst, release, spec)]
        if settings is not None:
            parts.append(self.hostctl_cmd("settings", "write", data=settings.payload(), as_service=True))
        else:
            parts.append(self.hostctl_cmd("settings", "show", as_service=True))
        if self.inst.database.engine != "none":
            parts.append(
                self.hostctl_cmd(
                    "backup", "--label", label, "--keep", str(self.inst.backups_keep), as_service=True, timeout=7200
                )
            )
        answers = _answers(self.run_chain(parts))
        self._settings_written = settings is not None
        self._files_written.add(release)
        backup = BackupReply.model_validate(answers.get("backup") or {})
        if backup.name:
            self.note(f"database saved as {backup.name}")
        return (answers.get("settings") or {}).get("fingerprint") or "", backup

    def revert_settings(self) -> None:
        """Put back the settings this run replaced (a failed deploy leaves none of its own)."""
        if self._settings_written:
            self.hostctl("settings", "revert", as_service=True)
            self._settings_written = False

    def settings_fingerprint(self, settings: Settings) -> str:
        fingerprint: str = self.hostctl("settings", "fingerprint", data=settings.payload(), as_service=True)[
            "fingerprint"
        ]
        return fingerprint

    def show_settings(self) -> dict[str, Any]:
        return self.hostctl("settings", "show", as_service=True)

    def override_settings(
        self, set_env: dict[str, str] | None = None, unset: list[str] | None = None, secret: Collection[str] = ()
    ) -> list[str]:
        """Set (or unset) host-local overrides; names in `secret` are masked wherever settings are shown."""
        if set_env:
            data = {"env": set_env, "secret": sorted(secret)}
            overrides: list[str] = self.hostctl("settings", "override-set", data=data, as_service=True)["overrides"]
            return overrides
        left: list[str] = self.hostctl("settings", "override-unset", data={"keys": unset or []}, as_service=True)[
            "overrides"
        ]
        return left

    # -- hooks and processes -----------------------------------------------------------------------
    def run_hook(self, release: str, index: int) -> Result:
        return self.run(self.steps.run_hook(self.inst, release, index, self.service_user), check=False)

    def install_processes(self, release: str, spec: AppSpec) -> bool:
        """The units (services) of `release`'s processes; True when a file had to change."""
        r = self.run(self.steps.install_processes(self.inst, release, spec, self.service_user, **self._account))
        return self.steps.UNITS_CHANGED in r.stdout

    def start_processes(self, release: str, names: list[str]) -> bool:
        """Start processes of `release`; False when one failed to start (see the gate for why)."""
        if not names:
            return True
        cmd = self.steps.start_processes(self.inst, release, names)
        timeout = max(cmd.timeout or 0, self.inst.health.timeout + 30)
        return self.run(Cmd(cmd.text, cmd.privileged, cmd.stdin, timeout), check=False).ok

    def stop_processes(self, release: str, names: list[str]) -> None:
        if names:
            self.run(self.steps.stop_processes(self.inst, release, names), check=False)

    def stop_all_but(self, release: str | None) -> None:
        """Stop every process of the app that does not belong to `release` (with None: all of
        them, and the listening socket, so that nothing starts them meanwhile)."""
        self.run(self.steps.stop_all_but(self.inst, release), check=False)

    def process_ids(self, release: str, names: list[str]) -> list[str]:
        return [self.steps.process_id(self.inst, release, n) for n in names]

    def gate(
        self,
        release: str,
        web: WebProcess | None,
        names: list[str],
        timeout: float | None = None,
        settle: float | None = None,
    ) -> GateResult:
        """Wait until `release` serves (its own processes answering the health check, see
        hostctl gate) and its processes `names` run without restarting."""
        r = self.run(self._gate_cmd(release, web, names, timeout, settle))
        return GateResult.model_validate(_last_json(self.host.name, r))

    def _gate_cmd(
        self,
        release: str,
        web: WebProcess | None,
        names: list[str],
        timeout: float | None = None,
        settle: float | None = None,
    ) -> Cmd:
        h = self.inst.health
        if settle is None:  # a web process that answers is up; other processes must stay up a while
            settle = h.settle if (any(n != "web" for n in names) or h.type == "process") else 0.0
        args = ["gate", "--deadline", str(timeout or h.timeout), "--settle", str(settle)]
        for unit in self.process_ids(release, names):
            args += ["--unit", unit]
        if web is not None and h.type == "http":
            args += ["--url", self.steps.health_url(self.inst)]
            if web.overlaps:  # sgpfab's launchers mark which release answered; an app's own command cannot
                args += ["--release", release]
            for code in h.status:
                args += ["--status", str(code)]
            if h.body:
                args += ["--body", h.body]
            if h.version:
                from .versions import release_version

                args += ["--expect-version", str(release_version(release))]
            if h.host_header:
                args += ["--host-header", h.host_header]
        return self.hostctl_cmd(*args, timeout=(timeout or h.timeout) + 60)

    def probe(self) -> GateResult:
        """One quick look at the active release's health (status)."""
        st = self.state()
        if not st.current:
            return GateResult(ok=False, why="nothing deployed")
        spec = _spec_of(st.active)
        if spec is None:
            return GateResult(ok=False, why="the active release has no process model")
        return self.gate(st.current, spec.web, list(spec.processes), timeout=3, settle=0)

    def logs(
        self, processes: list[str], lines: int, since: str | None, follow: bool, on_line: Callable[[str], None]
    ) -> int:
        cmd = self.steps.logs(self.inst, processes, lines, since, follow)
        return self.t.stream(cmd.text, on_line, privileged=cmd.privileged)

    @overload
    def exec(self, release: str, command: str, tty: Literal[False] = False) -> Result: ...
    @overload
    def exec(self, release: str, command: str, tty: Literal[True]) -> int: ...
    @overload
    def exec(self, release: str, command: str, tty: bool) -> Result | int: ...
    def exec(self, release: str, command: str, tty: bool = False) -> Result | int:
        """A one-off command in `release`'s environment: its Result, or (with a terminal) its
        exit code."""
        cmd = self.steps.exec_in_release(self.inst, release, command, self.service_user, tty)
        if tty:
            return self.t.interactive(cmd.text, privileged=cmd.privileged)
        return self.run(cmd, check=False)

    def process_log(self, process: str, lines: int = 15) -> str:
        return self.run(self.steps.process_log(self.inst, process, lines), check=False).stdout.strip()

    # -- activation, in a few round trips ------------------------------------------------------------
    def start_release(self, op: str, before: str | None, to: str, spec: AppSpec, stop_web: str | None) -> bool:
        """In one go: record the activation in the journal (before anything changes), write the
        release's scripts, put its units in place, stop `stop_web`'s web process (when the new
        one cannot start beside it) and start `to`'s web process. False when that process did
        not start."""
        parts = [self.hostctl_cmd("journal", "begin", data={"op": op, "from": before, "to": to})]
        if to not in self._files_written:
            parts.append(self.steps.release_files(self.inst, to, spec))
            self._files_written.add(to)
        parts.append(self.steps.install_processes(self.inst, to, spec, self.service_user, **self._account))
        if stop_web:
            parts.append(self.steps.stop_processes(self.inst, stop_web, ["web"]))
        if spec.web is not None:
            parts.append(self.steps.start_processes(self.inst, to, ["web"]))
        return self._started(self.run_chain(parts, check=False))

    def swap_others(self, before: str | None, old_names: list[str], to: str, names: list[str]) -> bool:
        """Stop the old release's other processes, then start the new one's: never two at once."""
        parts = []
        if before and old_names:
            parts.append(self.steps.stop_processes(self.inst, before, old_names))
        if names:
            parts.append(self.steps.start_processes(self.inst, to, names))
        return self._started(self.run_chain(parts, check=False)) if parts else True

    def _started(self, r: Result) -> bool:
        if r.ok:
            return True
        if r.exited == getattr(self.steps, "EXIT_START_FAILED", None):
            return False
        raise self.t.fail(r)

    def hand_over(self, before_web: str | None, release: str, web: WebProcess | None, names: list[str]) -> GateResult:
        """Tell the old web process to stop (it stops accepting at once and finishes what it
        accepted in the background; `finish` waits for it), then the gate: every new connection
        now reaches `release`, which must answer and keep running."""
        parts = [self.steps.stop_processes(self.inst, before_web, ["web"], wait=False)] if before_web else []
        r = self.run_chain([*parts, self._gate_cmd(release, web, names)])
        return GateResult.model_validate(_answers(r).get("gate") or {"ok": False, "why": "no answer"})

    def switch_to(self, release: str, settings_fingerprint: str | None) -> None:
        """In one go: switch `current` and record the settings the release runs with (kept)."""
        parts = [self.hostctl_cmd("switch", "--to", release)]
        if settings_fingerprint is not None:
            parts.append(
                self.hostctl_cmd("meta-update", "--name", release, data={"settings_fingerprint": settings_fingerprint})
            )
            if self._settings_written:
                parts.append(self.hostctl_cmd("settings", "commit", as_service=True))
        self.run_chain(parts)
        self._settings_written = False

    def finish(self, release: str) -> None:
        """Stop whatever else of the app still runs, and close the journal."""
        self.run_chain([self.steps.stop_all_but(self.inst, release), self.hostctl_cmd("journal", "clear")])

    # -- switch and journal ------------------------------------------------------------------------
    def switch(self, release: str) -> None:
        self.hostctl("switch", "--to", release)

    def unlink_current(self) -> None:
        self.hostctl("unlink-current")

    def journal_begin(self, op: str, from_: str | None, to: str) -> None:
        self.hostctl("journal", "begin", data={"op": op, "from": from_, "to": to})

    def journal_clear(self) -> None:
        self.hostctl("journal", "clear")

    # -- records -----------------------------------------------------------------------------------
    def audit(self, **record: Any) -> None:
        """Append to the host's audit log (while locked: together with the lock's release)."""
        record.setdefault("user", controller_user())
        record.setdefault("app", self.inst.app)
        if self._pending_audit is not None:
            self._pending_audit.append(record)
            return
        try:
            self.hostctl("audit", data=record)
        except RemoteError as e:
            log.warning("%s: could not write the audit log: %s", self.host.name, str(e).splitlines()[0])


def manifest_and_requirements(bundle_dir: Path) -> dict[str, tuple[bytes, int]]:
    """The files of a bundle directory the host reads before it builds a release (relative path
    -> (content, mode)): the manifest and the requirements of every target."""
    files = {"manifest.json": ((bundle_dir / "manifest.json").read_bytes(), 0o644)}
    for f in sorted((bundle_dir / "requirements").glob("*")):
        if f.is_file():
            files[f"requirements/{f.name}"] = (f.read_bytes(), 0o644)
    return files


def _spec_of(release: Release | None) -> AppSpec | None:
    from .appspec import AppSpec

    if release is None or not release.meta.spec:
        return None
    try:
        return AppSpec.model_validate(release.meta.spec)
    except ValueError:
        return None


def spec_of(release: Release | None) -> AppSpec | None:
    """The app spec a release was built with (from its marker), or None."""
    return _spec_of(release)


def _token_safe(text: str) -> str:
    """A reason passed as one argument: printable ASCII without quotes (Windows PowerShell 5.1
    mangles quotes in native arguments)."""
    return "".join(ch if ch.isascii() and ch.isprintable() and ch not in "\"'`" else " " for ch in text)[:200]


def _answers(r: Result) -> dict[str, dict[str, Any]]:
    """The host helper's answers in a chain's output, by sub-command (the last of each)."""
    out: dict[str, dict[str, Any]] = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "_cmd" in data:
                out[data["_cmd"]] = data
    return out


def _last_json(host: str, r: Result) -> dict[str, Any]:
    lines = r.stdout.strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1])
        return answer
    except (IndexError, ValueError):
        raise RemoteError(f"{host}: the host helper gave no answer: {r.detail()}") from None


def _stale(holder: dict[str, Any]) -> bool:
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
