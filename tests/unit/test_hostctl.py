"""The host helper (sgpfab/remote/hostctl.py), run for real against API_ROOTs in tmp_path: in this
process through main() (tests/support/builders.hostctl) or as `python hostctl.py` where
several processes must race. Health probes go to a real HTTP server started here."""

import fcntl
import http.server
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.builders import (
    HOSTILE_ONE_LINE,
    complete_release,
    hostctl,
    sha256,
    stage_release,
)

from sgpfab.remote import hostctl as hc
from sgpfab.state import GateResult, HostFacts, HostState

HOSTCTL = Path(hc.__file__)
MARKER = ".sgpfab-release.json"


def ok(r):
    assert r.rc == 0, r.err
    assert r.err == ""
    return r.json


def refused(r, *words):
    """Exit 2, nothing on stdout, one `hostctl: ...` line on stderr containing `words`."""
    assert r.rc == 2, (r.rc, r.out, r.err)
    assert r.out == ""
    assert r.err.startswith("hostctl: ") and r.err.endswith("\n") and r.err.count("\n") == 1, r.err
    for w in words:
        assert w in r.err, r.err
    return r.err


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "api"
    r.mkdir()
    return r


def run_cli(root, *args, stdin="", timeout=60):
    return subprocess.run(
        [sys.executable, str(HOSTCTL), "--root", str(root), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- state -------------------------------------------------------------------------------------------


def test_state_of_an_empty_root(root):
    st = ok(hostctl(root, "state"))
    assert st == {
        "root": str(root),
        "current": None,
        "releases": [],
        "partials": [],
        "junk": [],
        "incoming": [],
        "journal": None,
        "db_exists": False,
    }


def test_state_lists_releases_partials_junk_incoming_and_the_journal(root):
    complete_release(root, "v1.0.0", meta={"version": "1.0.0", "finalized_at": "t1"})
    complete_release(root, "v1.1.0", bad="health check failed")
    (root / "releases" / "v1.2.0").mkdir()  # no marker: incomplete
    (root / "releases" / ".partial-v2.0.0").mkdir()
    (root / "releases" / "notes.txt").write_text("x")  # junk: a file
    (root / "releases" / "latest").mkdir()  # junk: not a release name
    (root / "releases" / "v1٠.0.0").mkdir()  # junk: not ASCII
    os.symlink("v1.0.0", root / "releases" / "vlink")  # junk: a link
    os.symlink("v1.0.0", root / "releases" / "current")
    os.symlink("v1.0.0", root / "releases" / ".current.123")  # a switch's temporary link: ignored
    (root / "incoming" / "v2.0.0").mkdir(parents=True)
    (root / ".sgpfab").mkdir()
    (root / ".sgpfab" / "journal.json").write_text('{"op": "deploy", "from": "v1.0.0", "to": "v1.2.0"}')
    (root / "shared" / "db").mkdir(parents=True)
    (root / "shared" / "db" / "app.db").write_bytes(b"")
    st = ok(hostctl(root, "state"))
    assert st["current"] == "v1.0.0"
    assert [(r["name"], r["complete"], r["bad"]) for r in st["releases"]] == [
        ("v1.0.0", True, False),
        ("v1.1.0", True, True),
        ("v1.2.0", False, False),
    ]
    assert st["releases"][0]["meta"] == {"version": "1.0.0", "finalized_at": "t1"}
    assert st["releases"][1]["bad_reason"] == "health check failed"
    assert st["partials"] == [".partial-v2.0.0"]
    assert sorted(st["junk"]) == sorted(["latest", "notes.txt", "v1٠.0.0", "vlink"])
    assert st["incoming"] == ["v2.0.0"]
    assert st["journal"] == {"op": "deploy", "from": "v1.0.0", "to": "v1.2.0"}
    assert st["db_exists"] is True
    parsed = HostState.parse(st)
    assert parsed.active.name == "v1.0.0" and parsed.journal.to == "v1.2.0"


def test_state_with_a_corrupt_marker_is_an_incomplete_release(root):
    d = complete_release(root, "v1.0.0")
    (d / MARKER).write_text("{not json")
    assert ok(hostctl(root, "state"))["releases"][0]["complete"] is False


# -- verify ------------------------------------------------------------------------------------------


def test_verify_accepts_exactly_the_manifest(root):
    stage_release(root, "v1.0.0", files={"a.py": "print(1)\n", "pkg/b.py": b"\x00\x01binary", "empty": ""})
    assert ok(hostctl(root, "verify", "--name", "v1.0.0")) == {"verified": "v1.0.0", "files": 3}
    assert (root / "releases" / ".partial-v1.0.0").is_dir() and (root / "incoming" / "v1.0.0").is_dir()


def wheelhouse(root, wheels: dict[str, bytes]):
    d = root / "wheelhouse"
    d.mkdir(exist_ok=True)
    for name, data in wheels.items():
        (d / name).write_bytes(data)


def test_verify_checks_every_wheel_and_deletes_a_corrupt_one(root):
    files = {"a.py": "x"}
    good, bad = b"good wheel", b"tampered wheel"
    manifest = {
        "version": "1.0.0",
        "files": {"a.py": sha256("x")},
        "wheels": {
            "wheels/good-1.0-py3-none-any.whl": sha256(good),
            "wheels/bad-1.0-py3-none-any.whl": sha256(b"original wheel"),
        },
    }
    stage_release(root, "v1.0.0", files=files, manifest=manifest)
    wheelhouse(root, {"good-1.0-py3-none-any.whl": good, "bad-1.0-py3-none-any.whl": bad})
    refused(hostctl(root, "verify", "--name", "v1.0.0"), "wheel", "bad-1.0-py3-none-any.whl", "SHA-256")
    assert not (root / "wheelhouse" / "bad-1.0-py3-none-any.whl").exists(), "a corrupt wheel is deleted"
    assert (root / "wheelhouse" / "good-1.0-py3-none-any.whl").exists()
    assert not (root / "releases" / ".partial-v1.0.0").exists() and not (root / "incoming" / "v1.0.0").exists()


def test_verify_refuses_a_missing_wheel(root):
    stage_release(root, "v1.0.0", files={}, manifest={"version": "1.0.0", "files": {}, "wheels": {"x.whl": "0" * 64}})
    refused(hostctl(root, "verify", "--name", "v1.0.0"), "x.whl")


def _tamper_file(p):
    (p / "app" / "main.py").write_text("print('owned')\n")


def _extra_file(p):
    (p / "app" / "extra.py").write_text("")


def _missing_file(p):
    (p / "README").unlink()


def _symlink_file(p):
    (p / "README").unlink()
    os.symlink("/etc/passwd", p / "README")


def _symlink_dir(p):
    os.symlink("/etc", p / "etc")


def _fifo(p):
    os.mkfifo(p / "pipe")


@pytest.mark.parametrize(
    "tamper, words",
    [
        (_tamper_file, ["app/main.py", "does not match"]),
        (_extra_file, ["app/extra.py"]),
        (_missing_file, ["README"]),
        (_symlink_file, ["forbidden entry", "README"]),
        (_symlink_dir, ["forbidden link", "etc"]),
        (_fifo, ["forbidden entry", "pipe"]),
    ],
)
def test_verify_refuses_a_tampered_tree_and_removes_partial_and_upload(root, tamper, words):
    partial = stage_release(root, "v1.0.0")
    tamper(partial)
    refused(hostctl(root, "verify", "--name", "v1.0.0"), *words)
    assert not partial.exists() and not (root / "incoming" / "v1.0.0").exists()
    assert os.path.exists("/etc/passwd"), "links are removed, never followed"


@pytest.mark.parametrize(
    "manifest, words",
    [
        ("{not json", ["no readable manifest"]),
        ('["a list"]', ["malformed manifest"]),
        ('{"version": "1.0.0", "files": ["a"]}', ["malformed manifest"]),
        ('{"version": "1.0.0"}', ["malformed manifest"]),
        ('{"version": "2.0.0", "files": {}}', ["bundle is version 2.0.0, not v1.0.0"]),
    ],
)
def test_verify_refuses_a_bad_manifest(root, manifest, words):
    partial = stage_release(root, "v1.0.0")
    (root / "incoming" / "v1.0.0" / "manifest.json").write_text(manifest)
    refused(hostctl(root, "verify", "--name", "v1.0.0"), *words)
    assert not partial.exists() and not (root / "incoming" / "v1.0.0").exists()


def test_verify_without_a_manifest(root):
    partial = stage_release(root, "v1.0.0")
    (root / "incoming" / "v1.0.0" / "manifest.json").unlink()
    refused(hostctl(root, "verify", "--name", "v1.0.0"), "no readable manifest")
    assert not partial.exists()


def test_verify_refuses_a_manifest_with_non_string_digests(root):
    partial = stage_release(root, "v1.0.0", manifest={"version": "1.0.0", "files": {"README": ["x"]}})
    refused(hostctl(root, "verify", "--name", "v1.0.0"), "manifest")
    assert not partial.exists()


@pytest.mark.parametrize("name", ["v1٠.0", "1.0.0", "vé", "v" + "1" * 65, "v1.0.0;x"])
def test_verify_refuses_invalid_names_and_removes_their_upload(root, name):
    partial = stage_release(root, name, manifest={"version": name[1:], "files": {}})
    refused(hostctl(root, "verify", "--name", name), "invalid release name")
    assert not partial.exists() and not (root / "incoming" / name).exists()


@pytest.mark.parametrize("name", ["../v1.0.0", "v1.0.0/..", "v1.0.0/../../x", "/etc"])
def test_verify_never_deletes_outside_the_root(root, name):
    outside = root.parent / "keep-me"
    outside.mkdir()
    (root / "incoming").mkdir()
    (root / "releases").mkdir()
    refused(hostctl(root, "verify", "--name", name), "invalid release name")
    assert outside.is_dir() and (root / "incoming").is_dir() and (root / "releases").is_dir()


def test_verify_without_a_staged_tree(root):
    (root / "incoming" / "v1.0.0").mkdir(parents=True)
    (root / "incoming" / "v1.0.0" / "manifest.json").write_text('{"version": "1.0.0", "files": {}}')
    refused(hostctl(root, "verify", "--name", "v1.0.0"), "no staged release")


# -- finalize, switch, unlink-current ---------------------------------------------------------------


def test_finalize_records_meta_renames_and_drops_the_upload(root):
    stage_release(root, "v1.0.0")
    meta = {"version": "1.0.0", "bundle_digest": "abc", "name": "spoofed", "nested": {"a": [1, "x"]}}
    assert ok(hostctl(root, "finalize", "--name", "v1.0.0", stdin=meta)) == {
        "release": "v1.0.0",
        "bytecode_seeded": 0,
        "state": None,
    }
    rel = root / "releases" / "v1.0.0"
    marker = json.loads((rel / MARKER).read_text())
    assert marker["name"] == "v1.0.0" and marker["bundle_digest"] == "abc" and marker["nested"] == {"a": [1, "x"]}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", marker["finalized_at"])
    assert not (root / "releases" / ".partial-v1.0.0").exists() and not (root / "incoming" / "v1.0.0").exists()
    assert (rel / "app" / "main.py").read_text() == "print('hi')\n"


def test_finalize_with_no_metadata(root):
    stage_release(root, "v1.0.0")
    ok(hostctl(root, "finalize", "--name", "v1.0.0"))
    assert set(json.loads((root / "releases" / "v1.0.0" / MARKER).read_text())) == {"name", "finalized_at"}


def test_finalize_never_replaces_an_existing_release(root):
    complete_release(root, "v1.0.0", meta={"version": "1.0.0", "original": True})
    partial = stage_release(root, "v1.0.0")
    refused(hostctl(root, "finalize", "--name", "v1.0.0", stdin={}), "already exists")
    assert json.loads((root / "releases" / "v1.0.0" / MARKER).read_text())["original"] is True
    assert partial.exists()


@pytest.mark.parametrize(
    "stdin, words", [('["x"]', ["JSON object"]), ("{bad", ["not JSON"]), ('"text"', ["JSON object"])]
)
def test_finalize_refuses_bad_metadata(root, stdin, words):
    stage_release(root, "v1.0.0")
    refused(hostctl(root, "finalize", "--name", "v1.0.0", stdin=stdin), *words)
    assert not (root / "releases" / "v1.0.0").exists()


def test_finalize_refuses_missing_partials_and_bad_names(root):
    refused(hostctl(root, "finalize", "--name", "v1.0.0"), "no staged release")
    refused(hostctl(root, "finalize", "--name", "../x"), "invalid release name")


def test_switch_points_current_at_a_release_and_reports_the_previous_one(root):
    complete_release(root, "v1.0.0")
    complete_release(root, "v1.1.0-rc.1+b7")
    assert ok(hostctl(root, "switch", "--to", "v1.0.0")) == {"previous": None, "current": "v1.0.0"}
    link = root / "releases" / "current"
    assert link.is_symlink() and os.readlink(link) == "v1.0.0", "relative: the tree can move"
    assert ok(hostctl(root, "switch", "--to", "v1.1.0-rc.1+b7")) == {"previous": "v1.0.0", "current": "v1.1.0-rc.1+b7"}
    assert os.readlink(link) == "v1.1.0-rc.1+b7"
    assert not list((root / "releases").glob(".current.*")), "no temporary link left"
    assert ok(hostctl(root, "state"))["current"] == "v1.1.0-rc.1+b7"


def test_switch_replaces_current_atomically(root):
    for v in ("v1.0.0", "v2.0.0"):
        complete_release(root, v)
    ok(hostctl(root, "switch", "--to", "v1.0.0"))
    link, seen, stop = root / "releases" / "current", set(), threading.Event()

    def watch():
        while not stop.is_set():
            try:
                seen.add(os.readlink(link))
            except OSError as e:
                seen.add(f"MISSING: {e}")

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(40):
            target = ("v2.0.0", "v1.0.0")[i % 2]
            if i < 2:
                assert run_cli(root, "switch", "--to", target).returncode == 0
            else:
                assert hostctl(root, "switch", "--to", target).rc == 0
    finally:
        stop.set()
        t.join()
    assert seen == {"v1.0.0", "v2.0.0"}, "current was never missing or anything else"


@pytest.mark.parametrize(
    "setup, name, words",
    [
        (lambda r: (r / "releases" / "v2.0.0").mkdir(parents=True), "v2.0.0", ["missing or incomplete"]),
        (lambda r: None, "v9.9.9", ["missing or incomplete"]),
        (lambda r: None, "../../etc", ["invalid release name"]),
        (lambda r: None, "v1..0", ["invalid release name"]),
        (lambda r: None, "v1.0.0\n", ["invalid release name"]),
        (lambda r: None, "current", ["invalid release name"]),
    ],
)
def test_switch_refuses_incomplete_missing_and_hostile_names(root, setup, name, words):
    complete_release(root, "v1.0.0")
    ok(hostctl(root, "switch", "--to", "v1.0.0"))
    setup(root)
    refused(hostctl(root, "switch", "--to", name), *words)
    assert os.readlink(root / "releases" / "current") == "v1.0.0"


def test_switch_survives_a_leftover_temporary_link(root):
    complete_release(root, "v1.0.0")
    (root / "releases").mkdir(exist_ok=True)
    os.symlink("junk", root / "releases" / f".current.{os.getpid()}")
    ok(hostctl(root, "switch", "--to", "v1.0.0"))
    assert os.readlink(root / "releases" / "current") == "v1.0.0"


def test_unlink_current(root):
    complete_release(root, "v1.0.0")
    ok(hostctl(root, "switch", "--to", "v1.0.0"))
    assert ok(hostctl(root, "unlink-current")) == {"current": None}
    assert not os.path.lexists(root / "releases" / "current") and (root / "releases" / "v1.0.0").is_dir()
    assert ok(hostctl(root, "unlink-current")) == {"current": None}


# -- journal, mark, remove, meta-update ----------------------------------------------------------------


def test_journal_begin_and_clear(root):
    (root / ".sgpfab").mkdir()  # made by prepare
    rec = ok(hostctl(root, "journal", "begin", stdin={"op": "rollback", "from": "v1.1.0", "to": "v1.0.0"}))["journal"]
    assert rec["to"] == "v1.0.0" and rec["from"] == "v1.1.0" and rec["op"] == "rollback" and rec["since"]
    assert ok(hostctl(root, "state"))["journal"] == rec
    assert ok(hostctl(root, "journal", "clear")) == {"journal": None}
    assert ok(hostctl(root, "state"))["journal"] is None
    assert ok(hostctl(root, "journal", "clear")) == {"journal": None}


@pytest.mark.parametrize("stdin", ['{"op": "deploy"}', "[]", "", "null"])
def test_journal_begin_needs_a_target(root, stdin):
    refused(hostctl(root, "journal", "begin", stdin=stdin), "needs at least 'to'")
    assert not (root / ".sgpfab" / "journal.json").exists()


def test_mark_bad_and_clear(root):
    complete_release(root, "v1.0.0")
    assert ok(hostctl(root, "mark", "--name", "v1.0.0", "--bad", "--reason", "x" * 500)) == {
        "release": "v1.0.0",
        "bad": True,
    }
    r = ok(hostctl(root, "state"))["releases"][0]
    assert r["bad"] and r["bad_reason"] == "x" * 300
    ok(hostctl(root, "mark", "--name", "v1.0.0", "--bad"))
    assert ok(hostctl(root, "state"))["releases"][0]["bad_reason"] == "marked bad"
    assert ok(hostctl(root, "mark", "--name", "v1.0.0")) == {"release": "v1.0.0", "bad": False}
    assert ok(hostctl(root, "state"))["releases"][0]["bad"] is False
    refused(hostctl(root, "mark", "--name", "v9.0.0", "--bad"), "no release v9.0.0")
    refused(hostctl(root, "mark", "--name", "../v1.0.0", "--bad"), "invalid release name")


def test_remove_deletes_releases_partials_uploads_and_junk(root):
    for v in ("v1.0.0", "v1.1.0", "v1.2.0"):
        complete_release(root, v)
    ok(hostctl(root, "switch", "--to", "v1.2.0"))
    (root / "releases" / ".partial-v2.0.0" / "sub").mkdir(parents=True)
    (root / "releases" / "notes.txt").write_text("x")
    os.symlink("/etc", root / "releases" / "vlink")
    (root / "incoming" / "v2.0.0").mkdir(parents=True)
    (root / "incoming" / "v1.0.0").mkdir(parents=True)
    out = ok(hostctl(root, "remove", "v1.0.0", ".partial-v2.0.0", "notes.txt", "vlink", "v2.0.0", "nothing-here"))
    assert out == {"removed": sorted([".partial-v2.0.0", "notes.txt", "v1.0.0", "v2.0.0", "vlink"])}
    assert sorted(os.listdir(root / "releases")) == ["current", "v1.1.0", "v1.2.0"]
    assert os.listdir(root / "incoming") == []
    assert os.path.isdir("/etc"), "a link is unlinked, never followed"


@pytest.mark.parametrize(
    "names, words",
    [
        (["v1.0.0", "v1.2.0"], ["refusing to remove the active release v1.2.0"]),
        (["current"], ["refusing to remove the active release current"]),
        (["v1.0.0", "../v1.2.0"], ["invalid name"]),
        (["a/b"], ["invalid name"]),
        (["v1.0.0", ".."], ["invalid name"]),
        (["v1.0.0", ""], ["invalid name"]),
    ],
)
def test_remove_checks_every_name_before_deleting_anything(root, names, words):
    for v in ("v1.0.0", "v1.2.0"):
        complete_release(root, v)
    ok(hostctl(root, "switch", "--to", "v1.2.0"))
    refused(hostctl(root, "remove", *names), *words)
    assert sorted(os.listdir(root / "releases")) == ["current", "v1.0.0", "v1.2.0"]


def test_remove_dot_deletes_nothing(root):
    for v in ("v1.0.0", "v1.2.0"):
        complete_release(root, v)
    ok(hostctl(root, "switch", "--to", "v1.2.0"))
    hostctl(root, "remove", ".")
    assert sorted(os.listdir(root / "releases")) == ["current", "v1.0.0", "v1.2.0"]


def test_meta_update_merges_into_the_marker(root):
    complete_release(root, "v1.0.0", meta={"version": "1.0.0", "keep": 1})
    assert ok(hostctl(root, "meta-update", "--name", "v1.0.0", stdin={"settings_fingerprint": "fp"})) == {
        "release": "v1.0.0"
    }
    assert json.loads((root / "releases" / "v1.0.0" / MARKER).read_text()) == {
        "version": "1.0.0",
        "keep": 1,
        "settings_fingerprint": "fp",
    }
    refused(hostctl(root, "meta-update", "--name", "v1.0.0", stdin="[1]"), "JSON object")
    refused(hostctl(root, "meta-update", "--name", "v2.0.0", stdin={}), "missing or incomplete")
    (root / "releases" / "v3.0.0").mkdir()
    refused(hostctl(root, "meta-update", "--name", "v3.0.0", stdin={}), "missing or incomplete")


# -- database backups ------------------------------------------------------------------------------


def make_db(root, *, wal=True, rows=10) -> Path:
    db = root / "shared" / "db" / "app.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(db)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS a (id INTEGER PRIMARY KEY, v TEXT)")
    con.execute("CREATE TABLE IF NOT EXISTS b (id INTEGER PRIMARY KEY, v TEXT)")
    with con:
        for i in range(rows):
            con.execute("INSERT INTO a (v) VALUES (?)", (f"a{i}",))
            con.execute("INSERT INTO b (v) VALUES (?)", (f"b{i}",))
    con.close()
    return db


def counts(path) -> tuple[int, int, str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (
            con.execute("SELECT count(*) FROM a").fetchone()[0],
            con.execute("SELECT count(*) FROM b").fetchone()[0],
            con.execute("PRAGMA integrity_check").fetchone()[0],
        )
    finally:
        con.close()


def test_backup_without_a_database_is_nothing(root):
    assert ok(hostctl(root, "backup")) == {"backup": None, "stale_removed": []}


def test_backup_is_consistent_under_a_concurrent_writer_and_private(root):
    db = make_db(root)
    stop, written, errors = threading.Event(), [0], []

    def writer():
        con = sqlite3.connect(db, timeout=30)
        try:
            while not stop.is_set():
                with con:  # one transaction: a and b always have the same number of rows
                    con.execute("INSERT INTO a (v) VALUES (?)", ("x" * 200,))
                    con.execute("INSERT INTO b (v) VALUES (?)", ("y" * 200,))
                written[0] += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            con.close()

    t = threading.Thread(target=writer)
    t.start()
    backups = []
    try:
        time.sleep(0.05)
        for i in range(4):
            backups.append(ok(hostctl(root, "backup", "--label", f"run{i}")))
            seen_before, deadline = written[0], time.monotonic() + 5
            while written[0] == seen_before and time.monotonic() < deadline:  # let the writer move on
                time.sleep(0.005)
    finally:
        stop.set()
        t.join()
    assert not errors and written[0] > 10, "the writer kept writing during the backups"
    seen = set()
    for b in backups:
        p = Path(b["backup"])
        assert p.parent == root / "backups" and re.fullmatch(hc.BACKUP_RE.pattern[1:-1], b["name"])
        a_rows, b_rows, integrity = counts(p)
        assert integrity == "ok" and a_rows == b_rows >= 10
        assert b["bytes"] == p.stat().st_size
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        seen.add(a_rows)
    assert len(seen) > 1, "backups taken at different moments saw different (consistent) states"
    assert not list((root / "backups").glob("*.partial"))


def test_backup_file_is_private_from_its_first_byte(root, monkeypatch):
    make_db(root)
    modes = []
    real = hc.sqlite3

    class Spy:
        """hostctl's sqlite3, noting the mode of a backup file when it is opened to be written."""

        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def connect(path, *args, **kw):
            if str(path).endswith(".partial"):
                modes.append(
                    (os.path.exists(path), stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else None)
                )
            return real.connect(path, *args, **kw)

    monkeypatch.setattr(hc, "sqlite3", Spy())
    old = os.umask(0)  # the mode must come from the creation itself, not from a umask
    try:
        b = ok(hostctl(root, "backup"))
    finally:
        os.umask(old)
    assert modes == [(True, 0o600)], "created 0600 before SQLite writes anything into it"
    assert stat.S_IMODE(os.stat(b["backup"]).st_mode) == 0o600


def test_backup_retention_keeps_the_newest(root):
    make_db(root)
    names = [ok(hostctl(root, "backup", "--label", f"n{i}", "--keep", "2"))["name"] for i in range(4)]
    assert [b["name"] for b in ok(hostctl(root, "backups"))["backups"]] == names[-2:]
    assert ok(hostctl(root, "backup", "--keep", "0"))["pruned"] == []
    assert len(ok(hostctl(root, "backups"))["backups"]) == 3


def test_backup_labels_are_sanitised(root):
    make_db(root)
    b = ok(hostctl(root, "backup", "--label", "../../etc/pass wd;$(x)é" + "y" * 100))
    assert Path(b["backup"]).parent == root / "backups"
    assert hc.BACKUP_RE.fullmatch(b["name"]) and "/" not in b["name"] and len(b["name"]) < 120


def stale(root, name="app-20200101T000000000000Z-old.db.partial"):
    d = root / "backups"
    d.mkdir(exist_ok=True)
    (d / name).write_text("half")
    (d / name).chmod(0o644)
    return d / name


def test_stale_partials_are_pruned_by_the_next_backup(root):
    make_db(root)
    s = stale(root)
    b = ok(hostctl(root, "backup"))
    assert b["stale_removed"] == [s.name] and not s.exists()


def test_prune_removes_stale_partials_unless_a_backup_runs(root):
    s = stale(root)
    lock = os.open(root / "backups" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a backup is running
        assert ok(hostctl(root, "prune")) == {"stale_removed": []} and s.exists()
    finally:
        os.close(lock)
    assert ok(hostctl(root, "prune")) == {"stale_removed": [s.name]} and not s.exists()
    assert ok(hostctl(root / "nowhere", "prune")) == {"stale_removed": []}


def test_backups_lists_only_backups(root):
    make_db(root)
    stale(root)
    (root / "backups" / "notes.txt").write_text("x")
    b = ok(hostctl(root, "backup"))
    assert ok(hostctl(root, "backups")) == {"backups": [{"name": b["name"], "bytes": b["bytes"]}]}


def test_restore_puts_a_backup_back(root):
    db = make_db(root, rows=3)
    name = ok(hostctl(root, "backup"))["name"]
    make_db(root, rows=5)
    assert counts(db)[:2] == (8, 8)
    assert ok(hostctl(root, "restore", "--name", name)) == {"restored": name}
    assert counts(db) == (3, 3, "ok")


@pytest.mark.parametrize(
    "name, words",
    [
        ("../../etc/passwd", ["invalid backup name"]),
        ("app-x.db", ["invalid backup name"]),
        ("app-20200101T000000000000Z-none.db", ["no backup named"]),
    ],
)
def test_restore_refuses_bad_names(root, name, words):
    make_db(root)
    refused(hostctl(root, "restore", "--name", name), *words)


def test_restore_refuses_a_dump_for_sqlite(root):
    make_db(root)
    (root / "backups").mkdir()
    (root / "backups" / "app-20200101T000000000000Z-x.dump").write_text("pg")
    refused(hostctl(root, "restore", "--name", "app-20200101T000000000000Z-x.dump"), "PostgreSQL dump")


@pytest.mark.parametrize("what", ["backup", "restore"])
def test_a_corrupt_database_is_a_one_line_refusal(root, what):
    db = root / "shared" / "db" / "app.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database " * 200)
    (root / "backups").mkdir()
    (root / "backups" / "app-20200101T000000000000Z-x.db").write_bytes(b"garbage " * 500)
    args = ["backup"] if what == "backup" else ["restore", "--name", "app-20200101T000000000000Z-x.db"]
    refused(hostctl(root, *args))


def host_json(root, **conf):
    (root / ".sgpfab").mkdir(exist_ok=True)
    (root / ".sgpfab" / "host.json").write_text(json.dumps(conf))


def test_dbcheck(root):
    assert ok(hostctl(root, "dbcheck")) == {"ok": True, "engine": "sqlite"}
    host_json(root, database={"engine": "none", "path": None, "env": "DATABASE_URL"})
    assert ok(hostctl(root, "dbcheck")) == {"ok": True, "engine": "none"}
    assert ok(hostctl(root, "backup")) == {"backup": None, "stale_removed": []}


def test_dbcheck_postgresql_without_its_tools_or_url(root):
    host_json(root, database={"engine": "postgresql", "path": None, "env": "DATABASE_URL"})
    if not shutil.which("pg_dump"):
        refused(hostctl(root, "dbcheck"), "pg_dump is not installed")
    else:
        refused(hostctl(root, "dbcheck"), "no DATABASE_URL")


def test_host_json_paths_are_used(root):
    db = root / "elsewhere" / "x.db"
    host_json(root, database={"engine": "sqlite", "path": str(db), "env": "DATABASE_URL"})
    assert ok(hostctl(root, "state"))["db_exists"] is False
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    assert ok(hostctl(root, "state"))["db_exists"] is True
    assert ok(hostctl(root, "backup"))["name"].endswith(".db")


# -- settings --------------------------------------------------------------------------------------

HOSTILE_VALUES = {f"V{i}": v for i, v in enumerate(HOSTILE_ONE_LINE)}


def cfg(root):
    return root / "shared" / "config"


def write_settings(root, env, files=None, secret=()):
    return ok(hostctl(root, "settings", "write", stdin={"env": env, "files": files or {}, "secret_keys": list(secret)}))


def test_settings_write_show_round_trip_hostile_values_and_are_private(root):
    old = os.umask(0)
    try:
        fp = write_settings(
            root, {**HOSTILE_VALUES, "SECRET_KEY": "s3cr3t"}, {"tls.key": "-----BEGIN-----\nabc\n"}, ["SECRET_KEY"]
        )["fingerprint"]
    finally:
        os.umask(old)
    for p in (
        cfg(root) / "env",
        cfg(root) / "keys.json",
        cfg(root) / "files" / "tls.key",
        cfg(root) / "previous.json",
        cfg(root) / ".fingerprint-key",
    ):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    shown = ok(hostctl(root, "settings", "show"))
    assert shown["env"] == {**HOSTILE_VALUES, "SECRET_KEY": "********"}
    assert shown["files"] == ["tls.key"] and shown["overrides"] == {}
    assert shown["fingerprint"] == fp
    assert "s3cr3t" not in json.dumps(shown)
    assert hc.parse_env((cfg(root) / "env").read_text()) == {**HOSTILE_VALUES, "SECRET_KEY": "s3cr3t"}
    assert (cfg(root) / "files" / "tls.key").read_text() == "-----BEGIN-----\nabc\n"


def test_fingerprint_writes_nothing_and_matches_write(root):
    data = {"env": {"A": "1"}, "files": {"f": "x"}, "secret_keys": []}
    fp = ok(hostctl(root, "settings", "fingerprint", stdin=data))["fingerprint"]
    assert not (cfg(root) / "env").exists() and not (cfg(root) / "files").exists()
    assert write_settings(root, {"A": "1"}, {"f": "x"})["fingerprint"] == fp
    assert ok(hostctl(root, "settings", "fingerprint", stdin=data))["fingerprint"] == fp


def test_fingerprint_changes_with_any_value_and_is_keyed(root, tmp_path):
    def fp(r, env, files=None):
        return ok(hostctl(r, "settings", "fingerprint", stdin={"env": env, "files": files or {}}))["fingerprint"]

    base = fp(root, {"A": "1", "B": "2"})
    assert fp(root, {"A": "1", "B": "2"}) == base
    assert (
        len(
            {
                base,
                fp(root, {"A": "1", "B": "3"}),
                fp(root, {"A": "1"}),
                fp(root, {"A": "1", "B": "2", "C": ""}),
                fp(root, {"A": "1", "B": "2"}, {"f": ""}),
            }
        )
        == 5
    )
    other = tmp_path / "other"
    other.mkdir()
    assert fp(other, {"A": "1", "B": "2"}) != base, "another host's key gives another fingerprint"
    key = (cfg(root) / ".fingerprint-key").read_bytes()
    assert len(key) >= 32 and key != (cfg(other) / ".fingerprint-key").read_bytes()
    (cfg(other) / ".fingerprint-key").write_bytes(key)
    assert fp(other, {"A": "1", "B": "2"}) == base, "the same key gives the same fingerprint"
    assert re.fullmatch(r"[0-9a-f]{64}", base), "a hex digest: nothing of the values"


def test_commit_and_revert(root):
    write_settings(root, {"A": "old"}, {"keep.pem": "k", "gone.pem": "g"}, ["A"])
    ok(hostctl(root, "settings", "commit"))
    assert not (cfg(root) / "previous.json").exists()
    write_settings(root, {"A": "new", "B": "b"}, {"keep.pem": "k2", "new.pem": "n"})
    write_settings(root, {"A": "newer"}, {})  # the snapshot keeps the last committed settings
    assert ok(hostctl(root, "settings", "revert")) == {"settings": "revert"}
    assert hc.parse_env((cfg(root) / "env").read_text()) == {"A": "old"}
    assert sorted(os.listdir(cfg(root) / "files")) == ["gone.pem", "keep.pem"]
    assert (cfg(root) / "files" / "keep.pem").read_text() == "k"
    assert ok(hostctl(root, "settings", "show"))["env"] == {"A": "********"}
    assert not (cfg(root) / "previous.json").exists()
    assert ok(hostctl(root, "settings", "revert")) == {"settings": "revert"}, "nothing to revert: fine"


def test_revert_of_the_first_settings_removes_them(root):
    write_settings(root, {"A": "1"}, {"f": "x"})
    ok(hostctl(root, "settings", "revert"))
    assert not (cfg(root) / "env").exists() and not (cfg(root) / "files").exists()
    assert ok(hostctl(root, "settings", "show")) == {"env": {}, "overrides": {}, "files": [], "fingerprint": None}


@pytest.mark.parametrize(
    "env, words",
    [
        ({"A": "line1\nline2"}, ["invalid setting 'A'"]),
        ({"A": "cr\r"}, ["invalid setting"]),
        ({"A": "nul\x00"}, ["invalid setting"]),
        ({"BAD-KEY": "x"}, ["invalid setting 'BAD-KEY'"]),
        ({"A": 5}, ["invalid setting 'A'"]),
        ({"1A": "x"}, ["invalid setting"]),
    ],
)
def test_settings_write_refuses_bad_values_and_keeps_the_old_ones(root, env, words):
    write_settings(root, {"A": "old"})
    ok(hostctl(root, "settings", "commit"))
    refused(hostctl(root, "settings", "write", stdin={"env": env}), *words)
    assert hc.parse_env((cfg(root) / "env").read_text()) == {"A": "old"}


@pytest.mark.parametrize("files", [{"../x": "a"}, {"a/b": "a"}, {".hidden": "a"}, {"f": 1}])
def test_settings_write_refuses_bad_secret_files(root, files):
    refused(hostctl(root, "settings", "write", stdin={"env": {}, "files": files}), "secret file name")
    assert not (root.parent / "x").exists()


def test_settings_input_must_be_an_object(root):
    refused(hostctl(root, "settings", "write", stdin="[1]"), "JSON object")
    refused(hostctl(root, "settings", "fingerprint", stdin="nope"), "not JSON")


def test_overrides_set_unset_and_show(root):
    write_settings(root, {"A": "1", "TOKEN": "t"}, secret=["TOKEN"])
    assert ok(hostctl(root, "settings", "override-set", stdin={"env": {"B": "it's $x", "TOKEN": "t2"}})) == {
        "overrides": ["B", "TOKEN"]
    }
    over = cfg(root) / "overrides.env"
    assert stat.S_IMODE(over.stat().st_mode) == 0o600
    shown = ok(hostctl(root, "settings", "show"))
    assert shown["overrides"] == {"B": "it's $x", "TOKEN": "********"} and shown["env"]["A"] == "1"
    assert ok(hostctl(root, "settings", "override-unset", stdin={"keys": ["B", "NOT_SET"]})) == {"overrides": ["TOKEN"]}
    assert hc.parse_env(over.read_text()) == {"TOKEN": "t2"}
    refused(hostctl(root, "settings", "override-set", stdin={"env": {"C": "a\nb"}}), "invalid setting")
    refused(hostctl(root, "settings", "override-set", stdin={"env": {"C-D": "x"}}), "invalid setting")
    assert hc.parse_env(over.read_text()) == {"TOKEN": "t2"}


def test_an_override_set_from_a_secret_is_masked_until_it_is_set_plain_or_unset(root):
    write_settings(root, {"A": "1"})
    ok(
        hostctl(
            root, "settings", "override-set", stdin={"env": {"API_KEY": "k-123", "MODE": "x"}, "secret": ["API_KEY"]}
        )
    )
    shown = ok(hostctl(root, "settings", "show"))
    assert shown["overrides"] == {"API_KEY": "********", "MODE": "x"}
    assert stat.S_IMODE((cfg(root) / "overrides.keys.json").stat().st_mode) == 0o600
    ok(hostctl(root, "settings", "override-set", stdin={"env": {"MODE": "y"}}))  # other keys keep their mark
    assert ok(hostctl(root, "settings", "show"))["overrides"]["API_KEY"] == "********"
    ok(hostctl(root, "settings", "override-set", stdin={"env": {"API_KEY": "plain"}}))  # set again, not secret
    assert ok(hostctl(root, "settings", "show"))["overrides"]["API_KEY"] == "plain"
    ok(hostctl(root, "settings", "override-set", stdin={"env": {"API_KEY": "k-456"}, "secret": ["API_KEY"]}))
    ok(hostctl(root, "settings", "override-unset", stdin={"keys": ["API_KEY"]}))
    ok(hostctl(root, "settings", "override-set", stdin={"env": {"API_KEY": "visible"}}))
    assert ok(hostctl(root, "settings", "show"))["overrides"]["API_KEY"] == "visible"


def test_overrides_survive_a_settings_write(root):
    ok(hostctl(root, "settings", "override-set", stdin={"env": {"B": "2"}}))
    write_settings(root, {"A": "1"})
    assert ok(hostctl(root, "settings", "show"))["overrides"] == {"B": "2"}


def test_secret_files_with_crlf_keep_their_bytes_and_fingerprint(root):
    pem = "-----BEGIN KEY-----\r\nabc\r\n-----END KEY-----\r\n"
    fp = write_settings(root, {"A": "1"}, {"k.pem": pem})["fingerprint"]
    ok(hostctl(root, "settings", "commit"))
    write_settings(root, {"A": "2"}, {"k.pem": "new"})
    ok(hostctl(root, "settings", "revert"))
    assert (cfg(root) / "files" / "k.pem").read_bytes() == pem.encode()
    assert ok(hostctl(root, "settings", "show"))["fingerprint"] == fp


@pytest.mark.parametrize("value", ["a\u2028b", "a\u2029b", "a\x85b"])
def test_settings_with_unicode_line_separators_round_trip(root, value):
    fp = write_settings(root, {"A": value})["fingerprint"]
    shown = ok(hostctl(root, "settings", "show"))
    assert shown["env"] == {"A": value} and shown["fingerprint"] == fp


# -- parse_env / format_env ---------------------------------------------------------------------------

ALPHABET = "aZ09 _-=#;'\"$`\\!*?[]{}()<>|&~%.,:/@\tüé中€😀"


def test_format_env_parse_env_round_trip_property():
    rng = random.Random(20261123)
    for _ in range(3000):
        env = {
            f"K{i}": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24))) for i in range(rng.randint(1, 4))
        }
        text = hc.format_env(env)
        assert text.count("\n") == len(env)
        assert hc.parse_env(text) == env, text


