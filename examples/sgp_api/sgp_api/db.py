"""Database engine and session handling.

The connection string comes from the ``DATABASE_URL`` environment variable, e.g.

* ``sqlite:///./sgp_api.db`` (the default)
* ``postgresql+psycopg://user:password@localhost:5432/sgp_api``
"""

import os
from collections.abc import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

DEFAULT_DATABASE_URL = "sqlite:///./sgp_api.db"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def _enable_sqlite_wal(dbapi_connection, _connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str | None = None) -> Engine:
    url = url or database_url()
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        new_engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(new_engine, "connect", _enable_sqlite_wal)
    else:
        new_engine = create_engine(url, pool_pre_ping=True)
    return new_engine


engine = make_engine()


def get_session() -> Iterator[Session]:
    with Session(engine) as session:
        yield session
