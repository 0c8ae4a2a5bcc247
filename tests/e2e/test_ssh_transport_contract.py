"""The transport contract (tests/support/contract.py) over SSH to a real sandbox host, as the
unit tests run it through the local transport and the WinRM stand-in."""

import posixpath
import uuid

from support.contract import check_contract

from sgpfab.inventory import Inventory
from sgpfab.transport.ssh import SSHTransport


def test_ssh_transport(slot, tmp_path):
    inv = Inventory.load(slot.inventory)
    host = inv.hosts["staging1"]
    remote = f"/tmp/contract-{uuid.uuid4().hex[:8]}"
    slot.ssh("staging1", f"mkdir {remote}")
    t = SSHTransport(host, inv)
    t.open()
    try:
        check_contract(t, remote, posixpath.join, tmp_path)
    finally:
        t.close()
        slot.ssh("staging1", f"rm -rf {remote}")
