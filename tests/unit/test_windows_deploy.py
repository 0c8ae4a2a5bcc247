r"""Whole deploys to a stand-in Windows host (tests/support/winhost.py) through sgpfab's real
deploy logic (deploy.deploy_host, ops.rollback_host, activate.recover), the real WinRM
transport over a stubbed WS-Man endpoint, the real host helper with its Windows branches on,
the real winrun.py starting a small HTTP app, and NSSM acted out (tests/support/nssm.py).
Every script passes the PowerShell grammar gate first; every native argument goes through
Windows PowerShell 5.1's quoting and the C runtime's parsing.

What this cannot show: that Windows, PowerShell, NSSM and NTFS behave as emulated (docs/windows.md).
"""

import base64
import json
import os
import socket
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.winhost import WindowsHost
from support.wsman import FakeWinRM
from winrm.protocol import Protocol

from sgpfab import windows
from sgpfab.bundle import build
from sgpfab.deploy import Plan, check_host, deploy_host
from sgpfab.errors import DeployError, InputError
from sgpfab.inventory import Inventory
from sgpfab.ops import rollback_host
from sgpfab.session import HostSession
from sgpfab.settings import SecretStore, account_password, resolve
from sgpfab.transport.winrm import WinRMTransport
from sgpfab.versions import Version

ROOT = "C:\\sgp api"
GREETING = "gr\u00fc\u00dfe \u2018quoted\u2019 \u2713 $(not run)"

APP = {
    "tinyapp/__init__.py": "",
    "tinyapp/__main__.py": """\
import http.server, json, os
HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = open(os.path.join(HERE, "VERSION")).read().strip()
if os.path.exists(os.path.join(HERE, "BROKEN")):
    raise RuntimeError("this release cannot start")
TOKEN, RELEASE = os.environ.get("SGPFAB_PROBE_TOKEN", ""), os.environ.get("SGPFAB_RELEASE", "")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "version": VERSION, "greeting": os.environ.get("GREETING")}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        if TOKEN and self.headers.get("X-Sgpfab-Probe") == TOKEN:  # sgpfab's probe contract
            self.send_header("X-Sgpfab-Release", RELEASE)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


server = http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
print("serving", VERSION, "as", RELEASE, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    print("stopping on Ctrl+C", flush=True)
finally:
    server.server_close()
""",
    "tinyapp/worker.py": """\
import os, time
print("worker of", os.environ.get("SGPFAB_RELEASE"), flush=True)
try:
    while True:
        time.sleep(0.2)
except KeyboardInterrupt:
    print("worker stopping", flush=True)
""",
    "tinyapp/hook.py": """\
import os
with open("hook-ran.txt", "w", encoding="utf-8") as f:
    f.write(os.environ["SGPFAB_RELEASE"] + "\\n" + os.environ["GREETING"] + "\\n")
print("hook done")
""",
    "requirements.txt": "# no third-party dependencies\n",
}


PY = f"{sys.version_info[0]}.{sys.version_info[1]}"  # the stand-in runs this Python


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inventory(tmp: Path, port: int, extra: str = "") -> Inventory:
    text = f"""
hosts:
  win1: {{os: windows, hostname: win1.example.com, user: deployer, python: 'C:\\Python311\\python.exe'}}
apps:
  shop:
    source: app
    api_root: 'C:\\sgp api\\'
    service: sgp-api
    port: {port}
    bind: 127.0.0.1
    processes:
      web: {{server: command, command: python -m tinyapp}}
      worker: python -m tinyapp.worker
    release: [python -m tinyapp.hook]
    writable: [uploads]
    dependencies: {{source: requirements}}
    targets: [{{os: windows, python: "{PY}"}}]
    env: {{GREETING: {json.dumps(GREETING)}}}
    health: {{version: true, timeout: 20, settle: 0.5}}
{extra}"""
    (tmp / "fleet.yaml").write_text(text, encoding="utf-8")
    return Inventory.load(tmp / "fleet.yaml")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundles")
    old = os.environ.get("SGPFAB_CACHE")
    os.environ["SGPFAB_CACHE"] = str(tmp / "cache")
    try:
        inv = inventory(tmp, 8000)
        out = {}
        for v in ("1.0.0", "1.0.1", "1.0.2"):
            src = tmp / f"src-{v}"
            for rel, text in APP.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text)
            (src / "tinyapp" / "VERSION").write_text(v + "\n")
            if v == "1.0.2":
                (src / "tinyapp" / "BROKEN").write_text("crash at start\n")
            out[v] = build(inv.app("shop"), Version.parse(v), tmp / "dist", say=lambda *_: None, src=src)
        yield out
    finally:
        if old is None:
            os.environ.pop("SGPFAB_CACHE", None)
        else:
            os.environ["SGPFAB_CACHE"] = old


