"""Typed results of host operations: what happened on each host."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"  # done
    NOOP = "noop"  # nothing to do (already so)
    FAILED = "failed"  # failed; the host is on `after`
    SKIPPED = "skipped"  # not started: the rollout stopped first
    UNDONE = "undone"  # done, then put back when the rollout stopped
    UNDO_FAILED = "undo_failed"  # done, but putting it back failed

    @property
    def succeeded(self) -> bool:
        return self in (Status.OK, Status.NOOP)


@dataclass(frozen=True)
class Outcome:
    host: str
    action: str
    status: Status
    before: str | None = None  # version before the run ('' / None: nothing deployed)
    after: str | None = None  # version the host is on now
    message: str = ""
    seconds: float = 0.0
    bytes_sent: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status.succeeded

    def but(self, **changes: Any) -> Outcome:
        return replace(self, **changes)
