"""schema.sql: the SQL the app's migration tool would run on an empty database.

With `schema.source: auto` the tool is detected: Alembic (alembic.ini), Flask-Migrate (a
`migrations/` Alembic folder and Flask-Migrate in the requirements), Django (manage.py), or
SQLAlchemy/SQLModel metadata of the web app's module. The app runs in a throwaway environment
with its own locked requirements, on the controller, with a scratch database URL; the SQL is
written by sgpfab's wrapper into a file, so whatever the app prints while importing never ends
up in it. An app without a schema (or one the detector cannot read) gets no schema.sql and a
note saying why: that never stops a bundle. A configured `schema.command` that fails does.

The fingerprint (SHA-256 of the SQL) and the list of migrations let `plan` show pending schema
changes and make rollback ask before crossing one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import cache
from ..appspec import AppSpec
from ..errors import SgpfabError
from .deps import _cause, _clean_env, names, uv_bin


@dataclass
class SchemaResult:
    source: str
    sql: str = ""
    migrations: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest() if self.sql else ""


_COMMON = r"""
import json, os, sys
OUT = sys.argv[1]
def done(sql, migrations):
    with open(OUT, "w") as f:
        json.dump({"sql": sql, "migrations": migrations}, f)
"""

ALEMBIC = (
    _COMMON
    + r"""
import io
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
buf = io.StringIO()
cfg = Config(sys.argv[2], output_buffer=buf)
command.upgrade(cfg, "head", sql=True)
revs = [r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()]
done(buf.getvalue(), list(reversed(revs)))
"""
)

FLASK_MIGRATE = (
    _COMMON
    + r"""
import io, contextlib
from flask.cli import ScriptInfo
app = ScriptInfo(app_import_path=sys.argv[2]).load_app()
with app.app_context():
    from alembic.script import ScriptDirectory
    from flask_migrate import upgrade
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        upgrade(sql=True)
    ext = app.extensions["migrate"]
    cfg = ext.migrate.get_config(ext.directory) if hasattr(ext, "migrate") else None
    revs = []
    if cfg is not None:
        revs = [r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()]
done(buf.getvalue(), list(reversed(revs)))
"""
)

DJANGO = (
    _COMMON
    + r"""
import io
os.environ.setdefault("DJANGO_SETTINGS_MODULE", sys.argv[2])
import django
django.setup()
from django.core.management import call_command
from django.db.migrations.loader import MigrationLoader
graph = MigrationLoader(None, ignore_no_migrations=True).graph
plan = []
for leaf in sorted(graph.leaf_nodes()):
    for node in graph.forwards_plan(leaf):
        if node not in plan:
            plan.append(node)
parts = []
for app_label, name in plan:
    buf = io.StringIO()
    call_command("sqlmigrate", app_label, name, stdout=buf)
    parts.append("-- %s.%s\n%s" % (app_label, name, buf.getvalue().strip()))
done("\n\n".join(parts) + "\n" if parts else "", ["%s.%s" % n for n in plan])
"""
)

METADATA = (
    _COMMON
    + r"""
import importlib
from sqlalchemy import MetaData
from sqlalchemy.schema import CreateIndex, CreateTable
module = importlib.import_module(sys.argv[2].split(":")[0])
metadata = None
if "sqlmodel" in sys.modules:
    metadata = sys.modules["sqlmodel"].SQLModel.metadata
if metadata is None or not metadata.tables:
    for name in ("metadata", "Base", "db", "Model"):
        obj = getattr(module, name, None)
        cand = obj if isinstance(obj, MetaData) else getattr(obj, "metadata", None)
        if isinstance(cand, MetaData) and cand.tables:
            metadata = cand
            break
if metadata is None or not metadata.tables:
    done("", [])
else:
    if sys.argv[3] == "postgresql":
        from sqlalchemy.dialects import postgresql as d
    else:
        from sqlalchemy.dialects import sqlite as d
    dialect = d.dialect()
    out = []
    for t in metadata.sorted_tables:
        out.append(str(CreateTable(t).compile(dialect=dialect)).strip() + ";")
        for i in sorted(t.indexes, key=lambda i: i.name or ""):
            out.append(str(CreateIndex(i).compile(dialect=dialect)).strip() + ";")
    done("\n\n".join(out) + "\n", sorted(metadata.tables))
"""
)

COMMAND = (
    _COMMON
    + r"""
import subprocess
r = subprocess.run(sys.argv[2], shell=True, capture_output=True, text=True)
if r.returncode:
    sys.stderr.write(r.stderr or r.stdout)
    sys.exit(r.returncode)
