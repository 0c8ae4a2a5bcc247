"""A host's release state (as hostctl reports it) and the choices made from it. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError
from .versions import Version, release_version


@dataclass(frozen=True)
class Release:
    name: str
    version: Version
    complete: bool
    bad: bool
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class HostState:
    current: str | None
    releases: list[Release]
    partials: list[str]

    @classmethod
    def from_json(cls, data: dict) -> "HostState":
        rels = []
        for r in data.get("releases", []):
            v = release_version(r["name"])
            if v is not None:
                rels.append(Release(r["name"], v, bool(r["complete"]), bool(r["bad"]), r.get("meta") or {}))
        rels.sort(key=lambda r: r.version)
        return cls(data.get("current"), rels, list(data.get("partials", [])))

    def get(self, version: Version) -> Release | None:
        return next((r for r in self.releases if r.name == version.release_name), None)

    @property
    def active(self) -> Release | None:
        return next((r for r in self.releases if r.name == self.current), None)

    @property
    def complete(self) -> list[Release]:
        """Complete releases, oldest to newest by semantic version."""
        return [r for r in self.releases if r.complete]

    def previous_good(self) -> Release | None:
        """The newest complete, not-bad release older than the active one (rollback's default)."""
        active = self.active
        if active is None:
            return None
        older = [r for r in self.complete if r.version < active.version and not r.bad]
        return older[-1] if older else None

    def rollback_target(self, version: Version | None) -> Release:
        """The release a rollback goes to; InputError if there is none or it is unusable."""
        if self.active is None:
            raise InputError("nothing is deployed here: no active release to roll back from")
        if version is None:
            target = self.previous_good()
            if target is None:
                raise InputError(f"no earlier good release to roll back to (active: {self.active.version})")
            return target
        target = self.get(version)
        if target is None:
            have = ", ".join(str(r.version) for r in self.complete) or "none"
            raise InputError(f"release {version} does not exist here (available: {have})")
        if not target.complete:
            raise InputError(f"release {version} is incomplete here and cannot be activated")
        return target

    def cleanup_plan(self, keep: int) -> list[str]:
        """Names to delete: all but the newest `keep` good releases, never the active one or its
        rollback target; releases marked bad and leftover partial builds go first."""
        if keep < 1:
            raise InputError("--keep must be at least 1")
        protected = {r.name for r in [r for r in self.complete if not r.bad][-keep:]}
        if self.current:
            protected.add(self.current)
        prev = self.previous_good()
        if prev:
            protected.add(prev.name)
        doomed = [r.name for r in self.releases if r.name not in protected]
        return doomed + list(self.partials)
