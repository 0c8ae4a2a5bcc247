"""The transport contract (tests/support/contract.py) over SSH to a real sandbox host, as the
unit tests run it through the local transport and the WinRM stand-in."""

import posixpath
import uuid

import yaml
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


def test_the_ssh_stream_is_compressed_unless_ssh_config_says_no(slot, tmp_path):
    inv = Inventory.load(slot.inventory)
    host = inv.hosts["staging1"]
    t = SSHTransport(host, inv)
    t.open()
    try:
        transport = t.conn.client.get_transport()
        assert (transport.local_compression, transport.remote_compression) == ("zlib@openssh.com",) * 2
        assert t.run("echo compressed").stdout == "compressed\n"
    finally:
        t.close()

    assert inv.ssh_config is not None
    plain = tmp_path / "ssh_config"
    plain.write_text("Host staging1\n  Compression no\n\n" + inv.ssh_config.read_text())
    data = yaml.safe_load(slot.inventory.read_text())
    data["ssh_config"] = str(plain)
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    inv = Inventory.load(tmp_path / "fleet.yaml")
    t = SSHTransport(inv.hosts["staging1"], inv)
    t.open()
    try:
        transport = t.conn.client.get_transport()
        assert (transport.local_compression, transport.remote_compression) == ("none", "none")
    finally:
        t.close()
