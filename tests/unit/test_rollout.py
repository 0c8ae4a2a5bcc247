"""The rollout engine with in-memory stand-in hosts: waves, bounded parallelism, the failure
budget, undo on stop, health between waves, skipped hosts and exit codes."""

import threading
import time
from contextlib import nullcontext

import pytest
from support.builders import FakeSession, Gauge

from sgpfab import rollout
from sgpfab.errors import DeployError, InputError, RemoteError
from sgpfab.outcome import Outcome, Status
from sgpfab.rollout import (
    Policy,
    Rollout,
    make_policy,
    parse_max_fail,
    parse_waves,
    run,
)

# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, n, ends",
    [
        (None, 5, [5]),
        ("", 5, [5]),
        ("1,25%,100%", 8, [1, 2, 8]),
        ("1,25%,100%", 3, [1, 3]),
        ("2", 5, [2, 5]),
        ("1,1,50%", 4, [1, 2, 4]),
        ("10", 4, [4]),
        ("33%,66%", 3, [1, 2, 3]),
        ("0.1%", 5, [1, 5]),
        (" 1 , 2 ", 3, [1, 2, 3]),
        ("100%", 1, [1]),
        ("1,2,3", 3, [1, 2, 3]),
        ("50%,50%", 4, [2, 4]),
    ],
)
def test_waves_are_cumulative_and_end_with_every_host(spec, n, ends):
    assert parse_waves(spec, n) == ends


@pytest.mark.parametrize(
    "spec",
    [
        "0",
        "-1",
        "abc",
        "0%",
        "101%",
        "150%",
        "-5%",
        "50%,1",
        "3,2",
        "1,,2",
        ",",
        "nan%",
        "inf%",
        "1.5",
        "%",
        "1;2",
        "2 3",
    ],
)
def test_bad_waves_are_refused(spec):
    with pytest.raises(InputError) as e:
        parse_waves(spec, 4)
    assert "--waves" in str(e.value) and "\n" not in str(e.value)


def test_waves_need_hosts():
    with pytest.raises(InputError):
        parse_waves("1", 0)


@pytest.mark.parametrize(
    "spec, n, allowed",
    [
        (None, 10, 0),
        ("", 10, 0),
        ("0", 10, 0),
        ("2", 10, 2),
        (2, 10, 2),
        ("10%", 10, 1),
        ("25%", 3, 0),
        ("100%", 4, 4),
        ("0%", 4, 0),
        ("50%", 5, 2),
        (" 3 ", 5, 3),
        ("20", 5, 20),
    ],
)
def test_max_fail_counts_and_percentages(spec, n, allowed):
    assert parse_max_fail(spec, n) == allowed


@pytest.mark.parametrize("spec", ["-1", "101%", "-1%", "abc", "1.5", "nan%", "%", "two", True])
def test_bad_max_fail_is_refused(spec):
    with pytest.raises(InputError) as e:
        parse_max_fail(spec, 4)
    assert "--max-fail" in str(e.value)


@pytest.mark.parametrize(
    "kw, why",
    [
        ({"parallel": 0}, "--parallel must be at least 1"),
        ({"parallel": -2}, "--parallel must be at least 1"),
        ({"parallel": "x"}, "whole number"),
        ({"parallel": None}, "whole number"),
        ({"soak": -1}, "must not be negative"),
        ({"soak": "soon"}, "number of seconds"),
        ({"waves": "0"}, "--waves"),
        ({"max_fail": "-1"}, "--max-fail"),
    ],
)
def test_policy_rejects_nonsense(kw, why):
    with pytest.raises(InputError) as e:
        make_policy(4, **kw)
    assert why in str(e.value)


def test_policy_from_strings():
    p = make_policy(8, waves="1,50%", parallel="3", max_fail="25%", soak="1.5", undo=False)
    assert p == Policy(waves=[1, 4, 8], parallel=3, max_fail=2, soak=1.5, undo=False)
    assert make_policy(3) == Policy(waves=[3], parallel=1, max_fail=0, soak=0.0, undo=True)


def test_make_policy_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        make_policy(4, "1,2")  # type: ignore[call-arg]  # deliberately positional: must be refused


@pytest.mark.parametrize("soak", ["nan", "inf", float("inf")])
def test_policy_rejects_non_finite_soak(soak):
    with pytest.raises(InputError):
        make_policy(4, soak=soak)


def test_policy_rejects_fractional_parallel():
    with pytest.raises(InputError):
        make_policy(4, parallel=2.7)


# -- the engine ----------------------------------------------------------------------------------


