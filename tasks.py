"""sgpfab tasks. Run from the repo root: `fab --list`, `fab -h deploy`, `fab -H prod1,prod2 deploy --version 1.0.5`.

The inventory is hosts/fleet.yaml unless SGPFAB_INVENTORY names another file (the sandbox
prints the export line for its own). `-H` takes host and group names (and `all`), comma separated.
Bundles live in dist/releases/ unless SGPFAB_DIST names another directory.

Exit codes: 0 done everywhere; 1 bad input or nothing succeeded; 2 partial (some hosts failed,
were skipped or were undone).
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path

from invoke import Collection, Exit, task

from sgpfab import artifacts, fleetops
from sgpfab.bundle import Bundle, build, bundle_dir
from sgpfab.deploy import Plan
from sgpfab.errors import InputError, SgpfabError
from sgpfab.inventory import Inventory, default_inventory_path
from sgpfab.ops import backup_host, check_backup, cleanup_host, restore_host
from sgpfab.report import (Progress, backups_table, console, history_table, outcomes_table, plan_table,
                           releases_table, say, status_table)
from sgpfab.rollout import Policy, Rollout, make_policy, run
from sgpfab.runner import Fleet, open_sessions
from sgpfab.versions import Version

ROOT = Path(__file__).resolve().parent
logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # retries are reported

ROLLOUT_HELP = {
    "parallel": "how many hosts to work on at once (default 1)",
    "waves": "roll out in waves of cumulative host counts or percentages, e.g. 1,25%,100% (default: one wave)",
    "max_fail": "failed hosts tolerated before the rollout stops: a count or a percentage (default 0)",
    "soak": "seconds to wait after each wave before checking its hosts' health again (default 0)",
    "undo": "when the rollout stops, put hosts already changed back on their previous release "
            "(default; --no-undo leaves them)",
    "force_unlock": "first remove a deploy lock left behind by a crashed run",
}


def _inventory() -> Inventory:
    return Inventory.load(default_inventory_path(ROOT))


def _fleet(c, names=None) -> Fleet:
    inv = _inventory()
    names = names if names is not None else ((c.config.get("sgpfab") or {}).get("hosts") or [])
    return Fleet(inv, inv.resolve(names))


def _guard(fn):
    """Turn sgpfab errors into a one-line message and exit code 1 (no traceback)."""
    def wrapper(c, *a, **kw):
        try:
            return fn(c, *a, **kw)
        except SgpfabError as e:
            raise Exit(f"error: {e}", code=1) from None
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


def _finish(result: Rollout, title: str) -> None:
    """Summary table, failures in full, and an exit code scripts can act on."""
    console.print(outcomes_table(result.outcomes, title))
    for o in result.outcomes:
        if not o.ok and not o.message.startswith("skipped"):
            text = o.message if o.message.startswith(f"{o.host}:") else f"{o.host}: {o.message}"
            console.print(text, markup=False, highlight=False, style="red")
    if result.stopped:
        console.print(f"rollout {result.stopped}", style="red", markup=False)
    if result.exit_code:
        raise Exit(code=result.exit_code)


def _version_from(version: str | None, source: Path) -> Version:
    if version:
        return Version.parse(version)
    vf = source / "VERSION"
    if vf.is_file():
        return Version.parse(vf.read_text().strip())
    raise InputError("no version: pass --version X.Y.Z (or put a VERSION file in the app)")


def _dist() -> Path:
    return Path(os.environ.get("SGPFAB_DIST", ROOT / "dist"))


def _bundle_for(inv: Inventory, version: str | None, source: str | None, bundle: str | None) -> Bundle:
    """The verified bundle to deploy: given (a directory, or a version in dist/), or built from source."""
    if bundle:
        if source:
            raise InputError("give either --bundle or --source, not both")
        p = Path(bundle)
        if not p.exists() and os.sep not in bundle:
            p = bundle_dir(_dist(), Version.parse(bundle))
        if not p.exists():
            raise InputError(f"no bundle at {p}")
        b = Bundle.load(p)
        if version and Version.parse(version) != b.version:
            raise InputError(f"--version {version} does not match the bundle's version {b.version}")
        return b
    return _build(inv, version, source)


def _build(inv: Inventory, version: str | None, source: str | None) -> Bundle:
    """Build (or reuse the identical) bundle of the app folder: --source, else the inventory's."""
    src = Path(source).resolve() if source else inv.app_source
    return build(src, _version_from(version, src), inv.app, _dist(), say)


def _unlock(sessions) -> None:
    for s in sessions:
        s.force_unlock()
        s.note("deploy lock removed")


@task(help={
    "version": "semantic version to build, e.g. 1.0.5 (default: the app's VERSION file)",
    "source": "app folder (default: the inventory's app.source)",
})
@_guard
def bundle(c, version=None, source=None):
    """Build a verified release bundle in dist/releases/vX.Y.Z/ (or $SGPFAB_DIST/releases/...).

    It holds the app as a tar.gz, its wheels, a SHA-256 manifest, CHANGELOG.md, schema.sql and
    metadata. Rebuilding a version with different content is refused.
    """
    b = _build(_inventory(), version, source)
    say(f"bundle {b.version}: {b.path} (content digest {b.digest})")


