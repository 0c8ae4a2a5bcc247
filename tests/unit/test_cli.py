"""The `fab` command line as a user types it, for input that must fail before any host is touched."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).with_name("fab"))

INVENTORY = """
defaults: {user: deploy}
hosts:
  prod1: {hostname: 192.0.2.10}
  prod2: {hostname: 192.0.2.11}
groups:
  prod: [prod1, prod2]
app: {source: %s}
""" % (ROOT / "examples" / "sgp_api")


def fab(tmp_path, *args):
    inv = tmp_path / "fleet.yaml"
    inv.write_text(INVENTORY)
    env = {**os.environ, "SGPFAB_INVENTORY": str(inv)}
    return subprocess.run([FAB, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_fab_lists_the_tasks(tmp_path):
    r = fab(tmp_path, "--list")
    assert r.returncode == 0
    for name in ("deploy", "rollback", "list", "status", "cleanup", "sandbox.up", "sandbox.down"):
        assert name in r.stdout


def test_deploy_help_documents_every_flag(tmp_path):
    r = fab(tmp_path, "-h", "deploy")
    assert r.returncode == 0
    assert "--version" in r.stdout and "semantic version" in r.stdout
    assert "--source" in r.stdout and "app folder" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["-H", "prod1,prod2", "deploy", "--version", "../../etc/passwd"], "invalid version"),
    (["-H", "prod1", "deploy", "--version", "1.0"], "invalid version"),
    (["-H", "prod1,nosuchhost", "deploy", "--version", "1.0.5"], "unknown host or group 'nosuchhost'"),
    (["deploy", "--version", "1.0.5"], "no hosts given"),
    (["-H", "prod", "rollback", "--version", "x.y.z"], "invalid version"),
    (["-H", "prod", "cleanup", "--keep", "0"], "--keep must be at least 1"),
    (["-H", "prod", "deploy", "--version", "1.0.5", "--source", "/nonexistent"], "app source folder not found"),
])
def test_bad_input_is_one_line_and_touches_no_host(tmp_path, args, message):
    r = fab(tmp_path, *args)  # the hosts are TEST-NET addresses: any connection attempt would hang or fail
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
