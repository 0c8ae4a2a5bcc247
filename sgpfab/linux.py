"""What to run on a Linux host: pure functions that return shell command strings.

Nothing here does I/O. Every value that reaches a shell goes through `shlex.quote`, in one
place (`q`), so the commands can be unit-tested as strings.
"""

from __future__ import annotations

import shlex

from .inventory import Host
from .layout import Layout
from .systemd import socket_path, units
from .versions import Version

q = shlex.quote

UV_ENV = "UV_OFFLINE=1 UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1"


def prepare_dirs(host: Host, login_user: str) -> str:
    """Create API_ROOT's tree (idempotent). Run with root rights; owners set explicitly."""
    lay = Layout(host.api_root)
    run_as = host.service_user or login_user
    own = f"-o {q(login_user)} -g {q(login_user)}"
    app = f"-o {q(run_as)} -g {q(run_as)}"
    theirs = [lay.shared, *lay.shared_dirs, lay.backups]
    return (f"install -d -m 755 {own} {' '.join(map(q, lay.owned_dirs))}"
            f" && install -d -m 750 {app} {' '.join(map(q, theirs))}")


def hostctl(host: Host, *args: str) -> str:
    """Run the uploaded host helper with the host's python."""
    lay = Layout(host.api_root)
    return " ".join([q(host.python), q(lay.hostctl), "--root", q(lay.root), *map(q, args)])


def which_uv(host: Host) -> str:
    """Prints the uv to use: the one pushed by sgpfab, else one on PATH; nothing if none."""
    lay = Layout(host.api_root)
    return f"if [ -x {q(lay.uv)} ]; then echo {q(lay.uv)}; else command -v uv || true; fi"


def stage_dir(host: Host, version: Version) -> str:
    """A clean staging dir for the release (a leftover partial is rebuilt, never used)."""
    p = Layout(host.api_root).partial(version)
    return f"rm -rf {q(p)} && mkdir -p {q(p)}"


def build_venv(host: Host, version: Version, uv: str, requirements: str = "requirements.txt") -> str:
    """The release's own venv, installed offline from the host's wheelhouse."""
    lay = Layout(host.api_root)
    d = lay.partial(version)
    return (
        f"cd {q(d)} && {UV_ENV} {q(uv)} venv --quiet --relocatable --python {q(host.python)} .venv"
        f" && {UV_ENV} {q(uv)} pip install --quiet --python .venv/bin/python --no-index"
        f" --find-links {q(lay.wheelhouse)} -r {q(requirements)}"
    )


def env_lines(host: Host, version: Version) -> list[str]:
    lay = Layout(host.api_root)
    return [
        f"API_ROOT={lay.root}",
        f"APP_VERSION={version}",
        f"PORT={host.port}",
        f"DATABASE_URL=sqlite:///{lay.database}",
        f"MEDIA_ROOT={lay.shared}/media",
        f"LOG_DIR={lay.logs}",
    ]


def write_env(host: Host, version: Version) -> str:
    """Write the staged release's .env with mode 0600 (umask before the file exists)."""
    path = Layout(host.api_root).partial(version) + "/.env"
    body = "".join(line + "\n" for line in env_lines(host, version))
    return f"(umask 077 && printf %s {q(body)} > {q(path)}) && chmod 600 {q(path)}"


def chown_env(host: Host, version: Version) -> str:
    return f"chown {q(host.service_user)} {q(Layout(host.api_root).release(version) + '/.env')}"


def migrate(host: Host, version: Version, command: str) -> str:
    """The app's migration command, in the new release, with its venv and .env."""
    d = Layout(host.api_root).release(version)
    return (f"cd {q(d)} && set -a && . ./.env && set +a && PATH={q(d + '/.venv/bin')}:\"$PATH\""
            f" && sh -c {q(command)}")


