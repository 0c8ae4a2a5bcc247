"""Semantic versions: parse and validate user input, name releases, order them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from .errors import InputError

_SEMVER = re.compile(
    r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
RELEASE_PREFIX = "v"


@total_ordering
@dataclass(frozen=True)
class Version:
    """A semantic version (https://semver.org), ordered by semver precedence."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> "Version":
        """Parse '1.2.3' or 'v1.2.3'; anything else raises InputError."""
        if not isinstance(text, str) or not text:
            raise InputError("missing version: give one like 1.0.5")
        raw = text[1:] if text.startswith(RELEASE_PREFIX) else text
        m = _SEMVER.fullmatch(raw)
        if not m or len(raw) > 64:
            raise InputError(f"invalid version {text!r}: expected semantic version like 1.0.5")
        pre = tuple(m["pre"].split(".")) if m["pre"] else ()
        return cls(int(m["major"]), int(m["minor"]), int(m["patch"]), pre, m["build"] or "")

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(self.pre)
        if self.build:
            s += "+" + self.build
        return s

    @property
    def release_name(self) -> str:
        """Directory name of this version under releases/ (e.g. 'v1.0.5')."""
        return RELEASE_PREFIX + str(self)

    def _key(self):
        # Pre-releases sort before the release; numeric identifiers sort numerically and
        # before alphanumeric ones. Build metadata does not take part in precedence.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key() and self.build == other.build

    def __hash__(self) -> int:
        return hash((self._key(), self.build))


def release_version(name: str) -> Version | None:
    """The version of a release directory name like 'v1.0.5', or None if it is not one."""
    if not name.startswith(RELEASE_PREFIX):
        return None
    try:
        return Version.parse(name)
    except InputError:
        return None
