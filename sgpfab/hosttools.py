"""What the controller pushes to hosts that lack it: a uv binary (cached, checked before reuse)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from . import cache
from .errors import SgpfabError

UV_FOR_HOSTS = "0.13.9"
UV_PLATFORMS = {"linux": ("musllinux_1_1_x86_64", "uv"), "windows": ("win_amd64", "uv.exe")}


def uv_binary(host_os: str = "linux", log: Callable[[str], object] = print) -> Path:
    """A uv for hosts, from PyPI's wheel for that OS. On Linux it is the musllinux build: a
    static binary that runs on any x86_64 Linux."""
    platform, exe = UV_PLATFORMS[host_os]

    def build(tmp: Path) -> None:
        log(f"downloading uv {UV_FOR_HOSTS} for {host_os} hosts...")
        dl = tmp / "download"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                platform,
                "--python-version",
                "3.11",
                "-d",
                str(dl),
                f"uv=={UV_FOR_HOSTS}",
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode:
            raise SgpfabError(f"could not download uv for hosts: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        wheel = next(dl.glob("uv-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(f".data/scripts/{exe}"))
            with z.open(member) as src, open(tmp / exe, "wb") as dst:
                shutil.copyfileobj(src, dst)
        (tmp / exe).chmod(0o755)
        shutil.rmtree(dl)

    return cache.entry("uv", f"{UV_FOR_HOSTS}-{platform}", build) / exe
