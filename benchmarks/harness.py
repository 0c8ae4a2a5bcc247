"""Building blocks of benchmarks/bench.py: app slots on a sandbox fleet, `fab` runs measured
from the outside (wall, rusage, bytes on the hosts' veth interfaces, SSH operations), and a load
generator that records every request.

Nothing here changes sgpfab: every operation is the real `fab` command in a subprocess, as a
user would run it. The only addition is benchmarks/fab_counted.py, which starts Fabric's
`fab` program exactly like the `fab` script does after wrapping a few library calls (paramiko
channel execs, SFTP requests, subprocess spawns) with counters.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
FAB = str(Path(sys.executable).with_name("fab"))
COUNTED = str(BENCH / "fab_counted.py")
# The example apps' secrets (the same names as tests/e2e/conftest.py uses; any value works).
SECRETS = {
    "SGPFAB_SECRET_TASKS_SECRET_KEY": "tasks-bench-secret-Zq9",
    "SGPFAB_SECRET_BLOG_SECRET_KEY": "blog-bench-s3cret",
}
PROTECTED_FLEETS = ("pytest", "demo", "proto", "dbg")  # and sbx*: other people's fleets
HEALTH_PATH = {"sgp": "/health", "tasks": "/healthz", "blog": "/"}
# Where a one-line change goes, and where a slow start goes (a module every web process imports).
CHANGE_FILE = {"sgp": "sgp_api/main.py", "tasks": "tasks_app/views.py", "blog": "blog_site/urls.py"}
SLOW_FILE = {"sgp": "sgp_api/main.py", "tasks": "tasks_app/__init__.py", "blog": "blog_site/wsgi.py"}
SERVER = {"sgp": "uvicorn (ASGI)", "tasks": "gunicorn (WSGI)", "blog": "gunicorn (WSGI)"}


class BenchError(RuntimeError):
    pass


# Python bytecode for the fab processes. This machine sets PYTHONDONTWRITEBYTECODE=1 and its venv
# holds no .pyc files, so every `fab` would compile paramiko, fabric, pydantic, rich and sgpfab
# from source (~2 s of CPU) at each start: not what a user's controller does. Bytecode is cached
# under BYTECODE_PREFIX instead (PYTHONPYCACHEPREFIX: neither the venv nor the repo changes).
BYTECODE_PREFIX: Path | None = None
EMPTY_PREFIX: Path | None = None


def python_env(env: dict, bytecode: str = "cached") -> dict:
    """`env` for a fab process: bytecode 'cached' (under BYTECODE_PREFIX), 'none' (compiled from
    source at every start: an empty prefix and PYTHONDONTWRITEBYTECODE=1) or 'as-is'."""
    env = dict(env)
    if bytecode == "cached" and BYTECODE_PREFIX is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BYTECODE_PREFIX)
    elif bytecode == "none" and EMPTY_PREFIX is not None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPYCACHEPREFIX"] = str(EMPTY_PREFIX)
    return env


def protected(name: str) -> bool:
    return name in PROTECTED_FLEETS or name.startswith("sbx")


def pick_subnet(sandbox, name: str, preferred: int) -> int:
    """The first free 169.254.X.0/24 from `preferred` downwards (another fleet or interface may hold one)."""
    fleets = {}
    d = sandbox.fleets_dir()
    for state in sorted(d.glob("*/state.json")) if d.is_dir() else []:
        try:
            fleets[state.parent.name] = json.loads(state.read_text())["subnet"]
        except (OSError, ValueError, KeyError):
            pass
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    addrs = [f"{w[1]} {w[3]}" for w in map(str.split, out.splitlines()) if len(w) > 3]
    for subnet in [preferred] + [s for s in range(preferred - 1, 199, -1)]:
        if sandbox.subnet_holder(subnet, name, fleets, addrs) is None:
            return subnet
    raise BenchError("no free sandbox subnet between 200 and the preferred one")


# ---------------------------------------------------------------------------------------------
# App sources: the examples, a one-line change, a slow start


def make_source(scratch: Path, kind: str, name: str, slow: bool = False, change: int = 0) -> Path:
    """A copy of example `kind` in scratch/src/NAME: with `slow`, 4 s of sleep at import in a
    module the web process imports; with `change` N > 0, a one-line change (comment N appended)."""
    apps = yaml.safe_load((ROOT / "hosts" / "fleet.yaml").read_text())["apps"]
    src = (ROOT / "hosts" / apps[kind]["source"]).resolve()
    d = scratch / "src" / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("__pycache__", ".venv", "*.db", "instance"))
    if slow:
        with open(d / SLOW_FILE[kind], "a") as f:
            f.write("\nimport time as _bench_time  # benchmark: a slow-starting app\n_bench_time.sleep(4)\n")
    if change:
        with open(d / CHANGE_FILE[kind], "a") as f:
            f.write(f"\n# a one-line change ({change})\n")
    return d


# ---------------------------------------------------------------------------------------------
# Measured fab runs


def net_counters(fleet, hosts: list[str]) -> dict[str, tuple[int, int]]:
    """Per host: (bytes the bridge sent TO the host, bytes it received FROM the host), read on the
    host-side veth's bridge end: tx_bytes is what went to the container, SSH and TCP included."""
    out = {}
    for name in hosts:
        base = Path("/sys/class/net") / fleet.host(name).veth / "statistics"
        out[name] = (int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text()))
    return out


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def fleet_cpu_s(fleet) -> float | None:
    """CPU seconds used so far by every process in the fleet's containers (their cgroup)."""
    if fleet is None:
        return None
    try:
        text = Path(f"/sys/fs/cgroup/unified/sgpfab-{fleet.name}/cpu.stat").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "usage_usec":
            return int(v) / 1e6
    return None