class Win:
    """One stand-in host and the means to open sessions to it."""

    def __init__(self, tmp: Path, host: WindowsHost, inv: Inventory, port: int):
        self.tmp, self.host, self.inv, self.port = tmp, host, inv, port
        self.inst = inv.instance("shop", "win1")
        self.notes: list[str] = []

    def session(self) -> HostSession:
        p = Protocol("https://win1.example.com:5986/wsman", transport="ntlm", username="deployer", password="pw")
        transport: Any = p.transport  # its HTTP send is replaced by the WS-Man stand-in
        transport.send_message = FakeWinRM(self.host)
        t = WinRMTransport(self.inst.host, protocol=p)
        t.open()
        password = account_password(self.inst, SecretStore(use_keyring=False))  # as runner.open_sessions does
        return HostSession(t, self.inst, say=lambda n: self.notes.append(str(n)), account_password=password)

    def plan(self, bundle) -> Plan:
        settings = resolve(self.inst, SecretStore(use_keyring=False))
        return Plan(bundle, uv=lambda host_os: pytest.fail("uv is on the host"), settings={"win1": settings})

    def get(self, path="/health") -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def current(self) -> str:
        return os.path.basename(os.readlink(self.host.local(ROOT + "\\releases\\current")))


@pytest.fixture
def win(tmp_path, monkeypatch):
    monkeypatch.delenv("SGPFAB_WINRM_USER", raising=False)
    port = free_port()
    host = WindowsHost(tmp_path)
    w = Win(tmp_path, host, inventory(tmp_path, port), port)
    yield w
    host.shutdown()


def deploy(w: Win, bundle):
    s = w.session()
    s.preflight()
    check_host(s, w.plan(bundle))
    return deploy_host(s, w.plan(bundle))


def test_api_root_trailing_backslash_is_dropped(win):
    assert win.inst.api_root == ROOT


