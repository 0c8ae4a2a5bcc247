"""How sgpfab starts an app's processes and release commands on Windows hosts.

NSSM runs `python.exe winrun.py --release REL --process NAME [--web]` with AppDirectory set to
this file's directory (API_ROOT\\.sgpfab\\launch), so its command line holds no path and needs no
quotes; API_ROOT is two directories up. A release command runs as `... --hook N`, a one-off
command as `... --exec` with the command on stdin (UTF-8). What to run comes from the release's
own files (.sgpfab\\run\\NAME.json: an argv list or a shell command; .sgpfab\\hooks\\N.txt),
never from a command line, so nothing is re-quoted on the way.

The app's settings (shared\\config\\env, then overrides.env; for the web process also
.sgpfab\\launch.env, the health probes' token) are loaded into the environment as systemd's
EnvironmentFile= does on Linux, so settings and secrets never go into the service's registry
entry. When NSSM stops the service it sends Ctrl+C to the console both processes share: this
launcher then keeps waiting for the app to finish shutting down instead of killing it. Stdlib only.
"""

import argparse
import json
import os
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from hostctl import parse_env


def environment(root: str, release: str, web: bool) -> dict[str, str]:
    env = dict(os.environ)
    files = [os.path.join(root, "shared", "config", n) for n in ("env", "overrides.env")]
    if web:
        files.append(os.path.join(root, ".sgpfab", "launch.env"))
    for path in files:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                env.update(parse_env(f.read()))
    rel = os.path.join(root, "releases", release)
    env.update(
        SGPFAB_RELEASE=release,
        VIRTUAL_ENV=os.path.join(rel, ".venv"),
        PYTHONUNBUFFERED="1",
        PATH=os.path.join(rel, ".venv", "Scripts") + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=os.pathsep.join([rel, HERE] if web else [rel]),
    )
    return env


def run(args: str | list[str], **kw: Any) -> int:
    """Start the command and wait for it; a Ctrl+C reaches it too (same console), so an
    interruption here means: wait until it has shut down, never kill it."""
    p = subprocess.Popen(args, **kw)
    while True:
        try:
            return p.wait()
        except KeyboardInterrupt:
            continue


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="winrun")
    p.add_argument("--root", default=ROOT, help="API_ROOT (default: two directories above this file)")
    p.add_argument("--release", required=True)
    p.add_argument("--web", action="store_true")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--process")
    what.add_argument("--hook", type=int)
    what.add_argument("--exec", action="store_true", help="run the command given on stdin")
    a = p.parse_args(argv)
    rel = os.path.join(a.root, "releases", a.release)
    env = environment(a.root, a.release, a.web)
    if a.exec:
        command = sys.stdin.buffer.read().decode("utf-8").strip("\r\n")
        return run(command, shell=True, cwd=rel, env=env)
    if a.hook is not None:
        with open(os.path.join(rel, ".sgpfab", "hooks", "%d.txt" % a.hook), encoding="utf-8") as f:
            return run(f.read().strip(), shell=True, cwd=rel, env=env)
    with open(os.path.join(rel, ".sgpfab", "run", a.process + ".json"), encoding="utf-8") as f:
        spec = json.load(f)
    if "argv" in spec:
        return run(spec["argv"], cwd=rel, env=env)
    return run(spec["shell"], shell=True, cwd=rel, env=env)


if __name__ == "__main__":
    sys.exit(main())
