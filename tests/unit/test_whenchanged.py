"""Release commands with `when_changed`: validation of the inventory form, how it is recorded in
a bundle, and the decision to run or skip against the active release's bundle (pure)."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from support.builders import CONTROL

from sgpfab.appspec import AppSpec
from sgpfab.bundle import Bundle, bundle_dir
from sgpfab.bundle.model import FORMAT, Manifest, Metadata, content_digest
from sgpfab.deploy import Plan, hook_decisions
from sgpfab.state import Release, ReleaseMeta
from sgpfab.versions import Version
from sgpfab.whenchanged import changed_paths, decide

WEB = {"web": {"app": "shop.main:app"}}
ALEMBIC = {"command": "alembic upgrade head", "when_changed": ["migrations/", "alembic.ini"]}
FILES = {"shop/main.py": "a1", "migrations/env.py": "b1", "migrations/versions/0001.py": "c1", "alembic.ini": "d1"}


def spec(release) -> AppSpec:
    return AppSpec.model_validate({"processes": WEB, "release": release})


# -- validation and the recorded form --------------------------------------------------------


def test_items_become_parallel_tuples_and_plain_commands_always_run():
    s = spec(["echo first", ALEMBIC])
    assert s.release == ("echo first", "alembic upgrade head")  # what hosts read is unchanged
    assert s.release_when_changed == ((), ("migrations/", "alembic.ini"))
    assert s.when_changed(1) == () and s.when_changed(2) == ("migrations/", "alembic.ini")


def test_the_recorded_spec_round_trips_and_old_specs_keep_their_form():
    s = spec(["echo first", ALEMBIC])
    dumped = s.model_dump(mode="json", by_alias=True)
    assert dumped["release"] == ["echo first", "alembic upgrade head"]
    assert AppSpec.model_validate(json.loads(json.dumps(dumped))) == s
    plain = spec(["alembic upgrade head"]).model_dump(mode="json", by_alias=True)
    assert "release_when_changed" not in plain  # bundles without the feature keep their digest


@pytest.mark.parametrize(
    "item, why",
    [
        ({"command": "x", "when_changed": []}, "give at least one file pattern"),
        ({"command": "x"}, "when_changed"),
        ({"command": "", "when_changed": ["a/"]}, "must not be empty"),
        ({"command": "x\ny", "when_changed": ["a/"]}, "single line"),
        *[({"command": "x", "when_changed": [f"a{c}"]}, "single line") for c in CONTROL if c.strip() == c],
        ({"command": "x", "when_changed": ["\\"]}, "not a valid gitignore-style pattern"),
        ({"command": "x", "when_changed": ["a/"], "always": True}, "Extra inputs"),
        (5, "valid string"),
    ],
)
def test_bad_release_items_are_refused_in_one_line(item, why):
    with pytest.raises(ValidationError) as e:
        spec([item])
    assert why in str(e.value)
    assert "release item 1" in str(e.value) or item == 5


def test_parallel_lists_must_match():
    with pytest.raises(ValidationError, match="one pattern list per release command"):
        AppSpec.model_validate({"processes": WEB, "release": ["a", "b"], "release_when_changed": [["x/"]]})
    with pytest.raises(ValidationError, match="not both"):
        AppSpec.model_validate({"processes": WEB, "release": [ALEMBIC], "release_when_changed": [["x/"]]})


# -- the comparison ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "new, expected",
    [
        (FILES, []),
        ({**FILES, "shop/main.py": "a2"}, []),  # an unrelated change
        ({**FILES, "migrations/versions/0001.py": "c2"}, ["migrations/versions/0001.py"]),
        ({**FILES, "migrations/versions/0002.py": "e1"}, ["migrations/versions/0002.py"]),  # added
        ({k: v for k, v in FILES.items() if k != "alembic.ini"}, ["alembic.ini"]),  # removed
        ({**FILES, "alembic.ini": "d2", "migrations/env.py": "b2"}, ["alembic.ini", "migrations/env.py"]),
    ],
)
def test_changed_paths(new, expected):
    assert changed_paths(FILES, new, ["migrations/", "alembic.ini"]) == expected


def test_patterns_are_gitignore_style():
    old = {"posts/migrations/0001.py": "a", "blog/settings.py": "b"}
    new = {"posts/migrations/0001.py": "x", "blog/settings.py": "y"}
    assert changed_paths(old, new, ["**/migrations/"]) == ["posts/migrations/0001.py"]
    assert changed_paths(old, new, ["/migrations/"]) == []  # anchored at the release's root


# -- the decision against the active release's bundle --------------------------------------------


def make(dist: Path, version: str, files: dict, release: list, app: str = "shop", requirements: str = "r1") -> Bundle:
    """Write a bundle's manifest and metadata (enough for the decision) and return it."""
    path = bundle_dir(dist, app, Version.parse(version))
    path.mkdir(parents=True)
    md = {
        "format": FORMAT,
        "app": app,
        "version": version,
        "content_digest": "",
        "spec": spec(release).model_dump(mode="json", by_alias=True),
        "install": {},
        "targets": [],
        "requirements": {},
        "schema": {"source": "none"},
        "build": {"built_at": "", "builder": ""},
    }
    m = {
        "format": FORMAT,
        "app": app,
        "version": version,
        "content_digest": "",
        "archive": {"name": "a.tar.gz", "sha256": "0", "size": 0},
        "files": files,
        "wheels": {},
        "requirements": {"x.txt": requirements},
        "extras": {},
    }
    digest = content_digest(m, Metadata.model_validate(md))
    m["content_digest"] = md["content_digest"] = digest
    (path / "manifest.json").write_text(json.dumps(m))
    (path / "metadata.json").write_text(json.dumps(md))
    return Bundle(path, Manifest.model_validate(m), Metadata.model_validate(md))


