"""Fleet-level operations: what deploy, rollback, promote, plan and status do across hosts.

These decide and return typed rows; report.py turns them into tables and JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle import Bundle, bundle_dir
from .deploy import Plan, check_host, deploy_host
from .errors import InputError, RemoteError
from .ops import host_status, plan_rollback, rollback_host
from .outcome import Outcome, Status
from .rollout import Policy, Rollout, run
from .session import HostSession
from .settings import MASK
from .versions import Version, display
from .whenchanged import decide


def undo_to_before(s: HostSession, o: Outcome) -> Outcome:
    """Put a host back on the release it had before this rollout (code only: the database is
    kept; the pre-deploy backup is in backups/)."""
    if o.before is None:
        from .activate import undo

        with s.lock("undo"):
            back, msg = undo(s, s.state().current or "", None)
        return Outcome(s.name, "undo", Status.OK if back else Status.FAILED, o.after, None, msg)
    return rollback_host(s, Version.parse(o.before), db="keep")


def still_healthy(s: HostSession, o: Outcome) -> bool:
    return s.probe().ok


def preflight(sessions: list[HostSession], plan: Plan) -> None:
    """Every host must be able to take the bundle before any host changes."""
    problems = []
    for s in sessions:
        try:
            check_host(s, plan)
            if s.inst.database.engine == "postgresql" and s.host.os == "linux" and plan.settings is not None:
                s.check_database(plan.settings[s.name])
        except InputError as e:
            problems.append(str(e))
        except RemoteError as e:  # the database check's one-line reason, with the host
            problems.append(str(e).splitlines()[0].replace("exit 2: hostctl: ", ""))
    if problems:
        raise InputError("; ".join(problems) + " (nothing was changed)")


def deploy_fleet(
    sessions: list[HostSession], plan: Plan, policy: Policy, say: Callable[[object], None] = print
) -> Rollout:
    preflight(sessions, plan)
    return run(
        sessions,
        "deploy",
        lambda s: deploy_host(s, plan),
        policy,
        undo=undo_to_before,
        still_healthy=still_healthy,
        say=say,
    )


def rollback_fleet(
    sessions: list[HostSession],
    version: Version | None,
    db: str | None,
    policy: Policy,
    say: Callable[[object], None] = print,
) -> Rollout:
    """Check every host first (a missing release anywhere changes nothing), then roll back in waves."""
    for s in sessions:
        try:
            plan_rollback(s, version, db, s.state_at_connect)
        except InputError as e:
            raise InputError(f"{s.name}: {e} (nothing was changed)") from None
    return run(
        sessions,
        "rollback",
        lambda s: rollback_host(s, version, db),
        policy,
        undo=undo_to_before,
        still_healthy=still_healthy,
        say=say,
    )


def promotion_bundle(staging: list[HostSession], version: Version, dist: Path, app: str) -> Bundle:
    """The bundle to promote: exactly the one every staging host runs, healthy. Refuses otherwise."""
    digests = {}
    for s in staging:
        st = s.state_at_connect or s.state()
        active = st.active
        if active is None or active.name != version.release_name:
            raise InputError(
                f"promotion refused: {s.name} runs {active.version if active else 'nothing'}, not {version}"
            )
        if not s.probe().ok:
            raise InputError(f"promotion refused: {version} on {s.name} is not healthy")
        digests[s.name] = active.meta.bundle_digest
    if len(set(digests.values())) != 1 or "" in digests.values():
        raise InputError(
            "promotion refused: staging hosts run different builds of "
            f"{version}: " + ", ".join(f"{h}={(d or '?')[:12]}" for h, d in digests.items())
        )
    digest = next(iter(digests.values()))
    path = bundle_dir(dist, app, version)
    if not path.exists():
        raise InputError(f"promotion refused: no local bundle of {app} {version} in {path.parent}")
    b = Bundle.load(path)
    if b.digest != digest:
        raise InputError(
            f"promotion refused: staging runs {version} with digest {digest[:12]}, but the bundle in"
            f" {path} has digest {b.digest[:12]}"
        )
    return b


@dataclass
class PlanRow:
    host: str
    group: str
    before: str | None
    after: str
    action: str  # nothing | refused | switch | upload
    transfer_bytes: int = 0
    wheels_missing: int = 0
    wheels_total: int = 0
    migrations: list[str] = field(default_factory=list)  # new migrations the release commands will apply
    schema_change: bool = False
    settings: dict[str, str] = field(default_factory=dict)  # secrets masked
    settings_changed: bool | None = None
    release_commands: list[str] = field(default_factory=list)
    # per release command: {"command", "run", "reason"} (see whenchanged.py)
    release_decisions: list[dict[str, Any]] = field(default_factory=list)


def plan_rows(sessions: list[HostSession], plan: Plan) -> list[PlanRow]:
    """What a deploy would do on each host, read-only."""
    b = plan.bundle
    rows = []
    for s in sessions:
        st = s.state_at_connect
        existing = st.get(b.version) if st else None
        active = st.active if st else None
        settings = plan.settings[s.name] if plan.settings is not None else None
        row = PlanRow(
            s.name,
            ",".join(s.host.groups) or "-",
            display(st.current) if st else None,
            str(b.version),
            "upload",
            settings=settings.masked() if settings else {},
            release_commands=list(b.spec.release),
        )
        if existing and existing.complete and existing.meta.bundle_digest != b.digest:
            row.action = "refused"
        elif active and active.name == b.version.release_name and active.meta.bundle_digest == b.digest:
            row.action = "nothing"
        elif existing and existing.complete:
            row.action = "switch"
        else:
            have = set(s.run(s.steps.list_dir(s.layout.wheelhouse), check=False).stdout.split()) if st else set()
            missing = [w for w in b.manifest.wheels if w not in have]
            tree = b.unpacked()
            row.transfer_bytes = sum((tree / f).stat().st_size for f in b.manifest.files)
            row.transfer_bytes += sum((b.wheels_dir / w).stat().st_size for w in missing)
            row.wheels_missing, row.wheels_total = len(missing), len(b.manifest.wheels)
        if row.action not in ("nothing", "refused"):
            new = list(b.metadata.schema_.migrations)
            row.migrations = [m for m in new if m not in active.meta.migrations] if active else new
            row.schema_change = bool(
                active and active.meta.schema_fingerprint != b.schema_fingerprint and b.schema_fingerprint
            )
        if active and active.meta.settings_fingerprint and settings is not None:
            try:
                row.settings_changed = s.settings_fingerprint(settings) != active.meta.settings_fingerprint
            except Exception:
                row.settings_changed = None
        if row.action not in ("nothing", "refused"):
            row.release_decisions = [
                {"command": d.command, "run": d.run, "reason": d.reason}
                for d in decide(b, active, row.settings_changed)
            ]
        rows.append(row)
    return rows


def status_rows(sessions: list[HostSession]) -> list[dict[str, Any]]:
    return [host_status(s) for s in sessions]


def drift(rows: list[dict[str, Any]]) -> str:
    """'' when every host runs the same build; otherwise who runs what."""
    builds = Counter((r["version"], r["digest"]) for r in rows)
    if len(builds) <= 1:
        return ""
    parts = []
    for (v, d), _ in builds.most_common():
        hosts = [r["host"] for r in rows if (r["version"], r["digest"]) == (v, d)]
        parts.append(f"{v or 'nothing'}{' (' + d + ')' if d else ''} on {', '.join(hosts)}")
    return "version drift: " + "; ".join(parts)


__all__ = [
    "MASK",
    "PlanRow",
    "deploy_fleet",
    "drift",
    "plan_rows",
    "promotion_bundle",
    "rollback_fleet",
    "status_rows",
    "undo_to_before",
]
