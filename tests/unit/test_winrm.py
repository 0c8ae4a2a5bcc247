"""The WinRM conversation, with pywinrm's transport stubbed by a WS-Man responder
(support.wsman.FakeWinRM, as pywinrm's own tests do): pywinrm's real Protocol builds and parses
every SOAP message; the tests read what a Windows host would receive."""

import base64
import gzip
import hashlib
import inspect
import os
import re

import pytest
from support.pslit import literals, parse_literal
from support.wsman import FakeWinRM, clixml_error
from winrm.protocol import Protocol

from sgpfab import windows
from sgpfab.errors import RemoteError
from sgpfab.inventory import Host
from sgpfab.transport.winrm import (
    BOOTSTRAP,
    WinRMTransport,
    _clean_stderr,
    chunk_size,
    encode_command,
)


def windows_host(**kw):
    return Host.model_validate({"name": "win1", "os": "windows", "user": "deployer", **kw})


def transport(handler, **kw):
    host = windows_host(**kw)
    fake = FakeWinRM(handler, host.winrm_max_envelope_kb)
    p = Protocol("https://win1:5986/wsman", transport="ntlm", username="u", password="secret-pw")
    p.transport.send_message = fake
    t = WinRMTransport(host, protocol=p)
    t.open()
    return t, fake


def test_pywinrm_has_the_parameters_sgpfab_uses():
    """pywinrm 0.5: open_shell(..., codepage=437, ...) and run_command(..., console_mode_stdin=True,
    skip_cmd_shell=False) (winrm/protocol.py)."""
    assert inspect.signature(Protocol.open_shell).parameters["codepage"].default == 437
    assert inspect.signature(Protocol.run_command).parameters["console_mode_stdin"].default is True


def test_the_shell_is_utf8_and_stdin_is_a_pipe():
    t, fake = transport(lambda script, stdin: (b"ok\r\n", b"", 0))
    t.run("Get-NssmVersion\n")
    (shell,) = fake.shells
    assert shell["options"] == {"WINRS_NOPROFILE": "TRUE", "WINRS_CODEPAGE": "65001"}
    (cmd,) = fake.commands.values()
    assert cmd["options"]["WINRS_CONSOLEMODE_STDIN"] == "FALSE"
    assert cmd["exe"] == "powershell.exe"
    assert cmd["args"][:5] == ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand"]


def test_scripts_go_through_stdin_not_the_command_line():
    seen = {}

    def handler(script, stdin):
        seen.update(script=script, stdin=stdin.decode())
        return "hello from windows \u2713\r\n".encode(), b"", 0

    t, fake = transport(handler)
    long_script = "Get-NssmVersion\n" * 3000  # ~48 kB: far over cmd.exe's 8191 characters
    r = t.run(long_script)
    assert r.ok and r.stdout.startswith("hello from windows \u2713"), "output decoded as UTF-8"
    assert seen["script"] == BOOTSTRAP, "the command line only carries the short bootstrap"
    assert seen["stdin"] == windows.PRELUDE + long_script
    cmd = next(iter(fake.commands.values()))
    assert sum(len(a) + 1 for a in cmd["args"]) + len("powershell.exe") < 8191
    assert len(fake.sends) >= 1 and max(fake.sends) <= chunk_size(150)


def test_stdin_data_reaches_the_script_as_sgpfab_stdin():
    seen = {}

    def handler(script, stdin):
        seen["text"] = stdin.decode("utf-8")
        return b"", b"", 0

    t, _ = transport(handler)
    data = '{"env": {"GREETING": "gr\u00fc\u00df \u2019 \\" $(x)"}}'.encode()
    t.run("Invoke-Checked 'python.exe' @('x.py') -Stdin $SgpfabStdin\n", stdin=data)
    text = seen["text"]
    assert text.startswith(windows.PRELUDE)
    line = text[len(windows.PRELUDE) :].splitlines()[0]
    m = re.fullmatch(
        r"\$SgpfabStdin = \[Text\.Encoding\]::UTF8\.GetString\(\[Convert\]::FromBase64String\(('.*')\)\)", line
    )
    assert m and base64.b64decode(parse_literal(m.group(1))[0]) == data
    assert "GREETING" not in text, "the data itself appears nowhere in the script"


