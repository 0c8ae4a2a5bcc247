"""A release bundle on disk: its manifest and metadata (typed), verification, and its files.

    dist/APP/releases/vX.Y.Z/
      app-vX.Y.Z.tar.gz       the app's files (reproducible: sorted, mtime 0, owner 0)
      wheels/*.whl            every dependency (and the project itself) for the bundle's targets
      requirements/KEY.txt    what to install, per target
      manifest.json           SHA-256 of every other file of the bundle and of every archive member
      metadata.json           what the release is (app spec, targets, schema) and how it was built
      CHANGELOG.md  README.md  schema.sql (when the app has a schema)

The content digest covers everything that decides what runs on a host (app name, version, every
file and wheel, the requirements, the app spec with its processes and hooks, the targets, the
Python requirement, the schema) and nothing about when or by whom the bundle was built, so the
same source gives the same digest.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import cache
from ..appspec import AppSpec, Target
from ..errors import InputError
from ..versions import Version

FORMAT = 2
EXTRAS = ("metadata.json", "CHANGELOG.md", "README.md", "schema.sql")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchiveInfo(Frozen):
    name: str
    sha256: str
    size: int


class Manifest(Frozen):
    format: int
    app: str
    version: str
    content_digest: str
    archive: ArchiveInfo
    files: dict[str, str]  # archive member -> SHA-256
    wheels: dict[str, str]  # wheels/NAME -> SHA-256
    requirements: dict[str, str]  # requirements/NAME -> SHA-256
    extras: dict[str, str]  # the files listed in EXTRAS that the bundle has -> SHA-256


class Install(Frozen):
    """What goes into a release's venv besides the requirements file of its target."""

    project: str | None = None  # the app's own wheel, when it is a package
    added: tuple[str, ...] = ()  # distributions sgpfab added for its launchers (e.g. gunicorn)


class SchemaInfo(Frozen):
    source: str  # alembic | django | metadata | command | none
    fingerprint: str = ""  # SHA-256 of schema.sql ('' when there is none)
    migrations: tuple[str, ...] = ()  # migration identifiers, oldest first
    note: str = ""


class BuildInfo(Frozen):
    built_at: str
    builder: str
    git_commit: str | None = None
    excluded: tuple[str, ...] = ()  # source paths left out, with why ("path (.gitignore)")


class Metadata(Frozen):
    format: int
    app: str
    version: str
    content_digest: str
    spec: AppSpec
    install: Install
    targets: tuple[Target, ...]
    requirements: dict[str, str]  # target key -> requirements/NAME
    requires_python: str | None = None
    schema_: SchemaInfo = Field(alias="schema")
    build: BuildInfo

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def content_digest(manifest: Manifest | dict[str, Any], meta: Metadata | dict[str, Any]) -> str:
    """The digest of what a bundle deploys (see the module docstring)."""
    m = manifest if isinstance(manifest, dict) else manifest.model_dump()
    md = meta if isinstance(meta, dict) else meta.model_dump(by_alias=True, mode="json")
    covered = {
        "format": m["format"],
        "app": m["app"],
        "version": m["version"],
        "files": m["files"],
        "wheels": m["wheels"],
        "requirements": m["requirements"],
        "spec": md["spec"],
        "install": md["install"],
        "targets": md["targets"],
        "requirements_by_target": md["requirements"],
        "requires_python": md["requires_python"],
        "schema": {
            "source": md["schema"]["source"],
            "fingerprint": md["schema"]["fingerprint"],
            "migrations": md["schema"]["migrations"],
        },
    }
    return hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(f"corrupt bundle {path}: {why}")


def _member_name_ok(name: str) -> bool:
    return (
        bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and "\0" not in name
        and posixpath.normpath(name) == name
        and not name.startswith("../")
        and name != ".."
        and ".." not in name.split("/")
    )


