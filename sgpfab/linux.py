"""What to run on a Linux host: pure functions that return commands (`Cmd`).

Nothing here does I/O. Every value that reaches a shell goes through `shlex.quote` (`q`);
file contents and structured data travel on stdin, never on a command line. Each function's
whole output is pinned by golden tests (tests/unit/test_linux_commands.py).
"""

from __future__ import annotations

import posixpath
import shlex
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .cmd import Cmd, targz_of
from .layout import Layout, Units
from .runfiles import release_files as _release_files
from .systemd import UNIT_DIR, units_for

if TYPE_CHECKING:
    from .appspec import AppSpec
    from .inventory import Instance
    from .versions import Version

q = shlex.quote

CAN_OVERLAP = True  # two releases' web processes can share the systemd socket
UNITS_CHANGED = "sgpfab:units-changed"
UV_ENV = "UV_OFFLINE=1 UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_NO_CONFIG=1"


def _lay(inst: Instance) -> Layout:
    return Layout.for_instance(inst)


def _group(user: str) -> str:
    return f'"$(id -gn {q(user)})"'


def prepare(inst: Instance, login_user: str, service_user: str) -> Cmd:
    """API_ROOT's tree with explicit owners (idempotent). The deploying user owns the code side;
    the service user owns shared/ (its settings private) and backups/."""
    lay = _lay(inst)
    data = [lay.shared, *lay.shared_dirs, lay.backups]
    if inst.database.engine == "sqlite":
        data.append(posixpath.dirname(lay.database(inst.database.path)))
    ops = f"{lay.tools}/ops.lock"
    return Cmd(
        f"install -d -m 755 -o {q(login_user)} -g {_group(login_user)} {' '.join(map(q, lay.owned_dirs))}"
        f" && install -d -m 750 -o {q(service_user)} -g {_group(service_user)} {' '.join(map(q, sorted(set(data))))}"
        f" && install -d -m 700 -o {q(service_user)} -g {_group(service_user)} {q(lay.config_dir)}"
        f" && touch {q(ops)} && chown {q(login_user)} {q(ops)} && chmod 644 {q(ops)}",
        privileged=True,
    )


def hostctl(
    inst: Instance, *args: str, stdin: bytes | None = None, as_user: str | None = None, timeout: float = 600
) -> Cmd:
    """Run the host helper with the host's interpreter (as `as_user` when given)."""
    lay = _lay(inst)
    text = " ".join([q(inst.host.interpreter), q(lay.hostctl), "--root", q(lay.root), *map(q, args)])
    if as_user:
        text = f"sudo -n -u {q(as_user)} {text}"
    return Cmd(text, stdin=stdin, timeout=timeout)


def write_files(directory: str, files: Mapping[str, tuple[str | bytes, int]], privileged: bool = False) -> Cmd:
    """Write files (relative path -> (content, mode)) under `directory` in one go, each replaced
    whole (a gzip-compressed tar on stdin)."""
    return Cmd(
        f"mkdir -p {q(directory)} && tar -x -z -f - -C {q(directory)} --no-same-owner --overwrite",
        privileged=privileged,
        stdin=targz_of(files),
    )


EXIT_START_FAILED = 75  # a chain's exit code when a process did not start (see start_processes)


def join(*parts: str) -> str:
    return posixpath.join(*parts)


def chain(parts: list[Cmd], login_is_root: bool = False) -> Cmd:
    """Several commands in one round trip, each in its own shell, stopping at the first that
    fails (its exit code is the chain's). Each part gets exactly its own stdin: the chain's
    stdin is the parts' data one after the other, and `dd` hands each part its slice."""
    segments = []
    for c in parts:
        body = f"sh -c {q(c.text)}"
        if c.privileged and not login_is_root:
            body = f"sudo -n {body}"
        if c.stdin:
            body = f"dd bs={len(c.stdin)} count=1 iflag=fullblock status=none | {body}"
        else:
            body += " </dev/null"
        segments.append(body)
    timeouts = [c.timeout for c in parts]
    timeout = None if any(t is None for t in timeouts) else sum(t for t in timeouts if t)
    return Cmd(" && ".join(segments), stdin=b"".join(c.stdin or b"" for c in parts) or None, timeout=timeout)


EXIT_NO_BASE = 4  # hostctl manifest: no copy of the base release's manifest to patch (hostctl.py)
EXIT_NO_HELPER = 3  # hostctl_verified: the installed helper is missing or not the expected one
NO_HELPER = "sgpfab:no-helper"