class Recorder:
    """Thread-safe log of what happened, in order."""

    def __init__(self):
        self.lock, self.log = threading.Lock(), []

    def add(self, *item):
        with self.lock:
            self.log.append(item)


def deployer(*, fail=(), crash=(), noop=(), delay=0.0, gauge=None, rec=None, to="2.0.0"):
    def fn(s):
        if rec:
            rec.add("start", s.name)
        with gauge.inside() if gauge else nullcontext():
            time.sleep(delay)
        s.events.append("deploy")
        if rec:
            rec.add("end", s.name)
        if s.name in crash:
            raise RuntimeError("bug in one host's code")
        if s.name in fail:
            raise DeployError(f"{s.name}: unhealthy; rolled back", before=s.current_version, after=s.current_version)
        before = s.current_version
        if s.name in noop:
            return Outcome(s.name, "deploy", Status.NOOP, before, before, "already active")
        s.current_version = to
        return Outcome(s.name, "deploy", Status.OK, before, to, "deployed")

    return fn


def undoer(*, fail=(), raise_=(), crash=()):
    def undo(s, o):
        s.events.append("undo")
        if s.name in raise_:
            raise RemoteError(f"{s.name}: connection lost")
        if s.name in crash:
            raise EOFError("socket closed")
        if s.name in fail:
            return Outcome(s.name, "undo", Status.FAILED, o.after, o.after, "could not switch back")
        s.current_version = o.before
        return Outcome(s.name, "undo", Status.OK, o.after, o.before, "back")

    return undo


def fleet(n=4, *, version="1.0.0"):
    return [FakeSession(f"h{i}", version) for i in range(1, n + 1)]


def statuses(result):
    return {o.host: o.status for o in result.outcomes}


def test_every_host_done_in_one_wave():
    ss = fleet(3)
    said = []
    r = run(ss, "deploy", deployer(), Policy(waves=[3]), say=said.append)
    assert [o.host for o in r.outcomes] == ["h1", "h2", "h3"]
    assert all(o.status == Status.OK and o.before == "1.0.0" and o.after == "2.0.0" for o in r.outcomes)
    assert r.exit_code == 0 and r.stopped == "" and said == []


def test_waves_run_in_order_and_are_announced():
    ss, rec, said = fleet(4), Recorder(), []
    r = run(ss, "deploy", deployer(rec=rec, delay=0.01), Policy(waves=[1, 2, 4], parallel=4), say=said.append)
    assert r.exit_code == 0
    assert said == ["-- wave 1/3: h1", "-- wave 2/3: h2", "-- wave 3/3: h3, h4"]
    order = [(what, h) for what, h in rec.log]
    assert (
        order.index(("end", "h1"))
        < order.index(("start", "h2"))
        < order.index(("end", "h2"))
        < min(order.index(("start", "h3")), order.index(("start", "h4")))
    )


def test_outcomes_follow_the_session_order_not_completion_order():
    ss = fleet(4)

    def fn(s):
        time.sleep({"h1": 0.06, "h2": 0.0, "h3": 0.03, "h4": 0.01}[s.name])
        return Outcome(s.name, "deploy", Status.OK, "1", "2")

    r = run(ss, "deploy", fn, Policy(waves=[4], parallel=4))
    assert [o.host for o in r.outcomes] == ["h1", "h2", "h3", "h4"]


@pytest.mark.parametrize("parallel", [1, 2, 3, 5])
def test_parallelism_is_bounded(parallel):
    gauge = Gauge()
    ss = fleet(10)
    run(ss, "deploy", deployer(delay=0.08, gauge=gauge), Policy(waves=[10], parallel=parallel))
    assert gauge.peak == parallel, "never more than --parallel at once, and that many when there is work"


def test_parallelism_is_bounded_for_undo_too():
    gauge = Gauge()
    ss = fleet(6)
    inner = undoer()

    def undo(s, o):
        with gauge.inside():
            time.sleep(0.02)
            return inner(s, o)

    r = run(ss, "deploy", deployer(fail=("h6",)), Policy(waves=[6], parallel=2), undo=undo)
    assert r.stopped and gauge.peak == 2


