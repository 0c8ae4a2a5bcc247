"""`sgpfab init [DIR] [--app NAME]`: set a project up to deploy with sgpfab's Fabric tasks.

Writes hosts/fleet.yaml (a starter inventory, see sgpfab/starter.py), fabfile.py and fabric.yaml
into DIR (default: the current directory). A file that already exists is kept as it is and
named in the output; nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from . import starter
from . import validate as v
from .errors import InputError, SgpfabError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="set a project up for sgpfab: hosts/fleet.yaml, fabfile.py, fabric.yaml",
        description="Write a starter inventory (hosts/fleet.yaml), a one-line fabfile.py and "
        "fabric.yaml into a project. Existing files are never overwritten.",
    )
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="the project directory (default: .)")
    p.add_argument("--app", metavar="NAME", help="the app's name (default: derived from the directory's name)")
    p.set_defaults(func=_run)


def project_dir(text: str) -> Path:
    """DIR as an existing directory, resolved."""
    if not text or "\n" in text or "\x00" in text:
        raise InputError(f"DIR must be a directory path, not {text!r}")
    p = Path(text).expanduser()
    if not p.exists():
        raise InputError(f"no such directory: {text}")
    if not p.is_dir():
        raise InputError(f"not a directory: {text}")
    return p.resolve()


def app_name(given: str | None, project: Path) -> str:
    """--app NAME (checked), or one made from the directory's name."""
    if given is not None:
        if not (v.NAME.fullmatch(given) and v.SERVICE.fullmatch(given)):
            raise InputError(
                f"invalid app name {given!r}: use letters, digits, '.', '_' or '-' "
                "(at most 48, starting with a letter or digit)"
            )
        return given
    name = re.sub(r"[^a-z0-9_.-]+", "-", project.name.lower()).strip("-._")[:48].rstrip("-._")
    if not name or not v.SERVICE.fullmatch(name):
        raise InputError(f"cannot make an app name from the directory name {project.name!r}: pass --app NAME")
    return name


def files(project: Path, app: str) -> dict[str, str]:
    """What init writes, by path relative to the project."""
    return {
        "hosts/fleet.yaml": starter.inventory(app, starter.web_hint(project)),
        "fabfile.py": starter.FABFILE,
        "fabric.yaml": starter.FABRIC_YAML,
    }


def write_new(project: Path, contents: dict[str, str]) -> tuple[list[str], list[str]]:
    """Create each file that does not exist yet: (written, kept)."""
    written, kept = [], []
    for rel, text in contents.items():
        path = project / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as f:  # 'x': never replaces a file
                f.write(text)
        except FileExistsError:
            kept.append(rel)
            continue
        except OSError as e:
            raise SgpfabError(f"cannot write {path}: {e.strerror or e}") from None
        written.append(rel)
    return written, kept


def _run(args: argparse.Namespace) -> int:
    project = project_dir(args.dir)
    app = app_name(args.app, project)
    written, kept = write_new(project, files(project, app))
    for rel in written:
        print(f"wrote {rel}")
    for rel in kept:
        print(f"kept {rel} (it exists; not changed)")
    where = "" if project == Path.cwd().resolve() else f" (in {project})"
    print(f"""
next steps{where}:
  1. edit hosts/fleet.yaml: your hosts and groups, and the app's processes, port and health check
  2. check each host's SSH key is in ~/.ssh/known_hosts (ssh to it once)
  3. secrets: SGPFAB_SECRET_<NAME>=... in the environment, or a secrets_file (see the inventory)
  4. fab -H staging plan --version 1.0.0     (what would change; changes nothing)
  5. fab -H staging deploy --version 1.0.0
  fab --list shows every task; bundles are built in dist/ (add dist/ to .gitignore)""")
    return 0
