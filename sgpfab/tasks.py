"""sgpfab's Fabric tasks: `fab --list`, `fab -h deploy`, `fab -H prod1,prod2 deploy --version 1.0.5`.

A project uses them with a one-line fabfile.py (`from sgpfab.tasks import ns`; `sgpfab init`
writes it). The inventory is hosts/fleet.yaml (in the directory `fab` runs in) unless
SGPFAB_INVENTORY names another file; bundles go to dist/APP/releases/ unless SGPFAB_DIST names
another directory. `-H` takes host and group names (and `all`), comma separated; `--app` picks
the app when the inventory has several.

Exit codes: 0 done everywhere; 1 bad input, or nothing succeeded; 2 partial (some hosts failed,
were skipped or were undone), or `status` found drift or an unhealthy host.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from . import fleetops, hosttools
from .bundle import Bundle, build, bundle_dir
from .deploy import Plan
from .errors import InputError, SgpfabError
from .inventory import Inventory, default_inventory_path
from .ops import backup_host, check_backup, cleanup_host, restore_host
from .report import (
    Progress,
    backups_table,
    console,
    emit_json,
    history_table,
    plan_table,
    print_rollout,
    releases_dict,
    releases_table,
    say,
    say_err,
    settings_table,
    status_table,
)
from .rollout import Policy, Rollout, make_policy, run
from .runner import Fleet, open_sessions
from .settings import SecretStore, resolve
from .versions import Version

if TYPE_CHECKING:
    from invoke.context import Context

    from .inventory import App
    from .outcome import Outcome
    from .session import HostSession
    from .settings import Settings
    from .state import HostState

_R = TypeVar("_R")

ROLLOUT_HELP = {
    "parallel": "how many hosts to work on at once (default 1)",
    "waves": "roll out in waves of cumulative host counts or percentages, e.g. 1,25%,100% (default: one wave)",
    "max_fail": "failed hosts tolerated before the rollout stops: a count or a percentage (default 0)",
    "soak": "seconds to wait after each wave before checking its hosts' health again (default 0)",
    "undo": "when the rollout stops, put hosts already changed back on their previous release "
    "(default; --no-undo leaves them)",
    "force_unlock": "first remove a deploy lock left behind by a crashed run",
    "app": "the app to work on (needed when the inventory has several)",
    "json": "print the result as JSON (schema sgpfab/1) instead of tables; progress goes to stderr",
    "timings": "show how long each step took on each host",
}


def _setup_logging() -> None:
    if getattr(_setup_logging, "done", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    log = logging.getLogger("sgpfab")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False
    for noisy in ("paramiko", "invoke", "fabric"):  # a host dying mid-run is reported once, by us
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    _setup_logging.done = True  # type: ignore[attr-defined]


def _inventory() -> Inventory:
    return Inventory.load(default_inventory_path(Path.cwd()))


def _hosts(c: Context) -> list[str]:
    return (c.config.get("sgpfab") or {}).get("hosts") or []


def _fleet(c: Context, app: str | None, names: list[str] | str | None = None) -> Fleet:
    inv = _inventory()
    return Fleet.select(inv, app, names if names is not None else _hosts(c))


def _dist() -> Path:
    return Path(os.environ.get("SGPFAB_DIST") or Path.cwd() / "dist")


def guard(fn: Callable[..., _R]) -> Callable[..., _R]:
    """sgpfab errors become one `error:` line and exit code 1 (a JSON document with --json); no
    traceback reaches the user (SGPFAB_DEBUG=1 shows one for an unexpected failure)."""

    @functools.wraps(fn)
    def wrapper(c: Context, *a: Any, **kw: Any) -> _R:
        _setup_logging()
        as_json = bool(kw.get("json"))
        if getattr(c, "host", None) is not None:  # Fabric's own executor: once per host, wrong here
            raise Exit(
                "error: sgpfab's tasks need Fabric's config to name its executor: put fabric.yaml"
                " (written by `sgpfab init`) beside fabfile.py",
                code=1,
            )
        try:
            return fn(c, *a, **kw)
        except SgpfabError as e:
            message = str(e).splitlines()[0] if not as_json else str(e)
        except KeyboardInterrupt:
            message = "interrupted"
        except Exit:
            raise
        except Exception as e:
            if os.environ.get("SGPFAB_DEBUG"):
                raise
            message = f"internal error: {type(e).__name__}: {e} (SGPFAB_DEBUG=1 shows where)"
        if as_json:
            emit_json("error", error=message)
            raise Exit(code=1)
        raise Exit(f"error: {message}", code=1)

    return wrapper


def _finish(result: Rollout, title: str, as_json: bool = False, timings: bool = False) -> None:
    """Summary (table or JSON), failures in full, and an exit code scripts can act on."""
    print_rollout(result, title, as_json=as_json, timings=timings)
    if result.exit_code:
        raise Exit(code=result.exit_code)


def _version_from(version: str | None, source: Path) -> Version:
    if version:
        return Version.parse(version)
    vf = source / "VERSION"
    if vf.is_file():
        return Version.parse(vf.read_text().strip())
    raise InputError("no version: pass --version X.Y.Z (or put a VERSION file in the app)")


def _bundle_for(
    fleet_app: App, version: str | None, source: str | None, bundle: str | None, say_fn: Callable[[object], None]
) -> Bundle:
    """The verified bundle to deploy: given (a directory, or a version in dist/), or built from source."""
    if bundle:
        if source:
            raise InputError("give either --bundle or --source, not both")
        p = Path(bundle)
        if not p.exists() and os.sep not in bundle:
            p = bundle_dir(_dist(), fleet_app.name, Version.parse(bundle))
        if not p.exists():
            raise InputError(f"no bundle at {p}")
        b = Bundle.load(p)
        if b.app != fleet_app.name:
            raise InputError(f"the bundle at {p} is of app {b.app}, not {fleet_app.name}")
        if version and Version.parse(version) != b.version:
            raise InputError(f"--version {version} does not match the bundle's version {b.version}")
        return b
    src = Path(source).resolve() if source else fleet_app.source
    return build(fleet_app, _version_from(version, src), _dist(), say_fn, src=src)


def _settings(fleet: Fleet) -> dict[str, Settings]:
    """Every host's settings, resolved on the controller before anything connects."""
    store = SecretStore(fleet.inventory.secrets_file)
    return {h.name: resolve(fleet.inventory.instance(fleet.app.name, h.name), store) for h in fleet.hosts}


