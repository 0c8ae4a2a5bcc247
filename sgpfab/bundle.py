"""Release bundles: build once, verify everywhere, deploy the same bytes to every host.

A bundle is a directory `dist/releases/vX.Y.Z/`:

    app-vX.Y.Z.tar.gz   the app's files (deterministic: sorted, mtime 0, owner 0)
    wheels/*.whl        every locked requirement, for the hosts' Python and platform
    manifest.json       SHA-256 of the archive, of every file in it, of every wheel and of the
                        files below; `content_digest` identifies the content
    metadata.json       version, git commit, build time, builder, digests, schema fingerprint
    CHANGELOG.md        the app's changelog, or git log since the previous tag
    schema.sql          the SQL the app's SQLModel/SQLAlchemy models imply (generated)
    README.md           what this bundle is
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import artifacts
from .errors import InputError, SgpfabError
from .inventory import AppSettings
from .session import controller_user
from .versions import Version

FORMAT = 1
# Never part of a release: per-host state lives in shared/, and build junk is rebuilt.
SOURCE_EXCLUDES = [
    ".git/", ".hg/", ".svn/", ".venv/", "venv/", "env/", "__pycache__/", "*.pyc", "*.pyo",
    "db/", "media/", "logs/", "wheelhouse/", ".env", ".env.*", "*.db", "*.sqlite3", "*.sqlite",
    "*.log", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "node_modules/", ".DS_Store",
    ".idea/", ".vscode/", "dist/", "build/", "*.egg-info/",
]
EXTRAS = ("metadata.json", "CHANGELOG.md", "schema.sql", "README.md")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_digest(version: str, files: dict[str, str], wheels: dict[str, str]) -> str:
    """Digest of what a bundle is (its version, file and wheel names with their SHA-256), not of
    when it was built: the same version of the same source and requirements gives the same digest."""
    h = hashlib.sha256(f"version\0{version}\n".encode())
    for kind, entries in (("file", files), ("wheel", wheels)):
        for name in sorted(entries):
            h.update(f"{kind}\0{name}\0{entries[name]}\n".encode())
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: dict
    metadata: dict

    @property
    def version(self) -> Version:
        return Version.parse(self.manifest["version"])

    @property
    def digest(self) -> str:
        return self.manifest["content_digest"]

    @property
    def archive(self) -> Path:
        return self.path / self.manifest["archive"]["name"]

    @property
    def wheels_dir(self) -> Path:
        return self.path / "wheels"

    @property
    def schema_fingerprint(self) -> str:
        return self.metadata.get("schema_fingerprint", "")

    def unpacked(self) -> Path:
        """The archive's files as a directory tree (cached by content digest), for transfers that
        only send what changed."""
        out = artifacts.CACHE / "unpacked" / self.digest
        if (out / ".sgpfab-complete").exists():
            return out / "tree"
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(self.archive, "r:gz") as tar:
            tar.extractall(tmp / "tree", filter="data")
        (tmp / ".sgpfab-complete").write_text("")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        return out / "tree"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Bundle":
        """Open and fully verify a bundle; InputError names the first problem."""
        p = Path(path)
        try:
            manifest = json.loads((p / "manifest.json").read_text())
            metadata = json.loads((p / "metadata.json").read_text())
        except FileNotFoundError:
            raise InputError(f"not a release bundle (no manifest.json/metadata.json): {p}") from None
        except ValueError as e:
            raise InputError(f"corrupt bundle {p}: unreadable manifest ({e})") from None
        b = cls(p, manifest, metadata)
        b.verify()
        return b

    def verify(self) -> None:
        m, p = self.manifest, self.path
        if m.get("format") != FORMAT:
            raise InputError(f"corrupt bundle {p}: unknown format {m.get('format')!r}")
        Version.parse(m.get("version", ""))
        if not self.archive.is_file() or sha256_file(self.archive) != m["archive"]["sha256"]:
            raise InputError(f"corrupt bundle {p}: {m['archive']['name']} does not match its SHA-256")
        for name, digest in m["extras"].items():
            if name not in EXTRAS or sha256_file(p / name) != digest:
                raise InputError(f"corrupt bundle {p}: {name} does not match its SHA-256")
        for name, digest in m["wheels"].items():
            w = self.wheels_dir / name
            if "/" in name or not w.is_file() or sha256_file(w) != digest:
                raise InputError(f"corrupt bundle {p}: wheel {name} is missing or does not match its SHA-256")
        found = {}
        with tarfile.open(self.archive, "r:gz") as tar:
            for member in tar:
                if member.isfile():
                    found[member.name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
        if found != m["files"]:
            bad = sorted(set(found.items()) ^ set(m["files"].items()))[0][0]
            raise InputError(f"corrupt bundle {p}: archive member {bad} does not match the manifest")
        if content_digest(m["version"], m["files"], m["wheels"]) != m["content_digest"]:
            raise InputError(f"corrupt bundle {p}: content digest mismatch")
        if self.metadata.get("content_digest") != m["content_digest"]:
            raise InputError(f"corrupt bundle {p}: metadata does not belong to this manifest")


def bundle_dir(dist: Path, version: Version) -> Path:
    return dist / "releases" / version.release_name


def build(src: Path, version: Version, app: AppSettings, dist: Path, say=print) -> Bundle:
    """Build the bundle for `version` (or reuse an identical one). A different bundle already
    built under the same version is refused: versions are immutable."""
    artifacts.check_source(src, app)
    out = bundle_dir(dist, version)
    wheelhouse = artifacts.wheelhouse(src, app, say)
    files = {rel: sha256_file(src / rel) for rel in artifacts.source_files(src, SOURCE_EXCLUDES)}
    wheels = {w.name: sha256_file(w) for w in sorted(wheelhouse.glob("*.whl"))}
    digest = content_digest(str(version), files, wheels)
    if out.exists():
        try:
            existing = Bundle.load(out)
        except InputError:
            existing = None
        if existing and existing.digest == digest:
            return existing
        if existing:
            raise InputError(f"bundle {version} already exists in {out} with different content;"
                             " versions are immutable: bump the version")
        raise InputError(f"{out} exists but is not a valid bundle; remove it to rebuild")
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "wheels").mkdir(parents=True)
        say(f"building bundle {version} from {src}")
        archive_name = f"app-{version.release_name}.tar.gz"
        _write_archive(src, sorted(files), tmp / archive_name)
        for w in wheels:
            shutil.copy2(wheelhouse / w, tmp / "wheels" / w)
        schema = generate_schema(src, app, wheelhouse)
        (tmp / "schema.sql").write_text(schema)
        (tmp / "CHANGELOG.md").write_text(changelog(src, version))
        commit = _git(src, "rev-parse", "HEAD")
        dirty = bool(_git(src, "status", "--porcelain", "--", "."))
        metadata = {
            "version": str(version), "content_digest": digest,
            "schema_fingerprint": hashlib.sha256(schema.encode()).hexdigest(),
            "git_commit": (commit + ("-dirty" if dirty else "")) if commit else None,
            "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "builder": controller_user(), "requirements": app.requirements, "module": app.module,
            "python_version": app.python_version, "platforms": app.platforms,
        }
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(_readme(version, metadata, len(files), len(wheels)))
        manifest = {
            "format": FORMAT, "version": str(version), "content_digest": digest,
            "archive": {"name": archive_name, "sha256": sha256_file(tmp / archive_name),
                        "size": (tmp / archive_name).stat().st_size},
            "files": files, "wheels": wheels,
            "extras": {n: sha256_file(tmp / n) for n in EXTRAS},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.load(out)


def _write_archive(src: Path, rels: list[str], dest: Path) -> None:
    """A reproducible tar.gz: same files -> same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in rels:
            st = (src / rel).stat()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = st.st_size, 0, 0o755 if st.st_mode & 0o111 else 0o644
            with open(src / rel, "rb") as f:
                tar.addfile(info, f)
    with open(dest, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())


