"""A command for a host: what the builders (linux, windows) return and HostSession runs."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Cmd:
    text: str  # a POSIX shell command (Linux) or a PowerShell script (Windows)
    privileged: bool = False  # needs root / administrator rights
    stdin: bytes | None = None  # data that must not travel on a command line
    timeout: float | None = 600


def tar_of(files: Mapping[str, tuple[str | bytes, int]]) -> bytes:
    """A deterministic tar of relative path -> (content, mode), to write many files in one go.
    It ends right after the two zero blocks that mark the end of the archive: the padding of the
    last 10 KiB record, which tar does not need, is not sent."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            content, mode = files[rel]
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()[: tar.offset]  # after close, the offset includes the two zero blocks


def targz_of(files: Mapping[str, tuple[str | bytes, int]]) -> bytes:
    """`tar_of`, gzip-compressed (deterministic: no timestamp); tar's headers and short scripts
    shrink several times, which matters for what every deploy sends."""
    return gzip.compress(tar_of(files), 9, mtime=0)