@task(help={
    "version": "semantic version to deploy, e.g. 1.0.5 (default: the app's VERSION file)",
    "source": "app folder to build the release from (default: the inventory's app.source)",
    "bundle": "deploy a prebuilt bundle instead: its directory, or a version found in dist/releases/",
    "dry_run": "only show what each host would do (same as the plan task)",
    **ROLLOUT_HELP,
})
@_guard
def deploy(c, version=None, source=None, bundle=None, parallel=1, waves=None, max_fail=None, soak=0.0,
           undo=True, dry_run=False, force_unlock=False):
    """Deploy a release to the -H hosts: upload, verify, build venv, back up DB, migrate, switch, restart, health-check.

    Without --bundle the release is first built as a bundle in dist/releases/ (or reused when an
    identical one exists). A host whose release does not become healthy rolls itself back and
    marks the release bad. Hosts go in waves, --parallel at a time; past --max-fail failures the
    rollout stops and (unless --no-undo) hosts already changed go back to their previous release.
    """
    fleet = _fleet(c)
    if bundle is None and version is not None:
        Version.parse(version)
    policy = make_policy(len(fleet.hosts), waves, parallel, max_fail, soak, undo)
    b = _bundle_for(fleet.inventory, version, source, bundle)
    _deploy(fleet, b, policy, dry_run, force_unlock, f"deploy {b.version}")


def _deploy(fleet: Fleet, b: Bundle, policy: Policy, dry_run: bool, force_unlock: bool, title: str) -> None:
    with ExitStack() as stack:
        progress = stack.enter_context(Progress()) if not dry_run else say
        sessions = open_sessions(stack, fleet, progress)
        plan = Plan(b, lambda host_os: artifacts.uv_binary(host_os, say), migrate=fleet.inventory.app.migrate)
        if dry_run:
            console.print(plan_table(fleetops.plan_rows(sessions, plan), f"plan: {title} (nothing changed)"))
            say("transfer: an upper bound (app files and the wheels a host lacks); files unchanged since"
                " the active release are hard-linked on the host, not sent")
            return
        if force_unlock:
            _unlock(sessions)
        result = fleetops.deploy_fleet(sessions, plan, policy, progress)
    _finish(result, title)


@task(help={
    "version": "semantic version to deploy, e.g. 1.0.5 (default: the app's VERSION file)",
    "source": "app folder to build the release from (default: the inventory's app.source)",
    "bundle": "a prebuilt bundle: its directory, or a version found in dist/releases/",
})
@_guard
def plan(c, version=None, source=None, bundle=None):
    """Show what deploying a release would do on each -H host (before/after, transfer, migrations); changes nothing."""
    fleet = _fleet(c)
    b = _bundle_for(fleet.inventory, version, source, bundle)
    _deploy(fleet, b, make_policy(len(fleet.hosts), None, 1, None, 0, True), True, False, f"deploy {b.version}")


@task(name="promote", help={
    "from_": "hosts or groups that run the release now (e.g. staging)",
    "to": "hosts or groups to deploy it to (e.g. prod)",
    "version": "the version to promote",
    "dry_run": "only show what each target host would do",
    **ROLLOUT_HELP,
})
@_guard
def promote(c, from_=None, to=None, version=None, parallel=1, waves=None, max_fail=None, soak=0.0, undo=True,
            dry_run=False, force_unlock=False):
    """Deploy to --to exactly the bundle (same digest) that runs healthy on every --from host.

    Refused when a --from host runs another version, another build of it, is unhealthy, or when
    the local bundle in dist/releases/ is not that exact build.
    """
    if not (from_ and to and version):
        raise InputError("promote needs --from, --to and --version")
    v = Version.parse(version)
    inv = _inventory()
    source, target = Fleet(inv, inv.resolve(from_)), Fleet(inv, inv.resolve(to))
    policy = make_policy(len(target.hosts), waves, parallel, max_fail, soak, undo)
    with ExitStack() as stack:
        b = fleetops.promotion_bundle(open_sessions(stack, source, say), v, _dist())
    say(f"promoting {v} ({b.digest[:12]}) from {from_} to {to}")
    _deploy(target, b, policy, dry_run, force_unlock, f"promote {v} to {to}")


