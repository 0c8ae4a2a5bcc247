"""A command for a host: what the builders (linux, windows) return and HostSession runs."""

from __future__ import annotations

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
    """A deterministic tar of relative path -> (content, mode), to write many files in one go."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(files):
            content, mode = files[rel]
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
