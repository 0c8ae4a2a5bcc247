"""The transport contract (tests/support/contract.py) through the local transport and through
WinRM to the Windows stand-in host; tests/e2e/test_ssh_transport_contract.py runs it over SSH."""

import ntpath
import posixpath

from support.contract import check_contract
from support.winhost import WindowsHost
from support.wsman import FakeWinRM
from winrm.protocol import Protocol

from sgpfab.inventory import Host
from sgpfab.transport.local import LocalTransport
from sgpfab.transport.winrm import WinRMTransport


def test_local_transport(tmp_path):
    t = LocalTransport(Host.model_validate({"name": "here", "connection": "local"}))
    remote = tmp_path / "remote"
    remote.mkdir()
    check_contract(t, str(remote), posixpath.join, tmp_path / "work")


def test_winrm_transport_to_the_windows_stand_in(tmp_path):
    host = WindowsHost(tmp_path / "win")
    try:
        p = Protocol("https://win1.example.com:5986/wsman", transport="ntlm", username="deployer", password="pw")
        p.transport.send_message = FakeWinRM(host)
        t = WinRMTransport(Host.model_validate({"name": "win1", "os": "windows", "user": "deployer"}), protocol=p)
        t.open()
        host.local("C:\\contract").mkdir(parents=True)
        check_contract(t, "C:\\contract", ntpath.join, tmp_path / "work")
    finally:
        host.shutdown()
