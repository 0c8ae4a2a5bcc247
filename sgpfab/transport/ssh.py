"""SSH transport: a Fabric Connection (host keys verified); rsync runs over that same connection."""

from __future__ import annotations

import logging
import os
import select
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paramiko
from fabric import Config, Connection
from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..errors import RemoteError

if TYPE_CHECKING:
    from ..inventory import Host, Inventory
from . import rsync
from .base import Result, SyncStats, Transport
from .relay import ChannelRelay
from .rsync import ProgressFn

log = logging.getLogger("sgpfab")


class TransientError(RemoteError):
    """A failure worth retrying (dropped connection, timeout)."""


TRANSIENT = (socket.timeout, ConnectionError, EOFError, paramiko.ssh_exception.NoValidConnectionsError)
RELAY_SCRIPT = str(Path(__file__).with_name("relay.py"))
RSYNC_PERMANENT = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting files",
    4: "unsupported action",
    11: "error in file I/O",
}


class SSHTransport(Transport):
    """Runs POSIX shell commands on one Linux host. Unknown or changed host keys are refused."""

    def __init__(self, host: Host, inventory: Inventory, connect_timeout: int = 10):
        self.host = host
        self.inventory = inventory
        cfg = Config(runtime_ssh_path=str(inventory.ssh_config)) if inventory.ssh_config else Config()
        self.conn = Connection(
            host.address, user=host.user, port=host.ssh_port, config=cfg, connect_timeout=connect_timeout
        )
        # zlib on the SSH stream (commands, manifests, rsync's protocol): a third fewer bytes per
        # re-deploy, about half per first deploy (the uv binary compresses), for ~1.5 s of
        # controller CPU per 50 MB uploaded. `Compression no` in the host's ssh_config turns it off.
        self.conn.connect_kwargs["compress"] = self.conn.ssh_config.get("compression", "yes").lower() != "no"
        _verify_host_keys(self.conn, self.known_hosts_files())
        self.bytes_sent = 0  # by rsync and SFTP uploads, for reports and benchmarks
        self._control_dir: str | None = None  # interactive ssh connections share one master (this run only)
        self._relay: ChannelRelay | None = None  # rsync's remote shell: channels of self.conn

    @property
    def login_user(self) -> str:
        user: str = self.conn.user
        return user

    def known_hosts_files(self) -> list[Path]:
        files = [Path(os.path.expanduser(p)) for p in self.conn.ssh_config.get("userknownhostsfile", "").split() if p]
        if self.inventory.known_hosts:
            files.append(self.inventory.known_hosts)
        return files

    def open(self) -> None:
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(TRANSIENT),
                stop=stop_after_attempt(3),
                wait=wait_exponential(multiplier=0.5, max=4),
                reraise=True,
                before_sleep=before_sleep_log(log, logging.WARNING),
            ):
                with attempt:
                    self.conn.open()
            _detect_dead_peers(self.conn.client.get_transport())
        except paramiko.BadHostKeyException as e:
            raise RemoteError(
                f"{self.host.name}: host key CHANGED ({e}); if the host was reinstalled, "
                "check its fingerprint and update known_hosts"
            ) from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise RemoteError(
                    f"{self.host.name}: host key not trusted ({e}); "
                    "add it to known_hosts after checking its fingerprint"
                ) from None
            raise RemoteError(f"{self.host.name}: cannot connect: {e}") from None
        except (OSError, EOFError) as e:
            raise RemoteError(f"{self.host.name}: cannot connect: {_oneline(e)}") from None

    def run(
        self,
        command: str,
        *,
        privileged: bool = False,
        check: bool = True,
        timeout: float | None = 600,
        stdin: bytes | None = None,
    ) -> Result:
        """Run through the login shell; privileged: via `sudo -n` unless we are root already."""
        if privileged and self.login_user != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        try:
            out, err, code = self._exec(command, stdin, timeout)
        except TimeoutError:
            raise RemoteError(f"{self.host.name}: command timed out after {timeout}s: {command[:120]}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(f"{self.host.name}: connection lost: {_oneline(e)}") from None
        res = Result(command, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), code)
        if check and not res.ok:
            raise self.fail(res)
        return res

    def _exec(self, command: str, stdin: bytes | None, timeout: float | None) -> tuple[bytes, bytes, int]:
        """One command on a new channel of the open connection: stdin written whole, then both
        output streams drained together (neither can fill up and stall the other)."""
        chan = self._open_channel()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                else:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError()
                    select.select([chan], [], [], 0.05)
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            if not chan.get_transport().is_active():
                raise paramiko.SSHException("the host stopped answering")
            return bytes(out), bytes(err), chan.recv_exit_status()
        finally:
            chan.close()

    def _open_channel(self) -> Any:
        """A new session channel on the open connection (paramiko.SSHException when it is closed)."""
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the connection is closed")
        return transport.open_session(timeout=30)

    def stream(self, command: str, on_line: Callable[[str], object], *, privileged: bool = False) -> int:
        if privileged and self.login_user != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        try:
            chan = self._open_channel()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(f"{self.host.name}: connection lost: {_oneline(e)}") from None
        try:
            chan.exec_command(command)
            chan.shutdown_write()
            buf = b""
            while True:
                if chan.recv_ready():
                    buf += chan.recv(1 << 16)
                    *lines, buf = buf.split(b"\n")
                    for ln in lines:
                        on_line(ln.decode("utf-8", "replace"))
                elif chan.exit_status_ready() and not chan.recv_ready():
                    break
                else:
                    select.select([chan], [], [], 0.2)
            if buf:
                on_line(buf.decode("utf-8", "replace"))
            code: int = chan.recv_exit_status()
            return code
        finally:
            chan.close()

    def interactive(self, command: str, *, privileged: bool = False) -> int:
        if privileged and self.login_user != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        return subprocess.call([*self.ssh_command(), "-t", self.host.address, command])

    def put(
        self, local: str | os.PathLike[str], remote: str, *, mode: int | None = None, progress: ProgressFn | None = None
    ) -> None:
        """SFTP to a temporary name, then rename: the file is never seen half-written."""
        tmp = remote + ".sgpfab-upload"
        each = (
            None if progress is None else (lambda done, total: progress(done, done * 100 // total if total else None))
        )
        try:
            sftp = self.conn.sftp()
            sftp.put(str(local), tmp, callback=each)
            if mode is not None:
                sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, remote)
        except (OSError, paramiko.SSHException) as e:
            raise RemoteError(
                f"{self.host.name}: upload of {Path(local).name} to {remote} failed: {_oneline(e)}"
            ) from None
        self.bytes_sent += os.path.getsize(local)

    def read_file(self, remote: str) -> bytes:
        try:
            with self.conn.sftp().open(remote, "rb") as f:
                data: bytes = f.read()
                return data
        except (OSError, paramiko.SSHException) as e:
            raise RemoteError(f"{self.host.name}: cannot read {remote}: {_oneline(e)}") from None

    def ssh_command(self) -> list[str]:
        """ssh with the same ssh_config, identity, port and known_hosts as the Connection."""
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if self.inventory.ssh_config:
            ssh += ["-F", str(self.inventory.ssh_config)]
        if self.inventory.known_hosts:
            ssh += ["-o", f"UserKnownHostsFile={self.inventory.known_hosts}"]
        if self.host.ssh_port:
            ssh += ["-p", str(self.host.ssh_port)]
        if self.host.user:
            ssh += ["-l", self.host.user]
        if self._control_dir is None:
            import tempfile

            self._control_dir = tempfile.mkdtemp(prefix="sgpfab-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
        ssh += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/cm", "-o", "ControlPersist=30"]
        return ssh

    def rsync_command(
        self, src: str, dest: str, excludes: tuple[str, ...] = (), link_dest: str | None = None, delete: bool = True
    ) -> list[str]:
        """rsync comparing by checksum (a changed file of the same size and mtime is still sent),
        its remote shell a relay onto this connection (relay.py): no second SSH handshake."""
        if self._relay is None:
            self._relay = ChannelRelay(self._open_channel)
        rsh = [sys.executable, "-I", RELAY_SCRIPT, self._relay.path]
        cmd = ["rsync", "-a", "--checksum", "--stats", "-e", " ".join(shlex.quote(x) for x in rsh)]
        if delete:
            cmd.append("--delete")
        if link_dest:
            cmd.append(f"--link-dest={link_dest}")
        if self.host.bwlimit_kbps:
            cmd.append(f"--bwlimit={self.host.bwlimit_kbps}")
        cmd += [f"--exclude={e}" for e in excludes]
        cmd += [str(src).rstrip("/") + "/", f"{self.host.address}:{dest.rstrip('/')}/"]
        return cmd

    def sync(
        self,
        src: str | os.PathLike[str],
        dest: str,
        *,
        excludes: tuple[str, ...] = (),
        link_dest: str | None = None,
        delete: bool = True,
        progress: ProgressFn | None = None,
    ) -> SyncStats:
        """Copy a directory's contents to the host; retries transient failures."""
        cmd = self.rsync_command(str(src), dest, excludes, link_dest, delete)
        for attempt in Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=1, max=8),
            reraise=True,
            before_sleep=before_sleep_log(log, logging.WARNING),
        ):
            with attempt:
                r = rsync.run(cmd, progress)
                if r.exited in (0, 24):  # 24: files vanished on the source side
                    sent = rsync.stat(r.stdout, "Total bytes sent")
                    self.bytes_sent += sent
                    return SyncStats(rsync.stat(r.stdout, "Number of regular files transferred"), sent)
                cause = _rsync_cause(r.stderr)
                msg = f"{self.host.name}: upload to {dest} failed (rsync exit {r.exited}): {cause}"
                if r.exited in RSYNC_PERMANENT or "No space left" in r.stderr:
                    raise RemoteError(msg)
                raise TransientError(msg)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        self.conn.close()
        if self._control_dir is not None:
            subprocess.run([*self.ssh_command(), "-O", "exit", self.host.address], capture_output=True, timeout=10)
            import shutil

            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None


def _detect_dead_peers(transport: Any) -> None:
    """A host that drops off the network mid-command must fail the command within a minute,
    not after TCP's quarter of an hour: keepalive probes on the idle connection, and a cap on
    unacknowledged sends (Linux TCP options; ignored where unavailable)."""
    if transport is None:
        return
    sock = transport.sock
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4), ("TCP_USER_TIMEOUT", 30000)):
        if hasattr(socket, name):
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, opt, value in opts:
        try:
            sock.setsockopt(level, opt, value)
        except (OSError, AttributeError):
            pass


def _rsync_cause(stderr: str) -> str:
    """rsync's first real complaint (with the path it concerns), not its closing summary line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if not ln.startswith("rsync error:") and ("rsync:" in ln or "No space" in ln or "denied" in ln):
            return ln[:300]
    return (lines[-1] if lines else "(no output)")[:300]


def _oneline(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _verify_host_keys(conn: Connection, files: list[Path]) -> None:
    """Fabric auto-adds unknown host keys; load known_hosts and reject instead (also for gateways)."""
    while isinstance(conn, Connection):
        client = conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.load_system_host_keys()
        except OSError:
            pass
        for f in files:
            if f.exists():
                client.get_host_keys().load(str(f))
        conn = conn.gateway
