"""Pick the module that says what to run on a host: `linux` (POSIX shell) or `windows` (PowerShell).

Both modules offer the same functions (prepare_dirs, hostctl, build_venv, install_service,
restart, stop, health_check, ...), so the deploy logic never forks on the OS.
"""

from types import ModuleType
from typing import TYPE_CHECKING

from . import linux, windows

if TYPE_CHECKING:
    from .inventory import Host


def steps_for(host: "Host") -> ModuleType:
    return windows if host.os == "windows" else linux
