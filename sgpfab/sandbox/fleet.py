"""Bring a sandbox fleet of nspawn hosts up and down, and turn PostgreSQL on for a host on demand.

Each host is a real Debian system (systemd as PID 1, sshd) on an overlay of the cached base
rootfs, in its own network namespace joined to one bridge, with no default route (offline).
The fleet directory holds everything a client needs: ssh_config, known_hosts, a key, and an
inventory.yaml for sgpfab. State is kept in state.json so `down` works from another process;
`down` also finds what a crashed `up` left behind by name (processes, netns, mounts, cgroups,
bridge), so it cleans up even without state.

Several fleets can be up at once when their names and subnets differ (`up` refuses a subnet that
another fleet holds). All hosts share the machine's root inotify budget; `up` raises
fs.inotify.max_user_instances/max_user_watches when they are too low for all hosts that will run.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .rootfs import ensure_base

DEFAULT_FLEETS_DIR = Path("/var/lib/sgpfab/sandbox")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_HOSTS = 32
PG_PORT = 5432
PG_VERSION, PG_CLUSTER = "15", "main"
PG_UNIT = f"postgresql@{PG_VERSION}-{PG_CLUSTER}.service"
INOTIFY = Path("/proc/sys/fs/inotify")
# A booted host's systemd, journald, logind and dbus hold ~7 inotify instances and ~25 watches
# (measured); the budget leaves room for apps and for the host machine's own processes.
INOTIFY_BASE = {"max_user_instances": 256, "max_user_watches": 65536}
INOTIFY_PER_HOST = {"max_user_instances": 16, "max_user_watches": 2048}
INOTIFY_FLOOR = {"max_user_instances": 1024}


def fleets_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where fleets keep their files: $SGPFAB_SANDBOX_DIR, else /var/lib/sgpfab/sandbox."""
    env = os.environ if env is None else env
    return Path(env["SGPFAB_SANDBOX_DIR"]) if env.get("SGPFAB_SANDBOX_DIR") else DEFAULT_FLEETS_DIR


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

    @property
    def network(self) -> str:
        return f"169.254.{self.subnet}.0/24"

    def ip(self, host: str) -> str:
        return self.host(host).ip

    def host(self, name: str) -> SandboxHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"sandbox fleet {self.name!r} has no host {name!r}")

    def save(self) -> None:
        state = {
            "name": self.name,
            "subnet": self.subnet,
            "bridge": self.bridge,
            "hosts": [asdict(h) for h in self.hosts],
        }
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.rename(self.dir / "state.json")

    @classmethod
    def load(cls, name: str) -> Fleet | None:
        d = fleets_dir() / name
        try:
            s = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(s["name"], d, s["subnet"], s["bridge"], [SandboxHost(**h) for h in s["hosts"]])


def host_names(count: int) -> list[str]:
    """staging1 first, then prod1..prodN: a fleet shaped like a real one."""
    return ["staging1"] + [f"prod{i}" for i in range(1, count)]


def check_args(name: str, count: int, subnet: int) -> None:
    if not (isinstance(name, str) and name.isascii() and name.isalnum() and 1 <= len(name) <= 8):
        raise ValueError(f"fleet name must be 1-8 letters/digits, not {name!r}")
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"a sandbox fleet has 1-{MAX_HOSTS} hosts, not {count}")
    if not 0 <= subnet <= 255:
        raise ValueError(f"subnet is the third octet of 169.254.X.0/24 (0-255), not {subnet}")


def inotify_targets(current: Mapping[str, int], hosts: int) -> dict[str, int]:
    """The fs.inotify limits to raise (name -> new value) so `hosts` sandbox hosts can run at once.

    Only raises: a limit already at or above what is needed is left alone (absent from the result).
    """
    out = {}
    for key, base in INOTIFY_BASE.items():
        need = max(base + INOTIFY_PER_HOST[key] * hosts, INOTIFY_FLOOR.get(key, 0))
        if current.get(key, 0) < need:
            out[key] = need
    return out


