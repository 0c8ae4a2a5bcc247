"""sgpfab tasks. Run from the repo root: `fab --list`, `fab -h deploy`, `fab -H prod1,prod2 deploy --version 1.0.5`.

The inventory is hosts/fleet.yaml unless SGPFAB_INVENTORY names another file (the sandbox
prints the export line for its own). `-H` takes host and group names, comma separated.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from pathlib import Path

from invoke import Collection, Exit, task

from sgpfab import artifacts
from sgpfab.bundle import Bundle, build, bundle_dir
from sgpfab.deploy import Plan, deploy_host
from sgpfab.errors import InputError, SgpfabError
from sgpfab.inventory import Inventory, default_inventory_path
from sgpfab.ops import (backup_host, check_backup, cleanup_host, host_status, plan_rollback, restore_host,
                        rollback_host)
from sgpfab.report import (backups_table, console, history_table, outcomes_table, releases_table, say,
                           status_table)
from sgpfab.runner import Fleet, each_host, open_sessions
from sgpfab.versions import Version

ROOT = Path(__file__).resolve().parent
logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # retries are reported


def _fleet(c) -> Fleet:
    inv = Inventory.load(default_inventory_path(ROOT))
    hosts = (c.config.get("sgpfab") or {}).get("hosts") or []
    return Fleet(inv, inv.resolve(hosts))


def _fail_on(outcomes, title: str) -> None:
    console.print(outcomes_table(outcomes, title))
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        console.print(f"[red]{o.host}: {o.message}[/]", markup=True, highlight=False)
    if failed:
        raise Exit(code=1 if len(failed) == len(outcomes) else 2)


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


def _version_from(version: str | None, source: Path) -> Version:
    if version:
        return Version.parse(version)
    vf = source / "VERSION"
    if vf.is_file():
        return Version.parse(vf.read_text().strip())
    raise InputError("no version: pass --version X.Y.Z (or put a VERSION file in the app)")


def _dist() -> Path:
    return Path(os.environ.get("SGPFAB_DIST", ROOT / "dist"))


def _bundle_for(fleet: Fleet, version: str | None, source: str | None, bundle: str | None) -> Bundle:
    """The verified bundle to deploy: given (path or version in dist/), or built from source."""
    if bundle:
        if source:
            raise InputError("give either --bundle or --source, not both")
        p = Path(bundle)
        if not p.exists() and not os.sep in bundle:
            p = bundle_dir(_dist(), Version.parse(bundle))
        b = Bundle.load(p) if p.exists() else None
        if b is None:
            raise InputError(f"no bundle at {p}")
        if version and Version.parse(version) != b.version:
            raise InputError(f"--version {version} does not match the bundle's version {b.version}")
        return b
    src = Path(source).resolve() if source else fleet.inventory.app_source
    return build(src, _version_from(version, src), fleet.inventory.app, _dist(), say)


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
    inv = Inventory.load(default_inventory_path(ROOT))
    src = Path(source).resolve() if source else inv.app_source
    b = build(src, _version_from(version, src), inv.app, _dist(), say)
    say(f"bundle {b.version}: {b.path} (content digest {b.digest})")


@task(help={
    "version": "semantic version to deploy, e.g. 1.0.5 (default: the app's VERSION file)",
    "source": "app folder to build the release from (default: the inventory's app.source)",
    "bundle": "deploy a prebuilt bundle instead: its directory, or a version found in dist/releases/",
    "force_unlock": "first remove a deploy lock left behind by a crashed run",
})
@_guard
def deploy(c, version=None, source=None, bundle=None, force_unlock=False):
    """Deploy a release to the -H hosts: upload, verify, build venv, back up DB, migrate, switch, restart, health-check.

    Without --bundle the release is first built as a bundle in dist/releases/ (or reused when an
    identical one exists). A release that does not become healthy is rolled back on its own and
    marked bad; the remaining hosts are then left untouched.
    """
    fleet = _fleet(c)
    if bundle is None and version is not None:
        Version.parse(version)
    b = _bundle_for(fleet, version, source, bundle)
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say)
        if force_unlock:
            _unlock(sessions)
        plan = Plan(b, artifacts.uv_binary(say), migrate=fleet.inventory.app.migrate)
        outcomes = each_host(sessions, "deploy", lambda s: deploy_host(s, plan))
    _fail_on(outcomes, f"deploy {b.version}")


@task(help={
    "version": "release to return to (default: the newest good release older than the active one)",
    "db": "when the rollback crosses a schema change: 'keep' the current database, or 'restore' the "
          "backup taken before the active release was deployed",
    "force_unlock": "first remove a deploy lock left behind by a crashed run",
})
@_guard
def rollback(c, version=None, db=None, force_unlock=False):
    """Switch the -H hosts back to an earlier release, restart and health-check it.

    Every host is checked first: if the target release is missing anywhere, nothing changes.
    """
    v = Version.parse(version) if version else None
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        if force_unlock:
            _unlock(sessions)
        for s in sessions:
            try:
                plan_rollback(s, v, db)
            except InputError as e:
                raise InputError(f"{s.host.name}: {e} (nothing was changed)") from None
        outcomes = each_host(sessions, "rollback", lambda s: rollback_host(s, v, db))
    _fail_on(outcomes, "rollback")


def _unlock(sessions) -> None:
    for s in sessions:
        s.force_unlock()
        s.note("deploy lock removed (--force-unlock)")


@task
@_guard
def unlock(c):
    """Remove the deploy lock on the -H hosts (only when the deploy that held it is gone)."""
    with ExitStack() as stack:
        _unlock(open_sessions(stack, _fleet(c), say))


@task(help={"label": "a word to add to the backup's name (default: manual)"})
@_guard
def backup(c, label="manual"):
    """Back up each -H host's SQLite database now (online, WAL-safe) into backups/."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        outcomes = each_host(sessions, "backup", lambda s: backup_host(s, label), stop_on_failure=False)
    _fail_on(outcomes, "backup")


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
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        for s in sessions:
            try:
                check_backup(s, backup)
            except InputError as e:
                raise InputError(f"{s.host.name}: {e} (nothing was changed)") from None
        outcomes = each_host(sessions, "restore", lambda s: restore_host(s, backup))
    _fail_on(outcomes, "restore")


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
    """Show each -H host's active version, releases, service state and health."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        rows = [host_status(s) for s in sessions]
    console.print(status_table(rows))
    if any(r["health"] != "healthy" for r in rows):
        raise Exit(code=2)


@task(help={"keep": "how many of the newest releases to keep (the active and previous ones are always kept)"})
@_guard
def cleanup(c, keep=5):
    """Delete old releases (and leftover partial builds) on the -H hosts."""
    keep = int(keep)
    if keep < 1:
        raise InputError("--keep must be at least 1")
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        outcomes = each_host(sessions, "cleanup", lambda s: cleanup_host(s, keep))
    _fail_on(outcomes, f"cleanup (keep {keep})")


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
ns = Collection(bundle, deploy, rollback, list_, status, cleanup, backup, list_backups, restore, history,
                unlock, sandbox)
