"""Release versions: strict ASCII semver at the boundary, a total order, and the names of
release directories."""

import itertools
import random

import pytest

from sgpfab.errors import InputError
from sgpfab.versions import MAX_LENGTH, Version, display, release_version


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("1.0.5", "1.0.5"),
        ("v1.0.5", "1.0.5"),
        ("0.0.0", "0.0.0"),
        ("10.20.30", "10.20.30"),
        ("1.0.0-rc.1", "1.0.0-rc.1"),
        ("v1.0.1-rc.1+b7", "1.0.1-rc.1+b7"),
        ("1.0.0+20240101.sha.5114f85", "1.0.0+20240101.sha.5114f85"),
        ("1.0.0-alpha-beta", "1.0.0-alpha-beta"),
        ("1.0.0+0001", "1.0.0+0001"),
        ("1.0.0-0A.is.legal", "1.0.0-0A.is.legal"),
    ],
)
def test_valid_versions_parse(text, parsed):
    v = Version.parse(text)
    assert str(v) == parsed
    assert v.release_name == "v" + parsed


@pytest.mark.parametrize(
    "text",
    [
        "1٠.0.5",  # ARABIC-INDIC DIGIT ZERO: Python's \d would take it
        "1.0.5-r٠",  # ... in a pre-release identifier
        "1.0.5+b٠",  # ... in build metadata
        "１.0.0",  # FULLWIDTH DIGIT ONE
        "1.0.0-ß",
        "1.0",
        "1",
        "1.0.0.0",
        "01.0.0",
        "1.01.0",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "1.0.0+a..b",
        "1.0.0-a..b",
        "vv1.0.0",
        "V1.0.0",
        " 1.0.0",
        "1.0.0 ",
        "1.0.0\n",
        "\n1.0.0",
        "1.0.0\x00",
        "v",
        "",
        "latest",
        "current",
        "1.0.0/../x",
        "../1.0.0",
        "1.0.0-a/b",
        "1.0.0_1",
        "-1.0.0",
        "1.-0.0",
        "1.0.0-rc 1",
    ],
)
def test_invalid_versions_are_refused_with_one_line(text):
    with pytest.raises(InputError) as e:
        Version.parse(text)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [None, 105, 1.5, b"1.0.5", ["1.0.5"]])
def test_non_text_is_refused(value):
    with pytest.raises(InputError):
        Version.parse(value)


def test_max_length_is_counted_without_the_v_prefix():
    longest = "1.0.0-" + "a" * (MAX_LENGTH - 6)
    assert len(longest) == MAX_LENGTH
    assert str(Version.parse(longest)) == longest
    assert str(Version.parse("v" + longest)) == longest
    with pytest.raises(InputError):
        Version.parse(longest + "a")
    with pytest.raises(InputError):
        Version.parse("v" + longest + "a")


ORDERED = [  # the semver spec's own example order, plus build-metadata twins
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.0+a",
    "1.0.0+b",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0-rc.1",
    "2.0.0",
    "10.0.0",
]


def test_sorting_is_semver_precedence_and_deterministic():
    versions = [Version.parse(t) for t in ORDERED]
    rng = random.Random(3)
    for _ in range(50):
        shuffled = versions[:]
        rng.shuffle(shuffled)
        assert [str(v) for v in sorted(shuffled)] == ORDERED


def test_order_is_total_and_consistent_with_equality():
    versions = [Version.parse(t) for t in ORDERED]
    for a, b in itertools.product(versions, repeat=2):
        assert sum([a < b, a == b, b < a]) == 1, (a, b)
        assert (a <= b) == (a < b or a == b)
        assert (a > b) == (b < a)
    for a, b, c in itertools.product(versions, repeat=3):
        if a < b < c:
            assert a < c


def test_pre_releases_come_before_their_release():
    assert Version.parse("1.0.0-rc.9") < Version.parse("1.0.0")
    assert Version.parse("1.0.0-rc.9+zzz") < Version.parse("1.0.0")
    assert Version.parse("0.9.9") < Version.parse("1.0.0-alpha")


def test_build_metadata_twins_have_equal_precedence_but_are_distinct():
    a, b = Version.parse("1.0.0+a"), Version.parse("1.0.0+b")
    assert a.same_precedence(b) and b.same_precedence(a)
    assert a != b
    assert (a == b) is False
    assert len({a, b}) == 2
    assert (a < b) != (b < a), "one of them sorts first, always the same one"
    assert sorted([b, a]) == sorted([a, b]) == [a, b]
    assert a.build == "a" and Version.parse("1.0.0").build == ""
    assert not Version.parse("1.0.0").same_precedence(Version.parse("1.0.1"))
    assert Version.parse("1.0.0").same_precedence(Version.parse("1.0.0+x"))


def test_equality_ignores_the_prefix_and_uses_the_full_text():
    assert Version.parse("v1.2.3") == Version.parse("1.2.3")
    assert hash(Version.parse("v1.2.3")) == hash(Version.parse("1.2.3"))
    assert Version.parse("1.2.3") != "1.2.3"
    assert repr(Version.parse("1.2.3")) == "Version('1.2.3')"


def test_comparing_with_other_types_is_refused():
    with pytest.raises(TypeError):
        Version.parse("1.0.0") < "2.0.0"  # noqa: B015


@pytest.mark.parametrize(
    "name, version",
    [
        ("v1.0.5", "1.0.5"),
        ("v1.0.1-rc.1+b7", "1.0.1-rc.1+b7"),
        ("1.0.5", None),
        ("current", None),
        (".partial-v1.0.5", None),
        ("v1٠.0.5", None),
        ("v", None),
        ("", None),
        (None, None),
        ("vlatest", None),
    ],
)
def test_release_version_of_directory_names(name, version):
    v = release_version(name)
    assert (str(v) if v else None) == version


@pytest.mark.parametrize(
    "name, shown",
    [
        ("v1.0.5", "1.0.5"),
        ("v2.0.0-rc.1+b7", "2.0.0-rc.1+b7"),
        ("current", "current"),
        ("vlatest", "vlatest"),
        (None, None),
        ("", ""),
    ],
)
def test_display(name, shown):
    assert display(name) == shown
