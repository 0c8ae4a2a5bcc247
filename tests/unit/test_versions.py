import pytest

from sgpfab.errors import InputError
from sgpfab.versions import Version, release_version


@pytest.mark.parametrize("text", ["1.0.5", "v1.0.5", "0.0.0", "10.20.30", "1.0.0-rc.1", "1.0.0+build.7"])
def test_valid_versions_parse(text):
    v = Version.parse(text)
    assert str(v) == text.removeprefix("v")
    assert v.release_name == "v" + text.removeprefix("v")


@pytest.mark.parametrize("text", [
    "", "1", "1.0", "1.0.5.6", "01.0.0", "1.0.5/../../etc", "../1.0.5", "1.0.5;rm -rf /",
    "1.0.5 ", " 1.0.5", "v", "vv1.0.0", "1.0.5\n", "1.0.0-", "1.0.0+", "$(id).0.0", "1.0.5-a..b",
])
def test_invalid_versions_are_refused_with_one_line(text):
    with pytest.raises(InputError) as e:
        Version.parse(text)
    assert "\n" not in str(e.value)


def test_semver_ordering_is_numeric_not_lexical():
    names = ["1.0.10", "1.0.9", "1.0.0-rc.1", "1.0.0", "1.0.0-alpha", "1.0.0-alpha.2", "1.0.0-alpha.10", "0.9.0"]
    ordered = [str(v) for v in sorted(Version.parse(n) for n in names)]
    assert ordered == ["0.9.0", "1.0.0-alpha", "1.0.0-alpha.2", "1.0.0-alpha.10", "1.0.0-rc.1", "1.0.0",
                       "1.0.9", "1.0.10"]


def test_release_version_only_accepts_release_directory_names():
    assert release_version("v1.2.3") == Version(1, 2, 3)
    assert release_version("1.2.3") is None
    assert release_version("current") is None
    assert release_version(".partial-v1.2.3") is None