def test_a_failing_script_raises_with_the_error_text_and_no_credentials():
    t, _ = transport(
        lambda script, stdin: (b"", b"uv: warning: x\r\n" + clixml_error("nssm.exe exited with code 5"), 1)
    )
    with pytest.raises(RemoteError) as e:
        t.run("Invoke-Checked 'nssm.exe' @('set', 'sgp-api')\n")
    assert "nssm.exe exited with code 5" in str(e.value) and "CLIXML" not in str(e.value)
    assert "secret-pw" not in str(e.value)
    assert t.run("x\n", check=False).exited == 1


def test_clixml_is_cleaned_and_plain_stderr_kept():
    assert _clean_stderr(clixml_error("a <b> & c\nline 2")) == "a <b> & c\nline 2\n"
    assert _clean_stderr(b"plain\r\n" + clixml_error("boom")) == "plain\nboom\n"
    assert _clean_stderr(b"only plain") == "only plain"


def receiver(files, corrupt_times=0):
    """Acts as the upload receiver: reassembles the base64 lines, gunzips, checks the SHA-256."""
    state = {"corrupt": corrupt_times, "calls": 0}

    def handler(script, stdin):
        if script == BOOTSTRAP:
            return b"", b"", 0
        state["calls"] += 1
        dest, want = literals(script)[1:3]
        data = gzip.decompress(b"".join(base64.b64decode(x) for x in stdin.decode("ascii").splitlines() if x))
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
    payload = os.urandom(400_000)  # incompressible: several chunks
    src = tmp_path / "app.tar.gz"
    src.write_bytes(payload)
    files = {}
    handler, _state = receiver(files)
    t, fake = transport(handler, winrm_max_envelope_kb=envelope_kb)
    t.put(src, "C:\\api\\incoming\\v1.0.0\\it's \u2019app\u2019.tar.gz")
    assert files == {"C:\\api\\incoming\\v1.0.0\\it's \u2019app\u2019.tar.gz": payload}
    assert len(fake.sends) >= 4 and max(fake.envelopes) <= envelope_kb * 1024
    assert max(fake.sends) <= chunk_size(envelope_kb) * 4 // 3 + 1
    script = next(iter(fake.commands.values()))["script"]
    assert script.index("Get-FileHash") < script.index("[IO.File]::Replace"), "checked before it is moved into place"
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
    seen = []

    def handler(script, stdin):
        seen.append(stdin.decode())
        return base64.b64encode(b"\x00binary\xff") + b"\r\n", b"", 0

    t, _ = transport(handler)
    assert t.read_file("C:\\api\\it's.bin") == b"\x00binary\xff"
    assert seen[0].endswith("Read-FileBase64 'C:\\api\\it''s.bin'\n")


def test_sync_sends_only_changed_files_and_deletes_extras(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "same.txt").write_text("same")
    (tmp_path / "src" / "sub" / "new.txt").write_text("new")
    same = hashlib.sha256(b"same").hexdigest()
    files, deleted = {}, []
    upload, _ = receiver(files)

    def handler(script, stdin):
        if script == BOOTSTRAP:
            body = stdin.decode()[len(windows.PRELUDE) :]
            if body.startswith("Get-TreeHashes "):
                return f"same.txt {same}\r\nold.txt {'0' * 64}\r\n".encode(), b"", 0
            assert body.startswith("Remove-Files @(")
            deleted.extend(literals(body))
            return b"", b"", 0
        return upload(script, stdin)

    t, _ = transport(handler)
    stats = t.sync(str(tmp_path / "src"), "C:\\api\\releases\\x")
    assert (stats.files_sent, list(files)) == (1, ["C:\\api\\releases\\x\\sub\\new.txt"])
    assert deleted == ["C:\\api\\releases\\x\\old.txt"]


def test_stream_hands_over_each_line():
    t, _ = transport(lambda script, stdin: (b"web: a\r\nweb: b\r\n", b"", 0))
    lines = []
    assert t.stream("Get-LogTail 'x' 2 'web: '\n", lines.append) == 0
    assert lines == ["web: a", "web: b"]


def test_credentials_come_from_the_environment_and_are_required(monkeypatch):
    from sgpfab.errors import InputError
    from sgpfab.transport.winrm import credentials

    monkeypatch.delenv("SGPFAB_WINRM_PASSWORD", raising=False)
    monkeypatch.delenv("SGPFAB_WINRM_USER", raising=False)
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
