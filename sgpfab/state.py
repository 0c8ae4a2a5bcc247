"""What a host reports (typed replies of the host helper) and the choices made from it (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import InputError
from .versions import Version, release_version

if TYPE_CHECKING:
    import semver


class Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReleaseMeta(Reply):
    """What a release records about itself in its completion marker."""

    version: str = ""
    bundle_digest: str = ""
    schema_fingerprint: str = ""
    deployed_by: str = ""
    finalized_at: str = ""
    migrations: list[str] = Field(default_factory=list)  # the bundle's migrations, oldest first
    spec: dict[Any, Any] = Field(default_factory=dict)  # the bundle's app spec (processes, hooks)
    install: dict[Any, Any] = Field(default_factory=dict)
    settings_fingerprint: str = ""


class Release(Reply):
    name: str
    complete: bool
    bad: bool
    bad_reason: str | None = None
    meta: ReleaseMeta = ReleaseMeta()

    @property
    def version(self) -> Version:
        v = release_version(self.name)
        assert v is not None
        return v


class Journal(Reply):
    """An activation in progress: recorded before anything changes, cleared when it is done."""

    op: str = "deploy"
    to: str
    from_: str | None = Field(default=None, alias="from")
    since: str = ""


class HostState(Reply):
    current: str | None = None
    releases: list[Release] = Field(default_factory=list)
    partials: list[str] = Field(default_factory=list)
    junk: list[str] = Field(default_factory=list)
    incoming: list[str] = Field(default_factory=list)
    journal: Journal | None = None
    db_exists: bool = False

    @classmethod
    def parse(cls, data: dict[str, Any]) -> HostState:
        st = cls.model_validate(data)
        good = [r for r in st.releases if release_version(r.name) is not None]
        odd = [r.name for r in st.releases if release_version(r.name) is None]  # e.g. 'vlatest'
        good.sort(key=lambda r: (r.version, r.meta.finalized_at))
        return st.model_copy(update={"releases": good, "junk": st.junk + odd})

    def get(self, version: Version | str) -> Release | None:
        name = version.release_name if isinstance(version, Version) else version
        return next((r for r in self.releases if r.name == name), None)

    @property
    def active(self) -> Release | None:
        return self.get(self.current) if self.current else None

    @property
    def complete(self) -> list[Release]:
        """Complete releases, oldest first: semver precedence, then (for versions that differ
        only in build metadata) the time the release was built on the host."""
        return sorted(
            (r for r in self.releases if r.complete), key=lambda r: (_precedence_key(r.version), r.meta.finalized_at)
        )

    def previous_good(self) -> Release | None:
        """The newest complete, not-bad release before the active one (rollback's default)."""
        active = self.active
        if active is None:
            return None
        order = self.complete
        if active not in order:
            return None
        earlier = order[: order.index(active)]
        good = [r for r in earlier if not r.bad]
        return good[-1] if good else None

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
        rollback target; bad and incomplete releases, partial builds, leftover uploads and
        anything else under releases/ go too."""
        if keep < 1:
            raise InputError("--keep must be at least 1")
        protected = {r.name for r in [r for r in self.complete if not r.bad][-keep:]}
        if self.current:
            protected.add(self.current)
        prev = self.previous_good()
        if prev:
            protected.add(prev.name)
        if self.journal:
            protected.update(n for n in (self.journal.to, self.journal.from_) if n)
        doomed = [r.name for r in self.releases if r.name not in protected]
        return doomed + self.partials + self.junk + [n for n in self.incoming if n not in protected]


def _precedence_key(v: Version) -> semver.Version:
    import semver

    return semver.Version.parse(str(v)).replace(build=None)


class HostFacts(Reply):
    """What the preflight found on a host."""

    python: str = ""
    implementation: str = ""
    interpreter: str = ""
    glibc: str = ""
    arch: str = ""
    free_bytes: int = 0
    tools: dict[str, bool] = Field(default_factory=dict)
    os: str = "linux"
    nssm: str = ""  # Windows: NSSM's usage banner (its version)
    uv: str = ""  # the uv sgpfab pushed earlier, or one on PATH ('' when none)


class UnitState(Reply):
    active: str | None = None
    sub: str | None = None
    restarts: int = 0
    pid: int = 0


class Probe(Reply):
    ok: bool = False
    code: int | None = None
    release: str | None = None
    version: str | None = None
    reason: str = ""
    error: str = ""
    body: str = ""

    def describe(self) -> str:
        if self.error:
            return self.error
        what = f"HTTP {self.code}"
        if self.release:
            what += f" from {self.release}"
        return what + (f" ({self.reason})" if self.reason and not self.ok else "")


class GateResult(Reply):
    ok: bool
    why: str = ""
    units: dict[str, UnitState] = Field(default_factory=dict)
    last: Probe = Probe()
    crashed: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        if self.ok:
            return "healthy"
        if self.why == "crashing":
            worst = max(self.crashed, key=lambda u: self.units[u].restarts) if self.crashed else "?"
            st = self.units.get(worst, UnitState())
            return f"{worst} keeps crashing ({st.restarts} restarts, {st.active})"
        if self.why == "unhealthy":
            return f"the health check failed: {self.last.describe()}"
        return f"no healthy answer ({self.why}): last probe: {self.last.describe()}"


class Backup(Reply):
    name: str
    bytes: int = 0


class BackupReply(Reply):
    backup: str | None = None
    name: str | None = None
    bytes: int = 0
    pruned: list[str] = Field(default_factory=list)
    stale_removed: list[str] = Field(default_factory=list)


class LockReply(Reply):
    locked: bool
    holder: dict[Any, Any] = Field(default_factory=dict)
    took_over: bool = False
    released: bool = False
    state: dict[Any, Any] | None = None
