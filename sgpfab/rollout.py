"""Rollouts across a fleet: waves, bounded parallelism, a failure budget, and undo on stop.

Fabric runs `-H a,b` one host after another; this engine runs an operation on many hosts at once
(threads, one SSH connection each), wave after wave. After each wave (and an optional soak time)
the hosts done so far must still be healthy; when failures exceed --max-fail the rollout stops,
hosts not started are skipped, and (unless told otherwise) hosts already changed are put back on
the release they had before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import InputError, SgpfabError
from .outcome import Outcome, Status
from .session import HostSession
from .versions import display

_R = TypeVar("_R")


@dataclass
class Policy:
    waves: list[int]  # cumulative number of hosts done at the end of each wave
    parallel: int = 1
    max_fail: int = 0  # failures tolerated; one more stops the rollout
    soak: float = 0.0  # seconds to wait after a wave before checking health again
    undo: bool = True  # on stop, put changed hosts back where they were


def parse_waves(spec: str | None, n: int) -> list[int]:
    """'1,25%,100%' -> cumulative wave ends for n hosts, e.g. [1, 2, 8] for 8 hosts."""
    if n < 1:
        raise InputError("no hosts to roll out to")
    if not spec:
        return [n]
    ends: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if part.endswith("%"):
                pct = float(part[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                end = max(1, math.ceil(n * pct / 100))
            else:
                end = int(part)
                if end < 1:
                    raise ValueError
        except ValueError:
            raise InputError(
                f"invalid --waves item {part!r}: use host counts or percentages, e.g. 1,25%,100%"
            ) from None
        end = min(end, n)
        if ends and end < ends[-1]:
            raise InputError(f"--waves must not shrink: {spec!r}")
        if not ends or end > ends[-1]:
            ends.append(end)
    if ends[-1] < n:
        ends.append(n)
    return ends


def parse_max_fail(spec: str | int | None, n: int) -> int:
    """'2' -> 2 failures tolerated; '10%' -> 10% of the hosts (rounded down)."""
    if spec is None or spec == "":
        return 0
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 <= pct <= 100:
                raise ValueError
            return math.floor(n * pct / 100)
        value = int(text)
        if value < 0:
            raise ValueError
        return value
    except ValueError:
        raise InputError(f"invalid --max-fail {spec!r}: a count (2) or a percentage (10%)") from None


def make_policy(
    n: int,
    *,
    waves: str | None = None,
    parallel: int | float | str = 1,
    max_fail: str | int | None = None,
    soak: float | str = 0.0,
    undo: bool = True,
) -> Policy:
    try:
        if isinstance(parallel, float) and not parallel.is_integer():
            raise ValueError
        parallel = int(parallel) if isinstance(parallel, (int, float)) else int(str(parallel).strip())
        soak = float(soak)
    except (TypeError, ValueError):
        raise InputError("--parallel must be a whole number and --soak a number of seconds") from None
    if not math.isfinite(soak):
        raise InputError("--soak must be a number of seconds")
    if parallel < 1:
        raise InputError("--parallel must be at least 1")
    if soak < 0:
        raise InputError("--soak must not be negative")
    return Policy(
        waves=parse_waves(waves, n), parallel=parallel, max_fail=parse_max_fail(max_fail, n), soak=soak, undo=undo
    )


@dataclass
class Rollout:
    """The result: one outcome per host, and whether the rollout stopped early."""

    outcomes: list[Outcome] = field(default_factory=list)
    stopped: str = ""

    @property
    def exit_code(self) -> int:
        """0: every host done; 2: partial (some failed, skipped or undone); 1: nothing succeeded."""
        ok = [o for o in self.outcomes if o.ok]
        if len(ok) == len(self.outcomes) and not self.stopped:
            return 0
        return 2 if ok or any(o.status == Status.UNDONE for o in self.outcomes) else 1


def run(
    sessions: list[HostSession],
    action: str,
    fn: Callable[[HostSession], Outcome],
    policy: Policy,
    undo: Callable[[HostSession, Outcome], Outcome] | None = None,
    still_healthy: Callable[[HostSession, Outcome], bool] | None = None,
    say: Callable[[object], None] = print,
) -> Rollout:
    result = Rollout()
    by_host: dict[str, Outcome] = {}
    changed: list[HostSession] = []  # hosts this rollout moved to another release, in order
    failures, start = 0, 0
    for i, end in enumerate(policy.waves):
        wave = sessions[start:end]
        start = end
        if len(policy.waves) > 1:
            say(f"-- wave {i + 1}/{len(policy.waves)}: {', '.join(s.name for s in wave)}")
        for s, o in _run_wave(wave, action, fn, policy.parallel, budget=policy.max_fail - failures):
            by_host[s.name] = o
            if o.ok and o.before != o.after:
                changed.append(s)
        failures = _failed(by_host)
        if failures <= policy.max_fail and i < len(policy.waves) - 1 and (policy.soak or still_healthy):
            if policy.soak:
                say(f"-- soaking {policy.soak:g}s before the next wave")
                time.sleep(policy.soak)
            if still_healthy:  # the health gate between waves, on every host changed so far
                checks = _parallel(changed, lambda s: _healthy(still_healthy, s, by_host[s.name]), policy.parallel)
                for s, healthy in checks:
                    if not healthy and by_host[s.name].ok:
                        by_host[s.name] = by_host[s.name].but(
                            status=Status.FAILED, message="became unhealthy after its wave"
                        )
                        failures += 1
                        if policy.undo and undo:  # put it back now, whether or not the rollout goes on
                            changed.remove(s)
                            by_host[s.name] = _undo_one(s, by_host[s.name], undo)
        if failures > policy.max_fail:
            result.stopped = (
                f"stopped after wave {i + 1}: {failures} failed host(s), --max-fail allows {policy.max_fail}"
            )
            say(f"-- {result.stopped}")
            break
    for s in sessions:
        if s.name not in by_host:
            by_host[s.name] = Outcome(
                s.name, action, Status.SKIPPED, s.current_version, s.current_version, "skipped: the rollout stopped"
            )
    if result.stopped and policy.undo and undo and changed:
        say(f"-- undoing {len(changed)} host(s) to the release they had before")
        for s, o in _parallel(changed, lambda s: _undo_one(s, by_host[s.name], undo), policy.parallel):
            by_host[s.name] = o
    result.outcomes = [by_host[s.name] for s in sessions]
    return result


def _healthy(check: Callable[[HostSession, Outcome], bool], s: HostSession, o: Outcome) -> bool:
    """A host that cannot even be asked is not healthy."""
    try:
        return bool(check(s, o))
    except Exception:
        return False


def _undo_one(s: HostSession, o: Outcome, undo: Callable[[HostSession, Outcome], Outcome]) -> Outcome:
    """Put one changed host back; the outcome says what happened (never raises: every other
    host still gets its undo and the summary)."""
    try:
        u = undo(s, o)
    except SgpfabError as e:
        u = Outcome(s.name, "undo", Status.FAILED, o.after, None, str(e))
    except Exception as e:
        u = Outcome(s.name, "undo", Status.FAILED, o.after, None, f"{type(e).__name__}: {e}")
    if u.ok:
        note = f" ({o.message})" if not o.ok else ""
        return o.but(status=Status.UNDONE, after=u.after, message=f"undone: back on {u.after or 'no release'}{note}")
    return o.but(status=Status.UNDO_FAILED, message=f"UNDO FAILED: {u.message}")


def _failed(by_host: dict[str, Outcome]) -> int:
    return sum(1 for o in by_host.values() if not o.ok)


def _where(s: HostSession) -> str | None:
    """What the host is on now (after a failure), as best we can tell."""
    try:
        return display(s.state().current)
    except Exception:
        return "unknown"


def _run_wave(
    wave: list[HostSession], action: str, fn: Callable[[HostSession], Outcome], parallel: int, budget: int
) -> list[tuple[HostSession, Outcome]]:
    """Run fn on the wave's hosts, at most `parallel` at once; once more than `budget` hosts of
    the wave have failed, start no other host (those already running finish safely)."""

    def guarded(s: HostSession) -> Outcome:
        start = time.monotonic()
        try:
            return fn(s)
        except SgpfabError as e:
            message = str(e)
        except Exception as e:  # one host's bug must not abandon the others mid-deploy
            message = f"{type(e).__name__}: {e}"
        return Outcome(
            s.name,
            action,
            Status.FAILED,
            s.current_version,
            _where(s),
            message,
            round(time.monotonic() - start, 2),
            timings=dict(s.timings),
        )

    pending = list(wave)
    running: dict[Future[Outcome], HostSession] = {}
    done: list[tuple[HostSession, Outcome]] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while pending or running:
            over_budget = sum(1 for _, o in done if not o.ok) > budget
            while pending and len(running) < parallel and not over_budget:
                s = pending.pop(0)
                running[pool.submit(guarded, s)] = s
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                done.append((running.pop(f), f.result()))
    return done


def _parallel(items: list[HostSession], fn: Callable[[HostSession], _R], parallel: int) -> list[tuple[HostSession, _R]]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(zip(items, pool.map(fn, items)))
