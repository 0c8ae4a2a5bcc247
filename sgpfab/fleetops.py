"""Fleet-level operations: what `fab deploy/rollback/promote/plan/status` do across hosts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .bundle import Bundle, bundle_dir
from .deploy import Outcome, Plan, deactivate, deploy_host
from .errors import InputError
from .ops import host_status, plan_rollback, rollback_host
from .report import human_bytes
from .rollout import Policy, Rollout, run
from .session import HostSession
from .versions import Version


def undo_to_before(s: HostSession, o: Outcome) -> Outcome:
    """Put a host back on the release it had before this rollout (code only: the DB is kept)."""
    if o.before is None:
        deactivate(s)
        return Outcome(s.host.name, "undo", True, o.after, None, "stopped: it had no release before")
    return rollback_host(s, Version.parse(o.before), db="keep")


def still_healthy(s: HostSession, o: Outcome) -> bool:
    return bool(s.wait_healthy(Version.parse(o.after) if o.after else None, timeout=5).get("healthy"))


def deploy_fleet(sessions: list[HostSession], plan: Plan, policy: Policy, say=print) -> Rollout:
    return run(sessions, "deploy", lambda s: deploy_host(s, plan), policy, undo=undo_to_before,
               still_healthy=still_healthy, say=say)


def rollback_fleet(sessions: list[HostSession], version: Version | None, db: str | None, policy: Policy,
                   say=print) -> Rollout:
    """Check every host first (a missing release anywhere changes nothing), then roll back in waves."""
    for s in sessions:
        try:
            plan_rollback(s, version, db)
        except InputError as e:
            raise InputError(f"{s.host.name}: {e} (nothing was changed)") from None
    return run(sessions, "rollback", lambda s: rollback_host(s, version, db), policy, undo=undo_to_before,
               still_healthy=still_healthy, say=say)


def promotion_bundle(staging: list[HostSession], version: Version, dist: Path) -> Bundle:
    """The bundle to promote: exactly the one every staging host runs, healthy. Refuses otherwise."""
    digests = {}
    for s in staging:
        st = s.state()
        active = st.active
        if active is None or active.version != version:
            raise InputError(f"promotion refused: {s.host.name} runs {active.version if active else 'nothing'},"
                             f" not {version}")
        if not s.wait_healthy(version, timeout=5).get("healthy"):
            raise InputError(f"promotion refused: {version} on {s.host.name} is not healthy")
        digests[s.host.name] = active.meta.get("bundle_digest")
    if len(set(digests.values())) != 1 or None in digests.values():
        raise InputError("promotion refused: staging hosts run different builds of "
                         f"{version}: " + ", ".join(f"{h}={(d or '?')[:12]}" for h, d in digests.items()))
    digest = next(iter(digests.values()))
    path = bundle_dir(dist, version)
    if not path.exists():
        raise InputError(f"promotion refused: no local bundle of {version} in {path.parent}")
    b = Bundle.load(path)
    if b.digest != digest:
        raise InputError(f"promotion refused: staging runs {version} with digest {digest[:12]}, but the bundle in"
                         f" {path} has digest {b.digest[:12]}")
    return b


def plan_rows(sessions: list[HostSession], plan: Plan) -> list[dict]:
    """What a deploy would do on each host, read-only."""
    b = plan.bundle
    rows = []
    for s in sessions:
        st = s.state() if s.has_helper() else None
        existing = st.get(b.version) if st else None
        active = st.active if st else None
        if active and active.version == b.version and active.meta.get("bundle_digest") == b.digest:
            action, transfer = "nothing (already active)", "-"
        elif existing and existing.complete and existing.meta.get("bundle_digest") != b.digest:
            action, transfer = "REFUSED: same version, different content", "-"
        elif existing and existing.complete:
            action, transfer = "switch to the release already there", "-"
        else:
            have = set(s.t.run(s.steps.list_dir(s.layout.wheelhouse)).stdout.split())
            missing = [w for w in b.manifest["wheels"] if w not in have]
            tree = b.unpacked()
            size = sum((tree / f).stat().st_size for f in b.manifest["files"])
            size += sum((b.wheels_dir / w).stat().st_size for w in missing)
            action = "upload, build, switch"
            transfer = f"up to {human_bytes(size)} ({len(missing)}/{len(b.manifest['wheels'])} wheels)"
        if action.startswith(("nothing", "REFUSED")) or not plan.migrate:
            migrations = "-"
        elif active and active.meta.get("schema_fingerprint") == b.schema_fingerprint:
            migrations = "run (no schema change)"
        else:
            migrations = "run: SCHEMA CHANGES" if active else "run (first deploy)"
        rows.append({"host": s.host.name, "group": ",".join(s.host.groups) or "-",
                     "before": str(active.version) if active else "-", "after": str(b.version),
                     "action": action, "transfer": transfer, "migrations": migrations})
    return rows


def status_rows(sessions: list[HostSession]) -> list[dict]:
    rows = []
    for s in sessions:
        r = host_status(s)
        st = r["state"]
        active = st.active if st else None
        r.update(group=",".join(s.host.groups) or "-", os=s.host.os,
                 version=str(active.version) if active else None,
                 digest=(active.meta.get("bundle_digest") or "")[:12] if active else "",
                 last_deploy=(active.meta.get("finalized_at") or "") if active else "")
        rows.append(r)
    return rows


def drift(rows: list[dict]) -> str:
    """'' when every host runs the same build; otherwise who runs what."""
    builds = Counter((r["version"], r["digest"]) for r in rows)
    if len(builds) <= 1:
        return ""
    parts = []
    for (v, d), _ in builds.most_common():
        hosts = [r["host"] for r in rows if (r["version"], r["digest"]) == (v, d)]
        parts.append(f"{v or 'nothing'}{' (' + d + ')' if d else ''} on {', '.join(hosts)}")
    return "version drift: " + "; ".join(parts)
