"""Which of the app's files go into a release, and the app's build step.

Selection follows the project's own `.gitignore` files (at any depth, with git's rules, via
pathspec), then the app's `exclude` patterns, then its `include` patterns (which win). On top,
a short list of things that never belong in a release is always left out: version-control
directories, Python caches, virtual environments and `.env` files (settings and secrets come
from sgpfab, never from a bundle). Every exclusion is recorded with its reason so `plan` and the
bundle's metadata can show it; nothing is dropped silently.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from ..errors import InputError, SgpfabError

ALWAYS_EXCLUDED = [
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.py[co]",
    ".env",
    ".env.*",
    ".DS_Store",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
]
REASON_ALWAYS = "never bundled"


@dataclass
class Selection:
    files: list[str] = field(default_factory=list)  # relative POSIX paths, sorted
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (path, why), directories end with /


def _spec(lines: list[str]) -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines(lines)


def select(
    src: Path, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), keep: set[str] | None = None
) -> Selection:
    """The files of `src` a release holds. `keep` (paths made by the build step) are kept even
    when .gitignore'd, unless an explicit exclude pattern or the never-bundled list matches."""
    always, user_ex, user_in = _spec(ALWAYS_EXCLUDED), _spec(list(exclude)), _spec(list(include))
    keep = keep or set()
    sel = Selection()
    ignores: list[tuple[str, pathspec.GitIgnoreSpec]] = []  # (directory prefix, its .gitignore)

    def why_excluded(rel: str, is_dir: bool) -> str | None:
        probe = rel + "/" if is_dir else rel
        if always.match_file(probe):
            return REASON_ALWAYS
        if is_dir and (src / rel / "pyvenv.cfg").is_file():
            return "a virtual environment"
        if user_in.match_file(probe):
            return None
        if user_ex.match_file(probe):
            return "exclude pattern"
        if rel in keep or (is_dir and any(k.startswith(rel + "/") for k in keep)):
            return None
        # git: the deepest .gitignore with a pattern matching the path decides (a `!pattern`
        # there re-includes what a shallower one ignored).
        for prefix, spec in sorted(ignores, key=lambda ps: len(ps[0]), reverse=True):
            if prefix and not probe.startswith(prefix):
                continue
            verdict = spec.check_file(probe[len(prefix) :]).include
            if verdict is not None:
                return ".gitignore" if verdict else None
        return None

    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = Path(dirpath).relative_to(src).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        gi = Path(dirpath) / ".gitignore"
        if gi.is_file():
            try:
                ignores.append((prefix, _spec(gi.read_text(errors="replace").splitlines())))
            except (OSError, ValueError) as e:
                raise InputError(f"{gi}: unreadable .gitignore: {e}") from None
        kept_dirs = []
        for d in sorted(dirnames):
            rel = prefix + d
            if os.path.islink(os.path.join(dirpath, d)):
                sel.excluded.append((rel + "/", "a symbolic link"))
                continue
            why = why_excluded(rel, True)
            # A directory is left out whole unless include patterns or build outputs may reach
            # inside it; then its files are judged one by one.
            final = why in (REASON_ALWAYS, "a virtual environment")
            if why and (final or (not include and not any(k.startswith(rel + "/") for k in keep))):
                sel.excluded.append((rel + "/", why))
            else:
                kept_dirs.append(d)
        dirnames[:] = kept_dirs
        for f in sorted(filenames):
            rel = prefix + f
            path = Path(dirpath) / f
            if path.is_symlink() or not path.is_file():
                sel.excluded.append((rel, "not a regular file"))
                continue
            why = why_excluded(rel, False)
            if why:
                sel.excluded.append((rel, why))
            else:
                sel.files.append(rel)
    sel.files.sort()
    return sel


def check_writable(sel: Selection, writable: tuple[str, ...]) -> None:
    """A writable directory is made empty on the host; the release must not ship files there
    (they would be hard-linked with the previous release's copy)."""
    for d in writable:
        inside = [f for f in sel.files if f.startswith(d.rstrip("/") + "/")]
        if inside:
            raise InputError(
                f"{inside[0]} is inside writable directory {d}/, which must start empty on the host:"
                " add it to .gitignore or to the app's exclude patterns"
            )


def run_build(src: Path, commands: tuple[str, ...], say: Callable[[str], object]) -> tuple[Path, set[str]]:
    """Copy the app to a scratch directory and run its build commands there (so the user's tree
    stays clean and the outputs go into the release). Returns the directory and the paths the
    build created or changed."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"sgpfab-build-{os.getpid()}-{id(commands)}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    before = _snapshot(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    for command in commands:
        say(f"build: {command}")
        r = subprocess.run(["/bin/sh", "-c", command], cwd=work, env=env, capture_output=True, text=True)
        if r.returncode:
            out = (r.stderr.strip() or r.stdout.strip()).splitlines()[-8:]
            shutil.rmtree(work, ignore_errors=True)
            raise SgpfabError(f"build command {command!r} failed (exit {r.returncode}):\n    " + "\n    ".join(out))
    after = _snapshot(work)
    changed = {rel for rel, sig in after.items() if before.get(rel) != sig}
    return work, changed


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, filenames in os.walk(d):
        for f in filenames:
            p = Path(dirpath) / f
            try:
                st = p.lstat()
            except OSError:
                continue
            out[p.relative_to(d).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def write_archive(src: Path, rels: list[str], dest: Path) -> None:
    """A reproducible tar.gz: the same files give the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in rels:
            st = (src / rel).stat()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = st.st_size, 0, 0o755 if st.st_mode & 0o111 else 0o644
            with open(src / rel, "rb") as f:
                tar.addfile(info, f)
    with open(dest, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
