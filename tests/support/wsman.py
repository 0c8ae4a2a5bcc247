"""A WS-Man endpoint in a function, for pywinrm's Protocol (its transport's `send_message`
replaced, as pywinrm's own tests do): real Protocol code builds every SOAP envelope, this reads
them like a Windows host's WinRM service and answers with canned WS-Man XML.

It records what a host would see: the shell options (WINRS_CODEPAGE, WINRS_NOPROFILE), each
command's options (WINRS_CONSOLEMODE_STDIN, WINRS_SKIP_CMD_SHELL) and command line, the
-EncodedCommand script, the stdin bytes, and every envelope's size (refused above
MaxEnvelopeSizekb). `handler(script, stdin)` returns (stdout, stderr, exit code).
"""

from __future__ import annotations

import base64
import uuid

import xmltodict

SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"


def _options(header) -> dict[str, str]:
    opts = (header.get("w:OptionSet") or {}).get("w:Option") or []
    if isinstance(opts, dict):
        opts = [opts]
    return {o["@Name"]: o.get("#text", "") for o in opts}


class FakeWinRM:
    def __init__(self, handler, max_envelope_kb: int = 150):
        self.handler, self.max_envelope = handler, max_envelope_kb * 1024
        self.shells: list[dict] = []
        self.commands: dict[str, dict] = {}
        self.envelopes: list[int] = []
        self.sends: list[int] = []

    def __call__(self, message: str) -> bytes:
        size = len(message.encode())
        self.envelopes.append(size)
        assert size <= self.max_envelope, f"envelope of {size} bytes is larger than MaxEnvelopeSizekb"
        env = xmltodict.parse(message)["env:Envelope"]
        header = env["env:Header"]
        action = header["a:Action"]["#text"].rsplit("/", 1)[-1]
        mid = header["a:MessageID"]
        body = env.get("env:Body") or {}
        if action == "Create":
            shell_id = f"SHELL-{len(self.shells) + 1}"
            self.shells.append({"id": shell_id, "options": _options(header), "shell": body.get("rsp:Shell")})
            return self._reply(
                mid, f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            )
        if action == "Command":
            cmd = body["rsp:CommandLine"]
            cid = str(uuid.uuid4())
            args = cmd.get("rsp:Arguments") or ""
            args = args.split() if isinstance(args, str) else list(args)
            script = base64.b64decode(args[args.index("-EncodedCommand") + 1]).decode("utf-16-le")
            self.commands[cid] = {
                "exe": cmd["rsp:Command"],
                "args": args,
                "script": script,
                "stdin": b"",
                "ended": False,
                "options": _options(header),
            }
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
            c["result"] = (out, err, code)
            b64 = lambda b: base64.b64encode(b).decode()
            return self._reply(
                mid,
                f'<rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="{cid}">{b64(out)}</rsp:Stream>'
                f'<rsp:Stream Name="stderr" CommandId="{cid}">{b64(err)}</rsp:Stream>'
                f'<rsp:CommandState CommandId="{cid}" State="{SHELL_NS}/CommandState/Done">'
                f"<rsp:ExitCode>{code}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>",
            )
        if action in ("Signal", "Delete"):
            return self._reply(mid, "")
        raise AssertionError(f"unexpected action {action}")

    @staticmethod
    def _reply(message_id, body) -> bytes:
        return (
            f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            f'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
            f'xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="{SHELL_NS}">'
            f"<s:Header><a:RelatesTo>{message_id}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
        ).encode()


def clixml_error(message: str) -> bytes:
    """What powershell.exe writes to stderr for an unhandled error when its output is not a
    console (an error record as CLIXML; line breaks as _x000D__x000A_)."""
    text = (
        message.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r\n", "\n")
        .replace("\n", "_x000D__x000A_")
    )
    return (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f'<S S="Error">{text}_x000D__x000A_</S></Objs>'
    ).encode()
