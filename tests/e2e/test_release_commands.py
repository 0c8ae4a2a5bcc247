"""Release commands with `when_changed` on real hosts: they run on a first deploy and when a
matching file changed, and are skipped (and say so) when only other files changed."""

import json

WHEN = ["migrations/", "alembic.ini"]


def runs(slot, h) -> list[str]:
    return slot.ssh(h, f"sudo cat {slot.api_root}/shared/db/hook-runs 2>/dev/null || true").split()


def test_a_release_command_runs_only_when_its_files_changed(slot):
    h = slot.hosts[0]
    # the migration itself, then a marker that proves the command ran, in the service user's shared/db
    command = f'alembic upgrade head && echo "$(basename "$(pwd)")" >> {slot.api_root}/shared/db/hook-runs'
    slot.configure(release=[{"command": command, "when_changed": WHEN}])

    first = slot.fab("-H", h, "deploy", "--version", "1.0.0")
    assert runs(slot, h) == ["v1.0.0"]
    assert "release command 1/1: alembic upgrade head" in first.stdout + first.stderr
    assert slot.post_json(h, "/items", {"name": "kept"})[0] == 201  # the migration made the table

    # an unrelated one-line change: the plan says skip, the deploy skips and says why
    unrelated = slot.variant("unrelated", append={"sgp_api/main.py": "# 1.0.1"})
    plan = json.loads(
        slot.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(unrelated), "--dry-run", "--json").stdout
    )
    decision = plan["rows"][0]["release_decisions"][0]
    assert decision["run"] is False and "since 1.0.0" in decision["reason"], decision
    second = slot.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(unrelated), "--json")
    note = "release command 1/1 skipped: no file matching migrations/, alembic.ini changed since 1.0.0"
    assert note in second.stdout + second.stderr, second.stderr
    assert '"hook 1 skipped"' in second.stdout and '"hook 1"' not in second.stdout, second.stdout
    assert runs(slot, h) == ["v1.0.0"] and slot.current(h) == "v1.0.1"
    assert [i["name"] for i in slot.get_json(h, "/items")] == ["kept"]

    # a changed migration file: it runs again
    migration = slot.variant("migration", append={"sgp_api/main.py": "# 1.0.2", "migrations/env.py": "# 1.0.2"})
    plan = json.loads(
        slot.fab("-H", h, "deploy", "--version", "1.0.2", "--source", str(migration), "--dry-run", "--json").stdout
    )
    assert plan["rows"][0]["release_decisions"][0]["run"] is True
    third = slot.fab("-H", h, "deploy", "--version", "1.0.2", "--source", str(migration))
    assert "release command 1/1: alembic upgrade head" in third.stdout + third.stderr
    assert "migrations/env.py changed" in third.stdout + third.stderr
    assert runs(slot, h) == ["v1.0.0", "v1.0.2"] and slot.current(h) == "v1.0.2"

    # the bundle of the active release is gone from the controller: in doubt, it runs
    (slot.dist / "sgp" / "releases" / "v1.0.2" / "manifest.json").unlink()
    fourth = slot.fab(
        "-H",
        h,
        "deploy",
        "--version",
        "1.0.3",
        "--source",
        str(slot.variant("again", append={"sgp_api/main.py": "# 1.0.3"})),
    )
    assert "is not in" in fourth.stdout + fourth.stderr
    assert runs(slot, h) == ["v1.0.0", "v1.0.2", "v1.0.3"]
