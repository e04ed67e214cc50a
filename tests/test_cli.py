"""`stratus-db` commands, run in-process through Typer's runner against real databases."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stratus_db import Database, MemoryManager, UserManager
from stratus_db.cli import app
from stratus_db.schema import head_revision
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database
from tests.fixtures.factories import create_user

runner = CliRunner()


async def test_migrate_brings_an_empty_postgres_database_to_head(monkeypatch: pytest.MonkeyPatch) -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        # The command runs its own event loop: run it in a worker thread, away from the test's loop.
        result = await asyncio.to_thread(runner.invoke, app, ["migrate"])
        assert result.exit_code == 0, result.output
        assert f"schema at revision {head_revision()}" in result.output
        db = Database(settings_for(url))
        try:
            assert (await db.health_check()).schema_revision == head_revision()
        finally:
            await db.close()


def test_health_on_the_embedded_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path))
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["healthy"] is True


def test_health_fails_with_exit_code_1_when_the_server_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/stratus")
    monkeypatch.setenv("STRATUS_RETRY_ATTEMPTS", "1")
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert "127.0.0.1:1" in report["error"]


def test_a_malformed_url_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u@h/db")
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: invalid configuration: DATABASE_URL")
    assert "Traceback" not in result.output


def test_demo_runs_on_the_embedded_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "Created user" in result.stdout
    assert "[2] meteorologia:" in result.stdout
    assert (tmp_path / "stratus.db").exists()


async def test_purge_expired_deletes_what_has_expired(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    db = Database(settings_for(sqlite_url(tmp_path / "stratus.db")), clock=lambda: an_hour_ago)
    try:
        user = await create_user(UserManager(db))
        await MemoryManager(db).store_memory(user.user_id, "gone", "x", "short_term", 0.5, ttl=60)
        await MemoryManager(db).store_memory(user.user_id, "kept", "x", "long_term", 0.5)
    finally:
        await db.close()

    result = await asyncio.to_thread(runner.invoke, app, ["purge-expired", "--batch-size", "50"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "purged 1 expired memories"
    assert runner.invoke(app, ["purge-expired", "--batch-size", "0"]).exit_code == 2
