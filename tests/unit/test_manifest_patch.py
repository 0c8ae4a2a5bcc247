"""A manifest sent as its difference from the active release's: made on the controller
(sgpfab/bundle/manifestpatch.py), applied by the real host helper (hostctl manifest) in tmp_path."""

import copy
import hashlib
import json
from typing import Any

import pytest
from support.builders import complete_release, hostctl

from sgpfab.bundle import manifestpatch
from sgpfab.remote import hostctl as hc

BASE: dict[str, Any] = {
    "app": "shop",
    "version": "1.0.0",
    "format": 2,
    "archive": {"name": "app-v1.0.0.tar.gz", "sha256": "a" * 64, "size": 100},
    "files": {"shop/main.py": "1" * 64, "shop/models.py": "2" * 64, "README.md": "3" * 64},
    "wheels": {"shop-1.0-py3-none-any.whl": "4" * 64, "flask-3.0-py3-none-any.whl": "5" * 64},
    "requirements": ["cp311.txt"],
}


def _changed(**top):
    new = copy.deepcopy(BASE)
    new.update(top)
    return new


CASES = {
    "one file changed": _changed(
        version="1.0.1", files={**BASE["files"], "shop/main.py": "9" * 64}, archive={**BASE["archive"], "size": 101}
    ),
    "a file added and one removed": _changed(files={"shop/main.py": "1" * 64, "shop/new.py": "6" * 64}),
    "a key removed, one added": {**{k: v for k, v in BASE.items() if k != "requirements"}, "extras": {"x": "7" * 64}},
    "a dict becomes a list": _changed(wheels=[]),
    "nothing changed": copy.deepcopy(BASE),
}


@pytest.mark.parametrize("new", CASES.values(), ids=list(CASES))
def test_the_host_rebuilds_exactly_the_new_manifest(new):
    patch = manifestpatch.make(BASE, new)
    assert hc._patched(copy.deepcopy(BASE), json.loads(json.dumps(patch))) == new
    assert hc._canonical(new) == manifestpatch.canonical(new)
    assert manifestpatch.digest(new) == hashlib.sha256(hc._canonical(new)).hexdigest()


def test_a_one_file_change_sends_a_fraction_of_the_manifest():
    base = {**BASE, "files": {f"shop/m{i}.py": f"{i:064x}" for i in range(40)}}
    new = {**base, "version": "1.0.1", "files": {**base["files"], "shop/m7.py": "f" * 64}}
    patch = manifestpatch.make(base, new)
    assert patch == {
        "set": {"version": "1.0.1"},
        "drop": [],
        "merge": {"files": {"set": {"shop/m7.py": "f" * 64}, "drop": []}},
    }
    assert len(json.dumps(patch)) * 20 < len(json.dumps(new))


def _keep(root, name, manifest):
    d = complete_release(root, name)
    (d / ".sgpfab").mkdir()
    (d / ".sgpfab" / "manifest.json").write_bytes(manifestpatch.canonical(manifest))


def test_hostctl_manifest_writes_the_rebuilt_manifest_for_verify(tmp_path):
    new = CASES["one file changed"]
    _keep(tmp_path, "v1.0.0", BASE)
    patch = manifestpatch.make(BASE, new)
    args = ["manifest", "--name", "v1.0.1", "--base", "v1.0.0", "--sha256", manifestpatch.digest(new)]
    r = hostctl(tmp_path, *args, stdin=patch)
    assert r.rc == 0, r.err
    assert json.loads((tmp_path / "incoming" / "v1.0.1" / "manifest.json").read_text()) == new


@pytest.mark.parametrize("case", ["no copy", "altered copy", "not a patch", "wrong digest"])
def test_hostctl_manifest_that_cannot_rebuild_exits_no_base_and_writes_nothing(tmp_path, case):
    new = CASES["one file changed"]
    patch: object = manifestpatch.make(BASE, new)
    digest = manifestpatch.digest(new)
    if case != "no copy":
        _keep(tmp_path, "v1.0.0", BASE if case != "altered copy" else {**BASE, "files": {"evil.py": "0" * 64}})
    if case == "not a patch":
        patch = ["set"]
    if case == "wrong digest":
        digest = "0" * 64
    r = hostctl(tmp_path, "manifest", "--name", "v1.0.1", "--base", "v1.0.0", "--sha256", digest, stdin=patch)
    assert r.rc == hc.EXIT_NO_BASE == 4 and r.out == ""
    assert r.err.startswith("hostctl: ") and r.err.count("\n") == 1, r.err
    assert not (tmp_path / "incoming" / "v1.0.1" / "manifest.json").exists()


def test_hostctl_manifest_refuses_bad_release_names(tmp_path):
    for name, base in [("../x", "v1.0.0"), ("v1.0.1", "../../etc")]:
        r = hostctl(tmp_path, "manifest", "--name", name, "--base", base, "--sha256", "0" * 64, stdin={})
        assert r.rc == 2 and "invalid release name" in r.err


def test_finalize_keeps_the_manifest_it_was_verified_against(tmp_path):
    from support.builders import stage_release

    stage_release(tmp_path, "v1.0.0")
    sent = json.loads((tmp_path / "incoming" / "v1.0.0" / "manifest.json").read_text())
    assert hostctl(tmp_path, "finalize", "--name", "v1.0.0").rc == 0
    kept = (tmp_path / "releases" / "v1.0.0" / ".sgpfab" / "manifest.json").read_bytes()
    assert kept == manifestpatch.canonical(sent)
