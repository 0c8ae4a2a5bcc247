"""Bring a sandbox fleet of nspawn hosts up and down.

Each host is a real Debian system (systemd as PID 1, sshd) on an overlay of the cached base
rootfs, in its own network namespace joined to one bridge, with no default route (offline).
The fleet directory holds everything a client needs: ssh_config, known_hosts, a key, and an
inventory.yaml for sgpfab. State is kept in state.json so `down` works from another process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .rootfs import ensure_base

FLEETS_DIR = Path(os.environ.get("SGPFAB_SANDBOX_DIR", "/var/lib/sgpfab/sandbox"))
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SandboxHost:
    name: str
    ip: str
    netns: str
    veth: str
    dir: str
    pid: int = 0
    cgroups: list[str] = field(default_factory=list)


@dataclass
class Fleet:
    name: str
    dir: Path
    subnet: int
    bridge: str
    hosts: list[SandboxHost]

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yaml"

    def ip(self, host: str) -> str:
        return next(h.ip for h in self.hosts if h.name == host)

    def save(self) -> None:
        state = {"name": self.name, "subnet": self.subnet, "bridge": self.bridge,
                 "hosts": [asdict(h) for h in self.hosts]}
        (self.dir / "state.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, name: str) -> "Fleet | None":
        d = FLEETS_DIR / name
        try:
            s = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(s["name"], d, s["subnet"], s["bridge"], [SandboxHost(**h) for h in s["hosts"]])


def host_names(count: int) -> list[str]:
    """staging1 first, then prod1..prodN: a fleet shaped like a real one."""
    return ["staging1"] + [f"prod{i}" for i in range(1, count)]


def up(name: str = "demo", count: int = 3, subnet: int = 250, log=print) -> Fleet:
    """Boot `count` hosts and return the fleet (tearing down a stale fleet of that name first)."""
    if not (1 <= count <= 32) or not (0 <= subnet <= 255) or not name.isalnum() or len(name) > 8:
        raise ValueError("fleet name: 1-8 letters/digits; count 1-32; subnet octet 0-255")
    if os.geteuid() != 0:
        raise PermissionError("the sandbox fleet needs root (systemd-nspawn, netns, mounts)")
    down(name, log=lambda *_: None)
    base = ensure_base(log)
    d = FLEETS_DIR / name
    d.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(name, d, subnet, f"sgpb-{name}", [])
    for i, hn in enumerate(host_names(count), start=1):
        fleet.hosts.append(SandboxHost(hn, f"169.254.{subnet}.{10 + i}", f"sgp-{name}-{i}",
                                       f"sgpv{subnet}x{i}", str(d / hn)))
    fleet.save()
    try:
        _keypair(d)
        _sh(f"ip link add {fleet.bridge} type bridge && ip addr add 169.254.{subnet}.1/24 dev {fleet.bridge}"
            f" && ip link set {fleet.bridge} up")
        for h in fleet.hosts:
            _boot(fleet, h, base)
            fleet.save()
        _write_client_files(fleet)
        for h in fleet.hosts:
            _wait_ready(fleet, h)
        log(f"sandbox fleet {name!r} is up: " + ", ".join(f"{h.name}={h.ip}" for h in fleet.hosts))
    except BaseException:
        down(name, log=log)
        raise
    return fleet


def _keypair(d: Path) -> None:
    key = d / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgpfab-sandbox", "-f", str(key)],
                       check=True)


def _boot(fleet: Fleet, h: SandboxHost, base: Path) -> None:
    hd = Path(h.dir)
    for sub in ("upper", "work", "root"):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    _sh(f"mount -t overlay overlay -o lowerdir={base},upperdir={hd}/upper,workdir={hd}/work {hd}/root")
    root = hd / "root"
    (root / "etc/hostname").write_text(h.name + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {h.name}\n::1 localhost\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name,
                    "-f", str(root / "etc/ssh/ssh_host_ed25519_key")], check=True)
    pub = (fleet.dir / "id_ed25519.pub").read_text()
    uid, gid = _passwd_ids(root, "deploy")
    for home, (u, g) in ((root / "root", (0, 0)), (root / "home/deploy", (uid, gid))):
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "authorized_keys").write_text(pub)
        for p in (ssh, ssh / "authorized_keys"):
            os.chown(p, u, g)
    _sh(f"ip netns add {h.netns} && ip link add {h.veth} type veth peer name eth0 netns {h.netns}"
        f" && ip link set {h.veth} master {fleet.bridge} up"
        f" && ip -n {h.netns} addr add {h.ip}/24 dev eth0 && ip -n {h.netns} link set eth0 up"
        f" && ip -n {h.netns} link set lo up")
    h.cgroups = _cgroup_dirs(fleet.name, h.name)
    moves = "".join(f"mkdir -p {c} && echo $$ > {c}/cgroup.procs && " for c in h.cgroups)
    logf = open(hd / "console.log", "wb")
    proc = subprocess.Popen(
        ["bash", "-c", moves + f"exec systemd-nspawn -q -b -D {root} -M sgp{fleet.name}{h.name}"
         f" --network-namespace-path=/run/netns/{h.netns} --register=no --keep-unit --console=passive"],
        stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    h.pid = proc.pid


def _cgroup_dirs(fleet: str, host: str) -> list[str]:
    """Own cgroups per container, so containers do not see each other's units."""
    out = []
    for ctrl in ("systemd", "unified"):
        if Path(f"/sys/fs/cgroup/{ctrl}").is_dir():
            out.append(f"/sys/fs/cgroup/{ctrl}/sgpfab-{fleet}/{host}")
    mem = ""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            mem = path.rstrip("/")
    if Path("/sys/fs/cgroup/memory").is_dir():
        out.append(f"/sys/fs/cgroup/memory{mem}/sgpfab-{fleet}-{host}")
    return out


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2]), int(f[3])
    raise RuntimeError(f"user {user} missing from the base rootfs")


