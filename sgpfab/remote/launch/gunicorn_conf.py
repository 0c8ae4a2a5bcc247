"""gunicorn settings sgpfab adds to the app's own (`gunicorn -c` this file).

The listening socket comes from systemd (LISTEN_FDS; gunicorn reads it itself). Each worker's
app is wrapped so that health probes can tell which release answered. Workers load the app
before they accept, so the kernel hands connections only to ready workers, and the first of
them tells systemd the service is ready (Type=notify).
"""

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgpfab_probe

control_socket_disable = True  # gunicorn >= 27 would otherwise open a socket in $HOME
graceful_timeout = int(os.environ.get("SGPFAB_GRACEFUL_TIMEOUT", "20"))


def on_starting(server: Any) -> None:
    # gunicorn tells systemd "ready" as soon as its master is up; the first worker that has
    # loaded the app does instead (post_worker_init).
    addr = os.environ.pop("NOTIFY_SOCKET", None)
    if addr:
        os.environ["SGPFAB_NOTIFY_SOCKET"] = addr


def post_worker_init(worker: Any) -> None:
    asgi = "uvicorn" in type(worker).__module__ or "asgi" in type(worker).__name__.lower()
    app = getattr(worker, "wsgi", None)
    if app is not None:
        worker.wsgi = sgpfab_probe.wrap_asgi(app) if asgi else sgpfab_probe.wrap_wsgi(app)
    sgpfab_probe.notify_ready()