def test_deploy_upgrade_rollback_and_redeploy(win, bundles):
    host = win.host
    out = deploy(win, bundles["1.0.0"])
    assert out.status.value == "ok" and out.after == "1.0.0", out
    assert win.current() == "v1.0.0"
    assert win.get()["version"] == "1.0.0"

    # finalize: the release metadata travelled on stdin (JSON and CRLF, UTF-8), never in argv
    (fin,) = [c for c in host.natives if "finalize" in c.argv]
    assert fin.argv[-4:] == ["finalize", "--name", "v1.0.0", "--with-state"]
    assert not any("{" in a for a in fin.argv)
    assert fin.stdin.endswith(b"\r\n") and json.loads(fin.stdin)["version"] == "1.0.0"
    # the settings (non-ASCII, typographic quotes, a '$(...)') reached the app and the hook intact
    assert win.get()["greeting"] == GREETING
    hook = (host.local(ROOT + "\\releases\\v1.0.0") / "hook-ran.txt").read_text(encoding="utf-8")
    assert hook == f"v1.0.0\n{GREETING}\n"

    # one NSSM service per process, each as its own virtual account, through winrun.py
    web, worker = host.nssm.services["sgp-api"], host.nssm.services["sgp-api-worker"]
    assert web.get("ObjectName") == "NT SERVICE\\sgp-api" and worker.get("ObjectName") == "NT SERVICE\\sgp-api-worker"
    assert web.get("AppParameters") == "winrun.py --release v1.0.0 --process web --web"
    assert web.get("AppDirectory") == ROOT + "\\.sgpfab\\launch"
    assert web.get("Application") == ROOT + "\\releases\\v1.0.0\\.venv\\Scripts\\python.exe"
    assert host.nssm.command(["get", "sgp-api", "AppExit", "Default"])[0] == "Restart\n"
    assert web.get("AppRestartDelay") == "1000" and web.get("Start") == "SERVICE_AUTO_START"
    assert web.state == worker.state == "RUNNING"
    sid = windows.service_sid("sgp-api")
    assert host.acl.allows(ROOT + "\\shared\\logs", sid, "M")
    assert host.acl.allows(ROOT + "\\shared\\config\\env", sid, "RX")
    assert host.acl.allows(ROOT + "\\releases\\v1.0.0\\uploads", windows.service_sid("sgp-api-worker"), "M")
    assert not host.acl.allows(ROOT + "\\.sgpfab\\launch.env", windows.service_sid("sgp-api-worker"), "R")
    log = host.local(ROOT + "\\shared\\logs\\web.log").read_text()
    assert "serving 1.0.0 as v1.0.0" in log

    out = deploy(win, bundles["1.0.1"])
    assert out.after == "1.0.1" and win.current() == "v1.0.1" and win.get()["version"] == "1.0.1"
    assert "stopping on Ctrl+C" in host.local(ROOT + "\\shared\\logs\\web.log").read_text(), "stopped gracefully"
    assert "worker of v1.0.1" in host.local(ROOT + "\\shared\\logs\\worker.log").read_text()
    assert worker.get("AppParameters") == "winrun.py --release v1.0.1 --process worker"

    out = rollback_host(win.session(), None)
    assert out.after == "1.0.0" and win.current() == "v1.0.0" and win.get()["version"] == "1.0.0"

    # the same bundle again: nothing changed, so `nssm get` agreed with every setting
    out = deploy(win, bundles["1.0.0"])
    assert out.status.value == "noop", out
    # every native argument sgpfab generated arrived exactly as it was written
    assert all(c.argv == c.args for c in host.natives), [c for c in host.natives if c.argv != c.args]
    assert not host.local(ROOT + "\\.sgpfab\\lock").exists()


def test_a_crash_looping_release_is_rolled_back(win, bundles):
    host = win.host
    deploy(win, bundles["1.0.0"])
    with pytest.raises(DeployError) as e:
        deploy(win, bundles["1.0.2"])
    msg = str(e.value)
    assert "keeps crashing" in msg and "rolled back to v1.0.0 (healthy)" in msg, msg
    assert "RuntimeError: this release cannot start" in msg, "the service's last log lines"
    assert "PAUSED" in host.nssm.services["sgp-api"].history, "NSSM throttled the restarts"
    assert win.current() == "v1.0.0" and win.get()["version"] == "1.0.0"
    s = win.session()
    st = s.state()
    assert st.get(Version.parse("1.0.2")).bad and st.journal is None
    assert host.nssm.services["sgp-api"].get("AppParameters") == "winrun.py --release v1.0.0 --process web --web"
    assert not host.local(ROOT + "\\.sgpfab\\lock").exists(), "the lock was released"


def test_a_deploy_killed_after_the_switch_is_finished_by_the_next_run(win, bundles, monkeypatch):
    import sgpfab.session as session_mod

    deploy(win, bundles["1.0.0"])
    reached, never, first = threading.Event(), threading.Event(), []
    real_checkpoint = HostSession.checkpoint

    def checkpoint(self, step):
        if step == "switched" and self is first[0]:
            reached.set()
            never.wait()  # the controller is gone: nothing after this point happens
            raise SystemExit("the dead run never resumes")
        real_checkpoint(self, step)

    dead = _dead_pid()

    class DeadOs:  # the lock records this pid: a process of this controller that no longer exists
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def getpid():
            return dead

    monkeypatch.setattr(HostSession, "checkpoint", checkpoint)
    monkeypatch.setattr(session_mod, "os", DeadOs())
    s1 = win.session()
    first.append(s1)
    t = threading.Thread(target=lambda: _swallow(deploy_host, s1, win.plan(bundles["1.0.1"])), daemon=True)
    t.start()
    assert reached.wait(60), "the first run never reached the switch"
    assert win.current() == "v1.0.1"
    assert win.session().state().journal.to == "v1.0.1", "the journal is still there"
    monkeypatch.setattr(session_mod, "os", os)

    out = deploy(win, bundles["1.0.1"])
    assert "finished the interrupted deploy" in out.message, out
    assert any("taking over a stale lock" in n for n in win.notes)
    assert win.current() == "v1.0.1" and win.get()["version"] == "1.0.1"
    assert win.session().state().journal is None
    s1.t.protocol.transport.send_message = _gone
    never.set()
    t.join(30)