def _write_client_files(fleet: Fleet) -> None:
    d = fleet.dir
    kh, cfg = [], []
    for h in fleet.hosts:
        key = (Path(h.dir) / "root/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        kh.append(f"{h.ip} {key[0]} {key[1]}")
        cfg.append(
            f"Host {h.name}\n  HostName {h.ip}\n  User deploy\n  IdentityFile {d}/id_ed25519\n"
            f"  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n"
            f"  BatchMode yes\n  ConnectTimeout 5\n"
        )
    fleet.known_hosts.write_text("\n".join(kh) + "\n")
    fleet.ssh_config.write_text("\n".join(cfg))
    names = [h.name for h in fleet.hosts]
    inventory = {
        "ssh_config": "ssh_config",
        "known_hosts": "known_hosts",
        "defaults": {"os": "linux", "user": "deploy", "api_root": "/srv/sgp-api", "service": "sgp-api",
                     "port": 8000},
        "hosts": {n: None for n in names},
        "groups": {"staging": names[:1], "prod": names[1:]} if len(names) > 1 else {"staging": names},
        "app": {"source": str(PROJECT_ROOT / "examples" / "sgp_api"), "migrate": "python scripts/migrate.py"},
    }
    fleet.inventory.write_text("# written by sgpfab sandbox\n" + yaml.safe_dump(inventory, sort_keys=False))


def _wait_ready(fleet: Fleet, h: SandboxHost, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["ssh", "-F", str(fleet.ssh_config), h.name, "systemctl is-system-running --wait"],
                           capture_output=True, text=True, timeout=timeout)
        if r.stdout.strip() in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sandbox host {h.name} did not boot: {r.stdout.strip()} {r.stderr.strip()}")
        time.sleep(0.5)


def down(name: str = "demo", log=print) -> None:
    """Stop every host of the fleet and remove its netns, mounts, cgroups and bridge. Idempotent."""
    fleet = Fleet.load(name)
    if fleet is None:
        return
    for h in fleet.hosts:
        if h.pid:
            try:
                os.kill(h.pid, signal.SIGTERM)  # nspawn turns this into an orderly halt
            except ProcessLookupError:
                pass
    for h in fleet.hosts:
        if h.pid and not _wait_gone(h.pid, 20):
            try:
                os.kill(h.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_gone(h.pid, 5)
        subprocess.run(["ip", "netns", "del", h.netns], capture_output=True)
        subprocess.run(["umount", "-l", f"{h.dir}/root"], capture_output=True)
        subprocess.run(["rm", "-rf", h.dir], capture_output=True)
        for c in reversed(h.cgroups):
            _rmdir_tree(Path(c))
    subprocess.run(["ip", "link", "del", fleet.bridge], capture_output=True)
    for ctrl in ("systemd", "unified"):
        _rmdir_tree(Path(f"/sys/fs/cgroup/{ctrl}/sgpfab-{name}"))
    (fleet.dir / "state.json").unlink(missing_ok=True)
    log(f"sandbox fleet {name!r} is down")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.2)
    return False


def _rmdir_tree(p: Path) -> None:
    """Remove an (empty of processes) cgroup directory tree, depth first."""
    if not p.is_dir():
        return
    for child in sorted((c for c in p.rglob("*") if c.is_dir()), key=lambda c: len(c.parts), reverse=True):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        p.rmdir()
    except OSError:
        pass


def _sh(cmd: str) -> None:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"sandbox: {cmd!r} failed: {r.stderr.strip()}")
