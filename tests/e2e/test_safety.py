"""Safe releases on real hosts: verified bundles, DB backups/restore, migrations, schema-aware
rollback, the deploy lock, and interrupted uploads."""

import os
import re
import signal
import subprocess
import time

NEW_TABLE = '''
class Tag(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    label: str = ""
'''


def _release_state(slot, h):
    """What must not change when a deploy is refused: releases, current, unit, and the data."""
    return (slot.ssh(h, f"find {slot.api_root}/releases /etc/systemd/system/{slot.service}.service "
                        "-printf '%p %s %l\\n' | sort"), slot.version(h), slot.item_names(h))


def test_tampered_bundle_is_refused_on_the_controller(slot):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.4")
    slot.post_item(h, "keep me")
    slot.fab("bundle", "--version", "1.0.5")
    archive = slot.dist / "releases/v1.0.5/app-v1.0.5.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    before = _release_state(slot, h)
    r = slot.fab("-H", h, "deploy", "--bundle", "1.0.5", ok=False)
    assert r.returncode == 1 and "corrupt bundle" in r.stderr and "does not match its SHA-256" in r.stderr
    assert _release_state(slot, h) == before


def test_wheel_corrupted_on_the_host_is_refused_there_and_a_retry_reuploads(slot):
    """rsync's quick check (size + mtime) keeps a wheel already on the host even if its bytes
    changed: the host's own SHA-256 check must catch it, change nothing, and drop the bad wheel."""
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.4")
    slot.ssh(h, f"cd {slot.api_root}/wheelhouse && f=$(ls fastapi-*.whl) && m=$(stat -c %Y $f) && "
                "printf 'X' | dd of=$f bs=1 seek=100 conv=notrunc status=none && touch -d @$m $f")
    before = _release_state(slot, h)
    r = slot.fab("-H", h, "deploy", "--version", "1.0.5", ok=False)
    assert re.search(r"wheel fastapi-\S+ does not match its SHA-256 \(corrupt or tampered\)", r.stdout), r.stdout
    assert _release_state(slot, h) == before
    slot.fab("-H", h, "deploy", "--version", "1.0.5")
    assert slot.version(h) == "1.0.5"


def test_backup_and_restore_lose_nothing(slot):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.4")
    slot.post_item(h, "A")
    out = slot.fab("-H", h, "backup", "--label", "checkpoint").stdout
    name = re.search(r"app-\d{8}T\d{12}Z-checkpoint\.db", out).group(0)
    slot.post_item(h, "B")
    slot.fab("-H", h, "restore", "--backup", name)
    assert slot.item_names(h) == ["A"] and slot.version(h) == "1.0.4"
    listing = slot.fab("-H", h, "list-backups").stdout
    saved = re.findall(r"app-\d{8}T\d{12}Z-before-restore\.db", listing)
    assert len(saved) == 1
    slot.fab("-H", h, "restore", "--backup", saved[0])  # the pre-restore state is still there
    assert slot.item_names(h) == ["A", "B"]
    r = slot.fab("-H", h, "restore", "--backup", "../../etc/passwd", ok=False)
    assert "no backup named" in r.stderr and slot.item_names(h) == ["A", "B"]


def test_backups_are_pruned_to_the_configured_number(slot):
    h = slot.hosts[1]
    slot.configure(backups_keep=2)
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    for _ in range(3):
        slot.fab("-H", h, "backup")
    assert len(slot.ssh(h, f"ls {slot.api_root}/backups").split()) == 2


def test_migrations_run_before_the_switch_and_a_failing_one_switches_nothing(slot, app_variant):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.4")
    version = slot.ssh(h, f"python3 -c \"import sqlite3; print(sqlite3.connect('{slot.api_root}/shared/db/app.db')"
                          ".execute('PRAGMA user_version').fetchone()[0])\"").strip()
    assert version == "1", "the example's scripts/migrate.py ran on the host"
    slot.post_item(h, "before the bad migration")
    bad = app_variant("bad_migration", files={"scripts/migrate.py": "import sys\nprint('migration exploded')\nsys.exit(3)\n"})
    r = slot.fab("-H", h, "deploy", "--version", "1.0.5", "--source", str(bad), ok=False)
    assert "migrations of 1.0.5 failed (exit 3)" in r.stdout and "migration exploded" in r.stdout
    assert slot.version(h) == "1.0.4" and slot.current(h) == "v1.0.4"
    assert slot.item_names(h) == ["before the bad migration"]


def test_rollback_across_a_schema_change_needs_an_explicit_choice(slot, app_variant):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.5")
    slot.post_item(h, "one")
    tags = app_variant("with_tags", append=NEW_TABLE)
    slot.fab("-H", h, "deploy", "--version", "1.0.6", "--source", str(tags))
    slot.post_item(h, "two")

    before = _release_state(slot, h)
    r = slot.fab("-H", h, "rollback", ok=False)
    assert "crosses a schema change" in r.stderr and "--db keep" in r.stderr
    assert _release_state(slot, h) == before

    slot.fab("-H", h, "rollback", "--db", "restore")
    assert slot.version(h) == "1.0.5"
    assert slot.item_names(h) == ["one"], "the DB is back to the pre-1.0.6 backup"
    backups = slot.ssh(h, f"ls {slot.api_root}/backups")
    assert "-before-rollback-to-v1.0.5.db" in backups, "the newer data was saved first"

    slot.fab("-H", h, "deploy", "--version", "1.0.6", "--source", str(tags))
    slot.post_item(h, "three")
    slot.fab("-H", h, "rollback", "--db", "keep")
    assert slot.version(h) == "1.0.5" and slot.item_names(h) == ["one", "three"]


