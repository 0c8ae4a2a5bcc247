"""Tables and messages for people, with rich."""

from __future__ import annotations

import sys
from collections import Counter

from rich.console import Console
from rich.table import Table

from .deploy import Outcome
from .session import HostNote
from .state import HostState

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def say(msg) -> None:
    console.print(str(msg), markup=False, soft_wrap=True)


class Progress:
    """Where progress goes: on a terminal, a live table with each host's current step and time
    (other messages print above it); otherwise (CI, pipes) plain lines."""

    def __init__(self):
        self.rows: dict[str, HostNote] = {}
        self.live = None

    def __call__(self, msg) -> None:
        if self.live is None:
            say(msg)
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

    def __enter__(self) -> "Progress":
        if console.is_terminal:
            from rich.live import Live
            self.live = Live(self._table(), console=console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None


def outcomes_table(outcomes: list[Outcome], title: str) -> Table:
    t = Table(title=title)
    for col in ("host", "result", "before", "after", "seconds", "sent"):
        t.add_column(col)
    t.add_column("detail", no_wrap=True, overflow="ellipsis", max_width=70)
    for o in outcomes:
        result = "[green]ok[/]" if o.ok else ("[yellow]undone[/]" if o.undone else
                                             "[yellow]skipped[/]" if o.message.startswith("skipped") else "[red]FAILED[/]")
        t.add_row(o.host, result, o.before or "-", o.after or "-",
                  f"{o.seconds:.1f}" if o.seconds else "-", human_bytes(o.bytes_sent) if o.bytes_sent else "-",
                  o.message.splitlines()[0] if o.message else "")
    return t


def releases_table(rows: list[tuple[str, HostState]]) -> Table:
    t = Table(title="releases")
    for col in ("host", "release", "active", "state", "deployed"):
        t.add_column(col)
    for host, st in rows:
        if not st.releases:
            t.add_row(host, "-", "", "no releases", "")
        for r in reversed(st.releases):
            state = "incomplete" if not r.complete else ("bad" if r.bad else "ok")
            t.add_row(host, str(r.version), "*" if r.name == st.current else "", state,
                      str(r.meta.get("finalized_at", "")))
    return t


def status_table(rows: list[dict]) -> Table:
    t = Table(title="fleet status")
    for col in ("host", "group", "os", "active", "digest", "service", "health", "last deploy"):
        t.add_column(col)
    common = Counter(r.get("version") for r in rows).most_common(1)[0][0] if rows else None
    for r in rows:
        version = r.get("version") or "-"
        if r.get("version") != common:
            version = f"[yellow]{version}[/]"
        health = r["health"]
        health = f"[green]healthy ({r.get('answering')})[/]" if health == "healthy" else f"[red]{health}[/]"
        t.add_row(r["host"], r.get("group", "-"), r.get("os", "linux"), version, r.get("digest") or "-",
                  r["service"], health, r.get("last_deploy") or "-")
    return t


def plan_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    for col in ("host", "group", "before", "after", "action", "transfer", "migrations"):
        t.add_column(col)
    for r in rows:
        t.add_row(*(r[c] for c in ("host", "group", "before", "after", "action", "transfer", "migrations")))
    return t


def backups_table(rows: list[tuple[str, list[dict]]]) -> Table:
    t = Table(title="database backups")
    for col in ("host", "backup", "bytes"):
        t.add_column(col)
    for host, backups in rows:
        if not backups:
            t.add_row(host, "-", "")
        for b in backups:
            t.add_row(host, b["name"], str(b["bytes"]))
    return t


def history_table(rows: list[tuple[str, list[dict]]]) -> Table:
    t = Table(title="history")
    for col in ("host", "time", "user", "action", "from", "to", "result", "seconds"):
        t.add_column(col)
    for host, records in rows:
        for r in records:
            t.add_row(host, r.get("time", ""), r.get("user", ""), r.get("action", ""), r.get("before") or "-",
                      r.get("version") or "-", r.get("result", ""), str(r.get("seconds", "")))
    return t


def human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"