def _unlock(sessions: list[HostSession]) -> None:
    for s in sessions:
        s.force_unlock()
        s.note("deploy lock removed")


def _whole(value: object, flag: str, least: int) -> int:
    """A whole-number flag (invoke hands text over; a bad value is a one-line error)."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise InputError(f"{flag} must be a whole number, not {value!r}") from None
    if n < least:
        raise InputError(f"{flag} must be at least {least}")
    return n


def _policy(
    n: int,
    waves: str | None,
    parallel: int | float | str,
    max_fail: str | int | None,
    soak: float | str,
    undo: bool,
) -> Policy:
    return make_policy(n, waves=waves, parallel=parallel, max_fail=max_fail, soak=soak, undo=undo)


@task(
    help={
        "version": "semantic version to build, e.g. 1.0.5 (default: the app's VERSION file)",
        "source": "app folder (default: the inventory's apps.NAME.source)",
        "app": ROLLOUT_HELP["app"],
    }
)
@guard
def bundle(c: Context, version: str | None = None, source: str | None = None, app: str | None = None) -> None:
    """Build a verified release bundle in dist/APP/releases/vX.Y.Z/ (or $SGPFAB_DIST/...).

    It holds the app's files as a tar.gz, its wheels for every target, the requirements per
    target, a SHA-256 manifest, CHANGELOG.md, schema.sql and metadata. Rebuilding a version with
    different content is refused.
    """
    inv = _inventory()
    a = inv.app(app)
    b = _bundle_for(a, version, source, None, say)
    say(f"bundle {b.app} {b.version}: {b.path} (content digest {b.digest})")


@task(
    help={
        "version": "semantic version to deploy, e.g. 1.0.5 (default: the app's VERSION file)",
        "source": "app folder to build the release from (default: the inventory's apps.NAME.source)",
        "bundle": "deploy a prebuilt bundle instead: its directory, or a version found in dist/",
        "dry_run": "only show what each host would do (same as the plan task)",
        **ROLLOUT_HELP,
    }
)
@guard
def deploy(
    c: Context,
    version: str | None = None,
    source: str | None = None,
    bundle: str | None = None,
    app: str | None = None,
    parallel: str = "1",
    waves: str | None = None,
    max_fail: str | None = None,
    soak: str = "0",
    undo: bool = True,
    dry_run: bool = False,
    force_unlock: bool = False,
    json: bool = False,
    timings: bool = False,
) -> None:
    """Deploy a release to the -H hosts: upload, verify, build the venv, write settings, back up
    the database, run the release commands, start it beside the old one, health-check, switch.

    Without --bundle the release is first built as a bundle (or an identical one is reused). A
    host whose new release does not become healthy goes back to its previous release, and the
    release is marked bad. Hosts go in waves, --parallel at a time; past --max-fail failures the
    rollout stops and (unless --no-undo) hosts already changed go back to their previous release.
    """
    fleet = _fleet(c, app)
    if bundle is None and version is not None:
        Version.parse(version)
    policy = _policy(len(fleet.hosts), waves, parallel, max_fail, soak, undo)
    settings = _settings(fleet)
    b = _bundle_for(fleet.app, version, source, bundle, say_err if json else say)
    _deploy(fleet, b, settings, policy, dry_run, force_unlock, f"deploy {b.app} {b.version}", json, timings)


def _deploy(
    fleet: Fleet,
    b: Bundle,
    settings: dict[str, Settings],
    policy: Policy,
    dry_run: bool,
    force_unlock: bool,
    title: str,
    as_json: bool,
    timings: bool = False,
) -> None:
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(to_stderr=as_json)) if not dry_run else (say_err if as_json else say)
        sessions = open_sessions(stack, fleet, progress)
        plan = Plan(b, lambda host_os: hosttools.uv_binary(host_os, say_err), settings)
        if dry_run:
            fleetops.preflight(sessions, plan)
            rows = fleetops.plan_rows(sessions, plan)
            if as_json:
                emit_json(
                    "plan",
                    title=title,
                    app=b.app,
                    version=str(b.version),
                    digest=b.digest,
                    excluded=list(b.metadata.build.excluded),
                    rows=rows,
                )
                return
            console.print(plan_table(rows, f"plan: {title} (nothing changed)"))
            say(
                "transfer: an upper bound (app files and the wheels a host lacks); files unchanged since"
                " the active release are hard-linked on the host, not sent"
            )
            if b.spec.release:
                say("release commands: " + "; ".join(b.spec.release))
            if b.metadata.build.excluded:
                say(
                    f"left out of the bundle ({len(b.metadata.build.excluded)}): "
                    + ", ".join(b.metadata.build.excluded[:20])
                    + (" ..." if len(b.metadata.build.excluded) > 20 else "")
                )
            for r in rows:
                say(f"{r.host} settings: " + ", ".join(f"{k}={v}" for k, v in r.settings.items()))
            return
        if force_unlock:
            _unlock(sessions)
        result = fleetops.deploy_fleet(sessions, plan, policy, progress)
    _finish(result, title, as_json, timings)


@task(
    help={
        "version": "semantic version to deploy, e.g. 1.0.5 (default: the app's VERSION file)",
        "source": "app folder to build the release from (default: the inventory's apps.NAME.source)",
        "bundle": "a prebuilt bundle: its directory, or a version found in dist/",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    }
)
@guard
def plan(
    c: Context,
    version: str | None = None,
    source: str | None = None,
    bundle: str | None = None,
    app: str | None = None,
    json: bool = False,
) -> None:
    """Show what deploying a release would do on each -H host (versions, transfer, migrations,
    settings with secrets masked, files left out); changes nothing."""
    fleet = _fleet(c, app)
    settings = _settings(fleet)
    b = _bundle_for(fleet.app, version, source, bundle, say_err if json else say)
    _deploy(
        fleet,
        b,
        settings,
        _policy(len(fleet.hosts), None, "1", None, "0", True),
        True,
        False,
        f"deploy {b.app} {b.version}",
        json,
    )


@task(
    name="promote",
    help={
        "from_": "hosts or groups that run the release now (e.g. staging)",
        "to": "hosts or groups to deploy it to (e.g. prod)",
        "version": "the version to promote",
        "dry_run": "only show what each target host would do",
        **ROLLOUT_HELP,
    },
)
@guard
def promote(
    c: Context,
    from_: str | None = None,
    to: str | None = None,
    version: str | None = None,
    app: str | None = None,
    parallel: str = "1",
    waves: str | None = None,
    max_fail: str | None = None,
    soak: str = "0",
    undo: bool = True,
    dry_run: bool = False,
    force_unlock: bool = False,
    json: bool = False,
    timings: bool = False,
) -> None:
    """Deploy to --to exactly the bundle (same digest) that runs healthy on every --from host.

    Refused when a --from host runs another version, another build of it, is unhealthy, or when
    the local bundle in dist/ is not that exact build.
    """
    if not (from_ and to and version):
        raise InputError("promote needs --from, --to and --version")
    v = Version.parse(version)
    inv = _inventory()
    source, target = Fleet.select(inv, app, from_), Fleet.select(inv, app, to)
    policy = _policy(len(target.hosts), waves, parallel, max_fail, soak, undo)
    settings = _settings(target)
    with ExitStack() as stack:
        b = fleetops.promotion_bundle(
            open_sessions(stack, source, say_err if json else say), v, _dist(), source.app.name
        )
    (say_err if json else say)(f"promoting {b.app} {v} ({b.digest[:12]}) from {from_} to {to}")
    _deploy(target, b, settings, policy, dry_run, force_unlock, f"promote {b.app} {v} to {to}", json, timings)


@task(
    help={
        "version": "release to return to (default: the newest good release before the active one)",
        "db": "when the rollback crosses a schema change: 'keep' the current database, or 'restore' the "
        "backup taken before the active release was deployed",
        **ROLLOUT_HELP,
    }
)
@guard
def rollback(
    c: Context,
    version: str | None = None,
    db: str | None = None,
    app: str | None = None,
    parallel: str = "1",
    waves: str | None = None,
    max_fail: str | None = None,
    soak: str = "0",
    undo: bool = True,
    force_unlock: bool = False,
    json: bool = False,
    timings: bool = False,
) -> None:
    """Switch the -H hosts back to an earlier release, restart and health-check it, in waves like deploy.

    Every host is checked first: if the target release is missing anywhere, nothing changes.
    """
    v = Version.parse(version) if version else None
    fleet = _fleet(c, app)
    policy = _policy(len(fleet.hosts), waves, parallel, max_fail, soak, undo)
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(to_stderr=json))
        sessions = open_sessions(stack, fleet, progress)
        if force_unlock:
            _unlock(sessions)
        result = fleetops.rollback_fleet(sessions, v, db, policy, progress)
    _finish(result, f"rollback {fleet.app.name}", json, timings)


@task(help={"app": ROLLOUT_HELP["app"]})
@guard
def unlock(c: Context, app: str | None = None) -> None:
    """Remove the deploy lock on the -H hosts (only when the run that held it is gone)."""
    with ExitStack() as stack:
        _unlock(open_sessions(stack, _fleet(c, app), say))


def _each(
    fleet: Fleet,
    action: str,
    fn: Callable[[HostSession], Outcome],
    title: str,
    stop_on_failure: bool = True,
    as_json: bool = False,
) -> None:
    """Host by host; by default stop at the first failure."""
    n = len(fleet.hosts)
    out = say_err if as_json else say
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, out)
        policy = Policy(waves=[n], parallel=1, max_fail=0 if stop_on_failure else n, soak=0, undo=False)
        result = run(sessions, action, fn, policy, say=out)
    _finish(result, title, as_json)


@task(
    help={
        "label": "a word to add to the backup's name (default: manual)",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    }
)
@guard
def backup(c: Context, label: str = "manual", app: str | None = None, json: bool = False) -> None:
    """Back up each -H host's database now (SQLite online backup or pg_dump) into backups/."""
    _each(_fleet(c, app), "backup", lambda s: backup_host(s, label), "backup", stop_on_failure=False, as_json=json)


