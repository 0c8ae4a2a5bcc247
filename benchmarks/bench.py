"""sgpfab benchmarks on a real sandbox fleet (needs root). Prints tables, writes JSON and plots.

    .venv/bin/python benchmarks/bench.py [--hosts 1,4,8,16,32] [--only NAMES] [--smoke] [--json PATH]

Every operation is the real `fab` command in a subprocess (benchmarks/fab_counted.py: the `fab`
program plus counters of SSH commands, SFTP requests and spawned processes), measured from the
outside: wall time; CPU and peak RSS of fab and every process it waited for (ssh, rsync, uv) by
os.wait4, never the containers; bytes on each host's veth interface (bridge side, so SSH and TCP
overhead included); the per-step `timings` of fab's --json summary.

Parts (--only, comma separated; default all):
  startup  `fab --list`: the fixed cost of starting fab
  load     1 host under steady HTTP load (one connection per request, every request recorded)
           through a one-line re-deploy and a rollback: sgp (uvicorn, ASGI) and tasks (gunicorn,
           WSGI), each as the example and as a slow-starting copy (4 s of sleep at import)
  cache    4 hosts: `fab bundle` and a first deploy with an empty controller cache (SGPFAB_CACHE)
           vs a warm one; a one-line re-deploy built in the run vs with the bundle already built
  series   fleets of --hosts sizes (--parallel = hosts): first deploy (bundle prebuilt, cold host
           caches), then --repeat times a one-line re-deploy (bundle prebuilt) and a rollback

--smoke: 2 hosts, one re-deploy and one rollback under load; exit 1 if a request failed (CI runs
it as tests/e2e/test_bench_smoke.py). A fleet named --fleet-name (default "bench", first free
subnet from 247 down) is booted and torn down at the end, unless --use-fleet names a running
fleet to borrow (then only this run's app slots are added and removed again). Each measurement
uses its own app slot (API_ROOT /srv/bench-K, service benchK, port 8300+K), so runs do not
interfere; a slot's processes are stopped and its files removed when it is done.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import harness as H
from rich.console import Console
from rich.table import Table

from sgpfab.sandbox import fleet as sandbox

console = Console(width=170, highlight=False)
PARTS = ("startup", "load", "cache", "series")
LOAD_CASES = [("sgp", False), ("sgp", True), ("tasks", False), ("tasks", True)]


def log(msg) -> None:
    console.print(str(msg), markup=False, highlight=False, soft_wrap=True)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def version(i: int) -> str:
    return f"1.0.{i}"


def sgpfab_fingerprint() -> str:
    """A digest of the sgpfab/ sources as measured (the code changes while people work on it)."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "sgpfab").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()