@pytest.mark.parametrize("value", HOSTILE_ONE_LINE + ["'", "''", "'x'", '"x"', "\\'", "\\", "$", "a'b\"c$d`e\\f"])
def test_format_env_round_trips_each_hostile_value(value):
    assert hc.parse_env(hc.format_env({"K": value})) == {"K": value}


def test_format_env_writes_systemd_quoting():
    assert hc.format_env({"B": "x y", "A": 'it\'s $x "q" `c` \\'}) == (
        'A="it\'s \\$x \\"q\\" \\`c\\` \\\\"\nB=\'x y\'\n'
    )


@pytest.mark.parametrize(
    "env", [{"K": "a\nb"}, {"K": "a\rb"}, {"K": "\x00"}, {"K": "\x7f"}, {"K-1": "x"}, {"": "x"}, {"1K": "x"}]
)
def test_format_env_refuses(env):
    with pytest.raises(hc.Fail):
        hc.format_env(env)


def test_parse_env_ignores_comments_and_junk():
    assert hc.parse_env('# c\n; c\n\nNOEQUALS\nA=plain\nB=\'q\'\nC="d\\"q"\n') == {"A": "plain", "B": "q", "C": 'd"q'}


# -- lock ------------------------------------------------------------------------------------------


def lock(root, action, *args, stdin=None):
    return ok(hostctl(root, "lock", action, *args, stdin=stdin))


