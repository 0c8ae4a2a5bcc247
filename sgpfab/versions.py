"""Release versions: semantic versions (python-semver), parsed once at the boundary.

A version names a release directory (`releases/v1.0.5`). Two versions that differ only in build
metadata (`1.0.0+a`, `1.0.0+b`) are distinct releases of equal precedence: `precedence` orders
by semver rules and ignores build metadata; equality and hashing use the full text.
"""

from __future__ import annotations

import re
from functools import total_ordering

import semver

from .errors import InputError

RELEASE_PREFIX = "v"
MAX_LENGTH = 64
MAX_ESCAPED = 120  # the release's part of a unit name (SERVICE-PROCESS@RELEASE.service <= 255)
# semver's own grammar, restricted to ASCII explicitly (Python's \d also matches other digits).
_ASCII = re.compile(r"[0-9A-Za-z.+-]+", re.ASCII)


@total_ordering
class Version:
    """A semantic version. `<` is semver precedence with build metadata as a tie-breaker of last
    resort (so sorting is total and deterministic); use `same_precedence` to compare as semver does."""

    __slots__ = ("_v",)

    def __init__(self, v: semver.Version):
        self._v = v

    @classmethod
    def parse(cls, text: object) -> Version:
        """'1.2.3' or 'v1.2.3' (ASCII only, at most 64 characters); anything else: InputError."""
        if not isinstance(text, str) or not text:
            raise InputError("missing version: give one like 1.0.5")
        raw = text[len(RELEASE_PREFIX) :] if text.startswith(RELEASE_PREFIX) else text
        if len(raw) > MAX_LENGTH or not _ASCII.fullmatch(raw):
            raise InputError(f"invalid version {text!r}: expected a semantic version like 1.0.5")
        try:
            v = cls(semver.Version.parse(raw))
        except ValueError:
            raise InputError(f"invalid version {text!r}: expected a semantic version like 1.0.5") from None
        from .layout import systemd_escape

        if len(systemd_escape(v.release_name)) > MAX_ESCAPED:
            raise InputError(f"invalid version {text!r}: too many '-' and '+' for a systemd unit name")
        return v

    def __str__(self) -> str:
        return str(self._v)

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"

    @property
    def release_name(self) -> str:
        """Directory name of this version under releases/ (e.g. 'v1.0.5')."""
        return RELEASE_PREFIX + str(self)

    @property
    def build(self) -> str:
        return self._v.build or ""

    def same_precedence(self, other: Version) -> bool:
        return self._v.compare(other._v) == 0

    def _key(self) -> tuple[semver.Version, str]:
        return (self._v, self.build)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        c = self._v.compare(other._v)
        return c < 0 if c else self.build < other.build

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def release_version(name: str | None) -> Version | None:
    """The version of a release directory name like 'v1.0.5', or None if it is not one."""
    if not name or not name.startswith(RELEASE_PREFIX):
        return None
    try:
        return Version.parse(name)
    except InputError:
        return None


def display(name: str | None) -> str | None:
    """'v1.0.5' -> '1.0.5' for people; other names unchanged."""
    v = release_version(name)
    return str(v) if v else name