@task(name="list-backups", help={"app": ROLLOUT_HELP["app"], "json": ROLLOUT_HELP["json"]})
@guard
def list_backups(c: Context, app: str | None = None, json: bool = False) -> None:
    """List the database backups on the -H hosts, oldest first."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c, app), say_err if json else say)
        rows = [(s.name, s.backups() if s.state_at_connect and s.state_at_connect.current else []) for s in sessions]
    if json:
        emit_json("backups", hosts=[{"host": h, "backups": b} for h, b in rows])
    else:
        console.print(backups_table(rows))


@task(
    help={
        "backup": "backup file name, as shown by list-backups",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    }
)
@guard
def restore(c: Context, backup: str | None = None, app: str | None = None, json: bool = False) -> None:
    """Restore a database backup on the -H hosts: stop the app, save its current database as a
    backup, restore, start, health-check."""
    if not backup:
        raise InputError("give --backup NAME (see: fab -H HOST list-backups)")
    fleet = _fleet(c, app)
    with ExitStack() as stack:
        for s in open_sessions(stack, fleet, say_err if json else say):
            try:
                check_backup(s, backup)
            except InputError as e:
                raise InputError(f"{s.name}: {e} (nothing was changed)") from None
    _each(fleet, "restore", lambda s: restore_host(s, backup), "restore", as_json=json)


@task(help={"last": "how many records per host", "app": ROLLOUT_HELP["app"], "json": ROLLOUT_HELP["json"]})
@guard
def history(c: Context, last: str = "20", app: str | None = None, json: bool = False) -> None:
    """Show the audit log of the -H hosts: who deployed or rolled back what, when, with what result."""
    n = _whole(last, "--last", 1)
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c, app), say_err if json else say)
        rows = [(s.name, s.hostctl_unprepared("history", "--last", str(n))["records"]) for s in sessions]
    if json:
        emit_json("history", hosts=[{"host": h, "records": r} for h, r in rows])
    else:
        console.print(history_table(rows))


@task(name="list", help={"app": ROLLOUT_HELP["app"], "json": ROLLOUT_HELP["json"]})
@guard
def list_(c: Context, app: str | None = None, json: bool = False) -> None:
    """List the releases on the -H hosts (* marks the active one)."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c, app), say_err if json else say)
        rows = [(s.name, s.state_at_connect or s.state()) for s in sessions]
    if json:
        emit_json("releases", hosts=[releases_dict(h, st) for h, st in rows])
    else:
        console.print(releases_table(rows))