def test_lock_take_and_release(root):
    assert lock(root, "take", "--token", "t1", stdin={"who": "alice@laptop", "pid": 123}) == {
        "locked": True,
        "took_over": False,
        "state": None,
    }
    r = lock(root, "take", "--token", "t2", stdin={"who": "bob"})
    assert r["locked"] is False and r["holder"]["who"] == "alice@laptop" and r["holder"]["token"] == "t1"
    assert r["holder"]["since"] and r["holder"]["host"]
    assert lock(root, "release", "--token", "wrong") == {"locked": True, "released": False, "holder": r["holder"]}
    assert lock(root, "take", "--token", "t3")["locked"] is False, "a wrong token did not release it"
    assert lock(root, "release", "--token", "t1") == {"locked": False, "released": True}
    assert lock(root, "take", "--token", "t4")["locked"] is True


def test_lock_release_force_and_release_of_a_free_lock(root):
    assert lock(root, "release", "--token", "x") == {"locked": False, "released": False, "holder": {}}
    lock(root, "take", "--token", "t1")
    assert lock(root, "release", "--force") == {"locked": False, "released": True}
    assert lock(root, "take", "--token", "t2")["locked"] is True


def test_takeover_is_a_compare_and_swap_on_the_token(root):
    lock(root, "take", "--token", "dead", stdin={"who": "crashed run"})
    assert lock(root, "takeover", "--token", "mine", "--expect-token", "stale")["locked"] is False
    holder = lock(root, "take", "--token", "x")["holder"]
    assert holder["token"] == "dead" and holder["who"] == "crashed run"
    assert lock(root, "takeover", "--token", "mine", "--expect-token", "dead", stdin={"who": "me"}) == {
        "locked": True,
        "took_over": True,
        "state": None,
    }
    assert lock(root, "take", "--token", "x")["holder"]["token"] == "mine"
    assert lock(root, "takeover", "--token", "third", "--expect-token", "dead")["locked"] is False, (
        "the second taker of the same stale lock loses"
    )


