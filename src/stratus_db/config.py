"""Settings, read from the environment (and a `.env` file) by the CLI and by `StratusPostgreSQLIntegration()` without
arguments; `effective_settings` shows them with secrets masked."""

from __future__ import annotations

import ipaddress
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, StringConstraints, ValidationInfo, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from stratus_db.errors import ConfigurationError, ValidationError
from stratus_db.models.consent import ConsentPurpose
from stratus_db.models.memory import MemoryType
from stratus_db.privacy.kinds import ErasableKind
from stratus_db.security.crypto import (
    BLIND_INDEX_VARIABLE,
    KEYS_VARIABLE,
    BlindIndex,
    Keyring,
    ed25519_private_key,
    ed25519_public_key,
)

LIBRARY_CHECKED_PURPOSES = frozenset(
    {ConsentPurpose.external_summarizer, ConsentPurpose.memory_personalisation}
)
"""The consent purposes the library itself acts on, hence may check (STRATUS_CONSENT_REQUIRED; docs/privacy.md)."""

DEFAULT_SQLITE_FILE = "stratus.db"
"""File name of the embedded database, inside `STRATUS_DATA_DIR` (default: the working directory)."""

ENV_FILE_VARIABLE = "STRATUS_ENV_FILE"
"""Names the dotenv file Settings read (default `.env` in the working directory); empty: read no file."""
DEFAULT_ENV_FILE = ".env"
SECRET_MASK = "***"
"""What effective_settings shows in place of a secret: SQLAlchemy's mask for a URL's password."""
_SECRET_NAME_PARTS = frozenset({"KEY", "PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "CREDENTIALS"})
"""A setting whose name has one of these words (split on `_`) holds a secret: OPENAI_API_KEY, but not
STRATUS_SUMMARY_MAX_TOKENS."""
_SECRET_QUERY_PARAMETERS = frozenset(
    {"password", "passwd", "sslpassword", "secret", "token", "api_key", "apikey"}
)
MAX_RETENTION_DAYS = 36_500
"""The longest retention a setting takes (a hundred years): longer is "for ever", which 0 says."""
AUDIT_RULE_PATTERN = r"^(\*|[a-z_]{1,63}):[a-z_]{1,50}$|^[a-z_]{1,63}$"
"""A key of STRATUS_AUDIT_RETENTION_RULES: `table`, `table:action` or `*:action`."""
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
"""An address or a network in CIDR notation (an address alone is a network of one)."""
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


def env_file_path() -> Path | None:
    """The dotenv file Settings read: `$STRATUS_ENV_FILE`, `.env` in the working directory when that is unset, or
    none when it is empty (the test suite sets it empty: tests/conftest.py).

    Raises:
        ConfigurationError: STRATUS_ENV_FILE names a file that does not exist (a missing `.env` is fine).
    """
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named is None:
        return Path(DEFAULT_ENV_FILE)
    if not named.strip():
        return None
    path = Path(named)
    if not path.is_file():
        raise ConfigurationError(
            f"{ENV_FILE_VARIABLE} names {named!r}, which is not a file: name an existing dotenv file, "
            "or set it empty to read none"
        )
    return path


class Settings(BaseSettings):
    """Configuration of the data layer. Field names are the environment variables.

    Each setting comes from, first to last: an argument, the environment, the dotenv file (`.env` in the working
    directory, if there is one, or the file `STRATUS_ENV_FILE` names; see `env_file_path`), the default. The test
    suite reads no dotenv file: tests/conftest.py sets `STRATUS_ENV_FILE` empty, and tests build their Settings
    explicitly (tests/fixtures/databases.py `settings_for`).

    `ENVIRONMENT=production` requires a PostgreSQL `DATABASE_URL`, `STRATUS_ENCRYPTION_KEYS` and
    `STRATUS_BLIND_INDEX_KEY` (see `check_environment`).
    """

    # hide_input_in_errors: a malformed secret (an encryption key, a URL with its password) must not be quoted by
    # Pydantic's error, which a traceback or a log would then carry.
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, case_sensitive=True, hide_input_in_errors=True
    )

    DATABASE_URL: SecretStr | None = None
    """Unset: the embedded SQLite file `$STRATUS_DATA_DIR/stratus.db`."""
    STRATUS_DATA_DIR: Path = Path(".")
    LOG_LEVEL: LogLevel = LogLevel.INFO
    """The level of the JSON lines that the CLI and the service print (`stratus_db.logging.configure_json`); a host
    that configures logging itself decides the `stratus_db` logger's level."""
    STRATUS_ANONYMOUS_CALLS: Literal["system", "refuse"] = "system"
    """What a call with no principal (no `principal=` argument, none in the context) may do: "system", trusted in-process code (scripts, the CLI, the
    demo), may do everything; "refuse": it is refused with PermissionDeniedError (a service in front of the library
    sets it, so that a request without an identity reaches nothing)."""
    STRATUS_LOG_SLOW_OPERATION_MS: Annotated[float, Field(gt=0)] = 1000.0
    """A call that takes longer logs a warning (every call logs a line only at DEBUG)."""
    STRATUS_ERASURE_LEGAL_HOLD: Annotated[frozenset[ErasableKind], NoDecode] = frozenset()
    """Kinds of a person's data that erase_user keeps because a regulation requires them (docs/privacy.md): a comma
    list of `user_credentials`, `memory_entries`, `conversations` (with their messages), `user_consents`; empty:
    erase everything."""
    # Retention (docs/privacy.md "Retention"), applied by `stratus-db apply-retention`. 0 keeps the data for ever.
    STRATUS_RETENTION_CONVERSATIONS_DAYS: Annotated[int, Field(ge=0, le=MAX_RETENTION_DAYS)] = 0
    """A conversation with no activity for this many days is purged with all its messages."""
    STRATUS_RETENTION_MEMORIES_DAYS: Annotated[int, Field(ge=0, le=MAX_RETENTION_DAYS)] = 0
    """A memory neither updated nor read for this many days is purged (whatever its tier, critical included)."""
    STRATUS_RETENTION_INACTIVE_ACCOUNTS_DAYS: Annotated[int, Field(ge=0, le=MAX_RETENTION_DAYS)] = 0
    """A user whose `last_active` is this many days old is erased (erase_user) with everything of theirs."""
    STRATUS_AUDIT_RETENTION_DAYS: Annotated[int, Field(ge=0, le=MAX_RETENTION_DAYS)] = 0
    """Audit rows older than this many days are purged by `stratus-db audit purge`, in whole sealed checkpoints
    (docs/audit.md); 0 keeps the trail for ever. STRATUS_AUDIT_RETENTION_RULES overrides it for some rows."""
    STRATUS_AUDIT_RETENTION_RULES: dict[
        Annotated[str, StringConstraints(pattern=AUDIT_RULE_PATTERN)],
        Annotated[int, Field(ge=0, le=MAX_RETENTION_DAYS)],
    ] = Field(default_factory=dict)
    """Retention in days by table and action, over STRATUS_AUDIT_RETENTION_DAYS, as a JSON object whose keys are
    `table`, `table:action` or `*:action`, e.g. `{"messages": 365, "*:read": 730, "access:deny": 1825}` (0: for
    ever). The most specific key wins: `table:action`, then `*:action`, then `table`. A checkpoint is purged once
    every row in it is past its own retention."""
    ENVIRONMENT: Environment = Environment.development

    # The HTTP service (stratus_db.api, `stratus-db serve`; docs/api.md).
    STRATUS_API_JWT_SECRET: Annotated[SecretStr, Field(min_length=32)] | None = None
    """The HS256 key bearer tokens are signed with: at least 32 characters (a shorter one could be guessed offline
    from any token; `stratus-db generate-key --blind-index` prints one). With neither it nor a public key, a JWT is
    answered 500 (the service is misconfigured); API keys work without them."""
    STRATUS_API_JWT_PUBLIC_KEY: str | None = None
    """An Ed25519 public key (PEM) that EdDSA bearer tokens are checked with: whoever issues them (an identity
    service, `stratus-db create-token`) holds the private key, the service never does. Alongside the secret or
    instead of it; each token is checked with the one key of its algorithm."""
    STRATUS_API_JWT_PRIVATE_KEY: SecretStr | None = None
    """An Ed25519 private key (PEM) that `stratus-db create-token` signs EdDSA tokens with, where set (the service
    itself needs only the public key; given only this, it checks tokens with its public half)."""
    STRATUS_API_AUDIENCE: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "stratus-db"
    """The `aud` claim every token must carry."""
    STRATUS_API_MAX_BODY_BYTES: Annotated[int, Field(ge=1024, le=100 * 1024 * 1024)] = 1024 * 1024
    """A request body over this many bytes is refused with 413 before it is read."""
    STRATUS_API_TRUSTED_PROXIES: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    """Comma list of addresses or networks (CIDR) of the proxies in front of the service (Cloud Run's front end,
    a load balancer): only for a request from one of them is X-Forwarded-For believed."""
    STRATUS_API_PUBLIC_METRICS: bool = False
    """Whether /metrics answers without a token (a scraper inside the network); by default it takes an admin,
    auditor or system token."""
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8080
    """The port `stratus-db serve` listens on (Cloud Run sets it)."""

    # The metrics of docs/metrics.md (stratus_db/analytics).
    STRATUS_METRICS_TIME_ZONE: str = "America/Sao_Paulo"
    """The IANA time zone whose calendar days, weeks and months the metrics count in. Changing it makes the rollups
    of the former zone unusable until `stratus-db rollup` rebuilds them (it does so by itself)."""
    STRATUS_METRICS_SAMPLE_RETENTION_DAYS: Annotated[int, Field(ge=0, le=3660)] = 90
    """How long the per-minute samples are kept (the error rates and availability of reports further back are then
    empty): `stratus-db rollup` deletes older ones; 0 keeps them for ever."""
    STRATUS_METRICS_FLUSH_S: Annotated[float, Field(ge=0, le=3600)] = 60.0
    """How often each process writes its per-minute counts of calls, requests, probes and cache lookups to
    `service_samples` (error rates and availability, docs/metrics.md); 0 records none."""

    # Encryption of personal data (security/crypto.py, docs/security.md). Never stored in the database.
    STRATUS_ENCRYPTION_KEYS: SecretStr | None = None
    """The keyring: `ID:BASE64` entries separated by commas, the first one active (new values are encrypted under
    it; the others only decrypt), each the base64 of 32 random bytes, ids 1 to 16 of a-z, 0-9 and '-', e.g.
    `k2:<base64>,k1:<base64>`. Required when ENVIRONMENT=production; unset, the embedded database uses a key file
    generated beside it, and PostgreSQL has none (security/keystore.py load_encryption)."""
    STRATUS_BLIND_INDEX_KEY: SecretStr | None = None
    """The base64 of 32 random bytes, from which the blind index's keys (e-mail lookups and uniqueness) are
    derived. Unlike the keyring it cannot rotate without recomputing every index. Unset: as for the keyring."""

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

    # The consent ledger (see docs/privacy.md).
    STRATUS_CONSENT_REQUIRED: Annotated[frozenset[ConsentPurpose], NoDecode] = frozenset(
        {ConsentPurpose.external_summarizer}
    )
    """The purposes the library checks before it acts on them: `external_summarizer` (compress_history with a
    summarizer that sends text out) and `memory_personalisation` (store_memory, get_memory, search_memories). A comma
    list (`external_summarizer,memory_personalisation`) or a JSON list; empty: check none."""
    STRATUS_CONSENT_CACHE_TTL_S: Annotated[float, Field(ge=0, le=300)] = 5.0
    """How long a process trusts the consent state it read: a grant or revocation made by another process is seen
    here within this bound (this process's own at once); 0 reads the ledger on every check."""
    OPENAI_API_KEY: SecretStr | None = None
    OPENAI_BASE_URL: str | None = None
    """Another server speaking the Chat Completions API (Azure OpenAI, a local model, a test stub)."""

    @field_validator(
        "STRATUS_ERASURE_LEGAL_HOLD", "STRATUS_CONSENT_REQUIRED", "STRATUS_API_TRUSTED_PROXIES", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        # From the environment: a comma list, or the JSON list effective_settings writes.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError("must be a comma list or a JSON list") from None
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("STRATUS_CONSENT_REQUIRED", mode="after")
    @classmethod
    def _purposes_the_library_checks(cls, value: frozenset[ConsentPurpose]) -> frozenset[ConsentPurpose]:
        # Naming a purpose nothing here checks would promise an enforcement that does not happen.
        unchecked = value - LIBRARY_CHECKED_PURPOSES
        if unchecked:
            raise ValueError(
                f"the library checks only {', '.join(sorted(LIBRARY_CHECKED_PURPOSES))}; "
                f"{', '.join(sorted(unchecked))} is for the host to check with ConsentManager.has_consent"
            )
        return value

    @field_validator("STRATUS_API_JWT_PUBLIC_KEY", mode="after")
    @classmethod
    def _ed25519_public_key(cls, value: str | None) -> str | None:
        if value is not None:
            ed25519_public_key(value)
        return value

    @field_validator("STRATUS_API_JWT_PRIVATE_KEY", mode="after")
    @classmethod
    def _ed25519_private_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            ed25519_private_key(value.get_secret_value())
        return value

    @field_validator("STRATUS_METRICS_TIME_ZONE", mode="after")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"must be an IANA time zone such as America/Sao_Paulo or UTC, got {value!r}"
            ) from None
        return value

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

    @field_validator(KEYS_VARIABLE, BLIND_INDEX_VARIABLE, mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator(KEYS_VARIABLE, BLIND_INDEX_VARIABLE)
    @classmethod
    def _readable_keys(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # Read now, so that a malformed key is one ConfigurationError at start-up rather than at the first write;
        # the messages name the variable and never quote the value.
        if value is not None:
            parse = Keyring.parse if info.field_name == KEYS_VARIABLE else BlindIndex.parse
            try:
                parse(value.get_secret_value())
            except ConfigurationError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _fit_for_environment(self) -> Self:
        try:
            check_environment(self)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The dotenv file is chosen when Settings are made, not when the class is defined, so that
        # STRATUS_ENV_FILE (set by a deployment, or emptied by the test suite) always decides.
        dotenv = DotEnvSettingsSource(settings_cls, env_file=env_file_path())
        return init_settings, env_settings, dotenv, file_secret_settings

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


_ACCEPTED_IN_PRODUCTION = (
    "postgresql+asyncpg://user:password@host:5432/dbname (postgresql:// and postgres:// are accepted too; Cloud SQL "
    "as postgresql+asyncpg://user:password@/dbname?host=/cloudsql/PROJECT:REGION:INSTANCE)"
)


def check_environment(settings: Settings) -> None:
    """Refuse settings unfit for their ENVIRONMENT: production needs a PostgreSQL DATABASE_URL, never the embedded
    SQLite file (one per container, lost on redeploy, invisible to every other instance), and the encryption keys
    STRATUS_ENCRYPTION_KEYS and STRATUS_BLIND_INDEX_KEY (production never generates keys of its own: a key made
    in one container would be lost with it, and with the key every value encrypted under it).

    Settings check this as they are made; StratusPostgreSQLIntegration checks again before it creates anything,
    because `model_copy(update=...)` and `model_construct` skip validation.

    Raises:
        ConfigurationError: naming DATABASE_URL or the missing key variables, and what is accepted.
    """
    if Environment.production != settings.ENVIRONMENT:
        return
    if settings.DATABASE_URL is None:
        raise ConfigurationError(
            "DATABASE_URL is required when ENVIRONMENT=production (without it the data would go to an embedded "
            f"SQLite file): set it to {_ACCEPTED_IN_PRODUCTION}"
        )
    if settings.is_embedded:
        raise ConfigurationError(
            "DATABASE_URL names a SQLite file, which ENVIRONMENT=production refuses: set it to "
            f"{_ACCEPTED_IN_PRODUCTION}"
        )
    missing = [name for name in (KEYS_VARIABLE, BLIND_INDEX_VARIABLE) if getattr(settings, name) is None]
    if missing:
        raise ConfigurationError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required when ENVIRONMENT=production "
            "(the keys of the field encryption of personal data, kept outside the database): set "
            f"{KEYS_VARIABLE} to `stratus-db generate-key`'s line and {BLIND_INDEX_VARIABLE} to "
            "`stratus-db generate-key --blind-index`'s (docs/security.md)"
        )


def _describe(location: tuple[int | str, ...], message: str) -> str:
    variable = ".".join(str(part) for part in location)
    return message if message.startswith(variable) else f"{variable}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read Settings from the environment and the dotenv file (see Settings); a bad variable, or settings unfit for
    ENVIRONMENT, become one ConfigurationError naming the variables."""
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        problems = "; ".join(
            _describe(error["loc"], error["msg"].removeprefix("Value error, ")) for error in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None


def effective_settings(settings: Settings) -> dict[str, str]:
    """Every setting's effective value as text, secrets masked: for display (`stratus-db config`) and for logs.

    DATABASE_URL is the URL in use (the embedded file's when unset) with its password, and any password or token
    among its query parameters, shown as SECRET_MASK; so are a URL's password in any other setting, every SecretStr,
    and every setting whose name says it holds a secret (`..._KEY`, `..._TOKEN`, `..._PASSWORD`, `..._SECRET`,
    also in a subclass of Settings). An unset setting is the empty string. The other values are written as the
    environment variable would be (enums by value, booleans `true`/`false`, sets as JSON lists, paths resolved),
    so setting them gives the same Settings back.

    Raises:
        ValidationError: `settings` is not a Settings.
    """
    if not isinstance(settings, Settings):
        raise ValidationError(
            f"settings must be a stratus_db Settings (from load_settings() or Settings(...)), "
            f"got {type(settings).__name__}"
        )
    shown = {name: _as_text(name, getattr(settings, name)) for name in type(settings).model_fields}
    shown["DATABASE_URL"] = _masked_database_url(settings.database_url)
    return shown


def _holds_secret(name: str) -> bool:
    return not _SECRET_NAME_PARTS.isdisjoint(name.upper().split("_"))


def _as_text(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr) or _holds_secret(name):
        return SECRET_MASK if _as_plain_text(value) else ""
    if isinstance(value, str) and "://" in value:
        return _masked_url_password(value)
    return _as_plain_text(value)


def _as_plain_text(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (set, frozenset)):
        return json.dumps(sorted(str(_as_plain_text(item)) for item in value))
    if isinstance(value, (tuple, list)):
        return json.dumps([str(_as_plain_text(item)) for item in value])
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value.resolve())
    return str(value)


def _masked_database_url(url: URL) -> str:
    query = {
        key: SECRET_MASK if key.lower() in _SECRET_QUERY_PARAMETERS else value
        for key, value in url.query.items()
    }
    rendered = url.set(query=query).render_as_string(hide_password=True)
    return rendered.replace(
        f"={quote(SECRET_MASK, safe='')}", f"={SECRET_MASK}"
    )  # the mask, not its URL escape


def _masked_url_password(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    userinfo, _, host = parts.netloc.rpartition("@")
    username = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{username}:{SECRET_MASK}@{host}"))
