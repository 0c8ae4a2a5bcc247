"""What the controller prepares before touching hosts: source digest, wheelhouse, a uv binary."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

from .errors import InputError, SgpfabError
from .inventory import AppSettings

CACHE = Path(os.environ.get("SGPFAB_CACHE", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "sgpfab"))
UV_FOR_HOSTS = "0.13.9"


def _excluded(rel: str, is_dir: bool, excludes: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for pat in excludes:
        if pat.endswith("/"):
            if is_dir and fnmatch.fnmatch(name, pat[:-1]):
                return True
        elif fnmatch.fnmatch(name, pat):
            return True
    return False


def source_files(src: Path, excludes: list[str]) -> list[str]:
    """Relative paths of the files a release copies, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not _excluded(rel_dir + d, True, excludes))
        out += [rel_dir + f for f in filenames if not _excluded(rel_dir + f, False, excludes)]
    return sorted(out)


def check_source(src: Path, app: AppSettings) -> None:
    if not src.is_dir():
        raise InputError(f"app source folder not found: {src}")
    if not (src / app.requirements).is_file():
        raise InputError(f"{src}: missing {app.requirements} (the locked requirements to install)")


def wheelhouse(src: Path, app: AppSettings, log=print) -> Path:
    """Wheels for every locked requirement, for the hosts' Python and platform (cached)."""
    req = (src / app.requirements).read_bytes()
    key = hashlib.sha256(req + repr((app.python_version, app.platforms)).encode()).hexdigest()[:16]
    out = CACHE / "wheelhouse" / key
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(key + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"downloading wheels for {src / app.requirements} (python {app.python_version})...")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--only-binary=:all:", "--implementation", "cp", "--python-version", app.python_version,
           "-d", str(tmp), "-r", str(src / app.requirements)]
    for p in app.platforms:
        cmd += ["--platform", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SgpfabError(f"could not build the wheelhouse: {r.stderr.strip().splitlines()[-1:]}")
    (tmp / ".complete").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


_uv_lock = threading.Lock()
UV_PLATFORMS = {"linux": ("musllinux_1_1_x86_64", "uv"), "windows": ("win_amd64", "uv.exe")}


def uv_binary(host_os: str = "linux", log=print) -> Path:
    """A uv to push to hosts that have none, from PyPI's wheel for that OS (cached). On Linux it
    is the musllinux build: a static binary that runs on any x86_64 Linux."""
    platform, exe = UV_PLATFORMS[host_os]
    out = CACHE / "uv" / UV_FOR_HOSTS / platform / exe
    with _uv_lock:  # parallel deploys share one download
        if out.exists():
            return out
        tmp = out.parent / "download"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"downloading uv {UV_FOR_HOSTS} for {host_os} hosts...")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--platform", platform, "--python-version", "3.11", "-d", str(tmp),
                            f"uv=={UV_FOR_HOSTS}"], capture_output=True, text=True)
        if r.returncode:
            raise SgpfabError(f"could not download uv for hosts: {r.stderr.strip().splitlines()[-1:]}")
        wheel = next(tmp.glob("uv-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            member = next(n for n in z.namelist() if n.endswith(f".data/scripts/{exe}"))
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(str(out) + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.chmod(str(out) + ".tmp", 0o755)
        os.replace(str(out) + ".tmp", out)
        shutil.rmtree(tmp, ignore_errors=True)
        return out
