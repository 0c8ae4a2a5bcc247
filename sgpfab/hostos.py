"""Pick the module that says what to run on a host: `linux` (POSIX shell) or `windows` (PowerShell).

Both modules offer the same functions and constants (prepare, hostctl, write_files, build_venv,
install_processes, start_processes, stop_processes, CAN_OVERLAP, EXIT_NO_BASE, ...), so the
deploy logic never forks on the OS: HostSession takes its module from `steps_for`.
"""

from types import ModuleType
from typing import TYPE_CHECKING

from . import linux, windows

if TYPE_CHECKING:
    from .inventory import Host


def steps_for(host: "Host") -> ModuleType:
    return windows if host.os == "windows" else linux
