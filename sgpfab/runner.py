"""Connect to the hosts named with -H (all of them, before anything changes)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

from .errors import InputError, RemoteError, SgpfabError
from .inventory import App, Host, Inventory
from .session import HostSession
from .settings import SecretStore, account_password
from .transport import open_transport

CONNECT_PARALLEL = 32


@dataclass
class Fleet:
    inventory: Inventory
    app: App
    hosts: list[Host]

    @classmethod
    def select(cls, inventory: Inventory, app_name: str | None, names: list[str] | str) -> Fleet:
        app = inventory.app(app_name)
        hosts = inventory.resolve(names)
        outside = [h.name for h in hosts if not inventory.deploys(app, h)]
        if outside:
            raise InputError(f"app {app.name} is not deployed on {', '.join(outside)} (apps.{app.name}.hosts)")
        return cls(inventory, app, hosts)


def open_sessions(
    stack: ExitStack, fleet: Fleet, say: Callable[[object], None] = print, preflight: bool = True
) -> list[HostSession]:
    """Connect to every host in parallel (host keys verified), resolve the app's settings there,
    and read each host's facts and state, so a bad or unreachable host stops us before any
    change anywhere. A Windows app's run_as password is resolved first, on the controller (a
    missing secret stops us before any connection)."""
    store = SecretStore(fleet.inventory.secrets_file)
    passwords = {h.name: account_password(fleet.inventory.instance(fleet.app.name, h.name), store) for h in fleet.hosts}

    def connect(host: Host) -> tuple[HostSession | None, str | None]:
        t = None
        try:
            t = open_transport(host, fleet.inventory)
            t.open()
            s = HostSession(
                t, fleet.inventory.instance(fleet.app.name, host.name), say, account_password=passwords[host.name]
            )
            if preflight:
                s.preflight()
            return s, None
        except SgpfabError as e:
            if t:
                t.close()
            return None, str(e).splitlines()[0]
        except Exception as e:  # socket and library errors: one line, with the host
            if t:
                t.close()
            text = str(e).strip().splitlines()
            return None, f"{host.name}: cannot connect: {text[0] if text else type(e).__name__}"

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
