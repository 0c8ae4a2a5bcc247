"""The host-side helper, run for real against a temporary API_ROOT (it is stdlib-only Python)."""

import json
import os
import sqlite3
import stat

import pytest

from sgpfab.remote import hostctl


def ctl(root, capsys, *args):
    code = hostctl.main(["--root", str(root), *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if out.strip() else None), err


def stage(root, name, files=None):
    d = root / "releases" / (".partial-" + name)
    d.mkdir(parents=True)
    for rel, text in (files or {"main.py": "print()"}).items():
        (d / rel).write_text(text)
    return d


def test_finalize_then_switch_is_atomic_and_reported_in_state(tmp_path, capsys):
    stage(tmp_path, "v1.0.4")
    assert ctl(tmp_path, capsys, "finalize", "--name", "v1.0.4", "--meta", '{"version": "1.0.4"}')[0] == 0
    code, out, _ = ctl(tmp_path, capsys, "switch", "--to", "v1.0.4")
    assert code == 0 and out == {"previous": None, "current": "v1.0.4"}
    link = tmp_path / "releases" / "current"
    assert link.is_symlink() and os.readlink(link) == "v1.0.4"
    stage(tmp_path, "v1.0.5")
    _, st, _ = ctl(tmp_path, capsys, "state")
    assert st["current"] == "v1.0.4" and st["partials"] == [".partial-v1.0.5"]
    assert [(r["name"], r["complete"], r["meta"]["version"]) for r in st["releases"]] == [("v1.0.4", True, "1.0.4")]
    assert not list((tmp_path / "releases").glob(".current.*"))


def test_switch_refuses_missing_incomplete_and_hostile_names(tmp_path, capsys):
    (tmp_path / "releases" / "v2.0.0").mkdir(parents=True)  # no completion marker
    for name, msg in [("v2.0.0", "incomplete"), ("v9.9.9", "missing"), ("../../etc", "invalid"),
                      ("v1..0", "invalid"), ("v1.0.0\n", "invalid")]:
        code, out, err = ctl(tmp_path, capsys, "switch", "--to", name)
        assert code == 2 and out is None and msg in err
    assert not (tmp_path / "releases" / "current").exists()


def test_finalize_never_overwrites_an_existing_release(tmp_path, capsys):
    stage(tmp_path, "v1.0.0")
    ctl(tmp_path, capsys, "finalize", "--name", "v1.0.0")
    stage(tmp_path, "v1.0.0", {"main.py": "other"})
    code, _, err = ctl(tmp_path, capsys, "finalize", "--name", "v1.0.0")
    assert code == 2 and "already exists" in err
    assert (tmp_path / "releases" / "v1.0.0" / "main.py").read_text() == "print()"


def test_remove_refuses_the_active_release(tmp_path, capsys):
    for n in ("v1.0.0", "v1.0.1"):
        stage(tmp_path, n)
        ctl(tmp_path, capsys, "finalize", "--name", n)
    ctl(tmp_path, capsys, "switch", "--to", "v1.0.1")
    code, _, err = ctl(tmp_path, capsys, "remove", "v1.0.0", "v1.0.1")
    assert code == 2 and "active" in err
    assert ctl(tmp_path, capsys, "remove", "v1.0.0")[1] == {"removed": ["v1.0.0"]}


def test_backup_is_an_online_copy_that_includes_uncheckpointed_wal_data(tmp_path, capsys):
    db = tmp_path / "shared" / "db" / "app.db"
    db.parent.mkdir(parents=True)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE item (name TEXT)")
    writer.executemany("INSERT INTO item VALUES (?)", [(f"n{i}",) for i in range(500)])
    writer.commit()  # still open: the rows sit in app.db-wal, a plain cp of app.db would miss them
    code, out, _ = ctl(tmp_path, capsys, "backup", "--label", "before-v1.0.5")
    writer.close()
    assert code == 0 and out["backup"].endswith("-before-v1.0.5.db")
    assert stat.S_IMODE(os.stat(out["backup"]).st_mode) == 0o600
    copy = sqlite3.connect(out["backup"])
    assert copy.execute("SELECT count(*) FROM item").fetchone()[0] == 500


def test_backup_without_a_database_is_a_no_op(tmp_path, capsys):
    assert ctl(tmp_path, capsys, "backup")[1] == {"backup": None}


def test_lock_is_exclusive_and_only_its_owner_releases_it(tmp_path, capsys):
    assert ctl(tmp_path, capsys, "lock", "--token", "a", "--who", "alice", "--what", "deploy 1.0.5")[1]["locked"]
    _, out, _ = ctl(tmp_path, capsys, "lock", "--token", "b", "--who", "bob")
    assert out["locked"] is False and out["holder"]["who"] == "alice" and out["holder"]["what"] == "deploy 1.0.5"
    assert ctl(tmp_path, capsys, "lock", "--release", "--token", "b")[0] == 2
    assert ctl(tmp_path, capsys, "lock", "--release", "--token", "a")[1] == {"locked": False}
    assert ctl(tmp_path, capsys, "lock", "--token", "b")[1]["locked"]


def test_audit_appends_json_lines(tmp_path, capsys):
    ctl(tmp_path, capsys, "audit", "--record", '{"action": "deploy", "version": "1.0.4"}')
    ctl(tmp_path, capsys, "audit", "--record", '{"action": "rollback", "version": "1.0.3"}')
    _, out, _ = ctl(tmp_path, capsys, "history")
    assert [r["action"] for r in out["records"]] == ["deploy", "rollback"]
    assert all("time" in r for r in out["records"])


@pytest.mark.parametrize("expect, healthy", [("1.0.5", True), ("1.0.4", False), ("", True)])
def test_health_probe_checks_status_and_version(tmp_path, capsys, expect, healthy):
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "ok", "version": "1.0.5"}'
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/health"
    _, out, _ = ctl(tmp_path, capsys, "health", "--url", url, "--expect-version", expect)
    srv.server_close()
    assert out["healthy"] is healthy and out["code"] == 200 and out["version"] == "1.0.5"


def test_health_probe_reports_a_refused_connection(tmp_path, capsys):
    _, out, _ = ctl(tmp_path, capsys, "health", "--url", "http://127.0.0.1:9/health", "--timeout", "1")
    assert out["healthy"] is False and out["error"]
