"""Plots of a benchmark result (headless: matplotlib's Agg backend).

    python benchmarks/plots.py [benchmarks/results.json] [docs/img]

Writes wall_vs_fleet.png (wall time, controller CPU per host and peak RSS against fleet size),
latency_during_deploy.png (every request's latency during re-deploys and rollbacks) and
deploy_steps.png (where a host's seconds go, per step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

GOAL_MS = 250


def _median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def wall_vs_fleet(results: dict, path: Path) -> Path | None:
    series = results.get("series") or {}
    if not series:
        return None
    sizes = sorted(int(n) for n in series if any(r.get("rc") == 0 for r in series[n].get("redeploy") or []))
    if not sizes:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for key, label, style in (
        ("first_deploy", "first deploy (cold host caches, bundle prebuilt)", "o-"),
        ("redeploy", "one-line re-deploy (bundle prebuilt)", "s-"),
        ("rollback", "rollback", "^-"),
    ):
        ys = []
        for n in sizes:
            runs = series[str(n)].get(key) or []
            runs = runs if isinstance(runs, list) else [runs]
            ys.append(_median([r["wall_s"] for r in runs if r.get("rc") == 0]))
        pts = [(n, y) for n, y in zip(sizes, ys) if y is not None]
        if pts:
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax1.axhline(4, color="grey", ls=":", lw=1)
    ax1.text(sizes[-1], 4, "re-deploy goal (4 hosts): 4 s ", va="bottom", ha="right", fontsize=8, color="grey")
    ax1.axhline(2, color="grey", ls="--", lw=1)
    ax1.text(sizes[-1], 2, "rollback goal (4 hosts): 2 s ", va="bottom", ha="right", fontsize=8, color="grey")
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(sizes, [str(n) for n in sizes])
    ax1.set_xlabel("hosts (--parallel = hosts; all containers share the machine's 2 cores)")
    ax1.set_ylabel("wall time of `fab ...` (s)")
    ax1.set_title("wall time vs fleet size")
    ax1.set_ylim(bottom=0)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)

    cpu, cpu_rb, rss = [], [], []
    for n in sizes:
        runs = [r for r in series[str(n)].get("redeploy") or [] if r.get("rc") == 0]
        rb = [r for r in series[str(n)].get("rollback") or [] if r.get("rc") == 0]
        cpu.append(_median([r["cpu_per_host_s"] for r in runs]))
        cpu_rb.append(_median([r["cpu_per_host_s"] for r in rb]))
        rss.append(_median([r["maxrss_mb"] for r in runs]))
    ax2.plot(sizes, cpu, "s-", color="tab:red", label="controller CPU per host (s), re-deploy")
    pts = [(n, c) for n, c in zip(sizes, cpu_rb) if c is not None]
    if pts:
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], "^:", color="tab:red", label="... rollback")
    ax2.axhline(0.5, color="tab:red", ls=":", lw=1)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(sizes, [str(n) for n in sizes])
    ax2.set_xlabel("hosts")
    ax2.set_ylabel("CPU s per host-operation", color="tab:red")
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(sizes, rss, "o--", color="tab:blue", label="peak RSS of the controller (MB)")
    ax3.set_ylabel("peak RSS (MB)", color="tab:blue")
    ax3.set_ylim(bottom=0)
    ax2.set_title("controller cost of a re-deploy")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def short(case: dict) -> str:
    server = (case.get("server") or "").split()[0]
    return f"{case['app']} ({server}){', slow start' if case.get('slow_start') else ''}"


def latency(results: dict, path: Path) -> Path | None:
    load = results.get("load") or {}
    cases = [(k, v) for k, v in load.items() if v.get("deploy") or v.get("rollback")]
    if not cases:
        return None
    fig, axes = plt.subplots(len(cases), 2, figsize=(12, 2.4 * len(cases) + 0.6), squeeze=False, sharey=True)
    for row, (_key, case) in enumerate(cases):
        for col, phase in enumerate(("deploy", "rollback")):
            ax = axes[row][col]
            p = case.get(phase)
            if not p or not p.get("samples"):
                ax.set_visible(False)
                continue
            s = p["samples"]
            t0 = p["op_start"]
            good = [(x[0] - t0, max(x[1], 0.1)) for x in s if x[2]]
            bad = [(x[0] - t0, max(x[1], 0.1)) for x in s if not x[2]]
            ax.axvspan(0, p["op_end"] - t0, color="tab:green", alpha=0.08, lw=0)
            ax.plot([g[0] for g in good], [g[1] for g in good], ".", ms=2, color="tab:blue")
            if bad:
                ax.plot(
                    [b[0] for b in bad], [b[1] for b in bad], "x", ms=6, color="tab:red", label=f"{len(bad)} failed"
                )
                ax.legend(fontsize=7, loc="upper right")
            ax.axhline(GOAL_MS, color="tab:red", ls=":", lw=1)
            ax.set_yscale("log")
            st = p["stats"]
            what = "re-deploy" if phase == "deploy" else "rollback"
            ax.set_title(
                f"{short(case)}: {what} — worst {st['worst_ms']:.0f} ms, p99 {st['p99_ms']:.0f} ms,"
                f" {st['failed']}/{st['requests']} failed",
                fontsize=8.5,
            )
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("latency (ms)")
            if row == len(cases) - 1:
                ax.set_xlabel("seconds since `fab` started (shaded: fab running)")
    fig.suptitle(
        "every request's latency under load (GET health endpoint, one connection per request; red dotted: 250 ms)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def steps(results: dict, path: Path) -> Path | None:
    tables = [(k, v) for k, v in (results.get("steps") or {}).items() if v.get("steps")]
    if not tables:
        return None
    fig, ax = plt.subplots(figsize=(12, 1.8 + 0.55 * len(tables)))
    names = []
    for t in tables:
        for s in t[1]["steps"]:
            if s not in names:
                names.append(s)
    cmap = plt.get_cmap("tab20")
    colors = {s: cmap(i % 20) for i, s in enumerate(names)}
    for i, (_key, t) in enumerate(tables):
        left = 0.0
        for s, v in t["steps"].items():
            w = v["mean_s"]
            ax.barh(i, w, left=left, color=colors[s], edgecolor="white", lw=0.5)
            if w > 0.35:
                ax.text(left + w / 2, i, s, ha="center", va="center", fontsize=6.5)
            left += w
        over = t.get("outside_steps_s")
        if over:
            ax.barh(i, over, left=left, color="lightgrey", edgecolor="white", lw=0.5, hatch="//")
            ax.text(left + over / 2, i, "outside the\nhost steps", ha="center", va="center", fontsize=6)
    from matplotlib.patches import Patch

    ax.legend(
        [Patch(color=colors[s]) for s in names],
        names,
        fontsize=7,
        ncol=min(len(names), 8),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(tables) < 4 else -0.15),
        frameon=False,
    )
    ax.set_yticks(range(len(tables)), [t[1]["label"] for t in tables], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "seconds (mean over hosts; grey: the rest of the `fab` wall time: start-up, bundle build if any,"
        " connect, preflight, exit)"
    )
    ax.set_title("where a host's seconds go (JSON summary timings per step)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_all(results: dict, outdir: Path, log=print) -> list[Path]:
    """Every plot there is data for; a plot that fails is reported, never fatal."""
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    for fn, name in (
        (wall_vs_fleet, "wall_vs_fleet.png"),
        (latency, "latency_during_deploy.png"),
        (steps, "deploy_steps.png"),
    ):
        try:
            p = fn(results, outdir / name)
        except Exception as e:
            plt.close("all")
            log(f"plot {name} failed: {type(e).__name__}: {e}")
            continue
        if p is not None:
            made.append(p)
    return made


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("results.json"))
    out = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).resolve().parents[1] / "docs" / "img")
    for p in draw_all(json.loads(src.read_text()), out):
        print(p)
