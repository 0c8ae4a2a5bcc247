"""Rollback, cleanup, backup and restore, and status, for one app on one host."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .activate import activate, recover
from .errors import DeployError, InputError
from .outcome import Outcome, Status
from .session import HostSession, elapsed, spec_of
from .state import HostState, Release
from .versions import Version, display

DB_CHOICES = ("keep", "restore")


@dataclass(frozen=True)
class RollbackPlan:
    state: HostState
    target: Release
    restore_backup: str | None = None  # a backup to restore, when the rollback crosses a schema change


def plan_rollback(s: HostSession, version: Version | None, db: str | None, st: HostState | None = None) -> RollbackPlan:
    """Check a rollback is possible and decide what happens to the database; changes nothing."""
    if db is not None and db not in DB_CHOICES:
        raise InputError(f"--db must be one of: {', '.join(DB_CHOICES)}")
    st = st or s.state()
    target = st.rollback_target(version)
    active = st.active
    if active is None or target.name == st.current:
        return RollbackPlan(st, target)
    old, new = target.meta.schema_fingerprint, active.meta.schema_fingerprint
    if old and new and old != new:
        if db is None:
            raise InputError(
                f"rollback from {active.version} to {target.version} crosses a schema change:"
                " choose --db keep (keep the current database) or --db restore (restore the"
                f" backup taken just before {active.version} was deployed)"
            )
        if db == "restore":
            label = f"-before-{active.name}."
            names = [b["name"] for b in s.backups() if label in b["name"]]
            if not names:
                raise InputError(f"no backup taken before {active.version} was deployed is left to restore")
            return RollbackPlan(st, target, names[-1])
    return RollbackPlan(st, target)


def rollback_host(s: HostSession, version: Version | None, db: str | None = None) -> Outcome:
    start = time.monotonic()
    with s.lock(f"rollback to {version or 'previous'}") as st:
        recovered = recover(s, st)
        plan = plan_rollback(s, version, db, None if recovered else st)
        before, target = plan.state.current, plan.target
        audit = dict(action="rollback", version=display(target.name), before=display(before))
        if target.name == before:
            return Outcome(s.name, "rollback", Status.NOOP, display(before), display(before), "already active")
        if target.bad:
            s.note(f"warning: {target.name} was marked bad ({target.bad_reason or 'an earlier failure'})")
        try:
            if plan.restore_backup:
                _rollback_with_database(s, plan)
            else:
                s.backup(f"before-rollback-to-{target.name}")
                s.step("backup")
                activate(s, target.name, before, "rollback", st=plan.state)
        except DeployError as e:
            s.audit(**audit, result="failed", error=str(e).splitlines()[0][:300], seconds=elapsed(start))
            raise
        s.audit(**audit, result="ok", db_restored=plan.restore_backup, seconds=elapsed(start))
    msg = "healthy" + (f" (first {recovered})" if recovered else "")
    return Outcome(
        s.name,
        "rollback",
        Status.OK,
        display(before),
        display(target.name),
        msg,
        elapsed(start),
        timings=dict(s.timings),
    )


def _rollback_with_database(s: HostSession, plan: RollbackPlan) -> None:
    """Stop everything, save the current database, restore the older one, start the older
    release. If that release then fails its gate, the newer release and the database it was
    using come back together."""
    before, target = plan.state.current, plan.target
    s.note(f"stopping {s.inst.app} (new connections are refused until it is back)")
    s.stop_all_but(None)
    saved = s.backup(f"before-rollback-to-{target.name}")
    s.note(f"restoring the database from {plan.restore_backup} (schema of {target.version})")
    s.restore(str(plan.restore_backup))
    try:
        activate(s, target.name, before, "rollback", before_undo=lambda: _put_back(s, saved.name))
    except DeployError as e:
        raise DeployError(f"{e}; the database was put back from {saved.name}", e.before, e.after) from None


def _put_back(s: HostSession, saved: str | None) -> None:
    s.stop_all_but(None)
    if saved:
        s.restore(saved)
        s.note(f"database put back from {saved}")


def cleanup_host(s: HostSession, keep: int) -> Outcome:
    with s.lock(f"cleanup keep={keep}") as st:
        if recover(s, st):
            st = s.state()
        doomed = st.cleanup_plan(keep)
        removed = s.remove(*doomed)
        s.hostctl("prune", as_service=True)
        s.audit(action="cleanup", removed=removed, result="ok")
    kept = [r.name for r in st.releases if r.name not in doomed]
    return Outcome(
        s.name,
        "cleanup",
        Status.OK,
        display(st.current),
        display(st.current),
        f"removed {', '.join(removed) or 'nothing'}; kept {', '.join(kept) or 'nothing'}",
    )


def backup_host(s: HostSession, label: str) -> Outcome:
    with s.lock("backup"):
        r = s.backup(label)
        s.audit(action="backup", backup=r.name, result="ok")
    cur = s.current_version
    return Outcome(s.name, "backup", Status.OK, cur, cur, r.name or "no database yet")


def check_backup(s: HostSession, name: str) -> None:
    if name not in {b["name"] for b in s.backups()}:
        raise InputError(f"no backup named {name!r} here (see: fab -H HOST list-backups)")


def restore_host(s: HostSession, name: str) -> Outcome:
    """Stop every process (new connections are refused meanwhile), save the current database
    as another backup, restore, start, health-check: no acknowledged write is lost."""
    start = time.monotonic()
    with s.lock(f"restore {name}") as st:
        if recover(s, st):
            st = s.state()
        check_backup(s, name)
        s.stop_all_but(None)
        saved = s.backup("before-restore")
        s.restore(name)
        s.note(f"database restored from {name}")
        gate = None
        if st.current and (spec := spec_of(st.active)) is not None:
            s.install_processes(st.current, spec)
            s.start_processes(st.current, list(spec.processes))
            gate = s.gate(st.current, web=spec.web, names=list(spec.processes))
        healthy = gate is None or gate.ok
        s.audit(
            action="restore",
            backup=name,
            saved_as=saved.name,
            result="ok" if healthy else "unhealthy",
            seconds=elapsed(start),
        )
    cur = display(st.current)
    if gate is not None and not gate.ok:
        raise DeployError(
            f"{s.name}: restored {name}, but the app is not healthy: {gate.describe()}; the previous"
            f" database is saved as {saved.name}",
            before=cur,
            after=cur,
        )
    return Outcome(
        s.name,
        "restore",
        Status.OK,
        cur,
        cur,
        f"restored {name}; previous database saved as {saved.name}",
        elapsed(start),
    )


def host_status(s: HostSession) -> dict[str, Any]:
    """Releases, active version, process states and health, settings drift (for `status`)."""
    st = s.state_at_connect or s.state()
    active = st.active
    row: dict[str, Any] = {
        "host": s.name,
        "app": s.inst.app,
        "group": ",".join(s.host.groups) or "-",
        "os": s.host.os,
        "version": display(st.current),
        "digest": active.meta.bundle_digest[:12] if active else "",
        "last_deploy": active.meta.finalized_at if active else "",
        "processes": {},
        "health": "not deployed",
        "settings": "-",
        "journal": bool(st.journal),
    }
    if not active:
        return row
    gate = s.probe()
    row["processes"] = {
        _process_name(u): (us.active or "?") + (f" ({us.restarts} restarts)" if us.restarts else "")
        for u, us in gate.units.items()
    }
    row["health"] = "healthy" if gate.ok else gate.describe()
    current_fp = s.show_settings().get("fingerprint")
    if active.meta.settings_fingerprint and current_fp:
        row["settings"] = "as deployed" if current_fp == active.meta.settings_fingerprint else "CHANGED since deploy"
    return row


def _process_name(unit: str) -> str:
    return unit.split("@", 1)[0].rsplit("-", 1)[-1]
