"""systemd: the unit file for the app and the systemctl commands around it (pure)."""

from __future__ import annotations

from .inventory import Host
from .layout import Layout


def unit_path(host: Host) -> str:
    return f"/etc/systemd/system/{host.service}.service"


def unit_text(host: Host, module: str = "main:app") -> str:
    """The service runs the active release through `current`, so a switch needs no unit change."""
    lay = Layout(host.api_root)
    user = host.service_user
    log = f"{lay.logs}/{host.service}.log"
    lines = [
        "# Managed by sgpfab: changes here are overwritten on the next deploy.",
        "[Unit]",
        f"Description=SGP API ({host.service}) managed by sgpfab",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        *( [f"User={user}", f"Group={user}"] if user else [] ),
        f"WorkingDirectory={lay.current}",
        f"Environment=API_ROOT={lay.root}",
        f"Environment=PORT={host.port}",
        f"EnvironmentFile=-{lay.current}/.env",
        f"ExecStart={lay.current}/.venv/bin/python -m uvicorn {module}"
        f" --host {host.bind} --port {host.port} --no-access-log",
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
