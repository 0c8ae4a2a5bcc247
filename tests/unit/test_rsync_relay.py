"""The rsync relay (sgpfab/transport/relay.py) with a real rsync on both ends: the "channel" is a
local process here (over SSH it is a paramiko channel, tests/e2e/test_ssh_transport_contract.py)."""

import os
import shlex
import subprocess
import sys
import threading
import time
from typing import IO

from sgpfab.transport.relay import ChannelRelay
from sgpfab.transport.ssh import RELAY_SCRIPT


class LocalChannel:
    """The part of paramiko's Channel the relay uses, backed by `sh -c COMMAND` on this machine."""

    def __init__(self, seen: list[str]):
        self.seen = seen
        self.p: subprocess.Popen[bytes] | None = None
        self.out, self.err = b"", b""
        self._lock = threading.Lock()
        self._idle = os.pipe()

    def exec_command(self, command: str) -> None:
        self.seen.append(command)
        self.p = subprocess.Popen(
            ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._readers = [
            threading.Thread(target=self._read, args=(stream, attr), daemon=True)
            for stream, attr in ((self.p.stdout, "out"), (self.p.stderr, "err"))
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream, attr: str) -> None:
        while data := os.read(stream.fileno(), 65536):
            with self._lock:
                setattr(self, attr, getattr(self, attr) + data)

    def _proc(self) -> subprocess.Popen[bytes]:
        assert self.p is not None, "exec_command comes first"
        return self.p

    def _stdin(self) -> IO[bytes]:
        stdin = self._proc().stdin
        assert stdin is not None
        return stdin

    def sendall(self, data: bytes) -> None:
        self._stdin().write(data)
        self._stdin().flush()

    def shutdown_write(self) -> None:
        self._stdin().close()

    def recv_ready(self) -> bool:
        return bool(self.out)

    def recv_stderr_ready(self) -> bool:
        return bool(self.err)

    def _take(self, attr: str, n: int) -> bytes:
        with self._lock:
            data = getattr(self, attr)
            setattr(self, attr, data[n:])
            return data[:n]

    def recv(self, n: int) -> bytes:
        return self._take("out", n)

    def recv_stderr(self, n: int) -> bytes:
        return self._take("err", n)

    def exit_status_ready(self) -> bool:  # as over SSH: the exit status comes after all output
        return self._proc().poll() is not None and not any(t.is_alive() for t in self._readers)

    def recv_exit_status(self) -> int:
        return self._proc().wait()

    def fileno(self) -> int:  # select() in the relay then waits its 50 ms each time
        return self._idle[0]

    def close(self) -> None:
        for fd in self._idle:
            os.close(fd)


def _rsync(relay, src, dest, *extra):
    rsh = " ".join(shlex.quote(x) for x in (sys.executable, "-I", RELAY_SCRIPT, relay.path))
    return subprocess.run(
        ["rsync", "-a", "--checksum", "--stats", *extra, "-e", rsh, f"{src}/", f"somehost:{dest}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rsync_runs_through_the_relay(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("print('a')\n" * 2000)
    (src / "b.bin").write_bytes(os.urandom(300_000))
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    seen: list[str] = []
    relay = ChannelRelay(lambda: LocalChannel(seen))
    try:
        r = _rsync(relay, src, dest, "--delete")
        assert r.returncode == 0, r.stderr
        assert (dest / "pkg" / "a.py").read_text() == (src / "pkg" / "a.py").read_text()
        assert (dest / "b.bin").read_bytes() == (src / "b.bin").read_bytes()
        assert not (dest / "stale.txt").exists()
        assert len(seen) == 1 and seen[0].startswith("rsync --server ")
        again = _rsync(relay, src, dest)
        assert again.returncode == 0 and "Number of regular files transferred: 0" in again.stdout
    finally:
        relay.close()
    assert not os.path.exists(relay.path)
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "sgpfab-relay"]  # closing ends its listener


def test_the_remote_exit_status_and_errors_come_back(tmp_path):
    relay = ChannelRelay(lambda: LocalChannel([]))
    try:
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "f").write_text("x")
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        r = _rsync(relay, tmp_path / "src", blocker / "sub")
        assert r.returncode not in (0, 255) and "rsync" in r.stderr
    finally:
        relay.close()


def test_only_rsync_servers_are_started(tmp_path):
    seen: list[str] = []
    relay = ChannelRelay(lambda: LocalChannel(seen))
    try:
        r = subprocess.run(
            [sys.executable, "-I", RELAY_SCRIPT, relay.path, "host", "touch", str(tmp_path / "x")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 255 and "only rsync's server" in r.stderr
        assert seen == [] and not (tmp_path / "x").exists()
    finally:
        relay.close()


def test_a_relay_without_its_fab_process_fails_cleanly(tmp_path):
    r = subprocess.run(
        [sys.executable, "-I", RELAY_SCRIPT, str(tmp_path / "nothing"), "host", "rsync", "--server"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 255 and r.stderr.startswith("sgpfab relay: ") and "Traceback" not in r.stderr
