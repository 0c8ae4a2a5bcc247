"""sgpfab from Python: deploy, roll back and check a set of hosts from your own code (an Invoke
task, a script), with the same checks and results as the `fab` tasks.

    from sgpfab import api
    result = api.deploy("staging", "1.0.5")          # a Rollout: one Outcome per host
    if result.exit_code: ...

Hosts are host and group names of the inventory ("prod", ["prod1", "prod2"], "all"). The
inventory is `inventory` if given, else $SGPFAB_INVENTORY, else hosts/fleet.yaml in the current
directory; bundles go to `dist` (default $SGPFAB_DIST, else ./dist). Bad input raises an
`sgpfab.errors.SgpfabError` subclass (InputError, InventoryError) before any host changes; an
unreachable host raises RemoteError, also before any change. A failure on a host during the
rollout is not raised: it is in the returned Rollout. Progress lines go to `say` (default: print).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fleetops, hosttools
from .bundle import Bundle, build
from .deploy import Plan
from .errors import InputError
from .inventory import App, Inventory, default_inventory_path
from .ops import DB_CHOICES
from .outcome import Outcome, Status
from .rollout import Rollout, make_policy
from .runner import Fleet, open_sessions
from .settings import SecretStore, resolve
from .versions import Version

Hosts = str | Iterable[str]
Say = Callable[[object], None]

__all__ = ["FleetStatus", "Outcome", "Rollout", "Status", "deploy", "rollback", "status"]


@dataclass(frozen=True)
class FleetStatus:
    """What `status` found: one row per host (as in `fab status --json`) and version drift."""

    rows: list[dict[str, Any]]
    drift: str  # '' when every host runs the same build

    @property
    def ok(self) -> bool:
        """Every host healthy and on the same build."""
        return not self.drift and all(r["health"] == "healthy" for r in self.rows)


def _fleet(hosts: Hosts, app: str | None, inventory: str | os.PathLike[str] | None) -> Fleet:
    path = Path(inventory) if inventory is not None else default_inventory_path(Path.cwd())
    names = hosts if isinstance(hosts, str) else list(hosts)
    return Fleet.select(Inventory.load(path), app, names)


def _dist(dist: str | os.PathLike[str] | None) -> Path:
    if dist is not None:
        return Path(dist)
    return Path(os.environ.get("SGPFAB_DIST") or Path.cwd() / "dist")


def _bundle(
    app: App,
    version: str | None,
    source: str | os.PathLike[str] | None,
    bundle: str | os.PathLike[str] | None,
    dist: Path,
    say: Say,
) -> Bundle:
    """A prebuilt bundle directory (checked against app and version), or one built from source."""
    if bundle is not None:
        if source is not None:
            raise InputError("give either bundle or source, not both")
        if not Path(bundle).is_dir():
            raise InputError(f"no bundle at {bundle}")
        b = Bundle.load(Path(bundle))
        if b.app != app.name:
            raise InputError(f"the bundle at {bundle} is of app {b.app}, not {app.name}")
        if version is not None and Version.parse(version) != b.version:
            raise InputError(f"version {version} does not match the bundle's version {b.version}")
        return b
    if version is None:
        raise InputError("no version: give the version to deploy, e.g. '1.0.5'")
    src = Path(source).resolve() if source is not None else app.source
    return build(app, Version.parse(version), dist, say, src=src)


def deploy(
    hosts: Hosts,
    version: str | None = None,
    *,
    app: str | None = None,
    source: str | os.PathLike[str] | None = None,
    bundle: str | os.PathLike[str] | None = None,
    inventory: str | os.PathLike[str] | None = None,
    dist: str | os.PathLike[str] | None = None,
    parallel: int = 1,
    waves: str | None = None,
    max_fail: str | int | None = None,
    soak: float = 0,
    undo: bool = True,
    say: Say = print,
) -> Rollout:
    """Deploy `version` (built from the app's source, or `source`) or a prebuilt `bundle`
    directory to `hosts`, like `fab -H HOSTS deploy`. Returns the Rollout; its `exit_code` is 0
    when every host is done."""
    fleet = _fleet(hosts, app, inventory)
    if version is not None:
        Version.parse(version)
    policy = make_policy(len(fleet.hosts), waves=waves, parallel=parallel, max_fail=max_fail, soak=soak, undo=undo)
    store = SecretStore(fleet.inventory.secrets_file)
    settings = {h.name: resolve(fleet.inventory.instance(fleet.app.name, h.name), store) for h in fleet.hosts}
    b = _bundle(fleet.app, version, source, bundle, _dist(dist), say)
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say)
        plan = Plan(b, lambda host_os: hosttools.uv_binary(host_os, say), settings)
        return fleetops.deploy_fleet(sessions, plan, policy, say)


def rollback(
    hosts: Hosts,
    version: str | None = None,
    *,
    db: str | None = None,
    app: str | None = None,
    inventory: str | os.PathLike[str] | None = None,
    parallel: int = 1,
    waves: str | None = None,
    max_fail: str | int | None = None,
    soak: float = 0,
    undo: bool = True,
    say: Say = print,
) -> Rollout:
    """Switch `hosts` back to `version` (default: each host's previous good release), like
    `fab -H HOSTS rollback`. `db` is 'keep' or 'restore' when the rollback crosses a schema change."""
    target = Version.parse(version) if version is not None else None
    if db is not None and db not in DB_CHOICES:
        raise InputError(f"db must be one of: {', '.join(DB_CHOICES)}")
    fleet = _fleet(hosts, app, inventory)
    policy = make_policy(len(fleet.hosts), waves=waves, parallel=parallel, max_fail=max_fail, soak=soak, undo=undo)
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say)
        return fleetops.rollback_fleet(sessions, target, db, policy, say)


def status(
    hosts: Hosts, *, app: str | None = None, inventory: str | os.PathLike[str] | None = None, say: Say = print
) -> FleetStatus:
    """Each host's active version, processes, health and settings drift, like `fab -H HOSTS status`."""
    fleet = _fleet(hosts, app, inventory)
    with ExitStack() as stack:
        rows = fleetops.status_rows(open_sessions(stack, fleet, say))
    return FleetStatus(rows, fleetops.drift(rows))
