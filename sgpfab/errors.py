"""Errors that sgpfab reports to the user as one clear line."""

from __future__ import annotations


class SgpfabError(Exception):
    """Base class: the message is meant for the user, on one line."""


class InputError(SgpfabError):
    """Bad user input (version, host, path, flag). Raised before anything changes."""


class InventoryError(SgpfabError):
    """The inventory file is missing or malformed."""


class RemoteError(SgpfabError):
    """A command on a host failed."""


class DeployError(SgpfabError):
    """A deploy or rollback failed; the host was left on a working release where possible."""

    def __init__(self, message: str, before: str | None = None, after: str | None = None):
        super().__init__(message)
        self.before, self.after = before, after


class LockedError(SgpfabError):
    """Another deploy holds the host's lock."""
