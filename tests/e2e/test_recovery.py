"""kill -9 of the controller at every step boundary of a deploy and of a rollback (a test-only
hook stops the run at a named step, like a laptop dying there): the host keeps serving a
complete release, and a plain re-run of the same command finishes or undoes what was cut off."""

import signal

import pytest

# Every boundary between the round trips a deploy and a rollback make (see deploy.py, activate.py).
DEPLOY_STEPS = [
    "prepare",
    "lock",
    "upload",
    "built",
    "staged",
    "hook 1",
    "web started",
    "processes started",
    "gate",
    "switched",
]
ROLLBACK_STEPS = ["backup", "web started", "processes started", "gate", "switched"]


def _killed(slot, step, *args):
    p = slot.popen(*args, extra_env={"SGPFAB_TEST_HOOK": f"{step}=kill"})
    out, err = p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL, f"the run was not killed at {step!r}:\n{out}\n{err}"


def _serving(slot, h, allowed):
    """Exactly one complete release is active, its processes answer, and it is one we expect."""
    cur = slot.current(h)
    assert cur in allowed, (cur, allowed)
    assert slot.ssh(h, f"test -f {slot.api_root}/releases/{cur}/.sgpfab-release.json && echo ok").strip() == "ok"
    assert slot.http(h, "/healthz") == (200, b"ok")


@pytest.mark.parametrize("steps", [DEPLOY_STEPS[:5], DEPLOY_STEPS[5:]], ids=["build", "activation"])
def test_deploy_killed_at_every_step_is_finished_by_a_plain_rerun(tasks_slot, steps):
    s = tasks_slot
    h = s.hosts[0]
    # The release command runs on every deploy here (not only when migrations change), so that
    # the run can be cut off at "hook 1".
    s.configure(release=[c["command"] if isinstance(c, dict) else c for c in s.app_config.get("release", [])])
    s.fab("-H", h, "deploy", "--version", "1.0.0")
    for i, step in enumerate(steps, start=1):
        old, new = f"v1.0.{i - 1}", f"v1.0.{i}"
        src = s.variant(f"v{i}", append={"tasks_app/views.py": f"# change {i}"})
        s.fab("bundle", "--version", new[1:], "--source", str(src))
        _killed(s, step, "-H", h, "deploy", "--bundle", new[1:])
        _serving(s, h, {old, new})
        r = s.fab("-H", h, "deploy", "--bundle", new[1:])
        assert s.current(h) == new, r.stdout
        _serving(s, h, {new})
        units = s.units(h)
        assert units == sorted(
            [f"{s.service}-web@{new}.service", f"{s.service}-worker@{new}.service", f"{s.service}.socket"]
        ), (step, units)
        assert s.ssh(h, f"ls {s.api_root}/.sgpfab/journal.json 2>/dev/null || true").strip() == ""


def test_rollback_killed_at_every_step_is_finished_by_a_plain_rerun(tasks_slot):
    s = tasks_slot
    h = s.hosts[1]
    s.fab("-H", h, "deploy", "--version", "1.0.0")
    s.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(s.variant("v1", append={"tasks_app/views.py": "#"})))
    for step in ROLLBACK_STEPS:
        _killed(s, step, "-H", h, "rollback", "--version", "1.0.0")
        _serving(s, h, {"v1.0.0", "v1.0.1"})
        s.fab("-H", h, "rollback", "--version", "1.0.0")
        _serving(s, h, {"v1.0.0"})
        assert s.units(h) == sorted(
            [f"{s.service}-web@v1.0.0.service", f"{s.service}-worker@v1.0.0.service", f"{s.service}.socket"]
        ), step
        s.fab("-H", h, "deploy", "--bundle", "1.0.1")  # back to 1.0.1 for the next step
        _serving(s, h, {"v1.0.1"})


def test_a_killed_run_left_half_done_is_recovered_by_any_other_command(tasks_slot):
    """Not only a re-run of the same deploy: `status` reports it and a `rollback` finishes it first."""
    s = tasks_slot
    h = s.hosts[0]
    s.fab("-H", h, "deploy", "--version", "1.0.0")
    s.fab("bundle", "--version", "1.0.1", "--source", str(s.variant("v1", append={"tasks_app/views.py": "#"})))
    _killed(s, "web started", "-H", h, "deploy", "--bundle", "1.0.1")
    assert s.ssh(h, f"test -f {s.api_root}/.sgpfab/journal.json && echo yes").strip() == "yes"
    r = s.fab("-H", h, "cleanup", "--keep", "5")
    assert s.current(h) == "v1.0.0" and s.ssh(h, f"ls {s.api_root}/.sgpfab/journal.json 2>/dev/null || true") == ""
    assert s.units(h) == sorted(
        [f"{s.service}-web@v1.0.0.service", f"{s.service}-worker@v1.0.0.service", f"{s.service}.socket"]
    ), r.stdout
    history = s.fab("-H", h, "history").stdout
    assert "recover" in history and "undone" in history