def test_a_failure_over_budget_stops_the_rollout_skips_the_rest_and_undoes():
    ss, said = fleet(4), []
    r = run(ss, "deploy", deployer(fail=("h2",)), Policy(waves=[2, 4], max_fail=0), undo=undoer(), say=said.append)
    assert statuses(r) == {"h1": Status.UNDONE, "h2": Status.FAILED, "h3": Status.SKIPPED, "h4": Status.SKIPPED}
    assert r.stopped == "stopped after wave 1: 1 failed host(s), --max-fail allows 0"
    o = {o.host: o for o in r.outcomes}
    assert o["h1"].after == "1.0.0" and o["h1"].message == "undone: back on 1.0.0"
    assert o["h3"].before == o["h3"].after == "1.0.0" and o["h3"].message == "skipped: the rollout stopped"
    assert ss[0].events == ["deploy", "undo"] and ss[2].events == [] and ss[3].events == []
    assert "-- undoing 1 host(s) to the release they had before" in said
    assert r.exit_code == 2


def test_within_a_wave_no_host_starts_once_the_budget_is_spent():
    ss = fleet(5)
    r = run(ss, "deploy", deployer(fail=("h2",)), Policy(waves=[5], parallel=1, max_fail=0), undo=undoer())
    assert [o.status for o in r.outcomes] == [
        Status.UNDONE,
        Status.FAILED,
        Status.SKIPPED,
        Status.SKIPPED,
        Status.SKIPPED,
    ]
    assert [len(s.events) for s in ss] == [2, 1, 0, 0, 0]


def test_failures_within_budget_do_not_stop():
    ss = fleet(4)
    r = run(ss, "deploy", deployer(fail=("h2",)), Policy(waves=[2, 4], max_fail=1), undo=undoer())
    assert statuses(r) == {"h1": Status.OK, "h2": Status.FAILED, "h3": Status.OK, "h4": Status.OK}
    assert r.stopped == "" and r.exit_code == 2
    assert all("undo" not in s.events for s in ss)


def test_budget_counts_failures_across_waves():
    ss = fleet(6)
    r = run(ss, "deploy", deployer(fail=("h1", "h3")), Policy(waves=[2, 4, 6], max_fail=1), undo=undoer())
    assert r.stopped.startswith("stopped after wave 2: 2 failed host(s)")
    assert statuses(r) == {
        "h1": Status.FAILED,
        "h2": Status.UNDONE,
        "h3": Status.FAILED,
        "h4": Status.SKIPPED,
        "h5": Status.SKIPPED,
        "h6": Status.SKIPPED,
    }, "wave 2 had no budget left after h3"


def test_no_undo_when_the_policy_says_so_or_without_an_undo_function():
    for policy, undo in ((Policy(waves=[2, 4], undo=False), undoer()), (Policy(waves=[2, 4]), None)):
        ss = fleet(4)
        r = run(ss, "deploy", deployer(fail=("h2",)), policy, undo=undo)
        assert statuses(r)["h1"] == Status.OK and r.stopped
        assert "undo" not in ss[0].events
        assert r.exit_code == 2


def test_unchanged_hosts_are_not_undone():
    ss = fleet(3)
    r = run(ss, "deploy", deployer(fail=("h3",), noop=("h1",)), Policy(waves=[3]), undo=undoer())
    assert statuses(r) == {"h1": Status.NOOP, "h2": Status.UNDONE, "h3": Status.FAILED}
    assert ss[0].events == ["deploy"]


def test_undo_that_fails_or_raises_is_reported():
    ss = fleet(4)
    r = run(ss, "deploy", deployer(fail=("h4",)), Policy(waves=[4]), undo=undoer(fail=("h1",), raise_=("h2",)))
    o = {o.host: o for o in r.outcomes}
    assert o["h1"].status == Status.UNDO_FAILED and o["h1"].message == "UNDO FAILED: could not switch back"
    assert o["h2"].status == Status.UNDO_FAILED and o["h2"].message == "UNDO FAILED: h2: connection lost"
    assert o["h3"].status == Status.UNDONE
    assert r.exit_code == 2


def test_undo_that_crashes_does_not_abandon_the_other_hosts():
    ss = fleet(3)
    r = run(ss, "deploy", deployer(fail=("h3",)), Policy(waves=[3]), undo=undoer(crash=("h1",)))
    assert statuses(r) == {"h1": Status.UNDO_FAILED, "h2": Status.UNDONE, "h3": Status.FAILED}


def test_unexpected_exceptions_fail_only_that_host():
    ss = fleet(3)
    ss[1].timings = {"upload": 1.5}
    r = run(ss, "deploy", deployer(crash=("h2",)), Policy(waves=[3], max_fail=1))
    o = {o.host: o for o in r.outcomes}
    assert o["h2"].status == Status.FAILED and o["h2"].message == "RuntimeError: bug in one host's code"
    assert o["h2"].before == "1.0.0" and o["h2"].after == "1.0.0", "where the host is now, from its state"
    assert o["h2"].timings == {"upload": 1.5}
    assert o["h1"].ok and o["h3"].ok