done(r.stdout, [])
"""
)


def detect(src: Path, spec: AppSpec, requirements: str) -> tuple[str, list[str]]:
    """(tool, extra arguments for its wrapper) for the app, or ('none', [])."""
    have = names(requirements)
    web = spec.web
    app_path = web.app if web and web.app else None
    if (src / "alembic.ini").is_file() and "alembic" in have:
        return "alembic", [str(src / "alembic.ini")]
    if (src / "migrations" / "alembic.ini").is_file() and "flask-migrate" in have and app_path:
        return "flask-migrate", [app_path]
    if (src / "manage.py").is_file() and "django" in have:
        m = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", (src / "manage.py").read_text())
        if m:
            return "django", [m.group(1)]
    if app_path and "sqlalchemy" in have:
        return "metadata", [app_path]
    return "none", []


def scratch_url(engine: str, requirements: str, scratch: Path) -> str:
    if engine == "postgresql":
        driver = "+psycopg" if "psycopg" in names(requirements) else ""
        return f"postgresql{driver}://sgpfab:sgpfab@127.0.0.1:1/schema"  # nothing listens: offline only
    return f"sqlite:///{scratch}/schema.sqlite3"


def tool_env(requirements: str, wheels: Path, python: str, say: Callable[[str], object]) -> Path:
    """A cached venv with the app's requirements, to run its migration tool on the controller."""
    key = hashlib.sha256(json.dumps([requirements, python]).encode()).hexdigest()[:24]

    def build(tmp: Path) -> None:
        say("preparing an environment with the app's requirements to read its schema")
        req = tmp / "requirements.txt"
        req.write_text(requirements)
        venv = tmp / "venv"
        for cmd in (
            [uv_bin(), "venv", "--quiet", "--python", python, str(venv)],
            [
                uv_bin(),
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                "--find-links",
                str(wheels),
                "-r",
                str(req),
            ],
        ):
            r = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=1800)
            if r.returncode:
                raise SgpfabError(f"no environment to read the schema in: {_cause(r.stderr)}")

    return cache.entry("toolenv", key, build, verify=False) / "venv"


def generate(
    src: Path, spec: AppSpec, requirements: str, wheels: Path, engine: str, python: str, say: Callable[[str], object]
) -> SchemaResult:
    configured = spec.schema_
    if configured.source == "none":
        return SchemaResult("none", note="schema.source is none")
    if configured.source == "command":
        tool, args, script = "command", [str(configured.command)], COMMAND
    else:
        tool, args = detect(src, spec, requirements)
        found = {"alembic": ALEMBIC, "flask-migrate": FLASK_MIGRATE, "django": DJANGO, "metadata": METADATA}.get(tool)
        if found is None:
            return SchemaResult("none", note="no migration tool or SQLAlchemy models found")
        script = found
    try:
        env_dir = tool_env(requirements, wheels, python, say)
    except SgpfabError as e:
        if tool == "command":
            raise
        return SchemaResult("none", note=str(e))
    with tempfile.TemporaryDirectory(prefix="sgpfab-schema-") as d:
        out = Path(d) / "schema.json"
        dialect_engine = "sqlite" if tool == "django" else engine
        url = scratch_url(dialect_engine, requirements, Path(d))
        env = _clean_env()
        paths = [str(src)] + ([str(src / "src")] if (src / "src").is_dir() else [])
        env.update(
            PYTHONPATH=os.pathsep.join(paths),
            DATABASE_URL=url,
            PATH=f"{env_dir / 'bin'}:{env.get('PATH', '')}",
            VIRTUAL_ENV=str(env_dir),
            HOME=d,
        )
        if spec_env := env.get("SGPFAB_SCHEMA_ENV"):
            env.update(json.loads(spec_env))
        extra = [engine] if tool == "metadata" else []
        try:
            r = subprocess.run(
                [str(env_dir / "bin" / "python"), "-c", script, str(out), *args, *extra],
                cwd=src,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            r = None
        if r is None or r.returncode or not out.is_file():
            cause = _cause(r.stderr) if r is not None else "timed out"
            if tool == "command":
                raise SgpfabError(f"schema command {configured.command!r} failed: {cause}")
            say(f"warning: schema.sql omitted: {tool} could not produce it ({cause})")
            return SchemaResult("none", note=f"{tool} failed: {cause}")
        data = json.loads(out.read_text())
    sql = data.get("sql") or ""
    if not sql.strip():
        return SchemaResult("none", note=f"{tool} reported no schema")
    header = (
        f"-- Generated by sgpfab with {tool} ({'SQLite' if dialect_engine == 'sqlite' else 'PostgreSQL'} dialect).\n\n"
    )
    return SchemaResult(tool, header + sql.strip() + "\n", list(data.get("migrations") or []))