@task(help={"app": ROLLOUT_HELP["app"], "json": ROLLOUT_HELP["json"]})
@guard
def status(c: Context, app: str | None = None, json: bool = False) -> None:
    """One table for the -H hosts: group, OS, active version and digest, each process's state,
    health, settings drift, last deploy. Exits 2 when a host is unhealthy or versions drift apart.
    """
    with ExitStack() as stack:
        rows = fleetops.status_rows(open_sessions(stack, _fleet(c, app), say_err if json else say))
    drift = fleetops.drift(rows)
    bad = drift or any(r["health"] != "healthy" for r in rows)
    if json:
        emit_json("status", hosts=rows, drift=drift or None, exit_code=2 if bad else 0)
    else:
        console.print(status_table(rows))
        if drift:
            console.print(drift, style="yellow", markup=False)
    if bad:
        raise Exit(code=2)


@task(
    help={
        "keep": "how many of the newest good releases to keep (the active one and its rollback target are always kept)",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    }
)
@guard
def cleanup(c: Context, keep: str | int = "5", app: str | None = None, json: bool = False) -> None:
    """Delete old releases, bad releases and leftover partial builds and uploads on the -H hosts."""
    keep = _whole(keep, "--keep", 1)
    _each(_fleet(c, app), "cleanup", lambda s: cleanup_host(s, keep), f"cleanup (keep {keep})", as_json=json)


