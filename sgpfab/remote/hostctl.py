"""hostctl: the small host-side helper sgpfab uploads to every host (stdlib only; Linux and Windows).

It owns the parts of a deploy that must be exact on the host: reading the release state,
verifying an uploaded release against its manifest, finalizing it (marker file, then rename),
switching `current` (atomically with a symlink on Linux, a junction on Windows), online SQLite
backups and restores, health probes, the deploy lock and the audit log. Every sub-command
prints one JSON line; a refusal exits 2 with a one-line reason on stderr.
"""

import argparse
import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import sys
import urllib.error
import urllib.request

MARKER = ".sgpfab-release.json"
BAD = ".sgpfab-bad"
PARTIAL_PREFIX = ".partial-"
NAME_RE = re.compile(r"^v[0-9A-Za-z.+-]{1,64}$")
BACKUP_RE = re.compile(r"app-[0-9]{8}T[0-9]{12}Z-[0-9A-Za-z.+_-]{1,80}\.db")


class Fail(Exception):
    pass


def _out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")


def _releases_dir(root):
    return os.path.join(root, "releases")


def _check_name(name):
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise Fail("invalid release name %r" % name)
    return name


def _current(root):
    """The release `current` points at (a symlink on Linux, a directory junction on Windows)."""
    link = os.path.join(_releases_dir(root), "current")
    try:
        target = os.readlink(link)
    except (OSError, ValueError):
        return None
    return os.path.basename(target.rstrip("/\\"))


def state(a):
    rel = _releases_dir(a.root)
    releases, partials = [], []
    if os.path.isdir(rel):
        for name in sorted(os.listdir(rel)):
            path = os.path.join(rel, name)
            if name.startswith(PARTIAL_PREFIX):
                partials.append(name)
                continue
            if name == "current" or os.path.islink(path) or not os.path.isdir(path):
                continue
            meta = None
            try:
                with open(os.path.join(path, MARKER)) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                pass
            releases.append({
                "name": name,
                "complete": meta is not None,
                "bad": os.path.exists(os.path.join(path, BAD)),
                "meta": meta or {},
            })
    _out({"root": a.root, "current": _current(a.root), "releases": releases, "partials": partials,
          "db_exists": os.path.exists(os.path.join(a.root, "shared", "db", "app.db"))})


def finalize(a):
    """Mark a built release complete and move it to its final name; never overwrite one."""
    rel = _releases_dir(a.root)
    name = _check_name(a.name)
    src = os.path.join(rel, PARTIAL_PREFIX + name)
    dst = os.path.join(rel, name)
    if not os.path.isdir(src):
        raise Fail("no staged release %s" % src)
    if os.path.exists(dst):
        raise Fail("release %s already exists" % name)
    meta = json.loads(a.meta)
    meta.update({"name": name, "finalized_at": _now()})
    tmp = os.path.join(src, MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(src, MARKER))
    os.rename(src, dst)
    _fsync_dir(rel)
    _out({"release": name})


