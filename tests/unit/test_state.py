import pytest

from sgpfab.errors import InputError
from sgpfab.state import HostState
from sgpfab.versions import Version


def state(current, *releases, partials=()):
    rels = []
    for r in releases:
        name, _, flags = r.partition(":")
        rels.append({"name": name, "complete": "incomplete" not in flags, "bad": "bad" in flags})
    return HostState.from_json({"current": current, "releases": rels, "partials": list(partials)})


def test_releases_are_ordered_by_semver_not_by_name():
    st = state("v1.0.10", "v1.0.9", "v1.0.10", "v1.0.2")
    assert [r.name for r in st.releases] == ["v1.0.2", "v1.0.9", "v1.0.10"]
    assert st.previous_good().name == "v1.0.9"


def test_default_rollback_skips_bad_and_incomplete_releases():
    st = state("v1.0.6", "v1.0.4", "v1.0.5:bad", "v1.0.5-rc.1:incomplete", "v1.0.6")
    assert st.rollback_target(None).name == "v1.0.4"


def test_explicit_rollback_target_must_exist_and_be_complete():
    st = state("v1.0.6", "v1.0.4", "v1.0.5:incomplete", "v1.0.6")
    assert st.rollback_target(Version.parse("1.0.4")).name == "v1.0.4"
    with pytest.raises(InputError, match="does not exist here"):
        st.rollback_target(Version.parse("9.9.9"))
    with pytest.raises(InputError, match="incomplete"):
        st.rollback_target(Version.parse("1.0.5"))


def test_rollback_needs_an_active_release_and_an_earlier_one():
    with pytest.raises(InputError, match="nothing is deployed"):
        state(None, "v1.0.4").rollback_target(None)
    with pytest.raises(InputError, match="no earlier good release"):
        state("v1.0.4", "v1.0.4", "v1.0.5").rollback_target(None)


def test_cleanup_keeps_newest_plus_active_and_its_rollback_target():
    st = state("v1.0.2", "v1.0.1", "v1.0.2", "v1.0.3", "v1.0.4", "v1.0.5", partials=[".partial-v1.0.6"])
    assert st.cleanup_plan(1) == ["v1.0.3", "v1.0.4", ".partial-v1.0.6"]
    assert st.cleanup_plan(5) == [".partial-v1.0.6"]
    with pytest.raises(InputError):
        st.cleanup_plan(0)


def test_cleanup_counts_only_good_releases_towards_keep():
    st = state("v1.0.4", "v1.0.4", "v1.0.5", "v1.0.6:bad")
    assert st.cleanup_plan(1) == ["v1.0.6"]
    assert st.cleanup_plan(2) == ["v1.0.6"]