# Runs the helper whose source has the expected SHA-256: the installed copy, or (when a length is
# given) the zlib-compressed source read first from stdin. Only bytes that match are executed;
# what follows the source on stdin stays there for the helper to read as its input.
_BOOT_VERIFIED = f"""import hashlib, sys, zlib
n, want, path = int(sys.argv.pop(1)), sys.argv.pop(1), sys.argv.pop(1)
try: src = zlib.decompress(sys.stdin.buffer.read(n)) if n else open(path, "rb").read()
except OSError: src = b""
if hashlib.sha256(src).hexdigest() != want: print("{NO_HELPER}"); sys.exit({EXIT_NO_HELPER})
sys.argv[0] = "hostctl"; exec(compile(src, "hostctl.py", "exec"), {{"__name__": "__main__"}})
"""


def hostctl_verified(
    inst: Instance, digest: str, *args: str, source: bytes | None = None, data: bytes | None = None
) -> Cmd:
    """Run the host helper whose source has SHA-256 `digest` without writing anything: the copy
    installed on the host when it is that one (else exit EXIT_NO_HELPER, printing NO_HELPER), or
    with `source`, that source compressed on stdin. Then `data` on stdin."""
    packed = zlib.compress(source, 9) if source is not None else b""
    text = " ".join(
        [
            q(inst.host.interpreter),
            "-c",
            q(_BOOT_VERIFIED),
            str(len(packed)),
            q(digest),
            q(_lay(inst).hostctl),
            "--root",
            q(inst.api_root),
            *map(q, args),
        ]
    )
    return Cmd(text, stdin=(packed + (data or b"")) or None, timeout=120)


def sha256_many(paths: list[str]) -> Cmd:
    """Prints 'SHA256  PATH' for each file that exists."""
    return Cmd(f"sha256sum {' '.join(map(q, paths))} 2>/dev/null || true")


def ensure_probe_token(inst: Instance) -> Cmd:
    """The secret the health probes carry (made once on the host; readable by systemd only
    through EnvironmentFile= and by the deploying user)."""
    env = _lay(inst).launch_env
    return Cmd(
        f"[ -s {q(env)} ] || (umask 077 && printf 'SGPFAB_PROBE_TOKEN=%s\\n'"
        f" \"$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')\" > {q(env)})"
    )


def build_venv(inst: Instance, version: Version, uv: str, requirements: str, extra: tuple[str, ...] = ()) -> Cmd:
    """The release's own venv, installed offline from the host's wheelhouse (uv's cache lives
    beside the releases, so unchanged wheels are hard-linked, not unpacked again)."""
    lay = _lay(inst)
    env = f"{UV_ENV} UV_CACHE_DIR={q(lay.tools + '/uv-cache')}"
    pkgs = "".join(f" {q(p)}" for p in extra)
    return Cmd(
        f"cd {q(lay.partial(version))} && {env} {q(uv)} venv --quiet --relocatable --python {q(inst.interpreter)} .venv"
        f" && {env} {q(uv)} pip install --quiet --python .venv/bin/python --no-index"
        f" --find-links {q(lay.wheelhouse)} -r {q(requirements)}{pkgs}",
        timeout=1800,
    )


def make_writable(inst: Instance, release: str, dirs: tuple[str, ...], service_user: str) -> Cmd:
    """Directories of a release the service user may write (e.g. collectstatic's output)."""
    lay = _lay(inst)
    paths = " ".join(q(lay.in_release(release, *d.split("/"))) for d in dirs)
    return Cmd(f"install -d -m 755 -o {q(service_user)} -g {_group(service_user)} {paths}", privileged=True)


