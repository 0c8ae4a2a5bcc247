"""Rollback, cleanup, status, and the database tasks (backup, restore) for one host."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .deploy import Outcome, _v, activate
from .errors import DeployError, InputError
from .session import HostSession, elapsed
from .state import HostState, Release
from .versions import Version

DB_CHOICES = ("keep", "restore")


@dataclass
class RollbackPlan:
    state: HostState
    target: Release
    restore_backup: str | None = None  # a backup to restore, when the rollback crosses a schema change


def plan_rollback(s: HostSession, version: Version | None, db: str | None) -> RollbackPlan:
    """Check a rollback is possible and decide what happens to the DB; changes nothing."""
    if db is not None and db not in DB_CHOICES:
        raise InputError(f"--db must be one of: {', '.join(DB_CHOICES)}")
    st = s.state()
    target = st.rollback_target(version)
    active = st.active
    plan = RollbackPlan(st, target)
    if target.name == st.current:
        return plan
    old, new = target.meta.get("schema_fingerprint"), active.meta.get("schema_fingerprint")
    if old and new and old != new:
        if db is None:
            raise InputError(f"rollback from {active.version} to {target.version} crosses a schema change:"
                             " choose --db keep (keep the current database) or --db restore (restore the"
                             f" backup taken just before {active.version} was deployed)")
        if db == "restore":
            label = f"-before-{active.name}.db"
            names = [b["name"] for b in s.hostctl("backups")["backups"] if b["name"].endswith(label)]
            if not names:
                raise InputError(f"no backup taken before {active.version} was deployed is left to restore")
            plan.restore_backup = names[-1]
    return plan


def rollback_host(s: HostSession, version: Version | None, db: str | None = None) -> Outcome:
    start = time.monotonic()
    with s.lock(f"rollback to {version or 'previous'}"):
        plan = plan_rollback(s, version, db)
        before, target = plan.state.current, plan.target
        if target.name == before:
            return Outcome(s.host.name, "rollback", True, _v(before), _v(before), "already active")
        if target.bad:
            s.note(f"warning: {target.name} was marked bad by an earlier failed deploy")
        saved = s.backup(f"before-rollback-to-{target.name}")
        try:
            if plan.restore_backup:
                s.note(f"restoring the database from {plan.restore_backup} (schema of {target.version})")
                s.t.run(s.steps.stop(s.host), sudo=True)
                s.hostctl("restore", "--name", plan.restore_backup, as_service_user=True)
            activate(s, target.version, before)
        except DeployError as e:
            if plan.restore_backup and saved.get("name"):
                # activate() went back to `before`: give it back the database it was using too.
                s.t.run(s.steps.stop(s.host), sudo=True, check=False)
                s.hostctl("restore", "--name", saved["name"], as_service_user=True)
                s.restart()
                s.note(f"database put back from {saved['name']}")
                e = DeployError(f"{e}; the database was put back from {saved['name']}", e.before, e.after)
            s.audit(action="rollback", version=str(target.version), before=_v(before), result="failed",
                    error=str(e)[:300], seconds=elapsed(start))
            raise e from None
        s.audit(action="rollback", version=str(target.version), before=_v(before), result="ok",
                db_restored=plan.restore_backup, seconds=elapsed(start))
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


def backup_host(s: HostSession, label: str) -> Outcome:
    with s.lock("backup"):
        r = s.backup(label)
        s.audit(action="backup", backup=r.get("name"), result="ok")
    return Outcome(s.host.name, "backup", True, None, None, r.get("name") or "no database yet")


def check_backup(s: HostSession, name: str) -> None:
    if name not in {b["name"] for b in s.hostctl("backups")["backups"]}:
        raise InputError(f"no backup named {name!r} here (see: fab -H HOST list-backups)")


def restore_host(s: HostSession, name: str) -> Outcome:
    """Stop, save the current DB as another backup, restore, start, health-check."""
    start = time.monotonic()
    with s.lock(f"restore {name}"):
        check_backup(s, name)
        st = s.state()
        saved = s.backup("before-restore")
        s.t.run(s.steps.stop(s.host), sudo=True, check=False)
        s.hostctl("restore", "--name", name, as_service_user=True)
        s.note(f"database restored from {name}")
        health = {"healthy": True}
        if st.current:
            s.restart()
            health = s.wait_healthy(st.active.version if st.active else None)
        s.audit(action="restore", backup=name, saved_as=saved.get("name"),
                result="ok" if health.get("healthy") else "unhealthy", seconds=elapsed(start))
    if not health.get("healthy"):
        raise DeployError(f"{s.host.name}: restored {name}, but the service is not healthy: "
                          f"{health.get('error') or health.get('body', '')[:200]}; the previous database is"
                          f" saved as {saved.get('name')}")
    return Outcome(s.host.name, "restore", True, _v(st.current), _v(st.current),
                   f"restored {name}; previous database saved as {saved.get('name')}", elapsed(start))


def host_status(s: HostSession) -> dict:
    """Releases, active version, service state and health, for the status table."""
    if not s.has_helper():
        return {"host": s.host.name, "state": None, "service": s.service_state(), "health": "not deployed"}
    st = s.state()
    health = s.wait_healthy(None, timeout=0.1) if st.current else {"healthy": False, "error": "no release"}
    return {"host": s.host.name, "state": st, "service": s.service_state(),
            "health": "healthy" if health.get("healthy") else (health.get("error") or f"HTTP {health.get('code')}"),
            "answering": health.get("version")}