@task(help={"app": ROLLOUT_HELP["app"], "json": ROLLOUT_HELP["json"]})
@guard
def settings(c: Context, app: str | None = None, json: bool = False) -> None:
    """Show the app's settings on the -H hosts (secrets masked; host overrides marked)."""
    with ExitStack() as stack:
        sessions = open_sessions(stack, _fleet(c, app), say_err if json else say)
        rows = [(s.name, s.show_settings()) for s in sessions]
    if json:
        emit_json(
            "settings",
            hosts=[{"host": h, **{k: v for k, v in d.items() if k not in ("fingerprint", "_cmd")}} for h, d in rows],
        )
    else:
        console.print(settings_table(rows))


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise InputError(f"{flag} takes NAME=VALUE, got {item!r}")
        from .validate import ENV_KEY, check, one_line

        try:
            check(ENV_KEY, key, "setting name")
            one_line(value, f"value of {key}", 4096, allow_empty=True)
        except ValueError as e:
            raise InputError(str(e)) from None
        out[key] = value
    return out


def _restart(s: HostSession, what: str) -> Outcome:
    """Restart the active release's processes (settings are read at start) and gate them."""
    from .activate import activate, recover
    from .outcome import Outcome, Status

    with s.lock(what) as st:
        if recover(s, st):
            st = s.state()
        if not st.current:
            raise InputError(f"{s.name}: nothing is deployed here")
        fingerprint = s.show_settings().get("fingerprint") or ""  # what it runs with from now on
        activate(s, st.current, st.current, "restart", settings_fingerprint=fingerprint, st=st)
        s.audit(action="restart", version=st.active.meta.version if st.active else None, result="ok")
    cur = s.current_version
    return Outcome(s.name, "restart", Status.OK, cur, cur, "restarted, healthy")


