"""Fabric looks for a collection named `fabfile`: the tasks live in tasks.py."""

from tasks import ns  # noqa: F401
