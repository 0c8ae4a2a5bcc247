"""Marks the app's answers to sgpfab's health probes with the release that gave them.

A probe carries the host's secret token in `X-Sgpfab-Probe`; only then does the response get
`X-Sgpfab-Release: <release>`, so the health gate can tell the new release's processes from the
old ones while both serve on the same socket. Other requests pass through untouched.
(Uploaded to API_ROOT/.sgpfab/launch/ on every host; stdlib only.)
"""

from __future__ import annotations

import hmac
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, MutableMapping
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN = os.environ.get("SGPFAB_PROBE_TOKEN", "")
RELEASE = os.environ.get("SGPFAB_RELEASE", "")


def _is_probe(value: str | None) -> bool:
    return bool(TOKEN) and value is not None and hmac.compare_digest(value, TOKEN)


def wrap_wsgi(app: WSGIApplication) -> WSGIApplication:
    def wrapped(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not _is_probe(environ.get("HTTP_X_SGPFAB_PROBE")):
            return app(environ, start_response)

        def marked(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            return start_response(status, list(headers) + [("X-Sgpfab-Release", RELEASE)], exc_info)

        return app(environ, marked)

    return wrapped


def wrap_asgi(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            return await app(scope, receive, send)
        probe = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-sgpfab-probe"), None)
        if not _is_probe(probe):
            return await app(scope, receive, send)

        async def marked(message: Message) -> None:
            if message.get("type") == "http.response.start":
                headers = list(message.get("headers", [])) + [(b"x-sgpfab-release", RELEASE.encode())]
                message = dict(message, headers=headers)
            await send(message)

        return await app(scope, receive, marked)

    return wrapped


def notify_ready() -> None:
    """Tell systemd this process serves (Type=notify): sent once the app is loaded and its
    server accepts, so `systemctl start` returns only then. gunicorn's own notice (sent before any
    worker has loaded the app) is held back by gunicorn_conf.py, which keeps the address in
    SGPFAB_NOTIFY_SOCKET."""
    addr = os.environ.get("SGPFAB_NOTIFY_SOCKET") or os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(addr)
        s.sendall(b"READY=1")
    except OSError:
        pass
    finally:
        s.close()
