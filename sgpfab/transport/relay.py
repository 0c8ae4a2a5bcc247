"""rsync's remote shell carried over the controller's open SSH connection (no second SSH
connection, so no second handshake and no second host-key check to keep in step).

Two sides, stdlib only:

- `ChannelRelay` (in the fab process) listens on a Unix socket in a private directory; each
  connection names one remote command, which runs on a new channel of the SSH connection.
- `main` is what rsync starts as its remote shell (`rsync -e "PYTHON relay.py SOCKET"`): it
  sends the command, then copies its stdin to the socket and the framed answer back to its
  stdout and stderr, and exits with the remote command's status (255 if the connection broke).

Only rsync's server side may be started this way (`rsync --server ...`).
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

OUT, ERR, EXIT = 1, 2, 3  # frames from the fab process: kind (1 byte), length (4 bytes), data
_HEADER = struct.Struct("!BI")
ALLOWED_PREFIX = "rsync --server "
CHUNK = 1 << 16
log = logging.getLogger("sgpfab")


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            return None
        buf += part
    return bytes(buf)


class ChannelRelay:
    """Runs remote commands that arrive on a private Unix socket on new channels from
    `open_channel()` (a paramiko Channel factory)."""

    def __init__(self, open_channel: Callable[[], object]):
        self._open_channel = open_channel
        # mode 0700: only this user; under /tmp, as a socket's path is limited to ~100 bytes
        self._dir = tempfile.mkdtemp(prefix="sgpfab-relay-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.path = os.path.join(self._dir, "s")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(8)
        threading.Thread(target=self._accept, name="sgpfab-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        chan = None
        try:
            head = _recv_exactly(conn, 4)
            raw = _recv_exactly(conn, struct.unpack("!I", head)[0]) if head else None
            command = raw.decode("utf-8", "replace") if raw is not None else ""
            if not command.startswith(ALLOWED_PREFIX) or "\n" in command:
                self._frame(conn, ERR, b"sgpfab relay: only rsync's server may be started\n")
                self._frame(conn, EXIT, struct.pack("!i", 255))
                return
            chan = self._open_channel()
            chan.exec_command(command)  # type: ignore[attr-defined]
            threading.Thread(target=self._feed, args=(conn, chan), daemon=True).start()
            self._drain(conn, chan)
        except Exception as e:  # a broken connection (any paramiko or socket error): the relay exits 255
            log.debug("rsync relay: %s", e)
        finally:
            if chan is not None:
                chan.close()  # type: ignore[attr-defined]
            conn.close()

    @staticmethod
    def _feed(conn: socket.socket, chan: Any) -> None:
        """rsync's data for the host, until rsync closes its side."""
        try:
            while data := conn.recv(CHUNK):
                chan.sendall(data)
            chan.shutdown_write()
        except Exception as e:  # the connection broke: _drain ends too
            log.debug("rsync relay: %s", e)

    def _drain(self, conn: socket.socket, chan: Any) -> None:
        """The host's stdout and stderr, framed, then the exit status."""
        while True:
            if chan.recv_ready():
                self._frame(conn, OUT, chan.recv(CHUNK))
            elif chan.recv_stderr_ready():
                self._frame(conn, ERR, chan.recv_stderr(CHUNK))
            elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            else:
                select.select([chan], [], [], 0.05)
        self._frame(conn, EXIT, struct.pack("!i", chan.recv_exit_status()))

    @staticmethod
    def _frame(conn: socket.socket, kind: int, data: bytes) -> None:
        conn.sendall(_HEADER.pack(kind, len(data)) + data)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the waiting accept()
        except OSError:
            pass
        try:
            self._sock.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """rsync's side: `relay.py SOCKET HOST COMMAND...` (HOST is rsync's, unused: the
    connection is already open)."""
    if len(argv) < 4:
        sys.stderr.write("usage: relay.py SOCKET HOST COMMAND...\n")
        return 255
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(argv[1])
    except OSError as e:
        sys.stderr.write(f"sgpfab relay: the fab process is gone ({e.strerror})\n")
        return 255
    command = " ".join(argv[3:]).encode()
    sock.sendall(struct.pack("!I", len(command)) + command)

    def feed() -> None:
        try:
            while data := os.read(0, CHUNK):
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    # rsync signals its remote shell to stop once it has an error code, often before the host's
    # own words about it (stderr) have come through: they are still passed on, until the end.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    closed: set[int] = set()
    while True:
        head = _recv_exactly(sock, _HEADER.size)
        if head is None:
            return 255  # the connection broke before the command finished
        kind, length = _HEADER.unpack(head)
        data = _recv_exactly(sock, length) if length else b""
        if data is None:
            return 255
        if kind == EXIT:
            code: int = struct.unpack("!i", data)[0]
            return code
        fd = 1 if kind == OUT else 2
        view = memoryview(data)
        while view and fd not in closed:
            try:
                view = view[os.write(fd, view) :]
            except BrokenPipeError:  # rsync stopped reading: keep draining the rest
                closed.add(fd)


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    os._exit(code)