@dataclass
class FabRun:
    label: str
    argv: list[str]
    hosts: list[str]
    rc: int
    wall_s: float
    cpu_s: float  # user + system, fab and every process it waited for (ssh, rsync, uv, ...)
    cpu_user_s: float
    cpu_sys_s: float
    maxrss_mb: float  # the largest resident set of fab or any one of its children
    net_to_host: dict[str, int]
    net_from_host: dict[str, int]
    started: float  # time.monotonic() at start
    ended: float
    fleet_cpu_s: float | None = None  # the containers' CPU meanwhile (sshd, hostctl, uv, the apps...)
    other_cpu_s: float | None = (
        None  # the rest of the machine meanwhile (noise), the benchmark's own load client excluded
    )
    summary: dict | None = None  # fab's --json document
    counts: dict | None = None  # from fab_counted.py: execs, SFTP requests, spawns, rusage of fab itself
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def outcomes(self) -> list[dict]:
        return (self.summary or {}).get("outcomes") or []

    def to_dict(self) -> dict:
        n = max(len(self.hosts), 1)
        to = list(self.net_to_host.values())
        frm = list(self.net_from_host.values())
        host_seconds = [o.get("seconds") or 0 for o in self.outcomes]
        statuses: set[Any] = {o.get("status") for o in self.outcomes}
        d = {
            "label": self.label,
            "argv": self.argv,
            "hosts": len(self.hosts),
            "rc": self.rc,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_user_s": round(self.cpu_user_s, 3),
            "cpu_sys_s": round(self.cpu_sys_s, 3),
            "cpu_per_host_s": round(self.cpu_s / n, 3),
            "maxrss_mb": round(self.maxrss_mb, 1),
            "fleet_cpu_s": None if self.fleet_cpu_s is None else round(self.fleet_cpu_s, 2),
            "fleet_cpu_per_host_s": None if self.fleet_cpu_s is None else round(self.fleet_cpu_s / n, 2),
            "other_cpu_s": None if self.other_cpu_s is None else round(self.other_cpu_s, 2),
            "net_to_host_bytes": self.net_to_host,
            "net_from_host_bytes": self.net_from_host,
            "net_to_host_mean": round(sum(to) / len(to)) if to else None,
            "net_to_host_max": max(to) if to else None,
            "net_from_host_mean": round(sum(frm) / len(frm)) if frm else None,
            "reported_bytes_sent_mean": (
                round(sum(o.get("bytes_sent") or 0 for o in self.outcomes) / len(self.outcomes))
                if self.outcomes
                else None
            ),
            "host_seconds_max": max(host_seconds) if host_seconds else None,
            "host_seconds_mean": round(sum(host_seconds) / len(host_seconds), 3) if host_seconds else None,
            "statuses": sorted(statuses),
            "timings": {o["host"]: o.get("timings") or {} for o in self.outcomes},
            "counts": self.counts,
        }
        if not self.ok:
            d["stderr_tail"] = self.stderr_tail
        return d


