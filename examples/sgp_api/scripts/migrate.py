"""Bring the shared database up to this release's schema (run by sgpfab before the switch).

Additive and idempotent: creates missing tables and indexes, then records the schema version
in SQLite's user_version. Run from the release directory with its .env exported.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from main import APP_VERSION, SQLModel, engine  # noqa: E402

SCHEMA_VERSION = 1

SQLModel.metadata.create_all(engine)
with engine.begin() as conn:
    current = conn.execute(text("PRAGMA user_version")).scalar()
    if current < SCHEMA_VERSION:
        conn.execute(text(f"PRAGMA user_version = {SCHEMA_VERSION}"))
print(f"schema at version {max(current, SCHEMA_VERSION)} for release {APP_VERSION}")
