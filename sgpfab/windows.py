"""What to run on a Windows host: pure functions that return PowerShell scripts.

The same functions as `linux`, for hosts with `os: windows` (reached over WinRM). Every value is
passed through `q`, which makes a single-quoted PowerShell literal (no expansion of `$`, `` ` ``
or subexpressions; quote characters, including the typographic ones PowerShell also treats as
quotes, are doubled). Native programs are run through `Invoke-Checked` (see PRELUDE), which
throws when they exit non-zero. None of this was executed on a real Windows host here: see
docs/windows.md for what was and was not verified.
"""

from __future__ import annotations

from .inventory import Host
from .layout import Layout
from .linux import probe_args
from .versions import Version

# PowerShell treats these as single quotes too: all must be doubled inside a '...' literal.
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

PRELUDE = """$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Invoke-Checked([string]$Exe, [string[]]$Arguments) {
  & $Exe @Arguments
  if ($LASTEXITCODE -ne 0) { throw ("{0} exited with code {1}" -f $Exe, $LASTEXITCODE) }
}
"""


def q(value: str) -> str:
    """A PowerShell single-quoted literal of `value`, taken verbatim."""
    value = str(value)
    if "\0" in value:
        raise ValueError("NUL cannot be passed to PowerShell")
    out = "".join(ch * 2 if ch in _SINGLE_QUOTES else ch for ch in value)
    return f"'{out}'"


def _array(values) -> str:
    return "@(" + ", ".join(q(v) for v in values) + ")"


def _lay(host: Host) -> Layout:
    return Layout(host.api_root, windows=True)


def _native(exe: str, *args: str) -> str:
    return f"Invoke-Checked {q(exe)} {_array(args)}"


def prepare_dirs(host: Host, login_user: str) -> str:
    """Create API_ROOT's tree (idempotent); the service account may write shared\\ and backups\\."""
    lay = _lay(host)
    dirs = [*lay.owned_dirs, lay.shared, *lay.shared_dirs, lay.backups]
    script = f"foreach ($d in {_array(dirs)}) {{ New-Item -ItemType Directory -Force -Path $d | Out-Null }}"
    if host.service_user:
        for d in (lay.shared, lay.backups):
            script += "\n" + _native("icacls.exe", d, "/grant", f"{host.service_user}:(OI)(CI)M", "/T", "/Q")
    return script


def hostctl(host: Host, *args: str) -> str:
    lay = _lay(host)
    return _native(host.python, lay.hostctl, "--root", lay.root, *args)


def which_uv(host: Host) -> str:
    lay = _lay(host)
    return (f"if (Test-Path -LiteralPath {q(lay.uv)}) {{ {q(lay.uv)} }}"
            " else { $c = Get-Command uv.exe -ErrorAction SilentlyContinue; if ($c) { $c.Source } }")


def stage_dir(host: Host, version: Version) -> str:
    p = _lay(host).partial(version)
    return (f"if (Test-Path -LiteralPath {q(p)}) {{ Remove-Item -LiteralPath {q(p)} -Recurse -Force }}\n"
            f"New-Item -ItemType Directory -Force -Path {q(p)} | Out-Null")


def build_venv(host: Host, version: Version, uv: str, requirements: str = "requirements.txt") -> str:
    lay = _lay(host)
    d = lay.partial(version)
    return "\n".join([
        "$env:UV_OFFLINE = '1'; $env:UV_PYTHON_DOWNLOADS = 'never'; $env:UV_NO_PROGRESS = '1'",
        f"Set-Location -LiteralPath {q(d)}",
        _native(uv, "venv", "--quiet", "--relocatable", "--python", host.python, ".venv"),
        _native(uv, "pip", "install", "--quiet", "--python", ".venv\\Scripts\\python.exe", "--no-index",
                "--find-links", lay.wheelhouse, "-r", requirements),
    ])


def env_lines(host: Host, version: Version) -> list[str]:
    lay = _lay(host)
    return [
        f"API_ROOT={lay.root}",
        f"APP_VERSION={version}",
        f"PORT={host.port}",
        f"DATABASE_URL=sqlite:///{lay.database.replace(chr(92), '/')}",
        f"MEDIA_ROOT={lay.shared}\\media",
        f"LOG_DIR={lay.logs}",
    ]


def write_env(host: Host, version: Version) -> str:
    """Write .env, then cut inherited permissions: only SYSTEM, Administrators (and the service)."""
    path = _lay(host).partial(version) + "\\.env"
    grants = ["*S-1-5-18:(F)", "*S-1-5-32-544:(F)"] + ([f"{host.service_user}:(R)"] if host.service_user else [])
    return "\n".join([
        f"Set-Content -LiteralPath {q(path)} -Encoding ascii -Value {_array(env_lines(host, version))}",
        _native("icacls.exe", path, "/inheritance:r", "/grant:r", *grants, "/Q"),
    ])


def chown_env(host: Host, version: Version) -> str:
    """On Windows the service's read access is granted by write_env already."""
    return "$null"


def migrate(host: Host, version: Version, command: str) -> str:
    """The app's migration command in the new release, with its venv first on PATH and its .env set."""
    d = _lay(host).release(version)
    return "\n".join([
        f"Set-Location -LiteralPath {q(d)}",
        "Get-Content -LiteralPath '.env' | ForEach-Object { $k, $v = $_ -split '=', 2;"
        " if ($k) { Set-Item -Path ('env:' + $k) -Value $v } }",
        f"$env:PATH = {q(d + chr(92) + '.venv' + chr(92) + 'Scripts')} + ';' + $env:PATH",
        "& cmd.exe /d /s /c " + q(command),
        "if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }",
    ])


