r"""What to run on a Windows host: pure functions that return PowerShell scripts (`Cmd`).

The same functions as `linux`, for hosts with `os: windows` (reached over WinRM). Every script is
a list of calls to the helper functions defined in PRELUDE (which the WinRM transport puts in
front of every script) with single-quoted literal arguments made by `q`: no `$`, backtick or
subexpression is ever expanded, and the typographic quotes PowerShell also reads as quotes are
doubled.

Native programs run through `Invoke-Checked` (throws when they exit non-zero) or
`Invoke-Passthrough` (the script exits with their code). Windows PowerShell 5.1 re-quotes native
arguments without escaping (PowerShell issue #1995), so every argument that reaches a native
program is checked by `native_arg_ok` here, when the script is built: no double quote, no empty
string, no trailing backslash in an argument with white space. Structured data travels on stdin
instead: `Invoke-Checked ... -Stdin $SgpfabStdin` pipes the string the transport defined (see
transport/winrm.py) to the program; 5.1 writes it through Out-String (one CRLF added) in
$OutputEncoding, which PRELUDE sets to UTF-8 without a byte-order mark. The host helper runs with
`python -X utf8`, so it reads that UTF-8 (and its own files) as UTF-8, not the ANSI code page.

Each process of the app is an NSSM service (>= 2.24-101) running `python winrun.py` from
API_ROOT\.sgpfab\launch as its own virtual account `NT SERVICE\<service>`, or, with `run_as`, as
the app's named account (a user whose password arrives on stdin, or a gMSA); winrun.py loads the
app's settings file and starts the process the release describes. Rights on API_ROOT are granted
to each service's SID (computed here, so the service need not exist yet), or to the named
account's SID (looked up on the host).

Verified by emulation only (tests/support/winhost.py): see docs/windows.md.
"""

from __future__ import annotations

import base64
import hashlib
import ntpath
import re
import struct
import unicodedata
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from . import winaccount
from .cmd import Cmd
from .errors import InputError
from .layout import Layout, Units
from .runfiles import windows_release_files

if TYPE_CHECKING:
    from .appspec import AppSpec
    from .inventory import Instance
    from .versions import Version

CAN_OVERLAP = False  # one service per process: a new release restarts it
EXIT_NO_BASE = None  # a failing helper is a thrown error here, not its exit code: manifests go whole
UNITS_CHANGED = "sgpfab:units-changed"
NSSM_MIN_VERSION = (2, 24, 101)  # 2.24's applications fail to start on Windows 10 1703+ / Server 2019

# NSSM settings of every process service (besides Application, AppParameters, ObjectName).
APP_THROTTLE_MS = 1500  # NSSM's default: an application that exits sooner is restarted with a delay
APP_RESTART_DELAY_MS = 1000  # every restart waits, in SERVICE_PAUSED (what the health gate looks for)
APP_STOP_CONSOLE_MS = 15000  # Ctrl+C, then this long to exit before WM_CLOSE and termination
LOG_ROTATE_BYTES = 10 * 2**20

SYSTEM_SID = "S-1-5-18"
ADMINISTRATORS_SID = "S-1-5-32-544"

# PowerShell treats these as single quotes too: all must be doubled inside a '...' literal.
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

