"""The rollout engine's decisions, with in-memory stand-ins for hosts (no I/O involved)."""

import threading
import time
from types import SimpleNamespace

import pytest

from sgpfab.deploy import Outcome
from sgpfab.errors import DeployError, InputError
from sgpfab.rollout import Policy, make_policy, parse_max_fail, parse_waves, run


@pytest.mark.parametrize("spec, n, ends", [
    (None, 5, [5]), ("1,25%,100%", 8, [1, 2, 8]), ("1,25%,100%", 3, [1, 3]), ("2", 5, [2, 5]),
    ("1,1,50%", 4, [1, 2, 4]), ("10", 4, [4]), ("33%,66%", 3, [1, 2, 3]),
])
def test_waves_are_cumulative_and_end_with_every_host(spec, n, ends):
    assert parse_waves(spec, n) == ends


@pytest.mark.parametrize("spec", ["0", "-1", "abc", "0%", "150%", "50%,1", ""])
def test_bad_waves_are_refused(spec):
    if spec == "":
        assert parse_waves(spec, 3) == [3]
        return
    with pytest.raises(InputError):
        parse_waves(spec, 4)


@pytest.mark.parametrize("spec, n, allowed", [(None, 10, 0), ("2", 10, 2), ("10%", 10, 1), ("25%", 3, 0), ("100%", 4, 4)])
def test_max_fail_counts_and_percentages(spec, n, allowed):
    assert parse_max_fail(spec, n) == allowed


def test_policy_rejects_nonsense():
    for kw in ({"parallel": 0}, {"parallel": "x"}, {"soak": -1}):
        args = {"waves": None, "parallel": 1, "max_fail": None, "soak": 0, "undo": True, **kw}
        with pytest.raises(InputError):
            make_policy(4, **args)


class Fake:
    """A stand-in host: name, the version it is on, and a log of what happened to it."""

    def __init__(self, name, version="1.0.0"):
        self.host = SimpleNamespace(name=name)
        self.current_version = version
        self.events = []


def deployer(fail=(), delay=0.0, gauge=None):
    def fn(s):
        if gauge is not None:
            gauge.enter()
        time.sleep(delay)
        if gauge is not None:
            gauge.leave()
        s.events.append("deploy")
        if s.host.name in fail:
            raise DeployError(f"{s.host.name}: unhealthy; rolled back", before="1.0.0", after="1.0.0")
        before, s.current_version = s.current_version, "2.0.0"
        return Outcome(s.host.name, "deploy", True, before, "2.0.0")
    return fn


class Gauge:
    """Counts how many hosts are being worked on at once."""

    def __init__(self):
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1


def undoer(s, o):
    s.events.append("undo")
    s.current_version = o.before
    return Outcome(s.host.name, "undo", True, o.after, o.before)


def names(hosts):
    return [Fake(n) for n in hosts]


def test_all_good_rollout_exits_zero():
    hosts = names(["a", "b", "c", "d"])
    r = run(hosts, "deploy", deployer(), Policy([1, 2, 4], parallel=2), undo=undoer, say=lambda *_: None)
    assert r.exit_code == 0 and not r.stopped
    assert [o.after for o in r.outcomes] == ["2.0.0"] * 4


def test_a_failure_over_budget_stops_skips_and_undoes_completed_hosts():
    hosts = names(["canary", "b", "c", "d", "e"])
    r = run(hosts, "deploy", deployer(fail={"b"}), Policy([1, 3, 5], parallel=1), undo=undoer, say=lambda *_: None)
    assert r.stopped.startswith("stopped after wave 2")
    by = {o.host: o for o in r.outcomes}
    assert by["canary"].undone and by["canary"].after == "1.0.0" and "undone: back on 1.0.0" in by["canary"].message
    assert by["b"].after == "1.0.0" and not by["b"].ok
    assert by["c"].message == "skipped: the rollout stopped", "with --parallel 1 nothing starts after a failure"
    assert by["d"].message.startswith("skipped") and by["e"].message.startswith("skipped")
    assert [h.current_version for h in hosts] == ["1.0.0"] * 5
    assert r.exit_code == 2


