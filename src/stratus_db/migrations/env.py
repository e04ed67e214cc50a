"""Alembic environment: runs on a connection handed over by stratus_db, or on DATABASE_URL from the command line."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from stratus_db.config import load_settings
from stratus_db.kit.types import UTCDateTime
from stratus_db.models import Base
from stratus_db.schema import COMPARISON_OPTIONS


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import application code that may change later: write our column types as plain SQLAlchemy.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_item=_render_item,
        **COMPARISON_OPTIONS,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_settings() -> None:
    engine = create_async_engine(load_settings().database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
elif context.is_offline_mode():
    raise SystemExit(
        "offline (--sql) migrations are not supported: run `stratus-db migrate` against a database"
    )
else:
    asyncio.run(_run_from_settings())
