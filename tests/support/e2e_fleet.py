"""The end-to-end tests' sandbox fleet: its name, size, subnet and the lock its users share.

Two test runs at once (say, two developers on one machine) each name their own fleet and
subnet: SGPFAB_E2E_FLEET=mine SGPFAB_E2E_SUBNET=240.
"""

import os
from pathlib import Path

FLEET_NAME = os.environ.get("SGPFAB_E2E_FLEET", "pytest")
FLEET_HOSTS = 4  # staging1, prod1, prod2, prod3
FLEET_SUBNET = int(os.environ.get("SGPFAB_E2E_SUBNET", "251"))
LOCK = Path(f"/run/sgpfab-e2e-fleet-{FLEET_NAME}.lock")
