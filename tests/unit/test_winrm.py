"""The WinRM conversation, with pywinrm's transport stubbed by a small WS-Man responder (as
pywinrm's own tests do): real Protocol code builds and parses every SOAP message."""

import base64
import gzip
import hashlib
import re
import uuid

import pytest
import xmltodict
from winrm.protocol import Protocol

from sgpfab.errors import RemoteError
from sgpfab.inventory import Host
from sgpfab.transport.winrm import BOOTSTRAP, WinRMTransport, chunk_size, encode_command

SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"


class FakeWinRM:
    """Answers WS-Man requests like a Windows host would, running `handler(script, stdin)`."""

    def __init__(self, handler, max_envelope_kb=150):
        self.handler, self.max_envelope = handler, max_envelope_kb * 1024
        self.commands: dict[str, dict] = {}
        self.envelopes: list[int] = []
        self.sends: list[int] = []

    def __call__(self, message):
        self.envelopes.append(len(message.encode()))
        assert len(message.encode()) <= self.max_envelope, "envelope larger than MaxEnvelopeSizekb"
        env = xmltodict.parse(message)["env:Envelope"]
        action = env["env:Header"]["a:Action"]["#text"].rsplit("/", 1)[-1]
        mid = env["env:Header"]["a:MessageID"]
        body = env.get("env:Body") or {}
        if action == "Create":
            return self._reply(mid, '<w:SelectorSet><w:Selector Name="ShellId">SHELL-1</w:Selector></w:SelectorSet>')
        if action == "Command":
            cmd = body["rsp:CommandLine"]
            cid = str(uuid.uuid4())
            args = cmd.get("rsp:Arguments") or []
            args = args.split() if isinstance(args, str) else args
            script = base64.b64decode(args[args.index("-EncodedCommand") + 1]).decode("utf-16-le")
            self.commands[cid] = {"exe": cmd["rsp:Command"], "args": args, "script": script, "stdin": b"", "ended": False}
            return self._reply(mid, f"<rsp:CommandResponse><rsp:CommandId>{cid}</rsp:CommandId></rsp:CommandResponse>")
        if action == "Send":
            stream = body["rsp:Send"]["rsp:Stream"]
            c = self.commands[stream["@CommandId"]]
            assert not c["ended"], "stdin sent after it was closed"
            data = base64.b64decode(stream.get("#text") or "")
            self.sends.append(len(data))
            c["stdin"] += data
            c["ended"] = stream["@End"] == "true"
            return self._reply(mid, "<rsp:SendResponse/>")
        if action == "Receive":
            cid = body["rsp:Receive"]["rsp:DesiredStream"]["@CommandId"]
            c = self.commands[cid]
            assert c["ended"], "output requested before stdin was closed"
            out, err, code = self.handler(c["script"], c["stdin"])
            b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
            return self._reply(mid, f'<rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="{cid}">{b64(out)}</rsp:Stream>'
                                    f'<rsp:Stream Name="stderr" CommandId="{cid}">{b64(err)}</rsp:Stream>'
                                    f'<rsp:CommandState CommandId="{cid}" State="{SHELL_NS}/CommandState/Done">'
                                    f"<rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>")
        if action in ("Signal", "Delete"):
            return self._reply(mid, "")
        raise AssertionError(f"unexpected action {action}")

    @staticmethod
    def _reply(message_id, body):
        return (f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
                f'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
                f'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="{SHELL_NS}">'
                f"<s:Header><a:RelatesTo>{message_id}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>").encode()


def windows_host(**kw):
    return Host.model_validate({"name": "win1", "os": "windows", "api_root": "C:\\api", "user": "deployer",
                                "run_as": "sgpsvc", **kw})


def transport(handler, **kw):
    host = windows_host(**kw)
    fake = FakeWinRM(handler, host.winrm_max_envelope_kb)
    p = Protocol("https://win1:5986/wsman", transport="ntlm", username="u", password="secret-pw")
    p.transport.send_message = fake
    t = WinRMTransport(host, protocol=p)
    t.open()
    return t, fake


