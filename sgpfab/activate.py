"""Make a release the active one on a host, safely, and recover an activation that was cut off.

An activation (deploy, rollback, undo) goes:

1. journal: record (from, to) on the host, durably, before anything changes;
2. the release's scripts and units are written (the socket now activates `to`'s web process);
3. `to`'s web process starts BESIDE the old one on the shared socket (sgpfab's launchers; an
   app's own command is restarted instead, connections waiting in the socket's queue)
4. the old release's other processes (workers, schedulers) stop, then `to`'s start: never two;
   (`start` returns once the new process accepts, so requests never wait for its start-up);
5. the old web process stops gracefully, and the gate: `to` must answer the health check itself
   and every process must keep running;
6. `current` switches (atomically), leftovers stop, the journal clears.

If anything fails before 4, the host is put back on `from` (its processes restarted, `to`'s
stopped). If the controller dies anywhere, the next run of any command finds the journal and
finishes (when `current` already names a healthy `to`) or undoes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from .errors import DeployError, RemoteError
from .session import HostSession, spec_of
from .state import GateResult, HostState
from .versions import display

if TYPE_CHECKING:
    from .appspec import AppSpec


class Unhealthy(Exception):
    def __init__(self, gate: GateResult) -> None:
        super().__init__(gate.describe())
        self.gate = gate


def _spec(st: HostState, name: str | None) -> AppSpec | None:
    return spec_of(st.get(name)) if name else None


def activate(
    s: HostSession,
    to: str,
    before: str | None,
    op: str,
    before_undo: Callable[[], object] | None = None,
    settings_fingerprint: str | None = None,
    st: HostState | None = None,
) -> GateResult:
    """Steps 1-6 above; on failure puts `before` back and raises DeployError (the release is
    marked bad when it was found unhealthy). `settings_fingerprint`: recorded on the release
    once it is active (what status compares the host's settings with)."""
    st = st or s.state()
    spec, old_spec = _spec(st, to), _spec(st, before)
    if spec is None:
        raise DeployError(f"{s.name}: release {display(to)} has no process model (built by an older sgpfab?)")
    try:
        gate = _start(s, op, to, spec, before, old_spec)
        s.switch_to(to, settings_fingerprint)
        s.step("switched")
        s.finish(to)
        return gate
    except BaseException as e:
        unhealthy = isinstance(e, Unhealthy)
        reason = e.gate.describe() if isinstance(e, Unhealthy) else _describe(e)
        logs = _logs(s, spec) if unhealthy else ""
        if unhealthy:
            s.mark_bad(to, reason)
        if before_undo is not None:
            before_undo()  # e.g. the previous settings, before the previous release restarts
        _, restored = undo(s, to, before)
        msg = f"{s.name}: release {display(to)} failed ({reason}); {restored}"
        if logs:
            msg += "\n  last log lines:\n    " + "\n    ".join(logs.splitlines())
        raise DeployError(msg, before=display(before), after=display(_current(s))) from (None if unhealthy else e)


def _start(s: HostSession, op: str, to: str, spec: AppSpec, before: str | None, old_spec: AppSpec | None) -> GateResult:
    web = spec.web
    overlap = bool(web is not None and before and before != to and web.overlaps and s.can_overlap)
    # With sgpfab's launchers the new web process's start returns once it accepts on the socket,
    # which the old one still serves meanwhile; an app's own command replaces the old one.
    stop_first = before if (web is not None and before and not overlap) else None
    if not s.start_release(op, before, to, spec, stop_web=stop_first):
        raise Unhealthy(_start_failure(s, to))
    s.step("web started")
    old_others = list(old_spec.others) if (before and old_spec is not None) else []
    if not s.swap_others(before, old_others, to, list(spec.others)):  # stop, then start: never two workers
        raise Unhealthy(_start_failure(s, to, list(spec.others)))
    s.step("processes started")
    gate = s.hand_over(before if overlap else None, to, web, list(spec.processes))
    s.step("gate")
    if not gate.ok:
        raise Unhealthy(gate)
    s.note(f"healthy: {display(to)} serves ({gate.seconds:.1f}s)")
    return gate


def _start_failure(s: HostSession, release: str, names: list[str] | None = None) -> GateResult:
    """Why a process did not come up (it failed before telling systemd it was ready)."""
    g = s.gate(release, web=None, names=names or ["web"], timeout=2, settle=0)
    if g.ok or g.why != "crashing":
        return GateResult(ok=False, why="crashing", units=g.units, crashed=list(g.units))
    return g


def undo(s: HostSession, to: str, before: str | None) -> tuple[bool, str]:
    """Put `before` back as the active release (or nothing, when there was none): (whether the
    host is back where it was, what happened). Never raises for the host's state."""
    try:
        st = s.state()
        if before is None:
            s.stop_all_but(None)
            if st.current:
                s.unlink_current()
            s.journal_clear()
            return True, "no earlier release to return to: the app was stopped"
        old_spec = _spec(st, before)
        if old_spec is None:
            return False, f"could not return to {display(before)}: it has no process model"
        s.write_release_files(before, old_spec)
        s.install_processes(before, old_spec)
        spec = _spec(st, to)
        if spec is not None:
            s.stop_processes(to, list(spec.others))
        s.start_processes(before, list(old_spec.processes))
        if st.current != before:
            s.switch(before)
        gate = s.gate(before, web=old_spec.web, names=list(old_spec.processes))
        s.stop_all_but(before)
        s.journal_clear()
        if gate.ok:
            s.note(f"back on {display(before)}, which is healthy")
            return True, f"rolled back to {before} (healthy)"
        return True, f"rolled back to {before}, but it is NOT healthy either: {gate.describe()}"
    except (RemoteError, DeployError) as e:
        return False, f"putting {display(before) or 'nothing'} back FAILED: {str(e).splitlines()[0]}"


def recover(s: HostSession, st: HostState | None = None) -> str | None:
    """Finish or undo an activation a dead run left half-done (its journal is on the host).
    Returns what was done, or None when there was nothing to recover."""
    st = st or s.state()
    j = st.journal
    if j is None:
        return None
    s.note(f"found an interrupted {j.op} ({display(j.from_) or 'nothing'} -> {display(j.to)}) from {j.since}")
    if st.current == j.to and _spec(st, j.to) is not None:
        spec = cast("AppSpec", _spec(st, j.to))  # not None: checked just above
        gate = s.gate(j.to, web=spec.web, names=list(spec.processes), timeout=min(s.inst.health.timeout, 30))
        if gate.ok:
            s.stop_all_but(j.to)
            s.journal_clear()
            s.audit(action="recover", version=display(j.to), before=display(j.from_), result="finished")
            return f"finished the interrupted {j.op}: {display(j.to)} is active and healthy"
    back, what = undo(s, j.to, j.from_)
    s.audit(
        action="recover",
        version=display(j.from_),
        before=display(j.to),
        result="undone" if back else "failed",
        detail=what,
    )
    if not back:
        raise DeployError(f"{s.name}: could not recover the interrupted {j.op}: {what}")
    return f"undid the interrupted {j.op} of {display(j.to)}: {what}"


def _current(s: HostSession) -> str | None:
    try:
        return s.state().current
    except RemoteError:
        return None


def _logs(s: HostSession, spec: AppSpec) -> str:
    out = []
    for name in spec.processes:
        text = s.process_log(name, 8)
        if text:
            out.append(f"[{name}]")
            out.extend(text.splitlines())
    return "\n".join(out)


def _describe(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, RemoteError):
        return str(e).splitlines()[0]
    return f"{type(e).__name__}: {e}"
