"""Placeholder: `sgpfab init` (being written)."""

from __future__ import annotations

from .errors import InputError


def add_parser(sub) -> None:
    p = sub.add_parser("init", help="(not yet available)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    raise InputError("sgpfab init is not available yet")
