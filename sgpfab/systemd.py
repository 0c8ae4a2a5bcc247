"""systemd: the unit files for the app and the systemctl commands around them (pure).

With socket activation (the default) a `.socket` unit owns the listening port and hands it to
uvicorn as fd 3; a restart of the service then never refuses a connection: new connections
wait in the socket's backlog while the old process finishes its requests and the new one starts.
"""

from __future__ import annotations

from .inventory import Host
from .layout import Layout


def unit_path(host: Host) -> str:
    return f"/etc/systemd/system/{host.service}.service"


def socket_path(host: Host) -> str:
    return f"/etc/systemd/system/{host.service}.socket"


def units(host: Host, module: str = "main:app") -> dict[str, str]:
    """Path -> content of every unit file the host's service needs."""
    out = {unit_path(host): unit_text(host, module)}
    if host.socket_activation:
        out[socket_path(host)] = socket_text(host)
    return out


def socket_text(host: Host) -> str:
    addr = f"[{host.bind}]" if ":" in host.bind else host.bind
    return "\n".join([
        "# Managed by sgpfab: changes here are overwritten on the next deploy.",
        "[Unit]",
        f"Description=Listening socket of {host.service} (kept open across restarts)",
        "",
        "[Socket]",
        f"ListenStream={addr}:{host.port}",
        "Backlog=4096",
        "ReusePort=no",
        "",
        "[Install]",
        "WantedBy=sockets.target",
        "",
    ])


def unit_text(host: Host, module: str = "main:app") -> str:
    """The service runs the active release through `current`, so a switch needs no unit change."""
    lay = Layout(host.api_root)
    user = host.service_user
    log = f"{lay.logs}/{host.service}.log"
    if host.socket_activation:
        listen = "--fd 3"  # the socket unit's listening socket
        deps = [f"Requires={host.service}.socket", f"After={host.service}.socket network.target"]
    else:
        listen = f"--host {host.bind} --port {host.port}"
        deps = ["After=network.target"]
    lines = [
        "# Managed by sgpfab: changes here are overwritten on the next deploy.",
        "[Unit]",
        f"Description=SGP API ({host.service}) managed by sgpfab",
        *deps,
        "",
        "[Service]",
        "Type=simple",
        *([f"User={user}", f"Group={user}"] if user else []),
        f"WorkingDirectory={lay.current}",
        f"Environment=API_ROOT={lay.root}",
        f"Environment=PORT={host.port}",
        f"EnvironmentFile=-{lay.current}/.env",
        f"ExecStart={lay.current}/.venv/bin/python {lay.serve} {module} {listen} --timeout-graceful-shutdown 15",
        "Restart=always",
        "RestartSec=1",
        "TimeoutStopSec=20",
        f"StandardOutput=append:{log}",
        f"StandardError=append:{log}",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)
