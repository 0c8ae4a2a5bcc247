"""On-server apply on real hosts: sgpfab installed on the host from a wheelhouse copied there
(the host is offline), a bundle built on the controller copied over with rsync, and
`sgpfab apply` run on the host over ssh as the deploy user: no controller-side deploy involved."""

import re
import subprocess
from pathlib import Path

import pytest

from sgpfab.appspec import Target
from sgpfab.bundle.deps import platform_tags

ROOT = Path(__file__).resolve().parents[2]
VENV = "/home/deploy/sgpfab-venv"
BROKEN = 'raise RuntimeError("this release is broken on purpose")'
APPLIED = '\n@app.get("/applied")\ndef applied():\n    return {"release": "%s"}\n'


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """sgpfab's wheel and every wheel it needs for the hosts (Debian 12, CPython 3.11, x86_64)."""
    d = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "uv"), "build", "-q", "--wheel", "-o", str(d), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(d.glob("sgpfab-*.whl"))
    plats = [a for tag in platform_tags(Target()) for a in ("--platform", tag)]
    r = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            *plats,
            "--platform",
            "linux_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "-d",
            str(d),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return d


def copy(slot, src, host, dest):
    r = subprocess.run(
        ["rsync", "-a", "--delete", "--mkpath", "-e", f"ssh -F {slot.fleet.ssh_config}", f"{src}/", f"{host}:{dest}/"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr


def install_sgpfab(slot, host, wheelhouse):
    copy(slot, wheelhouse, host, "wheels")
    slot.ssh(host, f"python3 -m venv {VENV} && {VENV}/bin/pip install -q --no-index --find-links ~/wheels sgpfab")


def write(slot, host, path, text):
    subprocess.run(
        ["ssh", "-F", str(slot.fleet.ssh_config), host, f"cat > {path}"], input=text, text=True, check=True, timeout=60
    )


def bundle(slot, version, variant):
    slot.fab("bundle", "--version", version, "--source", str(variant))
    return slot.dist / slot.app / "releases" / f"v{version}"


def apply(slot, host, version, *flags, sudo=False):
    cmd = f"{'sudo ' if sudo else ''}{VENV}/bin/sgpfab apply ~/bundles/v{version} {' '.join(flags)}"
    return subprocess.run(
        ["ssh", "-F", str(slot.fleet.ssh_config), host, cmd], capture_output=True, text=True, timeout=900
    )


def test_apply_upgrades_a_deployed_host_and_rolls_a_broken_bundle_back(slot, wheelhouse):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    slot.post_json(h, "/items", {"name": "kept"})
    install_sgpfab(slot, h, wheelhouse)
    good = slot.variant("good", append={"sgp_api/main.py": APPLIED % "1.0.1"})
    copy(slot, bundle(slot, "1.0.1", good), h, "bundles/v1.0.1")
    # The slot's API_ROOT is not /srv/sgp: a config file names it; the rest comes from the last deploy.
    write(slot, h, "apply.yaml", f"api_root: {slot.api_root}\n")

    refused = apply(slot, h, "1.0.1", "--config", "apply.yaml", sudo=True)  # root would take API_ROOT over
    assert refused.returncode == 1 and refused.stderr.startswith("error: run sgpfab apply as deploy"), refused
    assert "Traceback" not in refused.stderr

    r = apply(slot, h, "1.0.1", "--config", "apply.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "release command 1/1: alembic upgrade head" in r.stdout and "healthy" in r.stdout
    assert slot.current(h) == "v1.0.1" and slot.get_json(h, "/applied") == {"release": "1.0.1"}
    assert [i["name"] for i in slot.get_json(h, "/items")] == ["kept"]
    assert any(x.endswith("-before-v1.0.1.db") for x in slot.ssh(h, f"sudo ls {slot.api_root}/backups").split())
    # settings were kept, not rewritten; the service still runs as the deploy user
    assert f"DATABASE_URL='sqlite:///{slot.api_root}/shared/db/app.db'" in slot.ssh(
        h, f"sudo cat {slot.api_root}/shared/config/env"
    )
    assert slot.units(h) == [f"{slot.service}-web@v1.0.1.service", f"{slot.service}.socket"]

    # The controller sees the same host: releases and the audit log.
    assert re.search(r"1\.0\.1\s.*\*", slot.fab("-H", h, "list").stdout)
    history = slot.fab("-H", h, "history").stdout
    assert re.search(rf"deploy@{h}\s.*apply\s.*1\.0\.0\s.*1\.0\.1\s.*ok", history), history

    broken = slot.variant("broken", append={"sgp_api/main.py": BROKEN})
    copy(slot, bundle(slot, "1.0.2", broken), h, "bundles/v1.0.2")
    r = apply(slot, h, "1.0.2", "--config", "apply.yaml", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    assert '"status": "failed"' in r.stdout and "rolled back to v1.0.1" in r.stdout, r.stdout
    assert slot.current(h) == "v1.0.1" and slot.get_json(h, "/applied") == {"release": "1.0.1"}
    assert slot.units(h) == [f"{slot.service}-web@v1.0.1.service", f"{slot.service}.socket"]
    assert re.search(r"1\.0\.2\s.*bad", slot.fab("-H", h, "list").stdout)
    assert re.search(r"apply\s.*1\.0\.1\s.*1\.0\.2\s.*failed", slot.fab("-H", h, "history").stdout)


def test_apply_installs_on_a_host_no_controller_deployed_to(slot, wheelhouse):
    h = slot.hosts[1]
    install_sgpfab(slot, h, wheelhouse)
    copy(
        slot,
        bundle(slot, "1.0.0", slot.variant("v1", append={"sgp_api/main.py": APPLIED % "1.0.0"})),
        h,
        "bundles/v1.0.0",
    )
    write(slot, h, "bad.yaml", f"api_root: {slot.api_root}\nport: 99999\n")
    bad = apply(slot, h, "1.0.0", "--config", "bad.yaml")
    assert bad.returncode == 1 and bad.stderr.startswith("error: bad.yaml: apps.sgp.port:"), bad.stderr
    assert slot.ssh(h, f"test -e {slot.api_root} && echo exists || true").strip() == "", "nothing was written"
    missing = apply(slot, h, "1.0.0")
    assert missing.returncode == 1 and "was never deployed to /srv/sgp" in missing.stderr, missing.stderr

    write(
        slot,
        h,
        "app.yaml",
        f"api_root: {slot.api_root}\nservice: {slot.service}\nport: {slot.port}\n"
        "health: {path: /health, timeout: 40}\nenv: {GREETING: hello}\n",
    )
    r = apply(slot, h, "1.0.0", "--config", "app.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert slot.current(h) == "v1.0.0" and slot.get_json(h, "/applied") == {"release": "1.0.0"}
    env = slot.ssh(h, f"sudo cat {slot.api_root}/shared/config/env")
    assert "GREETING=hello" in env.replace("'", "") and "DATABASE_URL=" in env
    assert re.search(rf"{h}\s.*1\.0\.0\s.*\*", slot.fab("-H", h, "list").stdout)
