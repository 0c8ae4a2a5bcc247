"""Build (once) and cache the base Debian root filesystem the sandbox hosts boot from.

Where the image lives (read from the environment on each call, see `cache_dir`):
`$SGPFAB_CACHE/sandbox/` when SGPFAB_CACHE (the controller's cache) is set, else
`$SGPFAB_SANDBOX_CACHE`, else /var/cache/sgpfab. The image directory is named after
ROOTFS_REVISION, so a changed recipe builds a new image next to the old one.

A build goes to `<image>.building` and is renamed into place only after the completion marker is
written inside it, so a half-built image is never used; a lock file next to the image serialises
builds between processes (the second one waits, then finds the finished image).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/sgpfab")
ROOTFS_REVISION = "bookworm-2"  # bump when the recipe below changes
MARKER = ".sgpfab-complete"
PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "rsync",
    "curl",
    "iproute2",
    "ca-certificates",
    "sudo",
    "postgresql",  # PostgreSQL 15 server + client (psql, pg_dump, pg_restore); cluster 15/main, off by default
    "logrotate",
]
# PostgreSQL ships enabled; the sandbox hosts boot with it off (fleet.enable_postgres turns it on).
# The cluster unit postgresql@15-main is pulled in only through postgresql.service (by Debian's
# postgresql-generator), so disabling postgresql.service keeps the cluster down.
DISABLED_UNITS = [
    "postgresql.service",
    # timers/services that mean nothing on an offline container and would only cost CPU at random times
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
]
MASKED_UNITS = ["console-getty.service", "getty@tty1.service", "systemd-networkd-wait-online.service"]
SSHD_SNIPPET = """\
# sgpfab sandbox host
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The directory that holds the base image, from `env` (default: the process environment now)."""
    env = os.environ if env is None else env
    if env.get("SGPFAB_CACHE"):
        return Path(env["SGPFAB_CACHE"]) / "sandbox"
    if env.get("SGPFAB_SANDBOX_CACHE"):
        return Path(env["SGPFAB_SANDBOX_CACHE"])
    return DEFAULT_CACHE


def base_path(env: Mapping[str, str] | None = None) -> Path:
    return cache_dir(env) / f"rootfs-{ROOTFS_REVISION}"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (hosts are built from the same one)."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S*/debian)\s*$", text, re.MULTILINE) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S*/debian)\s+bookworm\b", text, re.MULTILINE
        )
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def is_complete(base: Path) -> bool:
    return (base / MARKER).is_file()


def ensure_base(log: Callable[[str], object] = print) -> Path:
    """Return the cached base rootfs, building it with debootstrap first if needed."""
    base = base_path()
    if is_complete(base):
        return base
    if any(c in str(base) for c in ":,"):  # overlayfs option syntax cannot carry these
        raise ValueError(f"the sandbox cache path must not contain ':' or ',': {base}")
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_name(base.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is building {base}...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(base):  # built by the process we waited for
            return base
        _build(base, log)
    return base


def _build(base: Path, log: Callable[[str], object]) -> None:
    tmp = base.with_name(base.name + ".building")
    _remove(tmp)  # leftover of a build that died
    tool = "mmdebstrap" if shutil.which("mmdebstrap") else "debootstrap"
    log(f"building the sandbox base rootfs at {base} with {tool} (once, 1-2 minutes)...")
    t0 = time.monotonic()
    try:
        _bootstrap(tool, tmp, debian_mirror())
        _configure(tmp)
        (tmp / MARKER).write_text(ROOTFS_REVISION + "\n")
    except BaseException:
        _remove(tmp)
        raise
    shutil.rmtree(base, ignore_errors=True)  # an incomplete image at the final path (older code)
    tmp.rename(base)
    log(f"sandbox base rootfs built in {time.monotonic() - t0:.0f} s")


def _bootstrap(tool: str, target: Path, mirror: str) -> None:
    """minbase + PACKAGES. mmdebstrap (apt: parallel downloads, dpkg without fsyncs) takes about half
    the time of debootstrap, which runs in two stages here so that dpkg skips its fsyncs in the second."""
    include = "--include=" + ",".join(PACKAGES)
    if tool == "mmdebstrap":
        _run(["mmdebstrap", "-q", "--variant=minbase", include, "bookworm", str(target), mirror], target)
        return
    _run(["debootstrap", "--foreign", "--variant=minbase", include, "bookworm", str(target), mirror], target)
    unsafe_io = target / "etc/dpkg/dpkg.cfg.d/sgpfab-unsafe-io"
    unsafe_io.write_text("force-unsafe-io\n")
    _run(["chroot", str(target), "/debootstrap/debootstrap", "--second-stage"], target)
    unsafe_io.unlink()


def _run(cmd: list[str], target: Path) -> None:
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if r.returncode:
        tail = r.stderr.strip().splitlines()[-15:]
        log_file = target / "debootstrap/debootstrap.log"
        if log_file.exists():
            tail += log_file.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{cmd[0]} failed (rc {r.returncode}):\n" + "\n".join(tail))


def _remove(tree: Path) -> None:
    """rm -rf a (partial) rootfs, first unmounting /proc, /sys, /dev a dead bootstrap left mounted in it."""
    prefix = str(tree) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(tree, ignore_errors=True)


def _configure(root: Path) -> None:
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/sgpfab.conf").write_text(SSHD_SNIPPET)
    subprocess.run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "deploy"], check=True)
    (root / "etc/sudoers.d/deploy").write_text("deploy ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(root / "etc/sudoers.d/deploy", 0o440)
    # `systemctl disable` equivalent: drop every *.wants/ link to these units (undo: systemctl enable).
    for unit in DISABLED_UNITS:
        for link in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
            link.unlink()
    # No console gettys or network managers fighting for the netns; keep boots fast.
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # The cluster takes the next free port when 5432 is busy on the build machine (shared netns).
    conf = root / "etc/postgresql/15/main/postgresql.conf"
    text, n = re.subn(r"(?m)^port = \d+", "port = 5432", conf.read_text())
    if n != 1:
        raise RuntimeError(f"no port line in {conf}")
    conf.write_text(text)
    # Downloaded packages and package lists (debootstrap keeps them): hosts are offline anyway.
    for junk in [
        *(root / "var/cache/apt/archives").glob("*.deb"),
        *(root / "var/cache/apt").glob("*.bin"),
        *(p for p in (root / "var/lib/apt/lists").glob("*") if p.is_file() and p.name != "lock"),
    ]:
        junk.unlink()
    (root / "etc/machine-id").write_text("")
