"""serve: how sgpfab starts the app on Linux hosts (uploaded next to hostctl; run by systemd
with the release's own venv python).

It is uvicorn with one change to shutdown: stop accepting first, then give connections that were
already accepted a moment to send their request before uvicorn closes the idle ones. With
socket activation, new connections meanwhile wait in the socket's queue for the next process,
so a restart neither refuses nor resets a connection.

    python serve.py main:app --fd 3            (socket activation)
    python serve.py main:app --host H --port P
"""

import argparse
import asyncio
import os
import sys

import uvicorn


class DrainingServer(uvicorn.Server):
    drain_seconds = 0.5

    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()  # stop accepting; the listening socket itself stays open in systemd
        await asyncio.sleep(self.drain_seconds)  # accepted connections deliver their request
        await super().shutdown(sockets)


def main(argv=None):
    p = argparse.ArgumentParser(prog="serve")
    p.add_argument("app", help="module:attribute of the ASGI app")
    p.add_argument("--fd", type=int, help="listen on this inherited socket (systemd socket activation)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--drain", type=float, default=0.5, help="seconds to let accepted connections send a request")
    p.add_argument("--timeout-graceful-shutdown", type=int, default=15)
    a = p.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the release directory (systemd's WorkingDirectory)
    kwargs = {"fd": a.fd} if a.fd is not None else {"host": a.host, "port": a.port}
    config = uvicorn.Config(a.app, access_log=False, timeout_graceful_shutdown=a.timeout_graceful_shutdown,
                            **kwargs)
    server = DrainingServer(config)
    server.drain_seconds = a.drain
    server.run()


if __name__ == "__main__":
    main()