def test_an_interrupted_junction_swap_is_undone_by_the_next_run(win, bundles):
    """A crash between hostctl's two renames (old junction away, new one not yet in place)
    during a deploy: `current` is missing (state reports the junction left aside), the journal is
    there. The next run recovers."""
    host = win.host
    deploy(win, bundles["1.0.0"])
    s = win.session()
    with s.lock("test"):
        s.journal_begin("deploy", "v1.0.0", "v1.0.1")
    rel = host.local(ROOT + "\\releases")
    os.rename(rel / "current", rel / ".current.old")
    assert not (rel / "current").exists() and win.session().state().current == "v1.0.0"
    out = deploy(win, bundles["1.0.1"])
    assert out.after == "1.0.1" and win.current() == "v1.0.1", out
    assert "undid the interrupted deploy" in out.message
    assert sorted(p.name for p in rel.iterdir() if p.name.startswith(".current")) == []


def test_nssm_2_24_is_refused_before_anything_changes(tmp_path, bundles, monkeypatch):
    port = free_port()
    host = WindowsHost(tmp_path, nssm_version="2.24")
    w = Win(tmp_path, host, inventory(tmp_path, port), port)
    s = w.session()
    s.preflight()
    with pytest.raises(InputError, match="NSSM 2.24-101 or later is needed .*found: NSSM 2.24"):
        check_host(s, w.plan(bundles["1.0.0"]))
    assert not host.local(ROOT).exists()


def _dead_pid() -> int:
    import subprocess

    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _swallow(fn, *args):
    try:
        fn(*args)
    except BaseException:
        pass


def _gone(message):
    raise RuntimeError("the dead controller's connection is gone")


# -- a named run_as account (issue 16) ---------------------------------------------------------------

PASSWORD = 'p\u00e4ss \'w\u2019"rd" $(Get-Date) `n; & | %PATH% \\'


@pytest.fixture
def named(tmp_path, monkeypatch, win):
    r"""The stand-in host with a local user `.\svc shop` whose password is a secret of the
    controller (SGPFAB_SECRET_SHOP_SVC_PASSWORD), and the app set to run as it."""
    monkeypatch.setenv("SGPFAB_SECRET_SHOP_SVC_PASSWORD", PASSWORD)
    extra = "    run_as: '.\\svc shop'\n    run_as_password: {secret: shop_svc_password}\n"
    w = Win(tmp_path, win.host, inventory(tmp_path, win.port, extra), win.port)
    w.sid = win.host.add_account(".\\svc shop", PASSWORD)
    return w


def _nowhere_but_stdin(w: Win, secret: str, caplog) -> None:
    """`secret` in no script text (bar the transport's $SgpfabStdin line), statement, native
    argument, note, log record or file on the host."""
    forms = [secret, windows.q(secret)[1:-1], base64.b64encode(secret.encode()).decode(), secret[:5]]
    for script in w.host.scripts:
        body = script[len(windows.PRELUDE) :]
        if body.startswith("$SgpfabStdin = "):
            body = body.split("\n", 1)[1]
        assert not any(f in body for f in forms)
    assert not any(f in st for st in w.host.statements for f in forms)
    for c in w.host.natives:
        assert not any(secret in a for a in [*c.args, *c.argv]) and secret.encode() not in (c.stdin or b"")
    assert not any(secret in n for n in w.notes) and secret not in caplog.text
    for f in w.host.base.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert secret.encode() not in f.read_bytes(), f


