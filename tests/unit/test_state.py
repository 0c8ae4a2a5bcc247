"""What a host reports (hostctl state) and the decisions made from it: rollback target and
cleanup plan."""

import pytest

from sgpfab.errors import InputError
from sgpfab.state import GateResult, HostFacts, HostState, Probe, UnitState
from sgpfab.versions import Version


def rel(name, *, complete=True, bad=False, at="", reason=None):
    return {
        "name": name,
        "complete": complete,
        "bad": bad,
        "bad_reason": reason,
        "meta": {"version": name[1:], "finalized_at": at} if complete else {},
    }


def host(*releases, current=None, **kw) -> HostState:
    return HostState.parse({"current": current, "releases": list(releases), **kw})


def names(rs):
    return [r.name for r in rs]


def test_parse_sorts_by_semver_and_moves_non_versions_to_junk():
    st = host(
        rel("v1.10.0"),
        rel("v1.2.0"),
        rel("v1.2.0-rc.1"),
        rel("vlatest"),
        rel("v1٠.0.0"),
        rel("v2.0.0"),
        current="v1.10.0",
        partials=[".partial-v3.0.0"],
        junk=["notes.txt"],
        incoming=["v3.0.0"],
        journal={"op": "deploy", "from": "v1.2.0", "to": "v1.10.0", "since": "t"},
        db_exists=True,
        root="/srv/x",
        unknown_key=1,
    )
    assert names(st.releases) == ["v1.2.0-rc.1", "v1.2.0", "v1.10.0", "v2.0.0"]
    assert st.active.name == "v1.10.0" and st.active.version == Version.parse("1.10.0")
    assert st.journal.from_ == "v1.2.0" and st.journal.to == "v1.10.0" and st.journal.op == "deploy"
    assert st.partials == [".partial-v3.0.0"] and st.db_exists
    assert st.junk == ["notes.txt", "vlatest", "v1٠.0.0"], "not versions: cleanup removes them"
    assert st.get(Version.parse("2.0.0")).name == "v2.0.0" and st.get("v9.0.0") is None


def test_empty_host():
    st = HostState.parse({})
    assert st.active is None and st.releases == [] and st.previous_good() is None and st.journal is None


def test_complete_orders_build_metadata_twins_by_when_they_were_built():
    st = host(
        rel("v1.0.0+b", at="2026-01-01T10:00:00+00:00"),
        rel("v1.0.0+a", at="2026-01-02T10:00:00+00:00"),
        rel("v0.9.0", at="2026-01-03T00:00:00+00:00"),
        rel("v1.1.0", complete=False),
        current="v1.0.0+a",
    )
    assert names(st.complete) == ["v0.9.0", "v1.0.0+b", "v1.0.0+a"], "b was built first, so it is older"
    assert st.previous_good().name == "v1.0.0+b"


@pytest.mark.parametrize(
    "releases, current, expected",
    [
        ([rel("v1.0.0"), rel("v1.1.0"), rel("v1.2.0")], "v1.2.0", "v1.1.0"),
        ([rel("v1.0.0"), rel("v1.1.0", bad=True), rel("v1.2.0")], "v1.2.0", "v1.0.0"),  # skips bad ones
        ([rel("v1.0.0"), rel("v1.1.0", complete=False), rel("v1.2.0")], "v1.2.0", "v1.0.0"),  # and incomplete ones
        ([rel("v1.0.0"), rel("v1.2.0"), rel("v1.3.0")], "v1.2.0", "v1.0.0"),  # never a newer one
        ([rel("v1.2.0")], "v1.2.0", None),
        ([rel("v1.0.0", bad=True), rel("v1.2.0")], "v1.2.0", None),
        ([rel("v1.0.0"), rel("v1.2.0")], None, None),
        ([rel("v1.0.0"), rel("v1.2.0", complete=False)], "v1.2.0", None),  # active not complete
        ([rel("v1.0.0"), rel("v1.0.1-rc.1"), rel("v1.0.1")], "v1.0.1", "v1.0.1-rc.1"),
        ([rel("v1.9.0"), rel("v1.10.0")], "v1.10.0", "v1.9.0"),  # numeric, not text
    ],
)
def test_previous_good(releases, current, expected):
    prev = host(*releases, current=current).previous_good()
    assert (prev.name if prev else None) == expected