PRELUDE = r"""$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$OutputEncoding = New-Object System.Text.UTF8Encoding $false
$SgpfabState = @{ Changed = $false }
function Write-NativeLine($Line) {
  if ($Line -is [System.Management.Automation.ErrorRecord]) { [Console]::Error.WriteLine($Line.ToString()) } else { $Line }
}
function Invoke-Native([string]$Exe, [string[]]$Arguments, $Stdin) {
  $ErrorActionPreference = 'Continue'
  $global:LASTEXITCODE = 0
  if ($null -eq $Stdin) { & $Exe @Arguments 2>&1 | ForEach-Object { Write-NativeLine $_ } }
  else { $Stdin | & $Exe @Arguments 2>&1 | ForEach-Object { Write-NativeLine $_ } }
}
function Invoke-Checked([string]$Exe, [string[]]$Arguments, $Stdin = $null) {
  Invoke-Native $Exe $Arguments $Stdin
  if ($LASTEXITCODE -ne 0) { throw ('{0} exited with code {1}' -f $Exe, $LASTEXITCODE) }
}
function Invoke-Passthrough([string]$Exe, [string[]]$Arguments, $Stdin = $null) {
  Invoke-Native $Exe $Arguments $Stdin
}
function Invoke-PythonSource([string]$Python, [string[]]$Arguments, [string]$Source) {
  $t = Join-Path ([IO.Path]::GetTempPath()) ('sgpfab-' + [Guid]::NewGuid().ToString('N') + '.py')
  [IO.File]::WriteAllText($t, $Source, (New-Object System.Text.UTF8Encoding $false))
  try { Invoke-Checked $Python (@('-X', 'utf8', $t) + $Arguments) }
  finally { Remove-Item -LiteralPath $t -Force -ErrorAction SilentlyContinue }
}
function New-Directories([string[]]$Paths) {
  foreach ($p in $Paths) { [IO.Directory]::CreateDirectory($p) | Out-Null }
}
function New-EmptyFile([string]$Path) {
  if (-not [IO.File]::Exists($Path)) { [IO.File]::WriteAllBytes($Path, [byte[]]@()) }
}
function Reset-Directory([string]$Path) {
  if ([IO.Directory]::Exists($Path)) { Remove-Item -LiteralPath $Path -Recurse -Force }
  [IO.Directory]::CreateDirectory($Path) | Out-Null
}
function Remove-Tree([string]$Path) {
  if ([IO.Directory]::Exists($Path)) { Remove-Item -LiteralPath $Path -Recurse -Force }
  elseif ([IO.File]::Exists($Path)) { [IO.File]::Delete($Path) }
}
function Move-Replace([string]$Source, [string]$Destination) {
  if ([IO.File]::Exists($Destination)) { [IO.File]::Replace($Source, $Destination, [NullString]::Value) }
  else { [IO.File]::Move($Source, $Destination) }
}
function Write-Base64File([string]$Path, [string]$Data) {
  [IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName($Path)) | Out-Null
  [IO.File]::WriteAllBytes($Path + '.sgpfab-tmp', [Convert]::FromBase64String($Data))
  Move-Replace ($Path + '.sgpfab-tmp') $Path
}
function Read-FileBase64([string]$Path) {
  [Convert]::ToBase64String([IO.File]::ReadAllBytes($Path))
}
function Get-Sha256Lines([string[]]$Paths) {
  foreach ($p in $Paths) {
    if ([IO.File]::Exists($p)) { (Get-FileHash -Algorithm SHA256 -LiteralPath $p).Hash.ToLower() + ' ' + $p }
  }
}
function Get-TreeHashes([string]$Root) {
  [IO.Directory]::CreateDirectory($Root) | Out-Null
  $full = [IO.Path]::GetFullPath($Root).TrimEnd('\')
  Get-ChildItem -LiteralPath $Root -Recurse -File -Force | ForEach-Object {
    $_.FullName.Substring($full.Length + 1).Replace('\', '/') + ' ' + (Get-FileHash -Algorithm SHA256 -LiteralPath $_.FullName).Hash.ToLower()
  }
}
function Remove-Files([string[]]$Paths) {
  foreach ($p in $Paths) { if ([IO.File]::Exists($p)) { [IO.File]::Delete($p) } }
}
function Get-DirectoryNames([string]$Path) {
  if ([IO.Directory]::Exists($Path)) { Get-ChildItem -LiteralPath $Path -Force -Name }
}
function Get-LogTail([string]$Path, [int]$Lines, [string]$Prefix) {
  if ([IO.File]::Exists($Path)) { Get-Content -LiteralPath $Path -Tail $Lines | ForEach-Object { $Prefix + $_ } }
}
function Find-Uv([string]$Path) {
  if ([IO.File]::Exists($Path)) { $Path }
  else { $c = Get-Command -Name uv.exe -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1; if ($c) { $c.Path } }
}
function Get-NssmVersion {
  $c = Get-Command -Name nssm.exe -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
  if ($c) { 'NSSM ' + [Diagnostics.FileVersionInfo]::GetVersionInfo($c.Path).FileVersion }
}
function New-ProbeToken([string]$Path) {
  if ([IO.File]::Exists($Path)) { return }
  $b = New-Object byte[] 24
  [Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($b)
  $t = -join ($b | ForEach-Object { $_.ToString('x2') })
  [IO.File]::WriteAllText($Path, ('SGPFAB_PROBE_TOKEN=' + $t + "`n"), (New-Object System.Text.UTF8Encoding $false))
  Invoke-Checked 'icacls.exe' @($Path, '/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)', '/Q') | Out-Null
}
function Protect-Directory([string]$Path) {
  Invoke-Checked 'icacls.exe' @($Path, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F', '/Q') | Out-Null
}
function Grant-Access([string]$Path, [string]$Sid, [string]$Rights) {
  $rules = (Get-Acl -LiteralPath $Path).GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])
  foreach ($r in $rules) { if ($r.IdentityReference.Value -eq $Sid) { return } }
  Invoke-Checked 'icacls.exe' @($Path, '/grant', ('*' + $Sid + ':' + $Rights), '/Q') | Out-Null
}
function Resolve-AccountSid([string]$Account) {
  if ($Account.StartsWith('.\')) { $Account = $env:COMPUTERNAME + $Account.Substring(1) }
  (New-Object System.Security.Principal.NTAccount($Account)).Translate([System.Security.Principal.SecurityIdentifier]).Value
}
function Grant-AccountAccess([string]$Path, [string]$Account, [string]$Rights) {
  Grant-Access $Path (Resolve-AccountSid $Account) $Rights
}
function Set-ServiceAccount([string]$Name, [string]$Account, $Password = $null) {
  $svc = Get-CimInstance -ClassName Win32_Service -Filter ("Name='" + $Name + "'")
  if ($null -eq $svc) { throw ('no service named {0}' -f $Name) }
  $same = $svc.StartName -eq $Account
  if ($same -and $null -eq $Password) { return }
  $arguments = @{ StartName = $Account }
  if ($null -ne $Password) { $arguments['StartPassword'] = [string]$Password }
  $r = Invoke-CimMethod -InputObject $svc -MethodName Change -Arguments $arguments
  if ($r.ReturnValue -ne 0) { throw ('Win32_Service.Change of {0} returned {1}' -f $Name, $r.ReturnValue) }
  if (-not $same) { $SgpfabState.Changed = $true }
}
function Get-NssmValue([string]$Name, [string[]]$Parameter) {
  $ErrorActionPreference = 'Continue'
  $out = & nssm.exe get $Name @Parameter 2>$null | Out-String
  $global:LASTEXITCODE = 0
  $out.Trim()
}
function Set-NssmValue([string]$Name, [string[]]$Parameter, [string[]]$Value) {
  if ((Get-NssmValue $Name $Parameter) -eq ($Value -join ' ')) { return }
  Invoke-Checked 'nssm.exe' (@('set', $Name) + $Parameter + $Value) | Out-Null
  $SgpfabState.Changed = $true
}
function Install-AppService([string]$Name, [string]$Application) {
  if (Get-Service -Name $Name -ErrorAction SilentlyContinue) { return }
  Invoke-Checked 'nssm.exe' @('install', $Name, $Application) | Out-Null
  $SgpfabState.Changed = $true
}
function Get-AppServices([string]$Service, [string]$Prefix) {
  foreach ($s in @(Get-Service -Name @($Service, ($Service + '-*')) -ErrorAction SilentlyContinue)) {
    if ((Get-NssmValue $s.Name @('Application')).StartsWith($Prefix, [StringComparison]::OrdinalIgnoreCase)) { $s.Name }
  }
}
function Wait-ServiceState([string]$Name, [string]$Want, [int]$Seconds) {
  $deadline = (Get-Date).AddSeconds($Seconds)
  while ([string](Get-Service -Name $Name).Status -ne $Want) {
    if ((Get-Date) -gt $deadline) { throw ('{0} did not reach {1} (now {2})' -f $Name, $Want, (Get-Service -Name $Name).Status) }
    Start-Sleep -Milliseconds 250
  }
}
function Wait-NotPending([string]$Name, [int]$Seconds) {
  $deadline = (Get-Date).AddSeconds($Seconds)
  while ([string](Get-Service -Name $Name).Status -match 'Pending$') {
    if ((Get-Date) -gt $deadline) { throw ('{0} is stuck in {1}' -f $Name, (Get-Service -Name $Name).Status) }
    Start-Sleep -Milliseconds 250
  }
}
function Stop-AppService([string]$Name) {
  if (-not (Get-Service -Name $Name -ErrorAction SilentlyContinue)) { return }
  Wait-NotPending $Name 60
  if ([string](Get-Service -Name $Name).Status -ne 'Stopped') {
    Stop-Service -Name $Name -Force
    Wait-ServiceState $Name 'Stopped' 120
  }
}
function Start-AppService([string]$Name) {
  Stop-AppService $Name
  Start-Service -Name $Name
}
function Stop-AppServices([string]$Service, [string]$Prefix) {
  foreach ($n in @(Get-AppServices $Service $Prefix)) { Stop-AppService $n }
}
function Disable-OtherAppServices([string]$Service, [string]$Prefix, [string[]]$Keep) {
  foreach ($n in @(Get-AppServices $Service $Prefix)) {
    if ($Keep -notcontains $n) {
      Stop-AppService $n
      Set-NssmValue $n @('Start') @('SERVICE_DISABLED')
    }
  }
}
"""