class Bench:
    def __init__(self, a, fleet, scratch: Path):
        self.a, self.fleet, self.scratch = a, fleet, scratch
        self.k = a.slot_base
        self.names = [h.name for h in fleet.hosts]
        self.built: dict[str, set[str]] = {}
        self.slots: list[H.Slot] = []
        self.results: dict = {
            "meta": {
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "smoke": a.smoke,
                "argv": sys.argv[1:],
                "cores": os.cpu_count(),
                "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                "kernel": platform.release(),
                "python": platform.python_version(),
                # run from an export of a commit (no .git): name it in SGPFAB_BENCH_COMMIT
                "git_head": _git("rev-parse", "--short", "HEAD") or os.environ.get("SGPFAB_BENCH_COMMIT", ""),
                "sgpfab_uncommitted": bool(_git("status", "--porcelain", "--", "sgpfab")),
                "sgpfab_fingerprint": sgpfab_fingerprint(),
                "fleet": {
                    "name": fleet.name,
                    "subnet": fleet.subnet,
                    "hosts": len(fleet.hosts),
                    "borrowed": bool(a.use_fleet),
                },
                "controller_cache": os.environ.get("SGPFAB_CACHE") or "~/.cache/sgpfab (sgpfab's default)",
                "loadavg_at_start": os.getloadavg(),
            },
            "startup": None,
            "bundles": [],
            "load": {},
            "cache": {},
            "series": {},
            "errors": [],
        }

    # -- helpers ---------------------------------------------------------------------------------
    def slot(self, kind: str) -> H.Slot:
        s = H.Slot(self.fleet, self.scratch, self.k, kind, None, log)
        self.k += 1
        self.slots.append(s)
        return s

    def done(self, s: H.Slot) -> None:
        s.cleanup(remove=True)
        if s in self.slots:
            self.slots.remove(s)

    def prebuild(self, s: H.Slot, key: str, slow: bool, changes) -> Path:
        """Bundles 1.0.0 (the example, or its slow copy) and 1.0.N (one-line change N) in dist/KEY,
        built before any timed operation (`fab bundle`, warm controller cache)."""
        dist = self.scratch / "dist" / key
        have = self.built.setdefault(key, set())
        for i in changes:
            v = version(i)
            if v in have:
                continue
            src = H.make_source(self.scratch, s.kind, f"{key}-{v}", slow=slow, change=i)
            r = s.fab(f"bundle {key} {v}", ["bundle", "--version", v, "--source", str(src)], [], dist)
            self.results["bundles"].append(r.to_dict())
            have.add(v)
        return dist

    def section(self, name: str, fn) -> None:
        if self.a.only and name not in self.a.only:
            return
        log(f"\n== {name} ==")
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:
            self.results["errors"].append(f"{name}: {e}")
            log(f"{name} FAILED: {e}")
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
        finally:
            for s in list(self.slots):
                self.done(s)
        log(f"({name}: {time.monotonic() - t0:.0f} s)")

    # -- parts -----------------------------------------------------------------------------------
    def startup(self) -> None:
        """`fab --list`: Python start-up and imports, the fixed cost of every fab command; with
        bytecode cached (as on a user's controller, and in every other measurement here) and
        compiled from source at each start (how this machine's venv is set up)."""
        env = {**os.environ, **H.SECRETS}
        out = {}
        for mode in ("cached", "none"):
            runs = [
                H.run_fab(
                    f"fab --list, bytecode {mode} #{i}", ["--list"], env, [], None, self.scratch / "logs", bytecode=mode
                )
                for i in range(3)
            ]
            mid = sorted(runs, key=lambda r: r.wall_s)[1]
            out[mode] = mid.to_dict()
            log(
                f"  fab --list, bytecode {mode}: {mid.wall_s:.2f} s wall, {mid.cpu_s:.2f} s CPU, {mid.maxrss_mb:.0f} MB"
            )
        self.results["startup"] = out["cached"]
        self.results["startup_no_bytecode"] = out["none"]

    def _under_load(self, s: H.Slot, hosts: list[str], label: str, args: list[str], dist: Path) -> dict:
        loads = [H.RecordingLoad(s.url(h)).start() for h in hosts]
        time.sleep(1.0)  # requests before the operation starts
        try:
            r = s.fab(label, args, hosts, dist, check=False)
        finally:
            time.sleep(1.0)  # and after it ends
            recs = [ld.stop() for ld in loads]
        first = recs[0]
        per_host = {h: {**rec.stats(rec.samples), "errors": rec.errors} for h, rec in zip(hosts, recs)}
        allsamples = [x for rec in recs for x in rec.samples]
        out = {
            "run": {**r.to_dict(), "under_load": True},
            "stats": H.LoadRecord.stats(allsamples),
            "per_host": per_host,
            "errors": {k: v for rec in recs for k, v in rec.errors.items()},
            "op_start": round(r.started - first.t0, 4),
            "op_end": round(r.ended - first.t0, 4),
            "samples": first.samples,
        }
        st = out["stats"]
        log(
            f"    load: {st['requests']} requests, {st['failed']} failed, worst {st['worst_ms']} ms,"
            f" p99 {st['p99_ms']} ms {out['errors'] or ''}"
        )
        if not r.ok:
            raise H.BenchError(f"{label}: fab exited {r.rc}:\n{r.stderr_tail}")
        return out

    def load(self) -> None:
        h = self.names[0]
        for kind, slow in LOAD_CASES:
            key = f"{kind}-{'slow' if slow else 'normal'}"
            label = f"{kind} / {H.SERVER[kind]}{', slow start (4 s import)' if slow else ''}"
            log(f" {label}")
            s = self.slot(kind)
            dist = self.prebuild(s, key, slow, [0, 1])
            case = {"label": label, "app": kind, "server": H.SERVER[kind], "slow_start": slow, "host": h}
            self.results["load"][key] = case
            case["first_deploy"] = s.fab(
                f"load {key}: first deploy", ["deploy", "--bundle", version(0), "--json"], [h], dist
            ).to_dict()
            case["deploy"] = self._under_load(
                s, [h], f"load {key}: re-deploy under load", ["deploy", "--bundle", version(1), "--json"], dist
            )
            case["rollback"] = self._under_load(
                s, [h], f"load {key}: rollback under load", ["rollback", "--json"], dist
            )
            self.done(s)

    def cache(self) -> None:
        n = min(4, len(self.names))
        hosts, par = self.names[:n], ["--parallel", str(n), "--json"]
        c = self.results["cache"]
        c["hosts"] = n
        empty_b, empty_d = self.scratch / "cache-empty-1", self.scratch / "cache-empty-2"
        for p in (empty_b, empty_d):
            shutil.rmtree(p, ignore_errors=True)
            p.mkdir(parents=True)
        srcs = [H.make_source(self.scratch, "sgp", f"cache-{version(i)}", change=i) for i in range(3)]
        s1 = self.slot("sgp")
        c["bundle_cold"] = s1.fab(
            "cache: fab bundle, empty controller cache",
            ["bundle", "--version", version(0), "--source", str(srcs[0])],
            [],
            self.scratch / "dist" / "cache-a",
            cache=empty_b,
        ).to_dict()
        c["bundle_warm"] = s1.fab(
            "cache: fab bundle, warm controller cache",
            ["bundle", "--version", version(0), "--source", str(srcs[0])],
            [],
            self.scratch / "dist" / "cache-b",
            cache=empty_b,
        ).to_dict()
        c["first_cold_controller_cold_hosts"] = s1.fab(
            f"cache: first deploy, bundle built in the run, empty controller cache, cold hosts ({n})",
            ["deploy", "--version", version(0), "--source", str(srcs[0]), *par],
            hosts,
            self.scratch / "dist" / "cache-c",
            cache=empty_d,
        ).to_dict()
        self.done(s1)
        s2 = self.slot("sgp")
        dist = self.scratch / "dist" / "cache-d"
        c["first_warm_controller_cold_hosts"] = s2.fab(
            f"cache: first deploy, bundle built in the run, warm controller cache, cold hosts ({n})",
            ["deploy", "--version", version(0), "--source", str(srcs[0]), *par],
            hosts,
            dist,
            cache=empty_d,
        ).to_dict()
        c["redeploy_built_in_run"] = s2.fab(
            f"cache: one-line re-deploy, bundle built in the run, warm caches ({n})",
            ["deploy", "--version", version(1), "--source", str(srcs[1]), *par],
            hosts,
            dist,
            cache=empty_d,
        ).to_dict()
        s2.fab(
            "cache: fab bundle 1.0.2",
            ["bundle", "--version", version(2), "--source", str(srcs[2])],
            [],
            dist,
            cache=empty_d,
        )
        c["redeploy_prebuilt"] = s2.fab(
            f"cache: one-line re-deploy, bundle already built, warm caches ({n})",
            ["deploy", "--bundle", version(2), *par],
            hosts,
            dist,
            cache=empty_d,
        ).to_dict()
        c["rollback"] = s2.fab(f"cache: rollback ({n})", ["rollback", *par], hosts, dist, cache=empty_d).to_dict()
        self.done(s2)

    def series(self) -> None:
        for n in self.a.hosts:
            if n > len(self.names):
                self.results["errors"].append(f"series: {n} hosts asked for, the fleet has {len(self.names)}")
                continue
            log(f" {n} host{'s' if n > 1 else ''}")
            hosts, par = self.names[:n], ["--parallel", str(n), "--json"]
            s = self.slot("sgp")
            dist = self.prebuild(s, "sgp-normal", False, range(self.a.repeat + 1))
            entry = {"hosts": n, "redeploy": [], "rollback": []}
            self.results["series"][str(n)] = entry
            entry["first_deploy"] = s.fab(
                f"series {n}: first deploy", ["deploy", "--bundle", version(0), *par], hosts, dist
            ).to_dict()
            # connect + preflight + read state, nothing else: the fixed cost of any command per host
            entry["list"] = s.fab(
                f"series {n}: fab list (connect and preflight only)", ["list", "--json"], hosts, dist
            ).to_dict()
            for i in range(1, self.a.repeat + 1):
                entry["redeploy"].append(
                    s.fab(
                        f"series {n}: one-line re-deploy {version(i)}",
                        ["deploy", "--bundle", version(i), *par],
                        hosts,
                        dist,
                    ).to_dict()
                )
                entry["rollback"].append(s.fab(f"series {n}: rollback #{i}", ["rollback", *par], hosts, dist).to_dict())
            self.done(s)

    def smoke(self) -> None:
        n = min(2, len(self.names))
        hosts, par = self.names[:n], ["--parallel", str(n), "--json"]
        s = self.slot("sgp")
        dist = self.prebuild(s, "sgp-normal", False, [0, 1, 2])
        entry: dict[str, Any] = {"hosts": n, "redeploy": [], "rollback": []}
        self.results["series"][str(n)] = entry
        case = {
            "label": f"sgp / {H.SERVER['sgp']}",
            "app": "sgp",
            "server": H.SERVER["sgp"],
            "slow_start": False,
            "host": ",".join(hosts),
        }
        self.results["load"]["sgp-normal"] = case
        entry["first_deploy"] = s.fab(
            f"smoke: first deploy ({n})", ["deploy", "--bundle", version(0), *par], hosts, dist
        ).to_dict()
        case["deploy"] = self._under_load(
            s, hosts, f"smoke: one-line re-deploy under load ({n})", ["deploy", "--bundle", version(1), *par], dist
        )
        entry["redeploy"].append(case["deploy"]["run"])
        case["rollback"] = self._under_load(s, hosts, f"smoke: rollback under load ({n})", ["rollback", *par], dist)
        entry["rollback"].append(case["rollback"]["run"])
        # the load's HTTP traffic crosses the same veths: bytes are counted on a re-deploy without load
        entry["redeploy"].append(
            s.fab(
                f"smoke: one-line re-deploy without load ({n})", ["deploy", "--bundle", version(2), *par], hosts, dist
            ).to_dict()
        )
        self.done(s)

    def run(self) -> None:
        if self.a.smoke:
            self.section("smoke", self.smoke)
        else:
            for part in PARTS:
                self.section(part, getattr(self, part))
        self.results["meta"]["loadavg_at_end"] = os.getloadavg()
        self.results["meta"]["sgpfab_changed_during_run"] = (
            sgpfab_fingerprint() != self.results["meta"]["sgpfab_fingerprint"]
        )
        derive(self.results, ref=str(min(2, len(self.names))) if self.a.smoke else "4")


