"""The transport contract: the same file actions through any Transport give the same results and
the same typed errors. Run against the local transport and the WinRM stand-in (unit tests) and
against SSH on a sandbox host (e2e)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sgpfab.errors import RemoteError
from sgpfab.transport.base import Transport

PAYLOAD = bytes(range(256)) * 64 + "grüße ‘quoted’ $(not run)\r\n".encode()


def check_contract(t: Transport, remote_dir: str, join: Callable[..., str], tmp: Path) -> None:
    """`remote_dir`: an existing, empty directory on the host; `join`: the host's path join."""
    # put + read_file: the exact bytes, whatever they are
    t.put(_file(tmp / "one.bin", PAYLOAD), join(remote_dir, "one.bin"))
    assert t.read_file(join(remote_dir, "one.bin")) == PAYLOAD
    seen: list[tuple[int, int | None]] = []
    t.put(
        _file(tmp / "two.bin", PAYLOAD[:1000]), join(remote_dir, "one.bin"), progress=lambda b, p: seen.append((b, p))
    )
    assert t.read_file(join(remote_dir, "one.bin")) == PAYLOAD[:1000], "put replaces the file"
    assert seen and seen[-1] == (1000, 100)
    with pytest.raises(RemoteError, match=rf"^{t.host.name}: "):
        t.read_file(join(remote_dir, "missing.bin"))

    # sync: the destination holds exactly the source's files; unchanged files are not sent again
    src = tmp / "src"
    _file(src / "a.txt", b"a\n")
    _file(src / "sub" / "b.bin", os.urandom(300_000))
    _file(src / "skip" / "c.txt", b"not sent\n")
    dest = join(remote_dir, "tree")
    progress: list[tuple[int, int | None]] = []
    first = t.sync(src, dest, excludes=("skip/",), progress=lambda b, p: progress.append((b, p)))
    assert first.files_sent in (None, 2)
    assert progress and progress[-1][0] >= 300_002 and progress[-1][1] == 100
    assert t.read_file(join(dest, "sub", "b.bin")) == (src / "sub" / "b.bin").read_bytes()
    with pytest.raises(RemoteError):
        t.read_file(join(dest, "skip", "c.txt"))
    again = t.sync(src, dest, excludes=("skip/",))
    assert again.files_sent in (None, 0)

    # delete=False keeps what the source lacks; delete=True (the default) removes it
    (src / "a.txt").unlink()
    t.sync(src, dest, excludes=("skip/",), delete=False)
    assert t.read_file(join(dest, "a.txt")) == b"a\n"
    t.sync(src, dest, excludes=("skip/",))
    with pytest.raises(RemoteError, match=rf"^{t.host.name}: "):
        t.read_file(join(dest, "a.txt"))


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