def test_a_failed_rollback_with_db_restore_puts_the_newer_database_back(slot, app_variant):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.5")
    slot.post_item(h, "one")
    slot.fab("-H", h, "deploy", "--version", "1.0.6", "--source", str(app_variant("with_tags", append=NEW_TABLE)))
    slot.post_item(h, "two")
    # 1.0.5 can no longer start on this host (say its files were damaged).
    slot.ssh(h, f"printf '\\nraise SystemExit(3)\\n' >> {slot.api_root}/releases/v1.0.5/main.py")
    r = slot.fab("-H", h, "rollback", "--db", "restore", ok=False)
    assert "rolled back to v1.0.6 (healthy)" in r.stdout and "the database was put back from" in r.stdout
    assert slot.version(h) == "1.0.6"
    assert slot.item_names(h) == ["one", "two"], "1.0.6 runs on its own database again, nothing lost"


def test_two_deploys_to_one_host_one_fails_cleanly_on_the_lock(slot):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "2.0.0")
    slot.configure(app={"migrate": "sleep 6 && python scripts/migrate.py"})
    slot.fab("bundle", "--version", "2.0.1")
    slot.fab("bundle", "--version", "2.0.2")
    first = slot.popen("-H", h, "deploy", "--bundle", "2.0.1")
    _wait_for(lambda: slot.ssh(h, f"test -d {slot.api_root}/.sgpfab/lock && echo held || true").strip() == "held")
    second = slot.fab("-H", h, "deploy", "--bundle", "2.0.2", ok=False)
    assert re.search(r"locked by \S+ since \S+ \(deploy 2\.0\.1\)", second.stdout), second.stdout
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert slot.version(h) == "2.0.1"
    slot.configure(app={"migrate": "python scripts/migrate.py"})
    slot.fab("-H", h, "deploy", "--bundle", "2.0.2")  # the lock was released
    assert slot.version(h) == "2.0.2"
    history = slot.fab("-H", h, "history").stdout
    assert re.search(r"deploy\W+2\.0\.0\W+2\.0\.1\W+ok", history), history


def test_a_lock_left_by_another_machine_needs_force_unlock(slot):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "6.0.0")
    lock = f"{slot.api_root}/.sgpfab/lock"
    slot.ssh(h, f"mkdir {lock} && echo '{{\"who\": \"alice@laptop\", \"since\": \"2026-11-20T09:00:00+00:00\","
                f" \"what\": \"deploy 6.0.1\", \"controller\": \"laptop\", \"pid\": 4242}}' > {lock}/info.json")
    r = slot.fab("-H", h, "deploy", "--version", "6.0.1", ok=False)
    assert "locked by alice@laptop since 2026-11-20T09:00:00+00:00 (deploy 6.0.1); if that deploy is gone," \
           " use --force-unlock" in r.stdout
    assert slot.version(h) == "6.0.0"
    r = slot.fab("-H", h, "rollback", "--version", "6.0.0", ok=False)  # every locked action waits its turn
    assert "locked by alice@laptop" in r.stdout
    slot.fab("-H", h, "deploy", "--version", "6.0.1", "--force-unlock")
    assert slot.version(h) == "6.0.1"
    slot.ssh(h, f"mkdir {lock}")
    slot.fab("-H", h, "unlock")
    slot.fab("-H", h, "rollback")
    assert slot.version(h) == "6.0.0"


def _slow_upload(slot, app_variant, h, old, new):
    """Deploy `old`, then start deploying `new` (6 MB more, uploads capped at 1.5 MB/s) and
    return once its upload is under way: (the fab process, the pids of rsync and its ssh)."""
    slot.fab("-H", h, "deploy", "--version", old)
    slot.configure(bwlimit_kbps=1500)
    big = app_variant("big_app", files={"blob.bin": os.urandom(6 * 1024 * 1024)})
    proc = slot.popen("-H", h, "deploy", "--version", new, "--source", str(big))
    pids = _wait_for(lambda: _pgrep(f"rsync .*releases/.partial-v{new}"))
    time.sleep(1)
    return proc, pids, big


def test_upload_cut_mid_transfer_is_retried(slot, app_variant):
    h = slot.hosts[1]
    proc, pids, _ = _slow_upload(slot, app_variant, h, "4.0.0", "4.0.1")
    for pid in pids.split():  # the transfer dies (rsync and its ssh); fab must retry it
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "Retrying" in err and "rsync failed" in err
    assert slot.version(h) == "4.0.1"


def test_controller_killed_mid_upload_leaves_the_old_release_serving_and_a_rerun_completes(slot, app_variant):
    h = slot.hosts[0]
    proc, _, big = _slow_upload(slot, app_variant, h, "5.0.0", "5.0.1")
    os.killpg(proc.pid, signal.SIGKILL)  # the laptop dies: fab, rsync and ssh all at once
    proc.communicate()
    assert slot.version(h) == "5.0.0" and slot.current(h) == "v5.0.0"
    r = slot.fab("-H", h, "deploy", "--version", "5.0.1", "--source", str(big))
    assert "taking over a stale lock" in r.stdout
    assert slot.version(h) == "5.0.1"


def _pgrep(pattern: str) -> str:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.strip()


def _wait_for(fn, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")
