"""The benchmark's smoke mode (`benchmarks/bench.py --smoke`) on the shared e2e fleet: it runs,
reports every figure it measures, and no request fails under load through a re-deploy and a
rollback. Timings are printed, not asserted (other tests share the fleet and the cores)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_reports_its_figures_and_no_request_fails(slot, tmp_path):
    # The slot fixture reserves a slot number unique in this run: the benchmark's own slot
    # (/srv/bench-N, service benchN, port 8300+N) takes the same number, so it meets no other test.
    out, img = tmp_path / "results.json", tmp_path / "img"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench.py"),
            "--smoke",
            "--use-fleet",
            slot.fleet.name,
            "--slot-base",
            str(slot.n),
            "--scratch",
            str(tmp_path / "scratch"),
            "--json",
            str(out),
            "--img-dir",
            str(img),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    print(r.stdout[-6000:])
    assert r.returncode == 0, f"bench.py --smoke exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    res = json.loads(out.read_text())
    assert res["errors"] == [] and res["meta"]["smoke"] and res["meta"]["fleet"]["borrowed"]

    figures = {f["figure"]: f for f in res["figures"]}
    measured = [name for name, f in figures.items() if f["value"] is not None]
    for what in (
        "one-line re-deploy, wall, bundle already built",
        "rollback, wall",
        "worst latency under load",
        "bytes to each host",
        "controller CPU per host-operation, re-deploy",
        "controller CPU per host-operation, rollback",
    ):
        assert any(name.startswith(what) for name in measured), (what, figures)

    case = res["load"]["sgp-normal"]
    for phase in ("deploy", "rollback"):
        st = case[phase]["stats"]
        assert st["requests"] > 100 and st["failed"] == 0, (phase, st, case[phase]["errors"])
        assert case[phase]["run"]["rc"] == 0 and case[phase]["run"]["cpu_s"] > 0
        assert case[phase]["samples"], "every request is recorded for the latency plot"
    for run in res["series"]["2"]["redeploy"]:
        assert run["hosts"] == 2 and run["net_to_host_mean"] > 0 and run["counts"]["exec"] > 0
        assert set(run["timings"]) == {"staging1", "prod1"} and all(run["timings"].values())
    assert sorted(p.name for p in img.glob("*.png")) == [
        "deploy_steps.png",
        "latency_during_deploy.png",
        "wall_vs_fleet.png",
    ]
    # the slot is gone again: nothing of it is left running on the shared hosts
    units = slot.ssh("staging1", f"systemctl list-units --plain --no-legend 'bench{slot.n}*' | wc -l").strip()
    assert units == "0" and slot.ssh("staging1", f"test -e /srv/bench-{slot.n} && echo left || true").strip() == ""
