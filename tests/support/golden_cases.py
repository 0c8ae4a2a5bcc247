"""Every pinned output of the pure Linux builders (linux.py, systemd.py, runfiles.py, layout's
host.json) for the apps of builders.GOLDEN_INVENTORY, rendered as text.

tests/unit/test_linux_commands.py compares each rendering with tests/unit/golden/NAME.txt;
tests/support/update_golden.py (run by hand, never by the tests) rewrites those files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shlex
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from sgpfab import linux, runfiles, systemd
from sgpfab.cmd import Cmd
from sgpfab.layout import Layout

from .builders import GOLDEN_INVENTORY, GOLDEN_RELEASE, load_inventory

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "unit" / "golden"
APPS = ("shop", "blog", "legacy", "batch", "cron")
SERVICE_USER = {"shop": "shopsvc", "blog": "blog", "legacy": "legacy", "batch": "batch", "cron": "cron_user"}
LOGIN = "deploy"


def render_text(text: str) -> str:
    """A text, exactly: the markers make a trailing newline (or its absence) visible."""
    return f"--- begin ({len(text)} characters) ---\n{text}\n--- end ---\n"


def render_stdin(data: bytes | None) -> str:
    """What goes on stdin; compressed data is pinned by its uncompressed bytes (the compressed
    ones may differ between zlib builds)."""
    if data is None:
        return "stdin: none\n"
    out = []
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
        out.append("stdin: gzip, uncompressed:\n")
    out.append(f"stdin: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}\n")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                content = f.read() if f else b""
                out.append(
                    f"member {m.name} type {m.type!r} mode {m.mode:o} uid {m.uid} gid {m.gid} "
                    f"mtime {m.mtime} size {m.size}\n"
                )
                try:
                    out.append(render_text(content.decode()))
                except UnicodeDecodeError:
                    out.append(f"binary {content!r}\n")
    except tarfile.TarError:
        out.append(f"raw {data!r}\n")
    return "".join(out)


def render_cmd(cmd: Cmd) -> str:
    return f"privileged: {cmd.privileged}\ntimeout: {cmd.timeout}\n" + render_stdin(cmd.stdin) + render_text(cmd.text)


def render_verified_with_source(cmd: Cmd) -> str:
    """A hostctl_verified command with the helper's source: the source decompressed (its length
    is the command's first number), then what follows it on stdin."""
    assert cmd.stdin is not None
    n = int(shlex.split(cmd.text)[3])
    source = zlib.decompress(cmd.stdin[:n])
    return f"source: {source!r}\nafter the source: {cmd.stdin[n:]!r}\n" + render_cmd(
        Cmd(cmd.text, cmd.privileged, None, cmd.timeout)
    )


def render_files(files: Mapping[str, tuple[str | bytes, int]]) -> str:
    out = []
    for rel in sorted(files):
        content, mode = files[rel]
        text = content if isinstance(content, str) else content.decode()
        out.append(f"file {rel} mode {mode:o}\n" + render_text(text))
    return "".join(out)


def render_units(units: dict[str, str]) -> str:
    return "".join(f"unit {path}\n" + render_text(text) for path, text in units.items())