def test_failures_within_budget_continue():
    hosts = names(["a", "b", "c", "d"])
    r = run(hosts, "deploy", deployer(fail={"b"}), Policy([1, 4], parallel=2, max_fail=1), undo=undoer,
            say=lambda *_: None)
    assert not r.stopped and r.exit_code == 2
    assert [h.current_version for h in hosts] == ["2.0.0", "1.0.0", "2.0.0", "2.0.0"]
    assert all("undo" not in h.events for h in hosts)


def test_no_undo_leaves_changed_hosts():
    hosts = names(["a", "b", "c"])
    r = run(hosts, "deploy", deployer(fail={"b"}), Policy([1, 3], undo=False), undo=undoer, say=lambda *_: None)
    assert r.stopped and hosts[0].current_version == "2.0.0" and "undo" not in hosts[0].events


def test_parallelism_is_bounded():
    gauge = Gauge()
    hosts = names([f"h{i}" for i in range(7)])
    r = run(hosts, "deploy", deployer(delay=0.05, gauge=gauge), Policy([7], parallel=3), say=lambda *_: None)
    assert r.exit_code == 0 and gauge.peak == 3


def test_a_host_unhealthy_after_soak_counts_as_a_failure():
    hosts = names(["a", "b", "c"])
    r = run(hosts, "deploy", deployer(), Policy([1, 3], soak=0.01), undo=undoer,
            still_healthy=lambda s, o: s.host.name != "a", say=lambda *_: None)
    assert r.stopped and hosts[0].current_version == "1.0.0"
    assert [o.message for o in r.outcomes][1:] == ["skipped: the rollout stopped"] * 2


def test_an_unexpected_exception_on_one_host_does_not_abandon_the_others():
    hosts = names(["a", "b"])

    def fn(s):
        if s.host.name == "a":
            raise KeyError("boom")
        return deployer()(s)
    r = run(hosts, "deploy", fn, Policy([2], parallel=2, max_fail=1), say=lambda *_: None)
    assert r.outcomes[0].message == "KeyError: 'boom'" and r.outcomes[1].ok


@pytest.mark.parametrize("url", ["http://10.0.0.1/health", "http://192.168.1.5:8000/", "http://8.8.8.8/",
                                 "http://example.com/"])
def test_load_generator_refuses_anything_but_loopback_and_sandbox_addresses(url):
    from sgpfab.loadgen import Load
    with pytest.raises(ValueError):
        Load(url)


def test_load_generator_counts_failures_on_loopback():
    from sgpfab.loadgen import Load
    with Load("http://127.0.0.1:9/health", interval=0.01, max_requests=5, max_seconds=5) as load:
        pass
    assert load.result.requests == 5 and load.result.failed == 5


def test_a_host_unhealthy_after_its_wave_is_put_back_even_within_budget():
    hosts = names(["a", "b", "c"])
    r = run(hosts, "deploy", deployer(), Policy([1, 3], max_fail=1), undo=undoer,
            still_healthy=lambda s, o: s.host.name != "a", say=lambda *_: None)
    assert not r.stopped and r.exit_code == 2
    assert [h.current_version for h in hosts] == ["1.0.0", "2.0.0", "2.0.0"]
    assert r.outcomes[0].undone and r.outcomes[0].message.startswith("undone: back on 1.0.0")
    assert hosts[0].events == ["deploy", "undo"]


def test_a_failed_undo_is_reported_not_hidden():
    hosts = names(["a", "b"])

    def bad_undo(s, o):
        raise DeployError(f"{s.host.name}: cannot go back")
    r = run(hosts, "deploy", deployer(fail={"b"}), Policy([1, 2]), undo=bad_undo, say=lambda *_: None)
    assert r.outcomes[0].message == "UNDO FAILED: a: cannot go back" and not r.outcomes[0].ok
