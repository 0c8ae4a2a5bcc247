"""WinRM transport (pywinrm): run PowerShell, upload files in checked chunks, read files.

- Scripts never go on the command line (cmd.exe's 8191-character limit): a short bootstrap,
  passed as -EncodedCommand, reads the script from stdin and runs it.
- Uploads: the file is gzip-compressed, sent as base64 lines through stdin in chunks sized so
  that each WS-Man envelope stays under the server's MaxEnvelopeSizekb, written to a temp file,
  decompressed, checked against the SHA-256 computed here, and only then moved into place.
  A mismatch is retried (tenacity) and finally reported; the target file is never half-written.
- Certificate validation is on unless the inventory turns it off; credentials come from the
  environment or the keyring and are never logged or put in error messages.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..errors import InputError, RemoteError
from ..windows import PRELUDE, q

if TYPE_CHECKING:
    from winrm.protocol import Protocol

    from ..inventory import Host, Inventory
from .base import Result, SyncStats, Transport
from .rsync import ProgressFn

log = logging.getLogger(__name__)
ENVELOPE_OVERHEAD = 4096  # bytes of SOAP around the stdin payload, with room to spare

BOOTSTRAP = (
    "$ms = New-Object IO.MemoryStream; [Console]::OpenStandardInput().CopyTo($ms); "
    "$s = [Text.Encoding]::UTF8.GetString($ms.ToArray()); "
    "& ([ScriptBlock]::Create($s)); exit $LASTEXITCODE"
)

RECEIVER = """$ErrorActionPreference = 'Stop'
$dest = {dest}; $want = {sha}
[IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName($dest)) | Out-Null
$gzPath = $dest + '.sgpfab-upload.gz'; $tmp = $dest + '.sgpfab-upload'
$out = [IO.File]::Create($gzPath)
while ($null -ne ($line = [Console]::In.ReadLine())) {{
  if ($line.Length) {{ $b = [Convert]::FromBase64String($line); $out.Write($b, 0, $b.Length) }}
}}
$out.Close()
$src = [IO.File]::OpenRead($gzPath)
$gz = New-Object IO.Compression.GZipStream($src, [IO.Compression.CompressionMode]::Decompress)
$o = [IO.File]::Create($tmp); $gz.CopyTo($o); $o.Close(); $gz.Close(); $src.Close()
Remove-Item -LiteralPath $gzPath
$got = (Get-FileHash -Algorithm SHA256 -LiteralPath $tmp).Hash.ToLower()
if ($got -ne $want) {{ Remove-Item -LiteralPath $tmp; [Console]::Error.WriteLine('checksum mismatch: ' + $got); exit 3 }}
if ([IO.File]::Exists($dest)) {{ [IO.File]::Replace($tmp, $dest, [NullString]::Value) }} else {{ [IO.File]::Move($tmp, $dest) }}
"""


class ChecksumMismatch(RemoteError):
    pass


def stdin_prefix(data: bytes) -> str:
    """The line that gives a script its stdin data as the string $SgpfabStdin (UTF-8)."""
    return (
        "$SgpfabStdin = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String("
        + q(base64.b64encode(data).decode("ascii"))
        + "))\n"
    )


def encode_command(script: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of UTF-16LE."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def chunk_size(max_envelope_kb: int) -> int:
    """Raw bytes per stdin message: base64 twice (our line, then WS-Man's) is 16/9 of the raw size."""
    room = max_envelope_kb * 1024 - ENVELOPE_OVERHEAD
    return max(3, (room * 9 // 16) // 3 * 3)


def credentials(host: Host) -> tuple[str, str]:
    user = os.environ.get("SGPFAB_WINRM_USER") or host.user
    password = os.environ.get("SGPFAB_WINRM_PASSWORD")
    if password is None:
        try:
            import keyring  # optional

            password = keyring.get_password("sgpfab", host.name)
        except Exception:  # no keyring installed or no backend: fall through
            password = None
    if host.winrm_transport not in ("certificate", "kerberos") and (not user or password is None):
        raise InputError(
            f"{host.name}: no WinRM credentials: set SGPFAB_WINRM_USER and SGPFAB_WINRM_PASSWORD"
            " (or store the password in the keyring under service 'sgpfab')"
        )
    return user or "", password or ""


def make_protocol(host: Host) -> Protocol:
    from winrm.protocol import Protocol

    user, password = credentials(host)
    scheme = "https" if host.winrm_https else "http"
    kwargs: dict[str, Any] = dict(
        endpoint=f"{scheme}://{host.address}:{host.winrm_port}/wsman",
        transport=host.winrm_transport,
        username=user,
        password=password,
        server_cert_validation="validate" if host.winrm_cert_validation else "ignore",
        cert_pem=host.winrm_cert_pem,
        cert_key_pem=host.winrm_cert_key_pem,
    )
    if host.winrm_ca_trust_path:
        kwargs["ca_trust_path"] = host.winrm_ca_trust_path
    return Protocol(**kwargs)


class WinRMTransport(Transport):
    """Runs PowerShell on one Windows host; the same interface as SSHTransport."""

    def __init__(self, host: Host, inventory: Inventory | None = None, protocol: Protocol | None = None):
        self.host = host
        self.protocol: Any = protocol  # pywinrm's Protocol once open() ran (tests pass a double)
        self.shell_id: str | None = None
        self.bytes_sent = 0
        self.chunk = chunk_size(host.winrm_max_envelope_kb)

    @property
    def login_user(self) -> str:
        return os.environ.get("SGPFAB_WINRM_USER") or self.host.user or ""

    def _retrying(self, exc: tuple[type[BaseException], ...] = (Exception,)) -> Retrying:
        from requests.exceptions import ConnectionError as ReqConnectionError
        from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError

        transient = (ReqConnectionError, WinRMTransportError, WinRMOperationTimeoutError, *exc)
        return Retrying(
            retry=retry_if_exception_type(transient),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.5, max=4),
            reraise=True,
            before_sleep=before_sleep_log(log, logging.WARNING),
        )

    def open(self) -> None:
        if self.protocol is None:
            self.protocol = make_protocol(self.host)
        for attempt in self._retrying(()):
            with attempt:
                # UTF-8 console (output is decoded as UTF-8 here)
                self.shell_id = self.protocol.open_shell(noprofile=True, codepage=65001)

    def close(self) -> None:
        if self.shell_id is not None:
            try:
                self.protocol.close_shell(self.shell_id)
            finally:
                self.shell_id = None

    def _powershell(self, script: str, stdin_lines: Iterable[bytes]) -> tuple[bytes, bytes, int]:
        """Start powershell with `script` as -EncodedCommand and feed it stdin, chunk by chunk."""
        p = self.protocol
        command_id = p.run_command(
            self.shell_id,
            "powershell.exe",
            ["-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand", encode_command(script)],
            console_mode_stdin=False,
        )
        try:
            pending = None
            for piece in stdin_lines:
                if pending is not None:
                    p.send_command_input(self.shell_id, command_id, pending, end=False)
                    self.bytes_sent += len(pending)
                pending = piece
            p.send_command_input(self.shell_id, command_id, pending or b"", end=True)
            self.bytes_sent += len(pending or b"")
            output: tuple[bytes, bytes, int] = p.get_command_output(self.shell_id, command_id)
            return output
        finally:
            p.cleanup_command(self.shell_id, command_id)

    def run(
        self,
        command: str,
        *,
        privileged: bool = False,
        check: bool = True,
        timeout: float | None = 600,
        stdin: bytes | None = None,
    ) -> Result:
        """Run a PowerShell script (sent on stdin, any length). `privileged` has no meaning here:
        WinRM sessions run as the (administrator) deploy account. `stdin` reaches the script as
        the string $SgpfabStdin (UTF-8), which builders pipe to a native program. `timeout` is
        the server-side operation timeout of pywinrm's protocol, not enforced per command."""
        prefix = stdin_prefix(stdin) if stdin is not None else ""
        data = (PRELUDE + prefix + command).encode("utf-8")
        pieces = [data[i : i + self.chunk] for i in range(0, len(data), self.chunk)] or [b""]
        stdout, stderr, code = self._powershell(BOOTSTRAP, pieces)
        res = Result(command, stdout.decode("utf-8", "replace"), _clean_stderr(stderr), code)
        if check and not res.ok:
            raise self.fail(res)
        return res

    def put(
        self, local: str | os.PathLike[str], remote: str, *, mode: int | None = None, progress: ProgressFn | None = None
    ) -> None:
        """Upload one file: compressed, chunked, checksummed, moved into place; retried on mismatch.
        `progress` hears once, when the file is in place."""
        raw = Path(local).read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        packed = gzip.compress(raw, mtime=0)
        receiver = RECEIVER.format(dest=q(remote), sha=q(sha))
        for attempt in self._retrying((ChecksumMismatch,)):
            with attempt:
                lines = (
                    base64.b64encode(packed[i : i + self.chunk]) + b"\n" for i in range(0, len(packed), self.chunk)
                )
                _stdout, stderr, code = self._powershell(receiver, lines)
                if code == 3:
                    raise ChecksumMismatch(
                        f"{self.host.name}: upload of {Path(local).name} arrived corrupted"
                        f" ({_clean_stderr(stderr).strip()[:120]})"
                    )
                if code != 0:
                    raise RemoteError(
                        f"{self.host.name}: upload of {Path(local).name} failed (exit {code}):"
                        f" {_clean_stderr(stderr).strip()[-200:]}"
                    )
        if progress is not None:
            progress(len(raw), 100)

    def read_file(self, remote: str) -> bytes:
        r = self.run(f"Read-FileBase64 {q(remote)}\n")
        return base64.b64decode(r.stdout.strip())

    def stream(self, command: str, on_line: Callable[[str], object], *, privileged: bool = False) -> int:
        """Run a command and hand each output line to `on_line`. WinRM returns a command's output
        when it ends here (pywinrm's get_command_output), so this suits finite commands only."""
        r = self.run(command, privileged=privileged, check=False)
        for line in r.stdout.splitlines():
            on_line(line)
        if r.exited and r.stderr.strip():
            for line in r.stderr.strip().splitlines():
                on_line(line)
        return r.exited

    def sync(
        self,
        src: str | os.PathLike[str],
        dest: str,
        *,
        excludes: tuple[str, ...] = (),
        link_dest: str | None = None,
        delete: bool = True,
        progress: ProgressFn | None = None,
    ) -> SyncStats:
        """Bring `dest` to the content of directory `src`: only files whose SHA-256 differs are sent.
        `delete` removes files that `src` does not have; `link_dest` has no meaning here."""
        base = Path(src)
        wanted = {rel: hashlib.sha256((base / rel).read_bytes()).hexdigest() for rel in _files(base, excludes)}
        listing = self.run(f"Get-TreeHashes {q(dest)}\n").stdout
        have = dict(line.rsplit(" ", 1) for line in listing.splitlines() if " " in line)
        sent = [rel for rel, digest in wanted.items() if have.get(rel) != digest]
        before, total = self.bytes_sent, sum((base / rel).stat().st_size for rel in sent)
        done = 0
        for rel in sent:
            self.put(base / rel, dest.rstrip("\\") + "\\" + rel.replace("/", "\\"))
            done += (base / rel).stat().st_size
            if progress is not None:
                progress(done, done * 100 // total if total else 100)
        extra = [rel for rel in have if rel not in wanted]
        if delete and extra:
            paths = ", ".join(q(dest.rstrip("\\") + "\\" + rel.replace("/", "\\")) for rel in extra)
            self.run(f"Remove-Files @({paths})\n")
        return SyncStats(len(sent), self.bytes_sent - before)


def _files(base: Path, excludes: tuple[str, ...]) -> list[str]:
    """Relative paths of the files under `base`, minus rsync-style excludes ('dir/' or 'name')."""
    import fnmatch

    out = []
    for p in sorted(base.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(base).as_posix()
        parts = rel.split("/")
        skip = False
        for pat in excludes:
            if pat.endswith("/"):
                skip = skip or any(fnmatch.fnmatch(d, pat[:-1]) for d in parts[:-1])
            else:
                skip = skip or fnmatch.fnmatch(parts[-1], pat) or fnmatch.fnmatch(rel, pat)
        if not skip:
            out.append(rel)
    return out


def _clean_stderr(stderr: bytes) -> str:
    """PowerShell over WinRM writes its error records to stderr as CLIXML (after any plain lines
    native programs wrote there); keep the readable text of both."""
    import re

    text = stderr.decode("utf-8", "replace")
    plain, marker, xml = text.partition("#< CLIXML")
    if not marker:
        return text
    errors = re.findall(r'<S S="Error">(.*?)</S>', xml, re.DOTALL)
    decoded = re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), "".join(errors))
    decoded = decoded.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&apos;", "'")
    decoded = decoded.replace("&amp;", "&").replace("\r\n", "\n")
    return (plain.strip() + "\n" if plain.strip() else "") + decoded