SCHEMA_SCRIPT = r"""
import importlib, os, sys, tempfile
os.environ.setdefault("API_ROOT", tempfile.mkdtemp(prefix="sgpfab-schema-"))
sys.path.insert(0, sys.argv[1])
importlib.import_module(sys.argv[2].split(":")[0])
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
try:
    from sqlmodel import SQLModel
    metadata = SQLModel.metadata
except ImportError:
    mod = sys.modules[sys.argv[2].split(":")[0]]
    metadata = getattr(getattr(mod, "Base", None), "metadata", None) or getattr(mod, "metadata")
d = sqlite.dialect()
for t in metadata.sorted_tables:
    print(str(CreateTable(t).compile(dialect=d)).strip() + ";\n")
    for i in sorted(t.indexes, key=lambda i: i.name or ""):
        print(str(CreateIndex(i).compile(dialect=d)).strip() + ";\n")
"""


def generate_schema(src: Path, app: AppSettings, wheelhouse: Path) -> str:
    """Import the app with its own locked requirements (uv, in a throwaway environment) and emit
    the CREATE statements its models imply, for SQLite."""
    from uv import find_uv_bin

    cmd = [find_uv_bin(), "run", "--quiet", "--no-project", "--python", app.python_version,
           "--find-links", str(wheelhouse), "--with-requirements", str(src / app.requirements),
           "--", "python", "-c", SCHEMA_SCRIPT, str(src), app.module]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=src)
    if r.returncode:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SgpfabError(f"could not generate schema.sql from {src} ({app.module}): {tail}")
    header = f"-- Generated by sgpfab from the models of {app.module}; SQLite dialect.\n\n"
    return header + r.stdout.strip() + "\n"


def changelog(src: Path, version: Version) -> str:
    for name in ("CHANGELOG.md", "CHANGES.md", "CHANGELOG"):
        if (src / name).is_file():
            return (src / name).read_text()
    prev = _git(src, "describe", "--tags", "--abbrev=0")
    rng = [f"{prev}..HEAD"] if prev else []
    log = _git(src, "log", "--no-merges", "--format=- %s (%h, %an)", *rng, "--", ".")
    if log is None:
        return f"# {version}\n\nNo changelog file and no git history for {src.name}.\n"
    since = f" since {prev}" if prev else ""
    return f"# {version}\n\nChanges{since} (from git log):\n\n{log or '- (no commits)'}\n"


def _git(src: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _readme(version: Version, meta: dict, nfiles: int, nwheels: int) -> str:
    return f"""# Release bundle {version}

Built by {meta['builder']} at {meta['built_at']} from commit {meta['git_commit'] or 'unknown'}.

- `app-v{version}.tar.gz`: {nfiles} app files
- `wheels/`: {nwheels} wheels for Python {meta['python_version']} ({', '.join(meta['platforms'])})
- `manifest.json`: SHA-256 of the archive, of every file in it, of every wheel and of the files
  here; content digest `{meta['content_digest']}`
- `metadata.json`, `CHANGELOG.md`, `schema.sql` (schema fingerprint `{meta['schema_fingerprint'][:16]}`)

Deploy it with `fab -H HOSTS deploy --bundle {version}` (or the path of this directory).
Hosts verify every checksum before unpacking.
"""