# ---------------------------------------------------------------------------------------------
# Derived figures


def _runs(entry: dict | None, key: str) -> list[dict]:
    if not entry:
        return []
    v = entry.get(key) or []
    return [r for r in (v if isinstance(v, list) else [v]) if r and r.get("rc") == 0]


def _med(runs: list[dict], field: str):
    return median([r.get(field) for r in runs])


def _per_host_count(runs: list[dict], key: str):
    vals = [(r.get("counts") or {}).get(key, 0) / r["hosts"] for r in runs if r.get("counts") and r["hosts"]]
    return median(vals)


def _fit(xs, ys):
    """Least squares y = a + b x."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if not sxx:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return {"a": round(my - b * mx, 3), "b": round(b, 4)}


def derive(res: dict, ref: str) -> None:
    """Headline figures, per-step tables and the projection, from the raw runs."""
    series, load, cache = res.get("series") or {}, res.get("load") or {}, res.get("cache") or {}
    S = series.get(ref)
    figs = []

    def fig(name, value, display, goal, limit, extra=None):
        meets = None if value is None or limit is None else value <= limit
        figs.append(
            {
                "figure": name,
                "value": value,
                "display": display if value is not None else "n/a",
                "goal": goal,
                "meets": meets,
                **(extra or {}),
            }
        )

    red, rb = _runs(S, "redeploy"), _runs(S, "rollback")
    w = _med(red, "wall_s")
    fig(
        f"one-line re-deploy, wall, bundle already built ({ref} hosts, median of {len(red)})",
        w,
        f"{w:.2f} s" if w is not None else "",
        "<= 4 s",
        4,
    )
    built = cache.get("redeploy_built_in_run")
    w = built["wall_s"] if built and built.get("rc") == 0 else None
    fig(
        f"one-line re-deploy, wall, bundle built in the run ({cache.get('hosts', ref)} hosts)",
        w,
        f"{w:.2f} s" if w is not None else "",
        "<= 4 s",
        4,
    )
    w = _med(rb, "wall_s")
    fig(f"rollback, wall ({ref} hosts, median of {len(rb)})", w, f"{w:.2f} s" if w is not None else "", "<= 2 s", 2)
    for case in load.values():
        for phase in ("deploy", "rollback"):
            p = case.get(phase)
            if not p:
                continue
            st = p["stats"]
            worst = st["worst_ms"]
            fails = st["failed"]
            meets = None if worst is None else (worst <= 250 and fails == 0)
            figs.append(
                {
                    "figure": f"worst latency under load, {case['label']}, {'re-deploy' if phase == 'deploy' else 'rollback'}"
                    f" ({len(case['host'].split(','))} host)",
                    "value": worst,
                    "failed": fails,
                    "requests": st["requests"],
                    "display": f"{worst:.0f} ms, {fails} failed / {st['requests']} (p99 {st['p99_ms']:.0f} ms)",
                    "goal": "<= 250 ms, 0 failed",
                    "meets": meets,
                }
            )
    quiet = [r for r in red if not r.get("under_load")]  # the load's HTTP traffic crosses the veths too
    b = _med(quiet, "net_to_host_mean")
    bmax: Any = max((r["net_to_host_max"] for r in quiet), default=None)  # not None when b is set
    rep = _med(quiet, "reported_bytes_sent_mean")
    back = _med(quiet, "net_from_host_mean")
    fig(
        f"bytes to each host, one-line re-deploy, on the veth incl. SSH ({ref} hosts)",
        b / 1000 if b else None,
        f"{b / 1000:.1f} kB/host (max {bmax / 1000:.1f}; sgpfab reports {rep / 1000:.1f} kB payload;"
        f" {back / 1000:.1f} kB back)"
        if b
        else "",
        "<= 25 kB/host",
        25,
    )
    big = max((int(n) for n in series), default=None)
    w1, wbig = (
        _med(_runs(series.get("1"), "redeploy"), "wall_s"),
        _med(_runs(series.get(str(big)), "redeploy"), "wall_s"),
    )
    ratio = wbig / w1 if w1 and wbig and big and big > 1 else None
    fig(
        f"re-deploy wall, {big} hosts --parallel {big} vs 1 host",
        ratio,
        f"{ratio:.2f}x ({wbig:.1f} s vs {w1:.1f} s)" if ratio else "",
        "<= 4x",
        4,
    )
    for n in sorted({ref, str(big)} & set(series), key=int):
        for key, what in (("redeploy", "re-deploy"), ("rollback", "rollback")):
            runs = _runs(series[n], key)
            c = _med(runs, "cpu_per_host_s")
            rss = _med(runs, "maxrss_mb")
            fig(
                f"controller CPU per host-operation, {what} ({n} hosts)",
                c,
                f"{c:.2f} s (peak RSS {rss:.0f} MB)" if c is not None else "",
                "<= 0.5 s",
                0.5,
            )
    res["figures"] = figs

    # where the seconds go
    steps = {}

    def add(key, label, runs):
        runs = [r for r in runs if r.get("timings")]
        if not runs:
            return
        outside = median([r["wall_s"] - (r["host_seconds_max"] or 0) for r in runs])
        steps[key] = {
            "label": label,
            "steps": H.step_table([r["timings"] for r in runs]),
            "host_seconds_mean": _med(runs, "host_seconds_mean"),
            "wall_s": _med(runs, "wall_s"),
            "outside_steps_s": round(outside, 3) if outside is not None else None,
        }

    if S:
        add(f"first-{ref}", f"first deploy, {ref} hosts (bundle prebuilt)", _runs(S, "first_deploy"))
    for n in sorted({"1", ref, str(big)} & set(series), key=int):
        add(f"redeploy-{n}", f"one-line re-deploy, {n} host{'s' if n != '1' else ''}", _runs(series[n], "redeploy"))
    if built and built.get("rc") == 0:
        add(f"redeploy-built-{cache.get('hosts')}", f"re-deploy built in the run, {cache.get('hosts')} hosts", [built])
    for n in sorted({"1", ref, str(big)} & set(series), key=int):
        add(f"rollback-{n}", f"rollback, {n} host{'s' if n != '1' else ''}", _runs(series[n], "rollback"))
    res["steps"] = steps

    # fleet-size table and the projection
    rows = []
    for n in sorted(series, key=int):
        e = series[n]
        red, rb, first = _runs(e, "redeploy"), _runs(e, "rollback"), _runs(e, "first_deploy")
        rows.append(
            {
                "hosts": int(n),
                "first_wall_s": _med(first, "wall_s"),
                "redeploy_wall_s": _med(red, "wall_s"),
                "rollback_wall_s": _med(rb, "wall_s"),
                "redeploy_host_s": _med(red, "host_seconds_max"),
                "first_cpu_per_host_s": _med(first, "cpu_per_host_s"),
                "redeploy_cpu_per_host_s": _med(red, "cpu_per_host_s"),
                "rollback_cpu_per_host_s": _med(rb, "cpu_per_host_s"),
                "redeploy_cpu_s": _med(red, "cpu_s"),
                "redeploy_self_cpu_s": median([(r.get("counts") or {}).get("self_cpu_s") for r in red]),
                "redeploy_maxrss_mb": _med(red, "maxrss_mb"),
                "first_maxrss_mb": _med(first, "maxrss_mb"),
                "redeploy_fleet_cpu_per_host_s": _med(red, "fleet_cpu_per_host_s"),
                "rollback_fleet_cpu_per_host_s": _med(rb, "fleet_cpu_per_host_s"),
                "redeploy_other_cpu_s": _med(red, "other_cpu_s"),
                "first_net_to_host_mean": _med(first, "net_to_host_mean"),
                "redeploy_net_to_host_mean": _med(red, "net_to_host_mean"),
                "rollback_net_to_host_mean": _med(rb, "net_to_host_mean"),
                "list_cpu_per_host_s": _med(_runs(e, "list"), "cpu_per_host_s"),
                "list_net_to_host_mean": _med(_runs(e, "list"), "net_to_host_mean"),
                "list_wall_s": _med(_runs(e, "list"), "wall_s"),
                "redeploy_exec_per_host": _per_host_count(red, "exec"),
                "rollback_exec_per_host": _per_host_count(rb, "exec"),
                "redeploy_rsync_per_host": _per_host_count(red, "spawn:rsync"),
                "redeploy_sftp_per_host": _per_host_count(red, "sftp_request"),
                "redeploy_ssh_connect_per_host": _per_host_count(red, "ssh_connect"),
            }
        )
    res["fleet_table"] = rows
    res["projection"] = project(rows, res.get("startup"))


def project(rows: list[dict], startup: dict | None) -> dict | None:
    """Controller cost for hundreds of hosts, from the measured per-host cost (linear fits over
    the fleet sizes): total CPU, its GIL-bound share (fab's own Python process, one core at most),
    peak RSS against --parallel. Host-side time is taken from the 1-host re-deploy (real hosts do
    not share the controller's cores)."""
    rows = [r for r in rows if r["redeploy_cpu_s"] is not None]
    if len(rows) < 2:
        return None
    xs = [r["hosts"] for r in rows]
    cpu = _fit(xs, [r["redeploy_cpu_s"] for r in rows])
    own = _fit(xs, [r["redeploy_self_cpu_s"] for r in rows])
    rss = _fit(xs, [r["redeploy_maxrss_mb"] for r in rows])
    one = next((r for r in rows if r["hosts"] == 1), rows[0])
    t_host = one["redeploy_host_s"] or 0
    fixed = (one["redeploy_wall_s"] or 0) - t_host
    out = {
        "fit_cpu_s": cpu,
        "fit_self_cpu_s": own,
        "fit_maxrss_mb": rss,
        "host_seconds_1": t_host,
        "fixed_wall_s": round(fixed, 2),
        "startup_cpu_s": (startup or {}).get("cpu_s"),
        "rows": [],
    }
    if not cpu or not rss:
        return out
    for n in (100, 250, 500, 1000):
        for p in (32, 64, 128):
            for cores in (2, 8):
                total = cpu["a"] + cpu["b"] * n
                gil = (own["a"] + own["b"] * n) if own else total
                ctrl = max(gil, total / cores)
                hostbound = math.ceil(n / p) * t_host + fixed
                out["rows"].append(
                    {
                        "hosts": n,
                        "parallel": p,
                        "cores": cores,
                        "cpu_s": round(total, 1),
                        "gil_cpu_s": round(gil, 1),
                        "controller_bound_s": round(ctrl, 1),
                        "host_bound_s": round(hostbound, 1),
                        "est_wall_s": round(max(ctrl, hostbound), 1),
                        "rss_mb": round(rss["a"] + rss["b"] * min(p, n)),
                    }
                )
    return out


# ---------------------------------------------------------------------------------------------
# Output


def _f(v, fmt="{:.2f}", none="-"):
    return none if v is None else fmt.format(v)


def tables(res: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every result table as (title, header, rows): printed by print_tables, written by markdown."""
    out = []
    out.append(
        (
            "figures",
            ["figure", "measured", "goal", "meets"],
            [
                [f["figure"], f["display"], f["goal"], {True: "yes", False: "NO", None: "-"}[f["meets"]]]
                for f in res.get("figures", [])
            ],
        )
    )

    if res.get("fleet_table"):
        rows = []
        for r in res["fleet_table"]:
            kb = r["redeploy_net_to_host_mean"]
            first_kb = r["first_net_to_host_mean"]
            rows.append(
                [
                    str(r["hosts"]),
                    _f(r["first_wall_s"], "{:.1f}"),
                    _f(r["redeploy_wall_s"], "{:.1f}"),
                    _f(r["rollback_wall_s"], "{:.1f}"),
                    _f(r["redeploy_cpu_per_host_s"]),
                    _f(r["rollback_cpu_per_host_s"]),
                    _f(r["first_cpu_per_host_s"]),
                    _f(r["redeploy_maxrss_mb"], "{:.0f}"),
                    _f(kb and kb / 1000, "{:.1f}"),
                    _f(first_kb and first_kb / 1e6, "{:.1f}"),
                    _f(r.get("redeploy_fleet_cpu_per_host_s"), "{:.1f}"),
                    _f(r["redeploy_exec_per_host"], "{:.0f}"),
                    _f(r.get("redeploy_other_cpu_s"), "{:.1f}"),
                    "-"
                    if r.get("list_wall_s") is None
                    else f"{r['list_wall_s']:.1f} s, {r['list_cpu_per_host_s']:.2f} s CPU/host,"
                    f" {r['list_net_to_host_mean'] / 1000:.0f} kB/host",
                ]
            )
        out.append(
            (
                "fleet sizes (--parallel = hosts; bundle prebuilt; medians)",
                [
                    "hosts",
                    "first deploy s",
                    "re-deploy s",
                    "rollback s",
                    "controller CPU/host re-deploy s",
                    "controller CPU/host rollback s",
                    "controller CPU/host first deploy s",
                    "peak RSS MB (re-deploy)",
                    "kB to each host (re-deploy)",
                    "MB to each host (first)",
                    "containers' CPU/host re-deploy s",
                    "SSH commands/host (re-deploy)",
                    "other CPU on the machine s (re-deploy)",
                    "fab list (connect + preflight only)",
                ],
                rows,
            )
        )

    rows = []
    for case in (res.get("load") or {}).values():
        for phase in ("deploy", "rollback"):
            p = case.get(phase)
            if not p:
                continue
            st = p["stats"]
            rows.append(
                [
                    case["label"],
                    "re-deploy" if phase == "deploy" else "rollback",
                    f"{p['run']['wall_s']:.1f}",
                    str(st["requests"]),
                    str(st["failed"]),
                    _f(st["worst_ms"], "{:.0f}"),
                    _f(st["p99_ms"], "{:.0f}"),
                    _f(st["p50_ms"], "{:.1f}"),
                    ", ".join(f"{k}: {v}" for k, v in p["errors"].items()) or "-",
                ]
            )
    if rows:
        out.append(
            (
                (
                    "latency under load (1 host; GET the health endpoint, a new connection per request, 5 ms apart;"
                    " from 1 s before fab starts to 1 s after it ends)"
                ),
                [
                    "app / server",
                    "operation",
                    "fab wall s",
                    "requests",
                    "failed",
                    "worst ms",
                    "p99 ms",
                    "p50 ms",
                    "errors",
                ],
                rows,
            )
        )

    c = res.get("cache") or {}
    if c:
        rows = []
        for what, cc, hc, key in (
            ("fab bundle", "empty", "-", "bundle_cold"),
            ("fab bundle", "warm", "-", "bundle_warm"),
            ("first deploy, bundle built in the run", "empty", "cold", "first_cold_controller_cold_hosts"),
            ("first deploy, bundle built in the run", "warm", "cold", "first_warm_controller_cold_hosts"),
            ("one-line re-deploy, bundle built in the run", "warm", "warm", "redeploy_built_in_run"),
            ("one-line re-deploy, bundle already built", "warm", "warm", "redeploy_prebuilt"),
            ("rollback", "-", "warm", "rollback"),
        ):
            r = c.get(key)
            if not r:
                continue
            tim = list((r.get("timings") or {}).values())
            up = median([x.get("upload") for x in tim]) if tim else None
            venv = median([x.get("venv") for x in tim]) if tim else None
            kb = r.get("net_to_host_mean")
            rows.append(
                [
                    what,
                    cc,
                    hc,
                    f"{r['wall_s']:.1f}",
                    f"{r['cpu_s']:.1f}",
                    _f(kb and kb / 1000, "{:,.1f}"),
                    _f(up),
                    _f(venv),
                ]
            )
        out.append(
            (
                f"cold vs warm caches ({c.get('hosts')} hosts, --parallel {c.get('hosts')})",
                [
                    "operation",
                    "controller cache",
                    "host caches",
                    "wall s",
                    "controller CPU s",
                    "kB to each host",
                    "upload step s",
                    "venv step s",
                ],
                rows,
            )
        )

    for st in (res.get("steps") or {}).values():
        rows = [
            [name, f"{v['mean_s']:.2f}", f"{v['max_s']:.2f}", f"{v['share'] * 100:.0f}%"]
            for name, v in st["steps"].items()
        ]
        rows.append(
            [
                "(outside the host steps: fab start-up, connect, preflight, checks, exit)",
                _f(st["outside_steps_s"]),
                "",
                "",
            ]
        )
        out.append(
            (
                (
                    f"where the seconds go: {st['label']} (fab wall {_f(st['wall_s'], '{:.1f}')} s, a host's"
                    f" steps {_f(st['host_seconds_mean'], '{:.1f}')} s)"
                ),
                ["step", "mean s", "max s", "share"],
                rows,
            )
        )

    ops = []
    for n in sorted(res.get("series") or {}, key=int):
        for key, what in (("redeploy", "re-deploy"), ("rollback", "rollback")):
            runs = _runs(res["series"][n], key)
            if not runs or not runs[0].get("counts"):
                continue
            keys = ("exec", "ssh_connect", "spawn:rsync", "sftp_request")
            other = sorted({k for r in runs for k in (r.get("counts") or {}) if k.startswith("spawn:")} - set(keys))
            ops.append(
                [n, what]
                + [_f(_per_host_count(runs, k), "{:.1f}") for k in keys]
                + [
                    ", ".join(f"{k[6:]} {_per_host_count(runs, k):.1f}" for k in other) or "-",
                    _f(median([(r["counts"] or {}).get("self_cpu_s") for r in runs]), "{:.2f}"),
                    _f(median([(r["counts"] or {}).get("children_cpu_s") for r in runs]), "{:.2f}"),
                ]
            )
    if ops:
        out.append(
            (
                "SSH operations per host and operation (counted in the fab process; medians)",
                [
                    "hosts",
                    "operation",
                    "commands (channel execs, rsync's included)",
                    "SSH connections (paramiko)",
                    "rsync runs (each on a channel of that connection)",
                    "SFTP requests",
                    "other processes",
                    "fab's own CPU s",
                    "its children's CPU s",
                ],
                ops,
            )
        )

    p = res.get("projection")
    if p and p.get("rows"):
        rows = [
            [
                str(r[k])
                for k in (
                    "hosts",
                    "parallel",
                    "cores",
                    "cpu_s",
                    "gil_cpu_s",
                    "controller_bound_s",
                    "host_bound_s",
                    "est_wall_s",
                    "rss_mb",
                )
            ]
            for r in p["rows"]
            if r["cores"] == 8 or r["hosts"] == 100
        ]
        out.append(
            (
                (
                    f"projection of a one-line re-deploy (linear fits over the fleet sizes: controller CPU s ="
                    f" {p['fit_cpu_s']['a']} + {p['fit_cpu_s']['b']} x hosts; fab process alone"
                    f" {p['fit_self_cpu_s'] and p['fit_self_cpu_s']['a']} + {p['fit_self_cpu_s'] and p['fit_self_cpu_s']['b']}"
                    f" x hosts; peak RSS MB = {p['fit_maxrss_mb']['a']} + {p['fit_maxrss_mb']['b']} x parallel hosts;"
                    f" one host's steps {p['host_seconds_1']:.1f} s)"
                ),
                [
                    "hosts",
                    "--parallel",
                    "controller cores",
                    "controller CPU s",
                    "of which the fab process (GIL: 1 core)",
                    "controller-bound s",
                    "host-bound s",
                    "estimated wall s",
                    "peak RSS MB",
                ],
                rows,
            )
        )
    return out


def print_tables(res: dict) -> None:
    for title, header, rows in tables(res):
        if not rows:
            continue
        console.print(f"\n{title}", markup=False, highlight=False, style="bold")
        t = Table()
        for i, col in enumerate(header):
            t.add_column(
                col,
                justify="left" if i == 0 or col in ("figure", "measured", "operation", "errors", "step") else "right",
                overflow="fold",
            )
        for r in rows:
            t.add_row(*r)
        console.print(t)
    for e in res.get("errors") or []:
        console.print(f"error: {e}", style="red", markup=False)


def markdown(res: dict) -> str:
    """The result tables in Markdown (for docs/performance.md)."""
    parts = []
    for title, header, rows in tables(res):
        if not rows:
            continue
        esc = lambda x: str(x).replace("|", "\\|")
        parts.append(
            f"**{title}**\n\n| "
            + " | ".join(header)
            + " |\n|"
            + "|".join(" --- " if i == 0 else " ---: " for i in range(len(header)))
            + "|\n"
            + "".join("| " + " | ".join(esc(c) for c in r) + " |\n" for r in rows)
        )
    return "\n".join(parts)


def write_json(res: dict, path: Path) -> None:
    """Indented JSON, except request samples: one line per load run."""
    samples = {}
    for key, case in (res.get("load") or {}).items():
        for phase in ("deploy", "rollback"):
            if case.get(phase) and "samples" in case[phase]:
                token = f"@@samples:{key}:{phase}@@"
                samples[token] = json.dumps(case[phase]["samples"], separators=(",", ":"))
                case[phase]["samples"] = token
    text = json.dumps(res, indent=1)
    for token, data in samples.items():
        text = text.replace(json.dumps(token), data)
    for case in (res.get("load") or {}).values():
        for phase in ("deploy", "rollback"):
            tok = case.get(phase, {}).get("samples") if case.get(phase) else None
            if isinstance(tok, str) and tok in samples:
                case[phase]["samples"] = json.loads(samples[tok])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="1,4,8,16,32", help="fleet sizes for the series (comma separated; max 32)")
    ap.add_argument("--only", help=f"run only these parts (comma separated): {', '.join(PARTS)}")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="2 hosts, a re-deploy and a rollback under load; exit 1 if a request failed",
    )
    ap.add_argument(
        "--json",
        help="where to write the results (default benchmarks/results.json; with --smoke:"
        " $TMPDIR/sgpfab-bench-smoke.json)",
    )
    ap.add_argument("--img-dir", help="where to draw the plots (default docs/img; with --smoke: none)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="re-deploy + rollback pairs per fleet size (default 3)")
    ap.add_argument("--fleet-name", default="bench", help="name of the fleet to boot (default bench)")
    ap.add_argument("--subnet", type=int, default=247, help="preferred subnet (the first free one below is taken)")
    ap.add_argument("--use-fleet", help="borrow this running fleet instead of booting one (e.g. the e2e tests')")
    ap.add_argument(
        "--slot-base", type=int, default=1, help="first app slot number (API_ROOT /srv/bench-K, port 8300+K)"
    )
    ap.add_argument("--scratch", help="work directory (default: a new temporary one, removed at the end)")
    ap.add_argument("--keep-fleet", action="store_true", help="leave the booted fleet up")
    ap.add_argument("--from-json", help="measure nothing: derive, print, plot (and --markdown) a saved result again")
    ap.add_argument("--markdown", help="also write the result tables in Markdown to this file")
    a = ap.parse_args(argv)
    a.hosts = sorted({int(x) for x in a.hosts.split(",") if x.strip()})
    a.only = [x.strip() for x in a.only.split(",")] if a.only else None
    if a.only and set(a.only) - set(PARTS):
        ap.error(f"--only takes {', '.join(PARTS)}")
    if not a.hosts or min(a.hosts) < 1 or max(a.hosts) > sandbox.MAX_HOSTS:
        ap.error(f"--hosts: sizes between 1 and {sandbox.MAX_HOSTS}")
    if not 1 <= a.slot_base <= 600:
        ap.error("--slot-base: 1-600")
    if H.protected(a.fleet_name):
        ap.error(f"fleet {a.fleet_name!r} belongs to someone else: choose another --fleet-name")
    return a


def fleet_size(a) -> int:
    if a.smoke:
        return 2
    size = 1
    if not a.only or "series" in a.only:
        size = max(size, max(a.hosts))
    if not a.only or "cache" in a.only:
        size = max(size, 4)
    return size


def report(a, res: dict, out: Path | None) -> None:
    print_tables(res)
    if out is not None:
        write_json(res, out)
        log(f"results: {out}")
    if a.markdown:
        Path(a.markdown).write_text(markdown(res))
        log(f"markdown tables: {a.markdown}")
    img = Path(a.img_dir) if a.img_dir else (None if a.smoke else ROOT / "docs" / "img")
    if img is not None and not a.no_plots:
        import plots

        for p in plots.draw_all(res, img, log):
            log(f"plot: {p}")


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
        derive(res, ref=str(min(2, res["meta"]["fleet"]["hosts"])) if res["meta"].get("smoke") else "4")
        report(a, res, Path(a.json) if a.json else None)
        return 0
    if os.geteuid() != 0:
        log("error: the benchmark boots sandbox hosts: run it as root")
        return 2
    scratch = Path(a.scratch) if a.scratch else Path(tempfile.mkdtemp(prefix="sgpfab-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    booted = None
    t0 = time.monotonic()
    try:
        if a.use_fleet:
            fleet = sandbox.Fleet.load(a.use_fleet)
            if fleet is None:
                log(f"error: no running sandbox fleet named {a.use_fleet!r}")
                return 2
        else:
            if sandbox.Fleet.load(a.fleet_name) is not None:
                log(
                    f"error: a fleet named {a.fleet_name!r} is already up (another benchmark?); take it down with"
                    f" `fab sandbox.down --name {a.fleet_name}` or pass --fleet-name"
                )
                return 2
            subnet = H.pick_subnet(sandbox, a.fleet_name, a.subnet)
            n = fleet_size(a)
            log(f"booting sandbox fleet {a.fleet_name!r}: {n} hosts on 169.254.{subnet}.0/24")
            booted = a.fleet_name
            tb = time.monotonic()
            fleet = sandbox.up(a.fleet_name, n, subnet, log=lambda *_: None)
            log(f"  up in {time.monotonic() - tb:.0f} s")
        H.BYTECODE_PREFIX, H.EMPTY_PREFIX = scratch / "pycache", scratch / "pycache-empty"
        H.EMPTY_PREFIX.mkdir(parents=True, exist_ok=True)
        H.run_fab("warm-up: fab --list", ["--list"], dict(os.environ), [], None, scratch / "logs")  # writes bytecode
        bench = Bench(a, fleet, scratch)
        bench.results["meta"]["bytecode"] = "cached (PYTHONPYCACHEPREFIX in the scratch directory)"
        bench.run()
    finally:
        if booted and not a.keep_fleet:
            sandbox.down(booted, log=lambda *_: None)
            log(f"sandbox fleet {booted!r} is down")
        if not a.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    res = bench.results
    res["meta"]["total_s"] = round(time.monotonic() - t0)
    out = (
        Path(a.json)
        if a.json
        else (Path(tempfile.gettempdir()) / "sgpfab-bench-smoke.json" if a.smoke else BENCH / "results.json")
    )
    report(a, res, out)
    failed = sum(
        case[p]["stats"]["failed"] for case in res["load"].values() for p in ("deploy", "rollback") if case.get(p)
    )
    if failed:
        log(f"{failed} requests FAILED under load")
    if res["meta"].get("sgpfab_changed_during_run"):
        log("note: sgpfab/ changed while the benchmark ran: the figures mix two versions of the code")
    return 1 if failed or res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
