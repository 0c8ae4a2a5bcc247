"""Deploy, upgrade, rollback, failure and cleanup on real hosts, through the real `fab` CLI,
with the FastAPI example (uvicorn through sgpfab's launcher, Alembic migrations, a uv project)."""

import json
import re
import shlex

import yaml

BROKEN = 'raise RuntimeError("this release is broken on purpose")'


def items(slot, h):
    return [i["name"] for i in slot.get_json(h, "/items")]


def test_upgrade_keeps_data_and_rollback_returns_the_old_release(slot):
    a, b = slot.hosts
    first = slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.4")
    for h in (a, b):
        # a first deploy says how far each host's upload has got (the wheels are megabytes)
        assert re.search(rf"{h}\b.*uploading wheels: [1-9][\d.]* MB \(100%\)", first.stdout + first.stderr), (
            first.stdout
        )
        assert slot.http(h, "/health")[0] == 200
        assert slot.post_json(h, "/items", {"name": f"written-under-1.0.4-on-{h}"})[0] == 201
    # each release keeps its manifest on the host; the next one's goes as a difference from it.
    # Host b's copy is altered: b cannot rebuild the new manifest from it and gets it whole
    kept = f"{slot.api_root}/releases/v1.0.4/.sgpfab/manifest.json"
    manifest = json.loads(slot.ssh(b, f"cat {kept}"))
    manifest["files"]["sgp_api/models.py"] = "0" * 64
    slot.ssh(b, f"echo {shlex.quote(json.dumps(manifest))} > {kept}")
    changed = slot.variant("v2", append={"sgp_api/main.py": "# 1.0.5"})
    again = slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.5", "--source", str(changed))
    out = again.stdout + again.stderr
    assert "uploading wheels" not in out  # nothing of them is sent again
    assert re.search(rf"{b}\b.*no usable copy of the manifest of v1\.0\.4 here", out), out
    assert not re.search(rf"{a}\b.*no usable copy", out), out
    sent = json.loads((slot.dist / slot.app / "releases" / "v1.0.5" / "manifest.json").read_text())
    for h in (a, b):  # each host verified the release against exactly the controller's manifest
        assert json.loads(slot.ssh(h, f"cat {slot.api_root}/releases/v1.0.5/.sgpfab/manifest.json")) == sent
    for h in (a, b):
        assert slot.current(h) == "v1.0.5"
        assert items(slot, h) == [f"written-under-1.0.4-on-{h}"]
        backups = slot.ssh(h, f"sudo ls {slot.api_root}/backups").split()
        assert any(x.endswith("-before-v1.0.5.db") for x in backups), backups
        # settings are private to the service user; the processes never run as root
        assert slot.ssh(h, f"sudo stat -c '%a %U' {slot.api_root}/shared/config/env").split() == ["600", "deploy"]
        assert f"DATABASE_URL='sqlite:///{slot.api_root}/shared/db/app.db'" in slot.ssh(
            h, f"sudo cat {slot.api_root}/shared/config/env"
        )
        users = slot.ssh(h, f"ps -o user= -p $(systemctl show -p MainPID --value {slot.service}-web@v1.0.5)").split()
        assert users == ["deploy"]
        assert slot.units(h) == [f"{slot.service}-web@v1.0.5.service", f"{slot.service}.socket"]
        # the new release got the old one's compiled bytecode (the same file) for the source files
        # that did not change, in its venv and its own code; the changed module was compiled anew
        for pyc, shared in [
            (".venv/lib/python3.11/site-packages/fastapi/__pycache__/applications.cpython-311.pyc", True),
            ("sgp_api/__pycache__/models.cpython-311.pyc", True),
            ("sgp_api/__pycache__/main.cpython-311.pyc", False),
        ]:
            inodes = slot.ssh(h, f"cd {slot.api_root}/releases && stat -c %i v1.0.4/{pyc} v1.0.5/{pyc}").split()
            assert len(inodes) == 2 and (inodes[0] == inodes[1]) is shared, (pyc, inodes)

    slot.fab("-H", a, "rollback")
    assert slot.current(a) == "v1.0.4" and slot.units(a)[0] == f"{slot.service}-web@v1.0.4.service"
    assert slot.current(b) == "v1.0.5", "rollback of one host must not touch another"
    assert items(slot, a) == [f"written-under-1.0.4-on-{a}"]
    slot.fab("-H", a, "rollback", "--version", "1.0.5")
    assert slot.current(a) == "v1.0.5"

    listing = slot.fab("-H", f"{a},{b}", "list").stdout
    assert re.search(rf"{a}\s.*1\.0\.5\s.*\*", listing) and re.search(rf"{b}\s.*1\.0\.4\s", listing)
    status = slot.fab("-H", f"{a},{b}", "status").stdout
    assert status.count("healthy") == 2 and status.count("web: active") == 2 and "as deployed" in status


def test_broken_release_never_stays_active(slot):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.4")
    slot.post_json(h, "/items", {"name": "precious"})
    broken = slot.variant("broken", append={"sgp_api/main.py": BROKEN})
    r = slot.fab("-H", h, "deploy", "--version", "1.0.5", "--source", str(broken), ok=False)
    out = r.stdout + r.stderr
    assert "rolled back to v1.0.4 (healthy)" in out and "keeps crashing" in out, out
    assert "this release is broken on purpose" in out, "the report shows the process's last log lines"
    assert slot.current(h) == "v1.0.4" and items(slot, h) == ["precious"]
    assert slot.units(h) == [f"{slot.service}-web@v1.0.4.service", f"{slot.service}.socket"]
    assert re.search(r"1\.0\.5\s.*bad", slot.fab("-H", h, "list").stdout)
    # A good 1.0.6 on top, then the default rollback skips the bad 1.0.5.
    slot.fab("-H", h, "deploy", "--version", "1.0.6")
    slot.fab("-H", h, "rollback")
    assert slot.current(h) == "v1.0.4"


