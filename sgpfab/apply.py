"""`sgpfab apply BUNDLE_DIR`: deploy a bundle that is already on this host, without a controller.

For a bundle copied to a server (scp, rsync, a USB stick on an air-gapped machine). It runs the
steps of `fab deploy` on this one host, through the local transport: verify the bundle, build the
release offline, back up the database, run the release commands, start the new release beside the
old one, health-check, switch, and go back on its own when the new release does not become
healthy. The audit log is the host's, the one `fab history` reads. See docs/apply.md.
"""

from __future__ import annotations

import argparse
import getpass
from contextlib import ExitStack
from pathlib import Path

from . import fleetops
from .bundle import Bundle
from .deploy import Plan
from .errors import InputError
from .hostconfig import HostConfig, load_config, resolve
from .rollout import make_policy
from .session import HostSession
from .settings import SecretStore
from .settings import resolve as resolve_settings
from .transport.local import LocalTransport


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "apply",
        help="deploy a bundle that is on this host (no SSH); see docs/apply.md",
        description="Deploy the release bundle in BUNDLE_DIR to this host, as `fab deploy` would.",
    )
    p.add_argument("bundle", metavar="BUNDLE_DIR", help="a bundle directory built by `fab bundle`")
    p.add_argument("--app", help="the app (default: the bundle's)")
    p.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="the app's settings on this host, for a host no controller deployed to (YAML)",
    )
    p.add_argument("--json", action="store_true", help="print the result as a JSON document")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .report import Progress, print_rollout

    path = Path(args.bundle)
    if not path.is_dir():
        raise InputError(f"no bundle directory at {path}")
    bundle = Bundle.load(path.resolve())
    config = load_config(args.config) if args.config else None
    hc = resolve(bundle.app, args.app, config, args.config)
    _check_user(hc)
    settings = None
    if hc.write_settings:
        settings = {hc.inst.host.name: resolve_settings(hc.inst, SecretStore(use_keyring=False))}
    plan = Plan(bundle, _uv, settings, action="apply")
    title = f"apply {bundle.app} {bundle.version}"
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(to_stderr=args.json))
        t = LocalTransport(hc.inst.host)
        s = HostSession(t, hc.inst, progress)
        s.preflight()
        result = fleetops.deploy_fleet([s], plan, make_policy(1, undo=False), progress)
    # One host: no "rollout stopped" line (the progress lines already say what happened).
    print_rollout(result, title, as_json=args.json, stopped_line=False)
    return result.exit_code


def _check_user(hc: HostConfig) -> None:
    """Apply runs as the user deploys log in as: API_ROOT's files stay theirs."""
    me = getpass.getuser()
    if hc.login_user is not None and me != hc.login_user:
        raise InputError(
            f"run sgpfab apply as {hc.login_user}, the user deploys to {hc.inst.api_root} log in as"
            f" (you are {me}): sudo -u {hc.login_user} sgpfab apply ..."
        )


def _uv(host_os: str) -> Path:
    """A uv for the release venv when the host has none: the one installed with sgpfab."""
    from .bundle.deps import uv_bin

    try:
        return Path(uv_bin())
    except (ImportError, FileNotFoundError):
        raise InputError("no uv on this host: install sgpfab with its dependencies (docs/apply.md)") from None
