"""Bundles: reproducible, verified, refused when tampered with; and the host-side unpack."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from sgpfab.bundle import Bundle, build, content_digest
from sgpfab.errors import InputError
from sgpfab.inventory import AppSettings
from sgpfab.remote import hostctl
from sgpfab.versions import Version

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sgp_api"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One real bundle of the example app (wheels and schema.sql generated for real)."""
    dist = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "app"
    shutil.copytree(EXAMPLE, src)
    b = build(src, Version.parse("1.2.3"), AppSettings(), dist, say=lambda *_: None)
    return src, dist, b


@pytest.fixture
def bundle_copy(built, tmp_path):
    _, _, b = built
    dest = tmp_path / "v1.2.3"
    shutil.copytree(b.path, dest)
    return dest


def test_bundle_contents(built):
    src, _, b = built
    names = sorted(p.name for p in b.path.iterdir())
    assert names == ["CHANGELOG.md", "README.md", "app-v1.2.3.tar.gz", "manifest.json", "metadata.json",
                     "schema.sql", "wheels"]
    assert "main.py" in b.manifest["files"] and "scripts/migrate.py" in b.manifest["files"]
    assert any(w.startswith("fastapi-") for w in b.manifest["wheels"])
    assert "CREATE TABLE item" in (b.path / "schema.sql").read_text()
    assert (b.path / "CHANGELOG.md").read_text() == (src / "CHANGELOG.md").read_text()
    meta = b.metadata
    assert meta["version"] == "1.2.3" and meta["content_digest"] == b.digest and meta["builder"]
    assert b.digest == content_digest("1.2.3", b.manifest["files"], b.manifest["wheels"])
    assert b.digest != content_digest("1.2.4", b.manifest["files"], b.manifest["wheels"])


def test_rebuilding_the_same_content_reuses_the_bundle(built):
    src, dist, b = built
    again = build(src, Version.parse("1.2.3"), AppSettings(), dist, say=lambda *_: None)
    assert again.digest == b.digest and again.manifest == b.manifest


def test_archive_is_reproducible(built, tmp_path):
    src, _, b = built
    other = build(src, Version.parse("1.2.3"), AppSettings(), tmp_path, say=lambda *_: None)
    assert other.manifest["archive"]["sha256"] == b.manifest["archive"]["sha256"]


def test_same_version_with_different_content_is_refused(built, tmp_path):
    src, dist, _ = built
    changed = tmp_path / "changed"
    shutil.copytree(src, changed)
    (changed / "main.py").write_text((changed / "main.py").read_text() + "\n# changed\n")
    with pytest.raises(InputError, match="already exists .* with different content"):
        build(changed, Version.parse("1.2.3"), AppSettings(), dist, say=lambda *_: None)


@pytest.mark.parametrize("tamper, message", [
    (lambda d: _flip(d / "app-v1.2.3.tar.gz"), "does not match its SHA-256"),
    (lambda d: _flip(next((d / "wheels").glob("fastapi-*.whl"))), "wheel fastapi"),
    (lambda d: (d / "schema.sql").write_text("DROP TABLE item;"), "schema.sql does not match"),
    (lambda d: (d / "manifest.json").write_text("{"), "unreadable manifest"),
    (lambda d: (d / "metadata.json").unlink(), "not a release bundle"),
])
def test_tampered_bundles_are_refused(bundle_copy, tamper, message):
    tamper(bundle_copy)
    with pytest.raises(InputError, match=message):
        Bundle.load(bundle_copy)


def test_consistently_forged_archive_is_still_caught_by_per_file_hashes(bundle_copy):
    """Replace main.py inside the archive and fix up the archive hash: the file hashes catch it."""
    _rewrite_archive(bundle_copy, {"main.py": b"print('evil')\n"})
    with pytest.raises(InputError, match="archive member main.py"):
        Bundle.load(bundle_copy)


# -- host side: hostctl verify, run for real on a temporary API_ROOT ------------------------------