def raise_inotify_limits(hosts: int, log: Callable[[str], object] = print) -> dict[str, int]:
    current = {key: int((INOTIFY / key).read_text()) for key in INOTIFY_BASE}
    changes = inotify_targets(current, hosts)
    for key, value in changes.items():
        try:
            (INOTIFY / key).write_text(f"{value}\n")
        except OSError as e:
            raise RuntimeError(
                f"cannot raise fs.inotify.{key} to {value} for {hosts} sandbox hosts ({e});"
                f" run: sysctl -w fs.inotify.{key}={value}"
            ) from e
        log(f"sandbox: fs.inotify.{key} {current[key]} -> {value} (for {hosts} hosts)")
    return changes


def subnet_holder(subnet: int, name: str, fleets: Mapping[str, int], addresses: list[str]) -> str | None:
    """Who already uses 169.254.`subnet`.0/24, if anyone but fleet `name`: a fleet name or an address.

    fleets: the subnet of every other fleet that has state; addresses: "ifname addr/len" of this machine.
    """
    for other, sub in fleets.items():
        if other != name and sub == subnet:
            return f"sandbox fleet {other!r}"
    for a in addresses:
        ifname, _, addr = a.partition(" ")
        if ifname != f"sgpb-{name}" and addr.startswith(f"169.254.{subnet}."):
            return f"interface {ifname} ({addr})"
    return None


def _other_fleets(name: str) -> dict[str, Fleet]:
    out = {}
    d = fleets_dir()
    for state in sorted(d.glob("*/state.json")) if d.is_dir() else []:
        other = state.parent.name
        if other != name and (f := Fleet.load(other)) is not None:
            out[other] = f
    return out


def up(name: str = "demo", count: int = 3, subnet: int = 250, log: Callable[[str], object] = print) -> Fleet:
    """Boot `count` hosts and return the fleet (tearing down a stale fleet of that name first).

    All hosts boot at once; returns when each answers `systemctl is-system-running` over ssh.
    """
    check_args(name, count, subnet)
    if os.geteuid() != 0:
        raise PermissionError("the sandbox fleet needs root (systemd-nspawn, netns, mounts)")
    base = ensure_base(log)
    d = fleets_dir() / name
    d.mkdir(parents=True, exist_ok=True)
    with open(d.parent / ".lock", "w") as lock:  # fleets claim subnets one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        down(name, log=lambda *_: None)
        d.mkdir(parents=True, exist_ok=True)  # down() removes the fleet's directory
        others = _other_fleets(name)
        addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
        holder = subnet_holder(
            subnet,
            name,
            {n: f.subnet for n, f in others.items()},
            [f"{w[1]} {w[3]}" for w in map(str.split, addrs.splitlines()) if len(w) > 3],
        )
        if holder:
            raise ValueError(f"subnet 169.254.{subnet}.0/24 is taken by {holder}; choose another --subnet")
        raise_inotify_limits(count + sum(len(f.hosts) for f in others.values()), log)
        fleet = Fleet(name, d, subnet, f"sgpb-{name}", [])
        for i, hn in enumerate(host_names(count), start=1):
            fleet.hosts.append(
                SandboxHost(hn, f"169.254.{subnet}.{10 + i}", f"sgp-{name}-{i}", f"sgpv{subnet}x{i}", str(d / hn))
            )
        fleet.save()
    try:
        _keypair(d)
        _sh(
            f"ip link add {fleet.bridge} type bridge && ip addr add 169.254.{subnet}.1/24 dev {fleet.bridge}"
            f" && ip link set {fleet.bridge} up"
        )
        pub = (d / "id_ed25519.pub").read_text()
        # ~40 ms of work per host: done before any boot starts competing for the CPU. The first
        # host alone, so that only one `ip netns add` sets up /run/netns if it is not there yet.
        _prepare(fleet, fleet.hosts[0], base, pub)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in pool.map(lambda h: _prepare(fleet, h, base, pub), fleet.hosts[1:]):
                pass
        _write_client_files(fleet)
        procs = {}
        for h in fleet.hosts:
            procs[h.name] = _launch(fleet, h)
            fleet.save()
        timeout = 60 + 4 * count  # 2 cores boot ~1 host/s
        with ThreadPoolExecutor(max_workers=count) as pool:
            waits = [pool.submit(_wait_ready, fleet, h, procs[h.name], timeout) for h in fleet.hosts]
            errors = [str(e) for w in waits if (e := w.exception()) is not None]
        if errors:
            raise RuntimeError("; ".join(errors))
        log(f"sandbox fleet {name!r} is up: " + ", ".join(f"{h.name}={h.ip}" for h in fleet.hosts))
    except BaseException:
        down(name, log=log)
        raise
    return fleet


