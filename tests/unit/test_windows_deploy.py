"""A whole deploy, rollback and failed deploy to a Windows host, through the real deploy logic,
the real WinRM transport (pywinrm's Protocol with a stubbed WS-Man endpoint) and the real
hostctl, against a stand-in Windows host: C:\\api is a temporary directory, hostctl calls are
run for real with this machine's Python, the service is a small HTTP server answering /health
with the active release's APP_VERSION, and every other PowerShell step is recognised by its
shape and acted out. A script the stand-in does not recognise fails the test.

What this does NOT show: that PowerShell, NSSM or NTFS junctions behave as the scripts expect."""

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
from ps_literals import literals
from test_winrm import FakeWinRM
from winrm.protocol import Protocol

from sgpfab.bundle import build
from sgpfab.deploy import Plan, deploy_host
from sgpfab.errors import DeployError
from sgpfab.inventory import AppSettings, Host
from sgpfab.ops import rollback_host
from sgpfab.remote import hostctl
from sgpfab.session import HostSession
from sgpfab.transport.winrm import BOOTSTRAP, WinRMTransport
from sgpfab.versions import Version
from sgpfab.windows import PRELUDE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sgp_api"
ROOT = "C:\\api"


class FakeWindowsHost:
    def __init__(self, tmp: Path, port: int):
        self.base, self.port = tmp / "C", port
        self.base.mkdir()
        self.log: list[str] = []
        self.server = None
        self.service_running = False
        self.broken_versions: set[str] = set()

    def local(self, winpath: str) -> Path:
        assert winpath.startswith("C:\\"), winpath
        return self.base.joinpath(*winpath[3:].split("\\"))

    # -- the service: an HTTP server answering as the active release ----------------------------
    def start_service(self):
        env = (self.local(ROOT + "\\releases\\current") / ".env").read_text()
        version = re.search(r"^APP_VERSION=(.*)$", env, re.M).group(1)
        self.stop_service()
        if version in self.broken_versions:
            return  # crashes at start: nothing listens
        body = json.dumps({"status": "ok", "version": version}).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.service_running = True

    def stop_service(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.service_running = False

    # -- PowerShell, by shape --------------------------------------------------------------------
    def __call__(self, script: str, stdin: bytes):
        if script != BOOTSTRAP:
            return self.receive_upload(script, stdin)
        text = stdin.decode()
        assert text.startswith(PRELUDE), "every script runs after the prelude"
        body = text[len(PRELUDE):]
        for handler in (self.hostctl, self.sha256, self.exists, self.listing, self.dirs, self.which_uv,
                        self.build_venv, self.env_file, self.remove, self.service, self.logs, self.nssm, self.noop):
            result = handler(body)
            if result is not None:
                self.log.append(handler.__name__)
                out, code = result
                return out.encode(), b"" if code == 0 else b"error", code
        raise AssertionError(f"the stand-in does not know this script:\n{body}")

    def receive_upload(self, script, stdin):
        dest = literals(script)[1]
        want = literals(script)[2]
        data = gzip.decompress(b"".join(base64.b64decode(x) for x in stdin.decode().splitlines() if x))
        if hashlib.sha256(data).hexdigest() != want:
            return b"", b"checksum mismatch", 3
        path = self.local(dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.log.append("upload " + dest)
        return b"", b"", 0

    def hostctl(self, body):
        if "hostctl.py', '--root'" not in body:
            return None
        line = next(x for x in body.splitlines() if "hostctl.py', '--root'" in x)
        args = literals(line[line.index("@("):])
        assert args[0] == ROOT + "\\.sgpfab\\hostctl.py"
        args = [str(self.local(a)) if a.startswith("C:\\") else a for a in args[1:]]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = hostctl.main(args)
        return out.getvalue() + ("\n0" if "'health'" in body else ""), code

    def sha256(self, body):
        if "Get-FileHash -Algorithm SHA256 -LiteralPath" not in body or "Get-ChildItem" in body:
            return None
        p = self.local(literals(body)[0])
        return (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""), 0

    def exists(self, body):
        if not body.rstrip().endswith("{ 'yes' }"):
            return None
        return ("yes" if self.local(literals(body)[0]).is_file() else ""), 0

    def listing(self, body):
        if "Get-ChildItem -LiteralPath $root -Recurse -File" in body:
            root = self.local(literals(body)[0])
            root.mkdir(parents=True, exist_ok=True)
            lines = [f"{p.relative_to(root).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}"
                     for p in root.rglob("*") if p.is_file()]
            return "\n".join(lines), 0
        if "Get-ChildItem -LiteralPath" in body and "-Name" in body:
            p = self.local(literals(body)[0])
            return ("\n".join(sorted(x.name for x in p.iterdir())) if p.is_dir() else ""), 0
        return None

    def dirs(self, body):
        if not body.startswith("foreach ($d in @(") and "New-Item -ItemType Directory -Force -Path $" not in body:
            return None
        if "Remove-Item -LiteralPath" in body:
            return None  # stage_dir: handled by remove()
        for d in literals(body.split("{")[0]):
            self.local(d).mkdir(parents=True, exist_ok=True)
        assert "icacls.exe' @('C:\\api\\shared', '/grant', 'sgpsvc:(OI)(CI)M'" in body
        return "", 0

    def which_uv(self, body):
        return ("C:\\tools\\uv.exe", 0) if "Get-Command uv.exe" in body else None

    def build_venv(self, body):
        if "'venv', '--quiet', '--relocatable'" not in body:
            return None
        d = self.local(literals(body)[3])  # Set-Location -LiteralPath '<partial>'
        (d / ".venv" / "Scripts").mkdir(parents=True)
        (d / ".venv" / "Scripts" / "python.exe").write_text("fake")
        return "", 0

    def env_file(self, body):
        if not body.startswith("Set-Content -LiteralPath"):
            return None
        values = literals(body)
        path, lines = values[0], values[1:values.index("icacls.exe")]
        self.local(path).write_text("\n".join(lines) + "\n")
        assert "/inheritance:r" in body
        return "", 0

    def remove(self, body):
        if "Remove-Item -LiteralPath" in body and "-Recurse -Force" in body:
            p = self.local(literals(body)[0])
            shutil.rmtree(p, ignore_errors=True)
            if "New-Item -ItemType Directory" in body:  # stage_dir
                p.mkdir(parents=True)
            return "", 0
        if "[System.IO.Directory]::Delete(" in body:
            p = self.local(literals(body)[0])
            if p.is_symlink():
                p.unlink()
            return "", 0
        return None

    def service(self, body):
        if "Start-Service -Name 'sgp-api'" in body:
            assert "Wait-NotPending" in body or "Wait-ServiceState 'sgp-api' 'Running'" in body
            self.start_service()
            return "", 0
        if "Stop-Service -Name 'sgp-api'" in body:
            self.stop_service()
            return "", 0
        if "Get-Service -Name 'sgp-api' -ErrorAction SilentlyContinue" in body and "ToLower()" in body:
            return ("running" if self.service_running else "stopped"), 0
        return None

    def logs(self, body):
        if "Get-Content -LiteralPath 'C:\\api\\shared\\logs\\sgp-api.err.log' -Tail" not in body:
            return None
        return "RuntimeError: this release cannot start", 0

    def nssm(self, body):
        if "Invoke-Checked 'nssm.exe'" not in body:
            return None
        assert "'AppDirectory', 'C:\\api\\releases\\current'" in body
        return "", 0

    def noop(self, body):
        return ("", 0) if body.strip() == "$null" else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def windows(tmp_path, monkeypatch):
    port = free_port()
    fake_host = FakeWindowsHost(tmp_path, port)
    host = Host.model_validate({"name": "win1", "os": "windows", "api_root": ROOT, "user": "deployer",
                                "run_as": "sgpsvc", "port": port, "health_timeout": 5})
    p = Protocol("https://win1:5986/wsman", transport="ntlm", username="u", password="pw")
    p.transport.send_message = FakeWinRM(fake_host)
    t = WinRMTransport(host, protocol=p)
    t.open()
    yield HostSession(t, say=lambda *_: None), fake_host
    fake_host.stop_service()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    app = AppSettings(platforms=["win_amd64", "manylinux2014_x86_64"])
    src = tmp_path_factory.mktemp("src") / "app"
    shutil.copytree(EXAMPLE, src)
    return {v: build(src, Version.parse(v), app, dist, say=lambda *_: None) for v in ("1.0.0", "1.0.1")}


def plan(b):
    return Plan(b, uv=lambda host_os: pytest.fail("uv is on the host"), migrate=None)


def test_deploy_upgrade_and_rollback_on_a_windows_host(windows, bundles):
    s, host = windows
    out = deploy_host(s, plan(bundles["1.0.0"]))
    assert out.ok and out.after == "1.0.0"
    current = host.local(ROOT + "\\releases\\current")
    assert current.resolve().name == "v1.0.0"
    assert (current / "main.py").read_bytes() == (EXAMPLE / "main.py").read_bytes()
    assert "API_ROOT=C:\\api" in (current / ".env").read_text()
    assert host.service_running and "nssm" in host.log

    out = deploy_host(s, plan(bundles["1.0.1"]))
    assert out.ok and current.resolve().name == "v1.0.1"

    out = rollback_host(s, None)
    assert out.ok and out.after == "1.0.0" and current.resolve().name == "v1.0.0"
    assert [r.name for r in s.state().complete] == ["v1.0.0", "v1.0.1"]


def test_a_windows_release_that_does_not_answer_is_rolled_back(windows, bundles):
    s, host = windows
    deploy_host(s, plan(bundles["1.0.0"]))
    host.broken_versions.add("1.0.1")
    with pytest.raises(DeployError, match="rolled back to v1.0.0 \\(healthy\\)") as e:
        deploy_host(s, plan(bundles["1.0.1"]))
    assert "RuntimeError: this release cannot start" in str(e.value), "the service's last log lines"
    assert host.local(ROOT + "\\releases\\current").resolve().name == "v1.0.0"
    state = s.state()
    assert state.get(Version.parse("1.0.1")).bad
    assert not host.local(ROOT + "\\.sgpfab\\lock").exists(), "the lock was released"