@task(
    name="settings-set",
    iterable=["env", "secret"],
    help={
        "env": "NAME=VALUE to set on the hosts (repeatable); kept over later deploys until settings-unset",
        "secret": "NAME=SECRET: set NAME to the secret SECRET from the controller's secrets (repeatable)",
        "restart": "restart the app afterwards (with the health gate), so the processes read it",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    },
)
@guard
def settings_set(
    c: Context,
    env: list[str] | None = None,
    secret: list[str] | None = None,
    restart: bool = False,
    app: str | None = None,
    json: bool = False,
) -> None:
    """Set host-local settings on the -H hosts without a deploy (they win over deployed ones)."""
    values = _pairs(env, "--env")
    fleet = _fleet(c, app)
    store = SecretStore(fleet.inventory.secrets_file)
    secret_keys = _pairs(secret, "--secret")
    for key, name in secret_keys.items():
        value = store.get(name)
        if value is None:
            raise InputError(
                f"secret {name!r} is not set: export {SecretStore.env_name(name)} or add it to the secrets file"
            )
        values[key] = value
    if not values:
        raise InputError("give at least one --env NAME=VALUE or --secret NAME=SECRET")

    def one(s: HostSession) -> Outcome:
        from .outcome import Outcome, Status

        s.override_settings(set_env=values, secret=secret_keys)
        if restart:
            return _restart(s, "settings-set")
        cur = s.current_version
        return Outcome(s.name, "settings", Status.OK, cur, cur, f"set {', '.join(sorted(values))} (restart to apply)")

    _each(fleet, "settings", one, "settings-set", as_json=json)


