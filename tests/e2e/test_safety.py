"""Security and data safety on real hosts: no way into a unit file or a command line, bundles
that cannot be altered, never root, no acknowledged write lost, locks that cannot be stolen,
a full disk, cold caches under parallel deploys, tampered tar entries."""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from support.e2e import Writer


# -- hostile values never reach a host --------------------------------------------------------
@pytest.mark.parametrize(
    "setting,value",
    [
        ("processes", {"web": {"server": "uvicorn", "app": "sgp_api.main:app\nExecStartPre=+/bin/touch /tmp/pwned"}}),
        (
            "processes",
            {
                "web": {"server": "uvicorn", "app": "sgp_api.main:app"},
                "worker": "python -m x\nExecStartPre=+/bin/touch /tmp/pwned",
            },
        ),
        ("release", ["alembic upgrade head\r\nExecStartPre=+/bin/touch /tmp/pwned"]),
        ("env", {"DEBUG": "0\nExecStartPre=+/bin/touch /tmp/pwned"}),
        ("service", "e2e\nExecStartPre=+touch"),
        ("run_as", "root"),
    ],
)
def test_hostile_inventory_values_are_refused_before_any_host_changes(slot, setting, value):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    before = slot.snapshot(h)
    slot.configure(**{setting: value})
    r = slot.fab("-H", h, "deploy", "--version", "1.0.1", ok=False)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert slot.snapshot(h) == before
    assert slot.ssh(h, "ls /tmp/pwned 2>/dev/null || true").strip() == ""


def test_the_service_never_runs_as_root_even_when_sgpfab_logs_in_as_root(slot):
    h = slot.hosts[1]
    slot.inv["defaults"]["user"] = "root"
    slot.configure()
    before = slot.snapshot(h)
    r = slot.fab("-H", h, "deploy", "--version", "1.0.0", ok=False)
    assert "would run as root" in r.stderr and "run_as" in r.stderr, r.stderr
    assert slot.snapshot(h) == before
    slot.configure(run_as="deploy")  # root may deploy, the app runs as deploy
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    unit = slot.ssh(h, f"cat /etc/systemd/system/{slot.service}-web@.service")
    assert "User=deploy" in unit and "Group=deploy" in unit
    pid = slot.ssh(h, f"systemctl show -p MainPID --value {slot.service}-web@v1.0.0").strip()
    assert slot.ssh(h, f"ps -o user= -p {pid}").strip() == "deploy"


# -- bundles ------------------------------------------------------------------------------------
def _resign(bundle: Path, *, files: dict | None = None) -> None:
    """Make the manifest match the bundle again (as an attacker with write access to dist/ would)."""
    m = json.loads((bundle / "manifest.json").read_text())
    archive = bundle / m["archive"]["name"]
    m["archive"]["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    m["archive"]["size"] = archive.stat().st_size
    if files is not None:
        m["files"] = files
    m["extras"] = {n: hashlib.sha256((bundle / n).read_bytes()).hexdigest() for n in m["extras"]}
    (bundle / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))


