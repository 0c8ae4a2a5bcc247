r"""The host helper's Windows branches, run here with Windows' rules emulated
(support.winhost): the `current` junction swap and its repair after a crash at every step, the
msvcrt file lock, and the service states the health gate reads (QueryServiceStatusEx through
ctypes, sc.exe's text as the fallback)."""

import io
import json
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout

import pytest
from support.nssm import NSSM
from support.winhost import FakeMsvcrt, WindowsHost, windows_modules

from sgpfab.remote import hostctl as hostctl_src


class Crash(BaseException):
    """The process died here: nothing after this runs."""


@pytest.fixture
def host(tmp_path):
    h = WindowsHost(tmp_path)
    yield h
    h.shutdown()


def helper(host):
    return host.hostctl_module(hostctl_src.__file__ and __import__("pathlib").Path(hostctl_src.__file__))


def run(mod, root, *args, stdin=""):
    out = io.StringIO()
    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        with windows_modules(), redirect_stdout(out):
            rc = mod.main(["--root", str(root), *args])
    finally:
        sys.stdin = saved
    return rc, out.getvalue()


def releases(root, *names):
    for n in names:
        d = root / "releases" / n
        d.mkdir(parents=True)
        (d / ".sgpfab-release.json").write_text(json.dumps({"version": n[1:]}))


def current(root):
    import os

    link = root / "releases" / "current"
    return os.path.basename(os.readlink(link)) if os.path.lexists(link) else None


def leftovers(root):
    return sorted(p.name for p in (root / "releases").iterdir() if p.name.startswith(".current"))


class Crasher:
    """Counts the junction operations of a switch and dies at the n-th."""

    def __init__(self, mod, at):
        self.mod, self.at, self.n = mod, at, 0
        self.real = (mod._make_junction, mod._remove_junction, mod.os.rename)

    def __enter__(self):
        make, remove, rename = self.real
        self.mod._make_junction = self.wrap(make)
        self.mod._remove_junction = self.wrap(remove)
        self.mod.os.rename = self.wrap(rename)
        return self

    def wrap(self, fn):
        def op(*a):
            if self.n == self.at:
                raise Crash(f"killed before operation {self.n} ({fn.__name__})")
            self.n += 1
            return fn(*a)

        return op

    def __exit__(self, *exc):
        self.mod._make_junction, self.mod._remove_junction = self.real[:2]
        del self.mod.os.rename  # back to the class's (Windows) rename
        return False


@pytest.mark.parametrize("at", range(5))
def test_a_switch_killed_at_any_step_is_repaired_by_the_next_one(host, at):
    """switch v1 -> v2 does four operations (new junction, old away, new in place, old removed);
    killed before any of them, the host is left on v1, on v2, or without `current` but with
    what `_repair_current` needs; the next switch (here: to v2 again, as a journal recovery
    does, or back to v1, as an undo does) ends on its target with nothing left over."""
    mod = helper(host)
    root = host.local("C:\\sgp api")
    releases(root, "v1", "v2")
    assert run(mod, root, "switch", "--to", "v1")[0] == 0 and current(root) == "v1"
    with Crasher(mod, at) as c:
        try:
            run(mod, root, "switch", "--to", "v2")
            died = False
        except Crash:
            died = True
    assert died == (at < 4) and c.n == min(at, 4)
    after_crash = current(root)
    assert after_crash in ("v1", "v2", None)
    if after_crash is None:
        assert leftovers(root) == [".current.new", ".current.old"], "the swap was cut between its renames"
    st = json.loads(run(mod, root, "state")[1])
    assert st["junk"] == [], "the leftovers are not releases or junk"
    # Cut between the renames, state reports the new junction (the one the repair keeps).
    assert st["current"] == (after_crash or "v2")
    for target in ("v2", "v1"):
        assert run(mod, root, "switch", "--to", target)[0] == 0
        assert current(root) == target and leftovers(root) == []


def test_repair_prefers_the_new_junction_and_falls_back_to_the_old(host):
    mod = helper(host)
    root = host.local("C:\\api")
    releases(root, "v1", "v2")
    rel = root / "releases"
    for present, expected in ([(".current.new", "v2"), (".current.old", "v1")], "v2"), ([(".current.old", "v1")], "v1"):
        for name, target in present:
            (rel / name).symlink_to(rel / target, target_is_directory=True)
        with windows_modules():
            mod._repair_current(mod.Host(str(root)))
        assert current(root) == expected and leftovers(root) == []
        (rel / "current").unlink()


def test_unlink_current_removes_the_junction_not_the_release(host):
    mod = helper(host)
    root = host.local("C:\\api")
    releases(root, "v1")
    run(mod, root, "switch", "--to", "v1")
    assert run(mod, root, "unlink-current")[0] == 0
    assert current(root) is None and (root / "releases" / "v1" / ".sgpfab-release.json").exists()


