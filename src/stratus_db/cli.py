"""`stratus-db`: migrate, demo, health, purge-expired."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from stratus_db.config import load_settings
from stratus_db.database import StratusPostgreSQLIntegration
from stratus_db.demo import run_demo
from stratus_db.errors import StratusError
from stratus_db.logging import configure_json
from stratus_db.memory.manager import MemoryManager

app = typer.Typer(
    help="Stratus.IA database layer. Configured by DATABASE_URL (unset: the embedded SQLite file)."
)

T = TypeVar("T")


def _run(action: Callable[[StratusPostgreSQLIntegration], Awaitable[T]]) -> T:
    """Run `action` on a database built from the environment; a StratusError becomes one line and exit code 1."""

    async def main() -> T:
        settings = load_settings()
        configure_json(settings.LOG_LEVEL)  # a command is an application: it prints the library's lines
        async with StratusPostgreSQLIntegration(settings) as db:
            return await action(db)

    try:
        return asyncio.run(main())
    except StratusError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from None


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the newest revision."""
    revision = _run(lambda db: db.migrate())
    typer.echo(f"schema at revision {revision}")


@app.command()
def demo() -> None:
    """Run the complete demonstration (create a user, a memory, a conversation; read back; show the audit)."""
    _run(run_demo)


@app.command()
def health() -> None:
    """Check the database: latency, pool, schema revision. Exit code 1 when unhealthy."""
    status = _run(lambda db: db.health_check())
    typer.echo(json.dumps(status.model_dump(), indent=2))
    if not status.healthy:
        raise typer.Exit(code=1)


@app.command("purge-expired")
def purge_expired(
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows deleted per transaction.")] = 1000,
) -> None:
    """Delete expired memories in bounded batches (schedule it: see docs/memory.md)."""
    deleted = _run(lambda db: MemoryManager(db).purge_expired(batch_size=batch_size))
    typer.echo(f"purged {deleted} expired memories")