def test_scripts_go_through_stdin_not_the_command_line():
    seen = {}

    def handler(script, stdin):
        seen.update(script=script, stdin=stdin.decode())
        return b"hello from windows\r\n", b"", 0

    t, fake = transport(handler)
    long_script = "Write-Output 'x'\n" * 2000  # ~34 kB: far over cmd.exe's 8191 characters
    r = t.run(long_script)
    assert r.ok and r.stdout.startswith("hello from windows")
    assert seen["script"] == BOOTSTRAP, "the command line only carries the short bootstrap"
    assert seen["stdin"].endswith(long_script) and "$ErrorActionPreference = 'Stop'" in seen["stdin"]
    cmd = next(iter(fake.commands.values()))
    assert cmd["exe"] == "powershell.exe" and sum(len(a) for a in cmd["args"]) < 8191
    assert len(fake.sends) >= 1 and max(fake.sends) <= chunk_size(150)
    t.close()


def test_a_failing_script_raises_with_the_error_text_and_no_credentials():
    clixml = ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
              '<S S="Error">nssm.exe exited with code 5_x000D__x000A_</S></Objs>').encode()
    t, _ = transport(lambda script, stdin: (b"", clixml, 1))
    with pytest.raises(RemoteError) as e:
        t.run("Invoke-Checked 'nssm.exe' @('restart', 'sgp-api')")
    assert str(e.value) == "win1: exit 1: nssm.exe exited with code 5"
    assert "secret-pw" not in str(e.value)
    assert t.run("x", check=False).exited == 1


def receiver(files, corrupt_times=0):
    """Acts as the upload receiver: reassembles the base64 lines, gunzips, checks the SHA-256."""
    state = {"corrupt": corrupt_times, "calls": 0}

    def handler(script, stdin):
        state["calls"] += 1
        dest = re.search(r"\$dest = '((?:[^']|'')*)'", script).group(1).replace("''", "'")
        want = re.search(r"\$want = '([0-9a-f]{64})'", script).group(1)
        lines = stdin.decode("ascii").splitlines()
        data = gzip.decompress(b"".join(base64.b64decode(x) for x in lines if x))
        if state["corrupt"]:
            state["corrupt"] -= 1
            data = data[:-1] + bytes([data[-1] ^ 1])
        if hashlib.sha256(data).hexdigest() != want:
            return b"", b"checksum mismatch", 3
        files[dest] = data
        return b"", b"", 0
    return handler, state


@pytest.mark.parametrize("envelope_kb", [150, 64])
def test_chunked_upload_fits_the_envelope_and_arrives_whole(tmp_path, envelope_kb):
    import os
    payload = os.urandom(400_000)  # incompressible: several chunks
    src = tmp_path / "app.tar.gz"
    src.write_bytes(payload)
    files = {}
    handler, state = receiver(files)
    t, fake = transport(handler, winrm_max_envelope_kb=envelope_kb)
    t.put(src, "C:\\api\\incoming\\v1.0.0\\it's app.tar.gz")
    assert files == {"C:\\api\\incoming\\v1.0.0\\it's app.tar.gz": payload}
    assert len(fake.sends) >= 4 and max(fake.envelopes) <= envelope_kb * 1024
    assert max(fake.sends) <= chunk_size(envelope_kb) * 4 // 3 + 1
    script = next(iter(fake.commands.values()))["script"]
    assert "Move-Item -Force -LiteralPath $tmp -Destination $dest" in script
    assert script.index("Get-FileHash") < script.index("Move-Item"), "checked before it is moved into place"
    assert len(encode_command(script)) < 8000


def test_a_corrupted_upload_is_retried_then_reported(tmp_path):
    src = tmp_path / "manifest.json"
    src.write_bytes(b'{"version": "1.0.0"}')
    files = {}
    handler, state = receiver(files, corrupt_times=1)
    t, _ = transport(handler)
    t.put(src, "C:\\api\\incoming\\manifest.json")
    assert state["calls"] == 2 and files["C:\\api\\incoming\\manifest.json"] == src.read_bytes()

    files.clear()
    handler, state = receiver(files, corrupt_times=99)
    t, _ = transport(handler)
    with pytest.raises(RemoteError, match="arrived corrupted"):
        t.put(src, "C:\\api\\incoming\\manifest.json")
    assert state["calls"] == 3 and files == {}, "nothing is moved into place"


