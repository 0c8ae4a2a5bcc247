"""Validation of every value that can reach a host: one strict pattern per kind of value.

These run at the boundaries (inventory, bundle metadata, command-line flags). Builders quote
what they use as well, and the unit writer refuses multi-line values as a second line of
defence, but nothing unchecked gets that far.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)  # hosts, groups, apps
SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,47}", re.ASCII)  # systemd / NSSM service base name
PROCESS = re.compile(r"[a-z][a-z0-9_]{0,23}", re.ASCII)  # part of a unit name: no '-', no '@'
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", re.ASCII)
POSIX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)
WINDOWS_USER = re.compile(r"(?:[A-Za-z0-9.-][A-Za-z0-9. -]{0,14}\\)?[A-Za-z0-9_.-][A-Za-z0-9_. -]{0,63}", re.ASCII)
POSIX_ABS_PATH = re.compile(r"/[A-Za-z0-9._/-]*", re.ASCII)
WINDOWS_ABS_PATH = re.compile(r"[A-Za-z]:\\[A-Za-z0-9._\\ -]*", re.ASCII)
REL_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(?:/[A-Za-z0-9_][A-Za-z0-9._-]*)*", re.ASCII)
ADDRESS = re.compile(r"[A-Za-z0-9.:_-]{1,253}", re.ASCII)
URL_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*", re.ASCII)
# 'package.module:attribute', optionally called as a factory: 'pkg.app:create_app()'
APP_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\(\))?", re.ASCII)
SERVER_ARG = re.compile(r"[A-Za-z0-9_=:.,/@+-]{1,200}", re.ASCII)  # one argument token for a server
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}")
    return value


def one_line(value: str, what: str, max_length: int = 2000, allow_empty: bool = False) -> str:
    """Free text that may reach a host (commands, environment values): one line, no control
    characters (a tab is allowed), bounded length."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    if _CONTROL.search(value):
        raise ValueError(f"{what} must be a single line without control characters: {value[:60]!r}")
    if len(value) > max_length:
        raise ValueError(f"{what} is longer than {max_length} characters")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


def rel_path(value: str, what: str) -> str:
    """A relative path inside a release (no '..', no hidden sgpfab or venv directories)."""
    check(REL_PATH, value, what)
    parts = value.split("/")
    if ".." in parts or parts[0] in (".sgpfab", ".venv") or value.startswith(".sgpfab"):
        raise ValueError(f"invalid {what} {value!r}")
    return value
