"""The transport interface every connection kind implements, and the result types it returns."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from ..errors import InputError, RemoteError
from .rsync import ProgressFn

if TYPE_CHECKING:
    from ..inventory import Host


@dataclass(frozen=True)
class Result:
    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def detail(self) -> str:
        """The meaningful part of a failure: the first error line and the last line (often the
        tool's own summary), not just the last line."""
        lines = [ln for ln in (self.stderr.strip() or self.stdout.strip()).splitlines() if ln.strip()]
        if not lines:
            return "(no output)"
        first = next(
            (ln for ln in lines if any(w in ln.lower() for w in ("error", "fail", "denied", "no such"))), lines[0]
        )
        return first.strip() if first == lines[-1] else f"{first.strip()} ... {lines[-1].strip()}"


@dataclass(frozen=True)
class SyncStats:
    files_sent: int | None  # None when the transport cannot tell
    bytes_sent: int


class Transport(ABC):
    """Runs commands on one host and moves files there.

    - `run` runs a command in the host's shell (POSIX sh on Linux, PowerShell on Windows);
      `privileged=True` runs it with administrative rights (sudo on Linux; WinRM sessions already
      have them); `stdin` feeds it data that must not appear on a command line (secrets);
      `check=True` turns a non-zero exit into RemoteError naming the host and the cause.
    - `put` writes one file (atomically where the host allows), `read_file` reads one back.
    - `sync` makes directory `dest` hold exactly the files of local directory `src`
      (`delete=False` keeps extra files); unchanged files are not sent again.
    - `put` and `sync` report bytes copied so far to `progress(bytes, percent)` when given one.
    """

    host: Host
    bytes_sent: int = 0

    @property
    @abstractmethod
    def login_user(self) -> str: ...

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def run(
        self,
        command: str,
        *,
        privileged: bool = False,
        check: bool = True,
        timeout: float | None = 600,
        stdin: bytes | None = None,
    ) -> Result: ...

    @abstractmethod
    def put(
        self, local: str | os.PathLike[str], remote: str, *, mode: int | None = None, progress: ProgressFn | None = None
    ) -> None: ...

    @abstractmethod
    def read_file(self, remote: str) -> bytes: ...

    @abstractmethod
    def sync(
        self,
        src: str | os.PathLike[str],
        dest: str,
        *,
        excludes: tuple[str, ...] = (),
        link_dest: str | None = None,
        delete: bool = True,
        progress: ProgressFn | None = None,
    ) -> SyncStats: ...

    def stream(self, command: str, on_line: Callable[[str], object], *, privileged: bool = False) -> int:
        """Run a long command (e.g. `journalctl --follow`), handing each output line to
        `on_line` as it arrives; returns the exit code. Not every transport can."""
        raise InputError(f"{self.host.name}: following output is not supported over this connection")

    def interactive(self, command: str, *, privileged: bool = False) -> int:
        """Run a command on a terminal of the host, attached to this terminal."""
        raise InputError(f"{self.host.name}: interactive commands are not supported over this connection")

    def fail(self, res: Result) -> RemoteError:
        return RemoteError(f"{self.host.name}: exit {res.exited}: {res.detail()}")

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