def _keypair(d: Path) -> None:
    key = d / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgpfab-sandbox", "-f", str(key)], check=True
        )


def _prepare(fleet: Fleet, h: SandboxHost, base: Path, pub: str) -> None:
    """Overlay root with its own host key and authorized keys, and the host's network namespace."""
    hd = Path(h.dir)
    for sub in ("upper", "work", "root"):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    _sh(f"mount -t overlay overlay -o lowerdir={base},upperdir={hd}/upper,workdir={hd}/work {hd}/root")
    root = hd / "root"
    (root / "etc/hostname").write_text(h.name + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {h.name}\n::1 localhost\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", str(root / "etc/ssh/ssh_host_ed25519_key")],
        check=True,
    )
    uid, gid = _passwd_ids(root, "deploy")
    for home, (u, g) in ((root / "root", (0, 0)), (root / "home/deploy", (uid, gid))):
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "authorized_keys").write_text(pub)
        for p in (ssh, ssh / "authorized_keys"):
            os.chown(p, u, g)
    _sh(
        f"ip netns add {h.netns} && ip link add {h.veth} type veth peer name eth0 netns {h.netns}"
        f" && ip link set {h.veth} master {fleet.bridge} up"
        f" && ip -n {h.netns} addr add {h.ip}/24 dev eth0 && ip -n {h.netns} link set eth0 up"
        f" && ip -n {h.netns} link set lo up"
    )