def install_units(inst: Instance, units: dict[str, str]) -> Cmd:
    """Put unit files in place where they changed, daemon-reload only then, and enable the
    socket and target. A changed listening address restarts the socket (a one-time gap); a
    changed `Service=` needs only the reload. A unit of sgpfab 0.1 (SERVICE.service) is retired."""
    u = Units(inst.service)
    names = [p.rsplit("/", 1)[1] for p in units]
    files = {n: (text, 0o644) for n, text in zip(names, units.values())}
    sock = f"{UNIT_DIR}/{u.socket}"
    legacy = f"{UNIT_DIR}/{inst.service}.service"
    script = [
        "set -e",
        f"d=$(mktemp -d {q(UNIT_DIR + '/.sgpfab.XXXXXX')})",
        "trap 'rm -rf \"$d\"' EXIT",
        'tar -x -z -f - -C "$d" --no-same-owner',
        "reload= listen=",
        f"for f in {' '.join(map(q, names))}; do",
        f'  if ! cmp -s "$d/$f" {q(UNIT_DIR)}/"$f"; then',
        f'    if [ "$f" = {q(u.socket)} ] && [ -f {q(sock)} ] &&'
        f' [ "$(grep ^ListenStream= {q(sock)})" != "$(grep ^ListenStream= "$d/$f")" ]; then listen=1; fi',
        f'    mv -f "$d/$f" {q(UNIT_DIR)}/"$f"; reload=1',
        "  fi",
        "done",
        f"if grep -qs '^# Managed by sgpfab' {q(legacy)}; then systemctl disable --now --quiet {q(inst.service)}"
        f" || true; rm -f {q(legacy)}; reload=1; fi",
        f'if [ -n "$reload" ]; then systemctl daemon-reload; echo {UNITS_CHANGED}; fi',
    ]
    enable = [u.target]
    if f"{UNIT_DIR}/{u.socket}" in units:
        script.append(f'if [ -n "$listen" ]; then systemctl restart {q(u.socket)}; fi')
        enable.append(u.socket)
        script.append(f"systemctl enable --quiet {' '.join(map(q, enable))}")
        script.append(f"systemctl start {q(u.socket)}")
    else:
        script.append(
            f"if [ -f {q(sock)} ]; then systemctl disable --now --quiet {q(u.socket)} || true;"
            f" rm -f {q(sock)}; systemctl daemon-reload; fi"
        )
        script.append(f"systemctl enable --quiet {' '.join(map(q, enable))}")
    return Cmd("\n".join(script) + "\n", privileged=True, stdin=targz_of(files))


def release_files(inst: Instance, release: str, spec: AppSpec) -> Cmd:
    """The release's run and hook scripts (see runfiles.py)."""
    lay = _lay(inst)
    return write_files(lay.in_release(release, ".sgpfab"), _release_files(lay, release, spec))


def install_processes(inst: Instance, release: str, spec: AppSpec, service_user: str) -> Cmd:
    return install_units(inst, units_for(inst, spec, release, service_user))


def process_id(inst: Instance, release: str, process: str) -> str:
    return Units(inst.service).instance(process, release)


def start_processes(inst: Instance, release: str, names: list[str]) -> Cmd:
    """Start a release's processes (clearing a failed state a crash loop may have left); exits
    EXIT_START_FAILED when one did not start (a web process started by sgpfab's launchers has
    then failed before it accepted connections)."""
    units = " ".join(q(process_id(inst, release, n)) for n in names)
    return Cmd(
        f"systemctl reset-failed {units} 2>/dev/null; systemctl start {units} || exit {EXIT_START_FAILED}",
        privileged=True,
        timeout=max(60, inst.health.timeout + 30),
    )


def stop_processes(inst: Instance, release: str, names: list[str], *, wait: bool = True) -> Cmd:
    """Stop these processes of `release`; with wait=False only ask systemd to (the processes
    finish draining in the background; a later `systemctl stop` of them waits for the end)."""
    units = " ".join(q(process_id(inst, release, n)) for n in names)
    return Cmd(f"systemctl stop {'' if wait else '--no-block '}{units}", privileged=True)


def _instance_filter(inst: Instance) -> str:
    """An ERE matching exactly this app's process instances (not another app's whose service
    name starts the same: process names contain no '-')."""
    return "^" + inst.service.replace(".", "[.]") + "-[a-z][a-z0-9_]*@"


def stop_all_but(inst: Instance, release: str | None) -> Cmd:
    """Stop every process instance of the app not of `release`; with None, all of them and the
    socket first (no connection may start a process meanwhile: new ones are refused)."""
    pattern = q(f"{inst.service}-*@*.service")
    units = (
        f"$(systemctl list-units --all --plain --no-legend {pattern} | awk '{{print $1}}'"
        f" | grep -E {q(_instance_filter(inst))}"
    )
    if release is not None:
        units += " | grep -vF " + q("@" + Units(inst.service).instance("web", release).split("@", 1)[1])
    units += " || true)"
    text = f'u={units}; if [ -n "$u" ]; then systemctl stop $u; fi'
    if release is None:
        text = f"systemctl stop {q(Units(inst.service).socket)} 2>/dev/null || true; " + text
    return Cmd(text, privileged=True)


