"""Fabric looks for a collection named `fabfile`: sgpfab's tasks."""

from sgpfab.tasks import ns  # noqa: F401
