r"""A stand-in Windows host behind a WS-Man endpoint, for whole deploys through sgpfab's real
deploy logic and real WinRM transport.

What it is made of, and how faithful each part is:

* The drive: `C:\...` is a temporary directory (`local()`); paths are case-sensitive here.
* Every script that arrives is first parsed by the PowerShell grammar gate (psgrammar), then
  run by a small interpreter of the one shape sgpfab's Windows builders produce: PRELUDE
  (checked to be exactly `sgpfab.windows.PRELUDE`), the transport's `$SgpfabStdin = ...` line,
  then one statement a line, each a call of a PRELUDE helper with literal arguments, an
  `$env:X = '...'` assignment, `Set-Location -LiteralPath '...'`, or the UNITS_CHANGED line. A
  statement of any other shape fails the test. Each helper is acted out as its PowerShell
  definition in PRELUDE reads (that reading is the unverified part).
* Native programs: the arguments PowerShell would pass go through Windows PowerShell 5.1's
  command-line building and the C runtime's parsing (winargv), so the program sees what it
  would see on Windows; data piped with `-Stdin` arrives as 5.1 writes it (Out-String: the
  string and CRLF, in $OutputEncoding = UTF-8 without BOM; NativeCommandProcessor.cs
  ProcessInputWriter at PowerShell 60b3b304). Then:
  - python.exe running hostctl.py (the uploaded file, or Invoke-PythonSource's temporary file)
    runs that very file in this process with this machine's Python, its Windows branches on:
    WINDOWS=True, msvcrt.locking and _winapi.CreateJunction faked (a junction is a directory
    symlink here; RemoveDirectory on it removes the link), os.rename with Windows' rule (the
    target must not exist), advapi32's QueryServiceStatusEx answered from the NSSM emulation.
    Its stdin is decoded as UTF-8 with `-X utf8`, else as cp1252 (Python on Windows reads a
    pipe in the ANSI code page; cp1252 is that of an en-US host). Windows paths in its argv are
    mapped to the drive (the one translation this stand-in makes: host.json's paths are not).
  - the release's python.exe running winrun.py (hooks, one-off commands, the services) runs the
    real winrun.py as a subprocess with this machine's Python; the app's shell commands run in
    /bin/sh, not cmd.exe, and `.venv\Scripts` holds a `python` link to this Python.
  - nssm.exe and the service control manager: tests/support/nssm.py.
  - named accounts (`run_as`): a table of the host's accounts (`add_account`: name, SID,
    password or gMSA). `Resolve-AccountSid` translates through it (`.\\user` as this computer's
    user, WIN1); the host helper's LookupAccountNameW / LsaOpenPolicy / LsaAddAccountRights
    (grant-logon) are answered from it, with their winbase.h/ntsecapi.h argument shapes (a binary
    SID, an LSA_UNICODE_STRING); `Set-ServiceAccount` acts out Win32_Service.Change on the
    emulated service (ReturnValue 22 for an unknown account) and records the password it was
    given. Starting a service whose named account lacks "Log on as a service" or whose stored
    password is not the account's fails as the SCM's error 1069 (logon failure) does.
  - icacls.exe: an ACL model (explicit grants, (OI)(CI) inheritance, /inheritance:r); a service
    whose account lacks a right it needs fails as it would (logs not writable: the service does
    not start; settings or the release not readable: the application exits with an error).
  - uv.exe: makes the venv folder; checks the requirements resolve offline from the wheelhouse.
* Uploads (the RECEIVER script) are reassembled, gunzipped and checked like the script does.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gzip
import hashlib
import importlib.util
import io
import json
import ntpath
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgpfab import windows
from sgpfab.transport import winrm

from . import psgrammar, winargv
from .nssm import NSSM, ServiceError
from .pslit import Param, Var, literals, parse_literal, tokens
from .wsman import clixml_error

PROGRAMS = {"icacls.exe": "C:\\Windows\\system32\\icacls.exe", "nssm.exe": "C:\\Program Files\\nssm\\nssm.exe"}
RIGHTS = {"R": 1, "RX": 2, "M": 3, "F": 4}
WELL_KNOWN_SIDS = {
    "system": windows.SYSTEM_SID,
    "nt authority\\system": windows.SYSTEM_SID,
    "administrators": windows.ADMINISTRATORS_SID,
    "builtin\\administrators": windows.ADMINISTRATORS_SID,
}
_STDIO = threading.Lock()
COMPUTER = "WIN1"


class PSThrow(Exception):
    """A terminating error in the script (what `throw` or a failing cmdlet does)."""


@dataclass
class NativeCall:
    exe: str
    args: list[str]  # what the script passed
    argv: list[str]  # what the program received (after 5.1's quoting and the C runtime's parsing)
    stdin: bytes | None
    code: int = 0


@dataclass
class Ctx:
    stdin: str | None = None
    cwd: str | None = None
    changed: bool = False
    lastexitcode: int = 0

    def __post_init__(self):
        self.env: dict[str, str] = {}
        self.out: list[str] = []
        self.err: list[str] = []


class Acl:
    """Explicit grants per path (icacls), with (OI)(CI) inheritance and /inheritance:r."""

    PERM = re.compile(r"((?:\((?:OI|CI|IO|NP|I)\))*)\(?(F|M|RX|R)\)?")

    def __init__(self, host: WindowsHost):
        self.host = host
        self.entries: dict[str, dict] = {}

    @staticmethod
    def key(win: str) -> str:
        return win.rstrip("\\").lower()

    def sid(self, trustee: str) -> str | None:
        if trustee.startswith("*"):
            return trustee[1:] if re.fullmatch(r"S-1-\d+(?:-\d+)+", trustee[1:]) else None
        return self.host.account_sid(trustee)

    def icacls(self, argv: list[str]) -> tuple[str, str, int]:
        if not argv:
            return "", "icacls: no file given", 87
        path, opts = argv[0], argv[1:]
        if not self.host.local(path).exists():
            return "", f"{path}: The system cannot find the file specified.\r\n", 2
        e = self.entries.setdefault(self.key(path), {"protected": False, "aces": {}})
        i = 0
        while i < len(opts):
            o = opts[i].lower()
            if o in ("/q", "/t", "/c"):
                i += 1
            elif o in ("/inheritance:r", "/inheritance:d"):
                e["protected"] = True
                i += 1
            elif o == "/inheritance:e":
                e["protected"] = False
                i += 1
            elif o in ("/grant", "/grant:r"):
                i += 1
                while i < len(opts) and not opts[i].startswith("/"):
                    trustee, _, perm = opts[i].rpartition(":")
                    sid, m = self.sid(trustee), self.PERM.fullmatch(perm)
                    if sid is None:
                        return "", f"{trustee}: No mapping between account names and security IDs was done.\r\n", 1332
                    if m is None:
                        return "", f'Invalid parameter "{opts[i]}"\r\n', 87
                    flags, level = m.group(1), RIGHTS[m.group(2)]
                    old = e["aces"].get(sid)
                    if o == "/grant" and old:
                        level, flags = max(level, old[1]), old[0] + flags
                    e["aces"][sid] = (flags, level)
                    i += 1
            else:
                return "", f'Invalid parameter "{opts[i]}"\r\n', 87
        return "Successfully processed 1 files; Failed processing 0 files\r\n", "", 0

    def explicit(self, path: str, sid: str) -> bool:
        return sid in self.entries.get(self.key(path), {}).get("aces", {})

    def allows(self, path: str, sid: str, need: str) -> bool:
        """Whether `sid` has at least `need` on `path`: an explicit grant there, or an inheritable
        one on a folder above, up to the first folder whose inheritance was removed."""
        p, first = path, True
        while True:
            e = self.entries.get(self.key(p))
            if e and sid in e["aces"]:
                flags, level = e["aces"][sid]
                if level >= RIGHTS[need] and (first or "(OI)" in flags or "(CI)" in flags):
                    return True
            if e and e["protected"]:
                return False
            parent = ntpath.dirname(p)
            if parent == p:
                return False
            p, first = parent, False


class WinOs:
    """`os` for the host helper with Windows' rename: MoveFileEx without REPLACE_EXISTING fails
    when the target exists (Python's os.rename on Windows raises FileExistsError)."""

    def __getattr__(self, name):
        return getattr(os, name)

    @property
    def environ(self):
        return {**os.environ, "COMPUTERNAME": COMPUTER}

    @staticmethod
    def rename(src, dst):
        if os.path.lexists(dst):
            raise FileExistsError(17, "Cannot create a file when that file already exists", str(dst))
        os.rename(src, dst)


class FakeMsvcrt:
    """msvcrt.locking with its documented behaviour: LK_LOCK/LK_RLCK try 10 times, a second
    apart, then raise; LK_NBLCK/LK_NBRLCK try once. Windows byte-range locks belong to a file
    handle, so two handles of one process exclude each other (unlike POSIX record locks)."""

    LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4
    retry_seconds = 1.0
    _locks: dict = {}
    _guard = threading.Lock()

    @classmethod
    def locking(cls, fd, mode, nbytes):
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        if mode == cls.LK_UNLCK:
            with cls._guard:
                if cls._locks.get(key) != fd:
                    raise PermissionError(13, "Permission denied")
                del cls._locks[key]
            return
        attempts = 10 if mode in (cls.LK_LOCK, cls.LK_RLCK) else 1
        for i in range(attempts):
            with cls._guard:
                if key not in cls._locks:
                    cls._locks[key] = fd
                    return
            if i + 1 < attempts:
                time.sleep(cls.retry_seconds)
        raise OSError(36, "Resource deadlock avoided")


def create_junction(target, link):
    """_winapi.CreateJunction: fails when `link` exists; here a directory symlink."""
    if os.path.lexists(link):
        raise FileExistsError(183, "Cannot create a file when that file already exists", link)
    if not os.path.isdir(target):
        raise FileNotFoundError(2, "The system cannot find the file specified", target)
    os.symlink(target, link, target_is_directory=True)


def remove_junction(link):
    """RemoveDirectory on a junction removes the junction only."""
    if not os.path.islink(link):
        raise OSError(267, "The directory name is invalid (not a junction)", link)
    os.unlink(link)


@contextlib.contextmanager
def windows_modules():
    """msvcrt and _winapi, importable while the host helper runs."""
    saved = {n: sys.modules.get(n) for n in ("msvcrt", "_winapi")}
    sys.modules["msvcrt"] = FakeMsvcrt
    sys.modules["_winapi"] = types.SimpleNamespace(CreateJunction=create_junction)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class _Fn:
    """A stand-in for a ctypes foreign function: argtypes/restype can be set; handle-returning
    functions insist on a pointer-sized restype (a 64-bit handle cut to a C int is the classic
    ctypes bug)."""

    def __init__(self, f, returns_handle=False):
        self.f, self.returns_handle, self.argtypes, self.restype = f, returns_handle, None, None

    def __call__(self, *args):
        if self.returns_handle:
            assert self.restype is ctypes.c_void_p, "a HANDLE-returning function needs restype = c_void_p"
        assert self.argtypes is not None, "argtypes not set"
        return self.f(*args)


def sid_bytes(sid: str) -> bytes:
    """A SID's binary form (winnt.h SID: revision, sub-authority count, 48-bit big-endian
    authority, little-endian 32-bit sub-authorities)."""
    parts = [int(x) for x in sid.split("-")[1:]]
    rev, auth, subs = parts[0], parts[1], parts[2:]
    return bytes([rev, len(subs)]) + auth.to_bytes(6, "big") + b"".join(x.to_bytes(4, "little") for x in subs)


def sid_string(data: bytes) -> str:
    count = data[1]
    subs = [int.from_bytes(data[8 + 4 * i : 12 + 4 * i], "little") for i in range(count)]
    return "-".join(["S", str(data[0]), str(int.from_bytes(data[2:8], "big")), *map(str, subs)])


class FakeAdvapi32:
    """OpenSCManagerW / OpenServiceW / QueryServiceStatusEx / CloseServiceHandle over the SCM
    emulation (winsvc.h semantics; SC_STATUS_PROCESS_INFO = 0; SERVICE_STATUS_PROCESS is 36
    bytes); LookupAccountNameW / LsaOpenPolicy / LsaAddAccountRights / LsaClose /
    LsaNtStatusToWinError over the host's account table (`host.accounts`, `host.logon_rights`)."""

    def __init__(self, scm: NSSM, errors: dict, host=None):
        self.handles: dict[int, str] = {}
        self.closed: list[int] = []
        self.scm, self.errors, self.host = scm, errors, host
        self.OpenSCManagerW = _Fn(lambda machine, db, access: 0x10, returns_handle=True)
        self.OpenServiceW = _Fn(self._open, returns_handle=True)
        self.QueryServiceStatusEx = _Fn(self._query)
        self.CloseServiceHandle = _Fn(self._close)
        self.LookupAccountNameW = _Fn(self._lookup)
        self.LsaOpenPolicy = _Fn(self._open_policy)
        self.LsaAddAccountRights = _Fn(self._add_rights)
        self.LsaClose = _Fn(lambda h: 0)
        self.LsaNtStatusToWinError = _Fn(lambda status: {0xC0000022: 5}.get(status, 317))
        self.policy_access = 0

    def _lookup(self, system, name, sid, sid_size, domain, dom_size, use):
        assert system is None and "\\" in name and not name.startswith(".\\"), name  # '.' is not a domain here
        found = self.host.accounts.get(name.lower())
        if found is None:
            self.errors["last"] = 1332  # ERROR_NONE_MAPPED
            return 0
        data, dom = sid_bytes(found["sid"]), name.split("\\", 1)[0]
        if sid is None or sid_size._obj.value < len(data) or dom_size._obj.value < len(dom) + 1:
            sid_size._obj.value, dom_size._obj.value = len(data), len(dom) + 1
            self.errors["last"] = 122  # ERROR_INSUFFICIENT_BUFFER
            return 0
        ctypes.memmove(sid, data, len(data))
        domain.value, use._obj.value = dom, 1  # SidTypeUser
        return 1

    def _open_policy(self, system, attrs, access, handle):
        assert system is None and not any(getattr(attrs._obj, f) for f, _ in attrs._obj._fields_), "zeroed attributes"
        self.policy_access = access
        if access & 0x0810 != 0x0810:  # POLICY_LOOKUP_NAMES | POLICY_CREATE_ACCOUNT
            return 0xC0000022  # STATUS_ACCESS_DENIED
        handle._obj.value = 0x5000
        return 0

    def _add_rights(self, policy, sid, rights, count):
        assert getattr(policy, "value", policy) == 0x5000 and count == 1
        right = rights._obj
        assert right.Length == 2 * len(right.Buffer) and right.MaximumLength >= right.Length, "LSA_UNICODE_STRING"
        self.host.logon_rights.setdefault(sid_string(bytes(sid)), set()).add(right.Buffer)
        return 0

    def _open(self, scm, name, access):
        assert scm == 0x10 and access == 0x0004
        if not self.scm.exists(name):
            self.errors["last"] = 1060  # ERROR_SERVICE_DOES_NOT_EXIST
            return None
        h = 0x7FFF_0000_0000 + len(self.handles) + 1  # a 64-bit handle value
        self.handles[h] = name
        return h

    def _close(self, h: int) -> int:
        self.closed.append(h)
        return 1

    def _query(self, h, level, buf, size, needed):
        assert level == 0 and size == 36, (level, size)
        state, pid = self.scm.query(self.handles[h])
        st = buf._obj
        st.dwCurrentState, st.dwProcessId, st.dwServiceType = state, pid, 0x10
        needed._obj.value = 36
        return 1


class WindowsHost:
    def __init__(
        self,
        tmp: Path,
        *,
        nssm_version: str = "2.24-101-g897c7ad",
        interpreter: str = "C:\\Python311\\python.exe",
        uv: str = "C:\\tools\\uv.exe",
    ):
        self.base = Path(tmp) / "C"
        (self.base / "Windows" / "Temp").mkdir(parents=True)
        self.interpreter, self.uv_path = interpreter, uv
        self.nssm = NSSM(self._launch, self._terminate, nssm_version)
        self.acl = Acl(self)
        self.natives: list[NativeCall] = []
        self.scripts: list[str] = []
        self.statements: list[str] = []
        self.uploads: list[str] = []
        self.errors: dict = {"last": 0}
        self.accounts: dict[str, dict] = {}  # COMPUTER-or-DOMAIN\\name (lower case) -> sid, password, gmsa
        self.logon_rights: dict[str, set[str]] = {}  # SID -> user rights (LsaAddAccountRights)
        self.account_changes: list[tuple[str, str, str | None]] = []  # Win32_Service.Change: name, account, password
        self.nssm.logon = self._logon
        self.advapi = FakeAdvapi32(self.nssm, self.errors, self)
        self._modules: dict[str, types.ModuleType] = {}
        # tests: called with the argv of every host-helper run
        self.on_hostctl: Callable[[list[str]], None] | None = None

    # -- accounts -------------------------------------------------------------------------------
    def add_account(self, name: str, password: str | None = None) -> str:
        """A user (`DOMAIN\\name` or `.\\name`, with a password) or a gMSA (`DOMAIN\\name$`, none)."""
        key = self._qualified(name).lower()
        sid = f"S-1-5-21-1004336348-1177238915-682003330-{1100 + len(self.accounts)}"
        self.accounts[key] = {"sid": sid, "password": password, "gmsa": name.endswith("$")}
        return sid

    @staticmethod
    def _qualified(name: str) -> str:
        return COMPUTER + name[1:] if name.startswith(".\\") else name

    def account_sid(self, name: str) -> str | None:
        low = name.lower()
        if low.startswith("nt service\\"):
            return windows.service_sid(name.split("\\", 1)[1])
        if low in WELL_KNOWN_SIDS:
            return WELL_KNOWN_SIDS[low]
        found = self.accounts.get(self._qualified(name).lower())
        return found["sid"] if found else None

    def _logon(self, svc) -> None:
        """The SCM's logon of a service's account when it starts (error 1069 when it fails)."""
        account = svc.get("ObjectName")
        if account.lower().startswith("nt service\\"):
            return
        found = self.accounts.get(self._qualified(account).lower())
        ok = (
            found is not None
            and "SeServiceLogonRight" in self.logon_rights.get(found["sid"], set())
            and (found["gmsa"] or svc.password == found["password"])
        )
        if not ok:
            raise ServiceError(
                f"Service '{svc.name}' cannot be started: The service did not start due to a logon failure (1069)."
            )

    # -- the drive ------------------------------------------------------------------------------
    def local(self, win: str) -> Path:
        m = re.fullmatch(r"[Cc]:\\(.*)", win)
        assert m, f"not a path on C: {win!r}"
        return self.base.joinpath(*[p for p in m.group(1).split("\\") if p])

    def translate(self, arg: str) -> str:
        if arg.lower() == self.interpreter.lower():  # the host's Python is this machine's
            return sys.executable
        return str(self.local(arg)) if re.match(r"[Cc]:\\", arg) else arg

    # -- WS-Man ---------------------------------------------------------------------------------
    def __call__(self, script: str, stdin: bytes):
        psgrammar.assert_parses(script, name="the -EncodedCommand script")
        if script == winrm.BOOTSTRAP:
            text = stdin.decode("utf-8")
            psgrammar.assert_parses(text, name="the script on stdin")
            self.scripts.append(text)
            out, err, code = self.powershell(text)
            return out.encode("utf-8"), err, code
        return self.receive(script, stdin)

    def receive(self, script: str, stdin: bytes):
        dest, want = literals(script)[1:3]  # after the 'Stop' of $ErrorActionPreference
        assert script == winrm.RECEIVER.format(dest=windows.q(dest), sha=windows.q(want)), "unknown script"
        data = gzip.decompress(b"".join(base64.b64decode(x) for x in stdin.decode("ascii").splitlines() if x))
        if hashlib.sha256(data).hexdigest() != want:
            return b"", b"checksum mismatch", 3
        path = self.local(dest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.uploads.append(dest)
        return b"", b"", 0

    # -- PowerShell -----------------------------------------------------------------------------
    def powershell(self, text: str) -> tuple[str, bytes, int]:
        assert text.startswith(windows.PRELUDE), "every script starts with sgpfab's PRELUDE"
        lines = text[len(windows.PRELUDE) :].split("\n")
        ctx = Ctx()
        if lines and lines[0].startswith("$SgpfabStdin = "):
            m = re.fullmatch(
                r"\$SgpfabStdin = \[Text\.Encoding\]::UTF8\.GetString\(\[Convert\]::FromBase64String\("
                r"('[A-Za-z0-9+/=]*')\)\)",
                lines[0],
            )
            assert m, lines[0]
            ctx.stdin = base64.b64decode(parse_literal(m.group(1))[0]).decode("utf-8", "replace")
            lines = lines[1:]
        try:
            for line in lines:
                if line.strip():
                    self.statements.append(line)
                    self.statement(line, ctx)
        except PSThrow as e:
            err = "".join(x + "\r\n" for x in ctx.err).encode("utf-8") + clixml_error(str(e))
            return "".join(x + "\r\n" for x in ctx.out), err, 1
        err = "".join(x + "\r\n" for x in ctx.err).encode("utf-8")
        return "".join(x + "\r\n" for x in ctx.out), err, ctx.lastexitcode  # exit $LASTEXITCODE

    def statement(self, line: str, ctx: Ctx) -> None:
        m = re.fullmatch(r"\$env:([A-Za-z_]\w*) = ('.*')", line)
        if m:
            ctx.env[m.group(1)] = parse_literal(m.group(2))[0]
            return
        if line == f"if ($SgpfabState.Changed) {{ {windows.q(windows.UNITS_CHANGED)} }}":
            if ctx.changed:
                ctx.out.append(windows.UNITS_CHANGED)
            return
        if line == "$null":
            return
        toks = tokens(line)
        cmd, rest = toks[0], toks[1:]
        handler = getattr(self, "ps_" + cmd.replace("-", "_"), None)
        assert handler is not None, f"the stand-in does not know this statement: {line}"
        pos, named, i = [], {}, 0
        while i < len(rest):
            t = rest[i]
            if isinstance(t, Param):
                named[t.name] = self._value(rest[i + 1], ctx)
                i += 2
            else:
                pos.append(self._value(t, ctx))
                i += 1
        handler(ctx, *pos, **named)

    @staticmethod
    def _value(t, ctx: Ctx):
        if isinstance(t, Var):
            assert t.name == "SgpfabStdin" and ctx.stdin is not None, f"${t.name} is not defined"
            return ctx.stdin
        return t

    # -- native programs ------------------------------------------------------------------------
    def native(
        self,
        ctx: Ctx,
        exe: str,
        args: list[str],
        stdin: str | None = None,
        *,
        checked: bool = True,
        output: bool = True,
    ) -> str:
        path = self._resolve(exe)
        argv = winargv.ps51_native_argv(path, list(args), rules="ucrt")
        data = None if stdin is None else (stdin + "\r\n").encode("utf-8")  # Out-String, $OutputEncoding
        call = NativeCall(exe, list(args), argv, data)
        self.natives.append(call)
        out, err, code = self.program(path, argv, data, ctx)
        call.code = code
        if output:
            ctx.out.extend(out.splitlines())
        ctx.err.extend(err.splitlines())
        ctx.lastexitcode = code
        if checked and code != 0:
            raise PSThrow(f"{exe} exited with code {code}")
        return out

    def _resolve(self, exe: str) -> str:
        if "\\" not in exe:
            if exe.lower() == "python.exe" or exe.lower() == ntpath.basename(self.interpreter).lower():
                return self.interpreter
            if exe.lower() == "uv.exe":
                return self.uv_path
            if exe.lower() in PROGRAMS:
                return PROGRAMS[exe.lower()]
            raise PSThrow(
                f"The term '{exe}' is not recognized as the name of a cmdlet, function, script file,"
                " or operable program."
            )
        if exe in (self.interpreter, self.uv_path) or self.local(exe).is_file():
            return exe
        raise PSThrow(
            f"The term '{exe}' is not recognized as the name of a cmdlet, function, script file, or operable program."
        )

    def program(self, path: str, argv: list[str], stdin: bytes | None, ctx: Ctx) -> tuple[str, str, int]:
        name = ntpath.basename(path).lower()
        if name == "nssm.exe":
            return self.nssm.command(argv)
        if name == "icacls.exe":
            return self.acl.icacls(argv)
        if path == self.uv_path:
            return self.uv(argv, ctx)
        if name == "python.exe":
            return self.python(path, argv, stdin)
        raise PSThrow(f"cannot run {path}")

    def python(self, path: str, argv: list[str], stdin: bytes | None) -> tuple[str, str, int]:
        utf8, i = False, 0
        while i < len(argv) and argv[i].startswith("-"):
            assert argv[i] == "-X" and i + 1 < len(argv), f"python option {argv[i]!r} is not modelled"
            utf8 = utf8 or argv[i + 1] == "utf8"
            i += 2
        script, args = argv[i], argv[i + 1 :]
        local = self.local(script)
        if not local.is_file():
            return "", f"python.exe: can't open file '{script}': [Errno 2] No such file or directory\r\n", 2
        if ntpath.basename(script) == "winrun.py":
            assert path != self.interpreter, "winrun.py runs with the release's own python.exe"
            return self.winrun(local, args, stdin)
        assert path == self.interpreter, "the host helper runs with the host's interpreter"
        return self.hostctl(local, args, stdin, utf8)

    def hostctl_module(self, path: Path) -> types.ModuleType:
        data = path.read_bytes()
        key = hashlib.sha256(data).hexdigest()
        if key not in self._modules:
            spec = importlib.util.spec_from_file_location(f"hostctl_on_windows_{key[:12]}", path)
            assert spec is not None and spec.loader is not None
            mod: Any = importlib.util.module_from_spec(spec)  # gets Windows stand-ins set below
            spec.loader.exec_module(mod)
            mod.WINDOWS = True
            mod.os = WinOs()
            mod._load_advapi32 = lambda: self.advapi
            mod._last_error = lambda: self.errors["last"]
            mod._remove_junction = remove_junction
            # The Windows host's PATH, not this machine's: uv is at the stand-in's uv path.
            real_which = shutil.which
            mod.shutil = types.SimpleNamespace(**{k: getattr(shutil, k) for k in dir(shutil) if not k.startswith("__")})
            mod.shutil.which = lambda name, *a, **k: (
                self.uv_path if name in ("uv", "uv.exe") else real_which(name, *a, **k)
            )
            self._modules[key] = mod
        return self._modules[key]

    def hostctl(self, script: Path, args: list[str], stdin: bytes | None, utf8: bool) -> tuple[str, str, int]:
        mod = self.hostctl_module(script)
        argv = [self.translate(a) for a in args]
        if self.on_hostctl:
            self.on_hostctl(argv)
        text_in = io.TextIOWrapper(
            io.BytesIO(stdin or b""),
            encoding="utf-8" if utf8 else "cp1252",
            errors="surrogateescape" if utf8 else "strict",
        )
        out, err = io.StringIO(), io.StringIO()
        with _STDIO, windows_modules():
            saved, sys.stdin = sys.stdin, text_in
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    try:
                        rc = mod.main(argv)
                    except SystemExit as e:
                        rc = e.code if isinstance(e.code, int) else 1
                    except Exception:
                        traceback.print_exc()
                        rc = 1
            finally:
                sys.stdin = saved
        return out.getvalue(), err.getvalue(), rc

    def process_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SGPFAB_"))}

    def winrun(self, script: Path, args: list[str], stdin: bytes | None) -> tuple[str, str, int]:
        r = subprocess.run(
            [sys.executable, str(script), *[self.translate(a) for a in args]],
            input=stdin or b"",
            capture_output=True,
            env=self.process_env(),
            timeout=600,
        )
        return r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace"), r.returncode

    def uv(self, argv: list[str], ctx: Ctx) -> tuple[str, str, int]:
        assert ctx.env.get("UV_OFFLINE") == "1", "uv runs offline"
        assert ctx.cwd is not None, "uv runs in a working directory"
        cwd = self.local(ctx.cwd)
        if argv[:1] == ["venv"]:
            scripts = cwd / argv[-1] / "Scripts"
            scripts.mkdir(parents=True)
            (scripts / "python.exe").write_text("the release's interpreter\n")
            (scripts / "python").symlink_to(sys.executable)
            return "", "", 0
        if argv[:2] == ["pip", "install"]:
            req = self.local(argv[argv.index("-r") + 1])
            wheelhouse = self.local(argv[argv.index("--find-links") + 1])
            have = {w.name.split("-")[0].lower().replace("_", "-") for w in wheelhouse.glob("*.whl")}
            for line in req.read_text().splitlines():
                name = re.split(r"[=<>!~;\[ ]", line.split("#")[0].strip(), maxsplit=1)[0].lower()
                if name and name not in have:
                    return "", f"error: No solution found: {name} is not in the wheelhouse\n", 1
            return "", "", 0
        return "", "uv: not modelled: " + " ".join(argv), 2

    # -- services: what NSSM starts -------------------------------------------------------------
    def _denied(self, svc) -> list[str]:
        """What the service's account may not do that it must (checked when NSSM starts it)."""
        account = svc.get("ObjectName")
        sid = self.account_sid(account)
        assert sid is not None, f"{svc.name} runs as {account}"
        params = winargv.commandline_to_argv('"x" ' + svc.get("AppParameters"))[1:]
        release = params[params.index("--release") + 1]
        root = ntpath.dirname(ntpath.dirname(svc.get("AppDirectory")))
        need = [(root, "RX"), (ntpath.join(root, "shared", "config"), "RX")]
        if "--web" in params:
            need.append((ntpath.join(root, ".sgpfab", "launch.env"), "R"))
        marker = self.local(ntpath.join(root, "releases", release, ".sgpfab-release.json"))
        if marker.is_file():
            for d in json.loads(marker.read_text()).get("spec", {}).get("writable", []):
                need.append((ntpath.join(root, "releases", release, *d.split("/")), "M"))
        return [f"{p} ({r})" for p, r in need if not self.acl.allows(p, sid, r)]

    def _launch(self, svc):
        app, appdir = svc.get("Application"), svc.get("AppDirectory")
        argv = winargv.commandline_to_argv(f'"{app}" {svc.get("AppParameters")}')  # service.cpp: "\"%s\" %s"
        assert argv[0] == app
        if not self.local(app).is_file():
            raise FileNotFoundError(f"CreateProcess: {app} not found")
        sid = self.account_sid(svc.get("ObjectName"))
        logs = ntpath.dirname(svc.get("AppStdout"))
        if not self.acl.allows(logs, sid, "M"):
            raise PermissionError(f"{svc.name}: cannot open {svc.get('AppStdout')}: access denied")
        cwd = self.local(appdir)
        script = argv[1] if re.match(r"[Cc]:\\", argv[1]) else ntpath.join(appdir, argv[1])
        log = open(self.local(svc.get("AppStdout")), "ab")
        denied = self._denied(svc)
        if denied:
            cmd = [
                sys.executable,
                "-c",
                "import sys; sys.stderr.write(sys.argv[1] + '\\n'); sys.exit(1)",
                "PermissionError: [WinError 5] Access is denied: " + ", ".join(denied),
            ]
        else:
            cmd = [sys.executable, str(self.local(script)), *[self.translate(a) for a in argv[2:]]]
        try:
            return subprocess.Popen(
                cmd,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=self.process_env(),
                # A Windows console application always gets Ctrl+C; here SIGINT may be inherited
                # as ignored (a test run started in the background by a non-interactive shell).
                preexec_fn=_default_sigint,
            )
        finally:
            log.close()

    @staticmethod
    def _terminate(proc, grace: float) -> None:
        """Ctrl+C to the console the application shares with its children, then kill the tree."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # AppKillProcessTree: nothing of it may stay

    def shutdown(self) -> None:
        self.nssm.stop_all()

    # -- the PRELUDE helpers, as their PowerShell reads ------------------------------------------
    def ps_Set_Location(self, ctx, *, LiteralPath):
        if not self.local(LiteralPath).is_dir():
            raise PSThrow(f"Cannot find path '{LiteralPath}' because it does not exist.")
        ctx.cwd = LiteralPath

    def ps_New_Directories(self, ctx, paths):
        for p in paths:
            self.local(p).mkdir(parents=True, exist_ok=True)

    def ps_New_EmptyFile(self, ctx, path):
        if not self.local(path).exists():
            self.local(path).write_bytes(b"")

    def ps_Reset_Directory(self, ctx, path):
        shutil.rmtree(self.local(path), ignore_errors=True)
        self.local(path).mkdir(parents=True)

    def ps_Remove_Tree(self, ctx, path):
        p = self.local(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.is_file():
            p.unlink()

    def ps_Write_Base64File(self, ctx, path, data):
        p = self.local(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".sgpfab-tmp")
        tmp.write_bytes(base64.b64decode(data, validate=True))
        os.replace(tmp, p)

    def ps_Read_FileBase64(self, ctx, path):
        if not self.local(path).is_file():
            raise PSThrow(f"Could not find file '{path}'.")
        ctx.out.append(base64.b64encode(self.local(path).read_bytes()).decode())

    def ps_Get_Sha256Lines(self, ctx, paths):
        for p in paths:
            if self.local(p).is_file():
                ctx.out.append(hashlib.sha256(self.local(p).read_bytes()).hexdigest() + " " + p)

    def ps_Get_TreeHashes(self, ctx, root):
        base = self.local(root)
        base.mkdir(parents=True, exist_ok=True)
        for p in sorted(base.rglob("*")):
            if p.is_file():
                ctx.out.append(f"{p.relative_to(base).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}")

    def ps_Remove_Files(self, ctx, paths):
        for p in paths:
            if self.local(p).is_file():
                self.local(p).unlink()

    def ps_Get_DirectoryNames(self, ctx, path):
        if self.local(path).is_dir():
            ctx.out.extend(sorted(x.name for x in self.local(path).iterdir()))

    def ps_Get_LogTail(self, ctx, path, lines, prefix):
        if self.local(path).is_file():
            text = self.local(path).read_bytes().decode("utf-8", "replace")
            ctx.out.extend(prefix + x for x in text.splitlines()[-lines:])

    def ps_Find_Uv(self, ctx, path):
        ctx.out.append(path if self.local(path).is_file() else self.uv_path)

    def ps_Get_NssmVersion(self, ctx):
        ctx.out.append("NSSM " + self.nssm.version)

    def ps_New_ProbeToken(self, ctx, path):
        if self.local(path).exists():
            return
        self.local(path).write_text("SGPFAB_PROBE_TOKEN=" + os.urandom(24).hex() + "\n")
        self.native(
            ctx,
            "icacls.exe",
            [path, "/inheritance:r", "/grant:r", "*S-1-5-18:(F)", "*S-1-5-32-544:(F)", "/Q"],
            output=False,
        )

    def ps_Protect_Directory(self, ctx, path):
        self.native(
            ctx,
            "icacls.exe",
            [path, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F", "/Q"],
            output=False,
        )

    def ps_Grant_Access(self, ctx, path, sid, rights):
        if not self.local(path).exists():
            raise PSThrow(f"Cannot find path '{path}' because it does not exist.")  # Get-Acl
        if self.acl.explicit(path, sid):
            return
        self.native(ctx, "icacls.exe", [path, "/grant", "*" + sid + ":" + rights, "/Q"], output=False)

    def resolve_account(self, account: str) -> str:
        """Resolve-AccountSid: NTAccount.Translate, `.\\` read as this computer."""
        sid = self.account_sid(account)
        if sid is None:
            raise PSThrow(
                'Exception calling "Translate" with "1" argument(s): "Some or all identity references could'
                ' not be translated."'
            )
        return sid

    def ps_Grant_AccountAccess(self, ctx, path, account, rights):
        self.ps_Grant_Access(ctx, path, self.resolve_account(account), rights)

    def ps_Set_ServiceAccount(self, ctx, name, account, password=None):
        """Win32_Service.Change(StartName, StartPassword) on the emulated service; StartPassword
        is left out (NULL) without a password."""
        svc = self.nssm._find(name)
        if svc is None:
            raise PSThrow(f"no service named {name}")
        same = svc.get("ObjectName").lower() == account.lower()  # -eq: case-insensitive
        if same and password is None:
            return
        if self.account_sid(account) is None:
            raise PSThrow(f"Win32_Service.Change of {name} returned 22")  # Status Invalid Service Account
        svc.values["ObjectName"], svc.password = account, password
        self.account_changes.append((name, account, password))
        if not same:
            ctx.changed = True

    def nssm_get(self, ctx, name, params) -> str:
        """Get-NssmValue: `nssm get`, its errors discarded (2>$null), $LASTEXITCODE reset."""
        errs = len(ctx.err)
        out = self.native(ctx, "nssm.exe", ["get", name, *params], checked=False, output=False)
        del ctx.err[errs:]
        ctx.lastexitcode = 0
        return out.strip()

    def ps_Set_NssmValue(self, ctx, name, params, values):
        if self.nssm_get(ctx, name, params).lower() == " ".join(values).lower():  # -eq: case-insensitive
            return
        self.native(ctx, "nssm.exe", ["set", name, *params, *values], output=False)
        ctx.changed = True

    def ps_Install_AppService(self, ctx, name, application):
        if self.nssm.exists(name):
            return
        self.native(ctx, "nssm.exe", ["install", name, application], output=False)
        ctx.changed = True

    def app_services(self, ctx, service, prefix) -> list[str]:
        names = [
            n
            for n in self.nssm.names()
            if n.lower() == service.lower() or (n.lower().startswith(service.lower() + "-"))
        ]
        return [n for n in names if self.nssm_get(ctx, n, ["Application"]).lower().startswith(prefix.lower())]

    def ps_Stop_AppService(self, ctx, name):
        if self.nssm.exists(name):
            self.nssm.stop(name)

    def ps_Start_AppService(self, ctx, name):
        self.ps_Stop_AppService(ctx, name)
        try:
            self.nssm.start(name)
        except ServiceError as e:
            raise PSThrow(str(e)) from None

    def ps_Stop_AppServices(self, ctx, service, prefix):
        for n in self.app_services(ctx, service, prefix):
            self.nssm.stop(n)

    def ps_Disable_OtherAppServices(self, ctx, service, prefix, keep):
        for n in self.app_services(ctx, service, prefix):
            if n not in keep:
                self.nssm.stop(n)
                self.ps_Set_NssmValue(ctx, n, ["Start"], ["SERVICE_DISABLED"])

    def ps_Invoke_Checked(self, ctx, exe, args, *, Stdin=None):
        self.native(ctx, exe, args, Stdin)

    def ps_Invoke_Passthrough(self, ctx, exe, args, *, Stdin=None):
        self.native(ctx, exe, args, Stdin, checked=False)

    def ps_Invoke_PythonSource(self, ctx, python, args, source):
        tmp = "C:\\Windows\\Temp\\sgpfab-" + os.urandom(16).hex() + ".py"
        self.local(tmp).write_text(source, encoding="utf-8")
        try:
            self.native(ctx, python, ["-X", "utf8", tmp, *args])
        finally:
            self.local(tmp).unlink()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
