"""Local transport: this machine is the host (on-server apply: `connection: local`)."""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RemoteError

if TYPE_CHECKING:
    from ..inventory import Host
from . import rsync
from .base import Result, SyncStats, Transport
from .rsync import ProgressFn


class LocalTransport(Transport):
    """Runs POSIX shell commands here; privileged ones through `sudo -n` unless already root."""

    def __init__(self, host: Host):
        self.host = host
        self.bytes_sent = 0

    @property
    def login_user(self) -> str:
        return getpass.getuser()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(
        self,
        command: str,
        *,
        privileged: bool = False,
        check: bool = True,
        timeout: float | None = 600,
        stdin: bytes | None = None,
    ) -> Result:
        command = self._sudo(command, privileged)
        try:
            r = subprocess.run(
                ["/bin/sh", "-c", command],
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host.name}: command timed out after {timeout}s: {command[:120]}") from None
        res = Result(command, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"), r.returncode)
        if check and not res.ok:
            raise self.fail(res)
        return res

    def _sudo(self, command: str, privileged: bool) -> str:
        return f"sudo -n sh -c {shlex.quote(command)}" if privileged and os.geteuid() != 0 else command

    def stream(self, command: str, on_line: Callable[[str], object], *, privileged: bool = False) -> int:
        with subprocess.Popen(
            ["/bin/sh", "-c", self._sudo(command, privileged)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        ) as p:
            assert p.stdout is not None
            for line in p.stdout:
                on_line(line.rstrip("\n"))
            return p.wait()

    def interactive(self, command: str, *, privileged: bool = False) -> int:
        return subprocess.call(["/bin/sh", "-c", self._sudo(command, privileged)])

    def put(
        self, local: str | os.PathLike[str], remote: str, *, mode: int | None = None, progress: ProgressFn | None = None
    ) -> None:
        tmp = remote + ".sgpfab-upload"
        try:
            shutil.copyfile(local, tmp)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, remote)
        except OSError as e:
            raise RemoteError(f"{self.host.name}: copy of {Path(local).name} to {remote} failed: {e}") from None
        if progress is not None:
            progress(os.path.getsize(remote), 100)

    def read_file(self, remote: str) -> bytes:
        try:
            return Path(remote).read_bytes()
        except OSError as e:
            raise RemoteError(f"{self.host.name}: cannot read {remote}: {e}") from None

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
        cmd = ["rsync", "-a", "--checksum", "--stats"]
        if delete:
            cmd.append("--delete")
        if link_dest:
            cmd.append(f"--link-dest={link_dest}")
        cmd += [f"--exclude={e}" for e in excludes]
        cmd += [str(src).rstrip("/") + "/", dest.rstrip("/") + "/"]
        r = rsync.run(cmd, progress)
        if r.exited not in (0, 24):
            raise RemoteError(
                f"{self.host.name}: copy to {dest} failed (rsync exit {r.exited}): "
                f"{(r.stderr.strip().splitlines() or ['?'])[0][:300]}"
            )
        return SyncStats(None, 0)
