"""The controller's caches (wheelhouses, unpacked bundles, uv for hosts, build environments).

Every cache entry is a directory built in a private temporary directory and renamed into place
when complete, so parallel threads and processes never see half of one; a per-key lock keeps
threads of one process from building the same entry twice. Entries carry a SHA256SUMS file and
are checked before reuse: a damaged entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
SUMS = "SHA256SUMS"


def root() -> Path:
    """$SGPFAB_CACHE, else $XDG_CACHE_HOME/sgpfab, else ~/.cache/sgpfab (read at each call)."""
    env = os.environ.get("SGPFAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sgpfab"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def write_sums(d: Path) -> None:
    lines = [
        f"{sha256_file(p)}  {p.relative_to(d).as_posix()}"
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.relative_to(d).as_posix() != SUMS
    ]
    (d / SUMS).write_text("".join(line + "\n" for line in lines))


def check_sums(d: Path) -> bool:
    """Whether every file listed in SHA256SUMS is there unchanged and nothing else was added."""
    try:
        lines = (d / SUMS).read_text().splitlines()
    except OSError:
        return False
    want = {}
    for line in lines:
        digest, _, rel = line.partition("  ")
        want[rel] = digest
    have = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {SUMS}
    if have != set(want):
        return False
    return all(sha256_file(d / rel) == digest for rel, digest in want.items())


def entry(kind: str, key: str, build: Callable[[Path], None], verify: bool = True) -> Path:
    """The cache directory kind/key, built by `build(tmpdir)` when missing or damaged."""
    final = root() / kind / key
    with _lock(f"{kind}/{key}"):
        if final.is_dir() and (not verify or check_sums(final)):
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        try:
            build(tmp)
            write_sums(tmp)
            if final.exists():  # damaged (or a race lost to another process): replace it
                doomed = Path(tempfile.mkdtemp(prefix=f".{key}.old.", dir=final.parent))
                try:
                    os.replace(final, doomed / "x")
                except OSError:
                    pass
                shutil.rmtree(doomed, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:  # another process put a complete entry there first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