class Bundle:
    """A verified bundle directory."""

    def __init__(self, path: Path, manifest: Manifest, metadata: Metadata):
        self.path, self.manifest, self.metadata = path, manifest, metadata

    @property
    def app(self) -> str:
        return self.manifest.app

    @property
    def version(self) -> Version:
        return Version.parse(self.manifest.version)

    @property
    def digest(self) -> str:
        return self.manifest.content_digest

    @property
    def spec(self) -> AppSpec:
        return self.metadata.spec

    @property
    def archive(self) -> Path:
        return self.path / self.manifest.archive.name

    @property
    def wheels_dir(self) -> Path:
        return self.path / "wheels"

    @property
    def schema_fingerprint(self) -> str:
        return self.metadata.schema_.fingerprint

    def target_for(self, arch: str, glibc: str, python: str, os: str = "linux") -> Target | None:
        """The bundle's target whose wheels install on a host like this, if any."""
        return next((t for t in self.metadata.targets if t.covers(arch, glibc, python, os)), None)

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Open and fully verify a bundle; InputError names the first problem."""
        p = Path(path)
        try:
            raw_manifest = json.loads((p / "manifest.json").read_text())
            raw_meta = json.loads((p / "metadata.json").read_text())
        except FileNotFoundError:
            raise InputError(f"not a release bundle (no manifest.json/metadata.json): {p}") from None
        except (ValueError, OSError) as e:
            raise _corrupt(p, f"unreadable manifest or metadata ({e})") from None
        if not isinstance(raw_manifest, dict) or raw_manifest.get("format") != FORMAT:
            fmt = raw_manifest.get("format") if isinstance(raw_manifest, dict) else None
            raise _corrupt(p, f"unknown bundle format {fmt!r} (this sgpfab reads format {FORMAT}; rebuild it)")
        try:
            manifest = Manifest.model_validate(raw_manifest)
            metadata = Metadata.model_validate(raw_meta)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise _corrupt(p, f"malformed manifest or metadata at {where or 'top level'}: {first['msg']}") from None
        b = cls(p, manifest, metadata)
        b.verify()
        return b

    def verify(self) -> None:
        """Every file of the bundle listed and matching its SHA-256, nothing else present, every
        archive member a plain file or directory with a safe relative name, and the digest right."""
        m, md, p = self.manifest, self.metadata, self.path
        try:
            Version.parse(m.version)
        except InputError as e:
            raise _corrupt(p, str(e)) from None
        if md.app != m.app or md.version != m.version:
            raise _corrupt(p, "metadata does not belong to this manifest")
        listed = {m.archive.name: m.archive.sha256, "manifest.json": None}
        listed.update({f"wheels/{n}": d for n, d in m.wheels.items()})
        listed.update({f"requirements/{n}": d for n, d in m.requirements.items()})
        listed.update(m.extras)
        for name in [m.archive.name, *m.wheels, *m.requirements]:
            if "/" in name or "\\" in name or name.startswith(".") or not name:
                raise _corrupt(p, f"bad file name {name!r} in the manifest")
        if not set(m.extras) <= set(EXTRAS) or "metadata.json" not in m.extras:
            raise _corrupt(p, "the manifest must list metadata.json and only known extra files")
        present = {f.relative_to(p).as_posix() for f in p.rglob("*") if f.is_file() or f.is_symlink()}
        extra = sorted(present - set(listed))
        if extra:
            raise _corrupt(p, f"{extra[0]} is not listed in the manifest")
        for name, digest in listed.items():
            if digest is None:
                continue
            f = p / name
            if not f.is_file() or f.is_symlink() or cache.sha256_file(f) != digest:
                raise _corrupt(p, f"{name} is missing or does not match its SHA-256")
        if set(md.requirements.values()) - set(m.requirements):
            raise _corrupt(p, "metadata names a requirements file the manifest does not list")
        self._verify_archive()
        if content_digest(m, md) != m.content_digest or md.content_digest != m.content_digest:
            raise _corrupt(p, "content digest mismatch (metadata or manifest changed)")

    def _verify_archive(self) -> None:
        found: dict[str, str] = {}
        try:
            with tarfile.open(self.archive, "r:gz") as tar:
                for member in tar:
                    if not _member_name_ok(member.name):
                        raise _corrupt(self.path, f"archive member {member.name!r} has an unsafe name")
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise _corrupt(self.path, f"archive member {member.name!r} is not a regular file")
                    if member.name in found:
                        raise _corrupt(self.path, f"archive member {member.name!r} appears twice")
                    f = tar.extractfile(member)
                    found[member.name] = hashlib.sha256(f.read() if f else b"").hexdigest()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise _corrupt(self.path, f"unreadable archive ({e})") from None
        if found != self.manifest.files:
            bad = sorted(set(found.items()) ^ set(self.manifest.files.items()))[0][0]
            raise _corrupt(self.path, f"archive member {bad} does not match the manifest")

    def unpacked(self) -> Path:
        """The archive's files as a directory tree, for transfers that only send what changed.
        Cached by the archive's SHA-256 (a different archive can never be mistaken for it) and
        checked against its sums before every reuse."""

        def build(tmp: Path) -> None:
            (tmp / "tree").mkdir()
            with tarfile.open(self.archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp / "tree", filter="data")
                else:  # Python before 3.11.4 (Debian 12's 3.11.2): members were checked by verify()
                    tar.extractall(tmp / "tree")

        return cache.entry("unpacked", self.manifest.archive.sha256, build) / "tree"


def bundle_dir(dist: Path, app: str, version: Version) -> Path:
    return dist / app / "releases" / version.release_name