@task(
    name="settings-unset",
    iterable=["name"],
    help={
        "name": "NAME of a setting made with settings-set, to remove again (repeatable)",
        "restart": "restart the app afterwards (with the health gate)",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    },
)
@guard
def settings_unset(
    c: Context, name: list[str] | None = None, restart: bool = False, app: str | None = None, json: bool = False
) -> None:
    """Remove host-local settings from the -H hosts (deployed settings apply again)."""
    names = list(name or [])
    if not names:
        raise InputError("give at least one --name NAME")
    from .validate import ENV_KEY

    bad = [n for n in names if not ENV_KEY.fullmatch(n)]
    if bad:
        raise InputError(f"invalid setting name {bad[0]!r}")

    def one(s: HostSession) -> Outcome:
        from .outcome import Outcome, Status

        s.override_settings(unset=names)
        if restart:
            return _restart(s, "settings-unset")
        cur = s.current_version
        return Outcome(s.name, "settings", Status.OK, cur, cur, f"unset {', '.join(names)} (restart to apply)")

    _each(_fleet(c, app), "settings", one, "settings-unset", as_json=json)


@task(help={"app": ROLLOUT_HELP["app"], "json": ROLLOUT_HELP["json"], "parallel": ROLLOUT_HELP["parallel"]})
@guard
def restart(c: Context, app: str | None = None, parallel: str = "1", json: bool = False) -> None:
    """Restart the app's processes on the -H hosts (the active release), health-checked."""
    fleet = _fleet(c, app)
    policy = _policy(len(fleet.hosts), None, parallel, None, 0, False)
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(to_stderr=json))
        sessions = open_sessions(stack, fleet, progress)
        result = run(sessions, "restart", lambda s: _restart(s, "restart"), policy, say=progress)
    _finish(result, f"restart {fleet.app.name}", json)


@task(
    name="exec",
    help={
        "command": "the command to run (a shell command line), e.g. 'python manage.py createsuperuser'",
        "parallel": "how many hosts at once (default 1: one after another)",
        "tty": "run interactively on a terminal (one host only), e.g. a shell or a management command that asks",
        "app": ROLLOUT_HELP["app"],
        "json": ROLLOUT_HELP["json"],
    },
)
@guard
def exec_(
    c: Context,
    command: str | None = None,
    parallel: str = "1",
    tty: bool = False,
    app: str | None = None,
    json: bool = False,
) -> None:
    """Run a one-off command in the active release's environment on the -H hosts (as the service user)."""
    from .outcome import Outcome, Status
    from .validate import one_line

    if not command:
        raise InputError("give --command '...'")
    try:
        one_line(command, "--command")
    except ValueError as e:
        raise InputError(str(e)) from None
    fleet = _fleet(c, app)
    if tty and len(fleet.hosts) != 1:
        raise InputError("--tty runs on one host: give -H with a single host")
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say_err if json else say)
        for s in sessions:
            if not (s.state_at_connect and s.state_at_connect.current):
                raise InputError(f"{s.name}: nothing is deployed here (nothing was run anywhere)")
        if tty:
            st = sessions[0].state_at_connect
            assert st is not None and st.current is not None  # checked just above
            code = sessions[0].exec(st.current, command, tty=True)
            raise Exit(code=code)

        def one(s: HostSession) -> Outcome:
            found = cast("HostState", s.state_at_connect)  # checked above: every host has a current release
            r = s.exec(cast(str, found.current), command)
            out = (r.stdout + r.stderr).rstrip()
            status = Status.OK if r.ok else Status.FAILED
            return Outcome(
                s.name,
                "exec",
                status,
                s.current_version,
                s.current_version,
                f"exit {r.exited}" + (f": {out}" if out else ""),
            )

        result = run(
            sessions,
            "exec",
            one,
            _policy(len(sessions), None, parallel, len(sessions), 0, False),
            say=say_err if json else say,
        )
    if not json:
        for o in result.outcomes:
            say(f"==> {o.host}: {o.message.splitlines()[0] if o.message else ''}")
            for line in o.message.splitlines()[1:]:
                say(f"{o.host}| {line}")
    _finish(result, f"exec on {fleet.app.name}", json)