def _launch(fleet: Fleet, h: SandboxHost) -> subprocess.Popen[bytes]:
    """Start the container (returns at once): own cgroups first, then exec systemd-nspawn."""
    hd = Path(h.dir)
    h.cgroups = _cgroup_dirs(fleet.name, h.name)
    moves = "".join(f"mkdir -p {c} && echo $$ > {c}/cgroup.procs && " for c in h.cgroups)
    with open(hd / "console.log", "wb") as logf:
        proc = subprocess.Popen(
            [
                "bash",
                "-c",
                moves + f"exec systemd-nspawn -q -b -D {hd / 'root'} -M {_machine(fleet.name, h.name)}"
                f" --network-namespace-path=/run/netns/{h.netns} --register=no --keep-unit --console=passive",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    h.pid = proc.pid
    return proc


def _machine(fleet: str, host: str) -> str:
    return f"sgp{fleet}{host}"


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
        "defaults": {"os": "linux", "user": "deploy"},
        "hosts": {n: None for n in names},
        "groups": {"staging": names[:1], "prod": names[1:]} if len(names) > 1 else {"staging": names},
        "apps": example_apps(),
    }
    fleet.inventory.write_text("# written by sgpfab sandbox\n" + yaml.safe_dump(inventory, sort_keys=False))


def example_apps() -> dict[str, Any]:
    """The apps of the project's example inventory (hosts/fleet.yaml), sources made absolute."""
    path = PROJECT_ROOT / "hosts" / "fleet.yaml"
    if not path.is_file():  # sgpfab installed as a package: no example apps around
        return {}
    apps = (yaml.safe_load(path.read_text()) or {}).get("apps") or {}
    for app in apps.values():
        app["source"] = str((path.parent / app["source"]).resolve())
    return apps


def _wait_ready(fleet: Fleet, h: SandboxHost, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Wait for sshd to listen (a bare TCP connect: no ssh process per poll, which would cost more CPU
    than the boots at 32 hosts), then for `systemctl is-system-running --wait` over ssh."""
    deadline = time.monotonic() + timeout
    last = "sshd is not listening"
    listening = False
    while True:
        if proc.poll() is not None:
            tail = (Path(h.dir) / "console.log").read_text(errors="replace").strip().splitlines()[-10:]
            raise RuntimeError(
                f"sandbox host {h.name}: systemd-nspawn exited with {proc.returncode}: " + " | ".join(tail)
            )
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"sandbox host {h.name} did not boot within {timeout:.0f} s: {last}")
        if not listening:
            try:
                socket.create_connection((h.ip, 22), timeout=min(left, 2)).close()
                listening = True
            except OSError:
                time.sleep(0.2)
            continue
        try:
            r = subprocess.run(
                ["ssh", "-F", str(fleet.ssh_config), h.name, "systemctl is-system-running --wait"],
                capture_output=True,
                text=True,
                timeout=left,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            continue
        state = r.stdout.strip()
        if state in ("running", "degraded"):
            return
        last = f"{state} {r.stderr.strip()}".strip()
        time.sleep(0.5)


def down(name: str = "demo", log: Callable[[str], object] = print) -> None:
    """Stop every host of the fleet and remove its netns, mounts, cgroups and bridge. Idempotent.

    Works from the saved state and from what it finds by name, so it also clears what an `up` that
    failed (or was killed) halfway left behind.
    """
    if not (name.isascii() and name.isalnum()):
        raise ValueError(f"fleet name must be letters/digits, not {name!r}")
    d = fleets_dir() / name
    fleet = Fleet.load(name)
    hosts = fleet.hosts if fleet else []
    found = False

    # 1. containers: saved pids still running nspawn on this fleet's dir, and any others on it
    pids = _nspawn_pids(d)
    found |= bool(pids)
    for pid in pids:
        _signal(pid, signal.SIGTERM)  # nspawn turns this into an orderly halt
    left = _wait_all_gone(pids, 20)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    _wait_all_gone(left, 5)

    # 2. network namespaces (their eth0 peers take the host-side veths with them), then the bridge
    ns_re = re.compile(rf"sgp-{name}-\d+")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout.split()
    for ns in sorted({h.netns for h in hosts} | {n for n in listed if ns_re.fullmatch(n)}):
        r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        found |= r.returncode == 0
    for h in hosts:  # a veth whose netns step failed
        subprocess.run(["ip", "link", "del", h.veth], capture_output=True, check=False)
    r = subprocess.run(["ip", "link", "del", f"sgpb-{name}"], capture_output=True, check=False)
    found |= r.returncode == 0

    # 3. overlay mounts under the fleet dir, then the host dirs
    mounted = _mounts_under(d)
    found |= bool(mounted)
    for point in mounted:
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    still = set(_mounts_under(d))
    host_dirs = {d / h.name for h in hosts} | {p.parent for p in d.glob("*/upper")}
    for hd in sorted(host_dirs):
        if str(hd / "root") in still:
            log(f"sandbox: {hd}/root is still mounted; leaving {hd}")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(hd)], capture_output=True, check=False)

    # 4. cgroups (depth first; a cgroup goes only once its processes are gone)
    groups = {Path(c) for h in hosts for c in h.cgroups}
    groups |= {Path(f"/sys/fs/cgroup/{ctrl}/sgpfab-{name}") for ctrl in ("systemd", "unified")}
    groups |= set(_memory_cgroups(name))
    for _attempt in range(10):
        for g in sorted(groups, key=lambda p: len(p.parts), reverse=True):
            _rmdir_tree(g)
        if not any(g.exists() for g in groups):
            break
        time.sleep(0.3)
    for g in groups:
        if g.exists():
            log(f"sandbox: cgroup {g} is still busy; left in place")

    for f in ("state.json", "state.json.tmp"):
        (d / f).unlink(missing_ok=True)
    if not still and d.is_dir():  # the fleet's private key, ssh_config and inventory go too
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], capture_output=True, check=False)
    if fleet is not None or found:
        log(f"sandbox fleet {name!r} is down")


def _nspawn_pids(fleet_dir: Path) -> list[int]:
    """systemd-nspawn processes whose root is under `fleet_dir` (by /proc/<pid>/cmdline)."""
    prefix = str(fleet_dir) + "/"
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if args[0].endswith("systemd-nspawn"):
            if any(a == "-D" and args[i + 1 : i + 2] and args[i + 1].startswith(prefix) for i, a in enumerate(args)):
                out.append(int(p.name))
        elif args[:2] == ["bash", "-c"] and len(args) > 2 and f"exec systemd-nspawn -q -b -D {prefix}" in args[2]:
            out.append(int(p.name))  # launched a moment ago, not yet exec'd into nspawn
    return out


def _mounts_under(d: Path) -> list[str]:
    """Mount points under `d`, deepest first."""
    prefix = str(d) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _memory_cgroups(name: str) -> list[Path]:
    """The fleet's memory cgroups: children `sgpfab-<name>-<host>` of whatever cgroup launched them."""
    root = Path("/sys/fs/cgroup/memory")
    if not root.is_dir():
        return []
    pattern = re.compile(rf"sgpfab-{name}-(staging|prod)\d+")
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        for dn in list(dirnames):
            if pattern.fullmatch(dn):
                out.append(Path(dirpath) / dn)
                dirnames.remove(dn)
        if depth >= 3:
            dirnames.clear()
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_all_gone(pids: list[int], timeout: float) -> list[int]:
    """Reap/poll until the processes are gone; return those still alive after `timeout`."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.discard(pid)
                    continue
            except ChildProcessError:  # not our child: poll for existence instead
                pass
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                left.discard(pid)
        if left:
            time.sleep(0.2)
    return sorted(left)


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
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    if r.returncode:
        raise RuntimeError(f"sandbox: {cmd!r} failed: {r.stderr.strip()}")


# ---------------------------------------------------------------------------------------------
# Commands on hosts, PostgreSQL on demand


def _as_fleet(fleet: Fleet | str) -> Fleet:
    if isinstance(fleet, Fleet):
        return fleet
    f = Fleet.load(fleet)
    if f is None:
        raise RuntimeError(f"no sandbox fleet named {fleet!r} is up")
    return f


def ssh(
    fleet: Fleet | str, host: str, command: str, input: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `command` (a shell string) on a fleet host as the deploy user; `input` goes to its stdin."""
    f = _as_fleet(fleet)
    f.host(host)
    r = subprocess.run(
        ["ssh", "-F", str(f.ssh_config), host, command],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and r.returncode:
        raise RuntimeError(
            f"{host}: {command.splitlines()[0][:80]!r} failed (rc {r.returncode}): {(r.stderr or r.stdout).strip()}"
        )
    return r


def postgres_script(ip: str, network: str, listen_all: bool) -> str:
    """The root shell script that configures and starts cluster 15/main (idempotent)."""
    conf = f"/etc/postgresql/{PG_VERSION}/{PG_CLUSTER}"
    listen = f"localhost,{ip}" if listen_all else "localhost"
    hba = f"host all all {network} scram-sha-256"
    q = shlex.quote(hba)
    if listen_all:
        hba_step = f"grep -qxF {q} {conf}/pg_hba.conf || {{ echo {q} >> {conf}/pg_hba.conf; changed=1; }}"
    else:
        hba_step = (
            f'if grep -qxF {q} {conf}/pg_hba.conf; then sed -i "\\#^{hba}\\$#d" {conf}/pg_hba.conf; changed=1; fi'
        )
    return f"""set -eu
changed=0
line={shlex.quote(f"listen_addresses = '{listen}'  # sgpfab sandbox")}
f={conf}/conf.d/sgpfab-listen.conf
if [ "$(cat "$f" 2>/dev/null)" != "$line" ]; then
  printf '%s\\n' "$line" > "$f"; chown postgres:postgres "$f"; changed=1
fi
{hba_step}
systemctl unmask -q postgresql.service {PG_UNIT} 2>/dev/null || true
systemctl enable -q postgresql.service
if systemctl is-active -q {PG_UNIT}; then
  if [ "$changed" = 1 ]; then systemctl restart {PG_UNIT}; fi
else
  systemctl start {PG_UNIT}
fi
for i in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p {PG_PORT} && break; sleep 0.5; done
pg_isready -h 127.0.0.1 -p {PG_PORT}
"""


def enable_postgres(fleet: Fleet | str, host_name: str, listen_all: bool = False) -> dict[str, Any]:
    """Start PostgreSQL 15 (cluster 15/main, off in the image) on one host and return how to reach it.

    listen_all: also listen on the host's sandbox IP and accept password (scram-sha-256) logins
    from the fleet's subnet, so other hosts of the fleet can connect. Calling it again with the
    other setting reconfigures (and restarts) the cluster.

    Returns {"host", "ip", "port", "address" (what a client uses: the sandbox IP when listen_all,
    else 127.0.0.1 on the host itself), "listen_all", "allowed_network", "version", "cluster", "unit"}.
    """
    f = _as_fleet(fleet)
    h = f.host(host_name)
    ssh(f, host_name, "sudo bash -s", input=postgres_script(h.ip, f.network, listen_all))
    return {
        "host": h.name,
        "ip": h.ip,
        "port": PG_PORT,
        "address": h.ip if listen_all else "127.0.0.1",
        "listen_all": listen_all,
        "allowed_network": f.network if listen_all else None,
        "version": PG_VERSION,
        "cluster": PG_CLUSTER,
        "unit": PG_UNIT,
    }


_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def scram_sha256(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier for `password` (what `\\password` in psql sends).

    Exact for ASCII passwords (SASLprep leaves them alone); callers send others in plain text.
    """
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64: Callable[[bytes], str] = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def _literal(s: str) -> str:
    if "\0" in s:
        raise ValueError("a NUL byte cannot be in a PostgreSQL string")
    return "'" + s.replace("'", "''") + "'"


def create_database_sql(dbname: str, user: str, password: str) -> str:
    """psql input that creates (or updates) login role `user` with `password` and database `dbname`
    owned by it. Idempotent. The password goes in as a SCRAM verifier when it is ASCII."""
    for what, v in (("database", dbname), ("role", user)):
        if not _IDENT.fullmatch(v):
            raise ValueError(f"{what} name must match [a-z_][a-z0-9_]* (max 63), not {v!r}")
    secret = scram_sha256(password) if password.isascii() else password
    return (  # names are checked above, so "quoted" identifiers and 'literals' need no escaping
        "\\set ON_ERROR_STOP on\n"
        f"""SELECT 'CREATE ROLE "{user}" LOGIN' WHERE NOT EXISTS """
        f"(SELECT FROM pg_roles WHERE rolname = '{user}')\\gexec\n"
        f"""ALTER ROLE "{user}" WITH LOGIN PASSWORD {_literal(secret)};\n"""
        f"""SELECT 'CREATE DATABASE "{dbname}" OWNER "{user}"' WHERE NOT EXISTS """
        f"(SELECT FROM pg_database WHERE datname = '{dbname}')\\gexec\n"
        f"""ALTER DATABASE "{dbname}" OWNER TO "{user}";\n"""
    )


def create_database(fleet: Fleet | str, host_name: str, dbname: str, user: str, password: str) -> dict[str, Any]:
    """Create database `dbname` owned by login role `user` (password `password`) on a host whose
    PostgreSQL is on (see enable_postgres). Runs `sudo -u postgres psql` with the SQL on stdin, so
    the password is on no command line. Idempotent (an existing role gets the new password).

    Returns {"host", "ip", "port", "dbname", "user", "dsn" (by sandbox IP, for other hosts when
    listen_all), "local_dsn" (127.0.0.1, on the host itself)}; no password.
    """
    f = _as_fleet(fleet)
    h = f.host(host_name)
    sql = create_database_sql(dbname, user, password)
    ssh(f, host_name, "cd / && sudo -u postgres psql -X -q -d postgres", input=sql)
    return {
        "host": h.name,
        "ip": h.ip,
        "port": PG_PORT,
        "dbname": dbname,
        "user": user,
        "dsn": f"host={h.ip} port={PG_PORT} dbname={dbname} user={user}",
        "local_dsn": f"host=127.0.0.1 port={PG_PORT} dbname={dbname} user={user}",
    }


def pgpass_line(db: Mapping[str, object], password: str, host: str = "*") -> str:
    """A ~/.pgpass line for `db` (a create_database result); `host` * matches any address."""
    if "\n" in password or "\r" in password:
        raise ValueError("a .pgpass password cannot contain a line break")
    esc: Callable[[object], str] = lambda v: str(v).replace("\\", "\\\\").replace(":", "\\:")
    return ":".join(esc(v) for v in (host, db["port"], db["dbname"], db["user"], password)) + "\n"


def write_pgpass(
    fleet: Fleet | str, host_name: str, db: Mapping[str, object], password: str, path: str = ".pgpass"
) -> str:
    """Write a 0600 passfile for `db` on a host (as the deploy user; `path` relative to its home).
    Use it with PGPASSFILE=<returned path> (or as ~/.pgpass). The password travels on stdin."""
    q = shlex.quote(path)
    r = ssh(
        fleet,
        host_name,
        f"umask 077 && cat > {q}.tmp && mv -f {q}.tmp {q} && readlink -f {q}",
        input=pgpass_line(db, password),
    )
    return r.stdout.strip()
