from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from stratus_db import AuditManager, ConversationManager, Database, MemoryManager, UserManager
from stratus_db.logging import LOGGER_NAME
from tests.fixtures.chat_completions import ChatCompletionsStub, chat_completions_stub
from tests.fixtures.clock import ManualClock
from tests.fixtures.databases import empty_all_tables, settings_for, sqlite_url, throwaway_postgres_database

BACKENDS = ["sqlite", "postgresql"]

# No .env is read anywhere in the test session (this process, the CLI run in it, the processes it starts): a
# developer's file must not change what a test sees. Tests of the .env file set STRATUS_ENV_FILE themselves.
os.environ["STRATUS_ENV_FILE"] = ""
# The session's encryption keys come from tests/fixtures/databases.py (imported above), for every process it starts.


@pytest.fixture(autouse=True)
def _library_logger_as_found() -> Iterator[None]:
    """The `stratus_db` logger's handlers and level as each test found them: a CLI command configures JSON lines
    for its process, which a test runs in the test process."""
    library = logging.getLogger(LOGGER_NAME)
    handlers, level = list(library.handlers), library.level
    yield
    library.handlers[:] = handlers
    library.setLevel(level)


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
async def postgresql_only(postgresql_db: Database) -> AsyncIterator[Database]:
    """The session's PostgreSQL database, for a test of what only PostgreSQL has; emptied after it, as `db` is."""
    yield postgresql_db
    await empty_all_tables(postgresql_db)


@pytest.fixture
def clock(db: Database, monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """Take over the database's clock for this test; `clock.advance(hours=25)` moves time forward."""
    manual = ManualClock()
    monkeypatch.setattr(db, "clock", manual)
    return manual


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatCompletionsStub]:
    """A local server speaking the Chat Completions API (tests/fixtures/chat_completions.py)."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)  # the stub is on localhost: never through a proxy
    with chat_completions_stub() as server:
        yield server


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show how many tests ran on each backend, so a run that silently left PostgreSQL out is visible."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            parameters = nodeid.rpartition("[")[2].rstrip("]").split("-") if nodeid.endswith("]") else []
            # A parametrized test names its backend; a test written for one backend says so in its name.
            backend = next((name for name in BACKENDS if name in parameters), None) or next(
                (name for name in BACKENDS if name[:6] in nodeid.lower()), None
            )
            if backend is not None:
                counts.setdefault(backend, {}).setdefault(outcome, 0)
                counts[backend][outcome] += 1
    terminalreporter.section("tests per backend")
    for backend in BACKENDS:
        summary = (
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.get(backend, {}).items())) or "none"
        )
        terminalreporter.write_line(f"{backend}: {summary}")
