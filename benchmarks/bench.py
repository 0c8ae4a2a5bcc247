"""Deploy benchmarks on a real sandbox fleet (needs root). Prints a table and writes JSON.

  (a) failed requests and worst latency under steady HTTP load during a deploy and a rollback,
      with a plain restart and with systemd socket activation;
  (b) wall time of a first deploy, a re-deploy with a one-line change, and a rollback, for
      fleets of 1, 4 and 8 hosts (all in parallel), plus 4 hosts one after another;
  (c) bytes sent for the one-line change.

    .venv/bin/python benchmarks/bench.py [--sizes 1,4,8] [--json benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sgpfab import artifacts  # noqa: E402
from sgpfab.bundle import build  # noqa: E402
from sgpfab.deploy import Plan  # noqa: E402
from sgpfab.fleetops import deploy_fleet, rollback_fleet  # noqa: E402
from sgpfab.inventory import Inventory  # noqa: E402
from sgpfab.loadgen import Load  # noqa: E402
from sgpfab.rollout import Policy  # noqa: E402
from sgpfab.runner import Fleet, open_sessions  # noqa: E402
from sgpfab.sandbox import fleet as sandbox  # noqa: E402
from sgpfab.versions import Version  # noqa: E402

quiet = lambda *_: None  # noqa: E731


def inventory(f: sandbox.Fleet, tmp: Path, name: str, port: int, socket_activation: bool = True) -> Inventory:
    inv = yaml.safe_load(f.inventory.read_text())
    inv["ssh_config"], inv["known_hosts"] = str(f.ssh_config), str(f.known_hosts)
    inv["defaults"].update(api_root=f"/srv/{name}", service=name, port=port, socket_activation=socket_activation)
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(inv))
    return Inventory.load(p)


def timed_op(inv: Inventory, hosts: list[str], op, parallel: int) -> dict:
    with ExitStack() as stack:
        sessions = open_sessions(stack, Fleet(inv, inv.resolve(hosts)), quiet)
        t0 = time.monotonic()
        result = op(sessions, Policy([len(sessions)], parallel=parallel))
        wall = time.monotonic() - t0
        sent = sum(s.t.bytes_sent for s in sessions)
    if result.exit_code:
        raise SystemExit(f"benchmark operation failed: {[o.message for o in result.outcomes if not o.ok]}")
    return {"wall_s": round(wall, 2), "per_host_s": [o.seconds for o in result.outcomes], "bytes_sent": sent}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,4,8", help="fleet sizes to time (comma separated)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--keep-fleet", action="store_true")
    ap.add_argument("--only", choices=["timings", "load"], help="run one part only")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    console = Console(width=140)
    tmp = Path(tempfile.mkdtemp(prefix="sgpfab-bench-"))
    f = sandbox.up("bench", 1 if a.only == "load" else max(sizes + [4]), 253, log=console.print)
    results: dict = {"fleet": [h.name for h in f.hosts], "timings": {}, "load": {}}
    try:
        base = Inventory.load(f.inventory)
        src1, src2 = tmp / "v1", tmp / "v2"
        shutil.copytree(base.app_source, src1)
        shutil.copytree(base.app_source, src2)
        with open(src2 / "main.py", "a") as fh:
            fh.write("# a one-line change\n")
        dist = tmp / "dist"
        b1 = build(src1, Version.parse("1.0.0"), base.app, dist, quiet)
        b2 = build(src2, Version.parse("1.0.1"), base.app, dist, quiet)
        uv = lambda host_os: artifacts.uv_binary(host_os, quiet)  # noqa: E731
        p1, p2 = Plan(b1, uv, base.app.migrate), Plan(b2, uv, base.app.migrate)
        names = [h.name for h in f.hosts]

        def deploy(plan):
            return lambda sessions, policy: deploy_fleet(sessions, plan, policy, quiet)

        def rollback(version):
            return lambda sessions, policy: rollback_fleet(sessions, Version.parse(version), None, policy, quiet)

        runs = [(f"{n} host{'s' if n > 1 else ''}, parallel", n, n) for n in sizes] + [("4 hosts, one by one", 4, 1)]
        if a.only == "load":
            runs = []
        for i, (label, n, parallel) in enumerate(runs):
            inv = inventory(f, tmp, f"bench{i}", 8200 + i)
            hosts = names[:n]
            console.print(f"timing: {label}")
            results["timings"][label] = {
                "first_deploy": timed_op(inv, hosts, deploy(p1), parallel),
                "one_line_redeploy": timed_op(inv, hosts, deploy(p2), parallel),
                "rollback": timed_op(inv, hosts, rollback("1.0.0"), parallel),
            }

        host = names[0]
        for mode, socket_activation in (("plain restart", False), ("socket activation", True))[: 0 if a.only == "timings" else 2]:
            name = "loadsock" if socket_activation else "loadplain"
            inv = inventory(f, tmp, name, 8300 + socket_activation, socket_activation)
            timed_op(inv, [host], deploy(p1), 1)
            url = f"http://{f.ip(host)}:{inv.hosts[host].port}/health"
            entry = {}
            for phase, op in (("deploy", deploy(p2)), ("rollback", rollback("1.0.0"))):
                console.print(f"load: {mode}, {phase}")
                with Load(url, interval=0.005, max_requests=20_000, max_seconds=120) as load:
                    timed_op(inv, [host], op, 1)
                entry[phase] = vars(load.result)
            results["load"][mode] = entry
    finally:
        if not a.keep_fleet:
            sandbox.down("bench", log=quiet)
        shutil.rmtree(tmp, ignore_errors=True)

    t = Table(title="deploy timings (seconds, wall clock) and bytes sent")
    for col in ("fleet", "first deploy", "one-line re-deploy", "bytes sent (re-deploy)", "rollback"):
        t.add_column(col, justify="right")
    for label, r in results["timings"].items():
        t.add_row(label, f"{r['first_deploy']['wall_s']:.1f}", f"{r['one_line_redeploy']['wall_s']:.1f}",
                  f"{r['one_line_redeploy']['bytes_sent']:,}", f"{r['rollback']['wall_s']:.1f}")
    console.print(t)
    t = Table(title="steady HTTP load on one host during a deploy and a rollback")
    for col in ("restart mode", "phase", "requests", "failed", "worst latency (ms)", "errors"):
        t.add_column(col)
    for mode, phases in results["load"].items():
        for phase, r in phases.items():
            t.add_row(mode, phase, str(r["requests"]), str(r["failed"]), f"{r['worst_latency_ms']:.0f}",
                      ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "-")
    console.print(t)
    Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"results written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