def q(value: str) -> str:
    """A PowerShell single-quoted literal of `value`, taken verbatim."""
    value = str(value)
    if "\0" in value:
        raise ValueError("NUL cannot be passed to PowerShell")
    out = "".join(ch * 2 if ch in _SINGLE_QUOTES else ch for ch in value)
    return f"'{out}'"


def _array(values: Iterable[str]) -> str:
    return "@(" + ", ".join(q(v) for v in values) + ")"


def _lay(inst: Instance) -> Layout:
    return Layout(inst.api_root, windows=True)


def _net_whitespace(ch: str) -> bool:
    """.NET's char.IsWhiteSpace, which Windows PowerShell 5.1 uses to decide on quoting."""
    if ord(ch) < 0x100:
        return ch in "\t\n\v\f\r \x85\xa0"
    return unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def native_arg_ok(value: str) -> bool:
    """Whether an argument reaches a native program unchanged through Windows PowerShell 5.1 and
    the C runtime: not empty (5.1 drops it), not `--%`, no double quote (not escaped), no NUL,
    and no backslash at the end of an argument that 5.1 wraps in quotes (it would escape the
    closing quote)."""
    if not value or value == "--%" or '"' in value or "\0" in value:
        return False
    return not (value.endswith("\\") and any(_net_whitespace(c) for c in value))