def test_rollback_target():
    st = host(rel("v1.0.0"), rel("v1.1.0", bad=True), rel("v1.2.0", complete=False), rel("v1.3.0"), current="v1.3.0")
    assert st.rollback_target(None).name == "v1.0.0"
    assert st.rollback_target(Version.parse("1.1.0")).name == "v1.1.0", "named explicitly: even a bad one"
    with pytest.raises(InputError) as e:
        st.rollback_target(Version.parse("1.2.0"))
    assert "incomplete" in str(e.value)
    with pytest.raises(InputError) as e:
        st.rollback_target(Version.parse("9.9.9"))
    assert str(e.value) == "release 9.9.9 does not exist here (available: 1.0.0, 1.1.0, 1.3.0)"


def test_rollback_target_errors_without_an_active_or_earlier_release():
    with pytest.raises(InputError) as e:
        host(rel("v1.0.0")).rollback_target(None)
    assert "nothing is deployed" in str(e.value)
    with pytest.raises(InputError) as e:
        host(rel("v1.0.0", bad=True), rel("v2.0.0"), current="v2.0.0").rollback_target(None)
    assert str(e.value) == "no earlier good release to roll back to (active: 2.0.0)"
    with pytest.raises(InputError) as e:
        host(current="v1.0.0").rollback_target(None)
    assert "nothing is deployed" in str(e.value), "current names a release that is not there"


def test_cleanup_keeps_the_newest_good_and_protects_active_and_rollback_target():
    st = host(*(rel(f"v1.{i}.0") for i in range(8)), current="v1.3.0")
    assert st.cleanup_plan(keep=2) == ["v1.0.0", "v1.1.0", "v1.4.0", "v1.5.0"]
    assert st.cleanup_plan(keep=1) == ["v1.0.0", "v1.1.0", "v1.4.0", "v1.5.0", "v1.6.0"]
    assert st.cleanup_plan(keep=100) == []


def test_cleanup_removes_bad_incomplete_partials_junk_and_leftover_uploads():
    st = host(
        rel("v1.0.0"),
        rel("v1.1.0", bad=True),
        rel("v1.2.0", complete=False),
        rel("v1.3.0"),
        current="v1.3.0",
        partials=[".partial-v1.4.0"],
        junk=["notes.txt", "vlink"],
        incoming=["v1.4.0", "v1.3.0"],
    )
    assert st.cleanup_plan(keep=5) == ["v1.1.0", "v1.2.0", ".partial-v1.4.0", "notes.txt", "vlink", "v1.4.0"]


def test_cleanup_protects_the_journal_releases():
    st = host(
        rel("v1.0.0"),
        rel("v1.1.0"),
        rel("v1.2.0"),
        rel("v1.3.0", complete=False),
        current="v1.2.0",
        journal={"op": "deploy", "from": "v1.0.0", "to": "v1.3.0"},
        incoming=["v1.3.0"],
    )
    plan = st.cleanup_plan(keep=1)
    assert "v1.0.0" not in plan and "v1.3.0" not in plan
    assert plan == []


def test_cleanup_protects_the_rollback_target_even_when_bad_ones_are_newer():
    st = host(rel("v1.0.0"), rel("v1.1.0", bad=True), rel("v1.2.0"), current="v1.2.0")
    assert st.cleanup_plan(keep=1) == ["v1.1.0"]


@pytest.mark.parametrize("keep", [0, -1])
def test_cleanup_keep_must_be_positive(keep):
    with pytest.raises(InputError):
        host(rel("v1.0.0"), current="v1.0.0").cleanup_plan(keep=keep)


def test_cleanup_removes_release_directories_that_are_not_versions():
    st = host(rel("v1.0.0"), rel("vlatest"), current="v1.0.0")
    assert "vlatest" in st.cleanup_plan(keep=5)


def test_replies_tolerate_extra_keys_and_describe_failures():
    f = HostFacts.model_validate({"python": "3.11.2", "arch": "x86_64", "glibc": "2.36", "new": 1})
    assert f.os == "linux" and f.tools == {}
    p = Probe(ok=False, code=503, release="v1.0.0", reason="HTTP 503")
    assert p.describe() == "HTTP 503 from v1.0.0 (HTTP 503)"
    assert Probe(ok=False, error="connection refused").describe() == "connection refused"
    g = GateResult(
        ok=False,
        why="crashing",
        units={"a": UnitState(restarts=1, active="activating"), "b": UnitState(restarts=4, active="failed")},
        crashed=["a", "b"],
    )
    assert g.describe() == "b keeps crashing (4 restarts, failed)"
    assert (
        GateResult(ok=False, why="unhealthy", last=p).describe()
        == "the health check failed: HTTP 503 from v1.0.0 (HTTP 503)"
    )
    assert (
        GateResult(ok=False, why="timeout", last=Probe(error="refused")).describe()
        == "no healthy answer (timeout): last probe: refused"
    )
    assert GateResult(ok=True).describe() == "healthy"
