"""Rollback, list, status and cleanup for one host."""

from __future__ import annotations

import time

from .deploy import Outcome, _activate, _v
from .errors import DeployError
from .session import HostSession, elapsed
from .state import HostState, Release
from .versions import Version


def rollback_target(s: HostSession, version: Version | None) -> tuple[HostState, Release]:
    """Check a rollback is possible (raises InputError otherwise); changes nothing."""
    st = s.state()
    return st, st.rollback_target(version)


def rollback_host(s: HostSession, version: Version | None) -> Outcome:
    start = time.monotonic()
    with s.lock(f"rollback to {version or 'previous'}"):
        st, target = rollback_target(s, version)
        before = st.current
        if target.name == before:
            return Outcome(s.host.name, "rollback", True, _v(before), _v(before), "already active")
        if target.bad:
            s.note(f"warning: {target.name} was marked bad by an earlier failed deploy")
        backup = s.hostctl("backup", "--label", f"before-rollback-to-{target.name}", as_service_user=True)
        if backup.get("backup"):
            s.note(f"database saved to {backup['backup']}")
        try:
            _activate(s, target.version, before)
        except DeployError as e:
            s.audit(action="rollback", version=str(target.version), before=before, result="failed",
                    error=str(e)[:300], seconds=elapsed(start))
            raise
        s.audit(action="rollback", version=str(target.version), before=before, result="ok",
                seconds=elapsed(start))
    return Outcome(s.host.name, "rollback", True, _v(before), str(target.version), "healthy", elapsed(start))


def cleanup_host(s: HostSession, keep: int) -> Outcome:
    with s.lock(f"cleanup keep={keep}"):
        st = s.state()
        doomed = st.cleanup_plan(keep)
        if doomed:
            s.hostctl("remove", *doomed)
        s.audit(action="cleanup", removed=doomed, result="ok")
    kept = [r.name for r in st.releases if r.name not in doomed]
    return Outcome(s.host.name, "cleanup", True, _v(st.current), _v(st.current),
                   f"removed {', '.join(doomed) or 'nothing'}; kept {', '.join(kept) or 'nothing'}")


def host_status(s: HostSession) -> dict:
    """Releases, active version, service state and health, for the status table."""
    if not s.has_helper():
        return {"host": s.host.name, "state": None, "service": s.service_state(), "health": "not deployed"}
    st = s.state()
    health = s.wait_healthy(None, timeout=0.1) if st.current else {"healthy": False, "error": "no release"}
    return {"host": s.host.name, "state": st, "service": s.service_state(),
            "health": "healthy" if health.get("healthy") else (health.get("error") or f"HTTP {health.get('code')}"),
            "answering": health.get("version")}
