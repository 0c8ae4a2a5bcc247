"""The pure parts of session.py: who the app runs as, how host-helper answers are read, when a
lock is stale, and what a bad-release reason may contain."""

import os
import socket

import pytest
from support.builders import app_with, inventory_data, load_inventory

from sgpfab.errors import InputError, RemoteError
from sgpfab.session import (
    HostNote,
    _last_json,
    _stale,
    _token_safe,
    resolve_service_user,
)
from sgpfab.transport.base import Result


def inst(tmp_path, *, host_os="linux", **app):
    inv = load_inventory(tmp_path, data=inventory_data(hosts={"h1": {"os": host_os}}, apps={"shop": app_with(**app)}))
    return inv.instance("shop", "h1")


def test_service_user_linux(tmp_path):
    assert resolve_service_user(inst(tmp_path), "deploy") == "deploy"
    assert resolve_service_user(inst(tmp_path, run_as="shopsvc"), "root") == "shopsvc"
    for login in ("root", ""):
        with pytest.raises(InputError) as e:
            resolve_service_user(inst(tmp_path), login)
        assert str(e.value).startswith("h1: the app would run as root") and "run_as" in str(e.value)


def test_service_user_windows(tmp_path):
    assert resolve_service_user(inst(tmp_path, host_os="windows"), "Administrator") == "NT SERVICE\\shop"
    named = inst(tmp_path, host_os="windows", run_as="CORP\\svc", run_as_password={"secret": "svc_pw"})
    assert resolve_service_user(named, "x") == "CORP\\svc"


def result(stdout, *, exited=0, stderr=""):
    return Result(command="hostctl state", stdout=stdout, stderr=stderr, exited=exited)


def test_last_json_reads_the_last_line():
    assert _last_json("h1", result('noise\n{"a": 1}\n{"b": 2}\n')) == {"b": 2}
    for bad in ("", "not json", '{"a": 1}\ntrailing junk'):
        with pytest.raises(RemoteError) as e:
            _last_json("h1", result(bad))
        assert str(e.value).startswith("h1: the host helper gave no answer")


def test_stale_lock_only_for_a_dead_process_of_this_controller():
    me = socket.gethostname()
    dead = 2**22 + 12345  # above pid_max on most systems: no such process
    assert _stale({"controller": me, "pid": dead})
    assert not _stale({"controller": me, "pid": os.getpid()}), "our own process is not stale"
    assert not _stale({"controller": me, "pid": 1}), "pid 1 is alive"
    assert not _stale({"controller": "another-machine", "pid": dead}), "another controller: cannot tell"
    assert not _stale({"controller": me, "pid": 0}) and not _stale({}) and not _stale({"controller": me})


@pytest.mark.parametrize(
    "reason, safe",
    [
        ("health check failed: HTTP 500", "health check failed: HTTP 500"),
        ('it\'s "quoted" `x`', "it s  quoted   x "),
        ("line\nbreak\ttab", "line break tab"),
        ("ünïcode €", " n code  "),
        ("x" * 300, "x" * 200),
    ],
)
def test_token_safe(reason, safe):
    assert _token_safe(reason) == safe


def test_host_note():
    assert str(HostNote("prod1", 3.14159, "uploading")) == "[prod1 +  3.1s] uploading"