def active(b: Bundle, **meta) -> Release:
    return Release(
        name=b.version.release_name, complete=True, bad=False, meta=ReleaseMeta(bundle_digest=b.digest, **meta)
    )


def one(bundle, act, settings_changed=False):
    [d] = decide(bundle, act, settings_changed)
    return d


def test_skipped_only_when_every_matching_file_is_identical(tmp_path):
    old = make(tmp_path, "1.0.0", FILES, [ALEMBIC])
    same = make(tmp_path, "1.0.1", {**FILES, "shop/main.py": "a2"}, [ALEMBIC])
    d = one(same, active(old))
    assert not d.run
    assert d.describe(1) == (
        "release command 1/1 skipped: no file matching migrations/, alembic.ini changed since 1.0.0"
    )
    new_migration = make(tmp_path, "1.0.2", {**FILES, "migrations/versions/0002.py": "e"}, [ALEMBIC])
    d = one(new_migration, active(old))
    assert d.run and d.reason == "migrations/versions/0002.py changed"
    assert d.describe(1) == "release command 1/1: alembic upgrade head (migrations/versions/0002.py changed)"


def test_plain_commands_always_run(tmp_path):
    old = make(tmp_path, "1.0.0", FILES, ["collectstatic", ALEMBIC])
    new = make(tmp_path, "1.0.1", FILES, ["collectstatic", ALEMBIC])
    assert [(d.run, d.reason) for d in decide(new, active(old), False)][0] == (True, "")
    assert [d.run for d in decide(new, active(old), False)] == [True, False]


@pytest.mark.parametrize(
    "case, reason",
    [
        ("nothing deployed", "no active release"),
        ("settings changed", "the settings changed"),
        ("settings unknown", "the settings may have changed"),
        ("bundle gone", "is not in"),
        ("bundle differs", "is not in"),
        ("other app", "is not in"),
        ("dependencies changed", "the dependencies changed since 1.0.0"),
        ("command changed", "the command is new since 1.0.0"),
        ("patterns changed", "the command is new since 1.0.0"),
        ("same version", "re-activating the same version"),
    ],
)
def test_in_doubt_it_runs(tmp_path, case, reason):
    release = [ALEMBIC]
    if case == "command changed":
        release = [{**ALEMBIC, "command": "alembic upgrade heads"}]
    if case == "patterns changed":
        release = [{**ALEMBIC, "when_changed": ["migrations/"]}]
    old = make(tmp_path, "1.0.0", FILES, [ALEMBIC], app="other" if case == "other app" else "shop")
    new = make(tmp_path, "1.0.1", FILES, release, requirements="r2" if case == "dependencies changed" else "r1")
    act = active(old)
    settings_changed: bool | None = {"settings changed": True, "settings unknown": None}.get(case, False)
    if case == "nothing deployed":
        act = None
    if case == "bundle gone":
        (old.path / "manifest.json").unlink()
    if case == "bundle differs":
        act = act.model_copy(update={"meta": ReleaseMeta(bundle_digest="f" * 64)})
    if case == "other app":
        act = act.model_copy(update={"name": "v1.0.0"})
        (tmp_path / "shop" / "releases" / "v1.0.0").symlink_to(old.path)
    if case == "same version":
        act = active(new)
    d = one(new, act, settings_changed)
    assert d.run and reason in d.reason, d


def test_a_tampered_manifest_is_not_trusted(tmp_path):
    old = make(tmp_path, "1.0.0", FILES, [ALEMBIC])
    new = make(tmp_path, "1.0.1", {**FILES, "migrations/env.py": "b2"}, [ALEMBIC])
    m = json.loads((old.path / "manifest.json").read_text())
    m["files"]["migrations/env.py"] = "b2"  # claims the new file; the digest no longer matches
    (old.path / "manifest.json").write_text(json.dumps(m))
    assert one(new, active(old)).run


def test_the_deploy_compares_the_settings_fingerprints(tmp_path):
    old = make(tmp_path, "1.0.0", FILES, [ALEMBIC])
    plan = Plan(make(tmp_path, "1.0.1", FILES, [ALEMBIC]), uv=lambda os: Path("/nonexistent"))
    act = active(old, settings_fingerprint="fp1")
    assert [d.run for d in hook_decisions(plan, act, "fp1")] == [False]
    assert [d.run for d in hook_decisions(plan, act, "fp2")] == [True]
    assert [d.run for d in hook_decisions(plan, act, "")] == [True]
    assert [d.run for d in hook_decisions(plan, active(old), "fp1")] == [True]  # none recorded