def test_the_lock_waits_as_long_as_it_takes_and_can_be_tried(host, monkeypatch):
    """msvcrt.locking(LK_LOCK) gives up after 10 attempts a second apart; `_flock(wait=True)`
    must really wait, and `wait=False` must not."""
    mod = helper(host)
    monkeypatch.setattr(FakeMsvcrt, "retry_seconds", 0.01)
    path = str(host.local("C:\\api\\.sgpfab\\ops.lock"))
    held, release, got = threading.Event(), threading.Event(), []

    def holder():
        with windows_modules(), mod._flock(path) as ok:
            got.append(("holder", ok))
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    with windows_modules(), mod._flock(path, wait=False) as ok:
        assert ok is False
    waiter = threading.Thread(target=lambda: got.append(("waiter", _take(mod, path))))
    waiter.start()
    time.sleep(0.3)  # 30 times LK_LOCK's retry interval here: the old code had given up
    assert ("waiter", True) not in got
    release.set()
    t.join(5)
    waiter.join(5)
    assert got == [("holder", True), ("waiter", True)]


def _take(mod, path):
    with windows_modules(), mod._flock(path) as ok:
        return ok


# -- service states ---------------------------------------------------------------------------------

# `sc.exe queryex` output as Microsoft's documentation shows it (Learn, "sc.exe queryex"), and as
# it looks for a throttled NSSM service (state 7, PAUSED).
SC_RUNNING = """
SERVICE_NAME: sgp-api
        TYPE               : 10  WIN32_OWN_PROCESS
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
        PID                : 5136
        FLAGS              :
"""


@pytest.mark.parametrize(
    "text,expected",
    [
        (SC_RUNNING, ("RUNNING", 5136)),
        (SC_RUNNING.replace("4  RUNNING", "7  PAUSED"), ("PAUSED", 5136)),
        (SC_RUNNING.replace("4  RUNNING", "1  STOPPED").replace("5136", "0"), ("STOPPED", 0)),
        # a localised label: the number decides, not the word
        (SC_RUNNING.replace("STATE      ", "STATUS     "), ("RUNNING", 5136)),
        (
            SC_RUNNING.replace("10  WIN32_OWN_PROCESS", "1  KERNEL_DRIVER").replace("4  RUNNING", "2  START_PENDING"),
            ("START_PENDING", 5136),
        ),
        (
            "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\nThe specified service does not exist",
            ("MISSING", 0),
        ),
    ],
)
def test_sc_queryex_parsing(text, expected):
    assert hostctl_src.parse_sc_queryex(text) == expected


def test_service_states_come_from_query_service_status_ex(host):
    mod = helper(host)
    n = host.nssm
    n.command(["install", "svc", "C:\\x\\python.exe"])
    svc = n.services["svc"]
    for state, (active, sub) in {
        "RUNNING": ("active", "running"),
        "PAUSED": ("failed", "paused"),
        "START_PENDING": ("activating", "start-pending"),
        "STOP_PENDING": ("deactivating", "stop-pending"),
    }.items():
        svc.state, svc.pid = state, 4242
        assert mod._windows_service_state("svc") == {"active": active, "sub": sub, "restarts": 0, "pid": 4242}
    svc.state = "STOPPED"
    assert mod._windows_service_state("svc") == {"active": "inactive", "sub": "dead", "restarts": 0, "pid": 0}
    assert mod._windows_service_state("nope") == {"active": "inactive", "sub": "missing", "restarts": 0, "pid": 0}
    assert host.advapi.closed, "handles are closed"


def test_the_status_structure_is_nine_dwords():
    import ctypes

    assert ctypes.sizeof(hostctl_src._service_status_struct()) == 36


def test_the_gate_fails_at_once_on_a_throttled_service(host):
    """NSSM pauses a service while it waits to restart an application that exited: the gate
    reports it as crashing, well before its deadline."""
    mod = helper(host)
    root = host.local("C:\\api")
    (root / ".sgpfab").mkdir(parents=True)
    host.nssm.command(["install", "sgp-api", "C:\\x\\python.exe"])
    svc = host.nssm.services["sgp-api"]
    svc.state, svc.pid = "PAUSED", 4000
    start = time.monotonic()
    rc, out = run(mod, root, "gate", "--unit", "sgp-api", "--deadline", "30")
    r = json.loads(out)
    assert rc == 0 and not r["ok"] and r["why"] == "crashing" and r["crashed"] == ["sgp-api"]
    assert time.monotonic() - start < 5
    svc.state = "RUNNING"
    r = json.loads(run(mod, root, "gate", "--unit", "sgp-api", "--deadline", "10", "--settle", "0.2")[1])
    assert r["ok"], r


def test_an_application_restart_keeps_the_service_pid(tmp_path):
    """QueryServiceStatusEx's process id is NSSM's own (the service process), so the gate's
    count of PID changes sees nothing when NSSM restarts the application; SERVICE_PAUSED is
    the signal (with AppRestartDelay set, every restart passes through it)."""
    procs = []

    def launch(svc):
        p = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
        procs.append(p)
        return p

    n = NSSM(launch, lambda p, grace: p.kill())
    n.command(["install", "s", "C:\\x\\python.exe"])
    n.command(["set", "s", "AppRestartDelay", "1000"])
    n.command(["set", "s", "AppThrottle", "300"])
    n.start("s")
    pid = n.query("s")[1]
    n.wait_state("s", "PAUSED", 10)
    assert n.query("s") == (7, pid)
    deadline = time.monotonic() + 10
    while n.services["s"].history.count("RUNNING") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert n.query("s")[1] == pid and len(procs) >= 2, "a new application, the same service process"
    n.stop("s")
    history = n.services["s"].history
    assert history[:5] == ["START_PENDING", "RUNNING", "PAUSED", "START_PENDING", "RUNNING"], history
