"""What people and scripts see: rich tables, progress, and the JSON documents of `--json`.

Every JSON document has `"schema": "sgpfab/1"`, a `"kind"` and the data of that kind; the JSON
Schema is sgpfab/output.schema.json (tests validate every document against it).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape as _e
from rich.table import Table

from .outcome import Outcome, Status
from .session import HostNote
from .state import HostState

if TYPE_CHECKING:
    from .fleetops import PlanRow
    from .rollout import Rollout

SCHEMA_ID = "sgpfab/1"
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
errors = Console(highlight=False, stderr=True, width=None if sys.stderr.isatty() else 200)


def say(msg: object) -> None:
    console.print(str(msg), markup=False, soft_wrap=True)


def say_err(msg: object) -> None:
    errors.print(str(msg), markup=False, soft_wrap=True)


def emit_json(kind: str, **data: Any) -> None:
    doc = {"schema": SCHEMA_ID, "kind": kind, **data}
    sys.stdout.write(json.dumps(doc, indent=1, sort_keys=True, default=_plain) + "\n")
    sys.stdout.flush()


def _plain(obj: object) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, Status):
        return obj.value
    return str(obj)


class Progress:
    """Where progress goes: on a terminal, a live table with each host's current step and time
    (other messages print above it); otherwise (CI, pipes, --json) plain lines, on stderr when
    stdout carries JSON."""

    def __init__(self, to_stderr: bool = False) -> None:
        self.rows: dict[str, HostNote] = {}
        self.live: Any = None  # a rich.live.Live on a terminal
        self.out = errors if to_stderr else console

    def __call__(self, msg: object) -> None:
        if self.live is None:
            self.out.print(str(msg), markup=False, soft_wrap=True)
        elif isinstance(msg, HostNote):
            self.rows[msg.host] = msg
            self.live.update(self._table())
        else:
            self.live.console.print(str(msg), markup=False, soft_wrap=True)

    def _table(self) -> Table:
        t = Table(title="in progress", show_edge=False)
        for col in ("host", "seconds", "step"):
            t.add_column(col)
        for host, note in self.rows.items():
            t.add_row(host, f"{note.seconds:.1f}", note.message)
        return t

    def __enter__(self) -> Progress:
        if self.out.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.out, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None


def human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


_RESULT = {
    Status.OK: "[green]ok[/]",
    Status.NOOP: "[green]ok[/]",
    Status.UNDONE: "[yellow]undone[/]",
    Status.SKIPPED: "[yellow]skipped[/]",
    Status.FAILED: "[red]FAILED[/]",
    Status.UNDO_FAILED: "[red]UNDO FAILED[/]",
}


def outcomes_table(outcomes: list[Outcome], title: str, timings: bool = False) -> Table:
    t = Table(title=title)
    for col in ("host", "result", "before", "after", "seconds", "sent"):
        t.add_column(col)
    t.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=80)
    if timings:
        t.add_column("timings")
    for o in outcomes:
        row = [
            _e(o.host),
            _RESULT[o.status],
            _e(o.before or "-"),
            _e(o.after or "-"),
            f"{o.seconds:.1f}" if o.seconds else "-",
            human_bytes(o.bytes_sent) if o.bytes_sent else "-",
            _e(o.message.splitlines()[0]) if o.message else "",
        ]
        if timings:
            row.append(" ".join(f"{k}={v:.2f}" for k, v in o.timings.items()))
        t.add_row(*row)
    return t


def outcome_dict(o: Outcome) -> dict[str, Any]:
    return {
        "host": o.host,
        "action": o.action,
        "status": o.status.value,
        "ok": o.ok,
        "before": o.before,
        "after": o.after,
        "message": o.message,
        "seconds": o.seconds,
        "bytes_sent": o.bytes_sent,
        "timings": o.timings,
    }


def releases_table(rows: list[tuple[str, HostState]]) -> Table:
    t = Table(title="releases")
    for col in ("host", "release", "active", "state", "built"):
        t.add_column(col)
    for host, st in rows:
        if not st.releases:
            t.add_row(_e(host), "-", "", "no releases", "")
        for r in reversed(st.releases):
            state = "incomplete" if not r.complete else ("bad" if r.bad else "ok")
            t.add_row(_e(host), _e(str(r.version)), "*" if r.name == st.current else "", state, _e(r.meta.finalized_at))
    return t


def releases_dict(host: str, st: HostState) -> dict[str, Any]:
    return {
        "host": host,
        "current": st.current,
        "journal": st.journal is not None,
        "releases": [
            {
                "name": r.name,
                "version": str(r.version),
                "active": r.name == st.current,
                "complete": r.complete,
                "bad": r.bad,
                "bad_reason": r.bad_reason,
                "digest": r.meta.bundle_digest,
                "built": r.meta.finalized_at,
            }
            for r in st.releases
        ],
    }


def status_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="fleet status")
    for col in ("host", "app", "group", "os", "active", "digest", "processes", "health", "settings", "last deploy"):
        t.add_column(col)
    common = Counter(r.get("version") for r in rows).most_common(1)[0][0] if rows else None
    for r in rows:
        version = r.get("version") or "-"
        version = _e(version)
        if r.get("version") != common:
            version = f"[yellow]{version}[/]"
        health = r["health"]
        health = "[green]healthy[/]" if health == "healthy" else f"[red]{_e(health)}[/]"
        procs = _e(", ".join(f"{k}: {v}" for k, v in r["processes"].items()) or "-")
        settings = _e(r["settings"]) if r["settings"] != "CHANGED since deploy" else "[yellow]CHANGED since deploy[/]"
        t.add_row(
            _e(r["host"]),
            _e(r["app"]),
            _e(r["group"]),
            r["os"],
            version,
            r.get("digest") or "-",
            procs,
            health,
            settings,
            _e(r.get("last_deploy") or "-"),
        )
    return t


def plan_table(rows: list[PlanRow], title: str) -> Table:
    t = Table(title=title)
    for col in ("host", "group", "before", "after", "action", "transfer", "migrations", "settings", "release commands"):
        t.add_column(col)
    for r in rows:
        hooks = (
            "; ".join(
                f"{i}: run" if d["run"] else f"{i}: skipped ({d['reason']})"
                for i, d in enumerate(r.release_decisions, start=1)
            )
            or "-"
        )
        action = {
            "nothing": "nothing (already active)",
            "refused": "REFUSED: same version, different content",
            "switch": "switch to the release already there",
            "upload": "upload, build, switch",
        }[r.action]
        transfer = (
            f"up to {human_bytes(r.transfer_bytes)} ({r.wheels_missing}/{r.wheels_total} wheels)"
            if r.action == "upload"
            else "-"
        )
        if r.action in ("nothing", "refused"):
            mig = "-"
        elif r.migrations:
            mig = f"{len(r.migrations)} new: {', '.join(r.migrations[:3])}{' ...' if len(r.migrations) > 3 else ''}"
        else:
            mig = "SCHEMA CHANGES" if r.schema_change else "none pending"
        settings = {None: "-", True: "CHANGED", False: "unchanged"}[r.settings_changed]
        t.add_row(
            _e(r.host), _e(r.group), _e(r.before or "-"), _e(r.after), action, transfer, _e(mig), settings, _e(hooks)
        )
    return t


def backups_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> Table:
    t = Table(title="database backups")
    for col in ("host", "backup", "bytes"):
        t.add_column(col)
    for host, backups in rows:
        if not backups:
            t.add_row(_e(host), "-", "")
        for b in backups:
            t.add_row(_e(host), _e(b["name"]), str(b["bytes"]))
    return t


def history_table(rows: list[tuple[str, list[dict[str, Any]]]]) -> Table:
    t = Table(title="history")
    for col in ("host", "time", "user", "app", "action", "from", "to", "result", "seconds"):
        t.add_column(col)
    for host, records in rows:
        for r in records:
            cells = (
                host,
                r.get("time", ""),
                r.get("user", ""),
                r.get("app", ""),
                r.get("action", ""),
                r.get("before") or "-",
                r.get("version") or "-",
                r.get("result", ""),
                r.get("seconds", ""),
            )
            t.add_row(*(_e(str(c)) for c in cells))
    return t


def settings_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    t = Table(title="settings (secrets masked)")
    for col in ("host", "name", "value", "source"):
        t.add_column(col)
    for host, data in rows:
        for k, v in sorted(data.get("env", {}).items()):
            source = "override" if k in data.get("overrides", {}) else "deploy"
            t.add_row(_e(host), _e(k), _e(str(data.get("overrides", {}).get(k, v))), source)
        for k, v in sorted(data.get("overrides", {}).items()):
            if k not in data.get("env", {}):
                t.add_row(_e(host), _e(k), _e(str(v)), "override")
    return t


def print_rollout(
    result: Rollout, title: str, *, as_json: bool = False, timings: bool = False, stopped_line: bool = True
) -> None:
    """A rollout's summary: the JSON document, or the table, each failed host's message in full
    (hosts the rollout never reached are in the table only) and why the rollout stopped."""
    if as_json:
        emit_json(
            "rollout",
            title=title,
            stopped=result.stopped or None,
            exit_code=result.exit_code,
            outcomes=[outcome_dict(o) for o in result.outcomes],
        )
        return
    console.print(outcomes_table(result.outcomes, title, timings))
    for o in result.outcomes:
        if not o.ok and o.message and o.status is not Status.SKIPPED:
            text = o.message if o.message.startswith(f"{o.host}:") else f"{o.host}: {o.message}"
            console.print(text, markup=False, highlight=False, style="red")
    if result.stopped and stopped_line:
        console.print(f"rollout {result.stopped}", style="red", markup=False)