def test_a_release_whose_health_check_fails_is_refused_fast(slot):
    """A deterministic failure (the app answers 500) does not wait out the whole timeout."""
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    sick = slot.variant(
        "sick",
        append={
            "sgp_api/main.py": (
                "from fastapi import Response\n"
                "app.router.routes = [r for r in app.router.routes if getattr(r, 'path', '') != '/health']\n"
                "@app.get('/health')\n"
                "def sick():\n"
                "    return Response('database on fire', status_code=500)\n"
            )
        },
    )
    slot.configure(health={"path": "/health", "timeout": 120})
    r = slot.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(sick), "--json", ok=False)
    doc = __import__("json").loads(r.stdout)
    o = doc["outcomes"][0]
    assert o["status"] == "failed" and "HTTP 500" in o["message"] and o["after"] == "1.0.0"
    assert o["seconds"] < 60, "three 500s from the new release fail at once, not after 120 s"
    assert slot.current(h) == "v1.0.0"


def test_first_deploy_that_fails_leaves_nothing_running(slot):
    h = slot.hosts[1]
    broken = slot.variant("broken", append={"sgp_api/main.py": BROKEN})
    r = slot.fab("-H", h, "deploy", "--version", "2.0.0", "--source", str(broken), ok=False)
    assert "no earlier release to return to" in r.stdout
    assert slot.current(h) is None and slot.units(h) == []
    assert "2.0.0" in r.stdout and re.search(rf"{h}\W+FAILED\W+-\W+-", r.stdout), r.stdout


def test_cleanup_keeps_the_newest_the_active_and_its_rollback_target(slot):
    h = slot.hosts[0]
    bundles = ["1.0.1", "1.0.2", "1.0.3", "1.0.10"]
    for v in bundles:
        slot.fab("-H", h, "deploy", "--version", v)
    slot.fab("-H", h, "rollback", "--version", "1.0.2")
    slot.ssh(h, f"mkdir {slot.api_root}/releases/.partial-v9.9.9 {slot.api_root}/incoming/v9.9.9")
    slot.fab("-H", h, "cleanup", "--keep", "1")
    assert slot.releases(h) == ["current", "v1.0.1", "v1.0.10", "v1.0.2"]
    assert slot.ssh(h, f"ls {slot.api_root}/incoming").split() == []
    assert slot.current(h) == "v1.0.2"


def test_redeploy_is_a_no_op_changed_content_is_refused_and_drifted_units_are_rewritten(slot, tmp_path):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.1.0")
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0")
    assert "already active and healthy: nothing to do" in r.stdout
    changed = slot.variant("changed", files={"extra.txt": "new file"})
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0", "--source", str(changed), ok=False)
    assert re.search(r"bundle sgp 1.1.0 already exists .* with different content", r.stderr)
    slot.dist = tmp_path / "other-dist"  # built elsewhere: the host refuses it too
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0", "--source", str(changed), ok=False)
    assert "release 1.1.0 already exists with different content" in r.stdout
    assert slot.current(h) == "v1.1.0"
    # Someone edits the unit on the host (drops User=): the same deploy puts sgpfab's back.
    unit = f"/etc/systemd/system/{slot.service}-web@.service"
    slot.ssh(h, f"sudo sed -i '/^User=/d' {unit} && sudo systemctl daemon-reload")
    slot.dist = tmp_path / "dist"
    r = slot.fab("-H", h, "deploy", "--version", "1.1.0")
    assert "units had drifted" in r.stdout
    assert "User=deploy" in slot.ssh(h, f"cat {unit}")


def test_incomplete_release_directory_is_rebuilt_not_trusted(slot):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "3.0.0")
    slot.ssh(h, f"mkdir -p {slot.api_root}/releases/v3.0.1 && echo junk > {slot.api_root}/releases/v3.0.1/junk.py")
    slot.fab("-H", h, "rollback", "--version", "3.0.1", ok=False)
    slot.fab("-H", h, "deploy", "--version", "3.0.1")
    assert slot.current(h) == "v3.0.1"
    assert slot.ssh(h, f"ls {slot.api_root}/releases/v3.0.1/junk.py 2>/dev/null || true").strip() == ""


def test_bad_input_changes_nothing_on_any_host(slot):
    a, b = slot.hosts
    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0")
    slot.fab("-H", a, "deploy", "--version", "1.0.1")
    before = [slot.snapshot(h) for h in (a, b)]
    for args, message in [
        (("-H", f"{a},{b}", "deploy", "--version", "1.0.1/../../x"), "invalid version"),
        (("-H", f"{a},{b}", "deploy", "--version", "1\u0660.0.2"), "invalid version"),
        (("-H", f"{a},ghost", "deploy", "--version", "1.0.2"), "unknown host or group 'ghost'"),
        (("-H", f"{a},{b}", "rollback", "--version", "1.0.1"), f"{b}: release 1.0.1 does not exist here"),
        (("-H", b, "rollback"), "no earlier good release"),
        (("-H", a, "deploy", "--version", "1.0.2", "--app", "nope"), "unknown app 'nope'"),
        (("-H", a, "cleanup", "--keep", "0"), "--keep must be at least 1"),
        (("-H", a, "restore", "--backup", "../../etc/passwd"), "no backup named"),
    ]:
        r = slot.fab(*args, ok=False)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
        assert "Traceback" not in r.stdout + r.stderr
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
