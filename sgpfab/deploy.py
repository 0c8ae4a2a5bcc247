"""Deploy one verified bundle to one host, leaving it on a working release whatever happens."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .activate import activate, recover
from .bundle import Bundle
from .errors import DeployError, InputError
from .identity import controller_user
from .layout import PARTIAL_PREFIX
from .outcome import Outcome, Status
from .session import HostSession, elapsed
from .settings import Settings
from .state import HostState, Release
from .versions import Version, display
from .whenchanged import Decision, active_bundle, decide

if TYPE_CHECKING:
    from .appspec import AppSpec

SPACE_MARGIN = 3  # free space needed on a host: this many times the release's size, at least


@dataclass
class Plan:
    """What the controller prepared once for all hosts."""

    bundle: Bundle
    uv: Callable[[str], Path]  # host OS -> a uv binary to push to hosts without one
    # host name -> its settings; None: keep the settings already on the hosts (on-server apply)
    settings: dict[str, Settings] | None = field(default_factory=dict)
    action: str = "deploy"  # what the audit log calls it ("apply": run on the host itself)

    @property
    def version(self) -> Version:
        return self.bundle.version


def check_host(s: HostSession, plan: Plan) -> None:
    """Before anything changes anywhere: the bundle installs on this host (arch, glibc, Python),
    and the host has room for it. InputError names host and cause."""
    f = s.facts
    b = plan.bundle
    if f is None:
        return
    if not f.python:
        raise InputError(f"{s.name}: no Python at {s.inst.interpreter} (set python: in the inventory)")
    if b.target_for(f.arch, f.glibc, f.python, s.host.os) is None:
        covered = ", ".join(t.key for t in b.metadata.targets)
        raise InputError(
            f"{s.name}: the bundle does not cover this host ({s.host.os} {f.arch}"
            f"{', glibc ' + f.glibc if f.glibc else ''}, Python {f.python}); it covers {covered}:"
            f" add a target to apps.{b.app}.targets"
        )
    req = b.metadata.requires_python
    if req:
        from packaging.specifiers import SpecifierSet

        if not SpecifierSet(req).contains(f.python, prereleases=True):
            raise InputError(
                f"{s.name}: the app requires Python {req}, the host has {f.python} at"
                f" {f.interpreter}: set python: to another interpreter (see docs/apps.md)"
            )
    if s.host.os == "windows":
        from .windows import NSSM_MIN_VERSION, parse_nssm_version

        have = parse_nssm_version(f.nssm)
        if have is None or have < NSSM_MIN_VERSION:
            raise InputError(
                f"{s.name}: NSSM 2.24-101 or later is needed (2.24 leaves services paused on Windows 10"
                f" 1703+ / Server 2019); found: {f.nssm or 'no nssm.exe on PATH'}"
            )
        web = b.spec.web
        if web is not None and web.server == "gunicorn":
            raise InputError(
                f"{s.name}: gunicorn does not run on Windows: use server: uvicorn, or a command"
                " (e.g. waitress-serve) for a WSGI app"
            )
    size = b.archive.stat().st_size * 4 + sum(w.stat().st_size for w in b.wheels_dir.glob("*.whl"))
    if f.free_bytes and f.free_bytes < size * SPACE_MARGIN:
        raise InputError(
            f"{s.name}: not enough free space under {s.inst.api_root}: {f.free_bytes // 2**20} MiB free,"
            f" {size * SPACE_MARGIN // 2**20} MiB needed"
        )
    if s.inst.database.engine == "postgresql" and s.host.os == "linux":
        missing = [t for t in ("pg_dump", "pg_restore", "psql") if not f.tools.get(t)]
        if missing:
            raise InputError(
                f"{s.name}: {', '.join(missing)} missing (the PostgreSQL client tools back up the"
                " database): apt install postgresql-client"
            )


def deploy_host(s: HostSession, plan: Plan) -> Outcome:
    """Upload, verify, build, write settings, back up, run release commands, activate; a release
    that does not become healthy is switched away from (and marked bad) by `activate`."""
    start, sent = time.monotonic(), s.t.bytes_sent
    version, bundle = plan.version, plan.bundle
    settings = plan.settings[s.name] if plan.settings is not None else None
    s.prepare()
    s.step("prepare")
    with s.lock(f"deploy {version}") as st:
        recovered = recover(s, st)
        if recovered:
            st = s.state()
        before = st.current
        s.step("lock")
        audit = dict(action=plan.action, version=str(version), before=display(before), digest=bundle.digest)
        built: HostState | None = None  # the host's state once the release is built here
        try:
            if _already_active(s, st, plan, settings):
                changed = s.install_processes(cast(str, st.current), bundle.spec)  # active: not None
                if not changed:
                    s.audit(**audit, result="noop")
                    msg = "already active and healthy: nothing to do"
                    return _outcome(s, Status.NOOP, before, before, msg, start, sent, recovered)
                s.note("the service units had drifted from what sgpfab wrote: rewritten, restarting")
            else:
                built = _ensure_release(s, st, plan)
            name = version.release_name
            fingerprint, _ = s.stage(name, bundle.spec, settings, f"before-{name}")
            s.step("staged")
            _run_hooks(s, name, bundle.spec, hook_decisions(plan, st.active, fingerprint))
            activate(
                s, name, before, "deploy", before_undo=s.revert_settings, settings_fingerprint=fingerprint, st=built
            )
        except BaseException as e:
            s.revert_settings()
            s.audit(
                **audit,
                result="failed",
                error=str(e).splitlines()[0][:300] if str(e) else type(e).__name__,
                seconds=elapsed(start),
            )
            raise
        s.audit(**audit, result="ok", seconds=elapsed(start))
    return _outcome(s, Status.OK, before, name, "healthy", start, sent, recovered)


def _outcome(
    s: HostSession,
    status: Status,
    before: str | None,
    after: str | None,
    message: str,
    start: float,
    sent: int,
    recovered: str | None,
) -> Outcome:
    if recovered:
        message = f"{message} (first {recovered})"
    return Outcome(
        s.name,
        "deploy",
        status,
        display(before),
        display(after),
        message,
        elapsed(start),
        s.t.bytes_sent - sent,
        dict(s.timings),
    )


def _already_active(s: HostSession, st: HostState, plan: Plan, settings: Settings | None) -> bool:
    active = st.active
    if active is None or active.name != plan.version.release_name or active.meta.bundle_digest != plan.bundle.digest:
        return False
    current = s.settings_fingerprint(settings) if settings is not None else s.show_settings().get("fingerprint")
    if active.meta.settings_fingerprint != (current or ""):
        s.note("settings changed since this release was activated: applying them")
        return False
    return bool(s.probe().ok)


def _ensure_release(s: HostSession, st: HostState, plan: Plan) -> HostState | None:
    """The release on the host, built unless it is there already: the host's state when it was
    built (None when it was reused)."""
    version, bundle = plan.version, plan.bundle
    existing = st.get(version)
    if existing and existing.complete:
        if existing.meta.bundle_digest != bundle.digest:
            raise DeployError(
                f"{s.name}: release {version} already exists with different content;"
                " versions are immutable: bump the version"
            )
        if existing.bad:
            s.clear_bad(existing.name)  # a deliberate retry clears the mark
        s.note(f"release {version} is already on the host; reusing it")
        return None
    if existing:  # a directory without its completion marker: never trusted, rebuilt
        s.remove(existing.name)
    try:
        return _build_release(s, st, plan)
    except BaseException:
        # Nothing half-built stays behind (a full disk must not stay full).
        # Best effort: the original error is what the user needs to see.
        with contextlib.suppress(Exception):
            s.remove(PARTIAL_PREFIX + version.release_name, version.release_name)
        raise


def _manifest_base(st: HostState, bundle: Bundle) -> tuple[str, dict[str, Any]] | None:
    """The host's active release and its bundle's manifest, when the controller has that bundle
    (beside this one, its digest the one the host recorded): what the new manifest is sent as a
    difference from."""
    active = st.active
    if active is None or active.name == bundle.version.release_name or active_bundle(bundle, active) is None:
        return None
    try:
        manifest = json.loads((Path(bundle.path).parent / active.name / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return (active.name, manifest) if isinstance(manifest, dict) else None


def _build_release(s: HostSession, st: HostState, plan: Plan) -> HostState:
    version, bundle = plan.version, plan.bundle
    facts = s.facts if s.facts is not None else s.preflight()
    uv = facts.uv
    if not uv:
        s.note("no uv on the host: pushing a static uv binary")
        uv = s.push_uv(plan.uv(s.host.os))
    s.note(f"uploading {bundle.app} {version} ({bundle.digest[:12]})")
    s.upload(bundle, link_dest=s.layout.current if st.current else None)
    s.step("upload")
    target = bundle.target_for(facts.arch, facts.glibc, facts.python, s.host.os) or bundle.metadata.targets[0]
    s.note("verifying every file on the host, building the venv offline")
    built = s.build_release(
        bundle, uv, bundle.metadata.requirements[target.key], release_meta(bundle), _manifest_base(st, bundle)
    )
    s.step("built")
    return built


def release_meta(bundle: Bundle) -> dict[str, Any]:
    """What a release records about itself (in its completion marker)."""
    md = bundle.metadata
    return {
        "version": str(bundle.version),
        "bundle_digest": bundle.digest,
        "schema_fingerprint": md.schema_.fingerprint,
        "migrations": list(md.schema_.migrations),
        "deployed_by": controller_user(),
        "spec": md.spec.model_dump(mode="json", by_alias=True),
        "install": md.install.model_dump(mode="json"),
    }


def hook_decisions(plan: Plan, active: Release | None, settings_fingerprint: str) -> list[Decision]:
    """Which release commands run on a host whose active release is `active`, given the settings
    fingerprint the new release will run with ('' when unknown)."""
    recorded = active.meta.settings_fingerprint if active else ""
    changed = (settings_fingerprint != recorded) if settings_fingerprint and recorded else None
    return decide(plan.bundle, active, changed)


def _run_hooks(s: HostSession, release: str, spec: AppSpec, decisions: list[Decision]) -> None:
    """The release commands (migrate, collectstatic...), in the new release, before the switch;
    those whose `when_changed` files did not change are skipped (see whenchanged.py).
    A failing one switches nothing and names itself, the host and its output."""
    s.make_writable(release, spec.writable)
    for d in decisions:
        s.note(d.describe(len(decisions)))
        if not d.run:
            s.step(f"hook {d.index} skipped")
            continue
        i, command = d.index, d.command
        r = s.run_hook(release, i)
        s.step(f"hook {i}")
        if not r.ok:
            out = (r.stdout + r.stderr).strip().splitlines()[-8:] or ["(no output)"]
            s.mark_bad(release, f"release command {i} failed")
            raise DeployError(
                f"{s.name}: release command {command!r} of {display(release)} failed (exit {r.exited});"
                " nothing was switched; the database backup taken just before is in backups/:\n    "
                + "\n    ".join(out)
            )