def run_fab(
    label: str,
    args: list[str],
    env: dict,
    hosts: list[str],
    fleet,
    logdir: Path,
    counted: bool = True,
    timeout: float = 3600,
    bytecode: str = "cached",
) -> FabRun:
    """Run `fab [-H hosts] ARGS` from the project root and measure it from the outside.

    CPU and peak RSS come from os.wait4 on the fab process: Linux adds to it the usage of every
    descendant fab waited for (ssh, rsync, uv, pip), never that of the containers' processes.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in label)[:80]
    out_p, err_p, cnt_p = logdir / f"{slug}.out", logdir / f"{slug}.err", logdir / f"{slug}.counts.json"
    cnt_p.unlink(missing_ok=True)
    argv = ([PYTHON, COUNTED] if counted else [FAB]) + (["-H", ",".join(hosts)] if hosts else []) + args
    env = {**python_env(env, bytecode), "BENCH_COUNTS": str(cnt_p), "COLUMNS": "200"}
    before = net_counters(fleet, hosts) if fleet is not None else {}
    m0, f0, b0 = machine_cpu_s(), fleet_cpu_s(fleet), _self_cpu_s()
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        timer = threading.Timer(timeout, lambda: _killpg(p.pid))
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        t1 = time.monotonic()
    m1, f1, b1 = machine_cpu_s(), fleet_cpu_s(fleet), _self_cpu_s()
    p.returncode = os.waitstatus_to_exitcode(status)
    after = net_counters(fleet, hosts) if fleet is not None else {}
    cpu = ru.ru_utime + ru.ru_stime
    fleet_cpu = f1 - f0 if f0 is not None and f1 is not None else None
    stdout = out_p.read_text(errors="replace")
    summary = None
    if "--json" in args:
        try:
            summary = json.loads(stdout[stdout.index("{") :])
        except ValueError:
            summary = None
    counts = None
    if counted and cnt_p.exists():
        try:
            counts = json.loads(cnt_p.read_text())
        except ValueError:
            counts = None
    stderr = err_p.read_text(errors="replace")
    return FabRun(
        label,
        ["fab"] + argv[2 if counted else 1 :],
        hosts,
        p.returncode,
        t1 - t0,
        cpu,
        ru.ru_utime,
        ru.ru_stime,
        ru.ru_maxrss / 1024,
        {h: after[h][0] - before[h][0] for h in before},
        {h: after[h][1] - before[h][1] for h in before},
        t0,
        t1,
        fleet_cpu,
        max(0.0, (m1 - m0) - cpu - (fleet_cpu or 0) - (b1 - b0)),
        summary,
        counts,
        "\n".join((stderr + stdout).strip().splitlines()[-15:]),
    )


def _self_cpu_s() -> float:
    """CPU of this (benchmark) process: the load generator's threads."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# Slots: one app installation (API_ROOT, service, port of its own) on some fleet hosts


class Slot:
    """Like tests/e2e/conftest.py's Slot: an inventory with one app under its own API_ROOT,
    service name and port on the fleet's hosts, driven with the real `fab`."""

    def __init__(self, fleet, scratch: Path, k: int, kind: str, cache: Path | None, log=print):
        self.fleet, self.k, self.kind, self.log = fleet, k, kind, log
        self.api_root, self.service, self.port = f"/srv/bench-{k}", f"bench{k}", 8300 + k
        self.dir = scratch / f"slot{k}"
        self.dir.mkdir(parents=True, exist_ok=True)
        apps = yaml.safe_load((ROOT / "hosts" / "fleet.yaml").read_text())["apps"]
        app = apps[kind]
        app["source"] = str((ROOT / "hosts" / app["source"]).resolve())
        app.update(api_root=self.api_root, service=self.service, port=self.port)
        app.setdefault("health", {})["timeout"] = 40
        names = [h.name for h in fleet.hosts]
        inv = {
            "ssh_config": str(fleet.ssh_config),
            "known_hosts": str(fleet.known_hosts),
            "defaults": {"user": "deploy"},
            "hosts": {n: None for n in names},
            "groups": {"staging": names[:1], "prod": names[1:]} if len(names) > 1 else {"staging": names},
            "apps": {kind: app},
        }
        self.inventory = self.dir / "fleet.yaml"
        self.inventory.write_text(yaml.safe_dump(inv, sort_keys=False))
        self.cache = cache
        self.used_hosts: set[str] = set()
        self.runs: list[FabRun] = []

    def env(self, dist: Path, cache: Path | None = None) -> dict:
        env = {**os.environ, **SECRETS, "SGPFAB_INVENTORY": str(self.inventory), "SGPFAB_DIST": str(dist)}
        c = cache or self.cache
        if c is not None:
            env["SGPFAB_CACHE"] = str(c)
        return env

    def fab(
        self, label: str, args: list[str], hosts: list[str], dist: Path, cache: Path | None = None, check: bool = True
    ) -> FabRun:
        self.used_hosts.update(hosts)
        r = run_fab(label, args, self.env(dist, cache), hosts, self.fleet, self.dir / "logs")
        self.runs.append(r)
        self.log(
            f"  {label}: {'ok' if r.ok else f'FAILED (exit {r.rc})'} in {r.wall_s:.1f} s wall,"
            f" {r.cpu_s:.1f} s controller CPU, {r.maxrss_mb:.0f} MB peak RSS"
            + (f", {r.fleet_cpu_s:.1f} s containers' CPU" if r.fleet_cpu_s is not None else "")
            + (f", {r.other_cpu_s:.1f} s other CPU" if r.other_cpu_s is not None else "")
        )
        if check and not r.ok:
            raise BenchError(f"{label}: fab exited {r.rc}:\n{r.stderr_tail}")
        return r

    def url(self, host: str) -> str:
        return f"http://{self.fleet.ip(host)}:{self.port}{HEALTH_PATH[self.kind]}"

    def cleanup(self, remove: bool = True) -> None:
        """Stop this slot's processes (and remove its units and API_ROOT) so later runs have quiet hosts."""
        s = self.service
        cmd = (
            f"sudo systemctl stop '{s}-*' {s}.socket {s}.target 2>/dev/null;"
            f" sudo systemctl disable {s}.socket {s}.target 2>/dev/null;"
        )
        if remove:
            cmd += (
                f" sudo rm -rf /etc/systemd/system/{s}.* /etc/systemd/system/{s}-* {self.api_root};"
                " sudo systemctl daemon-reload;"
            )
        cmd += " true"

        def one(h):
            subprocess.run(
                ["ssh", "-F", str(self.fleet.ssh_config), h, cmd], capture_output=True, timeout=300, check=False
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, sorted(self.used_hosts)))