def host_with(b: Bundle, root: Path) -> Path:
    """A host after the uploads: manifest in incoming/, wheels in wheelhouse/, files in the partial release."""
    (root / "incoming").mkdir(parents=True)
    shutil.copytree(b.path, root / "incoming" / "v1.2.3", ignore=shutil.ignore_patterns("wheels", "*.tar.gz"))
    shutil.copytree(b.wheels_dir, root / "wheelhouse")
    shutil.copytree(b.unpacked(), root / "releases" / ".partial-v1.2.3")
    return root


def verify(root, capsys):
    code = hostctl.main(["--root", str(root), "verify", "--name", "v1.2.3"])
    out, err = capsys.readouterr()
    return code, out, err


def test_unpacked_tree_is_exactly_the_archive(built):
    src, _, b = built
    tree = b.unpacked()
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert files == sorted(b.manifest["files"])
    assert all((tree / rel).read_bytes() == (src / rel).read_bytes() for rel in files)


def test_host_accepts_a_good_release(built, tmp_path, capsys):
    _, _, b = built
    root = host_with(b, tmp_path / "api")
    code, out, err = verify(root, capsys)
    assert code == 0, err
    assert json.loads(out) == {"verified": "v1.2.3", "files": len(b.manifest["files"])}


PARTIAL = "releases/.partial-v1.2.3"


@pytest.mark.parametrize("tamper, message", [
    (lambda r: (r / PARTIAL / "main.py").write_text("evil"), "main.py does not match"),
    (lambda r: (r / PARTIAL / "extra.py").write_text("x"), "extra.py does not match"),
    (lambda r: (r / PARTIAL / "main.py").unlink(), "main.py does not match"),
    (lambda r: (r / PARTIAL / "link.py").symlink_to("/etc/passwd"), "forbidden entry 'link.py'"),
    (lambda r: _flip(next((r / "wheelhouse").glob("pydantic_core-*.whl"))), "wheel pydantic_core"),
    (lambda r: next((r / "wheelhouse").glob("fastapi-*.whl")).unlink(), "wheel fastapi"),
    (lambda r: _set_manifest(r, version="9.9.9"), "not v1.2.3"),
    (lambda r: (r / "incoming/v1.2.3/manifest.json").write_text("{"), "no readable manifest"),
])
def test_host_refuses_a_corrupt_or_tampered_release_and_keeps_nothing(built, tmp_path, capsys, tamper, message):
    _, _, b = built
    root = host_with(b, tmp_path / "api")
    tamper(root)
    code, out, err = verify(root, capsys)
    assert code == 2 and message in err and out == ""
    assert list((root / "releases").iterdir()) == [], "the partial release is gone"
    assert not (root / "incoming" / "v1.2.3").exists(), "the upload is gone: a retry uploads again"
    if "wheel" in message:
        bad = message.split()[-1]
        assert not list((root / "wheelhouse").glob(f"{bad}-*.whl")), "a corrupted wheel is dropped too"


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_archive(d: Path, replace: dict[str, bytes]) -> None:
    """Rebuild the archive with some members replaced/added and update the archive's hash."""
    import io
    from sgpfab.bundle import sha256_file
    archive = d / "app-v1.2.3.tar.gz"
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    members.update(replace)
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    m = json.loads((d / "manifest.json").read_text())
    m["archive"]["sha256"] = sha256_file(archive)
    (d / "manifest.json").write_text(json.dumps(m))


def _set_manifest(root: Path, **changes) -> None:
    p = root / "incoming/v1.2.3/manifest.json"
    m = json.loads(p.read_text())
    m.update(changes)
    p.write_text(json.dumps(m))


def test_an_app_that_cannot_even_be_imported_is_not_bundled(tmp_path):
    from sgpfab.errors import SgpfabError
    src = tmp_path / "app"
    shutil.copytree(EXAMPLE, src)
    with open(src / "main.py", "a") as f:
        f.write("\nraise RuntimeError('broken at import')\n")
    with pytest.raises(SgpfabError, match="could not generate schema.sql .*broken at import"):
        build(src, Version.parse("0.0.1"), AppSettings(), tmp_path / "dist", say=lambda *_: None)
    assert list((tmp_path / "dist" / "releases").iterdir()) == [], "no half-built bundle is left behind"