def _check_native(*values: str) -> None:
    for v in values:
        if not native_arg_ok(v):
            raise ValueError(f"refusing a native argument Windows PowerShell 5.1 would mangle: {v!r}")


def _native(exe: str, *args: str, stdin: bool = False, checked: bool = True) -> str:
    _check_native(*args)
    call = f"{'Invoke-Checked' if checked else 'Invoke-Passthrough'} {q(exe)} {_array(args)}"
    return call + (" -Stdin $SgpfabStdin" if stdin else "")


def _script(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def join(*parts: str) -> str:
    return ntpath.join(*parts)


# -- accounts -------------------------------------------------------------------------------------


def service_name(inst: Instance, process: str) -> str:
    return Units(inst.service).windows_service(process)


def service_account(name: str) -> str:
    """The virtual account a service runs as (NSSM sets it without a password only for the
    service's own name: account.cpp is_virtual_account)."""
    return f"NT SERVICE\\{name}"


def service_sid(name: str) -> str:
    """The SID of `NT SERVICE\\<name>`: S-1-5-80 followed by the SHA-1 of the upper-cased name in
    UTF-16LE, as five little-endian 32-bit numbers (what `sc showsid` prints). It exists before
    the service does, so rights can be granted first."""
    digest = hashlib.sha1(name.upper().encode("utf-16-le")).digest()
    return "S-1-5-80-" + "-".join(str(n) for n in struct.unpack("<5I", digest))


def named_account(inst: Instance) -> str | None:
    """The app's named run_as account (`DOMAIN\\user`, `.\\user`, `DOMAIN\\gmsa$`), or None when
    each service runs as its own virtual account."""
    return inst.run_as


def _account_password(inst: Instance, password: str | None) -> str | None:
    """The password to give Win32_Service.Change: required for a named account, refused for a
    gMSA and for virtual accounts (the messages never hold it)."""
    account = named_account(inst)
    if account is None or winaccount.is_gmsa(account):
        if password is not None:
            raise ValueError("a password is only given for a named run_as account that is not a gMSA")
        return None
    if password is None:
        raise InputError(
            f"{inst.host.name}: run_as {account} needs its password (run_as_password) to install the services"
        )
    return password


# -- setup ----------------------------------------------------------------------------------------


def prepare(inst: Instance, login_user: str, service_user: str) -> Cmd:
    """API_ROOT's tree (idempotent); shared\\config readable by SYSTEM and the administrators
    only (each service's account gets read access in `install_processes`)."""
    lay = _lay(inst)
    dirs = [*lay.owned_dirs, lay.shared, *lay.shared_dirs, lay.backups, lay.config_dir]
    if inst.database.engine == "sqlite":
        dirs.append(ntpath.dirname(lay.database(inst.database.path)))
    _check_native(lay.config_dir)
    return Cmd(
        _script(
            f"New-Directories {_array(sorted(set(dirs)))}",
            f"New-EmptyFile {q(join(lay.tools, 'ops.lock'))}",
            f"Protect-Directory {q(lay.config_dir)}",
        ),
        privileged=True,
    )


def hostctl(
    inst: Instance, *args: str, stdin: bytes | None = None, as_user: str | None = None, timeout: float = 600
) -> Cmd:
    """Run the host helper (`-X utf8`: stdin, stdout and files as UTF-8). WinRM sessions run as
    the deploying administrator: `as_user` has no equivalent here."""
    lay = _lay(inst)
    return Cmd(
        _script(
            _native(inst.interpreter, "-X", "utf8", lay.hostctl, "--root", lay.root, *args, stdin=stdin is not None)
        ),
        stdin=stdin,
        timeout=timeout,
    )


def hostctl_from_stdin(inst: Instance, source: bytes, *args: str) -> Cmd:
    """The host helper without installing it: its source becomes a temporary file."""
    rest = ["--root", _lay(inst).root, *args]
    _check_native(inst.interpreter, *rest)
    return Cmd(
        _script(f"Invoke-PythonSource {q(inst.interpreter)} {_array(rest)} $SgpfabStdin"), stdin=source, timeout=120
    )


def sha256_many(paths: list[str]) -> Cmd:
    """Prints 'sha256 path' for each file that exists."""
    return Cmd(_script(f"Get-Sha256Lines {_array(paths)}"))


def write_files(directory: str, files: Mapping[str, tuple[str | bytes, int]], privileged: bool = False) -> Cmd:
    """Write files (relative path -> content) under `directory`, each to a temporary name first
    and then moved over the old one."""
    lines = []
    for rel in sorted(files):
        content = files[rel][0]
        data = content.encode() if isinstance(content, str) else content
        lines.append(f"Write-Base64File {q(join(directory, *rel.split('/')))} {q(base64.b64encode(data).decode())}")
    return Cmd(_script(*lines), privileged=privileged)


def ensure_probe_token(inst: Instance) -> Cmd:
    """The health probes' secret (made once; SYSTEM and administrators only; the web service's
    account gets read access in `install_processes`)."""
    env = _lay(inst).launch_env
    _check_native(env)
    return Cmd(_script(f"New-ProbeToken {q(env)}"))


def build_venv(inst: Instance, version: Version, uv: str, requirements: str, extra: tuple[str, ...] = ()) -> Cmd:
    lay = _lay(inst)
    return Cmd(
        _script(
            "$env:UV_OFFLINE = '1'",
            "$env:UV_PYTHON_DOWNLOADS = 'never'",
            "$env:UV_NO_PROGRESS = '1'",
            "$env:UV_NO_CONFIG = '1'",
            f"$env:UV_CACHE_DIR = {q(join(lay.tools, 'uv-cache'))}",
            f"Set-Location -LiteralPath {q(lay.partial(version))}",
            _native(uv, "venv", "--quiet", "--relocatable", "--python", inst.interpreter, ".venv"),
            _native(
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                ".venv\\Scripts\\python.exe",
                "--no-index",
                "--find-links",
                lay.wheelhouse,
                "-r",
                requirements,
                *extra,
            ),
        ),
        timeout=1800,
    )


def release_files(inst: Instance, release: str, spec: AppSpec) -> Cmd:
    lay = _lay(inst)
    return write_files(lay.in_release(release, ".sgpfab"), windows_release_files(lay, release, spec, inst))


def make_writable(inst: Instance, release: str, dirs: tuple[str, ...], service_user: str) -> Cmd:
    """The release's writable directories (each service's account gets modify rights on them in
    `install_processes`)."""
    lay = _lay(inst)
    return Cmd(
        _script(f"New-Directories {_array(lay.in_release(release, *d.split('/')) for d in dirs)}"), privileged=True
    )


# -- services -------------------------------------------------------------------------------------


def _python(lay: Layout, release: str) -> str:
    return lay.in_release(release, ".venv", "Scripts", "python.exe")


def nssm_settings(
    inst: Instance, release: str, process: str, web: bool
) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """((parameter[, subparameter]), (value, ...)) for `nssm set`: `process` of `release` through
    winrun.py. NSSM joins several values with blanks, so AppParameters goes as separate tokens
    and the command line NSSM builds ('"Application" AppParameters') needs no quotes: winrun.py
    is named relative to AppDirectory. ObjectName (the virtual account) only when the app has no
    named run_as account: that one is set by `Set-ServiceAccount`, not by nssm.exe."""
    lay = _lay(inst)
    params = ["winrun.py", "--release", release, "--process", process] + (["--web"] if web else [])
    log = join(lay.logs, f"{process}.log")
    return [
        (("Application",), (_python(lay, release),)),
        (("AppParameters",), tuple(params)),
        (("AppDirectory",), (lay.launch,)),
        (("AppStdout",), (log,)),
        (("AppStderr",), (log,)),
        (("AppRotateFiles",), ("1",)),
        (("AppRotateOnline",), ("1",)),
        (("AppRotateBytes",), (str(LOG_ROTATE_BYTES),)),
        (("AppExit", "Default"), ("Restart",)),
        (("AppRestartDelay",), (str(APP_RESTART_DELAY_MS),)),
        (("AppThrottle",), (str(APP_THROTTLE_MS),)),
        (("AppStopMethodConsole",), (str(APP_STOP_CONSOLE_MS),)),
        (("AppKillProcessTree",), ("1",)),
        *([] if named_account(inst) else [(("ObjectName",), (service_account(service_name(inst, process)),))]),
        (("Start",), ("SERVICE_AUTO_START",)),
    ]


def install_processes(
    inst: Instance, release: str, spec: AppSpec, service_user: str, password: str | None = None
) -> Cmd:
    """Each process an NSSM service pointing at `release` (installed when missing; a setting is
    set only when `nssm get` shows another value; prints UNITS_CHANGED when any changed), running
    as its virtual account, or as the app's named run_as account, with the rights it needs. The
    app's other services (named SERVICE-* and running from this API_ROOT) are stopped and
    disabled.

    A named account is first granted "Log on as a service" (hostctl grant-logon, as nssm.exe does
    for `set ObjectName`), then set on each service by `Set-ServiceAccount` (CIM
    Win32_Service.Change, not nssm.exe's command line); its `password` becomes the script's stdin
    ($SgpfabStdin) and appears nowhere in the script. A gMSA is set without a password."""
    lay = _lay(inst)
    account = named_account(inst)
    password = _account_password(inst, password)
    lines = []
    if account is not None:
        _check_native(account)
        lines.append(
            _native(
                inst.interpreter, "-X", "utf8", lay.hostctl, "--root", lay.root, "grant-logon", "--account", account
            )
        )
    for process in spec.processes:
        name = service_name(inst, process)
        sid = service_sid(name)
        python = _python(lay, release)
        _check_native(name, python)
        lines.append(f"Install-AppService {q(name)} {q(python)}")
        for param, values in nssm_settings(inst, release, process, process == "web"):
            _check_native(*param, *values)
            lines.append(f"Set-NssmValue {q(name)} {_array(param)} {_array(values)}")
        if account is not None:
            lines.append(f"Set-ServiceAccount {q(name)} {q(account)}" + (" $SgpfabStdin" if password else ""))
        grants = [(lay.root, "(OI)(CI)RX"), (lay.shared, "(OI)(CI)M"), (lay.config_dir, "(OI)(CI)RX")]
        if process == "web":
            grants.append((lay.launch_env, "(R)"))
        writable = [lay.in_release(release, *d.split("/")) for d in spec.writable]
        if writable:
            lines.append(f"New-Directories {_array(writable)}")
        grants += [(d, "(OI)(CI)M") for d in writable]
        for path, rights in grants:
            _check_native(path)
            line = (
                f"Grant-Access {q(path)} {q(sid)} {q(rights)}"
                if account is None
                else f"Grant-AccountAccess {q(path)} {q(account)} {q(rights)}"
            )  # one account: once
            if line not in lines:
                lines.append(line)
    keep = [service_name(inst, p) for p in spec.processes]
    lines.append(f"Disable-OtherAppServices {q(inst.service)} {q(lay.releases + chr(92))} {_array(keep)}")
    lines.append(f"if ($SgpfabState.Changed) {{ {q(UNITS_CHANGED)} }}")
    return Cmd(_script(*lines), stdin=password.encode("utf-8") if password else None, privileged=True)


def process_id(inst: Instance, release: str, process: str) -> str:
    return service_name(inst, process)


def start_processes(inst: Instance, release: str, names: list[str]) -> Cmd:
    """(Re)start the services, so that each runs what `install_processes` last set (every
    release shares the app's services: a running one may still run another release)."""
    return Cmd(_script(*(f"Start-AppService {q(service_name(inst, n))}" for n in names)), privileged=True)


def stop_processes(inst: Instance, release: str, names: list[str], *, wait: bool = True) -> Cmd:
    """Stop these services (always waiting: `wait` exists for the Linux signature; Windows never
    hands over between two web processes, see CAN_OVERLAP)."""
    return Cmd(_script(*(f"Stop-AppService {q(service_name(inst, n))}" for n in names)), privileged=True)


def stop_all_but(inst: Instance, release: str | None) -> Cmd:
    """On Windows every release shares the app's services (`install_processes` already stopped
    the ones `release` does not have): stopping 'all but a release' stops nothing; with None,
    every service of the app stops."""
    if release is not None:
        return Cmd("$null\n")
    return Cmd(_script(f"Stop-AppServices {q(inst.service)} {q(_lay(inst).releases + chr(92))}"), privileged=True)


def _winrun(lay: Layout, release: str, *args: str, stdin: bool = False) -> str:
    return _native(
        _python(lay, release), join(lay.launch, "winrun.py"), "--release", release, *args, stdin=stdin, checked=False
    )


def run_hook(inst: Instance, release: str, index: int, service_user: str, timeout: float = 3600) -> Cmd:
    """A release command in the release's environment (winrun.py loads the settings); the
    script exits with its code. It runs as the deploying administrator: Windows has no `sudo -u`
    for a virtual account (see docs/windows.md)."""
    return Cmd(_script(_winrun(_lay(inst), release, "--hook", str(int(index)))), privileged=True, timeout=timeout)


def exec_in_release(inst: Instance, release: str, command: str, service_user: str, tty: bool) -> Cmd:
    """A one-off command in the release's environment (as the deploying administrator); the
    command travels on stdin, never on a command line."""
    if tty:
        raise InputError(f"{inst.host.name}: interactive commands are not supported on Windows hosts")
    return Cmd(
        _script(_winrun(_lay(inst), release, "--exec", stdin=True)),
        stdin=command.encode("utf-8"),
        privileged=True,
        timeout=3600,
    )


def process_log(inst: Instance, process: str, lines: int = 20) -> Cmd:
    return Cmd(_script(f"Get-LogTail {q(join(_lay(inst).logs, process + '.log'))} {int(lines)} ''"))


def logs(inst: Instance, processes: list[str], lines: int, since: str | None, follow: bool) -> Cmd:
    """The last lines of each process's log file, as 'PROCESS: line' (NSSM's log files carry no
    time stamps, so --since and --follow are refused)."""
    if since or follow:
        raise InputError(f"{inst.host.name}: --since and --follow are not supported on Windows hosts")
    lay = _lay(inst)
    return Cmd(
        _script(*(f"Get-LogTail {q(join(lay.logs, p + '.log'))} {int(lines)} {q(p + ': ')}" for p in processes)),
        timeout=120,
    )


def health_url(inst: Instance) -> str:
    addr = "127.0.0.1" if inst.bind in ("0.0.0.0", "::", "") else inst.bind
    if ":" in addr:
        addr = f"[{addr}]"
    return f"http://{addr}:{inst.port}{inst.health.path}"


def remove_tree(path: str, privileged: bool = False) -> Cmd:
    return Cmd(_script(f"Remove-Tree {q(path)}"), privileged=privileged)


def list_dir(path: str) -> Cmd:
    """Names in a directory, one a line (nothing if it does not exist)."""
    return Cmd(_script(f"Get-DirectoryNames {q(path)}"))


# -- NSSM's version ---------------------------------------------------------------------------------


def nssm_version() -> Cmd:
    """'NSSM ' and the FileVersion of nssm.exe's version resource (nssm.rc: NSSM_VERSION, e.g.
    '2.24' or '2.24-101-g897c7ad'). Read from the file, not by running nssm.exe: 2.24 has no
    --version, and its usage text goes to a message box when there is no console window."""
    return Cmd("Get-NssmVersion\n", timeout=60)


_NSSM_VERSION = re.compile(r"(?:^|[\s:])(?:NSSM|Version)\s+(\d+)\.(\d+)(?:-(\d+)-g[0-9a-f]+)?(?![\d.])", re.ASCII)


def parse_nssm_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, commits since the tag) from what NSSM says about its version: the
    FileVersion string ('NSSM 2.24-101-g897c7ad'), `nssm --version` (2.24-101+: 'NSSM
    2.24-101-g897c7ad 64-bit 2017-04-26') or the usage banner ('Version 2.24 64-bit, 2014-08-31')."""
    m = _NSSM_VERSION.search(text or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
