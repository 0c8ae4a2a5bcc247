"""What users see: JSON documents, tables (values shown literally), log lines, and the `guard`
that turns every error into one `error:` line (or one JSON document)."""

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke.exceptions import Exit
from rich.console import Console

from sgpfab import report
from sgpfab.errors import InputError, RemoteError
from sgpfab.outcome import Outcome, Status
from sgpfab.state import HostState, Probe
from sgpfab.tasks import format_log_line, guard


def render(table) -> str:
    c = Console(width=250, record=True, color_system=None)
    c.print(table)
    return c.export_text()


def test_emit_json_is_one_document_with_schema_and_kind(capsys):
    @dataclass
    class Row:
        host: str
        n: int

    report.emit_json(
        "demo", rows=[Row("h1", 2)], probe=Probe(ok=True, code=200), status=Status.UNDONE, other=Path("/x")
    )
    out = capsys.readouterr().out
    doc, end = json.JSONDecoder().raw_decode(out)
    assert out[end:] == "\n"
    assert doc == {
        "schema": "sgpfab/1",
        "kind": "demo",
        "rows": [{"host": "h1", "n": 2}],
        "probe": Probe(ok=True, code=200).model_dump(mode="json"),
        "status": "undone",
        "other": "/x",
    }


def test_outcome_dict():
    o = Outcome("h1", "deploy", Status.UNDONE, "1.0.0", "1.0.0", "undone", 1.5, 10, {"upload": 0.5})
    assert report.outcome_dict(o) == {
        "host": "h1",
        "action": "deploy",
        "status": "undone",
        "ok": False,
        "before": "1.0.0",
        "after": "1.0.0",
        "message": "undone",
        "seconds": 1.5,
        "bytes_sent": 10,
        "timings": {"upload": 0.5},
    }


def test_outcomes_table_shows_the_first_line_of_each_message():
    t = report.outcomes_table(
        [Outcome("h1", "deploy", Status.FAILED, None, "1.0.0", "first line\nsecond line", 2.0, 2_500_000)], "deploy"
    )
    text = render(t)
    assert "first line" in text and "second line" not in text and "FAILED" in text and "2.5 MB" in text


def test_releases_table_and_dict():
    st = HostState.parse(
        {
            "current": "v1.0.0",
            "releases": [
                {"name": "v1.0.0", "complete": True, "bad": False, "meta": {"finalized_at": "t", "bundle_digest": "d"}},
                {"name": "v1.1.0", "complete": True, "bad": True, "bad_reason": "unhealthy"},
            ],
        }
    )
    text = render(report.releases_table([("h1", st), ("h2", HostState.parse({}))]))
    assert "no releases" in text and "bad" in text
    d = report.releases_dict("h1", st)
    assert d["releases"][0] == {
        "name": "v1.0.0",
        "version": "1.0.0",
        "active": True,
        "complete": True,
        "bad": False,
        "bad_reason": None,
        "digest": "d",
        "built": "t",
    }


def test_settings_values_are_shown_literally():
    text = render(report.settings_table([("h1", {"env": {"A": "x[/b]y", "B": "[red]v[/red]"}, "overrides": {}})]))
    assert "x[/b]y" in text and "[red]v[/red]" in text


def test_outcome_messages_are_shown_literally():
    text = render(
        report.outcomes_table(
            [Outcome("h1", "deploy", Status.FAILED, message="body does not match '[bold]'")], "deploy"
        )
    )
    assert "'[bold]'" in text


@pytest.mark.parametrize(
    "line, out",
    [
        (
            "2026-11-23T21:20:34+0000 staging1 shop-worker[1358]: job done",
            "h1 worker | 2026-11-23T21:20:34+0000 job done",
        ),
        ("2026-11-23T21:20:34+0000 staging1 shop-web[1]: GET / 200", "h1 web | 2026-11-23T21:20:34+0000 GET / 200"),
        (
            "2026-11-23T21:20:34+0000 staging1 systemd[1]: Started x.",
            "h1 systemd | 2026-11-23T21:20:34+0000 Started x.",
        ),
        (
            "2026-11-23T21:20:34+0000 staging1 systemd[1]: Started shop-worker@v1.0.0.service - tasks worker.",
            "h1 worker [systemd] | 2026-11-23T21:20:34+0000 Started shop-worker@v1.0.0.service - tasks worker.",
        ),
        (
            "2026-11-23T21:20:34+0000 staging1 systemd[1]: Stopped shopx-web@v1.service.",
            "h1 systemd | 2026-11-23T21:20:34+0000 Stopped shopx-web@v1.service.",
        ),
        ("-- No entries --", "h1 | -- No entries --"),
    ],
)
def test_format_log_line(line, out):
    assert format_log_line("h1", "shop", line) == out


# -- guard -------------------------------------------------------------------------------------------


def ctx():
    return SimpleNamespace(config={})


def guarded(exc):
    @guard
    def task(c, json=False):
        raise exc

    return task


@pytest.mark.parametrize(
    "exc, line",
    [
        (InputError("bad version"), "error: bad version"),
        (RemoteError("h1: cannot connect\ndetails on line two"), "error: h1: cannot connect"),
        (KeyboardInterrupt(), "error: interrupted"),
        (ValueError("boom"), "error: internal error: ValueError: boom (SGPFAB_DEBUG=1 shows where)"),
    ],
)
def test_guard_turns_errors_into_one_line(monkeypatch, exc, line):
    monkeypatch.delenv("SGPFAB_DEBUG", raising=False)
    with pytest.raises(Exit) as e:
        guarded(exc)(ctx())
    assert e.value.code == 1 and e.value.message == line


def test_guard_json_is_one_document(capsys, monkeypatch):
    monkeypatch.delenv("SGPFAB_DEBUG", raising=False)
    with pytest.raises(Exit) as e:
        guarded(RemoteError("h1: x\nmore"))(ctx(), json=True)
    assert e.value.code == 1 and not e.value.message
    doc = json.loads(capsys.readouterr().out)
    assert doc == {"schema": "sgpfab/1", "kind": "error", "error": "h1: x\nmore"}


def test_guard_debug_shows_unexpected_errors(monkeypatch):
    monkeypatch.setenv("SGPFAB_DEBUG", "1")
    with pytest.raises(ValueError):
        guarded(ValueError("boom"))(ctx())


def test_guard_lets_exit_codes_through_and_refuses_fabrics_own_executor():
    with pytest.raises(Exit) as e:
        guarded(Exit(code=2))(ctx())
    assert e.value.code == 2
    with pytest.raises(Exit) as e:
        guarded(InputError("x"))(SimpleNamespace(config={}, host="h1"))
    assert e.value.code == 1 and "fabric.yaml" in e.value.message