def test_changed_bundle_metadata_is_refused_by_deploy_and_promote(slot):
    a, b = slot.hosts
    slot.fab("-H", a, "deploy", "--version", "1.0.0")
    bundle = slot.dist / "sgp/releases/v1.0.0"
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["spec"]["processes"]["web"]["app"] = "evil:app"
    (bundle / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    _resign(bundle)
    before = slot.snapshot(b)
    for args in (("-H", b, "deploy", "--bundle", "1.0.0"), ("promote", "--from", a, "--to", b, "--version", "1.0.0")):
        r = slot.fab(*args, ok=False)
        assert "content digest mismatch" in r.stderr, r.stderr
    assert slot.snapshot(b) == before


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_malicious_tar_entries_are_refused_on_the_controller_and_leave_nothing_on_hosts(slot, kind):
    h = slot.hosts[0]
    slot.fab("bundle", "--version", "1.0.0")
    bundle = slot.dist / "sgp/releases/v1.0.0"
    m = json.loads((bundle / "manifest.json").read_text())
    archive = bundle / m["archive"]["name"]
    raw = io.BytesIO()
    with tarfile.open(archive, "r:gz") as src, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        evil = tarfile.TarInfo(
            {
                "dotdot": "../../../../tmp/evil.py",
                "absolute": "/tmp/evil.py",
                "symlink": "evil-link",
                "hardlink": "evil-hard",
                "device": "evil-dev",
            }[kind]
        )
        if kind == "symlink":
            evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/shadow"
        elif kind == "hardlink":
            evil.type, evil.linkname = tarfile.LNKTYPE, "alembic.ini"
        elif kind == "device":
            evil.type, evil.devmajor, evil.devminor = tarfile.CHRTYPE, 1, 3
        data = b"print('pwned')\n" if kind in ("dotdot", "absolute") else b""
        evil.size = len(data)
        dst.addfile(evil, io.BytesIO(data) if data else None)
    archive.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    files = dict(m["files"])
    if kind in ("dotdot", "absolute"):
        files[evil.name] = hashlib.sha256(data).hexdigest()
    _resign(bundle, files=files)
    before = slot.snapshot(h)
    for args in (("-H", h, "deploy", "--bundle", "1.0.0"), ("-H", h, "plan", "--bundle", "1.0.0")):
        r = slot.fab(*args, ok=False)
        assert r.returncode == 1 and "corrupt bundle" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stdout + r.stderr
    assert slot.snapshot(h) == before
    assert slot.ssh(h, "ls /tmp/evil.py 2>/dev/null || true").strip() == ""


def test_a_tampered_bundle_does_not_poison_the_cache_and_cold_caches_survive_parallel_deploys(slot, tmp_path):
    hosts = ",".join(slot.all_hosts[:3])
    slot.env["SGPFAB_CACHE"] = str(tmp_path / "cold-cache")  # nothing cached: wheels, uv, unpacked trees
    slot.fab("-H", hosts, "deploy", "--version", "1.0.0", "--parallel", "3")
    assert [slot.current(h) for h in slot.all_hosts[:3]] == ["v1.0.0"] * 3
    slot.fab("bundle", "--version", "1.0.1", "--source", str(slot.variant("v1", append={"sgp_api/main.py": "#"})))
    bundle = slot.dist / "sgp/releases/v1.0.1"
    good = tmp_path / "good-copy"
    shutil.copytree(bundle, good)
    archive = next(bundle.glob("app-*.tar.gz"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    r = slot.fab("-H", hosts, "deploy", "--bundle", "1.0.1", "--parallel", "3", ok=False)
    assert "does not match its SHA-256" in r.stderr
    shutil.rmtree(bundle)
    shutil.copytree(good, bundle)
    slot.fab("-H", hosts, "deploy", "--bundle", "1.0.1", "--parallel", "3")
    assert [slot.current(h) for h in slot.all_hosts[:3]] == ["v1.0.1"] * 3


def test_leftovers_the_host_refused_are_removed_by_cleanup(slot):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    weird = "v1\u0660.0.5"
    slot.ssh(
        h,
        f"mkdir -p '{slot.api_root}/releases/.partial-{weird}' '{slot.api_root}/releases/{weird}'"
        f" '{slot.api_root}/incoming/{weird}'",
    )
    slot.fab("-H", h, "cleanup", "--keep", "2")
    assert slot.releases(h) == ["current", "v1.0.0"]
    assert slot.ssh(h, f"ls -A {slot.api_root}/incoming").strip() == ""


# -- data -----------------------------------------------------------------------------------------
def _names_in(slot, h, db_path):
    out = slot.ssh(
        h,
        f'sudo python3 -c "import sqlite3,json; print(json.dumps([r[0] for r in '
        f"sqlite3.connect('{db_path}').execute('select name from item')]))\"",
    )
    return set(json.loads(out))


def test_restore_and_rollback_with_db_restore_lose_no_acknowledged_write(slot):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    slot.post_json(h, "/items", {"name": "checkpoint"})
    name = re.search(r"app-\d{8}T\d{12}Z-mark\.db", slot.fab("-H", h, "backup", "--label", "mark").stdout).group(0)
    with Writer(slot, h) as w:
        slot.fab("-H", h, "restore", "--backup", name)
    assert len(w.acked) > 50, "the writer really ran through the restore"
    saved = sorted(re.findall(r"app-\d{8}T\d{12}Z-before-restore\.db", slot.fab("-H", h, "list-backups").stdout))[-1]
    live = _names_in(slot, h, f"{slot.api_root}/shared/db/app.db")
    kept = _names_in(slot, h, f"{slot.api_root}/backups/{saved}")
    lost = [n for n in w.acked if n not in live and n not in kept]
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert "checkpoint" in live

    # The same through a rollback that crosses a schema change with --db restore.
    new_migration = (Path(slot.app_config["source"]) / "migrations/versions/0001_create_items.py").read_text()
    tags = slot.variant(
        "tags",
        files={
            "migrations/versions/0002_tags.py": (
                '"""tags"""\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = "0002"\ndown_revision = "0001"\n'
                'branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    op.create_table("tag", sa.Column("id",'
                ' sa.Integer, primary_key=True))\n\n\ndef downgrade():\n    op.drop_table("tag")\n'
            )
        },
    )
    assert "revision" in new_migration
    slot.fab("-H", h, "deploy", "--version", "1.1.0", "--source", str(tags))
    with Writer(slot, h) as w:
        slot.fab("-H", h, "rollback", "--db", "restore")
    assert slot.current(h) == "v1.0.0" and len(w.acked) > 50
    saved = sorted(
        re.findall(r"app-\d{8}T\d{12}Z-before-rollback-to-v1\.0\.0\.db", slot.fab("-H", h, "list-backups").stdout)
    )[-1]
    live = _names_in(slot, h, f"{slot.api_root}/shared/db/app.db")
    kept = _names_in(slot, h, f"{slot.api_root}/backups/{saved}")
    lost = [n for n in w.acked if n not in live and n not in kept]
    assert not lost, f"{len(lost)} acknowledged writes lost in the rollback"


def test_a_half_written_backup_is_private_and_pruned(slot):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    slot.post_json(h, "/items", {"name": "x"})
    stale = f"{slot.api_root}/backups/app-20260101T000000000000Z-killed.db.partial"
    slot.ssh(h, f"sudo -u deploy sh -c 'umask 022; echo half > {stale}'")
    slot.fab("-H", h, "backup")
    assert slot.ssh(h, f"ls {stale} 2>/dev/null || true").strip() == ""
    modes = slot.ssh(h, f"sudo stat -c '%a' {slot.api_root}/backups/*.db").split()
    assert modes and set(modes) == {"600"}
    slot.ssh(h, f"sudo -u deploy sh -c 'umask 022; echo half > {stale}'")
    slot.fab("-H", h, "cleanup")
    assert slot.ssh(h, f"ls {stale} 2>/dev/null || true").strip() == ""


# -- locks ----------------------------------------------------------------------------------------
def test_two_runs_that_find_the_same_stale_lock_cannot_both_take_it(slot, tmp_path):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    dead = slot.popen("-H", h, "deploy", "--version", "1.0.1", extra_env={"SGPFAB_TEST_HOOK": "lock=kill"})
    dead.communicate(timeout=300)
    flag_a, flag_b = tmp_path / "go-a", tmp_path / "go-b"
    a = slot.popen(
        "-H", h, "rollback", "--version", "1.0.0", extra_env={"SGPFAB_TEST_HOOK": f"lock-takeover=pause:{flag_a}"}
    )
    b = slot.popen(
        "-H", h, "rollback", "--version", "1.0.0", extra_env={"SGPFAB_TEST_HOOK": f"lock-takeover=pause:{flag_b}"}
    )
    for flag in (flag_a, flag_b):  # both found the stale lock and stopped right before taking it over
        deadline = time.monotonic() + 120
        while not Path(str(flag) + ".reached").exists():
            assert time.monotonic() < deadline, "a run never reached the takeover"
            time.sleep(0.1)
    flag_a.touch()
    out_a, err_a = a.communicate(timeout=300)
    flag_b.touch()
    out_b, err_b = b.communicate(timeout=300)
    assert a.returncode == 0, out_a + err_a
    assert b.returncode != 0 and "locked by" in out_b, out_b + err_b


def test_the_controller_killed_during_a_backup_leaves_no_second_backup_beside_it(slot):
    """A re-run that takes over the dead run's lock waits for what it left running on the host."""
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    db = f"{slot.api_root}/shared/db/app.db"
    slot.ssh(
        h,
        f"sudo -u deploy python3 -c \"import sqlite3; c=sqlite3.connect('{db}');"
        " c.execute('create table if not exists ballast(b blob)');"
        " c.executemany('insert into ballast values (randomblob(65536))', [()]*6000); c.commit()\"",
    )
    p = slot.popen("-H", h, "backup", "--label", "big")
    deadline = time.monotonic() + 120
    while not slot.ssh(h, f"ls {slot.api_root}/backups/ | grep -c partial || true").strip() not in ("", "0"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(p.pid, 9)
    p.communicate()
    r = slot.fab("-H", h, "backup", "--label", "second")
    assert "taking over a stale lock" in r.stdout
    names = slot.ssh(h, f"ls {slot.api_root}/backups").split()
    assert not [n for n in names if n.endswith(".partial")], names
    for n in names:  # every backup there is complete and sound
        assert (
            slot.ssh(
                h,
                f"sudo python3 -c \"import sqlite3; print(sqlite3.connect('{slot.api_root}/backups/{n}')"
                ".execute('pragma integrity_check').fetchone()[0])\"",
            ).strip()
            == "ok"
        ), n


# -- a full disk ------------------------------------------------------------------------------------
def test_a_full_disk_is_refused_or_cleaned_up_and_the_running_release_keeps_working(slot, tmp_path):
    h = slot.hosts[0]
    root = slot.api_root
    slot.ssh(h, f"sudo mkdir -p {root} && sudo mount -t tmpfs -o size=300m tmpfs {root}")
    try:
        slot.fab("-H", h, "deploy", "--version", "1.0.0")
        slot.post_json(h, "/items", {"name": "before"})
        # The disk fills up after the preflight looked (another program writing a big file):
        # the upload or build fails midway, names the host and the cause, and leaves nothing.
        flag = tmp_path / "go"
        p = slot.popen(
            "-H",
            h,
            "deploy",
            "--version",
            "1.0.1",
            "--source",
            str(slot.variant("v1", files={"data/blob.bin": os.urandom(12 * 2**20)})),
            extra_env={"SGPFAB_TEST_HOOK": f"prepare=pause:{flag}"},
        )
        deadline = time.monotonic() + 300
        while not Path(str(flag) + ".reached").exists():
            assert time.monotonic() < deadline and p.poll() is None, p.communicate()
            time.sleep(0.1)
        free = int(slot.ssh(h, f"df --output=avail -B1 {root} | tail -1"))
        slot.ssh(h, f"sudo fallocate -l {free - 4 * 2**20} {root}/ballast")
        flag.touch()
        out, err = p.communicate(timeout=600)
        assert p.returncode != 0, out + err
        assert re.search(rf"{h}: upload to \S+ failed .*No space left on device", out), out
        assert "Traceback" not in out + err
        assert slot.releases(h) == ["current", "v1.0.0"], "the failed build was removed"
        slot.ssh(h, f"sudo rm {root}/ballast")
        assert slot.current(h) == "v1.0.0" and slot.post_json(h, "/items", {"name": "after"})[0] == 201
        # With too little room from the start, the preflight refuses before uploading anything.
        free = int(slot.ssh(h, f"df --output=avail -B1 {root} | tail -1"))
        slot.ssh(h, f"sudo fallocate -l {free - 8 * 2**20} {root}/ballast")
        before = slot.snapshot(h)
        r = slot.fab("-H", h, "deploy", "--bundle", "1.0.1", ok=False)
        assert "not enough free space" in r.stderr and "(nothing was changed)" in r.stderr, r.stderr
        assert slot.snapshot(h) == before
    finally:
        slot.ssh(h, f"sudo systemctl stop '{slot.service}-*' {slot.service}.socket; sudo umount -l {root}", check=False)


# -- a host that dies mid-rollout -------------------------------------------------------------------
def test_a_host_that_drops_off_mid_rollout_is_one_line_and_a_rerun_completes(slot):
    a, b = slot.hosts
    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0")
    slot.configure(release=["alembic upgrade head", "sleep 8"])
    veth = next(x.veth for x in slot.fleet.hosts if x.name == b)
    p = slot.popen("-H", f"{a},{b}", "deploy", "--version", "1.0.1", "--parallel", "2", "--max-fail", "1")
    deadline = time.monotonic() + 120
    while "sleep 8" not in slot.ssh(b, "ps -eo cmd", check=False):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.system(f"ip link set {veth} down")
    try:
        out, err = p.communicate(timeout=600)
    finally:
        os.system(f"ip link set {veth} up")
    assert p.returncode == 2, out + err
    assert "Traceback" not in out + err and "paramiko" not in err.lower(), err
    assert re.search(rf"{b}\W+FAILED", out) and re.search(rf"{a}\W+ok\W+1\.0\.0\W+1\.0\.1", out), out
    warnings = [ln for ln in err.splitlines() if ln.strip()]
    assert len(warnings) <= 3, err
    time.sleep(2)
    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.1", "--force-unlock")
    assert slot.current(b) == "v1.0.1"


def test_inventory_written_by_the_sandbox_is_valid(slot):
    inv = yaml.safe_load(slot.fleet.inventory.read_text())
    assert set(inv["apps"]) == {"sgp", "tasks", "blog"}
