from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stratus_db import AuditManager, ConversationManager, Database, MemoryManager, UserManager
from tests.fixtures.databases import empty_all_tables, settings_for, sqlite_url, throwaway_postgres_database

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    async with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
async def sqlite_file_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "stratus-test.db"
    db = Database(settings_for(sqlite_url(path)))
    await db.migrate()
    await db.close()
    return sqlite_url(path)


@pytest.fixture(scope="session")
async def postgresql_db(postgres_url: str) -> AsyncIterator[Database]:
    db = Database(settings_for(postgres_url))
    yield db
    await db.close()


@pytest.fixture(scope="session")
async def sqlite_db(sqlite_file_url: str) -> AsyncIterator[Database]:
    db = Database(settings_for(sqlite_file_url))
    yield db
    await db.close()


@pytest.fixture(scope="session", params=BACKENDS)
def session_db(request: pytest.FixtureRequest) -> Database:
    """Every test that uses the database runs once per backend."""
    db: Database = request.getfixturevalue(f"{request.param}_db")
    return db


@pytest.fixture
async def db(session_db: Database) -> AsyncIterator[Database]:
    """The session's database for this backend, emptied after each test."""
    yield session_db
    await empty_all_tables(session_db)


@pytest.fixture
def users(db: Database) -> UserManager:
    return UserManager(db)


@pytest.fixture
def memories(db: Database) -> MemoryManager:
    return MemoryManager(db)


@pytest.fixture
def conversations(db: Database) -> ConversationManager:
    return ConversationManager(db)


@pytest.fixture
def audit(db: Database) -> AuditManager:
    return AuditManager(db)
