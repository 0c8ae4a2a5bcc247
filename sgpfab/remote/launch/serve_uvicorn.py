"""How sgpfab runs an ASGI app with uvicorn on Linux hosts.

uvicorn with two additions: the app is wrapped so that health probes can tell which release
answered, and shutdown first stops accepting, then gives connections that were already accepted
a moment to deliver their request before uvicorn closes idle ones. With socket activation, new
connections meanwhile wait in the socket's queue (or go to the new release's process, which
shares the socket), so a restart neither refuses nor resets a connection.

    python serve_uvicorn.py pkg.main:app [--factory] [--workers N]   (socket from systemd, fd 3)
    python serve_uvicorn.py pkg.main:app --host 0.0.0.0 --port 8000   (binds itself: Windows)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

import uvicorn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sgpfab_probe

if TYPE_CHECKING:
    import socket

    from sgpfab.remote.launch.sgpfab_probe import ASGIApp

LISTEN_FD = 3


class DrainingServer(uvicorn.Server):  # type: ignore[misc, unused-ignore]  # uvicorn is not in the dev venv: Server is Any
    drain_seconds = 0.5

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # the app is loaded, its lifespan started, the socket accepted on
            sgpfab_probe.notify_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting; the listening socket itself stays open in systemd
        await asyncio.sleep(self.drain_seconds)  # accepted connections deliver their request
        await super().shutdown(sockets)


def load(spec: str, factory: bool) -> ASGIApp:
    """The wrapped ASGI app of 'module:attr' (called first when it is a factory)."""
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    wrapped: ASGIApp = sgpfab_probe.wrap_asgi(obj() if factory else obj)
    return wrapped


def app() -> ASGIApp:
    """Import target for uvicorn's worker processes (--workers > 1)."""
    return load(os.environ["SGPFAB_ASGI_APP"], os.environ.get("SGPFAB_ASGI_FACTORY") == "1")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="serve_uvicorn")
    p.add_argument("app", help="module:attribute of the ASGI app")
    p.add_argument("--factory", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--host", help="bind this address instead of taking systemd's socket (Windows)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--drain", type=float, default=0.5)
    p.add_argument("--timeout-graceful-shutdown", type=int, default=15)
    a = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the release directory (systemd's WorkingDirectory)
    listen = dict(host=a.host, port=a.port) if a.host else dict(fd=LISTEN_FD)
    common = dict(**listen, access_log=False, timeout_graceful_shutdown=a.timeout_graceful_shutdown, proxy_headers=True)
    if a.workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ["SGPFAB_ASGI_APP"], os.environ["SGPFAB_ASGI_FACTORY"] = a.app, "1" if a.factory else "0"
        config = uvicorn.Config("serve_uvicorn:app", factory=True, workers=a.workers, **common)
        server = DrainingServer(config)
        server.drain_seconds = a.drain
        Multiprocess(config, target=server.run, sockets=[config.bind_socket()]).run()
        return
    config = uvicorn.Config(load(a.app, a.factory), **common)
    server = DrainingServer(config)
    server.drain_seconds = a.drain
    server.run()


if __name__ == "__main__":
    main()
