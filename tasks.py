"""This repository's fabfile: sgpfab's own task collection (see sgpfab/tasks.py)."""

from sgpfab.tasks import ns  # noqa: F401
