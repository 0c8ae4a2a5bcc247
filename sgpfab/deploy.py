"""Deploy one verified bundle to one host, leaving it on a working release whatever happens."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .bundle import Bundle
from .errors import DeployError, RemoteError
from .session import HostSession, controller_user, elapsed
from .state import HostState
from .versions import Version, release_version


@dataclass
class Plan:
    """What the controller prepared once for all hosts."""

    bundle: Bundle
    uv: Callable[[str], Path]  # host OS -> a uv binary to push to hosts without one
    migrate: str | None = None

    @property
    def version(self) -> Version:
        return self.bundle.version


@dataclass
class Outcome:
    host: str
    action: str
    ok: bool
    before: str | None
    after: str | None
    message: str = ""
    seconds: float = 0.0
    undone: bool = False  # changed, then put back when the rollout stopped
    bytes_sent: int = 0


def deploy_host(s: HostSession, plan: Plan) -> Outcome:
    """Upload, verify, build, back up, migrate, switch, restart, health-check; auto-rollback."""
    start, sent = time.monotonic(), s.t.bytes_sent
    version, digest = plan.version, plan.bundle.digest
    s.prepare()
    with s.lock(f"deploy {version}"):
        st = s.state()
        before = st.current
        try:
            if _already_active(s, st, plan):
                outcome = Outcome(s.host.name, "deploy", True, _v(before), str(version),
                                  "already active and healthy: nothing to do", elapsed(start))
                s.audit(action="deploy", version=str(version), before=_v(before), digest=digest, result="noop")
                return outcome
            _ensure_release(s, st, plan)
            s.backup(f"before-{version.release_name}")
            if plan.migrate:
                _migrate(s, plan)
            s.t.run(s.steps.install_service(s.host, plan.bundle.metadata.get("module", "main:app")), sudo=True)
            activate(s, version, before)
        except BaseException as e:
            s.audit(action="deploy", version=str(version), before=_v(before), digest=digest,
                    result="failed", error=str(e)[:300], seconds=elapsed(start))
            raise
        s.audit(action="deploy", version=str(version), before=_v(before), digest=digest, result="ok",
                seconds=elapsed(start))
    return Outcome(s.host.name, "deploy", True, _v(before), str(version), "healthy", elapsed(start),
                   bytes_sent=s.t.bytes_sent - sent)


def _already_active(s: HostSession, st: HostState, plan: Plan) -> bool:
    active = st.active
    if active is None or active.version != plan.version or active.meta.get("bundle_digest") != plan.bundle.digest:
        return False
    return bool(s.wait_healthy(plan.version, timeout=3).get("healthy"))


def _ensure_release(s: HostSession, st: HostState, plan: Plan) -> None:
    version, bundle = plan.version, plan.bundle
    existing = st.get(version)
    if existing and existing.complete:
        if existing.meta.get("bundle_digest") != bundle.digest:
            raise DeployError(f"{s.host.name}: release {version} already exists with different content;"
                              " versions are immutable: bump the version")
        if existing.bad:
            s.hostctl("mark", "--name", version.release_name)  # a deliberate retry clears the mark
        s.note(f"release {version} is already on the host; reusing it")
        return
    if existing:  # a directory without its completion marker: never trusted, rebuilt
        s.hostctl("remove", version.release_name)
    lay = s.layout
    steps = s.steps
    uv = s.t.run(steps.which_uv(s.host)).stdout.strip()
    if not uv:
        s.note("no uv on the host: pushing a static uv binary")
        s.t.put(plan.uv(s.host.os), lay.uv, mode=0o755)
        uv = lay.uv
    s.note(f"uploading bundle {version} ({bundle.digest[:12]})")
    s.t.sync(str(bundle.wheels_dir), lay.wheelhouse, delete=False)
    s.t.sync(str(bundle.path), lay.incoming(version), excludes=["wheels/", bundle.archive.name])
    s.t.run(steps.stage_dir(s.host, version))
    # Only changed files travel: the rest is hard-linked from the active release (rsync).
    s.t.sync(str(bundle.unpacked()), lay.partial(version), checksum=True,
             link_dest=lay.current if st.current else None)
    s.note("verifying every file's SHA-256 on the host")
    s.hostctl("verify", "--name", version.release_name)
    s.note("building the release's venv with uv (offline, from the wheelhouse)")
    s.t.run(steps.build_venv(s.host, version, uv, bundle.metadata.get("requirements", "requirements.txt")))
    s.t.run(steps.write_env(s.host, version))
    s.hostctl("finalize", "--name", version.release_name, "--meta",
              release_meta(version, bundle.digest, bundle.schema_fingerprint, controller_user()))
    if s.host.service_user and s.host.service_user != s.t.login_user:
        s.t.run(steps.chown_env(s.host, version), sudo=True)
    s.t.run(steps.remove_tree(lay.incoming(version)))


def release_meta(version: Version, bundle_digest: str, schema_fingerprint: str, who: str) -> str:
    """What a release records about itself (in its completion marker)."""
    return json.dumps({"version": str(version), "bundle_digest": bundle_digest,
                       "schema_fingerprint": schema_fingerprint, "deployed_by": who})


def _migrate(s: HostSession, plan: Plan) -> None:
    s.note(f"running migrations: {plan.migrate}")
    r = s.as_service_user(s.steps.migrate(s.host, plan.version, plan.migrate), check=False)
    if not r.ok:
        out = (r.stderr.strip() or r.stdout.strip()).splitlines()[-5:]
        s.hostctl("mark", "--name", plan.version.release_name, "--bad", "--reason", "migration failed")
        raise DeployError(f"{s.host.name}: migrations of {plan.version} failed (exit {r.exited}); the active "
                          "release was not switched; the DB backup taken just before is in backups/:\n    "
                          + "\n    ".join(out))


def activate(s: HostSession, version: Version, before: str | None) -> None:
    """Switch + restart + health gate. Any failure or interrupt puts `before` back."""
    switched = False
    try:
        s.hostctl("switch", "--to", version.release_name)
        switched = True
        s.note(f"switched current -> {version.release_name}; restarting {s.host.service}")
        s.restart()
        result = s.wait_healthy(version)
        if not result.get("healthy"):
            raise _Unhealthy(result)
        s.note(f"healthy: {s.host.service} answers version {version}")
    except BaseException as e:
        if not switched:
            raise
        reason = _describe(e)
        logs = s.last_logs() if isinstance(e, _Unhealthy) else ""
        if isinstance(e, _Unhealthy):
            s.hostctl("mark", "--name", version.release_name, "--bad", "--reason", reason)
        restored = _restore(s, before)
        msg = f"{s.host.name}: release {version} failed ({reason}); {restored}"
        if logs:
            msg += "\n  last service log lines:\n    " + "\n    ".join(logs.splitlines())
        now = s.state().current
        raise DeployError(msg, before=_v(before), after=_v(now)) from (None if isinstance(e, _Unhealthy) else e)


def deactivate(s: HostSession) -> None:
    """No release to serve: remove `current` and stop the service."""
    s.t.run(s.steps.remove_link(s.layout.current))
    s.t.run(s.steps.stop(s.host), sudo=True, check=False)


def _restore(s: HostSession, before: str | None) -> str:
    """Put the previous release back and prove it healthy; say what happened."""
    if before is None:
        deactivate(s)
        return "no earlier release to return to: the service was stopped"
    s.hostctl("switch", "--to", before)
    s.restart()
    r = s.wait_healthy(release_version(before))
    if r.get("healthy"):
        s.note(f"rolled back to {before}, which is healthy")
        return f"rolled back to {before} (healthy)"
    return f"rolled back to {before}, but it is NOT healthy either: {r.get('error') or r.get('body', '')[:200]}"


class _Unhealthy(Exception):
    def __init__(self, result: dict):
        super().__init__(result)
        self.result = result


def _describe(e: BaseException) -> str:
    if isinstance(e, _Unhealthy):
        r = e.result
        if r.get("restarts", 0) >= 3:
            return f"the service keeps crashing ({r['restarts']} restarts)"
        if r.get("code"):
            return f"health answered {r['code']} with version {r.get('version')!r}"
        return f"no healthy answer: {r.get('error', 'timeout')}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, RemoteError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _v(name: str | None) -> str | None:
    v = release_version(name) if name else None
    return str(v) if v else name
