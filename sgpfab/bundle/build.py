"""Build a release bundle once: the app's files, its wheels, its schema, all checksummed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cache
from ..errors import InputError
from ..identity import controller_user
from ..versions import Version
from . import deps as deps_mod
from . import schema as schema_mod
from . import source
from .model import (
    EXTRAS,
    FORMAT,
    BuildInfo,
    Bundle,
    Install,
    Manifest,
    Metadata,
    SchemaInfo,
    bundle_dir,
    content_digest,
)

if TYPE_CHECKING:
    from ..inventory import App


def build(
    app: App, version: Version, dist: Path, say: Callable[[str], object] = print, src: Path | None = None
) -> Bundle:
    """Build the bundle of `version` of `app` (or reuse an identical one). A different bundle
    already built under the same version is refused: versions are immutable."""
    src = (src or app.source).resolve()
    spec = app.spec
    if not src.is_dir():
        raise InputError(f"app source folder not found: {src}")
    out = bundle_dir(dist, app.name, version)
    work, keep = src, set[str]()
    if spec.build:
        work, keep = source.run_build(src, spec.build, say)
    deps = None
    try:
        sel = source.select(work, spec.include, spec.exclude, keep)
        source.check_writable(sel, spec.writable)
        if not sel.files:
            raise InputError(f"{src}: no files to deploy (everything is excluded)")
        deps = deps_mod.prepare(work, spec, say)
        first = spec.targets[0]
        engine = app.config.database.engine
        schema = schema_mod.generate(
            work,
            spec,
            deps.requirements[first.key],
            deps.wheels[0].parent if deps.wheels else Path(tempfile.gettempdir()),
            engine,
            first.python,
            say,
        )
        files = {rel: cache.sha256_file(work / rel) for rel in sel.files}
        wheels = {w.name: cache.sha256_file(w) for w in deps.wheels}
        if deps.project_wheel:
            wheels[deps.project_wheel.name] = cache.sha256_file(deps.project_wheel)
        requirements = {f"{key}.txt": text for key, text in deps.requirements.items()}
        req_digests = {name: _sha(text) for name, text in requirements.items()}
        archive_name = f"app-{version.release_name}.tar.gz"
        tmp = Path(tempfile.mkdtemp(prefix=f".{version.release_name}.", dir=_ensure(out.parent)))
        try:
            source.write_archive(work, sel.files, tmp / archive_name)
            manifest = {
                "format": FORMAT,
                "app": app.name,
                "version": str(version),
                "content_digest": "",
                "archive": {
                    "name": archive_name,
                    "sha256": cache.sha256_file(tmp / archive_name),
                    "size": (tmp / archive_name).stat().st_size,
                },
                "files": files,
                "wheels": wheels,
                "requirements": req_digests,
                "extras": {},
            }
            meta = Metadata(
                format=FORMAT,
                app=app.name,
                version=str(version),
                content_digest="",
                spec=spec,
                install=Install(project=deps.project_wheel.name if deps.project_wheel else None, added=deps.added),
                targets=spec.targets,
                requirements={t.key: f"{t.key}.txt" for t in spec.targets},
                requires_python=deps.requires_python,
                schema=SchemaInfo(
                    source=schema.source,
                    fingerprint=schema.fingerprint,
                    migrations=tuple(schema.migrations),
                    note=schema.note,
                ),
                build=BuildInfo(
                    built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    builder=controller_user(),
                    git_commit=_commit(src),
                    excluded=tuple(f"{p} ({why})" for p, why in sel.excluded),
                ),
            ).model_dump(by_alias=True, mode="json")
            digest = content_digest(manifest, meta)
            if out.exists():
                existing = _existing(out)
                if existing is not None and existing.digest == digest:
                    return existing
                if existing is not None:
                    raise InputError(
                        f"bundle {app.name} {version} already exists in {out} with different content;"
                        " versions are immutable: bump the version"
                    )
                raise InputError(f"{out} exists but is not a valid bundle; remove it to rebuild")
            say(f"building bundle {app.name} {version} from {src} ({len(files)} files, {len(wheels)} wheels)")
            manifest["content_digest"] = meta["content_digest"] = digest
            (tmp / "wheels").mkdir()
            for w in deps.wheels:
                shutil.copy2(w, tmp / "wheels" / w.name)
            if deps.project_wheel:
                shutil.copy2(deps.project_wheel, tmp / "wheels" / deps.project_wheel.name)
            (tmp / "requirements").mkdir()
            for name, text in requirements.items():
                (tmp / "requirements" / name).write_text(text)
            (tmp / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            (tmp / "CHANGELOG.md").write_text(changelog(src, version))
            (tmp / "README.md").write_text(_readme(app.name, version, meta, len(files), len(wheels)))
            if schema.sql:
                (tmp / "schema.sql").write_text(schema.sql)
            manifest["extras"] = {n: cache.sha256_file(tmp / n) for n in EXTRAS if (tmp / n).is_file()}
            Manifest.model_validate(manifest)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if work != src:
            shutil.rmtree(work, ignore_errors=True)
        if deps is not None and deps.project_wheel:
            shutil.rmtree(deps.project_wheel.parent, ignore_errors=True)
    return Bundle.load(out)


def _ensure(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def _existing(out: Path) -> Bundle | None:
    try:
        return Bundle.load(out)
    except InputError:
        return None


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def changelog(src: Path, version: Version) -> str:
    for name in ("CHANGELOG.md", "CHANGES.md", "CHANGELOG", "CHANGES.rst", "HISTORY.md"):
        if (src / name).is_file():
            return (src / name).read_text(errors="replace")
    prev = _git(src, "describe", "--tags", "--abbrev=0")
    rng = [f"{prev}..HEAD"] if prev else []
    log = _git(src, "log", "--no-merges", "--format=- %s (%h, %an)", *rng, "--", ".")
    if log is None:
        return f"# {version}\n\nNo changelog file and no git history for {src.name}.\n"
    since = f" since {prev}" if prev else ""
    return f"# {version}\n\nChanges{since} (from git log):\n\n{log or '- (no commits)'}\n"


def _commit(src: Path) -> str | None:
    commit = _git(src, "rev-parse", "HEAD")
    if not commit:
        return None
    dirty = bool(_git(src, "status", "--porcelain", "--", "."))
    return commit + ("-dirty" if dirty else "")


def _git(src: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _readme(app: str, version: Version, meta: dict[str, Any], nfiles: int, nwheels: int) -> str:
    b = meta["build"]
    targets = ", ".join(f"{t['arch']} glibc>={t['glibc']} CPython {t['python']}" for t in meta["targets"])
    schema = meta["schema"]
    schema_line = (
        f"`schema.sql` from {schema['source']} (fingerprint `{schema['fingerprint'][:16]}`)"
        if schema["fingerprint"]
        else f"no schema.sql ({schema['note']})"
    )
    return f"""# {app} {version}

Built by {b["builder"]} at {b["built_at"]} from commit {b["git_commit"] or "unknown"}.

- `app-v{version}.tar.gz`: {nfiles} app files
- `wheels/`: {nwheels} wheels for {targets}
- `requirements/`: what each target's venv installs
- `manifest.json`: SHA-256 of every file of this bundle and of every file in the archive;
  content digest `{meta["content_digest"]}`
- `metadata.json`: processes, release commands, targets, schema; `CHANGELOG.md`; {schema_line}

Deploy it with `fab -H HOSTS deploy --app {app} --bundle {version}` (or this directory's path).
Hosts verify every checksum before anything is switched.
"""
