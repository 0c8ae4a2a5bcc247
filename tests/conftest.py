"""Run-wide hooks, loaded by pytest's controlling process too (pytest-xdist's controller does not
collect, so it never loads tests/e2e/conftest.py): the run id that the workers share, the order
of the tests, and tearing the e2e fleet down at the end."""

import os
import sys
import uuid
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from support.e2e_fleet import FLEET_NAME  # noqa: E402


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controlling process: this run's id
        config.sgpfab_run = os.environ.get("SGPFAB_E2E_RUN") or uuid.uuid4().hex
        os.environ["SGPFAB_E2E_RUN"] = config.sgpfab_run


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):  # xdist: hand the run id to each worker
    node.workerinput["sgpfab_run"] = node.config.sgpfab_run


# The longest tests first, so that under pytest-xdist no worker starts one near the end while the
# others sit idle; the quick unit tests fill the gaps last.
LONGEST_FIRST = ("test_recovery.py", "test_bundles.py", "test_safety.py", "test_fleet_rollout.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = str(item.fspath)
        if "/e2e/" not in path:
            return len(LONGEST_FIRST) + 1
        name = path.rsplit("/", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=rank)  # stable: the order within a file stays


def pytest_sessionfinish(session, exitstatus):
    """The controlling process tears down the fleet this run booted (a fleet it did not boot,
    say another run's, has another run id and stays)."""
    if hasattr(session.config, "workerinput"):
        return
    from sgpfab.sandbox import fleet as sandbox

    f = sandbox.Fleet.load(FLEET_NAME)
    run_id = f.dir / "run-id" if f is not None else None
    if run_id is not None and run_id.is_file() and run_id.read_text() == session.config.sgpfab_run:
        sandbox.down(FLEET_NAME, log=lambda *_: None)
