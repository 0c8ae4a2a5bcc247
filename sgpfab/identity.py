"""Who is deploying: user@machine, recorded in bundles, release markers, locks and the audit log."""

from __future__ import annotations

import getpass
import socket


def controller_user() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"
