"""`stratus-db` commands, run in-process through Typer's runner against real databases."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from stratus_db import (
    AnalyticsManager,
    ApiKeyManager,
    AuditManager,
    ConversationManager,
    Database,
    MemoryManager,
    Principal,
    PrincipalKind,
    Settings,
    UserManager,
    ValidationError,
)
from stratus_db.api.auth import principal_of
from stratus_db.audit.sealing import rewrite_permit
from stratus_db.cli import app
from stratus_db.config import load_settings
from stratus_db.kit.models import table_of
from stratus_db.models import AuditRow
from stratus_db.revisions import revision_ids
from stratus_db.schema import head_revision
from stratus_db.security.crypto import new_key_entry
from tests.conftest import BACKENDS
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


# -- operator commands, on both backends --------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[1] / "bench" / "data" / "conversas-aviacao.jsonl"


async def invoke(*args: str, input: str | None = None) -> Result:
    """Run a command in a worker thread: it runs its own event loop, away from the test's."""
    return await asyncio.to_thread(runner.invoke, app, list(args), input=input)


@pytest.fixture(params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[str]:
    """A database of its own for each test, migrated to head, that the commands find in DATABASE_URL."""
    if request.param == "postgresql":
        async with throwaway_postgres_database() as url:
            monkeypatch.setenv("DATABASE_URL", url)
            yield url
    else:
        url = sqlite_url(tmp_path / "operator.db")
        db = Database(settings_for(url))
        await db.migrate()
        await db.close()
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


async def revision_of(url: str) -> str | None:
    db = Database(settings_for(url))
    try:
        return await db.schema_revision()
    finally:
        await db.close()


def previous_of(revision: str) -> str:
    ids = revision_ids()
    return ids[ids.index(revision) + 1]


async def test_db_current_history_and_check_at_head(database_url: str) -> None:
    head = head_revision()
    current = await invoke("db", "current")
    assert current.exit_code == 0, current.output
    assert current.stdout.strip() == f"{head} (head)"

    history = await invoke("db", "history")
    assert history.exit_code == 0, history.output
    lines = history.stdout.splitlines()
    assert len(lines) == len(revision_ids())
    assert lines[0].startswith(f"{previous_of(head)} -> {head} (head) (current), ")
    assert lines[-1].startswith("<base> -> 0001, ")
    assert sum("(current)" in line for line in lines) == 1

    check = await invoke("db", "check")
    assert check.exit_code == 0, check.output
    assert check.stdout.splitlines() == [f"revision {head} (head)", "the schema matches the models"]


async def test_db_current_and_check_on_an_empty_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path / "empty.db"))
    current = await invoke("db", "current")
    assert current.exit_code == 0, current.output
    assert current.stdout.startswith("none: the database is empty")
    check = await invoke("db", "check")
    assert check.exit_code == 1
    assert "run `stratus-db migrate`" in check.stdout
    assert await revision_of(sqlite_url(tmp_path / "empty.db")) is None, "neither command migrates"


async def test_downgrade_keeps_the_rows_and_migrate_brings_the_schema_back(database_url: str) -> None:
    """Down to 0002 rebuilds conversations and messages on SQLite: with foreign keys on, dropping the old
    conversations table would have deleted every message."""
    db = Database(settings_for(database_url))
    try:
        user = await create_user(UserManager(db))
        conversation = await ConversationManager(db).create_conversation(user.user_id, "SBKP–SBRP")
        await ConversationManager(db).add_message(conversation.conversation_id, user.user_id, "METAR SBKP?")
    finally:
        await db.close()

    down = await invoke("db", "downgrade", "0002", "--yes")
    assert down.exit_code == 0, down.output
    assert down.stdout.startswith(f"schema at revision 0002 ({head_revision()} → 0002)")
    assert await revision_of(database_url) == "0002"
    assert await count_rows_at(database_url, "messages") == 1

    current = await invoke("db", "current")
    assert current.stdout.strip() == f"0002 (head is {head_revision()}: run `stratus-db migrate`)"
    history = await invoke("db", "history")
    assert next(line for line in history.stdout.splitlines() if "(current)" in line).startswith(
        "0001 -> 0002 "
    )
    check = await invoke("db", "check")
    assert check.exit_code == 1
    assert check.stdout.startswith(f"revision 0002, head is {head_revision()}")

    up = await invoke("migrate")
    assert up.exit_code == 0, up.output
    assert up.stdout.strip() == f"schema at revision {head_revision()} (0002 → {head_revision()})"
    assert (await invoke("db", "check")).exit_code == 0
    db = Database(settings_for(database_url))
    try:
        messages = await ConversationManager(db).get_messages(conversation.conversation_id, user.user_id)
        assert [(m.seq, m.content) for m in messages] == [(1, "METAR SBKP?")]
    finally:
        await db.close()


