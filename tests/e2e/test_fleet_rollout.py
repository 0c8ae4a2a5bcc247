"""Fleet rollouts on 4 real hosts: waves, failure budget, undo, promotion, plan, status, fleet rollback."""

import re

FAILS_ON_PROD2 = """
import socket as _socket
if _socket.gethostname() == "prod2":
    raise RuntimeError("this release cannot start on prod2")
"""


def _versions(slot):
    return {h: (slot.current(h) or "")[1:] or None for h in slot.all_hosts}


def test_wave_rollout_stops_at_the_failure_limit_and_leaves_every_host_healthy(slot):
    hosts = ",".join(slot.all_hosts)  # staging1, prod1, prod2, prod3
    slot.fab("-H", hosts, "deploy", "--version", "1.0.0", "--parallel", "4")
    assert set(_versions(slot).values()) == {"1.0.0"}
    bad = slot.variant("fails_on_prod2", append={"sgp_api/main.py": FAILS_ON_PROD2})
    slot.fab("bundle", "--version", "1.0.1", "--source", str(bad))

    r = slot.fab(
        "-H",
        hosts,
        "deploy",
        "--bundle",
        "1.0.1",
        "--waves",
        "1,50%,100%",
        "--parallel",
        "2",
        "--max-fail",
        "0",
        ok=False,
    )
    assert r.returncode == 2, "partial: scripts can tell"
    assert "-- wave 1/3: staging1" in r.stdout and "-- wave 3/3: prod2, prod3" in r.stdout
    assert "stopped after wave 3" in r.stdout
    assert _versions(slot) == dict.fromkeys(slot.all_hosts, "1.0.0"), "every host on a known version"
    for h in slot.all_hosts:
        assert slot.http(h, "/health")[0] == 200
    summary = r.stdout[r.stdout.index("deploy sgp 1.0.1") :]
    for h in ("staging1", "prod1", "prod3"):
        assert re.search(rf"{h}\W+undone\W+1\.0\.0\W+1\.0\.0\W.*undone: back on 1\.0\.0", summary), summary
    assert re.search(r"prod2\W+FAILED\W+1\.0\.0\W+1\.0\.0", summary), summary

    # Within a budget of one failure the rollout goes on, and only prod2 stays behind.
    r = slot.fab(
        "-H", hosts, "deploy", "--bundle", "1.0.1", "--waves", "1,100%", "--parallel", "3", "--max-fail", "1", ok=False
    )
    assert r.returncode == 2 and "stopped" not in r.stdout
    assert _versions(slot) == {"staging1": "1.0.1", "prod1": "1.0.1", "prod2": "1.0.0", "prod3": "1.0.1"}
    status = slot.fab("-H", hosts, "status", ok=False)
    assert status.returncode == 2 and "version drift: 1.0.1" in status.stdout and "1.0.0" in status.stdout


def test_fleet_rollback_in_waves(slot):
    prod = "prod"  # a group: prod1, prod2, prod3
    slot.fab("-H", prod, "deploy", "--version", "3.0.0", "--parallel", "3")
    slot.fab(
        "-H",
        prod,
        "deploy",
        "--version",
        "3.1.0",
        "--parallel",
        "3",
        "--source",
        str(slot.variant("v31", append={"sgp_api/main.py": "#"})),
    )
    r = slot.fab("-H", prod, "rollback", "--waves", "1,100%", "--parallel", "2", "--soak", "1")
    assert "-- wave 2/2: prod2, prod3" in r.stdout and "-- soaking 1s before the next wave" in r.stdout
    assert {h: _versions(slot)[h] for h in ("prod1", "prod2", "prod3")} == dict.fromkeys(
        ("prod1", "prod2", "prod3"), "3.0.0"
    )


def test_promotion_deploys_exactly_the_staging_build_and_refuses_a_mismatch(slot, tmp_path):
    slot.fab("-H", "staging", "deploy", "--version", "2.0.0")
    before = {h: slot.snapshot(h) for h in ("prod1", "prod2", "prod3")}
    r = slot.fab("promote", "--from", "staging", "--to", "prod", "--version", "2.0.1", ok=False)
    assert "promotion refused: staging1 runs 2.0.0, not 2.0.1" in r.stderr

    other = slot.variant("other_build", files={"NOTE.txt": "a different build of 2.0.0"})
    good_dist, slot.dist = slot.dist, tmp_path / "other-dist"
    slot.fab("bundle", "--version", "2.0.0", "--source", str(other))
    r = slot.fab("promote", "--from", "staging", "--to", "prod", "--version", "2.0.0", ok=False)
    assert r.returncode == 1 and "promotion refused: staging runs 2.0.0 with digest" in r.stderr
    assert {h: slot.snapshot(h) for h in ("prod1", "prod2", "prod3")} == before, "nothing changed on prod"

    slot.dist = good_dist
    r = slot.fab("promote", "--from", "staging", "--to", "prod", "--version", "2.0.0", "--parallel", "3")
    digest = re.search(r"promoting sgp 2\.0\.0 \((\w{12})\)", r.stdout).group(1)
    status = slot.fab("-H", "all", "status").stdout
    assert status.count(digest) == 4 and "drift" not in status


def test_plan_shows_what_would_happen_and_changes_nothing(slot):
    a, b = slot.hosts
    slot.fab("-H", a, "deploy", "--version", "1.0.0")
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
    before = [slot.snapshot(h) for h in (a, b)]
    r = slot.fab("-H", f"{a},{b}", "deploy", "--version", "1.1.0", "--source", str(tags), "--dry-run")
    assert "nothing changed" in r.stdout
    assert re.search(
        rf"{a}\W+\S+\W+1\.0\.0\W+1\.1\.0\W+upload, build, switch\W+up to [\d.]+ kB \(\d+/\d+ wheels\)\W+1 new: 0002",
        r.stdout,
    ), r.stdout
    assert re.search(
        rf"{b}\W+\S+\W+-\W+1\.1\.0\W+upload, build, switch\W+up to [\d.]+ MB \((\d+)/\1 wheels\)\W+2 new: 0001, 0002",
        r.stdout,
    ), r.stdout
    assert [slot.snapshot(h) for h in (a, b)] == before
    r = slot.fab("-H", a, "plan", "--version", "1.0.0")
    assert "nothing (already active)" in r.stdout
