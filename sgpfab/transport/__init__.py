"""Transports run commands on a host and move files there; they decide nothing.

`base.Transport` is the one interface; `ssh` (Linux over SSH + rsync), `winrm` (Windows) and
`local` (this machine, for on-server apply) implement it, and `open_transport` picks one.
"""

from typing import TYPE_CHECKING

from .base import Result, SyncStats, Transport

if TYPE_CHECKING:
    from ..inventory import Host, Inventory

__all__ = ["Result", "SyncStats", "Transport", "open_transport"]


def open_transport(host: "Host", inventory: "Inventory") -> Transport:
    """The transport for a host (not yet opened): ssh, winrm or local, as the inventory says."""
    kind = host.transport_kind
    if kind == "local":
        from .local import LocalTransport

        return LocalTransport(host)
    if kind == "winrm":
        from .winrm import WinRMTransport

        return WinRMTransport(host, inventory)
    from .ssh import SSHTransport

    return SSHTransport(host, inventory)
