"""Build (once) and cache the base Debian root filesystem the sandbox hosts boot from."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

BASE_CACHE = Path(os.environ.get("SGPFAB_SANDBOX_CACHE", "/var/cache/sgpfab"))
ROOTFS_REVISION = "bookworm-1"  # bump when the recipe below changes
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-venv",
    "rsync", "curl", "iproute2", "ca-certificates", "sudo",
]
SSHD_SNIPPET = """\
# sgpfab sandbox host
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
"""


def base_path() -> Path:
    return BASE_CACHE / f"rootfs-{ROOTFS_REVISION}"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (hosts are built from the same one)."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S*/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S*/debian)\s+bookworm\b", text, re.M
        )
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def ensure_base(log=print) -> Path:
    """Return the cached base rootfs, building it with debootstrap first if needed."""
    base = base_path()
    if (base / ".sgpfab-complete").exists():
        return base
    BASE_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(base.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"building the sandbox base rootfs at {base} (once, about a minute)...")
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
         "bookworm", str(tmp), debian_mirror()],
        check=True, stdout=subprocess.DEVNULL,
    )
    _configure(tmp)
    (tmp / ".sgpfab-complete").write_text(ROOTFS_REVISION + "\n")
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    return base


def _configure(root: Path) -> None:
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/sgpfab.conf").write_text(SSHD_SNIPPET)
    subprocess.run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "deploy"], check=True)
    (root / "etc/sudoers.d/deploy").write_text("deploy ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(root / "etc/sudoers.d/deploy", 0o440)
    # No console gettys or network managers fighting for the netns; keep boots fast.
    for unit in ["console-getty.service", "getty@tty1.service", "systemd-networkd-wait-online.service"]:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (root / "etc/machine-id").write_text("")
