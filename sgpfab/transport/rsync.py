"""Running rsync: its exit status, its `--stats` figures, and byte progress while it copies."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

# (bytes copied so far, percent of the whole transfer or None when rsync cannot tell yet)
ProgressFn = Callable[[int, "int | None"], None]

# A `--info=progress2` line: "     12,345,678  45%   10.20MB/s    0:00:02 (xfr#3, to-chk=5/20)"
_PROGRESS = re.compile(r"^\s*([\d,.]+)\s+(\d{1,3})%\s")


@dataclass(frozen=True)
class RsyncRun:
    exited: int
    stdout: str
    stderr: str


def parse_progress(line: str) -> tuple[int, int] | None:
    """(bytes, percent) from one `--info=progress2` line, None for any other line."""
    m = _PROGRESS.match(line)
    if not m:
        return None
    return int(re.sub(r"[,.]", "", m.group(1))), min(int(m.group(2)), 100)


def stat(text: str, label: str) -> int:
    """A number from rsync's `--stats` summary (0 when the line is missing)."""
    m = re.search(rf"^{re.escape(label)}: ([\d,.]+)", text, re.M)
    return int(re.sub(r"[,.]", "", m.group(1))) if m else 0


def run(cmd: list[str], progress: ProgressFn | None = None, timeout: float = 3600) -> RsyncRun:
    """Run an rsync command line; with `progress`, ask rsync for whole-transfer progress and pass
    each figure on as it comes (rsync ends those lines with a carriage return)."""
    if progress is None:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return RsyncRun(r.returncode, r.stdout, r.stderr)
    cmd = [cmd[0], "--info=progress2", *cmd[1:]]
    out: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as p:
        assert p.stdout is not None and p.stderr is not None
        buf = b""
        while chunk := os.read(p.stdout.fileno(), 65536):
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                figure = parse_progress(line)
                if figure is not None:
                    progress(*figure)
                elif line:
                    out.append(line)
        if buf:
            out.append(buf.decode("utf-8", "replace"))
        err = p.stderr.read().decode("utf-8", "replace")
        exited = p.wait(timeout=timeout)
    return RsyncRun(exited, "\n".join(out), err)
