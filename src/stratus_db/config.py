"""Settings, read from the environment by the CLI and by `StratusPostgreSQLIntegration()` without arguments."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from stratus_db.errors import ConfigurationError
from stratus_db.models.memory import MemoryType

DEFAULT_SQLITE_FILE = "stratus.db"
"""File name of the embedded database, inside `STRATUS_DATA_DIR` (default: the working directory)."""

_POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}


class Environment(StrEnum):
    development = "development"
    test = "test"
    staging = "staging"
    production = "production"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def normalize_database_url(raw: str) -> str:
    """Return `raw` with the async driver spelled out, or raise ConfigurationError naming DATABASE_URL.

    Accepted: `postgresql+asyncpg://`, `postgresql://`, `postgres://`, `sqlite+aiosqlite:///path`, `sqlite:///path`.
    """
    try:
        url = make_url(raw.strip())
    except ArgumentError as exc:
        raise ConfigurationError(
            f"DATABASE_URL is not a database URL ({exc}); expected e.g. "
            "postgresql+asyncpg://user:password@host:5432/dbname or sqlite+aiosqlite:///path/to/file.db"
        ) from None
    if url.drivername in _POSTGRES_DRIVERS:
        if not url.database:
            raise ConfigurationError("DATABASE_URL names no database: add /dbname after the host")
        return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    if url.drivername in _SQLITE_DRIVERS:
        if not url.database or url.database == ":memory:":
            raise ConfigurationError(
                "DATABASE_URL must name a SQLite file (sqlite+aiosqlite:///path/to/file.db); "
                "an in-memory database would vanish between connections"
            )
        return url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    raise ConfigurationError(
        f"DATABASE_URL uses the unsupported scheme {url.drivername!r}; accepted: "
        "postgresql+asyncpg, postgresql, postgres, sqlite+aiosqlite, sqlite"
    )


class Settings(BaseSettings):
    """Configuration of the data layer. Field names are the environment variables."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True, case_sensitive=True)

    DATABASE_URL: SecretStr | None = None
    """Unset: the embedded SQLite file `$STRATUS_DATA_DIR/stratus.db`."""
    STRATUS_DATA_DIR: Path = Path(".")
    LOG_LEVEL: LogLevel = LogLevel.INFO
    """The level of the JSON lines that the CLI and the service print (`stratus_db.logging.configure_json`); a host
    that configures logging itself decides the `stratus_db` logger's level."""
    STRATUS_LOG_SLOW_OPERATION_MS: Annotated[float, Field(gt=0)] = 1000.0
    """A call that takes longer logs a warning (every call logs a line only at DEBUG)."""
    ENVIRONMENT: Environment = Environment.development

    STRATUS_POOL_SIZE: Annotated[int, Field(ge=1, le=1000)] = 10
    STRATUS_POOL_MAX_OVERFLOW: Annotated[int, Field(ge=0, le=1000)] = 10
    STRATUS_POOL_TIMEOUT_S: Annotated[float, Field(gt=0, le=600)] = 30.0
    STRATUS_POOL_RECYCLE_S: Annotated[int, Field(ge=-1)] = 1800
    STRATUS_STATEMENT_TIMEOUT_MS: Annotated[int, Field(ge=0, le=3_600_000)] = 30_000
    """0 disables the server-side statement timeout (PostgreSQL); SQLite waits this long for a write lock."""
    STRATUS_CONNECT_TIMEOUT_S: Annotated[float, Field(gt=0, le=600)] = 10.0
    STRATUS_RETRY_ATTEMPTS: Annotated[int, Field(ge=1, le=10)] = 3
    STRATUS_RETRY_BACKOFF_S: Annotated[float, Field(ge=0, le=10)] = 0.05

    # Memory tiers (see docs/memory.md). A TTL of 0 means "never expires"; critical memories never expire.
    STRATUS_MEMORY_TTL_SHORT_TERM_S: Annotated[int, Field(ge=0)] = 24 * 3600
    STRATUS_MEMORY_TTL_MEDIUM_TERM_S: Annotated[int, Field(ge=0)] = 30 * 24 * 3600
    STRATUS_MEMORY_TTL_LONG_TERM_S: Annotated[int, Field(ge=0)] = 0
    STRATUS_MEMORY_SLIDING_TIERS: frozenset[MemoryType] = frozenset()
    """Tiers whose expiry a read pushes forward to now + the tier's TTL (JSON list, e.g. '["short_term"]')."""
    STRATUS_MEMORY_PROMOTE_TO_MEDIUM_ACCESSES: Annotated[int, Field(ge=1)] = 3
    STRATUS_MEMORY_PROMOTE_TO_LONG_ACCESSES: Annotated[int, Field(ge=1)] = 10
    STRATUS_MEMORY_PROMOTE_MIN_IMPORTANCE: Annotated[float, Field(ge=0, le=1)] = 0.3
    STRATUS_MEMORY_MAX_PER_USER: Annotated[int, Field(ge=1)] = 1000
    """Cap on one user's non-critical memories; storing one more evicts the least valuable."""
    STRATUS_MEMORY_RECENCY_HALF_LIFE_S: Annotated[float, Field(gt=0)] = 7 * 24 * 3600
    STRATUS_MEMORY_CACHE_MAX_ENTRIES: Annotated[int, Field(ge=0)] = 10_000
    """Memories kept in each process's get_memory cache; 0 turns the cache off."""
    STRATUS_MEMORY_CACHE_MAX_BYTES: Annotated[int, Field(ge=0)] = 32 * 1024 * 1024
    STRATUS_MEMORY_CACHE_FLUSH_INTERVAL_S: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How long access counts of cache hits may wait before they are written (close() writes them at once)."""

    # Conversation history (see docs/conversations.md).
    STRATUS_CONTEXT_CACHE_CONVERSATIONS: Annotated[int, Field(ge=0)] = 1000
    """Conversations whose newest messages each process keeps for get_context; 0 turns the cache off."""
    STRATUS_PACK_ARCHIVED_MESSAGES: bool = True
    """archive_conversation stores message bodies zstd-compressed unless told otherwise."""
    STRATUS_SUMMARY_THRESHOLD_TOKENS: Annotated[int, Field(ge=0)] = 8000
    """add_message folds older history into the summary once a conversation's unsummarized tokens pass this; 0: never."""
    STRATUS_SUMMARY_KEEP_LAST: Annotated[int, Field(ge=0)] = 20
    """Messages the automatic compression leaves in the context window."""
    STRATUS_SUMMARY_MAX_TOKENS: Annotated[int, Field(ge=16, le=100_000)] = 600
    """Largest summary compress_history writes."""
    STRATUS_SUMMARIZER: Literal["extractive", "openai"] = "extractive"
    """Which summarizer folds older messages: the offline extractive one, whatever keys are set, unless "openai" is
    chosen here (conversation text then goes to OpenAI, or to OPENAI_BASE_URL: an explicit choice, never implied by
    OPENAI_API_KEY, which the agents may set for themselves)."""
    STRATUS_SUMMARY_MODEL: str = "gpt-4o-mini"
    """Chat model of the OpenAI summarizer (STRATUS_SUMMARIZER=openai)."""
    STRATUS_SUMMARY_TIMEOUT_S: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Per request to the OpenAI summarizer, which retries twice (timeouts, 429, 5xx) before giving up."""
    OPENAI_API_KEY: SecretStr | None = None
    OPENAI_BASE_URL: str | None = None
    """Another server speaking the Chat Completions API (Azure OpenAI, a local model, a test stub)."""

    @field_validator("DATABASE_URL", mode="before")
    @classmethod
    def _normalize_url(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            raise ValueError("DATABASE_URL must be a string")
        try:
            return normalize_database_url(raw)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None

    @property
    def database_url(self) -> URL:
        """The effective URL: DATABASE_URL, or the embedded SQLite file."""
        if self.DATABASE_URL is not None:
            return make_url(self.DATABASE_URL.get_secret_value())
        path = (self.STRATUS_DATA_DIR / DEFAULT_SQLITE_FILE).resolve()
        return URL.create("sqlite+aiosqlite", database=str(path))

    @property
    def is_embedded(self) -> bool:
        return self.database_url.get_backend_name() == "sqlite"


def _describe(location: tuple[int | str, ...], message: str) -> str:
    variable = ".".join(str(part) for part in location)
    return message if message.startswith(variable) else f"{variable}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read Settings from the environment; a bad variable becomes one ConfigurationError naming it."""
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        problems = "; ".join(
            _describe(error["loc"], error["msg"].removeprefix("Value error, ")) for error in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