def stop(host: Host) -> str:
    """Stop the service (a stopped socket too, or the next request would start it again)."""
    if host.socket_activation:
        return f"systemctl stop {q(host.service + '.socket')} {q(host.service)}"
    return f"systemctl stop {q(host.service)}"


def start(host: Host) -> str:
    if host.socket_activation:
        return f"systemctl start {q(host.service + '.socket')} {q(host.service)}"
    return f"systemctl start {q(host.service)}"


def install_service(host: Host, module: str) -> str:
    """Write the unit files that changed (then daemon-reload) and enable them. Needs root.

    When the socket unit is new or changed, the service is stopped before the socket starts
    (a service that bound the port itself would otherwise keep it): a one-time short gap."""
    svc, sock = q(host.service), q(host.service + ".socket")
    parts = []
    for path, text in units(host, module).items():
        tmp = path + ".sgpfab-tmp"
        changed = "socket_changed=1; " if path == socket_path(host) else ""
        parts.append(f"printf %s {q(text)} > {q(tmp)} && if cmp -s {q(tmp)} {q(path)}; then rm -f {q(tmp)};"
                     f" else mv -f {q(tmp)} {q(path)} && {changed}reload=1; fi")
    cmd = "reload=; socket_changed=; " + " && ".join(parts)
    cmd += " && if [ -n \"$reload\" ]; then systemctl daemon-reload; fi"
    if host.socket_activation:
        cmd += (f" && if [ -n \"$socket_changed\" ]; then systemctl stop {svc}; systemctl restart {sock}; fi"
                f" && systemctl enable --quiet {sock} {svc} && systemctl start {sock}")
    else:
        cmd += (f" && if [ -f {q(socket_path(host))} ]; then systemctl disable --now --quiet {sock};"
                f" rm -f {q(socket_path(host))}; systemctl daemon-reload; fi && systemctl enable --quiet {svc}")
    return cmd


def restart(host: Host) -> str:
    """reset-failed first: a crash-looping release may have hit the start limit."""
    s = q(host.service)
    return f"systemctl reset-failed {s} 2>/dev/null; systemctl restart {s}"


def service_state(host: Host) -> str:
    return f"systemctl is-active {q(host.service)} || true"


def service_logs(host: Host, lines: int = 20) -> str:
    log = f"{Layout(host.api_root).logs}/{host.service}.log"
    return f"tail -n {int(lines)} {q(log)} 2>/dev/null || true"


def health_url(host: Host) -> str:
    addr = "127.0.0.1" if host.bind in ("0.0.0.0", "::", "") else host.bind
    if ":" in addr:
        addr = f"[{addr}]"
    return f"http://{addr}:{host.port}{host.health_path}"


def probe_args(host: Host, expect_version: Version | None) -> list[str]:
    """hostctl's arguments for one health probe of the host's service."""
    args = ["health", "--url", health_url(host)]
    if expect_version is not None:
        args += ["--expect-version", str(expect_version)]
    return args


def health_check(host: Host, expect_version: Version | None) -> str:
    """One probe (JSON line) then the service's automatic restart count (crash-loop detection)."""
    return f"{hostctl(host, *probe_args(host, expect_version))}; systemctl show -p NRestarts --value {q(host.service)}"


def remove_tree(path: str) -> str:
    return f"rm -rf {q(path)}"


def remove_link(path: str) -> str:
    return f"rm -f {q(path)}"


def file_sha256(path: str) -> str:
    """Prints the file's SHA-256, or nothing when it does not exist."""
    return f"sha256sum {q(path)} 2>/dev/null | cut -d' ' -f1 || true"


def file_exists(path: str) -> str:
    """Prints 'yes' when the file exists."""
    return f"test -f {q(path)} && echo yes || true"


def list_dir(path: str) -> str:
    """File names in a directory, one a line (nothing if it does not exist)."""
    return f"ls -1 {q(path)} 2>/dev/null || true"


def as_user(user: str, command: str) -> str:
    return f"sudo -n -u {q(user)} sh -c {q(command)}"
