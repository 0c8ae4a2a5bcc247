"""HTTP API. Run with ``uvicorn sgp_api.main:app``."""

import logging
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from . import __version__
from .db import get_session
from .models import Item, ItemCreate, ItemPublic

log = logging.getLogger(__name__)

app = FastAPI(title="SGP API", version=__version__)

SessionDep = Annotated[Session, Depends(get_session)]


@app.get("/health")
def health(session: SessionDep):
    try:
        session.connection().execute(text("SELECT 1"))
    except SQLAlchemyError:
        log.exception("health check: database unreachable")
        return JSONResponse(status_code=503, content={"status": "unavailable"})
    return {"status": "ok"}


@app.post("/items", status_code=201, response_model=ItemPublic)
def create_item(item: ItemCreate, session: SessionDep) -> Item:
    db_item = Item.model_validate(item)
    session.add(db_item)
    session.commit()
    session.refresh(db_item)
    return db_item


@app.get("/items", response_model=list[ItemPublic])
def list_items(session: SessionDep) -> list[Item]:
    return list(session.exec(select(Item).order_by(Item.id)))