async def count_rows_at(url: str, table: str) -> int:
    db = Database(settings_for(url))
    try:
        async with db.engine.connect() as conn:  # not db.transaction(): that would migrate the embedded file
            return int((await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        await db.close()


async def test_a_downgrade_a_migration_refuses_changes_nothing(database_url: str) -> None:
    """Below 0003 packed (archived) message bodies could not be kept: revision 0003's downgrade refuses."""
    db = Database(settings_for(database_url))
    try:
        user = await create_user(UserManager(db))
        conversation = await ConversationManager(db).create_conversation(user.user_id, "Arquivada")
        await ConversationManager(db).add_message(
            conversation.conversation_id, user.user_id, "TAF SBGR " * 20
        )
        await ConversationManager(db).archive_conversation(conversation.conversation_id, user.user_id)
    finally:
        await db.close()
    result = await invoke("db", "downgrade", "0002", "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: the downgrade to 0002 was refused: unpack the archived conversations"
    )
    assert result.stderr.rstrip().endswith("nothing was changed")
    assert await revision_of(database_url) == head_revision()
    assert (await invoke("db", "check")).exit_code == 0


async def test_downgrade_asks_first_and_a_no_changes_nothing(database_url: str) -> None:
    head = head_revision()
    refused = await invoke("db", "downgrade", previous_of(head), input="n\n")
    assert refused.exit_code == 1
    assert f"from revision {head} to {previous_of(head)}?" in refused.output
    assert make_url(database_url).render_as_string(hide_password=True) in refused.output, "names the database"
    assert await revision_of(database_url) == head

    no_answer = await invoke("db", "downgrade", previous_of(head))  # no terminal, nobody to answer
    assert no_answer.exit_code == 1
    assert await revision_of(database_url) == head

    accepted = await invoke("db", "downgrade", previous_of(head), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert await revision_of(database_url) == previous_of(head)


async def test_downgrade_to_base_leaves_no_table_and_migrate_rebuilds_them(database_url: str) -> None:
    down = await invoke("db", "downgrade", "base", "--yes")
    assert down.exit_code == 0, down.output
    assert await revision_of(database_url) is None
    up = await invoke("migrate")
    assert up.stdout.strip() == f"schema at revision {head_revision()} (empty → {head_revision()})"
    assert (await invoke("db", "check")).exit_code == 0


@pytest.mark.parametrize(
    ("revision", "complaint"),
    [
        ("zz", "revision must be a revision id (one of "),
        ("9999", "revision must be a revision id"),
    ],
)
async def test_downgrade_to_an_unknown_revision_is_one_error_line(
    database_url: str, revision: str, complaint: str
) -> None:
    result = await invoke("db", "downgrade", revision, "--yes")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {complaint}")
    assert len(result.stderr.splitlines()) == 1
    assert await revision_of(database_url) == head_revision()


async def test_downgrade_refuses_to_go_forward(database_url: str) -> None:
    assert (await invoke("db", "downgrade", "0003", "--yes")).exit_code == 0
    result = await invoke("db", "downgrade", "0004", "--yes")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: revision 0004 is not older than the database's revision 0003: a downgrade only goes back "
        "(`stratus-db migrate` upgrades)"
    )
    assert await revision_of(database_url) == "0003"


async def test_the_library_refuses_a_revision_that_is_not_text(database_url: str) -> None:
    db = Database(settings_for(database_url))
    try:
        with pytest.raises(ValidationError, match="revision must be a revision id"):
            await db.downgrade(5)  # type: ignore[arg-type]
        assert await db.schema_revision() == head_revision()
    finally:
        await db.close()


async def test_migrate_prints_nothing_to_do_at_head(database_url: str) -> None:
    result = await invoke("migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"schema at revision {head_revision()} (already at head: nothing to do)"


async def test_migrate_sql_is_reviewable_sql_that_builds_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    # Written without any server: the URL points at a port where nothing listens.
    monkeypatch.setenv("DATABASE_URL", "postgresql://operator:s3cret@127.0.0.1:1/stratus")
    result = await invoke("migrate", "--sql")
    assert result.exit_code == 0, result.output
    sql = result.stdout
    assert sql.startswith("BEGIN;")
    assert sql.rstrip().endswith("COMMIT;")
    assert "CREATE TABLE users" in sql
    assert f"UPDATE alembic_version SET version_num='{head_revision()}'" in sql

    partial = await invoke("migrate", "--sql", "--from", previous_of(head_revision()))
    assert partial.exit_code == 0, partial.output
    assert "CREATE TABLE users" not in partial.stdout
    assert f"Running upgrade {previous_of(head_revision())} -> {head_revision()}" in partial.stdout

    # What the DBA reviews is what `migrate` would have done: run it, and the database is at head, without drift.
    async with throwaway_postgres_database(migrate=False) as url:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()
        monkeypatch.setenv("DATABASE_URL", url)
        check = await invoke("db", "check")
        assert check.exit_code == 0, check.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--from", "zz"], "error: from_revision must be a revision id"),
        (["--from", "0001"], "error: the upgrade cannot be written as SQL: the upgrade from 0001 folds"),
    ],
)
def test_migrate_sql_refuses_what_it_cannot_write(
    monkeypatch: pytest.MonkeyPatch, args: list[str], complaint: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://operator@127.0.0.1:1/stratus")
    result = runner.invoke(app, ["migrate", "--sql", *args])
    assert result.exit_code == 1
    assert result.stderr.startswith(complaint)
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_migrate_sql_is_for_postgresql(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url(tmp_path / "never.db"))
    result = runner.invoke(app, ["migrate", "--sql"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: migrate --sql writes PostgreSQL's SQL")
    assert not (tmp_path / "never.db").exists()
    assert runner.invoke(app, ["migrate", "--from", "0004"]).exit_code == 1, "--from only goes with --sql"


def test_config_shows_the_effective_settings_with_secrets_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://stratus:pa55word@10.0.0.5:5432/stratus_ia")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abcdef")
    monkeypatch.setenv("STRATUS_POOL_SIZE", "25")
    monkeypatch.setenv("STRATUS_MEMORY_SLIDING_TIERS", '["short_term"]')
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "pa55word" not in result.output
    assert "sk-live" not in result.output
    lines = result.stdout.splitlines()
    assert "DATABASE_URL=postgresql+asyncpg://stratus:***@10.0.0.5:5432/stratus_ia" in lines
    assert "OPENAI_API_KEY=***" in lines
    assert "STRATUS_POOL_SIZE=25" in lines
    assert 'STRATUS_MEMORY_SLIDING_TIERS=["short_term"]' in lines
    assert "OPENAI_BASE_URL=" in lines

    as_json = json.loads(runner.invoke(app, ["config", "--json"]).stdout)
    assert as_json["DATABASE_URL"] == "postgresql+asyncpg://stratus:***@10.0.0.5:5432/stratus_ia"
    assert as_json["LOG_LEVEL"] == "INFO"
    assert set(as_json) == set(Settings.model_fields)


def test_config_shows_the_embedded_file_when_database_url_is_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path))
    lines = runner.invoke(app, ["config"]).stdout.splitlines()
    assert f"DATABASE_URL=sqlite+aiosqlite:///{tmp_path.resolve() / 'stratus.db'}" in lines
    assert "OPENAI_API_KEY=" in lines
    monkeypatch.setenv("STRATUS_POOL_SIZE", "0")
    bad = runner.invoke(app, ["config"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: invalid configuration: STRATUS_POOL_SIZE")


async def test_purge_expired_reports_progress_on_both_backends(database_url: str) -> None:
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    db = Database(settings_for(database_url), clock=lambda: an_hour_ago)
    try:
        user = await create_user(UserManager(db))
        for index in range(5):
            await MemoryManager(db).store_memory(user.user_id, f"gone{index}", "x", "short_term", 0.5, ttl=60)
        await MemoryManager(db).store_memory(user.user_id, "kept", "x", "long_term", 0.5)
    finally:
        await db.close()

    result = await invoke("purge-expired", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "purged 5 expired memories"
    assert [line for line in result.stderr.splitlines() if line.startswith("purging")] == [
        "purging expired memories: 2 deleted",
        "purging expired memories: 4 deleted",
        "purging expired memories: 5 deleted",
    ]
    assert await count_rows_at(database_url, "memory_entries") == 1


async def test_apply_retention_dry_run_then_progress_on_both_backends(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    forty_days_ago = datetime.now(UTC) - timedelta(days=40)
    db = Database(settings_for(database_url), clock=lambda: forty_days_ago)
    try:
        user = await create_user(UserManager(db))
        for index in range(5):
            stale = await ConversationManager(db).create_conversation(user.user_id, f"antiga {index}")
            await ConversationManager(db).add_message(stale.conversation_id, user.user_id, "METAR SBKP?")
    finally:
        await db.close()
    db = Database(settings_for(database_url))
    try:
        kept = await ConversationManager(db).create_conversation(user.user_id, "de hoje")
    finally:
        await db.close()
    monkeypatch.setenv("STRATUS_RETENTION_CONVERSATIONS_DAYS", "30")

    dry = await invoke("apply-retention", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert lines[0].startswith(
        "conversations: 5 would be purged with 5 messages (no activity for 30 days: before "
    )
    assert lines[1:] == [
        "memories: kept for ever (STRATUS_RETENTION_MEMORIES_DAYS is 0)",
        "inactive accounts: kept for ever (STRATUS_RETENTION_INACTIVE_ACCOUNTS_DAYS is 0)",
        "dry run: nothing was deleted",
    ]
    assert "applying retention" not in dry.stderr
    assert await count_rows_at(database_url, "conversations") == 6

    bad = await invoke("apply-retention", "--batch-size", "0")
    assert bad.exit_code == 2
    assert await count_rows_at(database_url, "conversations") == 6

    result = await invoke("apply-retention", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(
        "conversations: 5 purged with 5 messages (no activity for 30"
    )
    assert [line for line in result.stderr.splitlines() if line.startswith("applying")] == [
        "applying retention to conversations: 2 deleted",
        "applying retention to conversations: 4 deleted",
        "applying retention to conversations: 5 deleted",
    ]
    assert await count_rows_at(database_url, "conversations") == 1
    assert await count_rows_at(database_url, "messages") == 0
    db = Database(settings_for(database_url))
    try:
        assert await ConversationManager(db).get_conversation(kept.conversation_id, user.user_id) is not None
        purges = (await AuditManager(db).query(action="purge", table="conversations")).items
        assert len(purges) == 5
        assert {event.actor for event in purges} == {"system:stratus-db"}
        assert {event.purpose for event in purges} == {"apply-retention"}
    finally:
        await db.close()


async def existing_user(url: str) -> uuid.UUID:
    db = Database(settings_for(url))
    try:
        return (await create_user(UserManager(db))).user_id
    finally:
        await db.close()


async def test_import_messages_creates_one_conversation_per_conversation_of_the_corpus(
    database_url: str,
) -> None:
    user_id = await existing_user(database_url)
    lines = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    expected: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        expected.setdefault(line["conversation_id"], []).append(line)

    result = await invoke("import-messages", str(CORPUS), "--user-id", str(user_id), "--batch-size", "100")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.splitlines()[-1] == f"imported {len(lines)} messages into {len(expected)} conversations"
    )
    progress = [line for line in result.stderr.splitlines() if line.startswith("importing")]
    assert progress[-1] == f"importing messages: {len(lines)}/{len(lines)} messages"

    mapping = dict(line.split(" → ") for line in result.stdout.splitlines()[:-1])
    assert list(mapping) == list(expected), "one conversation per label, in the file's order"
    db = Database(settings_for(database_url))
    try:
        conversations = ConversationManager(db)
        for label, rows in expected.items():
            conversation_id = mapping[label].split(":")[0]
            conversation = await conversations.get_conversation(conversation_id, user_id)
            assert conversation is not None
            assert conversation.title == rows[0]["title"]
            assert conversation.message_count == len(rows)
            assert conversation.total_tokens == sum(int(str(row["tokens_used"])) for row in rows)
            stored = await conversations.get_messages(conversation_id, user_id, limit=100)
            assert [m.seq for m in stored] == list(range(1, len(rows) + 1)), "gap-free, in the file's order"
            assert [(m.content, m.message_type, m.agent_name, m.response_time) for m in stored] == [
                (row["content"], row["message_type"], row["agent_name"], row["response_time"]) for row in rows
            ]
    finally:
        await db.close()


async def test_import_messages_appends_to_an_existing_conversation(database_url: str, tmp_path: Path) -> None:
    db = Database(settings_for(database_url))
    try:
        user = await create_user(UserManager(db))
        conversation = await ConversationManager(db).create_conversation(user.user_id, "Plano de voo")
        await ConversationManager(db).add_message(conversation.conversation_id, user.user_id, "Olá")
    finally:
        await db.close()
    one = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if '"conv-03"' in line]
    file = tmp_path / "conv-03.jsonl"
    file.write_text("\n".join(one) + "\n", encoding="utf-8")

    result = await invoke(
        "import-messages", str(file), "--user-id", str(user.user_id),
        "--conversation-id", str(conversation.conversation_id), "--batch-size", "7",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"conv-03 → {conversation.conversation_id}: {len(one)} messages (seq 2–{len(one) + 1})"
    )
    db = Database(settings_for(database_url))
    try:
        stored = await ConversationManager(db).get_messages(
            conversation.conversation_id, user.user_id, limit=100
        )
        assert [m.seq for m in stored] == list(range(1, len(one) + 2))
        assert stored[1].content == json.loads(one[0])["content"]
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "error: cannot read {file}: No such file or directory"),
        ('{"content": "ok"}\n\n{"content": "quebrada"\n', "error: line 3: not valid JSON"),
        ('{"content": "ok"}\n["content"]\n', "error: line 2: must be a JSON object"),
        (
            '{"content": "ok"}\n{"content": "x", "message_type": "robot"}\n',
            "error: line 2: invalid MessageImport",
        ),
        (
            '{"content": "ok", "colour": "blue"}\n',
            "error: line 1: invalid MessageImport: colour: unknown argument",
        ),
        (
            '{"content": "a", "seq": 2}\n{"content": "b", "seq": 1}\n',
            "error: line 2: seq 1 does not follow 2",
        ),
        ('{"content": "a", "created_at": "ontem"}\n', "error: line 1: created_at must be an ISO 8601 time"),
        ('{"content": "a", "created_at": "2026-03-14T12:00:00"}\n', "error: line 1: invalid MessageImport"),
        (
            '{"content": "a", "created_at": "2026-03-14T12:00:00+00:00"}\n'
            '{"content": "b", "created_at": "2026-03-14T11:59:59+00:00"}\n',
            "error: line 2: created_at is earlier than the line before it",
        ),
    ],
)
async def test_import_messages_refuses_bad_input_with_one_line_and_writes_nothing(
    database_url: str, tmp_path: Path, content: str | None, complaint: str
) -> None:
    user_id = await existing_user(database_url)
    file = tmp_path / "history.jsonl"
    if content is not None:
        file.write_text(content, encoding="utf-8")
    result = await invoke("import-messages", str(file), "--user-id", str(user_id))
    assert result.exit_code == 1
    assert result.stderr.startswith(complaint.format(file=file)), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
    assert await count_rows_at(database_url, "conversations") == 0
    assert await count_rows_at(database_url, "messages") == 0


async def test_import_messages_refuses_an_unknown_user_or_conversation(
    database_url: str, tmp_path: Path
) -> None:
    unknown = "01a24e00-0000-7000-8000-000000000000"
    result = await invoke("import-messages", str(CORPUS), "--user-id", unknown)
    assert result.exit_code == 1
    assert result.stderr == f"error: --user-id {unknown}: no such user\n"
    result = await invoke("import-messages", str(CORPUS), "--user-id", "not-a-uuid")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --user-id must be a UUID")

    db = Database(settings_for(database_url))
    try:
        user = await create_user(UserManager(db))
        archived = await ConversationManager(db).create_conversation(user.user_id, "Antiga")
        await ConversationManager(db).archive_conversation(archived.conversation_id, user.user_id)
    finally:
        await db.close()
    several = await invoke(
        "import-messages", str(CORPUS), "--user-id", str(user.user_id), "--conversation-id", unknown
    )
    assert several.exit_code == 1
    assert several.stderr.startswith(
        "error: line 30: conversation_id 'conv-02' differs from 'conv-01' (line 1): the file holds several"
    )
    file = tmp_path / "one.jsonl"
    file.write_text('{"content": "Bom dia"}\n', encoding="utf-8")
    result = await invoke(
        "import-messages", str(file), "--user-id", str(user.user_id), "--conversation-id", unknown
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: --conversation-id {unknown}: the user has no such conversation\n"
    result = await invoke(
        "import-messages", str(file), "--user-id", str(user.user_id),
        "--conversation-id", str(archived.conversation_id),
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: --conversation-id {archived.conversation_id}: the conversation is"
    )
    assert await count_rows_at(database_url, "messages") == 0
    assert await count_rows_at(database_url, "conversations") == 1


async def test_the_downgrade_prompt_shows_no_password_given_in_the_urls_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq and asyncpg take the password as a query parameter too (`?password=…`): the prompt masks it, as
    `stratus-db config` does."""
    async with throwaway_postgres_database() as url:
        monkeypatch.setenv(
            "DATABASE_URL", f"{url}?password=s3cr3t-query"
        )  # trust auth: the password is unused
        refused = await invoke("db", "downgrade", previous_of(head_revision()), input="n\n")
    assert refused.exit_code == 1
    assert "Downgrade postgresql" in refused.output
    assert "s3cr3t-query" not in refused.output


async def test_export_user_writes_the_document_and_audits_it(database_url: str, tmp_path: Path) -> None:
    owner = await existing_user(database_url)
    target = tmp_path / "export.json"

    result = await invoke("export-user", str(owner), "--output", str(target), "--purpose", "ticket-4711")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"exported user {owner} to {target}")
    document = json.loads(target.read_text(encoding="utf-8"))
    assert (document["format"], document["user_id"]) == ("stratus-db/user-export", str(owner))
    exports = [event for event in document["audit_events"] if event["action"] == "export"]
    # Someone else acted (the operator): the person sees the kind of actor, not who.
    assert [(event["actor"], event["purpose"]) for event in exports] == [("system", "ticket-4711")]
    missing = await invoke("export-user", str(uuid.uuid4()), "--output", str(tmp_path / "none.json"))
    assert missing.exit_code == 1
    assert "does not exist" in missing.stderr
    assert not (tmp_path / "none.json").exists()


async def test_rotate_keys_moves_every_data_key_to_the_new_key_with_progress(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_ids = [await existing_user(database_url) for _ in range(3)]
    old_entry = os.environ["STRATUS_ENCRYPTION_KEYS"]
    new_entry = new_key_entry("kcli")
    monkeypatch.setenv("STRATUS_ENCRYPTION_KEYS", f"{new_entry},{old_entry}")

    result = await invoke("rotate-keys", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "active key kcli: 3 data keys rewrapped, 0 already under it",
        "no data key is under an older key",
    ]
    assert [line for line in result.stderr.splitlines() if line.startswith("rewrapping")] == [
        "rewrapping data keys: 2 users",
        "rewrapping data keys: 3 users",
    ]
    again = await invoke("rotate-keys")
    assert again.stdout.splitlines()[0] == "active key kcli: 0 data keys rewrapped, 3 already under it"
    assert (await invoke("rotate-keys", "--batch-size", "0")).exit_code == 2

    monkeypatch.setenv("STRATUS_ENCRYPTION_KEYS", new_entry)  # the old key retired: everything still reads
    db = Database(load_settings())
    try:
        assert all([await UserManager(db).get_user(user_id) for user_id in user_ids])
    finally:
        await db.close()


async def test_audit_seal_checkpoint_and_verify_against_the_exported_heads(
    database_url: str, tmp_path: Path
) -> None:
    await existing_user(database_url)
    await existing_user(database_url)

    sealed = await invoke("audit", "seal", "--batch-size", "1")
    assert sealed.exit_code == 0, sealed.output
    assert sealed.stdout.startswith("sealed 2 audit rows in 2 checkpoint(s); head ")
    assert "nothing to seal" in (await invoke("audit", "seal")).stdout
    heads = tmp_path / "heads.json"
    exported = await invoke("audit", "checkpoint", "--export", str(heads))
    assert exported.stdout.strip() == f"2 checkpoint(s) written to {heads}"
    assert [c["last_position"] for c in json.loads(heads.read_text())["checkpoints"]] == [1, 2]

    verified = await invoke("audit", "verify", "--heads", str(heads))
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.splitlines() == [
        "2 sealed rows and 2 checkpoints checked; 0 rows redacted by erasures; 0 rows not sealed yet",
        "the audit trail matches its seals",
    ]

    db = Database(settings_for(database_url))
    try:
        async with db.engine.begin() as conn, rewrite_permit(conn, "tampering"):
            await conn.execute(table_of(AuditRow).update().values(actor="system:intruso"))
    finally:
        await db.close()
    tampered = await invoke("audit", "verify")
    assert tampered.exit_code == 1
    assert [line.split(",")[0] for line in tampered.stdout.splitlines()[1:]] == [
        "modified: position 1",
        "modified: position 2",
    ]
    bad = await invoke("audit", "verify", "--heads", str(tmp_path / "missing.json"))
    assert bad.exit_code == 1
    assert "not an exported checkpoint file" in bad.stderr


async def test_audit_report_in_each_format(database_url: str, tmp_path: Path) -> None:
    await existing_user(database_url)
    today = datetime.now(UTC).date()
    window = ["--since", f"{today - timedelta(days=1)}", "--until", f"{today + timedelta(days=1)}"]

    as_json = await invoke("audit", "report", *window)
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert (document["rows"], document["by_action"], document["by_principal_kind"]) == (
        1,
        {"create": 1},
        {"system": 1},
    )
    as_csv = await invoke("audit", "report", *window, "--format", "csv")
    assert as_csv.stdout.splitlines()[:2] == ["section,key,count", "total,rows,1"]
    page = tmp_path / "report.html"
    as_html = await invoke("audit", "report", *window, "--format", "html", "--output", str(page))
    assert as_html.stdout.strip() == f"audit report (1 rows) written to {page}"
    assert "<td>by_table</td><td>users</td><td>1</td>" in page.read_text()
    backwards = await invoke(
        "audit", "report", "--since", f"{today}", "--until", f"{today - timedelta(days=1)}"
    )
    assert backwards.exit_code == 1
    assert "until" in backwards.stderr


async def test_audit_purge_says_what_retention_does(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await existing_user(database_url)
    assert (await invoke("audit", "purge")).stdout.strip() == (
        "the audit trail is kept for ever (STRATUS_AUDIT_RETENTION_DAYS is 0 and no STRATUS_AUDIT_RETENTION_RULES)"
    )
    await invoke("audit", "seal")
    monkeypatch.setenv("STRATUS_AUDIT_RETENTION_DAYS", "30")
    monkeypatch.setenv("STRATUS_AUDIT_RETENTION_RULES", '{"access:deny": 0, "*:read": 730}')
    dry = await invoke("audit", "purge", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.strip() == (
        "0 audit rows in 0 checkpoint(s) would be purged "
        "(retention in days: access:deny: for ever, *:read: 730, otherwise 30)"
    )


def test_create_token_names_the_principal_the_service_will_see() -> None:
    settings = load_settings()
    user = uuid.uuid4()
    cases = {
        ("--kind", "user", "--id", str(user)): Principal.for_user(user),
        ("--kind", "agent", "--id", "briefing", "--acting-for", str(user)): Principal.agent("briefing", user),
        ("--kind", "auditor", "--id", "dpo", "--days", "1"): Principal(kind=PrincipalKind.auditor, id="dpo"),
    }
    for args, principal in cases.items():
        result = runner.invoke(app, ["create-token", *args])
        assert result.exit_code == 0, result.output
        assert principal_of(settings, result.stdout.strip()) == principal
    for args in (
        ("--kind", "user", "--id", "não-é-uuid"),
        ("--kind", "agent", "--id", "briefing"),
        ("--kind", "admin", "--id", "ops", "--days", "0"),
        ("--kind", "admin", "--id", "ops", "--days", "400"),
    ):
        result = runner.invoke(app, ["create-token", *args])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("error: ")


async def test_api_keys_are_made_listed_and_revoked_from_the_command_line(database_url: str) -> None:
    made = await invoke(
        "create-api-key", "--name", "relatórios", "--kind", "system", "--id", "relatorios", "--days", "30"
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("sk_stratus_")
    assert "not shown again" in made.stderr
    db = Database(settings_for(database_url))
    try:
        assert await ApiKeyManager(db).principal_for(token) == Principal.system("relatorios")
        listed = await invoke("list-api-keys")
        [line] = listed.stdout.splitlines()
        key_id = line.split()[0]
        assert "system:relatorios" in line
        assert "expires" in line
        assert token.rsplit("_", 1)[1] not in listed.stdout
        revoked = await invoke("revoke-api-key", key_id)
        assert revoked.stdout.strip() == f"key {key_id} (relatórios) revoked"
        assert await ApiKeyManager(db).principal_for(token) is None
        assert (await invoke("list-api-keys")).stdout == ""
        assert "revoked" in (await invoke("list-api-keys", "--all")).stdout
    finally:
        await db.close()
    refused = await invoke("create-api-key", "--name", "x", "--kind", "agent", "--id", "briefing")
    assert refused.exit_code == 1
    assert (await invoke("revoke-api-key", str(uuid.uuid4()))).exit_code == 1


async def test_rollup_and_the_metrics_report_in_each_format(database_url: str, tmp_path: Path) -> None:
    """Two users who wrote three days ago (in the metrics' zone): rolled up, then reported in JSON, CSV and HTML."""
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    db = Database(settings_for(database_url), clock=lambda: three_days_ago)
    try:
        for email in ("ana@aeroclube.com.br", "bia@aeroclube.com.br"):
            user = await UserManager(db).create_user("Piloto", email, "pilot")
            conversation = await ConversationManager(db).create_conversation(user.user_id, "voo")
            await ConversationManager(db).add_message(
                conversation.conversation_id, user.user_id, "METAR SBKP?"
            )
        day = AnalyticsManager(db).calendar.day_of(three_days_ago)
    finally:
        await db.close()

    rolled = await invoke("rollup")
    assert rolled.exit_code == 0, rolled.output
    yesterday = day + timedelta(days=2)
    assert rolled.stdout.strip() == (
        f"rolled up 3 days: the rollups hold every day through {yesterday} (America/Sao_Paulo)"
    )
    assert (await invoke("rollup")).stdout.startswith("rolled up 0 days"), "idempotent"
    today = datetime.now(UTC).date()
    not_over = await invoke("rollup", "--through", f"{today + timedelta(days=1)}")
    assert not_over.exit_code == 1
    assert "a day that is over" in not_over.stderr

    window = ["--since", f"{day}", "--until", f"{day}"]
    as_json = await invoke("report", *window)
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert (document["daily_active_users"], document["messages"], document["rolled_through"]) == (
        2,
        2,
        f"{yesterday}",
    )
    as_csv = (await invoke("report", *window, "--format", "csv")).stdout.splitlines()
    assert as_csv[0] == "figure,value"
    assert f"days[{day}].active_users,2" in as_csv
    page = tmp_path / "metrics.html"
    as_html = await invoke("report", *window, "--format", "html", "--output", str(page))
    assert as_html.stdout.strip() == f"metrics report ({day} to {day}) written to {page}"
    assert f'data-key="{day}" data-value="2"' in page.read_text()
    backwards = await invoke("report", "--since", f"{day}", "--until", f"{day - timedelta(days=1)}")
    assert backwards.exit_code == 1
    assert "until must be on or after since" in backwards.stderr