def cases(directory: Path | None = None) -> dict[str, str]:
    """Name -> rendering of every pinned output. The inventory is written into `directory`
    (a fresh temporary directory when None); nothing of its path reaches the outputs."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="sgpfab-golden-"))
    inv = load_inventory(directory, text=GOLDEN_INVENTORY)
    inst = {a: inv.instance(a, "prod1") for a in APPS}
    spec = {a: inv.apps[a].spec for a in APPS}
    shop, rel = inst["shop"], GOLDEN_RELEASE
    from sgpfab.versions import Version

    v = Version.parse(rel)
    lay = Layout.for_instance(shop)

    c: dict[str, Callable[..., str]] = {  # called with no arguments (some bind loop values as defaults)
        "linux.prepare.shop": lambda: render_cmd(linux.prepare(shop, LOGIN, "shopsvc")),
        "linux.prepare.blog-postgresql": lambda: render_cmd(linux.prepare(inst["blog"], LOGIN, "blog")),
        "linux.prepare.batch-no-database": lambda: render_cmd(linux.prepare(inst["batch"], LOGIN, "batch")),
        "linux.hostctl.state": lambda: render_cmd(linux.hostctl(shop, "state")),
        "linux.hostctl.as-user-with-stdin": lambda: render_cmd(
            linux.hostctl(shop, "settings", "write", stdin=b'{"env": {"A": "1"}}', as_user="shopsvc", timeout=30)
        ),
        "linux.hostctl.hostile-argument": lambda: render_cmd(
            linux.hostctl(shop, "mark", "--name", rel, "--bad", "--reason", 'it\'s $(reboot) `id`; "x" \\ *')
        ),
        "linux.hostctl_verified.installed": lambda: render_cmd(
            linux.hostctl_verified(shop, "ab" * 32, "dbcheck", "--stdin", data=b'{"env": {}}')
        ),
        "linux.hostctl_verified.with-source": lambda: render_verified_with_source(
            linux.hostctl_verified(
                shop,
                "ab" * 32,
                "preflight",
                "--python",
                shop.interpreter,
                source=b"print('hostctl source')\n",
                data=b"{}",
            )
        ),
        "linux.write_files.helpers": lambda: render_cmd(
            linux.write_files(
                lay.tools,
                {
                    "host.json": ('{"a": 1}\n', 0o644),
                    "launch/serve.py": (b"print('x')\n", 0o755),
                    "it's odd.txt": ("$x\n", 0o600),
                },
                privileged=True,
            )
        ),
        "linux.chain": lambda: render_cmd(
            linux.chain(
                [
                    linux.hostctl(shop, "journal", "begin", stdin=b'{"to": "v1"}'),
                    linux.sha256_many([lay.hostctl]),
                    linux.start_processes(shop, rel, ["web"]),
                ]
            )
        ),
        "linux.sha256_many": lambda: render_cmd(linux.sha256_many([lay.hostctl, lay.host_json, "/srv/it's"])),
        "linux.ensure_probe_token": lambda: render_cmd(linux.ensure_probe_token(shop)),
        "linux.build_venv.with-project-wheel": lambda: render_cmd(
            linux.build_venv(
                shop,
                v,
                lay.uv,
                f"{lay.incoming(v)}/requirements/cp311-x86_64-glibc2.36.txt",
                (f"{lay.wheelhouse}/shop-1.0.1-py3-none-any.whl",),
            )
        ),
        "linux.build_venv.plain": lambda: render_cmd(
            linux.build_venv(inst["batch"], v, "/usr/local/bin/uv", "req.txt")
        ),
        "linux.make_writable": lambda: render_cmd(linux.make_writable(shop, rel, spec["shop"].writable, "shopsvc")),
        "linux.start_processes": lambda: render_cmd(linux.start_processes(shop, rel, ["web", "worker", "beat"])),
        "linux.stop_processes": lambda: render_cmd(linux.stop_processes(shop, rel, ["web", "worker"])),
        "linux.stop_processes.no-wait": lambda: render_cmd(linux.stop_processes(shop, rel, ["web"], wait=False)),
        "linux.stop_all_but.release": lambda: render_cmd(linux.stop_all_but(shop, rel)),
        "linux.stop_all_but.none": lambda: render_cmd(linux.stop_all_but(shop, None)),
        "linux.stop_all_but.dotted-service": lambda: render_cmd(linux.stop_all_but(inst["legacy"], "v2.0.0")),
        "linux.run_hook": lambda: render_cmd(linux.run_hook(shop, rel, 2, "shopsvc")),
        "linux.process_log": lambda: render_cmd(linux.process_log(shop, "worker", 15)),
        "linux.logs.all": lambda: render_cmd(linux.logs(shop, ["*"], 50, None, False)),
        "linux.logs.since-follow": lambda: render_cmd(
            linux.logs(shop, ["web", "worker"], 10, "2026-11-23 10:00", True)
        ),
        "linux.exec_in_release.pipe": lambda: render_cmd(
            linux.exec_in_release(shop, rel, "python manage.py shell -c 'print(\"$HOME\", 100%)'", "shopsvc", False)
        ),
        "linux.exec_in_release.tty": lambda: render_cmd(linux.exec_in_release(shop, rel, "bash", "shopsvc", True)),
        "linux.remove_tree": lambda: render_cmd(linux.remove_tree(lay.partial(v), privileged=True)),
        "linux.list_dir": lambda: render_cmd(linux.list_dir(lay.releases)),
        "linux.health_url": lambda: "".join(f"{a}: {linux.health_url(inst[a])}\n" for a in APPS),
        "linux.process_id": lambda: "".join(
            f"{a} {p}: {linux.process_id(inst[a], rel, p)}\n" for a in APPS for p in spec[a].processes
        ),
        "layout.host_json.shop": lambda: render_text(lay.host_json_text(shop, LOGIN, "shopsvc")),
        "layout.host_json.blog": lambda: render_text(
            Layout.for_instance(inst["blog"]).host_json_text(inst["blog"], LOGIN, "blog")
        ),
        "systemd.process_unit.web-socket": lambda: render_text(
            systemd.process_unit(shop, "web", "shopsvc", web=True, socket=True)
        ),
        "systemd.process_unit.web-no-socket": lambda: render_text(
            systemd.process_unit(inst["batch"], "web", "batch", web=True, socket=False)
        ),
        "systemd.process_unit.worker": lambda: render_text(
            systemd.process_unit(shop, "worker", "shopsvc", web=False, socket=False)
        ),
        "systemd.socket_unit.ipv4": lambda: render_text(systemd.socket_unit(shop, rel)),
        "systemd.socket_unit.ipv6": lambda: render_text(systemd.socket_unit(inst["legacy"], "v2.0.0")),
        "systemd.target_unit": lambda: render_text(systemd.target_unit(shop, rel, ["web", "worker", "beat"], True)),
        "systemd.target_unit.no-socket": lambda: render_text(systemd.target_unit(inst["cron"], rel, ["tick"], False)),
    }
    for a in APPS:
        user = SERVICE_USER[a]
        c[f"systemd.units_for.{a}"] = lambda a=a, user=user: render_units(
            systemd.units_for(inst[a], spec[a], rel, user)
        )
        c[f"linux.install_processes.{a}"] = lambda a=a, user=user: render_cmd(
            linux.install_processes(inst[a], rel, spec[a], user)
        )
        c[f"runfiles.release_files.{a}"] = lambda a=a: render_files(
            runfiles.release_files(Layout.for_instance(inst[a]), rel, spec[a])
        )
        c[f"linux.release_files.{a}"] = lambda a=a: render_cmd(linux.release_files(inst[a], rel, spec[a]))
    return {name: fn() for name, fn in sorted(c.items())}


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.txt"
