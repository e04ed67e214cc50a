"""Alembic environment: runs on a connection handed over by stratus_db, or on DATABASE_URL from the command line;
offline (--sql) for the URL handed over, or DATABASE_URL."""

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


def _options(dialect_name: str) -> dict[str, Any]:
    """The same comparison as the drift check (schema.COMPARISON_OPTIONS: only this project's tables), online and
    offline."""
    return {
        "target_metadata": Base.metadata,
        "render_item": _render_item,
        **COMPARISON_OPTIONS,
        "render_as_batch": dialect_name == "sqlite",
    }


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    """`stratus-db migrate --sql`: the migrations' SQL for the database's dialect, written out, not run (the URL
    handed over by stratus_db, or DATABASE_URL); nothing connects."""
    url = context.config.attributes.get("url") or load_settings().database_url
    context.configure(url=url, literal_binds=True, **_options(url.get_backend_name()))
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_settings() -> None:
    url = load_settings().database_url
    # As the library's own connections: revision 0011's trigger leaves the migrations' data changes to them, as it
    # does when `stratus-db migrate` runs them, rather than auditing each row as an outside write.
    options = (
        {"connect_args": {"server_settings": {"application_name": "stratus_db"}}}
        if url.get_backend_name() == "postgresql"
        else {}
    )
    engine = create_async_engine(url, **options)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    _run(given)
elif context.is_offline_mode():
    _run_offline()
else:
    asyncio.run(_run_from_settings())