def run_hook(inst: Instance, release: str, index: int, service_user: str, timeout: float = 3600) -> Cmd:
    """One release command, in the release's environment (venv, settings, directory) as the
    service user: a transient systemd unit with the same environment as the app's processes.
    It holds the host's operations lock shared, so a run that takes over a dead run's deploy
    lock waits for it."""
    lay = _lay(inst)
    rel = lay.in_release(release)
    props = [
        f"User={service_user}",
        f"Group={service_user}",
        f"WorkingDirectory={rel}",
        f"EnvironmentFile=-{lay.env_file}",
        f"EnvironmentFile=-{lay.overrides_file}",
        f"Environment=PATH={rel}/.venv/bin:/usr/local/bin:/usr/bin:/bin",
        f"Environment=VIRTUAL_ENV={rel}/.venv",
        f"Environment=PYTHONPATH={rel}",
        "Environment=PYTHONUNBUFFERED=1",
        f"Environment=SGPFAB_RELEASE={release}",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ]
    args = [
        "systemd-run",
        "--quiet",
        "--wait",
        "--pipe",
        "--collect",
        "--service-type=exec",
        f"--unit={inst.service}-hook-{index}",
    ]
    for p in props:
        args += ["-p", p]
    args += ["--", "/usr/bin/flock", "--shared", f"{lay.tools}/ops.lock", f"{rel}/.sgpfab/hooks/{index}"]
    return Cmd(" ".join(q(a) for a in args) + " </dev/null", privileged=True, timeout=timeout)


def process_log(inst: Instance, process: str, lines: int = 20) -> Cmd:
    """The last lines a process of the app wrote (any release), from the journal."""
    unit = f"{inst.service}-{process}@*.service"
    return Cmd(f"journalctl --no-pager -o cat -n {int(lines)} -u {q(unit)} 2>/dev/null || true", privileged=True)


def logs(inst: Instance, processes: list[str], lines: int, since: str | None, follow: bool) -> Cmd:
    """Log lines of the app's processes: 'ISO-TIME UNIT[PID]: message', oldest first."""
    args = ["journalctl", "--no-pager", "-o", "short-iso", "-n", str(int(lines))]
    for p in processes:
        args += ["-u", f"{inst.service}-{p}@*.service"]
    if since:
        args += ["--since", since]
    if follow:
        args.append("--follow")
    return Cmd(" ".join(q(a) for a in args), privileged=True, timeout=None if follow else 120)


def exec_in_release(inst: Instance, release: str, command: str, service_user: str, tty: bool) -> Cmd:
    """A one-off command in the active release's environment (venv, settings, directory) as the
    service user. systemd-run expands $VAR in its arguments, so `$` is doubled."""
    lay = _lay(inst)
    rel = lay.in_release(release)
    props = [
        f"User={service_user}",
        f"Group={service_user}",
        f"WorkingDirectory={rel}",
        f"EnvironmentFile=-{lay.env_file}",
        f"EnvironmentFile=-{lay.overrides_file}",
        f"Environment=PATH={rel}/.venv/bin:/usr/local/bin:/usr/bin:/bin",
        f"Environment=VIRTUAL_ENV={rel}/.venv",
        f"Environment=PYTHONPATH={rel}",
        f"Environment=SGPFAB_RELEASE={release}",
        "NoNewPrivileges=yes",
    ]
    args = ["systemd-run", "--quiet", "--wait", "--collect", "--service-type=exec", "--pty" if tty else "--pipe"]
    for p in props:
        args += ["-p", p]
    args += ["--", "/bin/sh", "-c", command.replace("$", "$$")]
    return Cmd(" ".join(q(a) for a in args) + ("" if tty else " </dev/null"), privileged=True, timeout=3600)


def health_url(inst: Instance) -> str:
    addr = "127.0.0.1" if inst.bind in ("0.0.0.0", "::", "") else inst.bind
    if ":" in addr:
        addr = f"[{addr}]"
    return f"http://{addr}:{inst.port}{inst.health.path}"


def remove_tree(path: str, privileged: bool = False) -> Cmd:
    return Cmd(f"rm -rf {q(path)}", privileged=privileged)


def list_dir(path: str) -> Cmd:
    """File names in a directory, one a line (nothing if it does not exist)."""
    return Cmd(f"ls -1 {q(path)} 2>/dev/null || true")