def test_a_named_account_runs_every_service_and_its_password_travels_on_stdin_only(named, bundles, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    host = named.host
    out = deploy(named, bundles["1.0.0"])
    assert out.status.value == "ok" and named.get()["version"] == "1.0.0", out
    web, worker = host.nssm.services["sgp-api"], host.nssm.services["sgp-api-worker"]
    assert web.get("ObjectName") == worker.get("ObjectName") == ".\\svc shop"
    assert web.password == worker.password == PASSWORD, "Win32_Service.Change got the password intact"
    assert "SeServiceLogonRight" in host.logon_rights[named.sid], "granted through LsaAddAccountRights"
    assert host.advapi.policy_access == 0x0810
    assert host.acl.allows(ROOT + "\\shared\\logs", named.sid, "M")
    assert host.acl.allows(ROOT + "\\releases\\v1.0.0\\uploads", named.sid, "M")
    assert not host.acl.allows(ROOT + "\\shared\\logs", windows.service_sid("sgp-api"), "M"), "no virtual account"
    assert not any(c.argv[:1] == ["set"] and "ObjectName" in c.argv for c in host.natives if c.exe == "nssm.exe")

    out = deploy(named, bundles["1.0.1"])
    assert out.after == "1.0.1" and named.get()["version"] == "1.0.1"
    out = deploy(named, bundles["1.0.1"])
    assert out.status.value == "noop", "the account (set again with its password) counts as no change"
    assert [a for _n, a, _p in host.account_changes] == [".\\svc shop"] * len(host.account_changes)
    _nowhere_but_stdin(named, PASSWORD, caplog)


def test_a_wrong_password_fails_the_start_and_the_message_does_not_hold_it(named, bundles, caplog):
    named.host.accounts["win1\\svc shop"]["password"] = "the real one"
    with pytest.raises(DeployError) as e:
        deploy(named, bundles["1.0.0"])
    assert "logon failure (1069)" in str(e.value) and PASSWORD not in str(e.value), str(e.value)
    assert named.host.nssm.services["sgp-api"].state == "STOPPED"
    _nowhere_but_stdin(named, PASSWORD, caplog)


def test_an_account_the_host_does_not_know_stops_before_any_service_changes(named, bundles):
    named.host.accounts.clear()
    with pytest.raises(DeployError, match="no account WIN1\\\\svc shop on this host"):
        deploy(named, bundles["1.0.0"])
    assert named.host.nssm.services == {}


def test_a_gmsa_runs_the_services_without_a_password(tmp_path, win, bundles):
    extra = "    run_as: 'CORP\\shop-gmsa$'\n"
    w = Win(tmp_path, win.host, inventory(tmp_path, win.port, extra), win.port)
    sid = w.host.add_account("CORP\\shop-gmsa$")
    out = deploy(w, bundles["1.0.0"])
    assert out.status.value == "ok" and w.get()["version"] == "1.0.0", out
    web = w.host.nssm.services["sgp-api"]
    assert web.get("ObjectName") == "CORP\\shop-gmsa$" and web.password is None
    assert {p for _n, _a, p in w.host.account_changes} == {None}, "StartPassword left out"
    assert "SeServiceLogonRight" in w.host.logon_rights[sid]
    installs = [
        s[len(windows.PRELUDE) :] for s in w.host.scripts if "\nSet-ServiceAccount " in s[len(windows.PRELUDE) :]
    ]
    assert installs and not any(s.startswith("$SgpfabStdin") for s in installs), "no stdin for a gMSA"


def test_a_missing_password_secret_stops_every_task_before_it_connects(tmp_path, monkeypatch):
    from contextlib import ExitStack

    import sgpfab.runner as runner

    monkeypatch.delenv("SGPFAB_SECRET_SHOP_SVC_PASSWORD", raising=False)
    monkeypatch.setenv("SGPFAB_SECRETS_FILE", str(tmp_path / "none.yaml"))
    monkeypatch.setattr(runner, "open_transport", lambda *a: pytest.fail("connected"))
    extra = "    run_as: 'CORP\\svc'\n    run_as_password: {secret: shop_svc_password}\n"
    inv = inventory(tmp_path, 8000, extra)
    fleet = runner.Fleet.select(inv, "shop", "win1")
    with pytest.raises(InputError) as e, ExitStack() as stack:
        runner.open_sessions(stack, fleet)
    msg = str(e.value)
    assert msg.startswith("win1: secret 'shop_svc_password' (for run_as_password) is not set") and "\n" not in msg
    assert "SGPFAB_SECRET_SHOP_SVC_PASSWORD" in msg
