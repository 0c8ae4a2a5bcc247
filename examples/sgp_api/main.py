"""SGP API: a small FastAPI + SQLModel service that sgpfab deploys in its demo and tests.

Configuration comes from the environment (sgpfab writes it into the release's .env):
API_ROOT (required), and DATABASE_URL, MEDIA_ROOT, LOG_DIR, APP_VERSION derived from it.
"""

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException
from sqlalchemy import text
from sqlmodel import Field, Session, SQLModel, create_engine, select


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines from the release's .env without overriding the real environment."""
    if path.is_file():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                os.environ.setdefault(key.strip(), value.strip())


load_dotenv(Path(__file__).with_name(".env"))
API_ROOT = Path(os.environ["API_ROOT"])
DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///{API_ROOT / 'shared/db/app.db'}")
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", API_ROOT / "shared/media"))
LOG_DIR = Path(os.environ.get("LOG_DIR", API_ROOT / "shared/logs"))
APP_VERSION = os.environ.get("APP_VERSION", "0.0.0")

LOG_DIR.mkdir(parents=True, exist_ok=True)
logging.basicConfig(filename=LOG_DIR / "app.log", level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(message)s")
log = logging.getLogger("sgp_api")
engine = create_engine(DATABASE_URL, connect_args={"check_same_thread": False})


class Item(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=200)
    note: str = ""


@asynccontextmanager
async def lifespan(_app: FastAPI):
    SQLModel.metadata.create_all(engine)
    with engine.connect() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
    log.info("SGP API %s started (db %s)", APP_VERSION, DATABASE_URL)
    yield


app = FastAPI(title="SGP API", version=APP_VERSION, lifespan=lifespan)


@app.get("/health")
def health():
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = "ok"
    except Exception as e:  # report, do not crash, so the probe sees why
        db = f"error: {e}"
    body = {"status": "ok" if db == "ok" else "degraded", "version": APP_VERSION, "database": db}
    if db != "ok":
        raise HTTPException(status_code=503, detail=body)
    return body


@app.post("/items", status_code=201)
def create_item(item: Item) -> Item:
    item.id = None
    with Session(engine) as s:
        s.add(item)
        s.commit()
        s.refresh(item)
        return item


@app.get("/items")
def list_items() -> list[Item]:
    with Session(engine) as s:
        return list(s.exec(select(Item).order_by(Item.id)))
