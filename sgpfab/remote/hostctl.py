"""hostctl: the host-side helper sgpfab uploads to every host (stdlib only; Linux and Windows).

It owns what must be exact on the host: the release state, verifying an uploaded release against
its manifest, finalizing it (marker, then rename), switching `current` atomically, the journal of
an interrupted switch, database backups and restores (SQLite online backup API; PostgreSQL with
pg_dump/pg_restore), the app's settings files, health gates, the deploy lock, and the audit log.

Where things are comes from API_ROOT/.sgpfab/host.json, written by the controller (sgpfab's
layout module is its one source). Structured input (metadata, audit records, settings) arrives
on stdin as JSON, never on the command line. Every sub-command prints one JSON line on stdout; a
refusal exits 2 with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets as _secrets
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable, Iterator

NAME_RE = re.compile(r"^v[0-9A-Za-z.+-]{1,64}$")
BACKUP_RE = re.compile(r"^app-[0-9]{8}T[0-9]{12}Z-[0-9A-Za-z.+_-]{1,80}\.(db|dump)$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SECRET_FILE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
DEFAULTS: dict[str, Any] = {
    "partial_prefix": ".partial-",
    "marker": ".sgpfab-release.json",
    "release_prefix": "v",
    "database": {"engine": "sqlite", "path": None, "env": "DATABASE_URL"},
    "backups_keep": 10,
    "service": "",
    "service_user": "",
    "login_user": "",
}
WINDOWS = os.name == "nt"


class Fail(Exception):
    pass


class NoBase(Fail):
    """A manifest patch this host cannot apply (no copy of its base, or another result): the
    controller then sends the whole manifest."""


EXIT_NO_BASE = 4
KEPT_MANIFEST = os.path.join(".sgpfab", "manifest.json")  # in each release: its bundle's manifest


_CMD = ""  # the sub-command running; every answer names it, so chained calls can be told apart


def _out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(dict(obj, _cmd=_CMD), sort_keys=True) + "\n")


def _stdin_object() -> dict[str, Any]:
    """stdin as a JSON object ({} when it is empty); any other JSON is refused."""
    data = _stdin_json()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Fail("stdin must be a JSON object")
    return data


def _stdin_json() -> Any:
    try:
        return json.loads(sys.stdin.read() or "null")
    except ValueError as e:
        raise Fail("stdin is not JSON: %s" % e) from None


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# -- layout ---------------------------------------------------------------------------------------
class Host:
    """Paths and settings of one app instance (from .sgpfab/host.json)."""

    def __init__(self, root: str) -> None:
        self.root = root
        conf = dict(DEFAULTS)
        try:
            with open(self.p(".sgpfab", "host.json")) as f:
                conf.update(json.load(f))
        except (OSError, ValueError):
            pass
        self.conf = conf
        self.partial_prefix: str = conf["partial_prefix"]
        self.marker: str = conf["marker"]

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def releases(self) -> str:
        return self.p("releases")

    def release(self, name: str) -> str:
        return self.p("releases", name)

    @property
    def db(self) -> str:
        path: str = self.conf["database"].get("path") or self.p("shared", "db", "app.db")
        return path

    @property
    def engine(self) -> str:
        engine: str = self.conf["database"].get("engine", "sqlite")
        return engine


def _check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise Fail("invalid release name %r" % name)
    return name


def _safe_leaf(name: str) -> bool:
    """A name that is safe to delete under releases/ or incoming/ (whatever else it is): one
    path component, not '.' or '..', no hidden name except a partial build."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or ".." in name:
        return False
    return not name.startswith(".") or name.startswith(DEFAULTS["partial_prefix"])


def _current(h: Host) -> str | None:
    """The release `current` names (a symlink on Linux, a junction on Windows), or None."""
    link = os.path.join(h.releases, "current")
    candidates = [link]
    if WINDOWS:  # a junction swap cut between its two renames: the new one, else the old one
        candidates += [os.path.join(h.releases, ".current.new"), os.path.join(h.releases, ".current.old")]
    for path in candidates:
        try:
            target = os.readlink(path)
        except (OSError, ValueError):
            continue
        return os.path.basename(target.rstrip("/\\"))
    return None


def _fsync_dir(path: str) -> None:
    """Make a rename durable (POSIX); Windows cannot open a directory for fsync."""
    if WINDOWS:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Write a file so that it is either the old or the new content, durably, with `mode` from
    the start (the temporary file is never more readable than the final one)."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        if not WINDOWS:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        for attempt in range(10):  # Windows: another program (a virus scanner) may hold the file a moment
            try:
                os.replace(tmp, path)
                break
            except PermissionError:
                if not WINDOWS or attempt == 9:
                    raise
                time.sleep(0.1 * (attempt + 1))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(d)


@contextlib.contextmanager
def _flock(path: str, exclusive: bool = True, wait: bool = True) -> Iterator[bool]:
    """An advisory lock on a file (fcntl on POSIX, msvcrt on Windows). Yields False when not
    waiting and the lock is taken."""
    try:  # read access is enough for a lock: the file may belong to another user
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if WINDOWS:
            # msvcrt has no shared locks (a shared lock is exclusive here), and LK_LOCK gives up
            # after 10 attempts a second apart: waiting means trying LK_NBLCK until it works.
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                    break
                except OSError:
                    if not wait:
                        yield False
                        return
                    time.sleep(0.2)
            try:
                yield True
            finally:
                os.lseek(fd, 0, 0)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        else:
            import fcntl

            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except OSError:
                yield False
                return
            yield True
    finally:
        os.close(fd)


def _ops_lock(h: Host, exclusive: bool = False, wait: bool = True) -> contextlib.AbstractContextManager[bool]:
    """Long host-side operations (backups, restores, hooks) hold this shared; taking over a stale
    deploy lock needs it exclusively, so it waits for what a dead controller left running."""
    return _flock(h.p(".sgpfab", "ops.lock"), exclusive=exclusive, wait=wait)


# -- releases -------------------------------------------------------------------------------------
def state(a: argparse.Namespace, h: Host) -> None:
    _out(_state_dict(h))


def _state_dict(h: Host) -> dict[str, Any]:
    releases, partials, junk = [], [], []
    rel = h.releases
    if os.path.isdir(rel):
        for name in sorted(os.listdir(rel)):
            path = os.path.join(rel, name)
            if name == "current" or name.startswith(".current"):
                continue
            if name.startswith(h.partial_prefix):
                partials.append(name)
                continue
            if os.path.islink(path) or not os.path.isdir(path) or not NAME_RE.fullmatch(name):
                junk.append(name)
                continue
            meta = None
            try:
                with open(os.path.join(path, h.marker)) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                pass
            bad = None
            with contextlib.suppress(OSError):
                with open(os.path.join(path, ".sgpfab-bad")) as f:
                    bad = f.read()[:300] or "marked bad"
            releases.append(
                {
                    "name": name,
                    "complete": meta is not None,
                    "bad": bad is not None,
                    "bad_reason": bad,
                    "meta": meta or {},
                }
            )
    incoming = sorted(os.listdir(h.p("incoming"))) if os.path.isdir(h.p("incoming")) else []
    return {
        "root": h.root,
        "current": _current(h),
        "releases": releases,
        "partials": partials,
        "junk": junk,
        "incoming": incoming,
        "journal": _read_journal(h),
        "db_exists": _db_exists(h),
    }


def _db_exists(h: Host) -> bool:
    return h.engine == "sqlite" and os.path.exists(h.db)


def manifest(a: argparse.Namespace, h: Host) -> None:
    """Rebuild the manifest of release --name from the copy release --base keeps and the patch on
    stdin (sgpfab/bundle/manifestpatch.py), accepted only when its SHA-256 is --sha256, into
    incoming/NAME/ where verify reads it."""
    name, base = _check_name(a.name), _check_name(a.base)
    patch = _stdin_json()
    try:
        with open(os.path.join(h.release(base), KEPT_MANIFEST)) as f:
            rebuilt = _patched(json.load(f), patch)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise NoBase("no usable copy of the manifest of %s (%s)" % (base, e)) from None
    data = _canonical(rebuilt)
    if hashlib.sha256(data).hexdigest() != a.sha256:
        raise NoBase("the manifest rebuilt from the one of %s is not the expected one" % base)
    os.makedirs(h.p("incoming", name), exist_ok=True)
    _write_atomic(h.p("incoming", name, "manifest.json"), data)
    _out({"manifest": name, "base": base})


