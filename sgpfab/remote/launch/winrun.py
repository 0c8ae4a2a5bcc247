"""How sgpfab starts an app's processes and release commands on Windows hosts.

NSSM runs `python winrun.py --root ROOT --release REL --process NAME [--web]`; a release command
runs as `... --hook N`. The command itself comes from the release's own files
(.sgpfab\\run\\NAME.json: an argv list or a shell command; .sgpfab\\hooks\\N.txt), never from a
command line, so nothing is re-quoted on the way. The app's settings (shared\\config\\env, then
overrides.env) are loaded into the environment as systemd's EnvironmentFile= does on Linux, so
settings and secrets never go into the service's registry entry. Stdlib only.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from hostctl import parse_env  # noqa: E402


def environment(root, release, web):
    env = dict(os.environ)
    files = [os.path.join(root, "shared", "config", n) for n in ("env", "overrides.env")]
    if web:
        files.append(os.path.join(root, ".sgpfab", "launch.env"))
    for path in files:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                env.update(parse_env(f.read()))
    rel = os.path.join(root, "releases", release)
    env.update(SGPFAB_RELEASE=release, VIRTUAL_ENV=os.path.join(rel, ".venv"), PYTHONUNBUFFERED="1",
               PATH=os.path.join(rel, ".venv", "Scripts") + os.pathsep + env.get("PATH", ""),
               PYTHONPATH=os.pathsep.join([rel, HERE] if web else [rel]))
    return env


def main(argv=None):
    p = argparse.ArgumentParser(prog="winrun")
    p.add_argument("--root", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--web", action="store_true")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--process")
    what.add_argument("--hook", type=int)
    a = p.parse_args(argv)
    rel = os.path.join(a.root, "releases", a.release)
    env = environment(a.root, a.release, a.web)
    if a.hook is not None:
        with open(os.path.join(rel, ".sgpfab", "hooks", "%d.txt" % a.hook), encoding="utf-8") as f:
            return subprocess.call(f.read().strip(), shell=True, cwd=rel, env=env)
    with open(os.path.join(rel, ".sgpfab", "run", a.process + ".json"), encoding="utf-8") as f:
        spec = json.load(f)
    if "argv" in spec:
        return subprocess.call(spec["argv"], cwd=rel, env=env)
    return subprocess.call(spec["shell"], shell=True, cwd=rel, env=env)


if __name__ == "__main__":
    sys.exit(main())
