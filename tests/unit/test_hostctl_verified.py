"""linux.hostctl_verified, run for real in a local shell: the installed helper runs only when its
SHA-256 is the expected one; otherwise the command says so (EXIT_NO_HELPER) and the compressed
source on stdin runs instead, followed by the helper's own input."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from support.builders import app_with, inventory_data, load_inventory

from sgpfab import linux
from sgpfab.layout import Layout

# A stand-in helper: prints its arguments and its stdin as JSON.
HELPER = b"import json, sys\nprint(json.dumps({'argv': sys.argv, 'stdin': sys.stdin.read()}))\n"
DIGEST = hashlib.sha256(HELPER).hexdigest()


def _inst(tmp_path):
    root = tmp_path / "api"
    inv = load_inventory(
        tmp_path,
        data=inventory_data(
            hosts={"h1": {"user": "deploy", "python": sys.executable}}, apps={"shop": app_with(api_root=str(root))}
        ),
    )
    return inv.instance("shop", "h1")


def _run(cmd):
    return subprocess.run(["sh", "-c", cmd.text], input=cmd.stdin or b"", capture_output=True, timeout=60)


def _install(inst, content: bytes):
    path = Path(Layout.for_instance(inst).hostctl)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_no_helper_installed_asks_for_the_source(tmp_path):
    inst = _inst(tmp_path)
    r = _run(linux.hostctl_verified(inst, DIGEST, "state", data=b"{}"))
    assert r.returncode == linux.EXIT_NO_HELPER
    assert r.stdout.decode().splitlines() == [linux.NO_HELPER]


def test_installed_helper_runs_when_its_digest_matches(tmp_path):
    inst = _inst(tmp_path)
    _install(inst, HELPER)
    cmd = linux.hostctl_verified(inst, DIGEST, "preflight", "--with-state", data=b'{"x": 1}')
    assert cmd.stdin == b'{"x": 1}'  # no source travels
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["argv"] == ["hostctl", "--root", inst.api_root, "preflight", "--with-state"]
    assert out["stdin"] == '{"x": 1}'


def test_a_different_installed_helper_is_not_run(tmp_path):
    inst = _inst(tmp_path)
    _install(inst, HELPER.replace(b"argv", b"ARGV"))
    r = _run(linux.hostctl_verified(inst, DIGEST, "state"))
    assert r.returncode == linux.EXIT_NO_HELPER
    assert b"ARGV" not in r.stdout


def test_the_source_on_stdin_runs_and_its_input_follows(tmp_path):
    inst = _inst(tmp_path)
    _install(inst, b"raise SystemExit('the installed copy must not run')\n")
    cmd = linux.hostctl_verified(inst, DIGEST, "dbcheck", "--stdin", source=HELPER, data=b'{"env": {}}')
    assert cmd.stdin is not None and len(cmd.stdin) < len(HELPER) + len(b'{"env": {}}') + 40
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["argv"][-2:] == ["dbcheck", "--stdin"] and out["stdin"] == '{"env": {}}'


def test_a_corrupted_source_on_stdin_is_not_run(tmp_path):
    inst = _inst(tmp_path)
    cmd = linux.hostctl_verified(inst, DIGEST, "state", source=HELPER + b"print('extra')\n")
    r = _run(cmd)
    assert r.returncode == linux.EXIT_NO_HELPER and b"extra" not in r.stdout