def nssm_settings(host: Host, module: str = "main:app") -> list[tuple[str, ...]]:
    """(parameter, value...) pairs for `nssm set`: idempotent, the same every time."""
    lay = _lay(host)
    current = lay.current
    logs = lay.logs
    return [
        ("Application", current + "\\.venv\\Scripts\\python.exe"),
        ("AppParameters", f"-m uvicorn {module} --host {host.bind} --port {host.port} --no-access-log"),
        ("AppDirectory", current),
        ("AppEnvironmentExtra", f"API_ROOT={lay.root}", f"PYTHONPATH={current}", f"PORT={host.port}"),
        ("AppStdout", f"{logs}\\{host.service}.out.log"),
        ("AppStderr", f"{logs}\\{host.service}.err.log"),
        ("AppRotateFiles", "1"),
        ("AppRotateOnline", "1"),
        ("AppRotateBytes", "10485760"),
        ("AppExit", "Default", "Restart"),
        ("AppRestartDelay", "1000"),
        ("AppStopMethodConsole", "15000"),
        ("Start", "SERVICE_AUTO_START"),
    ]


def install_service(host: Host, module: str) -> str:
    """Install the NSSM service when missing, then (re)apply every setting: idempotent."""
    name = host.service
    lines = [
        f"if (-not (Get-Service -Name {q(name)} -ErrorAction SilentlyContinue)) {{",
        "  " + _native("nssm.exe", "install", name, _lay(host).current + "\\.venv\\Scripts\\python.exe"),
        "}",
    ]
    lines += [_native("nssm.exe", "set", name, *setting) for setting in nssm_settings(host, module)]
    return "\n".join(lines)


_WAIT = """function Wait-ServiceState([string]$Name, [string]$Want, [int]$Seconds) {
  $deadline = (Get-Date).AddSeconds($Seconds)
  while ((Get-Service -Name $Name).Status -ne $Want) {
    if ((Get-Date) -gt $deadline) { throw ("{0} did not reach {1} (now {2})" -f $Name, $Want, (Get-Service -Name $Name).Status) }
    Start-Sleep -Milliseconds 250
  }
}
function Wait-NotPending([string]$Name, [int]$Seconds) {
  $deadline = (Get-Date).AddSeconds($Seconds)
  while ((Get-Service -Name $Name).Status -match 'Pending$') {
    if ((Get-Date) -gt $deadline) { throw ("{0} is stuck in {1}" -f $Name, (Get-Service -Name $Name).Status) }
    Start-Sleep -Milliseconds 250
  }
}
"""


def restart(host: Host) -> str:
    """Stop (waiting out *_PENDING states), start, and wait for Running."""
    n = q(host.service)
    return _WAIT + "\n".join([
        f"Wait-NotPending {n} 60",
        f"if ((Get-Service -Name {n}).Status -ne 'Stopped') {{ Stop-Service -Name {n} -Force; Wait-ServiceState {n} 'Stopped' 60 }}",
        f"Start-Service -Name {n}",
        f"Wait-ServiceState {n} 'Running' 60",
    ])


def stop(host: Host) -> str:
    n = q(host.service)
    return _WAIT + (f"if (Get-Service -Name {n} -ErrorAction SilentlyContinue) {{ Wait-NotPending {n} 60;"
                    f" Stop-Service -Name {n} -Force; Wait-ServiceState {n} 'Stopped' 60 }}")


def start(host: Host) -> str:
    n = q(host.service)
    return _WAIT + f"Start-Service -Name {n}\nWait-ServiceState {n} 'Running' 60"


def service_state(host: Host) -> str:
    """Prints running / stopped / start_pending ... (lower case), or 'missing'."""
    return (f"$s = Get-Service -Name {q(host.service)} -ErrorAction SilentlyContinue\n"
            "if ($s) { ([string]$s.Status).ToLower() -replace 'pending$', '_pending' } else { 'missing' }")


def service_logs(host: Host, lines: int = 20) -> str:
    log = f"{_lay(host).logs}\\{host.service}.err.log"
    return f"if (Test-Path -LiteralPath {q(log)}) {{ Get-Content -LiteralPath {q(log)} -Tail {int(lines)} }}"


def health_check(host: Host, expect_version: Version | None) -> str:
    """One probe (JSON line), then the service's restart count stand-in: 0 (NSSM throttles itself)."""
    return hostctl(host, *probe_args(host, expect_version)) + "\n'0'"


def remove_tree(path: str) -> str:
    return f"if (Test-Path -LiteralPath {q(path)}) {{ Remove-Item -LiteralPath {q(path)} -Recurse -Force }}"


def remove_link(path: str) -> str:
    """Remove a junction without touching its target (Remove-Item -Recurse would empty the target)."""
    return f"if (Test-Path -LiteralPath {q(path)}) {{ [System.IO.Directory]::Delete({q(path)}, $false) }}"


def file_sha256(path: str) -> str:
    return (f"if (Test-Path -LiteralPath {q(path)} -PathType Leaf) "
            f"{{ (Get-FileHash -Algorithm SHA256 -LiteralPath {q(path)}).Hash.ToLower() }}")


def file_exists(path: str) -> str:
    return f"if (Test-Path -LiteralPath {q(path)} -PathType Leaf) {{ 'yes' }}"


def list_dir(path: str) -> str:
    return f"if (Test-Path -LiteralPath {q(path)}) {{ Get-ChildItem -LiteralPath {q(path)} -Name }}"


def as_user(user: str, command: str) -> str:
    """WinRM runs as the deploying (administrator) account; the service account is set by NSSM."""
    return command
