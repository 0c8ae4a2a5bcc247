"""Run an operation over the hosts named with -H: preflight every host, then act host by host."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

from .deploy import Outcome
from .errors import RemoteError, SgpfabError
from .inventory import Host, Inventory
from .session import HostSession
from .transport.ssh import SSHTransport


@dataclass
class Fleet:
    inventory: Inventory
    hosts: list[Host]


def open_sessions(stack: ExitStack, fleet: Fleet, say=print) -> list[HostSession]:
    """Connect to every host first (verifying host keys), so a bad host stops us before any change."""
    sessions, errors = [], []
    for host in fleet.hosts:
        if host.os != "linux":
            errors.append(f"{host.name}: {host.os} hosts are not supported yet")
            continue
        t = SSHTransport(host, fleet.inventory)
        try:
            t.open()
        except SgpfabError as e:
            errors.append(str(e))
            continue
        except Exception as e:  # socket and paramiko errors: one line, with the host
            errors.append(f"{host.name}: cannot connect: {e}")
            continue
        stack.callback(t.close)
        sessions.append(HostSession(t, say))
    if errors:
        raise RemoteError("; ".join(errors) + " (nothing was changed)")
    return sessions


def each_host(sessions: list[HostSession], action: str, fn: Callable[[HostSession], Outcome],
              stop_on_failure: bool = True) -> list[Outcome]:
    """Apply `fn` host by host; on a failure the remaining hosts are left untouched."""
    outcomes: list[Outcome] = []
    failed = False
    for s in sessions:
        if failed and stop_on_failure:
            outcomes.append(Outcome(s.host.name, action, False, None, None, "skipped: an earlier host failed"))
            continue
        try:
            outcomes.append(fn(s))
        except SgpfabError as e:
            failed = True
            outcomes.append(Outcome(s.host.name, action, False, getattr(e, "before", None),
                                    getattr(e, "after", None), str(e)))
    return outcomes