@task(
    iterable=["process"],
    help={
        "process": "only the process NAME, e.g. worker (repeatable; default: all of the app's processes)",
        "lines": "how many lines per host (default 50)",
        "since": "only lines since this time, e.g. '10 min ago', '2026-11-23 10:00'",
        "follow": "keep printing new lines until Ctrl-C",
        "app": ROLLOUT_HELP["app"],
    },
)
@guard
def logs(
    c: Context,
    process: list[str] | None = None,
    lines: str | int = "50",
    since: str | None = None,
    follow: bool = False,
    app: str | None = None,
) -> None:
    """Show the app's log lines from every -H host, each prefixed with its host and process."""
    import threading

    from .validate import PROCESS, check, one_line

    try:
        procs = [check(PROCESS, p, "process name") for p in (process or [])]
        if since:
            one_line(since, "--since", 100)
    except ValueError as e:
        raise InputError(str(e)) from None
    lines = _whole(lines, "--lines", 1)
    fleet = _fleet(c, app)
    out_lock = threading.Lock()
    with ExitStack() as stack:
        sessions = open_sessions(stack, fleet, say_err)
        names = procs or ["*"]

        def show(s: HostSession) -> None:
            def on_line(line: str) -> None:
                with out_lock:
                    print(format_log_line(s.name, s.inst.service, line), flush=True)

            s.logs(names, lines, since, follow, on_line)

        if not follow:
            for s in sessions:
                show(s)
            return
        threads = [threading.Thread(target=show, args=(s,), daemon=True) for s in sessions]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
        except KeyboardInterrupt:
            pass


def format_log_line(host: str, service: str, line: str) -> str:
    """'2026-11-23T21:20:34+0000 staging1 shop-worker[1358]: text' -> 'staging1 worker | 2026-... text'."""
    import re

    m = re.match(r"(\S+) \S+ ([^\[:]+)(?:\[\d+\])?: ?(.*)$", line)
    if not m:
        return f"{host} | {line}"
    ts, ident, text = m.groups()
    if ident == "systemd":  # systemd's own lines about a process: started, stopped, crashed
        unit = re.search(re.escape(service) + r"-([a-z][a-z0-9_]*)@", text)
        process = f"{unit.group(1)} [systemd]" if unit else "systemd"
    else:
        process = ident[len(service) + 1 :] if ident.startswith(service + "-") else ident
    return f"{host} {process} | {ts} {text}"


def _sandbox(c: Context, name: str, hosts: int | str, subnet: int | str) -> None:
    from .sandbox import fleet

    try:
        f = fleet.up(name, int(hosts), int(subnet))
    except (ValueError, PermissionError, RuntimeError) as e:
        raise Exit(f"error: {str(e).splitlines()[0]}", code=1) from None
    print(f"export SGPFAB_INVENTORY={f.inventory}")


@task(
    help={
        "name": "fleet name (letters/digits)",
        "hosts": "number of hosts: staging1, prod1, prod2, ...",
        "subnet": "third octet of the fleet's 169.254.X.0/24 network",
    }
)
def sandbox_up(c: Context, name: str = "demo", hosts: int = 3, subnet: int = 250) -> None:
    """Boot a local sandbox fleet (real Debian hosts with systemd and sshd in nspawn; needs root)."""
    _sandbox(c, name, hosts, subnet)


@task(help={"name": "fleet name"})
def sandbox_down(c: Context, name: str = "demo") -> None:
    """Stop a sandbox fleet and remove everything it made."""
    from .sandbox import fleet

    fleet.down(name)


sandbox = Collection("sandbox")
sandbox.add_task(sandbox_up, "up")
sandbox.add_task(sandbox_down, "down")
ns = Collection(
    bundle,
    deploy,
    plan,
    promote,
    rollback,
    list_,
    status,
    cleanup,
    backup,
    list_backups,
    restore,
    history,
    unlock,
    settings,
    settings_set,
    settings_unset,
    restart,
    exec_,
    logs,
    sandbox,
)
