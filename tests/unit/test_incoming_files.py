"""What build_release writes into incoming/ from a bundle directory: the manifest and the
requirements, nothing the host does not read (wheels travel by rsync, the rest stays home)."""

from sgpfab.cmd import tar_of, targz_of
from sgpfab.session import manifest_and_requirements


def test_only_the_manifest_and_the_requirements(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "cp311-x86_64-glibc2.36.txt").write_text("a==1\n")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "a-1-py3-none-any.whl").write_bytes(b"PK")
    for name in ("manifest.json", "metadata.json", "schema.sql", "CHANGELOG.md", "app-v1.0.0.tar.gz"):
        (tmp_path / name).write_text(name)
    files = manifest_and_requirements(tmp_path)
    assert files == {
        "manifest.json": (b"manifest.json", 0o644),
        "requirements/cp311-x86_64-glibc2.36.txt": (b"a==1\n", 0o644),
    }


def test_tars_end_after_their_end_marker_and_compress():
    files = {"run/web": ("#!/bin/sh\nexec true\n", 0o755)}
    tar = tar_of(files)
    assert len(tar) == 512 * 4 and tar[-1024:] == bytes(1024)  # header, data, the two end blocks
    assert len(targz_of(files)) < 300
