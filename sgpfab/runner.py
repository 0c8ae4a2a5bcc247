"""Connect to the hosts named with -H (all of them, before anything changes)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from .errors import RemoteError, SgpfabError
from .inventory import Host, Inventory
from .session import HostSession
from .transport.ssh import SSHTransport
from .versions import release_version

CONNECT_PARALLEL = 16


@dataclass
class Fleet:
    inventory: Inventory
    hosts: list[Host]


def open_sessions(stack: ExitStack, fleet: Fleet, say=print) -> list[HostSession]:
    """Connect to every host (in parallel, host keys verified) and read its active release, so a
    bad or unreachable host stops us before any change anywhere."""
    def connect(host: Host):
        t = None
        try:
            t = transport_for(host, fleet.inventory)
            t.open()
            s = HostSession(t, say)
            if s.has_helper():
                current = s.state().current
                v = release_version(current) if current else None
                s.current_version = str(v) if v else current
            return s, None
        except SgpfabError as e:
            if t:
                t.close()
            return None, str(e)
        except Exception as e:  # socket and paramiko errors: one line, with the host
            if t:
                t.close()
            return None, f"{host.name}: cannot connect: {e}"

    if not fleet.hosts:
        return []
    with ThreadPoolExecutor(max_workers=min(CONNECT_PARALLEL, len(fleet.hosts))) as pool:
        results = list(pool.map(connect, fleet.hosts))
    sessions = [s for s, _ in results if s]
    for s in sessions:
        stack.callback(s.t.close)
    errors = [e for _, e in results if e]
    if errors:
        raise RemoteError("; ".join(errors) + " (nothing was changed)")
    return sessions


def transport_for(host: Host, inventory: Inventory):
    """SSH for Linux hosts, WinRM for Windows hosts: the same interface."""
    if host.os == "windows":
        from .transport.winrm import WinRMTransport
        return WinRMTransport(host, inventory)
    return SSHTransport(host, inventory)