def switch(a):
    """Point releases/current at a complete release: temp symlink + rename (atomic)."""
    rel = _releases_dir(a.root)
    name = _check_name(a.to)
    if not os.path.isfile(os.path.join(rel, name, MARKER)):
        raise Fail("release %s is missing or incomplete" % name)
    previous = _current(a.root)
    link = os.path.join(rel, "current")
    if os.name == "nt":
        # Junctions need no privilege but cannot be replaced atomically: remove, then create.
        # (The service is restarted right after, so nothing runs through the gap.)
        import _winapi
        if previous is not None or os.path.lexists(link):
            os.rmdir(link)  # removes the junction only, never its target
        _winapi.CreateJunction(os.path.join(rel, name), link)
        _out({"previous": previous, "current": name})
        return
    tmp = os.path.join(rel, ".current.%d" % os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(name, tmp)
    os.replace(tmp, link)
    _fsync_dir(rel)
    _out({"previous": previous, "current": name})


def mark(a):
    path = os.path.join(_releases_dir(a.root), _check_name(a.name))
    if not os.path.isdir(path):
        raise Fail("no release %s" % a.name)
    flag = os.path.join(path, BAD)
    if a.bad:
        with open(flag, "w") as f:
            f.write(a.reason or "")
    elif os.path.exists(flag):
        os.unlink(flag)
    _out({"release": a.name, "bad": bool(a.bad)})


def remove(a):
    """Delete releases (or staged partials); refuse the active one."""
    rel = _releases_dir(a.root)
    active = _current(a.root)
    for name in a.names:  # check every name before deleting anything
        _check_name(name[len(PARTIAL_PREFIX):] if name.startswith(PARTIAL_PREFIX) else name)
        if name == active:
            raise Fail("refusing to remove the active release %s" % name)
    removed = []
    for name in a.names:
        path = os.path.join(rel, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
            removed.append(name)
    _out({"removed": removed})


def backup(a):
    """Online backup (sqlite3 backup API: consistent with WAL, unlike cp) into backups/."""
    db = os.path.join(a.root, "shared", "db", "app.db")
    if not os.path.exists(db):
        _out({"backup": None})
        return
    dest_dir = os.path.join(a.root, "backups")
    os.makedirs(dest_dir, exist_ok=True)
    label = re.sub(r"[^0-9A-Za-z.+-]", "_", a.label or "manual")[:80]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = os.path.join(dest_dir, "app-%s-%s.db" % (stamp, label))
    tmp = dest + ".partial"
    src = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    check = sqlite3.connect(tmp)
    try:
        ok = check.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        check.close()
    if ok != "ok":
        os.unlink(tmp)
        raise Fail("backup failed its integrity check: %s" % ok)
    os.chmod(tmp, 0o600)  # the data is as private as the database itself
    os.replace(tmp, dest)
    pruned = _prune_backups(dest_dir, a.keep)
    _out({"backup": dest, "name": os.path.basename(dest), "bytes": os.path.getsize(dest), "pruned": pruned})


def health(a):
    """One probe: 200, JSON status ok, and (if asked) the expected version."""
    try:
        with urllib.request.urlopen(a.url, timeout=a.timeout) as r:
            code, body = r.status, r.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        code, body = e.code, e.read(65536).decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        _out({"healthy": False, "error": str(e)})
        return
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    version = data.get("version") if isinstance(data, dict) else None
    healthy = code == 200 and (not a.expect_version or version == a.expect_version)
    _out({"healthy": healthy, "code": code, "version": version, "body": body[:500]})


def lock(a):
    """Take the per-host deploy lock (mkdir is atomic); report who holds it otherwise."""
    path = os.path.join(a.root, ".sgpfab", "lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if a.release:
        info_path = os.path.join(path, "info.json")
        if a.token and os.path.exists(info_path):
            with open(info_path) as f:
                if json.load(f).get("token") != a.token:
                    raise Fail("the lock is held by another deploy")
        shutil.rmtree(path, ignore_errors=True)
        _out({"locked": False})
        return
    try:
        os.mkdir(path)
    except FileExistsError:
        try:
            with open(os.path.join(path, "info.json")) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            holder = {}
        _out({"locked": False, "holder": holder})
        return
    info = {"token": a.token, "who": a.who, "what": a.what, "since": _now(), "host": socket.gethostname(),
            "controller": a.controller, "pid": a.pid}
    with open(os.path.join(path, "info.json"), "w") as f:
        json.dump(info, f)
    _out({"locked": True})


def audit(a):
    """Append one JSON line to the host's audit log (O_APPEND: concurrent writers stay whole)."""
    record = json.loads(a.record)
    record.setdefault("time", _now())
    record.setdefault("remote_user", getpass.getuser())
    path = os.path.join(a.root, ".sgpfab", "audit.jsonl")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)
    _out({"ok": True})


def history(a):
    path = os.path.join(a.root, ".sgpfab", "audit.jsonl")
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            lines = [json.loads(x) for x in f if x.strip()]
    _out({"records": lines[-a.last:]})


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(a):
    """Check a release copied into releases/.partial-NAME against its bundle's manifest (uploaded
    to incoming/NAME/): exactly the listed files, each with its SHA-256, and every wheel in the
    wheelhouse. On any mismatch the partial release and the upload are deleted (a corrupted
    wheel too), so nothing untrusted is kept and a retry uploads again."""
    name = _check_name(a.name)
    incoming = os.path.join(a.root, "incoming", name)
    partial = os.path.join(_releases_dir(a.root), PARTIAL_PREFIX + name)
    try:
        manifest = _load_manifest(a.root, name, incoming)
        seen = _tree_digests(partial)
        if seen != manifest["files"]:
            bad = sorted(set(seen.items()) ^ set(manifest["files"].items()))[0][0]
            raise Fail("bundle file %s does not match the manifest (corrupt or tampered)" % bad)
    except Fail:
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _out({"verified": name, "files": len(seen)})


def _load_manifest(root, name, incoming):
    try:
        with open(os.path.join(incoming, "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise Fail("bundle for %s has no readable manifest: %s" % (name, e))
    if "v" + str(manifest.get("version")) != name:
        raise Fail("bundle is version %s, not %s" % (manifest.get("version"), name))
    wheelhouse = os.path.join(root, "wheelhouse")
    for wheel, digest in sorted(manifest["wheels"].items()):
        path = os.path.join(wheelhouse, os.path.basename(wheel))
        if not os.path.isfile(path) or _sha256(path) != digest:
            if os.path.isfile(path):
                os.unlink(path)
            raise Fail("wheel %s does not match its SHA-256 (corrupt or tampered)" % wheel)
    return manifest


def _tree_digests(partial):
    """SHA-256 of every file in a release tree; links and special files are refused."""
    if not os.path.isdir(partial):
        raise Fail("no staged release at %s" % partial)
    seen = {}
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


def backups(a):
    d = os.path.join(a.root, "backups")
    out = []
    if os.path.isdir(d):
        for n in sorted(os.listdir(d)):
            if BACKUP_RE.fullmatch(n):
                st = os.stat(os.path.join(d, n))
                out.append({"name": n, "bytes": st.st_size})
    _out({"backups": out})


def restore(a):
    """Replace shared/db/app.db with a backup (sqlite backup API). The caller stops the service
    and saves the current database first."""
    if not BACKUP_RE.fullmatch(a.name):
        raise Fail("invalid backup name %r" % a.name)
    src_path = os.path.join(a.root, "backups", a.name)
    if not os.path.isfile(src_path):
        raise Fail("no backup named %s" % a.name)
    db = os.path.join(a.root, "shared", "db", "app.db")
    os.makedirs(os.path.dirname(db), exist_ok=True)
    src = sqlite3.connect("file:%s?mode=ro" % src_path, uri=True)
    dst = sqlite3.connect(db)
    try:
        src.backup(dst)
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if ok != "ok":
        raise Fail("restored database failed its integrity check: %s" % ok)
    _out({"restored": a.name})


def _prune_backups(dest_dir, keep):
    names = sorted(n for n in os.listdir(dest_dir) if BACKUP_RE.fullmatch(n))
    doomed = names[:-keep] if keep > 0 else []
    for n in doomed:
        os.unlink(os.path.join(dest_dir, n))
    return doomed


def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fsync_dir(path):
    """Make a rename durable (POSIX); Windows cannot open a directory for fsync."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parser():
    p = argparse.ArgumentParser(prog="hostctl")
    p.add_argument("--root", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("state").set_defaults(fn=state)
    s = sub.add_parser("finalize")
    s.add_argument("--name", required=True)
    s.add_argument("--meta", default="{}")
    s.set_defaults(fn=finalize)
    s = sub.add_parser("switch")
    s.add_argument("--to", required=True)
    s.set_defaults(fn=switch)
    s = sub.add_parser("mark")
    s.add_argument("--name", required=True)
    s.add_argument("--bad", action="store_true")
    s.add_argument("--reason", default="")
    s.set_defaults(fn=mark)
    s = sub.add_parser("remove")
    s.add_argument("names", nargs="+")
    s.set_defaults(fn=remove)
    s = sub.add_parser("backup")
    s.add_argument("--label", default="manual")
    s.add_argument("--keep", type=int, default=0, help="keep only the newest N backups (0: all)")
    s.set_defaults(fn=backup)
    s = sub.add_parser("verify")
    s.add_argument("--name", required=True)
    s.set_defaults(fn=verify)
    sub.add_parser("backups").set_defaults(fn=backups)
    s = sub.add_parser("restore")
    s.add_argument("--name", required=True)
    s.set_defaults(fn=restore)
    s = sub.add_parser("health")
    s.add_argument("--url", required=True)
    s.add_argument("--expect-version", default="")
    s.add_argument("--timeout", type=float, default=3.0)
    s.set_defaults(fn=health)
    s = sub.add_parser("lock")
    s.add_argument("--release", action="store_true")
    s.add_argument("--token", default="")
    s.add_argument("--who", default="")
    s.add_argument("--what", default="")
    s.add_argument("--controller", default="", help="the machine running the deploy")
    s.add_argument("--pid", type=int, default=0, help="the deploying process on that machine")
    s.set_defaults(fn=lock)
    s = sub.add_parser("audit")
    s.add_argument("--record", required=True)
    s.set_defaults(fn=audit)
    s = sub.add_parser("history")
    s.add_argument("--last", type=int, default=50)
    s.set_defaults(fn=history)
    return p


def main(argv=None):
    a = parser().parse_args(argv)
    try:
        a.fn(a)
    except Fail as e:
        sys.stderr.write("hostctl: %s\n" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
