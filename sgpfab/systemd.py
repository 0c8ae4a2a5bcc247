"""systemd units for one app instance (pure: text in, text out).

Every process P of the app is a template unit `SERVICE-P@.service`; an instance runs one release
(`SERVICE-P@v1.0.5.service`, the instance name being the systemd-escaped release directory, read
back with `%I`). Two releases' web processes can therefore run side by side on the one listening
socket `SERVICE.socket` while a deploy hands over; `SERVICE.target` wants the active release's
instances (boot and `systemctl start SERVICE.target`), and the socket activates the active
release's web process when nothing else serves it.

Only validated names and paths reach these files; `line` refuses anything multi-line or with
control characters as a second line of defence, and no free-form command is ever written into
a unit (processes start through generated scripts, see runfiles.py).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .appspec import AppSpec
from .layout import Layout, Units

if TYPE_CHECKING:
    from .inventory import Instance

UNIT_DIR = "/etc/systemd/system"
HEADER = "# Managed by sgpfab: changes here are overwritten on the next deploy."
_BAD = re.compile(r"[\x00-\x1f\x7f]")


def line(key: str, value: str | int) -> str:
    """One `Key=value` line; refuses values that could add lines or hide characters."""
    text = str(value)
    if _BAD.search(text) or _BAD.search(key):
        raise ValueError(f"refusing to write {key}= with a control character or line break: {text[:60]!r}")
    return f"{key}={text}"


def unit_path(name: str) -> str:
    return f"{UNIT_DIR}/{name}"


def listen_address(inst: Instance) -> str:
    return f"[{inst.bind}]:{inst.port}" if ":" in inst.bind else f"{inst.bind}:{inst.port}"


def process_unit(
    inst: Instance, process: str, service_user: str, *, web: bool, socket: bool, notify: bool = False
) -> str:
    """The template unit of one process; `%I` is the release directory's name. With `notify`
    (sgpfab's launchers), starting it returns only once the app is loaded and accepting."""
    lay, units = Layout.for_instance(inst), Units(inst.service)
    rel = f"{lay.releases}/%I"
    after = ["network.target"] + ([units.socket] if socket else [])
    body = [
        HEADER,
        "[Unit]",
        line("Description", f"{inst.app} {process} process (release %I), managed by sgpfab"),
        line("After", " ".join(after)),
        "",
        "[Service]",
        *(
            ["Type=notify", "NotifyAccess=all", line("TimeoutStartSec", max(int(inst.health.timeout), 10))]
            if notify
            else ["Type=simple"]
        ),
        line("User", service_user),
        line("Group", service_user),
        line("WorkingDirectory", rel),
        line("Environment", "SGPFAB_RELEASE=%I"),
        line("Environment", f"PATH={rel}/.venv/bin:/usr/local/bin:/usr/bin:/bin"),
        line("Environment", f"VIRTUAL_ENV={rel}/.venv"),
        line("Environment", f"PYTHONPATH={rel}"),
        "Environment=PYTHONUNBUFFERED=1",
        *([line("EnvironmentFile", f"-{lay.launch_env}")] if web else []),
        line("EnvironmentFile", f"-{lay.env_file}"),
        line("EnvironmentFile", f"-{lay.overrides_file}"),
        line("ExecStart", f"{rel}/.sgpfab/run/{process}"),
        *([line("Sockets", units.socket)] if socket else []),
        # Every start of a unit on the shared socket sets the socket's O_NONBLOCK flag to this
        # value, for all processes sharing it: "no" (the default) would put the running
        # release's accept() into blocking mode and freeze an asyncio server.
        *(["NonBlocking=yes"] if socket else []),
        # The web server's master stops its own workers gracefully; other processes (often a
        # shell running the app) get SIGTERM in every process.
        f"KillMode={'mixed' if web else 'control-group'}",
        "Restart=always",
        "RestartSec=1",
        "TimeoutStopSec=30",
        # journald keeps the output (rotated by its own size limits); `fab logs` reads it.
        "StandardOutput=journal",
        "StandardError=journal",
        line("SyslogIdentifier", f"{inst.service}-{process}"),
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "",
    ]
    return "\n".join(body)


def socket_unit(inst: Instance, release: str) -> str:
    """The listening socket; it activates `release`'s web process when none is running."""
    units = Units(inst.service)
    return "\n".join(
        [
            HEADER,
            "[Unit]",
            line("Description", f"Listening socket of {inst.app} (kept open across releases and restarts)"),
            "",
            "[Socket]",
            line("ListenStream", listen_address(inst)),
            line("Service", units.instance("web", release)),
            "Backlog=4096",
            "",
            "[Install]",
            "WantedBy=sockets.target",
            "",
        ]
    )


def target_unit(inst: Instance, release: str, processes: list[str], socket: bool) -> str:
    units = Units(inst.service)
    wants = [units.instance(p, release) for p in processes] + ([units.socket] if socket else [])
    return "\n".join(
        [
            HEADER,
            "[Unit]",
            line("Description", f"{inst.app}: every process of release {release}, managed by sgpfab"),
            line("Wants", " ".join(wants)),
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def units_for(inst: Instance, spec: AppSpec, release: str, service_user: str) -> dict[str, str]:
    """Path -> text of every unit file `release` needs (templates, socket, target)."""
    units = Units(inst.service)
    web = spec.web
    socket = bool(web and web.socket_activated)
    out = {}
    for name in spec.processes:
        is_web = name == "web"
        out[unit_path(units.template(name))] = process_unit(
            inst, name, service_user, web=is_web, socket=is_web and socket, notify=is_web and bool(web and web.overlaps)
        )
    if socket:
        out[unit_path(units.socket)] = socket_unit(inst, release)
    out[unit_path(units.target)] = target_unit(inst, release, list(spec.processes), socket)
    return out
