"""A new release gets the compiled bytecode of the active one for the source files the two share
(the same inode: uv and the upload hard-link unchanged files), so its processes start without
compiling what did not change. Real files in tmp_path, a real interpreter importing them."""

import os
import py_compile
import subprocess
import sys
from pathlib import Path

from support.builders import complete_release, hostctl, stage_release

from sgpfab.remote import hostctl as hc

TAG = sys.implementation.cache_tag


def _compiled(d: Path, module: str) -> Path:
    return d / "__pycache__" / f"{module}.{TAG}.pyc"


def _release_with_modules(root: Path, name: str) -> Path:
    d = complete_release(root, name)
    pkg = d / ".venv" / "lib" / "site-packages" / "lib1"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 1\n")
    (pkg / "same.py").write_text("X = 'same'\n")
    (pkg / "changed.py").write_text("X = 'old'\n")
    for f in ("__init__.py", "same.py", "changed.py"):
        py_compile.compile(str(pkg / f), cfile=str(_compiled(pkg, f[:-3])))
    return pkg


def test_only_bytecode_of_identical_source_files_is_linked(tmp_path):
    root = tmp_path / "api"
    old = _release_with_modules(root, "v1.0.0")
    new = root / "releases" / ".partial-v1.0.1" / ".venv" / "lib" / "site-packages" / "lib1"
    new.mkdir(parents=True)
    os.link(old / "__init__.py", new / "__init__.py")  # what uv does for an unchanged wheel
    os.link(old / "same.py", new / "same.py")
    (new / "changed.py").write_text("X = 'new'\n")  # the same name, another file

    count = hc._seed_bytecode(str(root / "releases" / "v1.0.0"), str(root / "releases" / ".partial-v1.0.1"))

    assert count == 2
    assert os.path.samefile(_compiled(new, "same"), _compiled(old, "same"))
    assert os.path.samefile(_compiled(new, "__init__"), _compiled(old, "__init__"))
    assert not _compiled(new, "changed").exists()


def test_seeded_bytecode_is_used_by_the_interpreter_and_changed_code_still_runs(tmp_path):
    root = tmp_path / "api"
    old = _release_with_modules(root, "v1.0.0")
    new_root = root / "releases" / ".partial-v1.0.1"
    new = new_root / ".venv" / "lib" / "site-packages" / "lib1"
    new.mkdir(parents=True)
    for f in ("__init__.py", "same.py"):
        os.link(old / f, new / f)
    (new / "changed.py").write_text("X = 'new'\n")
    hc._seed_bytecode(str(root / "releases" / "v1.0.0"), str(new_root))
    seeded = _compiled(new, "same").stat()

    out = subprocess.run(
        [sys.executable, "-c", "import lib1.same, lib1.changed; print(lib1.same.X, lib1.changed.X)"],
        cwd=new.parent,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(new.parent), "PYTHONDONTWRITEBYTECODE": ""},
    ).stdout

    assert out.split() == ["same", "new"]
    after = _compiled(new, "same").stat()
    assert (after.st_ino, after.st_mtime_ns) == (seeded.st_ino, seeded.st_mtime_ns)  # not recompiled


def test_finalize_seeds_from_the_active_release_and_a_first_release_needs_none(tmp_path):
    root = tmp_path / "api"
    root.mkdir()
    first = stage_release(root, "v1.0.0", files={"app/main.py": "print(1)\n"})
    py_compile.compile(str(first / "app" / "main.py"), cfile=str(_compiled(first / "app", "main")))
    assert hostctl(root, "finalize", "--name", "v1.0.0").rc == 0
    assert hostctl(root, "switch", "--to", "v1.0.0").rc == 0

    second = stage_release(root, "v1.0.1", files={"app/main.py": "print(1)\n"})
    (second / "app" / "main.py").unlink()
    os.link(root / "releases" / "v1.0.0" / "app" / "main.py", second / "app" / "main.py")
    r = hostctl(root, "finalize", "--name", "v1.0.1")

    assert r.rc == 0, r.err
    assert os.path.samefile(
        _compiled(root / "releases" / "v1.0.1" / "app", "main"), _compiled(root / "releases" / "v1.0.0" / "app", "main")
    )


def test_bytecode_another_user_owns_is_copied_when_it_cannot_be_linked(tmp_path, monkeypatch):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "__pycache__").mkdir(parents=True)
    dst.mkdir()
    (src / "m.py").write_text("X = 1\n")
    os.link(src / "m.py", dst / "m.py")
    (src / "__pycache__" / f"m.{TAG}.pyc").write_bytes(b"compiled")

    def refuse(*_a, **_k):
        raise PermissionError("protected_hardlinks")

    monkeypatch.setattr(hc.os, "link", refuse)
    assert hc._seed_bytecode(str(src), str(dst)) == 1
    copied = dst / "__pycache__" / f"m.{TAG}.pyc"
    assert copied.read_bytes() == b"compiled"
    assert not os.path.samefile(copied, src / "__pycache__" / f"m.{TAG}.pyc")


def test_a_link_in_the_active_release_cache_is_not_carried_over(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "__pycache__").mkdir(parents=True)
    dst.mkdir()
    (src / "m.py").write_text("X = 1\n")
    os.link(src / "m.py", dst / "m.py")
    (tmp_path / "elsewhere.pyc").write_bytes(b"not from this release")
    (src / "__pycache__" / f"m.{TAG}.pyc").symlink_to(tmp_path / "elsewhere.pyc")
    assert hc._seed_bytecode(str(src), str(dst)) == 0
    assert not (dst / "__pycache__" / f"m.{TAG}.pyc").exists()
