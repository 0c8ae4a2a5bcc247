"""The files `sgpfab init` writes into a project: a starter inventory, fabfile.py and fabric.yaml.

`web_hint` looks at a few obvious places (Django's manage.py, a Flask factory or app, a FastAPI
app in a top-level module or package) to fill in the web process, and the migration command that
goes with it (Django's migrate, Flask-Migrate, Alembic); when it finds nothing the inventory names
a placeholder to edit. It reads files and never imports the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FABFILE = "from sgpfab.tasks import ns  # noqa: F401  (sgpfab's Fabric tasks: fab --list)\n"

# Invoke chooses the executor from configuration files before it reads the task collection's own
# configuration, so this cannot live in sgpfab.tasks (see sgpfab/fabric_executor.py).
FABRIC_YAML = """\
# Run each sgpfab task once for the whole -H list (see sgpfab/fabric_executor.py).
tasks:
  executor_class: sgpfab.fabric_executor.FleetExecutor
"""

MAX_READ = 256 * 1024  # larger files are not looked into


@dataclass(frozen=True)
class WebHint:
    """How the web process starts, what the hint was taken from, and the migration command found."""

    server: str  # uvicorn | gunicorn
    app: str  # module:attribute, or module:factory() for gunicorn
    found_in: str | None = None  # None: a placeholder to edit
    release: tuple[str, ...] = ()


PLACEHOLDER = WebHint("gunicorn", "myapp.wsgi:application")


def _read(path: Path) -> str:
    try:
        if path.is_file() and path.stat().st_size <= MAX_READ:
            return path.read_text(errors="replace")
    except OSError:
        pass
    return ""


def _modules(project: Path) -> list[tuple[str, Path]]:
    """Top-level modules and packages' likely entry files, as (dotted name, file)."""
    found: list[tuple[str, Path]] = []
    ident = re.compile(r"[A-Za-z_]\w*", re.ASCII)
    for p in sorted(project.iterdir()):
        if p.name.startswith(".") or not ident.fullmatch(p.stem):
            continue
        if p.is_file() and p.suffix == ".py" and p.stem not in ("fabfile", "tasks", "setup", "conftest"):
            found.append((p.stem, p))
        elif p.is_dir() and (p / "__init__.py").is_file() and p.name not in ("tests", "migrations"):
            found.append((p.name, p / "__init__.py"))
            for stem in ("main", "app", "asgi", "wsgi"):
                if (p / f"{stem}.py").is_file():
                    found.append((f"{p.name}.{stem}", p / f"{stem}.py"))
    return found


def web_hint(project: Path) -> WebHint:
    """The web process the project most likely has (see the module docstring)."""
    if (project / "manage.py").is_file():
        for wsgi in sorted(project.glob("*/wsgi.py")):
            if (wsgi.parent / "settings.py").is_file():
                return WebHint(
                    "gunicorn",
                    f"{wsgi.parent.name}.wsgi:application",
                    "manage.py",
                    ("python manage.py migrate --noinput",),
                )
    for module, path in _modules(project):
        text = _read(path)
        m = re.search(r"^(\w+)\s*=\s*FastAPI\(", text, re.M)
        if m:
            migrate = ("alembic upgrade head",) if (project / "alembic.ini").is_file() else ()
            return WebHint("uvicorn", f"{module}:{m.group(1)}", path.relative_to(project).as_posix(), migrate)
        if re.search(r"^def create_app\(", text, re.M) and "flask" in text.lower():
            migrate = (
                ("flask --app " + module + " db upgrade",) if (project / "migrations" / "alembic.ini").is_file() else ()
            )
            return WebHint("gunicorn", f"{module}:create_app()", path.relative_to(project).as_posix(), migrate)
        m = re.search(r"^(\w+)\s*=\s*Flask\(", text, re.M)
        if m:
            return WebHint("gunicorn", f"{module}:{m.group(1)}", path.relative_to(project).as_posix())
    return PLACEHOLDER


def inventory(app: str, hint: WebHint) -> str:
    """The starter hosts/fleet.yaml: valid as written, with placeholder hosts to replace."""
    found = (
        f"# found in {hint.found_in}; check it"
        if hint.found_in
        else "# CHANGE ME: your app's module:attribute (WSGI with gunicorn, ASGI with uvicorn)"
    )
    release = "".join(f"      - {c}\n" for c in hint.release) or "      # - flask --app myapp db upgrade\n"
    release_key = (
        "    release:\n" if hint.release else "    # release:           # run in the new release before the switch\n"
    )
    return f"""\
# sgpfab inventory: the hosts, their groups, and the app deployed to them.
# Reference: docs/inventory.md and docs/quickstart.md in sgpfab's source.
# Try it:    fab -H staging plan --version 1.0.0   (shows what a deploy would do; changes nothing)
#
# ~/.ssh/config and ~/.ssh/known_hosts are read. Host keys are always verified: ssh to each host
# once (or add its key to known_hosts) before the first deploy.
# ssh_config: ssh_config      # extra files, relative to this one
# known_hosts: known_hosts
# secrets_file: ~/.config/sgpfab/secrets.yaml   # name: value, mode 0600, outside the repository

defaults:
  user: deploy                # SSH login user (passwordless sudo for systemctl); services never run as root

hosts:                        # CHANGE ME: your hosts (name: {{hostname: ...}})
  staging1: {{hostname: staging1.example.internal}}
  prod1: {{hostname: prod1.example.internal}}
  prod2: {{hostname: prod2.example.internal}}

groups:
  staging: [staging1]
  prod: [prod1, prod2]

apps:
  "{app}":
    source: ..                # this project (relative to this file)
    port: 8000
    processes:
      web: {{server: {hint.server}, app: "{hint.app}"}}  {found}
      # worker: python -m myapp.worker
{release_key}{release}    health: {{path: /health}}   # answers 200 when the app is ready (or: {{type: process}})
    # env:
    #   DEBUG: "0"
    #   SECRET_KEY: {{secret: {app.replace("-", "_").replace(".", "_")}_secret_key}}   # value from SGPFAB_SECRET_..., secrets_file or keyring
    exclude: [/hosts/, /dist/, /fabfile.py, /fabric.yaml]   # deploy tooling (yours too, e.g. /tasks.py): not released
"""