def test_failed_host_whose_state_cannot_be_read_is_on_unknown():
    ss = fleet(1)
    ss[0].state_fails = True
    r = run(ss, "deploy", deployer(fail=("h1",)), Policy(waves=[1]))
    assert r.outcomes[0].after == "unknown" and r.exit_code == 1


def test_health_between_waves_fails_and_undoes_a_host_that_became_unhealthy():
    ss, checked = fleet(4), []

    def still_healthy(s, o):
        checked.append(s.name)
        return s.name != "h1"

    r = run(ss, "deploy", deployer(), Policy(waves=[2, 4], max_fail=1), undo=undoer(), still_healthy=still_healthy)
    o = {o.host: o for o in r.outcomes}
    assert checked == ["h1", "h2"], "checked once, between the waves, not after the last"
    assert o["h1"].status == Status.UNDONE and "became unhealthy after its wave" in o["h1"].message
    assert o["h1"].after == "1.0.0"
    assert [o[h].status for h in ("h2", "h3", "h4")] == [Status.OK] * 3
    assert r.stopped == "" and r.exit_code == 2


def test_health_between_waves_counts_against_the_budget():
    ss = fleet(4)
    r = run(
        ss,
        "deploy",
        deployer(),
        Policy(waves=[2, 4], max_fail=0),
        undo=undoer(),
        still_healthy=lambda s, o: s.name != "h2",
    )
    assert statuses(r) == {"h1": Status.UNDONE, "h2": Status.UNDONE, "h3": Status.SKIPPED, "h4": Status.SKIPPED}
    assert r.stopped.startswith("stopped after wave 1")


def test_health_checks_only_changed_hosts():
    ss, checked = fleet(4), []
    run(
        ss,
        "deploy",
        deployer(noop=("h1",)),
        Policy(waves=[2, 4]),
        still_healthy=lambda s, o: checked.append(s.name) or True,
    )
    assert checked == ["h2"]


def test_health_check_that_raises_counts_as_unhealthy():
    ss = fleet(4)

    def still_healthy(s, o):
        if s.name == "h1":
            raise RemoteError("h1: the host helper gave no answer")
        return True

    r = run(ss, "deploy", deployer(), Policy(waves=[2, 4], max_fail=0), undo=undoer(), still_healthy=still_healthy)
    assert statuses(r)["h1"] in (Status.UNDONE, Status.FAILED) and r.stopped


def test_soak_waits_between_waves_only(monkeypatch):
    slept, said = [], []
    monkeypatch.setattr(rollout.time, "sleep", lambda s: s and slept.append(s))  # deployer sleeps 0
    run(fleet(3), "deploy", deployer(), Policy(waves=[1, 2, 3], soak=2.5), say=said.append)
    assert slept == [2.5, 2.5]
    assert said.count("-- soaking 2.5s before the next wave") == 2


def test_no_soak_after_a_stopping_wave(monkeypatch):
    slept = []
    monkeypatch.setattr(rollout.time, "sleep", lambda s: s and slept.append(s))  # deployer sleeps 0
    run(fleet(3), "deploy", deployer(fail=("h1",)), Policy(waves=[1, 3], soak=9))
    assert slept == []


def test_everything_failed_is_exit_1():
    r = run(fleet(2), "deploy", deployer(fail=("h1", "h2")), Policy(waves=[2], parallel=2, max_fail=5))
    assert [o.status for o in r.outcomes] == [Status.FAILED, Status.FAILED] and r.exit_code == 1


@pytest.mark.parametrize(
    "stats, stopped, code",
    [
        ([Status.OK, Status.NOOP], "", 0),
        ([Status.OK, Status.OK], "stopped", 2),
        ([Status.OK, Status.FAILED], "", 2),
        ([Status.FAILED, Status.SKIPPED], "stopped", 1),
        ([Status.UNDONE, Status.FAILED, Status.SKIPPED], "stopped", 2),
        ([Status.UNDO_FAILED, Status.FAILED], "stopped", 1),
        ([Status.FAILED], "", 1),
        ([], "", 0),
    ],
)
def test_exit_codes(stats, stopped, code):
    r = Rollout([Outcome(f"h{i}", "deploy", s) for i, s in enumerate(stats)], stopped)
    assert r.exit_code == code


def test_status_success_flags():
    assert {s for s in Status if s.succeeded} == {Status.OK, Status.NOOP}
    o = Outcome("h", "deploy", Status.OK, "1", "2")
    assert o.ok and o.but(status=Status.FAILED).ok is False and o.status == Status.OK
