"""What to run on a Windows host: pure functions that return PowerShell scripts (`Cmd`).

The same functions as `linux`, for hosts with `os: windows` (reached over WinRM). Every value
is passed through `q`, which makes a single-quoted PowerShell literal (no expansion of `$`, `` ` ``
or subexpressions; quote characters, the typographic ones PowerShell also treats as quotes
included, are doubled). Native programs run through `Invoke-Checked` (see PRELUDE), which throws
when they exit non-zero; their arguments never carry JSON, quotes or a trailing backslash
(Windows PowerShell 5.1 re-quotes native arguments without escaping, PowerShell issue #1995):
structured data travels on stdin (`$SgpfabStdin`, see transport/winrm.py). Each process of the
app is an NSSM service started through launch\\winrun.py, which loads the app's settings file.
None of this was executed on a real Windows host here: see docs/windows.md.
"""

from __future__ import annotations

import ntpath

from .cmd import Cmd
from .layout import Layout, Units
from .runfiles import windows_release_files

CAN_OVERLAP = False  # one service per process: a new release restarts it
UNITS_CHANGED = "sgpfab:units-changed"
NSSM_MIN_VERSION = (2, 24, 101)  # 2.24 leaves services paused on Windows 10 1703+ / Server 2019

# PowerShell treats these as single quotes too: all must be doubled inside a '...' literal.
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"

