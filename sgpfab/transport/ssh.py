"""SSH transport: Fabric Connection (with verified host keys) plus rsync over the same ssh setup."""

from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import subprocess
from pathlib import Path

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, before_sleep_log

from ..errors import RemoteError
from ..inventory import Host, Inventory
from . import Result

log = logging.getLogger(__name__)


class TransientError(RemoteError):
    """A failure worth retrying (dropped connection, timeout)."""


TRANSIENT = (socket.timeout, ConnectionError, EOFError, paramiko.ssh_exception.NoValidConnectionsError)


class SSHTransport:
    """Runs commands on one Linux host. Unknown or changed host keys are refused."""

    def __init__(self, host: Host, inventory: Inventory, connect_timeout: int = 10):
        self.host = host
        self.inventory = inventory
        cfg = Config(runtime_ssh_path=str(inventory.ssh_config)) if inventory.ssh_config else Config()
        self.conn = Connection(host.address, user=host.user, port=host.ssh_port, config=cfg,
                               connect_timeout=connect_timeout)
        _verify_host_keys(self.conn, self.known_hosts_files())
        self.bytes_sent = 0  # by rsync and SFTP uploads, for reports and benchmarks

    @property
    def login_user(self) -> str:
        return self.conn.user

    def known_hosts_files(self) -> list[Path]:
        files = [Path(os.path.expanduser(p)) for p in
                 self.conn.ssh_config.get("userknownhostsfile", "").split() if p]
        if self.inventory.known_hosts:
            files.append(self.inventory.known_hosts)
        return files

    def open(self) -> None:
        for attempt in Retrying(retry=retry_if_exception_type(TRANSIENT), stop=stop_after_attempt(3),
                                wait=wait_exponential(multiplier=0.5, max=4), reraise=True,
                                before_sleep=before_sleep_log(log, logging.WARNING)):
            with attempt:
                try:
                    self.conn.open()
                except paramiko.ssh_exception.SSHException as e:
                    if "not found in known_hosts" in str(e) or isinstance(e, paramiko.BadHostKeyException):
                        raise RemoteError(f"{self.host.name}: host key not trusted ({e}); "
                                          "add it to known_hosts after checking its fingerprint") from None
                    raise

    def run(self, command: str, *, sudo: bool = False, check: bool = True, timeout: int | None = 600) -> Result:
        """Run through `sh -c`; with sudo=True via `sudo -n` unless we are root already."""
        if sudo and self.login_user != "root":
            command = f"sudo -n sh -c {shlex.quote(command)}"
        try:
            r = self.conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except CommandTimedOut:
            raise RemoteError(f"{self.host.name}: command timed out after {timeout}s: {command[:120]}") from None
        res = Result(command, r.stdout, r.stderr, r.exited)
        if check and not res.ok:
            detail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["(no output)"]
            raise RemoteError(f"{self.host.name}: exit {res.exited}: {detail[0]}")
        return res

    def put(self, local: str | os.PathLike, remote: str, mode: int | None = None) -> None:
        self.conn.put(str(local), remote)
        self.bytes_sent += os.path.getsize(local)
        if mode is not None:
            self.conn.sftp().chmod(remote, mode)

    def rsync_command(self, src: str, dest: str, excludes: list[str] = (), link_dest: str | None = None,
                      delete: bool = True, checksum: bool = False) -> list[str]:
        """rsync with the same ssh_config, identity, port and known_hosts as the Connection."""
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if self.inventory.ssh_config:
            ssh += ["-F", str(self.inventory.ssh_config)]
        if self.inventory.known_hosts:
            ssh += ["-o", f"UserKnownHostsFile={self.inventory.known_hosts}"]
        if self.host.ssh_port:
            ssh += ["-p", str(self.host.ssh_port)]
        if self.host.user:
            ssh += ["-l", self.host.user]
        cmd = ["rsync", "-a", "--stats", "-e", " ".join(shlex.quote(x) for x in ssh)]
        if delete:
            cmd.append("--delete")
        if checksum:
            cmd.append("--checksum")
        if link_dest:
            cmd.append(f"--link-dest={link_dest}")
        if self.host.bwlimit_kbps:
            cmd.append(f"--bwlimit={self.host.bwlimit_kbps}")
        cmd += [f"--exclude={e}" for e in excludes]
        cmd += [src.rstrip("/") + "/", f"{self.host.address}:{dest.rstrip('/')}/"]
        return cmd

    def sync(self, src: str, dest: str, **kw) -> str:
        """Copy a directory's contents to the host; retries transient failures; returns rsync's stats."""
        cmd = self.rsync_command(src, dest, **kw)
        for attempt in Retrying(retry=retry_if_exception_type(TransientError), stop=stop_after_attempt(3),
                                wait=wait_exponential(multiplier=1, max=8), reraise=True,
                                before_sleep=before_sleep_log(log, logging.WARNING)):
            with attempt:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                if r.returncode in (0, 24):  # 24: files vanished on the source side
                    m = re.search(r"^Total bytes sent: ([\d,.]+)", r.stdout, re.M)
                    self.bytes_sent += int(re.sub(r"[,.]", "", m.group(1))) if m else 0
                    return r.stdout
                if r.returncode in (1, 2, 3, 4, 11):  # usage/protocol/IO errors: not transient
                    raise RemoteError(f"{self.host.name}: rsync failed ({r.returncode}): {r.stderr.strip()[-300:]}")
                raise TransientError(f"{self.host.name}: rsync failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


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