@task(help={
    "version": "release to return to (default: the newest good release older than the active one)",
    "db": "when the rollback crosses a schema change: 'keep' the current database, or 'restore' the "
          "backup taken before the active release was deployed",
    **ROLLOUT_HELP,
})
@_guard
def rollback(c, version=None, db=None, parallel=1, waves=None, max_fail=None, soak=0.0, undo=True,
             force_unlock=False):
    """Switch the -H hosts back to an earlier release, restart and health-check it, in waves like deploy.

    Every host is checked first: if the target release is missing anywhere, nothing changes.
    """
    v = Version.parse(version) if version else None
    fleet = _fleet(c)
    policy = make_policy(len(fleet.hosts), waves, parallel, max_fail, soak, undo)
    with ExitStack() as stack:
        progress = stack.enter_context(Progress())
        sessions = open_sessions(stack, fleet, progress)
        if force_unlock:
            _unlock(sessions)
        result = fleetops.rollback_fleet(sessions, v, db, policy, progress)
    _finish(result, "rollback")


@task
@_guard
def unlock(c):
    """Remove the deploy lock on the -H hosts (only when the deploy that held it is gone)."""
    with ExitStack() as stack:
        _unlock(open_sessions(stack, _fleet(c), say))


def _each(fleet: Fleet, action: str, fn, title: str, stop_on_failure: bool = True) -> None:
    """Host by host; by default stop at the first failure."""
    n = len(fleet.hosts)
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say)
        result = run(sessions, action, fn, Policy([n], 1, 0 if stop_on_failure else n, 0, False), say=say)
    _finish(result, title)


@task(help={"label": "a word to add to the backup's name (default: manual)"})
@_guard
def backup(c, label="manual"):
    """Back up each -H host's SQLite database now (online, WAL-safe) into backups/."""
    _each(_fleet(c), "backup", lambda s: backup_host(s, label), "backup", stop_on_failure=False)


@task(name="list-backups")
@_guard
def list_backups(c):
    """List the database backups on the -H hosts, oldest first."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        rows = [(s.host.name, s.hostctl("backups")["backups"]) for s in sessions if s.has_helper()]
    console.print(backups_table(rows))


@task(help={"backup": "backup file name, as shown by list-backups"})
@_guard
def restore(c, backup=None):
    """Restore a database backup on the -H hosts: stop, save the current DB as a backup, restore, start, check."""
    if not backup:
        raise InputError("give --backup NAME (see: fab -H HOST list-backups)")
    fleet = _fleet(c)
    with ExitStack() as stack:
        for s in open_sessions(stack, fleet, say):
            try:
                check_backup(s, backup)
            except InputError as e:
                raise InputError(f"{s.host.name}: {e} (nothing was changed)") from None
    _each(fleet, "restore", lambda s: restore_host(s, backup), "restore")


@task(help={"last": "how many records per host"})
@_guard
def history(c, last=20):
    """Show the audit log of the -H hosts: who deployed or rolled back what, when, with what result."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        rows = [(s.host.name, s.hostctl("history", "--last", str(int(last)))["records"])
                for s in sessions if s.has_helper()]
    console.print(history_table(rows))


@task(name="list")
@_guard
def list_(c):
    """List the releases on the -H hosts (* marks the active one)."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        rows = [(s.host.name, s.state()) for s in sessions if s.has_helper()]
    console.print(releases_table(rows))


@task
@_guard
def status(c):
    """One table for the -H hosts: group, OS, active version and digest, service state, health, last deploy.

    Exits 2 when a host is unhealthy or versions drift apart.
    """
    with ExitStack() as stack:
        rows = fleetops.status_rows(open_sessions(stack, _fleet(c), say))
    console.print(status_table(rows))
    drift = fleetops.drift(rows)
    if drift:
        console.print(drift, style="yellow", markup=False)
    if drift or any(r["health"] != "healthy" for r in rows):
        raise Exit(code=2)


@task(help={"keep": "how many of the newest good releases to keep (the active one and its rollback target are always kept)"})
@_guard
def cleanup(c, keep=5):
    """Delete old releases, bad releases and leftover partial builds on the -H hosts."""
    keep = int(keep)
    if keep < 1:
        raise InputError("--keep must be at least 1")
    _each(_fleet(c), "cleanup", lambda s: cleanup_host(s, keep), f"cleanup (keep {keep})")


@task(help={"name": "fleet name (letters/digits)", "hosts": "number of hosts: staging1, prod1, prod2, ...",
            "subnet": "third octet of the fleet's 169.254.X.0/24 network"})
def sandbox_up(c, name="demo", hosts=3, subnet=250):
    """Boot a local sandbox fleet (real Debian hosts with systemd and sshd in nspawn; needs root)."""
    from sgpfab.sandbox import fleet
    f = fleet.up(name, int(hosts), int(subnet))
    print(f"export SGPFAB_INVENTORY={f.inventory}")


@task(help={"name": "fleet name"})
def sandbox_down(c, name="demo"):
    """Stop a sandbox fleet and remove everything it made."""
    from sgpfab.sandbox import fleet
    fleet.down(name)


sandbox = Collection("sandbox")
sandbox.add_task(sandbox_up, "up")
sandbox.add_task(sandbox_down, "down")
ns = Collection(bundle, deploy, plan, promote, rollback, list_, status, cleanup, backup, list_backups, restore,
                history, unlock, sandbox)
