"""Deploy, upgrade, rollback, failure and cleanup on real hosts, through the real `fab` CLI."""

import re
import shutil
from pathlib import Path

import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sgp_api"


def test_upgrade_keeps_data_and_rollback_returns_the_old_version(slot):
    a, b = slot.hosts
    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.4")
    assert [slot.version(h) for h in (a, b)] == ["1.0.4", "1.0.4"]
    for h in (a, b):
        slot.post_item(h, f"written-under-1.0.4-on-{h}")

    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.5")
    for h in (a, b):
        assert slot.version(h) == "1.0.5"
        assert slot.item_names(h) == [f"written-under-1.0.4-on-{h}"]
        assert slot.current(h) == "v1.0.5"
        backups = slot.ssh(h, f"ls {slot.api_root}/backups").split()
        assert any(x.endswith("-before-v1.0.5.db") for x in backups), backups
        # .env is private and points at shared/; the service runs as the unprivileged user
        assert slot.ssh(h, f"stat -c %a {slot.api_root}/releases/v1.0.5/.env").strip() == "600"
        assert f"DATABASE_URL=sqlite:///{slot.api_root}/shared/db/app.db" in slot.ssh(
            h, f"cat {slot.api_root}/releases/v1.0.5/.env")
        assert slot.ssh(h, "ps -o user= -C python3 -C python3.11 -C python | sort -u").split() == ["deploy"]

    slot.fab("-H", a, "rollback")
    assert slot.version(a) == "1.0.4" and slot.current(a) == "v1.0.4"
    assert slot.version(b) == "1.0.5", "rollback of one host must not touch another"
    assert slot.item_names(a) == [f"written-under-1.0.4-on-{a}"]

    slot.fab("-H", a, "rollback", "--version", "1.0.5")
    assert slot.version(a) == "1.0.5"

    listing = slot.fab("-H", f"{a},{b}", "list").stdout
    assert re.search(rf"{a}\s.*1\.0\.5\s.*\*", listing) and re.search(rf"{b}\s.*1\.0\.4\s", listing)
    status = slot.fab("-H", f"{a},{b}", "status").stdout
    assert status.count("healthy (1.0.5)") == 2 and "active" in status


def test_broken_release_never_stays_active(slot, broken_app):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.4")
    slot.post_item(h, "precious")
    r = slot.fab("-H", h, "deploy", "--version", "1.0.5", "--source", str(broken_app), ok=False)
    assert "failed" in r.stderr + r.stdout and "rolled back to v1.0.4 (healthy)" in r.stdout
    assert "this release is broken on purpose" in r.stdout, "the report shows the service's last log lines"
    assert slot.version(h) == "1.0.4" and slot.current(h) == "v1.0.4"
    assert slot.item_names(h) == ["precious"]
    assert re.search(r"1\.0\.5\s.*bad", slot.fab("-H", h, "list").stdout)

    # A good 1.0.6 on top, then the default rollback skips the bad 1.0.5.
    slot.fab("-H", h, "deploy", "--version", "1.0.6")
    assert slot.version(h) == "1.0.6"
    slot.fab("-H", h, "rollback")
    assert slot.version(h) == "1.0.4"


def test_first_deploy_that_fails_leaves_nothing_running(slot, broken_app):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "2.0.0", "--source", str(broken_app), ok=False)
    assert slot.current(h) is None
    assert slot.ssh(h, f"systemctl is-active {slot.service} || true").strip() in ("inactive", "failed")


def test_cleanup_keeps_the_newest_the_active_and_its_rollback_target(slot):
    h = slot.hosts[0]
    for v in ("1.0.1", "1.0.2", "1.0.3", "1.0.10"):
        slot.fab("-H", h, "deploy", "--version", v)
    slot.fab("-H", h, "rollback", "--version", "1.0.2")
    slot.ssh(h, f"mkdir {slot.api_root}/releases/.partial-v9.9.9")  # a leftover interrupted build
    slot.fab("-H", h, "cleanup", "--keep", "1")
    assert slot.releases(h) == ["current", "v1.0.1", "v1.0.10", "v1.0.2"]
    assert slot.version(h) == "1.0.2"


def test_redeploy_of_the_same_version_is_a_no_op_and_changed_content_is_refused(slot, tmp_path):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.1.0")
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0")
    assert "already active and healthy: nothing to do" in r.stdout
    changed = tmp_path / "changed_app"
    shutil.copytree(EXAMPLE, changed)
    (changed / "extra.txt").write_text("new file")
    # Refused on the controller (the bundle of 1.1.0 exists with other content) ...
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0", "--source", str(changed), ok=False)
    assert re.search(r"bundle 1.1.0 already exists .* with different content", r.stderr)
    # ... and by the host, when built elsewhere (another dist directory).
    slot.dist = tmp_path / "other-dist"
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0", "--source", str(changed), ok=False)
    assert "release 1.1.0 already exists with different content" in r.stdout
    assert slot.version(h) == "1.1.0"


def test_incomplete_release_directory_is_rebuilt_not_trusted(slot):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "3.0.0")
    # Simulate a crash mid-build of 3.0.1 long ago: the directory exists without its marker.
    slot.ssh(h, f"mkdir -p {slot.api_root}/releases/v3.0.1 && echo junk > {slot.api_root}/releases/v3.0.1/main.py")
    slot.fab("-H", h, "rollback", "--version", "3.0.1", ok=False)
    slot.fab("-H", h, "deploy", "--version", "3.0.1")
    assert slot.version(h) == "3.0.1"
    assert "junk" not in slot.ssh(h, f"cat {slot.api_root}/releases/v3.0.1/main.py")


def test_bad_input_changes_nothing_on_any_host(slot):
    a, b = slot.hosts
    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0")
    slot.fab("-H", a, "deploy", "--version", "1.0.1")
    before = [slot.snapshot(h) for h in (a, b)]
    for args, message in [
        (("-H", f"{a},{b}", "deploy", "--version", "1.0.1/../../x"), "invalid version"),
        (("-H", f"{a},ghost", "deploy", "--version", "1.0.2"), "unknown host or group 'ghost'"),
        (("-H", f"{a},{b}", "rollback", "--version", "1.0.1"), f"{b}: release 1.0.1 does not exist here"),
        (("-H", b, "rollback"), "no earlier good release"),
    ]:
        r = slot.fab(*args, ok=False)
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert [slot.snapshot(h) for h in (a, b)] == before


def test_unknown_host_key_is_refused(slot, tmp_path):
    """Fabric would accept any host key; sgpfab must not."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(slot.fleet.ssh_config.read_text().replace(str(slot.fleet.known_hosts), str(tmp_path / "empty")))
    (tmp_path / "empty").write_text("")
    inv = yaml.safe_load(slot.inventory.read_text())
    inv["ssh_config"], inv["known_hosts"] = str(cfg), str(tmp_path / "empty")
    other = tmp_path / "untrusted.yaml"
    other.write_text(yaml.safe_dump(inv))
    h = slot.hosts[0]
    before = slot.snapshot(h)
    r = slot.fab("-H", h, "deploy", "--version", "1.0.0", inventory=other, ok=False)
    assert "host key not trusted" in r.stderr
    assert slot.snapshot(h) == before