PRELUDE = """$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$OutputEncoding = New-Object System.Text.UTF8Encoding $false
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


def _lay(inst) -> Layout:
    return Layout(inst.api_root, windows=True)


def native_arg_ok(value: str) -> bool:
    """Arguments that reach a native program unchanged through Windows PowerShell 5.1: no double
    quotes, and no backslash at the end of an argument that 5.1 would wrap in quotes."""
    return '"' not in value and not (value.endswith("\\") and any(c.isspace() for c in value))


def _native(exe: str, *args: str, stdin: bool = False) -> str:
    for a in args:
        if not native_arg_ok(a):
            raise ValueError(f"refusing a native argument PowerShell 5.1 would mangle: {a!r}")
    call = f"Invoke-Checked {q(exe)} {_array(args)}"
    return f"$SgpfabStdin | {call}" if stdin else call


def join(*parts: str) -> str:
    return ntpath.join(*parts)


def hostctl(inst, *args: str, stdin: bytes | None = None, as_user: str | None = None, timeout: float = 600) -> Cmd:
    """Run the host helper (WinRM sessions run as the deploying administrator: `as_user` has no
    meaning here; the service account gets its rights from prepare)."""
    lay = _lay(inst)
    return Cmd(_native(inst.interpreter, lay.hostctl, "--root", lay.root, *args, stdin=stdin is not None),
               stdin=stdin, timeout=timeout)


def hostctl_from_stdin(inst, source: bytes, *args: str) -> Cmd:
    """The host helper without installing it: its source becomes a temporary file."""
    rest = ["--root", inst.api_root, *args]
    for a in rest:
        if not native_arg_ok(a):
            raise ValueError(f"refusing a native argument PowerShell 5.1 would mangle: {a!r}")
    return Cmd("$t = [IO.Path]::GetTempFileName() + '.py'\n"
               "[IO.File]::WriteAllText($t, $SgpfabStdin, (New-Object System.Text.UTF8Encoding $false))\n"
               f"try {{ Invoke-Checked {q(inst.interpreter)} (@($t) + {_array(rest)}) }}"
               " finally { Remove-Item -LiteralPath $t -Force }", stdin=source, timeout=120)


def prepare(inst, login_user: str, service_user: str) -> Cmd:
    """API_ROOT's tree (idempotent); the service account may read the releases and write
    shared\\ and backups\\; shared\\config is the service account's and the administrators' only."""
    lay = _lay(inst)
    dirs = [*lay.owned_dirs, lay.shared, *lay.shared_dirs, lay.backups, lay.config_dir]
    if inst.database.engine == "sqlite":
        dirs.append(ntpath.dirname(lay.database(inst.database.path)))
    script = [f"foreach ($d in {_array(sorted(set(dirs)))}) {{ New-Item -ItemType Directory -Force -Path $d | Out-Null }}",
              f"New-Item -ItemType File -Force -Path {q(lay.tools + chr(92) + 'ops.lock')} | Out-Null"]
    script.append(_native("icacls.exe", lay.root, "/grant", f"{service_user}:(OI)(CI)RX", "/Q"))
    for d in (lay.shared, lay.backups):
        script.append(_native("icacls.exe", d, "/grant", f"{service_user}:(OI)(CI)M", "/T", "/Q"))
    script.append(_native("icacls.exe", lay.config_dir, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F",
                          "*S-1-5-32-544:(OI)(CI)F", f"{service_user}:(OI)(CI)M", "/Q"))
    return Cmd("\n".join(script), privileged=True)


def sha256_many(paths: list[str]) -> Cmd:
    """Prints 'sha256 path' for each file that exists."""
    return Cmd(f"foreach ($p in {_array(paths)}) {{ if (Test-Path -LiteralPath $p -PathType Leaf) {{"
               " (Get-FileHash -Algorithm SHA256 -LiteralPath $p).Hash.ToLower() + ' ' + $p } }")


def write_files(directory: str, files: dict[str, tuple[str | bytes, int]], privileged: bool = False) -> Cmd:
    """Write files (relative path -> content) under `directory` from base64 literals, each to a
    temporary name first and then moved over the old one."""
    import base64
    lines = [f"$base = {q(directory)}"]
    for rel in sorted(files):
        content = files[rel][0]
        data = content.encode() if isinstance(content, str) else content
        path = directory + "\\" + rel.replace("/", "\\")
        lines += [
            f"$p = {q(path)}; [IO.Directory]::CreateDirectory([IO.Path]::GetDirectoryName($p)) | Out-Null",
            f"[IO.File]::WriteAllBytes($p + '.sgpfab-tmp', [Convert]::FromBase64String({q(base64.b64encode(data).decode())}))",
            "Move-Item -Force -LiteralPath ($p + '.sgpfab-tmp') -Destination $p",
        ]
    return Cmd("\n".join(lines), privileged=privileged)


def ensure_probe_token(inst) -> Cmd:
    env = _lay(inst).launch_env
    return Cmd(f"if (-not (Test-Path -LiteralPath {q(env)})) {{\n"
               "  $b = New-Object byte[] 24; [Security.Cryptography.RandomNumberGenerator]::Create().GetBytes($b)\n"
               "  $t = -join ($b | ForEach-Object { $_.ToString('x2') })\n"
               f"  Set-Content -LiteralPath {q(env)} -Encoding ascii -Value ('SGPFAB_PROBE_TOKEN=' + $t)\n"
               f"  {_native('icacls.exe', env, '/inheritance:r', '/grant:r', '*S-1-5-18:(F)', '*S-1-5-32-544:(F)', '/Q')}\n"
               "}")


def which_uv(inst) -> Cmd:
    lay = _lay(inst)
    return Cmd(f"if (Test-Path -LiteralPath {q(lay.uv)}) {{ {q(lay.uv)} }}"
               " else { $c = Get-Command uv.exe -ErrorAction SilentlyContinue; if ($c) { $c.Source } }")


def stage_dir(inst, version) -> Cmd:
    p = _lay(inst).partial(version)
    return Cmd(f"if (Test-Path -LiteralPath {q(p)}) {{ Remove-Item -LiteralPath {q(p)} -Recurse -Force }}\n"
               f"New-Item -ItemType Directory -Force -Path {q(p)} | Out-Null")


def build_venv(inst, version, uv: str, requirements: str, extra: tuple[str, ...] = ()) -> Cmd:
    lay = _lay(inst)
    return Cmd("\n".join([
        "$env:UV_OFFLINE = '1'; $env:UV_PYTHON_DOWNLOADS = 'never'; $env:UV_NO_PROGRESS = '1'; $env:UV_NO_CONFIG = '1'",
        f"$env:UV_CACHE_DIR = {q(lay.tools + chr(92) + 'uv-cache')}",
        f"Set-Location -LiteralPath {q(lay.partial(version))}",
        _native(uv, "venv", "--quiet", "--relocatable", "--python", inst.interpreter, ".venv"),
        _native(uv, "pip", "install", "--quiet", "--python", ".venv\\Scripts\\python.exe", "--no-index",
                "--find-links", lay.wheelhouse, "-r", requirements, *extra),
    ]), timeout=1800)


def release_files(inst, release: str, spec) -> Cmd:
    lay = _lay(inst)
    return write_files(lay.in_release(release, ".sgpfab"), windows_release_files(lay, release, spec, inst))


def make_writable(inst, release: str, dirs: tuple[str, ...], service_user: str) -> Cmd:
    lay = _lay(inst)
    lines = []
    for d in dirs:
        path = lay.in_release(release, *d.split("/"))
        lines.append(f"New-Item -ItemType Directory -Force -Path {q(path)} | Out-Null")
        lines.append(_native("icacls.exe", path, "/grant", f"{service_user}:(OI)(CI)M", "/Q"))
    return Cmd("\n".join(lines), privileged=True)


def service_name(inst, process: str) -> str:
    return Units(inst.service).windows_service(process)


def nssm_settings(inst, release: str, process: str, web: bool, service_user: str) -> list[tuple[str, ...]]:
    """(parameter, value...) for `nssm set`: the process of `release`, through winrun.py."""
    lay = _lay(inst)
    rel = lay.in_release(release)
    params = f'"{lay.launch}\\winrun.py" --root "{lay.root}" --release {release} --process {process}'
    if web:
        params += " --web"
    return [
        ("Application", lay.in_release(release, ".venv", "Scripts", "python.exe")),
        ("AppParameters", params),
        ("AppDirectory", rel),
        ("AppStdout", f"{lay.logs}\\{process}.log"),
        ("AppStderr", f"{lay.logs}\\{process}.log"),
        ("AppRotateFiles", "1"),
        ("AppRotateOnline", "1"),
        ("AppRotateBytes", "10485760"),
        ("AppExit", "Default", "Restart"),
        ("AppRestartDelay", "1000"),
        ("AppThrottle", "5000"),
        ("AppStopMethodConsole", "15000"),
        ("AppKillProcessTree", "1"),
        ("ObjectName", service_user),
        ("Start", "SERVICE_AUTO_START"),
    ]


def install_processes(inst, release: str, spec, service_user: str) -> Cmd:
    """Each process an NSSM service pointing at `release` (installed when missing; a setting is
    set only when it differs; prints UNITS_CHANGED when any did). Services of processes the
    release does not have are stopped and disabled. LocalSystem and Administrator are refused."""
    lines = ["$changed = $false"]
    for process in spec.processes:
        name = service_name(inst, process)
        lines += [
            f"if (-not (Get-Service -Name {q(name)} -ErrorAction SilentlyContinue)) {{",
            "  " + _native("nssm.exe", "install", name, _lay(inst).in_release(release, ".venv", "Scripts", "python.exe")),
            "  $changed = $true",
            "}",
        ]
        for setting in nssm_settings(inst, release, process, process == "web", service_user):
            param, *values = setting
            lines += [
                f"$cur = (& nssm.exe get {q(name)} {q(param)} | Out-String).Trim()",
                f"if ($cur -ne {q(' '.join(values))}) {{ {_native('nssm.exe', 'set', name, *setting)}; $changed = $true }}",
            ]
    keep = [service_name(inst, p) for p in spec.processes]
    lines.append(f"Get-Service -Name {q(inst.service + '-*')} -ErrorAction SilentlyContinue | Where-Object"
                 f" {{ {_array(keep)} -notcontains $_.Name }} | ForEach-Object {{ Stop-Service -Name $_.Name -Force;"
                 " Set-Service -Name $_.Name -StartupType Disabled }")
    lines.append(f"if ($changed) {{ {q(UNITS_CHANGED)} }}")
    return Cmd("\n".join(lines), privileged=True)


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


def process_id(inst, release: str, process: str) -> str:
    return service_name(inst, process)


def start_processes(inst, release: str, names: list[str]) -> Cmd:
    lines = []
    for n in names:
        s = q(service_name(inst, n))
        lines += [f"Wait-NotPending {s} 60", f"if ((Get-Service -Name {s}).Status -ne 'Running') {{ Start-Service -Name {s} }}",
                  f"Wait-ServiceState {s} 'Running' 60"]
    return Cmd(_WAIT + "\n".join(lines), privileged=True)


def stop_processes(inst, release: str, names: list[str]) -> Cmd:
    lines = []
    for n in names:
        s = q(service_name(inst, n))
        lines.append(f"if (Get-Service -Name {s} -ErrorAction SilentlyContinue) {{ Wait-NotPending {s} 60;"
                     f" Stop-Service -Name {s} -Force; Wait-ServiceState {s} 'Stopped' 60 }}")
    return Cmd(_WAIT + "\n".join(lines), privileged=True)


def stop_all_but(inst, release: str | None) -> Cmd:
    """On Windows every release shares the app's services: stopping 'all but a release' stops
    nothing; stopping all (None) stops every service of the app."""
    if release is not None:
        return Cmd("$null")
    names = [inst.service, inst.service + "-*"]
    return Cmd(_WAIT + f"Get-Service -Name {_array(names)} -ErrorAction SilentlyContinue | ForEach-Object {{"
               " Wait-NotPending $_.Name 60; Stop-Service -Name $_.Name -Force; Wait-ServiceState $_.Name 'Stopped' 60 }",
               privileged=True)


def run_hook(inst, release: str, index: int, service_user: str, timeout: float = 3600) -> Cmd:
    """A release command, in the release's environment (winrun.py loads the settings). It runs
    as the deploying administrator: Windows has no sudo -u for a virtual service account."""
    lay = _lay(inst)
    python = lay.in_release(release, ".venv", "Scripts", "python.exe")
    return Cmd(_native(python, lay.launch + "\\winrun.py", "--root", lay.root, "--release", release,
                       "--hook", str(index)), privileged=True, timeout=timeout)


def process_log(inst, process: str, lines: int = 20) -> Cmd:
    log = f"{_lay(inst).logs}\\{process}.log"
    return Cmd(f"if (Test-Path -LiteralPath {q(log)}) {{ Get-Content -LiteralPath {q(log)} -Tail {int(lines)} }}")


def health_url(inst) -> str:
    addr = "127.0.0.1" if inst.bind in ("0.0.0.0", "::", "") else inst.bind
    if ":" in addr:
        addr = f"[{addr}]"
    return f"http://{addr}:{inst.port}{inst.health.path}"


def nssm_version() -> Cmd:
    """NSSM's version from its usage banner (e.g. 'NSSM 2.24-101-g897c7ad 64-bit 2017-04-26')."""
    return Cmd("$o = (& nssm.exe 2>&1 | Out-String); ($o -split \"`n\")[0].Trim()")


def parse_nssm_version(banner: str) -> tuple[int, ...] | None:
    import re
    m = re.search(r"NSSM\s+(\d+)\.(\d+)(?:-(\d+))?", banner)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
