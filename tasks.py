"""sgpfab tasks. Run from the repo root: `fab --list`, `fab -h deploy`, `fab -H prod1,prod2 deploy --version 1.0.5`.

The inventory is hosts/fleet.yaml unless SGPFAB_INVENTORY names another file (the sandbox
prints the export line for its own). `-H` takes host and group names, comma separated.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

from invoke import Collection, Exit, task

from sgpfab import artifacts, linux
from sgpfab.deploy import Artifacts, deploy_host
from sgpfab.errors import InputError, SgpfabError
from sgpfab.inventory import Inventory, default_inventory_path
from sgpfab.ops import cleanup_host, host_status, rollback_host, rollback_target
from sgpfab.report import console, outcomes_table, releases_table, say, status_table
from sgpfab.runner import Fleet, each_host, open_sessions
from sgpfab.versions import Version

ROOT = Path(__file__).resolve().parent


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


@task(help={
    "version": "semantic version to deploy, e.g. 1.0.5 (default: the app's VERSION file)",
    "source": "app folder to deploy (default: the inventory's app.source)",
})
@_guard
def deploy(c, version=None, source=None):
    """Deploy a release to the -H hosts: upload, build venv, back up DB, switch, restart, health-check.

    A release that does not become healthy is rolled back on its own and marked bad; the remaining
    hosts are then left untouched.
    """
    fleet = _fleet(c)
    src = Path(source).resolve() if source else fleet.inventory.app_source
    v = _version_from(version, src)
    app = fleet.inventory.app
    artifacts.check_source(src, app)
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say)
        art = Artifacts(src, artifacts.source_digest(src, linux.RSYNC_EXCLUDES),
                        artifacts.wheelhouse(src, app, say), artifacts.uv_binary(say),
                        module=app.module, requirements=app.requirements)
        outcomes = each_host(sessions, "deploy", lambda s: deploy_host(s, v, art))
    _fail_on(outcomes, f"deploy {v}")


@task(help={"version": "release to return to (default: the newest good release older than the active one)"})
@_guard
def rollback(c, version=None):
    """Switch the -H hosts back to an earlier release, restart and health-check it.

    Every host is checked first: if the target release is missing anywhere, nothing changes.
    """
    v = Version.parse(version) if version else None
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c), say)
        for s in sessions:
            try:
                rollback_target(s, v)
            except InputError as e:
                raise InputError(f"{s.host.name}: {e} (nothing was changed)") from None
        outcomes = each_host(sessions, "rollback", lambda s: rollback_host(s, v))
    _fail_on(outcomes, "rollback")


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
ns = Collection(deploy, rollback, list_, status, cleanup, sandbox)