def test_read_file_decodes_base64():
    t, _ = transport(lambda script, stdin: (base64.b64encode(b"\x00binary\xff") + b"\r\n", b"", 0))
    assert t.read_file("C:\\api\\x.bin") == b"\x00binary\xff"


def test_sync_sends_only_changed_files_and_deletes_extras(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "same.txt").write_text("same")
    (tmp_path / "src" / "sub" / "new.txt").write_text("new")
    same = hashlib.sha256(b"same").hexdigest()
    files, deleted = {}, []
    upload, _ = receiver(files)

    def handler(script, stdin):
        if script == BOOTSTRAP:
            text = stdin.decode()
            if "Get-ChildItem" in text:
                return f"same.txt {same}\r\nold.txt {'0' * 64}\r\n".encode(), b"", 0
            deleted.extend(re.findall(r"'([^']+)'", text.split("foreach")[1]))
            return b"", b"", 0
        return upload(script, stdin)

    t, _ = transport(handler)
    assert t.sync(str(tmp_path / "src"), "C:\\api\\releases\\x") == "sent 1 of 2 files"
    assert list(files) == ["C:\\api\\releases\\x\\sub\\new.txt"]
    assert deleted == ["C:\\api\\releases\\x\\old.txt"]


def test_credentials_come_from_the_environment_and_are_required(monkeypatch):
    from sgpfab.errors import InputError
    from sgpfab.transport.winrm import credentials
    monkeypatch.delenv("SGPFAB_WINRM_PASSWORD", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "keyring", None)
    with pytest.raises(InputError, match="no WinRM credentials"):
        credentials(windows_host())
    monkeypatch.setenv("SGPFAB_WINRM_USER", "CORP\\deployer")
    monkeypatch.setenv("SGPFAB_WINRM_PASSWORD", "pw")
    assert credentials(windows_host()) == ("CORP\\deployer", "pw")


def test_protocol_validates_certificates_by_default(monkeypatch):
    from sgpfab.transport.winrm import make_protocol
    monkeypatch.setenv("SGPFAB_WINRM_PASSWORD", "pw")
    p = make_protocol(windows_host(hostname="win1.corp.example"))
    assert p.server_cert_validation == "validate" and p.transport.endpoint == "https://win1.corp.example:5986/wsman"
    with pytest.raises(Exception, match="basic authentication is only allowed over HTTPS"):
        windows_host(winrm_transport="basic", winrm_https=False)


def test_a_host_session_on_winrm_prepares_the_host_and_reads_its_state():
    """The deploy logic's own calls, unchanged, over WinRM: PowerShell steps and the helper upload."""
    import json

    from sgpfab.session import HOSTCTL_SOURCE, HostSession

    files, scripts = {}, []
    upload, _ = receiver(files)

    def handler(script, stdin):
        if script != BOOTSTRAP:
            return upload(script, stdin)
        text = stdin.decode()
        scripts.append(text)
        if "'--root', 'C:\\api', 'state')" in text:
            return json.dumps({"current": "v1.0.0", "releases": [{"name": "v1.0.0", "complete": True,
                                                                   "bad": False}], "partials": []}).encode(), b"", 0
        return b"", b"", 0  # prepare_dirs, and no hostctl.py on the host yet (empty SHA-256)

    t, _ = transport(handler)
    s = HostSession(t, say=lambda *_: None)
    s.prepare()
    assert files == {"C:\\api\\.sgpfab\\hostctl.py": HOSTCTL_SOURCE.read_bytes()}, "serve.py is for Linux only"
    assert "New-Item -ItemType Directory -Force -Path $d" in scripts[0]
    assert "icacls.exe' @('C:\\api\\shared', '/grant', 'sgpsvc:(OI)(CI)M'" in scripts[0]
    st = s.state()
    assert st.current == "v1.0.0" and [r.name for r in st.complete] == ["v1.0.0"]
    assert "Invoke-Checked 'python3' @('C:\\api\\.sgpfab\\hostctl.py', '--root', 'C:\\api', 'state')" in scripts[-1]