def _patched(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with a manifest patch applied: keys dropped and set, object values merged."""
    out = {k: v for k, v in base.items() if k not in patch["drop"]}
    out.update(patch["set"])
    for key, change in patch["merge"].items():
        inner = {k: v for k, v in base[key].items() if k not in change["drop"]}
        inner.update(change["set"])
        out[key] = inner
    return out


def _canonical(obj: Any) -> bytes:
    """The byte form of a manifest both sides hash (sgpfab/bundle/manifestpatch.py: the same)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def verify(a: argparse.Namespace, h: Host) -> None:
    """Check a release copied into releases/.partial-NAME against its bundle's manifest (uploaded
    to incoming/NAME/): exactly the listed files, each with its SHA-256, and every wheel. On any
    mismatch the partial release, the upload and a corrupt wheel are deleted (a retry uploads
    again) so nothing untrusted is kept."""
    name = a.name
    incoming = h.p("incoming", name) if _safe_leaf(name) else None
    partial = os.path.join(h.releases, h.partial_prefix + name) if _safe_leaf(name) else None
    try:
        _check_name(name)
        manifest = _load_manifest(h, name, cast(str, incoming))  # a checked name is a safe leaf
        seen = _tree_digests(partial)
        if seen != manifest["files"]:
            bad = sorted(set(seen.items()) ^ set(manifest["files"].items()))[0][0]
            raise Fail("bundle file %s does not match the manifest (corrupt or tampered)" % bad)
    except Fail:
        for path in (incoming, partial):
            if path:
                shutil.rmtree(path, ignore_errors=True)
        raise
    _out({"verified": name, "files": len(seen)})


def _load_manifest(h: Host, name: str, incoming: str) -> dict[str, Any]:
    try:
        with open(os.path.join(incoming, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise Fail("bundle for %s has no readable manifest: %s" % (name, e)) from None

    def digests(key: str) -> bool:
        d = manifest.get(key) if isinstance(manifest, dict) else None
        return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())

    if not digests("files") or not (digests("wheels") or manifest.get("wheels") in (None, {})):
        raise Fail("bundle for %s has a malformed manifest" % name)
    if h.conf["release_prefix"] + str(manifest.get("version")) != name:
        raise Fail("bundle is version %s, not %s" % (manifest.get("version"), name))
    wheelhouse = h.p("wheelhouse")
    for wheel, digest in sorted((manifest.get("wheels") or {}).items()):
        path = os.path.join(wheelhouse, os.path.basename(wheel))
        if not os.path.isfile(path) or _sha256(path) != digest:
            if os.path.isfile(path):
                os.unlink(path)
            raise Fail("wheel %s does not match its SHA-256 (corrupt or tampered)" % wheel)
    return cast(dict[str, Any], manifest)  # a dict: digests("files") passed


def _sha256(path: str) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            d.update(chunk)
    return d.hexdigest()


def _tree_digests(partial: str | None) -> dict[str, str]:
    """SHA-256 of every file in a release tree; links and special files are refused."""
    if not partial or not os.path.isdir(partial):
        raise Fail("no staged release at %s" % partial)
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(partial):
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise Fail("release tree has a forbidden link %r" % d)
        for f in filenames:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, partial).replace(os.sep, "/")
            if os.path.islink(path) or not os.path.isfile(path):
                raise Fail("release tree has a forbidden entry %r" % rel)
            seen[rel] = _sha256(path)
    return seen


def finalize(a: argparse.Namespace, h: Host) -> None:
    """Mark a built release complete (metadata from stdin) and move it to its final name."""
    name = _check_name(a.name)
    src = os.path.join(h.releases, h.partial_prefix + name)
    dst = h.release(name)
    if not os.path.isdir(src):
        raise Fail("no staged release %s" % src)
    if os.path.exists(dst):
        raise Fail("release %s already exists" % name)
    meta = _stdin_json() or {}
    if not isinstance(meta, dict):
        raise Fail("release metadata must be a JSON object")
    meta.update({"name": name, "finalized_at": _now()})
    active = _current(h)
    seeded = _seed_bytecode(h.release(active), src) if active and active != name else 0
    with contextlib.suppress(OSError, ValueError):  # kept for the next release's manifest patch
        with open(h.p("incoming", name, "manifest.json")) as f:
            kept = _canonical(json.load(f))
        os.makedirs(os.path.join(src, ".sgpfab"), exist_ok=True)
        _write_atomic(os.path.join(src, KEPT_MANIFEST), kept)
    _write_atomic(os.path.join(src, h.marker), json.dumps(meta, sort_keys=True))
    os.rename(src, dst)
    _fsync_dir(h.releases)
    shutil.rmtree(h.p("incoming", name), ignore_errors=True)
    _out({"release": name, "bytecode_seeded": seeded, "state": _state_dict(h) if a.with_state else None})


def _seed_bytecode(src: str, dst: str) -> int:
    """Give release directory `dst` the compiled bytecode `src` has for every source file the
    two share: the same file (inode), which uv (from its cache) and the upload (unchanged files)
    hard-link. A new release's processes then start without compiling what did not change; the
    interpreter still checks each .pyc against its source. Best effort: returns the count."""
    count = 0
    for here, dirs, files in os.walk(dst):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        sources = [f for f in files if f.endswith(".py")]
        if not sources:
            continue
        rel = os.path.relpath(here, dst)
        cache_from = os.path.join(src, rel, "__pycache__")
        try:
            compiled = os.listdir(cache_from)
        except OSError:
            continue
        cache_to = os.path.join(here, "__pycache__")
        for f in sources:
            stem = f[:-3] + "."
            names = [
                c for c in compiled if c.startswith(stem) and c.endswith(".pyc") and c[len(stem) :].count(".") >= 1
            ]
            if not names:
                continue
            try:
                a, b = os.lstat(os.path.join(here, f)), os.lstat(os.path.join(src, rel, f))
            except OSError:
                continue
            if (a.st_ino, a.st_dev) != (b.st_ino, b.st_dev) or not stat.S_ISREG(a.st_mode):
                continue
            for c in names:
                count += _link_or_copy(os.path.join(cache_from, c), cache_to, c)
    return count


def _link_or_copy(path: str, into: str, name: str) -> int:
    """Put regular file `path` into directory `into` as `name` (a hard link, else a copy); 1 if
    done (a link or anything else at `path` is left alone)."""
    target = os.path.join(into, name)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return 0
        os.makedirs(into, exist_ok=True)
        if os.path.lexists(target):
            return 0
        try:
            os.link(path, target)
        except OSError:  # another owner's file (protected_hardlinks) or another file system
            tmp = target + ".%d.tmp" % os.getpid()
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        return 1
    except OSError:
        return 0


def switch(a: argparse.Namespace, h: Host) -> None:
    """Point releases/current at a complete release, atomically (symlink + rename on POSIX; on
    Windows a new junction is made beside the old one and swapped by two renames, and a missing
    `current` left by a crash between them is repaired by `_repair_current`)."""
    name = _check_name(a.to)
    if not os.path.isfile(os.path.join(h.release(name), h.marker)):
        raise Fail("release %s is missing or incomplete" % name)
    _repair_current(h)
    previous = _current(h)
    link = os.path.join(h.releases, "current")
    if WINDOWS:
        _windows_switch(h, name)
    else:
        tmp = os.path.join(h.releases, ".current.%d" % os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(name, tmp)
        os.replace(tmp, link)
        _fsync_dir(h.releases)
    _out({"previous": previous, "current": name})


def _make_junction(target: str, link: str) -> None:
    """Windows: a directory junction `link` -> `target` (no privilege needed, unlike symlinks)."""
    import _winapi

    _winapi.CreateJunction(target, link)  # type: ignore[attr-defined]


def _remove_junction(link: str) -> None:
    """Windows: RemoveDirectory on a junction removes the junction, never its target's files."""
    os.rmdir(link)


def _windows_switch(h: Host, name: str) -> None:
    """Windows cannot replace a directory entry atomically: make the new junction beside the old
    one (releases/.current.new), rename the old one away (.current.old), rename the new one into
    place, remove the old one. A crash between the renames leaves no `current`, which
    `_repair_current` (run first by every switch) puts back. The `.current*` names are skipped by
    `state`."""
    link = os.path.join(h.releases, "current")
    new, old = os.path.join(h.releases, ".current.new"), os.path.join(h.releases, ".current.old")
    for stale in (new, old):
        if os.path.lexists(stale):
            _remove_junction(stale)
    _make_junction(h.release(name), new)
    if os.path.lexists(link):
        os.rename(link, old)
    os.rename(new, link)
    if os.path.lexists(old):
        _remove_junction(old)


def _repair_current(h: Host) -> None:
    """Windows only: finish a junction swap that a crash cut between its two renames (the new
    junction wins: the switch only starts once the new release passed its gate), and remove what
    an interrupted swap left. Called with the deploy lock held."""
    if not WINDOWS:
        return
    link = os.path.join(h.releases, "current")
    leftovers = [os.path.join(h.releases, ".current.new"), os.path.join(h.releases, ".current.old")]
    if not os.path.lexists(link):
        for leftover in leftovers:
            if os.path.lexists(leftover):
                os.rename(leftover, link)
                break
    for leftover in leftovers:
        if os.path.lexists(leftover):
            _remove_junction(leftover)


def unlink_current(a: argparse.Namespace, h: Host) -> None:
    link = os.path.join(h.releases, "current")
    if os.path.lexists(link):
        if WINDOWS:
            _remove_junction(link)
        else:
            os.unlink(link)
            _fsync_dir(h.releases)
    _out({"current": None})


def mark(a: argparse.Namespace, h: Host) -> None:
    path = h.release(_check_name(a.name))
    if not os.path.isdir(path):
        raise Fail("no release %s" % a.name)
    flag = os.path.join(path, ".sgpfab-bad")
    if a.bad:
        _write_atomic(flag, (a.reason or "")[:300])
    elif os.path.exists(flag):
        os.unlink(flag)
    _out({"release": a.name, "bad": bool(a.bad)})


def remove(a: argparse.Namespace, h: Host) -> None:
    """Delete releases, staged partials, leftover uploads and junk; never the active release."""
    active = _current(h)
    targets = []
    for name in a.names:  # check every name before deleting anything
        if not _safe_leaf(name):
            raise Fail("invalid name %r" % name)
        if name == active or name == "current":
            raise Fail("refusing to remove the active release %s" % name)
        targets.append(name)
    removed = []
    for name in targets:
        for path in (h.release(name), h.p("incoming", name)):
            if os.path.lexists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(name)
    _out({"removed": sorted(set(removed))})


# -- journal of an interrupted switch -------------------------------------------------------------
def _journal_path(h: Host) -> str:
    return h.p(".sgpfab", "journal.json")


def _read_journal(h: Host) -> Any:
    try:
        with open(_journal_path(h)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def journal(a: argparse.Namespace, h: Host) -> None:
    """begin: record an activation (stdin JSON: op, from, to) durably before anything changes;
    clear: it finished or was undone."""
    if a.action == "begin":
        rec = _stdin_json()
        if not isinstance(rec, dict) or "to" not in rec:
            raise Fail("journal record needs at least 'to'")
        rec["since"] = _now()
        os.makedirs(os.path.dirname(_journal_path(h)), exist_ok=True)
        _write_atomic(_journal_path(h), json.dumps(rec, sort_keys=True))
        _out({"journal": rec})
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_journal_path(h))
        _fsync_dir(h.p(".sgpfab"))
        _out({"journal": None})


# -- database -------------------------------------------------------------------------------------
def _backup_dir(h: Host) -> str:
    return h.p("backups")


def _prune_partials(h: Host) -> list[str]:
    """Remove backups a killed run left half-written (called with the backup lock held)."""
    d = _backup_dir(h)
    gone = []
    for n in os.listdir(d) if os.path.isdir(d) else []:
        if n.endswith(".partial"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, n))
                gone.append(n)
    return gone


def backup(a: argparse.Namespace, h: Host) -> None:
    """A consistent backup of the app's database into backups/, pruned to the newest N."""
    dest_dir = _backup_dir(h)
    os.makedirs(dest_dir, exist_ok=True)
    with _ops_lock(h), _flock(os.path.join(dest_dir, ".lock")):
        stale = _prune_partials(h)
        if h.engine == "none" or (h.engine == "sqlite" and not os.path.exists(h.db)):
            _out({"backup": None, "stale_removed": stale})
            return
        label = re.sub(r"[^0-9A-Za-z.+-]", "_", a.label or "manual")[:80]
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        ext = "db" if h.engine == "sqlite" else "dump"
        dest = os.path.join(dest_dir, "app-%s-%s.%s" % (stamp, label, ext))
        tmp = dest + ".partial"
        try:
            (_sqlite_backup if h.engine == "sqlite" else _pg_backup)(h, tmp)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(dest_dir)
        pruned = _prune_backups(dest_dir, a.keep)
    _out(
        {
            "backup": dest,
            "name": os.path.basename(dest),
            "bytes": os.path.getsize(dest),
            "pruned": pruned,
            "stale_removed": stale,
        }
    )


def _create_private(path: str) -> None:
    """Create an empty file readable by its owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)


def _sqlite_backup(h: Host, tmp: str) -> None:
    """sqlite3's online backup API: consistent under WAL and concurrent writers, unlike cp."""
    _create_private(tmp)
    src = sqlite3.connect("file:%s?mode=ro" % h.db, uri=True, timeout=30)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if ok != "ok":
        raise Fail("backup failed its integrity check: %s" % ok)


def _read_env_files(h: Host) -> dict[str, str]:
    """The app's settings as its processes see them (env, then overrides)."""
    env: dict[str, str] = {}
    for name in ("env", "overrides.env"):
        path = h.p("shared", "config", name)
        try:
            with open(path) as f:
                env.update(parse_env(f.read()))
        except OSError:
            pass
    return env


def parse_env(text: str) -> dict[str, str]:
    """The subset of systemd's EnvironmentFile syntax that sgpfab writes: KEY='v' or KEY="v"."""
    out: dict[str, str] = {}
    for line in text.split("\n"):
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, val = line.split("=", 1)
        if len(val) >= 2 and val[0] == "'" and val[-1] == "'":
            val = val[1:-1]
        elif len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        out[key.strip()] = val
    return out


def format_env(env: dict[str, str]) -> str:
    """KEY=VALUE lines systemd's EnvironmentFile reads back exactly (single line values only)."""
    lines = []
    for key in sorted(env):
        val = env[key]
        if not ENV_KEY_RE.fullmatch(key) or re.search(r"[\x00-\x08\x0a-\x1f\x7f]", val):
            raise Fail("invalid setting %r" % key)
        if "'" not in val:
            lines.append("%s='%s'" % (key, val))
        else:
            lines.append('%s="%s"' % (key, re.sub(r'([\\"$`])', r"\\\1", val)))
    return "".join(line + "\n" for line in lines)


def _pg_params(h: Host, env: dict[str, str] | None = None) -> dict[str, str]:
    """Connection parameters of the app's PostgreSQL database, from its settings."""
    key = h.conf["database"].get("env") or "DATABASE_URL"
    url = (env if env is not None else _read_env_files(h)).get(key)
    if not url:
        raise Fail("no %s in the app's settings: cannot reach PostgreSQL" % key)
    u = urllib.parse.urlsplit(url)
    scheme = u.scheme.split("+", 1)[0]
    if scheme not in ("postgres", "postgresql") or not u.path.strip("/"):
        raise Fail("%s is not a postgresql://USER:PASSWORD@HOST:PORT/DB URL" % key)
    q = dict(urllib.parse.parse_qsl(u.query))
    return {
        "host": u.hostname or q.get("host") or "localhost",
        "port": str(u.port or 5432),
        "user": urllib.parse.unquote(u.username or ""),
        "password": urllib.parse.unquote(u.password or ""),
        "dbname": urllib.parse.unquote(u.path.strip("/")),
        "sslmode": q.get("sslmode", ""),
    }


@contextlib.contextmanager
def _pg_env(h: Host, settings: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Environment for pg_dump/pg_restore/psql: the password in a private PGPASSFILE, never argv."""
    p = _pg_params(h, settings)
    d = tempfile.mkdtemp(prefix="sgpfab-pg-")
    try:
        passfile = os.path.join(d, "pgpass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        esc: Callable[[str], str] = lambda s: s.replace("\\", "\\\\").replace(":", "\\:")
        with os.fdopen(fd, "w") as f:
            f.write(
                "%s:%s:%s:%s:%s\n" % (esc(p["host"]), p["port"], esc(p["dbname"]), esc(p["user"]), esc(p["password"]))
            )
        env = {k: val for k, val in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGPASSFILE=passfile,
            PGHOST=p["host"],
            PGPORT=p["port"],
            PGUSER=p["user"],
            PGDATABASE=p["dbname"],
            PGCONNECT_TIMEOUT="10",
        )
        if p["sslmode"]:
            env["PGSSLMODE"] = p["sslmode"]
        yield env
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run_pg(args: list[str], env: dict[str, str], what: str) -> str:
    if not shutil.which(args[0]):
        raise Fail("%s is not installed on this host (Debian: apt install postgresql-client)" % args[0])
    r = subprocess.run(args + ["--no-password"], env=env, capture_output=True, text=True)
    if r.returncode:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()] or ["(no output)"]
        raise Fail("%s failed: %s" % (what, lines[0][:300]))
    return r.stdout


def _pg_backup(h: Host, tmp: str) -> None:
    _create_private(tmp)
    with _pg_env(h) as env:
        _run_pg(["pg_dump", "--format=custom", "--file", tmp], env, "pg_dump")


def _pg_restore(h: Host, dump: str) -> None:
    """Put the database back exactly as the dump has it, in one transaction: everything the
    app's role owns is dropped first (tables created after the dump must not survive), then the
    dump's objects are created; any error rolls all of it back."""
    with _pg_env(h) as env:
        d = tempfile.mkdtemp(prefix="sgpfab-restore-")
        try:
            script = os.path.join(d, "restore.sql")
            _run_pg(
                ["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges", "--file", script, dump],
                env,
                "pg_restore",
            )
            _run_pg(
                [
                    "psql",
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    "-c",
                    "DROP OWNED BY CURRENT_USER",
                    "-f",
                    script,
                ],
                env,
                "restoring the PostgreSQL dump",
            )
        finally:
            shutil.rmtree(d, ignore_errors=True)


def backups(a: argparse.Namespace, h: Host) -> None:
    d = _backup_dir(h)
    out = []
    if os.path.isdir(d):
        for n in sorted(os.listdir(d)):
            if BACKUP_RE.fullmatch(n):
                out.append({"name": n, "bytes": os.path.getsize(os.path.join(d, n))})
    _out({"backups": out})


def restore(a: argparse.Namespace, h: Host) -> None:
    """Replace the app's database with a backup. The caller has stopped every process of the app
    and saved the current database first."""
    if not BACKUP_RE.fullmatch(a.name):
        raise Fail("invalid backup name %r" % a.name)
    src_path = os.path.join(_backup_dir(h), a.name)
    if not os.path.isfile(src_path):
        raise Fail("no backup named %s" % a.name)
    with _ops_lock(h):
        if a.name.endswith(".db"):
            if h.engine != "sqlite":
                raise Fail("%s is a SQLite backup; this app's database is %s" % (a.name, h.engine))
            os.makedirs(os.path.dirname(h.db), exist_ok=True)
            src = sqlite3.connect("file:%s?mode=ro" % src_path, uri=True)
            dst = sqlite3.connect(h.db, timeout=30)
            try:
                src.backup(dst)
                ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                dst.close()
                src.close()
            if ok != "ok":
                raise Fail("restored database failed its integrity check: %s" % ok)
        else:
            if h.engine != "postgresql":
                raise Fail("%s is a PostgreSQL dump; this app's database is %s" % (a.name, h.engine))
            _pg_restore(h, src_path)
    _out({"restored": a.name})


def dbcheck(a: argparse.Namespace, h: Host) -> None:
    """Can the app's database be reached with its settings (stdin JSON {"engine", "env"} for
    settings not written yet), may it create tables, and are the backup tools there?"""
    data = _stdin_object() if a.stdin else None
    engine = (data or {}).get("engine") or h.engine
    if engine != "postgresql":
        _out({"ok": True, "engine": engine})
        return
    if data and data.get("env_key"):
        h.conf["database"]["env"] = data["env_key"]
    for tool in ("pg_dump", "pg_restore", "psql"):
        if not shutil.which(tool):
            raise Fail("%s is not installed on this host (Debian: apt install postgresql-client)" % tool)
    with _pg_env(h, (data or {}).get("env")) as env:
        out = _run_pg(
            [
                "psql",
                "-X",
                "-A",
                "-t",
                "-c",
                "select current_user, has_database_privilege(current_database(), 'CREATE'),"
                " has_schema_privilege('public', 'CREATE'), current_setting('server_version')",
            ],
            env,
            "connecting to PostgreSQL",
        )
    user, db_create, schema_create, version = (out.strip().split("|") + ["", "", "", ""])[:4]
    if schema_create != "t":
        raise Fail("PostgreSQL user %s may not create tables in schema public of %s" % (user, env["PGDATABASE"]))
    _out({"ok": True, "engine": "postgresql", "user": user, "server_version": version})


def _prune_backups(dest_dir: str, keep: int) -> list[str]:
    names = sorted(n for n in os.listdir(dest_dir) if BACKUP_RE.fullmatch(n))
    doomed = names[:-keep] if keep > 0 else []
    for n in doomed:
        os.unlink(os.path.join(dest_dir, n))
    return doomed


def prune(a: argparse.Namespace, h: Host) -> None:
    """Remove half-written backups left by killed runs (when no backup is running)."""
    d = _backup_dir(h)
    if not os.path.isdir(d):
        _out({"stale_removed": []})
        return
    with _flock(os.path.join(d, ".lock"), wait=False) as got:
        _out({"stale_removed": _prune_partials(h) if got else []})


# -- settings -------------------------------------------------------------------------------------
def _hmac_key(h: Host) -> bytes:
    path = h.p("shared", "config", ".fingerprint-key")
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    key = _secrets.token_bytes(32)
    _write_atomic(path, key, 0o600)
    return key


def _fingerprint(h: Host, env: dict[str, str], files: dict[str, str]) -> str:
    """A keyed digest of the settings the app's processes get (deployed ones, the host's
    overrides, secret files): changes when a value changes, reveals nothing about values."""
    overrides = {}
    with contextlib.suppress(OSError):
        with open(h.p("shared", "config", "overrides.env"), encoding="utf-8", newline="") as f:
            overrides = parse_env(f.read())
    canon = json.dumps({"env": env, "overrides": overrides, "files": files}, sort_keys=True).encode()
    return hmac.new(_hmac_key(h), canon, hashlib.sha256).hexdigest()


def _settings_input() -> tuple[dict[str, str], dict[str, str], list[str]]:
    data = _stdin_json()
    if not isinstance(data, dict):
        raise Fail("settings must be a JSON object")
    env, files, secret = data.get("env") or {}, data.get("files") or {}, data.get("secret_keys") or []
    for k, val in env.items():
        if not ENV_KEY_RE.fullmatch(k) or not isinstance(val, str):
            raise Fail("invalid setting %r" % k)
    for k, val in files.items():
        if not SECRET_FILE_RE.fullmatch(k) or not isinstance(val, str):
            raise Fail("invalid secret file name %r" % k)
    return env, files, list(secret)


def _settings_files(cfg: str) -> tuple[str, dict[str, str]]:
    """The current settings: (env text, {secret file name: content})."""
    env = ""
    with contextlib.suppress(OSError):
        with open(os.path.join(cfg, "env"), encoding="utf-8", newline="") as f:
            env = f.read()
    files: dict[str, str] = {}
    fdir = os.path.join(cfg, "files")
    for n in sorted(os.listdir(fdir)) if os.path.isdir(fdir) else []:
        if SECRET_FILE_RE.fullmatch(n):
            with open(os.path.join(fdir, n), encoding="utf-8", newline="") as f:
                files[n] = f.read()
    return env, files


def _put_settings(cfg: str, env_text: str, files: dict[str, str], keys: dict[str, Any]) -> None:
    fdir = os.path.join(cfg, "files")
    os.makedirs(fdir, mode=0o700, exist_ok=True)
    for name, content in files.items():
        _write_atomic(os.path.join(fdir, name), content, 0o600)
    for stale in set(os.listdir(fdir)) - set(files):
        if SECRET_FILE_RE.fullmatch(stale):
            os.unlink(os.path.join(fdir, stale))
    _write_atomic(os.path.join(cfg, "env"), env_text, 0o600)
    _write_atomic(os.path.join(cfg, "keys.json"), json.dumps(keys), 0o600)


def settings(a: argparse.Namespace, h: Host) -> None:
    """The app's settings (shared/config: env, files/, keys.json, overrides.env; all 0600).

    write: replace them (stdin JSON: env, files, secret_keys), keeping the old ones as a snapshot
    until `commit` (drop the snapshot) or `revert` (put it back); fingerprint: the keyed digest
    those settings would have (nothing written); show: names and values, secrets masked;
    override-set / override-unset: host-local overrides that win over deployed settings."""
    cfg = h.p("shared", "config")
    os.makedirs(cfg, mode=0o700, exist_ok=True)
    snap = os.path.join(cfg, "previous.json")
    secret: list[str] | set[str]  # secret names: a list from stdin (write), a set otherwise
    if a.action in ("write", "fingerprint"):
        env, files, secret = _settings_input()
        if a.action == "write":
            if not os.path.exists(snap):
                old_env, old_files = _settings_files(cfg)
                keys = {}
                with contextlib.suppress(OSError, ValueError):
                    with open(os.path.join(cfg, "keys.json")) as f:
                        keys = json.load(f)
                _write_atomic(
                    snap,
                    json.dumps(
                        {
                            "env": old_env,
                            "files": old_files,
                            "keys": keys,
                            "existed": os.path.exists(os.path.join(cfg, "env")),
                        }
                    ),
                    0o600,
                )
            _put_settings(cfg, format_env(env), files, {"secret": sorted(secret)})
        _out({"fingerprint": _fingerprint(h, env, files)})
    elif a.action in ("commit", "revert"):
        if a.action == "revert" and os.path.exists(snap):
            with open(snap) as f:
                old = json.load(f)
            if old.get("existed"):
                _put_settings(cfg, old["env"], old["files"], old.get("keys") or {})
            else:
                for n in ("env", "keys.json"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(cfg, n))
                shutil.rmtree(os.path.join(cfg, "files"), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(snap)
        _out({"settings": a.action})
    elif a.action == "show":
        secret = set()
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(cfg, "keys.json")) as f:
                secret = set(json.load(f).get("secret", []))
        env_text, files = _settings_files(cfg)
        env = parse_env(env_text)
        over = {}
        with contextlib.suppress(OSError):
            with open(os.path.join(cfg, "overrides.env")) as f:
                over = parse_env(f.read())
        secret |= _override_secrets(cfg)
        mask: Callable[[dict[str, str]], dict[str, str]] = lambda d: {
            k: ("********" if k in secret else val) for k, val in d.items()
        }
        _out(
            {
                "env": mask(env),
                "overrides": mask(over),
                "files": sorted(files),
                "fingerprint": _fingerprint(h, env, files) if env_text else None,
            }
        )
    else:
        path = os.path.join(cfg, "overrides.env")
        cur = {}
        with contextlib.suppress(OSError):
            with open(path) as f:
                cur = parse_env(f.read())
        data = _stdin_json() or {}
        secret = _override_secrets(cfg)
        if a.action == "override-set":
            marked = set(data.get("secret") or [])
            for k, val in (data.get("env") or {}).items():
                if not ENV_KEY_RE.fullmatch(k) or not isinstance(val, str):
                    raise Fail("invalid setting %r" % k)
                cur[k] = val
                secret = secret | {k} if k in marked else secret - {k}
        else:
            for k in data.get("keys") or []:
                cur.pop(k, None)
                secret.discard(k)
        # The names of secret overrides first: a value is never on disk unmarked.
        _write_atomic(
            os.path.join(cfg, "overrides.keys.json"), json.dumps({"secret": sorted(secret & set(cur))}), 0o600
        )
        _write_atomic(path, format_env(cur), 0o600)
        _out({"overrides": sorted(cur)})


def _override_secrets(cfg: str) -> set[str]:
    """Names of the host-local overrides that were set from secrets (masked like deployed secrets)."""
    with contextlib.suppress(OSError, ValueError):
        with open(os.path.join(cfg, "overrides.keys.json")) as f:
            return set(json.load(f).get("secret", []))
    return set()


def meta_update(a: argparse.Namespace, h: Host) -> None:
    """Merge stdin JSON into a complete release's marker (e.g. the settings it runs with)."""
    path = os.path.join(h.release(_check_name(a.name)), h.marker)
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        raise Fail("release %s is missing or incomplete" % a.name) from None
    extra = _stdin_json()
    if not isinstance(extra, dict):
        raise Fail("metadata must be a JSON object")
    meta.update(extra)
    _write_atomic(path, json.dumps(meta, sort_keys=True))
    _out({"release": a.name})


# -- health ---------------------------------------------------------------------------------------
def _probe(a: argparse.Namespace, token: str) -> dict[str, Any]:
    req = urllib.request.Request(a.url, headers={"User-Agent": "sgpfab-health"})
    if token:
        req.add_header("X-Sgpfab-Probe", token)
    if a.host_header:
        req.add_header("Host", a.host_header)
    try:
        with urllib.request.urlopen(req, timeout=a.timeout) as r:
            code, headers, body = r.status, r.headers, r.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        code, headers, body = e.code, e.headers, e.read(65536).decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        return {"ok": False, "error": str(getattr(e, "reason", e))[:200]}
    release = headers.get("X-Sgpfab-Release") if headers else None
    version = None
    if a.expect_version:
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            version = data.get("version") if isinstance(data, dict) else None
    reasons = []
    if code not in a.status:
        reasons.append("HTTP %s" % code)
    if a.body and not re.search(a.body, body):
        reasons.append("body does not match %r" % a.body)
    if a.expect_version and version != a.expect_version:
        reasons.append("version %r, expected %r" % (version, a.expect_version))
    return {
        "ok": not reasons,
        "code": code,
        "release": release,
        "version": version,
        "reason": "; ".join(reasons),
        "body": body[:300],
    }


def _unit_states(units: list[str]) -> dict[str, dict[str, Any]]:
    """ActiveState, SubState, NRestarts, MainPID of the app's processes: systemd units on Linux
    (one systemctl call), services on Windows (QueryServiceStatusEx; NSSM pauses a service whose
    application keeps exiting, which counts as crashing)."""
    if not units:
        return {}
    if WINDOWS:
        return {u: _windows_service_state(u) for u in units}
    r = subprocess.run(
        ["systemctl", "show", "--property=Id,ActiveState,SubState,NRestarts,MainPID", "--"] + list(units),
        capture_output=True,
        text=True,
    )
    out: dict[str, dict[str, Any]] = {}
    cur: dict[str, str] = {}
    for line in r.stdout.splitlines() + [""]:
        if not line.strip():
            if cur.get("Id"):
                out[cur["Id"]] = {
                    "active": cur.get("ActiveState"),
                    "sub": cur.get("SubState"),
                    "restarts": int(cur.get("NRestarts") or 0),
                    "pid": int(cur.get("MainPID") or 0),
                }
            cur = {}
            continue
        k, _, val = line.partition("=")
        cur[k] = val
    return out


# Windows service states (winsvc.h SERVICE_* values) -> (active, sub) as systemd would say it.
# NSSM reports SERVICE_PAUSED while it delays restarting an application that exited (service.cpp
# throttle_restart: every restart when AppRestartDelay is set, and when the application ran less
# than AppThrottle): that counts as crashing.
WINDOWS_STATES = {
    "RUNNING": ("active", "running"),
    "START_PENDING": ("activating", "start-pending"),
    "STOP_PENDING": ("deactivating", "stop-pending"),
    "STOPPED": ("inactive", "dead"),
    "PAUSED": ("failed", "paused"),
    "PAUSE_PENDING": ("failed", "pause-pending"),
    "CONTINUE_PENDING": ("activating", "continue-pending"),
}
WINDOWS_STATE_CODES = {
    1: "STOPPED",
    2: "START_PENDING",
    3: "STOP_PENDING",
    4: "RUNNING",
    5: "CONTINUE_PENDING",
    6: "PAUSE_PENDING",
    7: "PAUSED",
}
ERROR_SERVICE_DOES_NOT_EXIST = 1060


def parse_sc_queryex(text: str) -> tuple[str, int]:
    """(state name, pid) from `sc.exe queryex NAME` output ('STATE : 4  RUNNING', 'PID : 1234');
    the state is read from its number, which does not depend on the display language."""
    names = "|".join(WINDOWS_STATES)
    state = re.search(r"^\s*\S+\s*:\s*([1-7])\s+(?:%s)\s*$" % names, text, re.M)
    pid = re.search(r"\bPID\s*:\s*(\d+)", text)
    return (WINDOWS_STATE_CODES[int(state.group(1))] if state else "MISSING"), (int(pid.group(1)) if pid else 0)


def _load_advapi32() -> Any:
    import ctypes

    return ctypes.WinDLL("advapi32", use_last_error=True)  # type: ignore[attr-defined]


def _advapi32() -> Any:
    """The service-control functions of advapi32.dll, typed (handles are pointers: without
    restype a 64-bit handle would be cut to a C int)."""
    import ctypes

    lib = _load_advapi32()
    handle, dword = ctypes.c_void_p, ctypes.c_uint32
    lib.OpenSCManagerW.argtypes, lib.OpenSCManagerW.restype = [ctypes.c_wchar_p, ctypes.c_wchar_p, dword], handle
    lib.OpenServiceW.argtypes, lib.OpenServiceW.restype = [handle, ctypes.c_wchar_p, dword], handle
    lib.QueryServiceStatusEx.argtypes = [handle, ctypes.c_int, ctypes.c_void_p, dword, ctypes.POINTER(dword)]
    lib.QueryServiceStatusEx.restype = ctypes.c_int
    lib.CloseServiceHandle.argtypes, lib.CloseServiceHandle.restype = [handle], ctypes.c_int
    return lib


def _last_error() -> int:
    import ctypes

    err: int = ctypes.get_last_error()  # type: ignore[attr-defined]
    return err


def _service_status_struct() -> type[ctypes.Structure]:
    import ctypes

    class SERVICE_STATUS_PROCESS(ctypes.Structure):  # winsvc.h: nine DWORDs
        _fields_ = [
            (n, ctypes.c_uint32)
            for n in (
                "dwServiceType",
                "dwCurrentState",
                "dwControlsAccepted",
                "dwWin32ExitCode",
                "dwServiceSpecificExitCode",
                "dwCheckPoint",
                "dwWaitHint",
                "dwProcessId",
                "dwServiceFlags",
            )
        ]

    return SERVICE_STATUS_PROCESS


def _query_service(name: str, lib: Any = None) -> tuple[str, int]:
    """(state name, pid) of a service from QueryServiceStatusEx (no parsing of localised text).
    The pid is the service's own process (nssm.exe), which an application restart keeps."""
    import ctypes

    lib = lib or _advapi32()
    scm = lib.OpenSCManagerW(None, None, 0x0001)  # SC_MANAGER_CONNECT
    if not scm:
        raise OSError(_last_error(), "OpenSCManagerW failed")
    try:
        svc = lib.OpenServiceW(scm, name, 0x0004)  # SERVICE_QUERY_STATUS
        if not svc:
            err = _last_error()
            if err == ERROR_SERVICE_DOES_NOT_EXIST:
                return "MISSING", 0
            raise OSError(err, "OpenServiceW(%s) failed" % name)
        try:
            st = _service_status_struct()()
            needed = ctypes.c_uint32(0)
            if not lib.QueryServiceStatusEx(
                svc,
                0,
                ctypes.byref(st),
                ctypes.sizeof(st),  # SC_STATUS_PROCESS_INFO
                ctypes.byref(needed),
            ):
                raise OSError(_last_error(), "QueryServiceStatusEx(%s) failed" % name)
            return WINDOWS_STATE_CODES.get(st.dwCurrentState, "UNKNOWN"), int(st.dwProcessId)
        finally:
            lib.CloseServiceHandle(svc)
    finally:
        lib.CloseServiceHandle(scm)


def _windows_service_state(name: str) -> dict[str, Any]:
    try:
        state, pid = _query_service(name)
    except (OSError, AttributeError):  # no usable advapi32 here: ask sc.exe
        try:
            r = subprocess.run(["sc.exe", "queryex", name], capture_output=True, text=True)
        except OSError as e:
            raise Fail("cannot query service %s: %s" % (name, e)) from None
        state, pid = parse_sc_queryex(r.stdout) if r.returncode == 0 else ("MISSING", 0)
    active, sub = WINDOWS_STATES.get(state, ("inactive", state.lower()))
    return {"active": active, "sub": sub, "restarts": 0, "pid": pid}


# -- "Log on as a service" (Windows) -------------------------------------------------------------
SE_SERVICE_LOGON_NAME = "SeServiceLogonRight"
POLICY_LOOKUP_NAMES, POLICY_CREATE_ACCOUNT = 0x0800, 0x0010
ERROR_INSUFFICIENT_BUFFER = 122


def _lsa_types() -> tuple[type[ctypes.Structure], type[ctypes.Structure]]:
    """(LSA_UNICODE_STRING, LSA_OBJECT_ATTRIBUTES) as ntsecapi.h declares them."""
    import ctypes

    class LSA_UNICODE_STRING(ctypes.Structure):
        _fields_ = [("Length", ctypes.c_ushort), ("MaximumLength", ctypes.c_ushort), ("Buffer", ctypes.c_wchar_p)]

    class LSA_OBJECT_ATTRIBUTES(ctypes.Structure):
        _fields_ = [
            ("Length", ctypes.c_ulong),
            ("RootDirectory", ctypes.c_void_p),
            ("ObjectName", ctypes.c_void_p),
            ("Attributes", ctypes.c_ulong),
            ("SecurityDescriptor", ctypes.c_void_p),
            ("SecurityQualityOfService", ctypes.c_void_p),
        ]

    return LSA_UNICODE_STRING, LSA_OBJECT_ATTRIBUTES


def _lsa_advapi32(types: tuple[type[ctypes.Structure], type[ctypes.Structure]]) -> Any:
    """The account-lookup and LSA policy functions of advapi32.dll, typed."""
    import ctypes

    lib = _load_advapi32()
    ustr, attrs = types
    dword_p, handle = ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p
    lib.LookupAccountNameW.argtypes = [
        ctypes.c_wchar_p,
        ctypes.c_wchar_p,
        ctypes.c_void_p,
        dword_p,
        ctypes.c_wchar_p,
        dword_p,
        dword_p,
    ]
    lib.LookupAccountNameW.restype = ctypes.c_int
    lib.LsaOpenPolicy.argtypes = [ctypes.POINTER(ustr), ctypes.POINTER(attrs), ctypes.c_uint32, ctypes.POINTER(handle)]
    lib.LsaOpenPolicy.restype = ctypes.c_uint32  # NTSTATUS
    lib.LsaAddAccountRights.argtypes = [handle, ctypes.c_void_p, ctypes.POINTER(ustr), ctypes.c_uint32]
    lib.LsaAddAccountRights.restype = ctypes.c_uint32
    lib.LsaClose.argtypes, lib.LsaClose.restype = [handle], ctypes.c_uint32
    lib.LsaNtStatusToWinError.argtypes, lib.LsaNtStatusToWinError.restype = [ctypes.c_uint32], ctypes.c_uint32
    return lib


def _account_sid(lib: Any, account: str) -> ctypes.Array[ctypes.c_char]:
    """The SID of `account` (LookupAccountNameW, two calls: sizes, then the SID), as a buffer."""
    import ctypes

    sid_size, dom_size, use = ctypes.c_uint32(0), ctypes.c_uint32(0), ctypes.c_uint32(0)
    lib.LookupAccountNameW(None, account, None, ctypes.byref(sid_size), None, ctypes.byref(dom_size), ctypes.byref(use))
    err = _last_error()
    if err != ERROR_INSUFFICIENT_BUFFER or not sid_size.value:
        raise Fail("no account %s on this host (LookupAccountNameW: error %d)" % (account, err))
    sid = ctypes.create_string_buffer(sid_size.value)
    domain = ctypes.create_unicode_buffer(dom_size.value)
    if not lib.LookupAccountNameW(
        None, account, sid, ctypes.byref(sid_size), domain, ctypes.byref(dom_size), ctypes.byref(use)
    ):
        raise Fail("no account %s on this host (LookupAccountNameW: error %d)" % (account, _last_error()))
    return sid


def grant_logon(a: argparse.Namespace, h: Host) -> None:
    """Grant `--account` the right to log on as a service (LsaAddAccountRights, what nssm.exe
    does when it is given an account); adding a right the account has already is no change."""
    if not WINDOWS:
        raise Fail("grant-logon is for Windows hosts")
    import ctypes

    account = a.account
    if account.startswith(".\\"):  # this computer: LookupAccountNameW wants its name
        account = os.environ.get("COMPUTERNAME", "") + account[1:]
    types = _lsa_types()
    lib = _lsa_advapi32(types)
    sid = _account_sid(lib, account)
    ustr, attrs = types
    policy = ctypes.c_void_p()
    status = lib.LsaOpenPolicy(
        None, ctypes.byref(attrs()), POLICY_LOOKUP_NAMES | POLICY_CREATE_ACCOUNT, ctypes.byref(policy)
    )
    if status:
        raise Fail("LsaOpenPolicy failed: error %d" % lib.LsaNtStatusToWinError(status))
    try:
        size = len(SE_SERVICE_LOGON_NAME) * 2  # bytes, UTF-16, no terminator
        right = ustr(size, size + 2, SE_SERVICE_LOGON_NAME)
        status = lib.LsaAddAccountRights(policy, sid, ctypes.byref(right), 1)
        if status:
            raise Fail(
                "granting %s to %s failed: error %d"
                % (SE_SERVICE_LOGON_NAME, a.account, lib.LsaNtStatusToWinError(status))
            )
    finally:
        lib.LsaClose(policy)
    _out({"account": a.account, "right": SE_SERVICE_LOGON_NAME})


def _token(h: Host) -> str:
    with contextlib.suppress(OSError):
        with open(h.p(".sgpfab", "launch.env")) as f:
            return parse_env(f.read()).get("SGPFAB_PROBE_TOKEN", "")
    return ""


def health(a: argparse.Namespace, h: Host) -> None:
    """One probe of the app (and the states of the given units)."""
    result: dict[str, Any] = _probe(a, _token(h)) if a.url else {"ok": True}
    result["units"] = _unit_states(a.unit) if a.unit else {}
    _out(result)


def gate(a: argparse.Namespace, h: Host) -> None:
    """Wait until a release is serving: HTTP probes answered by that release (the launcher marks
    its responses for probes that carry the host's token) and its units running without
    restarts; give up at the deadline, at once when a unit keeps crashing, and after a few
    consecutive unhealthy answers from the release itself (a deterministic failure)."""
    token = _token(h) if a.release else ""
    deadline = time.monotonic() + a.deadline
    started = time.monotonic()
    delay, bad_in_row, good_in_row, seen = 0.05, 0, 0, []
    last = {"ok": False, "error": "not probed yet"}
    pids: dict[str, int] = {}
    pid_changes: dict[str, int] = {}
    while True:
        units = _unit_states(a.unit)
        for u, st in units.items():  # where no restart counter exists (Windows), count new PIDs
            if st["pid"] and pids.get(u) not in (None, st["pid"]):
                pid_changes[u] = pid_changes.get(u, 0) + 1
            if st["pid"]:
                pids[u] = st["pid"]
            st["restarts"] = max(st["restarts"], pid_changes.get(u, 0))
        crashed = [u for u, st in units.items() if st["restarts"] >= a.max_restarts or st["active"] == "failed"]
        if crashed:
            _out({"ok": False, "why": "crashing", "units": units, "last": last, "crashed": crashed})
            return
        stopped = [u for u, st in units.items() if st["active"] not in ("active", "activating", "reloading")]
        if a.url:
            last = _probe(a, token)
            mine = not a.release or last.get("release") == a.release
            if last.get("code") is not None and mine:
                if last["ok"]:
                    good_in_row, bad_in_row = good_in_row + 1, 0
                else:  # an answer from the release that fails the check: never counts as good
                    good_in_row, bad_in_row = 0, bad_in_row + 1
            elif last.get("code") is None:
                good_in_row = 0
        else:
            good_in_row = good_in_row + 1 if not stopped else 0
        seen.append(last.get("release") or last.get("error") or last.get("code"))
        settled = time.monotonic() - started >= a.settle
        if good_in_row >= a.need and not stopped and settled:
            _out({"ok": True, "units": units, "last": last, "seconds": round(time.monotonic() - started, 2)})
            return
        if bad_in_row >= a.fail_after:
            _out({"ok": False, "why": "unhealthy", "units": units, "last": last})
            return
        if time.monotonic() + delay > deadline:
            why = "timeout"
            if a.release and not any(x == a.release for x in seen):
                why = "timeout: release %s never answered" % a.release
            _out({"ok": False, "why": why, "units": units, "last": last})
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


# -- lock -----------------------------------------------------------------------------------------
def lock(a: argparse.Namespace, h: Host) -> None:
    """The per-app deploy lock. Every change to it happens under a host-wide mutex, so taking
    over a stale lock is a compare-and-swap on its holder's token, and a lock is released only
    by the run that holds it."""
    base = h.p(".sgpfab")
    os.makedirs(base, exist_ok=True)
    info_path = os.path.join(base, "lock", "info.json")
    info = _stdin_object() if a.action != "release" else {}  # before the mutex: never wait on a client

    def holder() -> Any:
        with contextlib.suppress(OSError, ValueError):
            with open(info_path) as f:
                return json.load(f)
        return None

    with _flock(os.path.join(base, "lock.mutex")):
        cur = holder()
        held = cur is not None or os.path.isdir(os.path.join(base, "lock"))
        if a.action == "release":
            if held and (a.force or (cur or {}).get("token") == a.token):
                shutil.rmtree(os.path.join(base, "lock"), ignore_errors=True)
                _out({"locked": False, "released": True})
            else:
                _out({"locked": held, "released": False, "holder": cur or {}})
            return
        if held and a.action == "take":
            _out({"locked": False, "holder": cur or {}})
            return
        if held and a.action == "takeover" and (cur or {}).get("token") != a.expect_token:
            _out({"locked": False, "holder": cur or {}})  # someone else took it meanwhile
            return
    if held and a.action == "takeover":
        # Wait for whatever the dead holder left running on this host (backups, hooks).
        with _ops_lock(h, exclusive=True):
            pass
    with _flock(os.path.join(base, "lock.mutex")):
        cur = holder()
        if a.action == "takeover" and (cur or {}).get("token") != a.expect_token:
            _out({"locked": False, "holder": cur or {}})
            return
        if a.action == "take" and (cur is not None or os.path.isdir(os.path.join(base, "lock"))):
            _out({"locked": False, "holder": cur or {}})
            return
        shutil.rmtree(os.path.join(base, "lock"), ignore_errors=True)
        os.mkdir(os.path.join(base, "lock"))
        info.update({"token": a.token, "since": _now(), "host": socket.gethostname()})
        _write_atomic(info_path, json.dumps(info, sort_keys=True))
    _out({"locked": True, "took_over": a.action == "takeover", "state": _state_dict(h) if a.with_state else None})


# -- audit ----------------------------------------------------------------------------------------
def audit(a: argparse.Namespace, h: Host) -> None:
    """Append one JSON line (stdin) to the audit log (O_APPEND: concurrent writers stay whole)."""
    record = _stdin_json()
    if not isinstance(record, dict):
        raise Fail("audit record must be a JSON object")
    record.setdefault("time", _now())
    record.setdefault("remote_user", getpass.getuser())
    path = h.p(".sgpfab", "audit.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)
    _out({"ok": True})


def history(a: argparse.Namespace, h: Host) -> None:
    path = h.p(".sgpfab", "audit.jsonl")
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            for x in f:
                with contextlib.suppress(ValueError):
                    if x.strip():
                        lines.append(json.loads(x))
    _out({"records": lines[-a.last :] if a.last > 0 else []})


# -- facts ----------------------------------------------------------------------------------------
def preflight(a: argparse.Namespace, h: Host) -> None:
    """What the controller checks before uploading: interpreter, platform, free space, tools."""
    import platform

    probe_dir = h.root
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir) or "/"
    free = shutil.disk_usage(probe_dir).free
    glibc = ""
    with contextlib.suppress(Exception):
        glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()[1]
    python = a.python or sys.executable
    try:
        r = subprocess.run(
            [python, "-c", "import platform,sys; print(platform.python_version());print(sys.implementation.name)"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        pv, impl = (r.stdout.split() + ["", ""])[:2] if r.returncode == 0 else ("", "")
    except OSError:
        pv, impl = "", ""
    tools = {
        t: bool(shutil.which(t))
        for t in ("rsync", "systemctl", "systemd-run", "pg_dump", "pg_restore", "psql", "flock", "nssm.exe")
    }
    uv = h.p(".sgpfab", "bin", "uv.exe" if WINDOWS else "uv")
    _out(
        {
            "python": pv,
            "implementation": impl,
            "interpreter": python,
            "glibc": glibc,
            "arch": platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64"),
            "free_bytes": free,
            "tools": tools,
            "os": "windows" if WINDOWS else "linux",
            "uv": uv if os.access(uv, os.X_OK) else (shutil.which("uv") or ""),
            "state": _state_dict(h) if a.with_state else None,
        }
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hostctl")
    p.add_argument("--root", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("state").set_defaults(fn=state)
    for name, fn in (("verify", verify), ("finalize", finalize)):
        s = sub.add_parser(name)
        s.add_argument("--name", required=True)
        s.set_defaults(fn=fn)
    s.add_argument("--with-state", action="store_true", help="answer with the release state too")
    s = sub.add_parser("manifest")
    s.add_argument("--name", required=True)
    s.add_argument("--base", required=True, help="the release whose kept manifest the patch applies to")
    s.add_argument("--sha256", required=True, help="of the rebuilt manifest's canonical form")
    s.set_defaults(fn=manifest)
    s = sub.add_parser("switch")
    s.add_argument("--to", required=True)
    s.set_defaults(fn=switch)
    sub.add_parser("unlink-current").set_defaults(fn=unlink_current)
    s = sub.add_parser("mark")
    s.add_argument("--name", required=True)
    s.add_argument("--bad", action="store_true")
    s.add_argument("--reason", default="")
    s.set_defaults(fn=mark)
    s = sub.add_parser("remove")
    s.add_argument("names", nargs="+")
    s.set_defaults(fn=remove)
    s = sub.add_parser("journal")
    s.add_argument("action", choices=("begin", "clear"))
    s.set_defaults(fn=journal)
    s = sub.add_parser("backup")
    s.add_argument("--label", default="manual")
    s.add_argument("--keep", type=int, default=0, help="keep only the newest N backups (0: all)")
    s.set_defaults(fn=backup)
    sub.add_parser("backups").set_defaults(fn=backups)
    sub.add_parser("prune").set_defaults(fn=prune)
    s = sub.add_parser("dbcheck")
    s.add_argument("--stdin", action="store_true", help="the settings to check come on stdin")
    s.set_defaults(fn=dbcheck)
    s = sub.add_parser("restore")
    s.add_argument("--name", required=True)
    s.set_defaults(fn=restore)
    s = sub.add_parser("settings")
    s.add_argument(
        "action", choices=("write", "fingerprint", "commit", "revert", "show", "override-set", "override-unset")
    )
    s.set_defaults(fn=settings)
    s = sub.add_parser("meta-update")
    s.add_argument("--name", required=True)
    s.set_defaults(fn=meta_update)
    for name, fn in (("health", health), ("gate", gate)):
        s = sub.add_parser(name)
        s.add_argument("--url", default="")
        s.add_argument("--status", type=int, action="append", default=None)
        s.add_argument("--body", default="")
        s.add_argument("--expect-version", default="")
        s.add_argument("--host-header", default="")
        s.add_argument("--release", default="", help="only answers from this release count")
        s.add_argument("--unit", action="append", default=[], help="systemd units that must keep running")
        s.add_argument("--timeout", type=float, default=3.0, help="seconds per probe")
        s.add_argument("--deadline", type=float, default=60.0)
        s.add_argument("--settle", type=float, default=0.0, help="seconds the units must stay up")
        s.add_argument("--need", type=int, default=1, help="consecutive good answers required")
        s.add_argument("--fail-after", type=int, default=3, help="consecutive bad answers that fail")
        s.add_argument("--max-restarts", type=int, default=2)
        s.set_defaults(fn=fn)
    s = sub.add_parser("lock")
    s.add_argument("action", choices=("take", "takeover", "release"))
    s.add_argument("--token", default="")
    s.add_argument("--expect-token", default="", help="takeover: the stale holder's token")
    s.add_argument("--force", action="store_true", help="release whoever holds it")
    s.add_argument("--with-state", action="store_true", help="answer with the release state once locked")
    s.set_defaults(fn=lock)
    sub.add_parser("audit").set_defaults(fn=audit)
    s = sub.add_parser("history")
    s.add_argument("--last", type=int, default=50)
    s.set_defaults(fn=history)
    s = sub.add_parser("grant-logon")
    s.add_argument("--account", required=True)
    s.set_defaults(fn=grant_logon)
    s = sub.add_parser("preflight")
    s.add_argument("--python", default="")
    s.add_argument("--with-state", action="store_true", help="answer with the release state too")
    s.set_defaults(fn=preflight)
    return p


def main(argv: list[str] | None = None) -> int:
    global _CMD
    a = parser().parse_args(argv)
    _CMD = a.cmd
    if getattr(a, "status", False) is None:
        a.status = [200]
    try:
        a.fn(a, Host(os.path.abspath(a.root)))
    except NoBase as e:
        sys.stderr.write("hostctl: %s\n" % e)
        return EXIT_NO_BASE
    except Fail as e:
        sys.stderr.write("hostctl: %s\n" % e)
        return 2
    except OSError as e:
        sys.stderr.write("hostctl: %s: %s\n" % (e.strerror or type(e).__name__, e.filename or e))
        return 2
    except sqlite3.Error as e:
        sys.stderr.write("hostctl: database error: %s\n" % (str(e).splitlines() or ["?"])[0])
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
