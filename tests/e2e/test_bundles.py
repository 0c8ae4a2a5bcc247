"""What goes into a release and whether it installs: targets a host does not match are refused
before any upload, the app's Python requirement is checked against each host, interpreter paths
per host, and nothing is left out of a bundle without `plan` saying so."""

import re
from pathlib import Path


def test_a_host_the_bundle_does_not_cover_is_refused_before_anything_changes(slot):
    a, b = slot.hosts
    before = [slot.snapshot(h) for h in (a, b)]
    cases = [
        ([{"glibc": "2.40"}], "glibc 2.36"),
        ([{"arch": "aarch64"}], "x86_64"),
        ([{"python": "3.12"}], "Python 3.11"),
    ]
    for i, (target, says) in enumerate(cases):
        slot.configure(targets=target)
        slot.dist = slot.tmp / f"dist-{i}"
        r = slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0", ok=False)
        assert r.stderr.startswith("error: ") and "the bundle does not cover this host" in r.stderr, r.stderr
        assert says in r.stderr and "(nothing was changed)" in r.stderr, r.stderr
    assert [slot.snapshot(h) for h in (a, b)] == before
    # Two targets: one bundle covers both kinds of host (here both are Debian 12).
    slot.configure(targets=[{"glibc": "2.40"}, {"glibc": "2.31"}])
    slot.dist = slot.tmp / "dist-two"
    slot.fab("-H", a, "deploy", "--version", "1.0.0")
    assert slot.http(a, "/health")[0] == 200
    meta = (slot.dist / "sgp/releases/v1.0.0/metadata.json").read_text()
    assert "cp311-x86_64-glibc2.31" in meta and "cp311-x86_64-glibc2.40" in meta


def test_the_apps_python_requirement_and_the_hosts_interpreter(slot):
    a, b = slot.hosts
    needs_312 = slot.variant(
        "py312",
        files={
            "pyproject.toml": (
                Path(slot.app_config["source"], "pyproject.toml")
                .read_text()
                .replace('requires-python = ">=3.11"', 'requires-python = ">=3.12"')
            )
        },
    )
    r = slot.fab("bundle", "--version", "1.0.0", "--source", str(needs_312), ok=False)
    assert "the app requires Python >=3.12, but target cp311-x86_64-glibc2.36 has Python 3.11" in r.stderr, r.stderr
    # A per-host interpreter path: one that does not exist is refused before anything changes.
    slot.configure_host(b, python="/usr/bin/python3.12")
    before = slot.snapshot(b)
    r = slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0", ok=False)
    assert f"{b}: no Python at /usr/bin/python3.12" in r.stderr, r.stderr
    assert slot.snapshot(b) == before
    slot.configure_host(b, python="/usr/bin/python3.11")
    slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0")
    cfg = slot.ssh(b, f"cat {slot.api_root}/releases/v1.0.0/.venv/pyvenv.cfg")
    assert "home = /usr/bin" in cfg and "version_info = 3.11" in cfg, cfg
    assert "python3.11" in slot.ssh(b, f"readlink {slot.api_root}/releases/v1.0.0/.venv/bin/python")


def test_plan_lists_what_the_bundle_leaves_out(slot):
    h = slot.hosts[0]
    src = slot.variant(
        "files",
        files={
            ".env": "SECRET=local-only\n",
            ".gitignore": "media/\nnotes/\n*.sqlite3\n",
            "media/fixtures/logo.png": b"\x89PNG fixture",
            "notes/todo.txt": "private notes",
            "local.sqlite3": b"SQLite",
        },
    )
    slot.configure(include=["media/fixtures/"], exclude=["docs-draft/"], source=str(src))
    (src / "docs-draft").mkdir()
    (src / "docs-draft" / "wip.md").write_text("draft")
    out = slot.fab("-H", h, "plan", "--version", "1.0.0").stdout
    left_out = re.search(r"left out of the bundle \((\d+)\): (.*)", out)
    assert left_out, out
    for item in (
        ".env (never bundled)",
        "notes/todo.txt (.gitignore)",
        "local.sqlite3 (.gitignore)",
        "docs-draft/wip.md (exclude pattern)",
    ):
        assert item in left_out.group(2), left_out.group(2)
    files = (slot.dist / "sgp/releases/v1.0.0/manifest.json").read_text()
    assert "media/fixtures/logo.png" in files, "an include pattern keeps what .gitignore would drop"
    assert ".env" not in files.replace(".gitignore", "")


def test_a_dependency_that_cannot_be_found_is_reported_with_its_cause(slot_factory):
    slot = slot_factory("tasks")
    src = slot.variant("missing-dep", append={"requirements.txt": "no-such-package-sgpfab-test==1.0"})
    r = slot.fab("bundle", "--version", "1.0.0", "--source", str(src), ok=False)
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no-such-package-sgpfab-test" in r.stderr, r.stderr