def test_a_lock_directory_without_holder_info_is_held(root):
    (root / ".sgpfab" / "lock").mkdir(parents=True)
    assert lock(root, "take", "--token", "t")["locked"] is False
    assert lock(root, "release", "--force")["released"] is True


def test_concurrent_takes_one_winner(root):
    procs = [
        subprocess.Popen(
            [sys.executable, str(HOSTCTL), "--root", str(root), "lock", "take", "--token", f"t{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    for p in procs:  # everything on stdin at once, as a transport sends it
        p.stdin.write("{}")
        p.stdin.close()
    outs = [json.loads(p.stdout.read()) for p in procs]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert sum(o["locked"] for o in outs) == 1
    winner = next(f"t{i}" for i, o in enumerate(outs) if o["locked"])
    assert lock(root, "take", "--token", "late")["holder"]["token"] == winner


def test_takeover_waits_for_the_dead_runs_host_side_operations(root):
    lock(root, "take", "--token", "dead")
    (root / ".sgpfab").mkdir(exist_ok=True)
    fd = os.open(root / ".sgpfab" / "ops.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # e.g. a backup the dead run started
        p = subprocess.Popen(
            [
                sys.executable,
                str(HOSTCTL),
                "--root",
                str(root),
                "lock",
                "takeover",
                "--token",
                "new",
                "--expect-token",
                "dead",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        p.stdin.write("{}")
        p.stdin.close()
        time.sleep(1.0)  # ample for the helper to start and, if it did not wait, to finish
        assert p.poll() is None, "takeover must wait while the operations lock is held"
    finally:
        os.close(fd)
    out = json.loads(p.stdout.read())
    assert p.wait(timeout=30) == 0 and out == {"_cmd": "lock", "locked": True, "took_over": True, "state": None}


# -- audit and history -------------------------------------------------------------------------------


def test_audit_appends_json_lines_and_history_reads_them(root):
    for i in range(5):
        assert ok(hostctl(root, "audit", stdin={"action": "deploy", "i": i, "note": "line\nbreak"})) == {"ok": True}
    lines = (root / ".sgpfab" / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(ln)["time"] and json.loads(ln)["remote_user"] for ln in lines)
    assert [r["i"] for r in ok(hostctl(root, "history", "--last", "2"))["records"]] == [3, 4]
    assert len(ok(hostctl(root, "history"))["records"]) == 5
    assert ok(hostctl(root, "history", "--last", "0"))["records"] == []
    with open(root / ".sgpfab" / "audit.jsonl", "a") as f:
        f.write("{torn line\n\n")
    ok(hostctl(root, "audit", stdin={"i": 5, "time": "given"}))
    recs = ok(hostctl(root, "history", "--last", "3"))["records"]
    assert [r["i"] for r in recs] == [3, 4, 5] and recs[-1]["time"] == "given"


@pytest.mark.parametrize("stdin", ["[1]", "nope", ""])
def test_audit_refuses_non_objects(root, stdin):
    refused(hostctl(root, "audit", stdin=stdin))


def test_concurrent_audit_writers_never_interleave(root):
    script = (
        f"import io, json, sys; sys.path.insert(0, {str(HOSTCTL.parent)!r}); import hostctl\n"
        "for i in range(25):\n"
        "    sys.stdin = io.StringIO(json.dumps({'w': sys.argv[1], 'i': i, 'pad': 'x' * 30000}))\n"
        "    out = sys.stdout; sys.stdout = io.StringIO()\n"
        f"    hostctl.main(['--root', {str(root)!r}, 'audit']); sys.stdout = out\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (root / ".sgpfab" / "audit.jsonl").read_text().splitlines()
    recs = [json.loads(ln) for ln in lines]
    assert len(recs) == 100 and {(r["w"], r["i"]) for r in recs} == {(str(w), i) for w in range(4) for i in range(25)}


# -- preflight -------------------------------------------------------------------------------------


def test_preflight_reports_the_facts(root):
    facts = ok(hostctl(root / "not" / "yet", "preflight", "--python", sys.executable))
    assert set(facts) == {
        "python",
        "implementation",
        "interpreter",
        "glibc",
        "arch",
        "free_bytes",
        "tools",
        "os",
        "uv",
        "state",
    }
    assert facts["python"] == platform.python_version() and facts["implementation"] == "cpython"
    assert facts["interpreter"] == sys.executable and facts["os"] == "linux"
    assert facts["glibc"] == platform.libc_ver()[1]
    assert facts["arch"] == platform.machine() and facts["free_bytes"] > 0
    assert set(facts["tools"]) == {
        "rsync",
        "systemctl",
        "systemd-run",
        "pg_dump",
        "pg_restore",
        "psql",
        "flock",
        "nssm.exe",
    }
    assert facts["tools"]["flock"] == bool(shutil.which("flock"))
    assert HostFacts.model_validate(facts).python == platform.python_version()


def test_preflight_with_a_missing_interpreter(root):
    facts = ok(hostctl(root, "preflight", "--python", "/nonexistent/python3"))
    assert facts["python"] == "" and facts["implementation"] == ""


# -- health and gate ---------------------------------------------------------------------------------


class Server:
    """A local HTTP server; `respond(n, path, headers)` gives (status, headers, body) for request n."""

    def __init__(self, respond):
        self.respond, self.requests, self.lock = respond, [], threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append((self.path, dict(self.headers)))
                status, headers, body = outer.respond(n, self.path, self.headers)
                data = body.encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def answers(*seq, release=None):
    """Respond with seq[n] (the last one repeats): (status, body)."""

    def respond(n, path, headers):
        status, body = seq[min(n, len(seq) - 1)]
        return status, ({"X-Sgpfab-Release": release} if release else {}), body

    return respond


def probe_token(root, token="tok-123"):
    (root / ".sgpfab").mkdir(exist_ok=True)
    (root / ".sgpfab" / "launch.env").write_text(f"SGPFAB_PROBE_TOKEN={token}\n")


def test_health_ok_status_body_and_headers(root):
    probe_token(root)
    with Server(answers((200, '{"status": "ok", "version": "1.0.0"}'), release="v1.0.0")) as s:
        r = ok(
            hostctl(
                root,
                "health",
                "--url",
                s.url + "/healthz",
                "--body",
                '"status": ?"ok"',
                "--expect-version",
                "1.0.0",
                "--host-header",
                "shop.example.com",
            )
        )
        path, headers = s.requests[0]
    assert r == {
        "ok": True,
        "code": 200,
        "release": "v1.0.0",
        "version": "1.0.0",
        "reason": "",
        "body": '{"status": "ok", "version": "1.0.0"}',
        "units": {},
    }
    assert path == "/healthz" and headers["Host"] == "shop.example.com" and headers["X-Sgpfab-Probe"] == "tok-123"
    assert headers["User-Agent"] == "sgpfab-health"


@pytest.mark.parametrize(
    "seq, args, reason",
    [
        ((503, "down"), [], "HTTP 503"),
        ((200, "nope"), ["--body", "^ok$"], "body does not match '^ok$'"),
        ((204, ""), [], "HTTP 204"),
        ((200, '{"version": "0.9.0"}'), ["--expect-version", "1.0.0"], "version '0.9.0', expected '1.0.0'"),
        ((200, "not json"), ["--expect-version", "1.0.0"], "version None, expected '1.0.0'"),
    ],
)
def test_health_reasons(root, seq, args, reason):
    with Server(answers(seq)) as s:
        r = ok(hostctl(root, "health", "--url", s.url, *args))
    assert r["ok"] is False and r["reason"] == reason and r["code"] == seq[0]


def test_health_accepts_listed_status_codes(root):
    with Server(answers((204, ""))) as s:
        assert ok(hostctl(root, "health", "--url", s.url, "--status", "200", "--status", "204"))["ok"] is True


def test_health_of_nothing_listening(root):
    with Server(answers((200, ""))) as s:
        url = s.url
    r = ok(hostctl(root, "health", "--url", url, "--timeout", "2"))
    assert r["ok"] is False and r["error"] and "code" not in r


def gate(root, url, *args):
    start = time.monotonic()
    r = ok(hostctl(root, "gate", "--url", url, *args))
    return GateResult.model_validate(r), time.monotonic() - start


def test_gate_passes_on_answers_from_the_release(root):
    probe_token(root)
    with Server(answers((503, "starting"), (200, "ok"), release="v2.0.0")) as s:
        g, took = gate(root, s.url, "--release", "v2.0.0", "--deadline", "10")
        assert all(h.get("X-Sgpfab-Probe") == "tok-123" for _, h in s.requests)
    assert g.ok and took < 5 and g.last.release == "v2.0.0"


def test_gate_ignores_answers_from_another_release(root):
    with Server(answers((200, "ok"), release="v1.0.0")) as s:
        g, took = gate(root, s.url, "--release", "v2.0.0", "--deadline", "0.5")
    assert not g.ok and g.why == "timeout: release v2.0.0 never answered"
    assert 0.3 < took < 4


def test_gate_does_not_fail_fast_on_errors_from_another_release(root):
    with Server(answers((500, "old release broken"), release="v1.0.0")) as s:
        g, took = gate(root, s.url, "--release", "v2.0.0", "--deadline", "0.5", "--fail-after", "2")
    assert not g.ok and g.why.startswith("timeout") and took > 0.3


def test_gate_fails_fast_after_consecutive_bad_answers_from_the_release(root):
    with Server(answers((500, "boom"), release="v2.0.0")) as s:
        g, took = gate(root, s.url, "--release", "v2.0.0", "--deadline", "30", "--fail-after", "3")
        n = len(s.requests)
    assert not g.ok and g.why == "unhealthy" and g.last.code == 500 and n == 3 and took < 5
    assert g.describe() == "the health check failed: HTTP 500 from v2.0.0 (HTTP 500)"


def test_gate_bad_answers_must_be_consecutive(root):
    seq = [(500, "x"), (500, "x"), (200, "ok"), (500, "x"), (500, "x"), (200, "ok")]
    with Server(answers(*seq, release="v2.0.0")) as s:
        g, _ = gate(root, s.url, "--release", "v2.0.0", "--deadline", "10", "--fail-after", "3")
    assert g.ok, "never three bad answers in a row"


def test_gate_needs_consecutive_good_answers(root):
    seq = [(200, "ok"), (500, "x"), (200, "ok"), (200, "ok")]
    with Server(answers(*seq, release="v2.0.0")) as s:
        g, _ = gate(root, s.url, "--release", "v2.0.0", "--need", "2", "--deadline", "10", "--fail-after", "5")
        n = len(s.requests)
    assert g.ok and n == 4


def test_gate_a_wrong_body_breaks_the_run_of_good_answers(root):
    seq = [(200, "ok"), (200, "wrong"), (200, "ok"), (200, "wrong")]
    with Server(answers(*seq, release="v2.0.0")) as s:
        g, _ = gate(root, s.url, "--release", "v2.0.0", "--body", "^ok$", "--need", "2", "--deadline", "0.8")
    assert not g.ok


def test_gate_deadline_when_nothing_answers(root):
    with Server(answers((200, ""))) as s:
        url = s.url
    g, took = gate(root, url, "--deadline", "0.4", "--timeout", "0.3")
    assert not g.ok and g.why == "timeout" and g.last.error and took < 4


def test_gate_settle_time(root):
    with Server(answers((200, "ok"))) as s:
        g, took = gate(root, s.url, "--settle", "0.3", "--deadline", "10")
    assert g.ok and took >= 0.3


def test_lock_and_preflight_answer_with_the_state_when_asked(root):
    took = lock(root, "take", "--token", "t1", "--with-state", stdin={"who": "me"})
    assert took["locked"] and took["state"]["current"] is None and took["state"]["releases"] == []
    facts = hostctl(root, "preflight", "--with-state").json
    assert facts["state"]["journal"] is None and facts["uv"] == ""


@pytest.mark.parametrize("args", [("lock", "take", "--token", "t1"), ("dbcheck", "--stdin")])
def test_json_on_stdin_that_is_not_an_object_is_refused_in_one_line(root, args):
    refused(hostctl(root, *args, stdin="[1, 2]"), "stdin must be a JSON object")
    assert not (root / ".sgpfab" / "lock" / "info.json").exists()