# ---------------------------------------------------------------------------------------------
# Load: one request at a time, every request recorded


@dataclass
class LoadRecord:
    url: str
    t0: float  # time.monotonic() of the first request; sample times are relative to it
    samples: list[tuple[float, float, bool]] = field(default_factory=list)  # (t, latency ms, ok)
    errors: dict[str, int] = field(default_factory=dict)

    def window(self, start: float, end: float) -> list[tuple[float, float, bool]]:
        """Samples of requests that started between two monotonic times."""
        a, b = start - self.t0, end - self.t0
        return [s for s in self.samples if a <= s[0] <= b]

    @staticmethod
    def stats(samples) -> dict:
        lat = sorted(s[1] for s in samples)
        if not lat:
            return {"requests": 0, "failed": 0, "worst_ms": None, "p50_ms": None, "p99_ms": None}
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
        return {
            "requests": len(lat),
            "failed": sum(1 for s in samples if not s[2]),
            "worst_ms": round(lat[-1], 1),
            "p50_ms": round(q[49], 1),
            "p99_ms": round(q[98], 1),
        }


class RecordingLoad:
    """GET `url` again and again (a new connection each time, `interval` s apart) in a thread and
    record every request's start, latency and success. Bounded like sgpfab.loadgen.Load: only
    loopback and link-local (sandbox) addresses, at most `max_requests` and `max_seconds`."""

    def __init__(self, url: str, interval: float = 0.005, max_requests: int = 60_000, max_seconds: float = 600):
        ip = ipaddress.ip_address(urlsplit(url).hostname or "")
        if not (ip.is_loopback or ip.is_link_local):
            raise ValueError(f"load is only sent to loopback or sandbox (link-local) addresses, not {ip}")
        self.interval, self.max_requests, self.max_seconds = interval, max_requests, max_seconds
        self.record = LoadRecord(url, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        r = self.record
        deadline = r.t0 + self.max_seconds
        while not self._stop.is_set() and len(r.samples) < self.max_requests and time.monotonic() < deadline:
            t = time.monotonic()
            try:
                with urllib.request.urlopen(r.url, timeout=10) as resp:
                    resp.read()
                ok, why = resp.status == 200, f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                ok, why = False, f"HTTP {e.code}"
            except (OSError, ValueError) as e:
                ok, why = False, type(getattr(e, "reason", e)).__name__
            r.samples.append((round(t - r.t0, 4), round((time.monotonic() - t) * 1000, 2), ok))
            if not ok:
                r.errors[why] = r.errors.get(why, 0) + 1
            time.sleep(self.interval)

    def start(self) -> RecordingLoad:
        self.record.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> LoadRecord:
        self._stop.set()
        self._thread.join()
        return self.record


def step_table(runs_outcome_timings: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{step: {mean, max, share}} over every host of the given runs (share: of the summed step time)."""
    per_step: dict[str, list[float]] = {}
    for timings in runs_outcome_timings:
        for host_t in timings.values():
            for step, v in host_t.items():
                per_step.setdefault(step, []).append(v)
    total = sum(sum(v) for v in per_step.values()) or 1.0
    return {
        k: {"mean_s": round(sum(v) / len(v), 3), "max_s": round(max(v), 3), "share": round(sum(v) / total, 3)}
        for k, v in sorted(per_step.items(), key=lambda kv: -sum(kv[1]))
    }
