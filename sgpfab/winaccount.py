r"""Which account a Windows app's services may run as (`run_as` on a Windows host).

Accepted: `DOMAIN\user` or `.\user` (a local user), which need `run_as_password: {secret: NAME}`,
and a group managed service account `DOMAIN\name$`, which takes no password (Windows fetches it
from the domain). A name without a domain is refused: Win32_Service.Change wants the qualified
form. Built-in and administrative accounts are refused (the service must not run with more
rights than it needs), and so are `NT SERVICE\...` names: without run_as each service already
runs as its own virtual account.
"""

from __future__ import annotations

import re

# The domain (NetBIOS name, or `.` for this computer) and the account (sAMAccountName; a gMSA's
# ends in `$`). ASCII letters, digits, `_`, `.`, `-` and inner blanks only: no quote, `\` or `$`
# anywhere else, so the name can reach PowerShell, icacls and the SCM without escaping.
ACCOUNT = re.compile(
    r"(?P<domain>\.|[A-Za-z0-9][A-Za-z0-9.-]{0,14})\\"
    r"(?P<user>[A-Za-z0-9_.-](?:[A-Za-z0-9_. -]{0,62}[A-Za-z0-9_.-])?)(?P<gmsa>\$?)",
    re.ASCII,
)

_BUILTIN_DOMAINS = ("nt authority", "nt service", "builtin", "nt virtual machine", "window manager", "font driver host")
_PRIVILEGED_NAMES = (
    "system",
    "localsystem",
    "localservice",
    "local service",
    "networkservice",
    "network service",
    "administrator",
    "administrators",
    "domain admins",
    "enterprise admins",
    "schema admins",
    "trustedinstaller",
)


def is_privileged(account: str) -> bool:
    """A built-in, system or administrative account (by name, in any case)."""
    domain, _, name = account.rpartition("\\")
    return name.lower().rstrip("$") in _PRIVILEGED_NAMES or domain.lower() in _BUILTIN_DOMAINS


def is_gmsa(account: str) -> bool:
    """A group managed service account: its name ends in `$` and it has no password to give."""
    return account.endswith("$")


def check(account: str) -> str:
    """`account` if a Windows service may run as it; ValueError (one line) otherwise."""
    if is_privileged(account):
        raise ValueError(f"the service must not run as {account}: set run_as to an unprivileged user")
    if not ACCOUNT.fullmatch(account):
        raise ValueError(
            f"invalid Windows account {account!r} for run_as: give DOMAIN\\user, .\\user (a local user)"
            " or DOMAIN\\name$ (a group managed service account)"
        )
    return account
