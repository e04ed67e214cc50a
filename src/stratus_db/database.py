"""The database handle: engine and pool, units of work, retries, health, metrics and the request context."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import Token
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from alembic.util import CommandError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError, EmulatedDBAPIException, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from stratus_db import revisions, schema
from stratus_db.audit.repository import AuditRepository
from stratus_db.audit.rows import AuditEntry, audit_context
from stratus_db.audit.schemas import AuditAction
from stratus_db.config import Settings, check_environment, load_settings
from stratus_db.context import (
    RequestContext,
    begin_operation_trace,
    current_context,
    current_principal,
    end_operation_trace,
    reset_principal,
    use_context,
    use_principal,
)
from stratus_db.errors import (
    ConfigurationError,
    ConflictError,
    DatabaseClosedError,
    DatabaseUnavailableError,
    PermissionDeniedError,
    SchemaNotReadyError,
    StratusError,
    UnexpectedError,
    ValidationError,
)
from stratus_db.kit import driver
from stratus_db.kit.backends import READ_ONLY_OPTION, backend_for
from stratus_db.kit.clock import utc_now
from stratus_db.kit.failures import translate
from stratus_db.kit.ids import new_id
from stratus_db.kit.metrics import OperationMetrics
from stratus_db.kit.samples import ServiceSamples
from stratus_db.kit.tasks import start_background
from stratus_db.kit.tokens import TokenCounter, checked_counter, estimate_tokens
from stratus_db.kit.validation import shown, validate_input
from stratus_db.logging import LOGGER_NAME, get_logger
from stratus_db.security.policy import refusal
from stratus_db.security.principal import Principal
from stratus_db.tracing import OperationSpan

if TYPE_CHECKING:
    from stratus_db.conversations.summarizer import Summarizer

T = TypeVar("T")
E = TypeVar("E")
ACCESS_TABLE = "access_control"
"""The table name of a refused call's audit row: it touched no table."""
_library_log = logging.getLogger(LOGGER_NAME)
"""The standard logger behind `db.log`: its level says whether a healthy call's DEBUG line is worth building."""


_REFUSED_SQLSTATES = frozenset({"28000", "28P01", "3D000"})
"""Unknown role, wrong password, unknown database: configuration mistakes that no retry will fix."""
_CHECKOUT_ERRORS = (PoolTimeoutError, TimeoutError, DBAPIError, EmulatedDBAPIException, OSError)
"""What taking a connection from the pool raises when it cannot: the pool's timeout, or connecting failed (the
driver's error, which engine.connect() wraps in a DBAPIError and engine.raw_connection() does not)."""


class Operation:
    """One measured public call: `async with db.operation(name) as op`, then `op.run(work)` for its database work.

    The call's duration and outcome go to the metrics and the log as the block ends, under the call's trace id. A
    plain async context manager because every public call enters one: as an @asynccontextmanager generator, entering
    and leaving cost 5.5 µs more, as much as half of a cached get_memory.

    Given a `principal` (the call's `principal=` argument), the block runs with it as the call's principal, over the
    context's (context.py `use_principal`): the one place a call's own principal takes effect, for its access check
    and for the audit rows taken inside it, whichever way they are written later. Not a Principal: ValidationError.
    """

    __slots__ = ("_db", "_principal", "_scope", "_span", "_started", "_trace", "name", "read_only")

    def __init__(
        self, db: StratusPostgreSQLIntegration, name: str, read_only: bool, principal: object = None
    ) -> None:
        self._db = db
        self.name = name
        self.read_only = read_only
        self._principal = principal

    async def __aenter__(self) -> Operation:
        self._db._refuse_if_closed()
        self._db._operations_in_flight += 1
        self._trace = begin_operation_trace()
        self._span = OperationSpan.start(self.name, self._db.backend, self.read_only)
        self._started = time.perf_counter()
        self._scope: Token[Principal | None] | None = None
        if self._principal is not None:
            if not isinstance(self._principal, Principal):
                # Measured and logged as the call's failure, as every other malformed argument is.
                error = ValidationError(
                    "principal must be a Principal (Principal.for_user(...), Principal.agent(...), "
                    f"Principal.system(...), or Principal(kind=..., id=...)) or None, got {shown(self._principal)}"
                )
                await self.__aexit__(ValidationError, error, None)
                raise error
            self._scope = use_principal(self._principal)
        return self

    async def authorize(
        self, subject: uuid.UUID | None, *, operation: str | None = None, tx: AsyncConnection | None = None
    ) -> None:
        """Let the call go on only if its principal may run this operation (or `operation`, a finer one such as
        "user.change_role") on the data of the user `subject` (None: of no single user): security/policy.py. The
        call's principal is its `principal=` argument if it was given one, else the context's; with neither,
        STRATUS_ANONYMOUS_CALLS decides. Called once the arguments are valid, before anything is read or written;
        `tx` is the caller's transaction the call would have joined (see `_record_refusal`).

        Raises:
            PermissionDeniedError: refused; the refusal is audited (action `deny`), nothing else is written.
        """
        name = self.name if operation is None else operation
        principal = current_principal()
        if principal is None:
            if self._db.settings.STRATUS_ANONYMOUS_CALLS == "system":
                return  # trusted in-process code
            reason = (
                f"{name} needs a principal, as its `principal=` argument or in the context "
                "(STRATUS_ANONYMOUS_CALLS=refuse)"
            )
        else:
            refused = refusal(principal, name, subject)
            if refused is None:
                return
            reason = refused
        await self._db._record_refusal(name, subject, reason, tx)
        raise PermissionDeniedError(reason)

    async def __aexit__(
        self, _type: type[BaseException] | None, exc: BaseException | None, _traceback: TracebackType | None
    ) -> None:
        try:
            self._db._observe(self.name, self.read_only, time.perf_counter() - self._started, exc)
            if isinstance(exc, Exception) and not isinstance(exc, StratusError):
                # Every error that leaves the library is a StratusError: one that nothing translated is a defect,
                # reported as such with its traceback (the caller still gets it as the cause).
                self._db.log.error(f"{self.name} failed unexpectedly", operation=self.name, exc_info=exc)
                raise UnexpectedError(
                    f"{self.name} failed unexpectedly ({type(exc).__name__}); the log has the traceback"
                ) from exc
        finally:
            if self._scope is not None:
                reset_principal(self._scope)
            if self._span is not None:
                self._span.end(exc)
            end_operation_trace(self._trace)
            self._db._operation_ended()

    async def run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        *,
        tx: AsyncConnection | None = None,
        single_statement: bool = False,
    ) -> T:
        """Run `work` in a transaction of its own, retried on transient failures, or inside the caller's `tx`.

        In the caller's transaction the work runs under a savepoint: if it fails, none of it stays behind to be
        committed with the caller's other work. `single_statement=True` promises that `work` sends one statement,
        which is atomic on its own: on PostgreSQL it then runs without BEGIN and COMMIT (one round trip, not three).
        """
        if tx is None:
            return await self._db._run_with_retries(
                self.name, partial(self._db._run_on_own_connection, work, self.read_only, single_statement)
            )
        try:
            async with tx.begin_nested():
                return await work(tx)
        except SQLAlchemyError as exc:
            raise self._db._translate(exc, may_have_committed=False) from exc

    async def fetch(self, sql: str, *arguments: Any, read_only: bool | None = None) -> list[dict[str, Any]]:
        """Run one statement on PostgreSQL (with $1, $2… placeholders) outside any transaction: it commits as it
        completes. Rows as dicts; retried as `run` retries. For the hottest single statements (kit/driver.py).
        `read_only` (default: the operation's) says whether a lost connection may be retried: a pure read may, even
        inside a writing operation.

        The pooled asyncpg connection is used without a SQLAlchemy Connection around it: building one, setting
        AUTOCOMMIT on it and closing it cost 50 µs (concurrency 16) to 140 µs (concurrency 1) of client CPU per call,
        a fifth to a third of a cold get_memory.
        """
        return await self._db._run_with_retries(
            self.name,
            partial(
                self._db._fetch_pooled, sql, arguments, self.read_only if read_only is None else read_only
            ),
        )


class PoolStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    size: int
    checked_out: int
    overflow: int


class SchemaCheck(BaseModel):
    """`check_schema()`: the database's revision against the head, and how its tables differ from the models."""

    model_config = ConfigDict(frozen=True)

    revision: str | None
    head: str
    differences: list[str]
    """Alembic's comparison of the models with the database, one difference an item; empty when they agree."""

    @property
    def ok(self) -> bool:
        return self.revision == self.head and not self.differences


class HealthStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    healthy: bool
    backend: str
    latency_ms: float
    schema_revision: str | None
    expected_revision: str
    pool: PoolStatus
    error: str | None = None


class StratusPostgreSQLIntegration:
    """The handle on one database (PostgreSQL or the embedded SQLite file) that every manager shares.

    Args:
        settings: the configuration; read from the environment when omitted.
        clock: where "now" comes from (expiry, timestamps); tests pass a controllable one.
        summarizer: what folds older messages into a conversation's summary (any object with the `Summarizer`
            protocol's `summarize`); by default the one STRATUS_SUMMARIZER names (the offline extractive one).
        token_counter: how many tokens a text costs the host's model (`str -> int`), used for messages appended
            without `tokens_used`, summaries in a context window and the summary's budget; by default the offline
            estimate (kit/tokens.py), or `TiktokenCounter()` with the `[tiktoken]` extra. It must return an integer
            from 0 to 10,000,000: anything else fails the call with ConfigurationError before anything is written.

    Raises:
        ConfigurationError: a setting (DATABASE_URL…) is malformed, ENVIRONMENT=production without a PostgreSQL
            DATABASE_URL (nothing is created: no SQLite file, no engine), or `token_counter` is not callable.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        summarizer: Summarizer | None = None,
        token_counter: TokenCounter | None = None,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        # Before anything is created (the embedded file's directory, the engine): settings that skipped validation
        # (model_copy, model_construct) must not reach production with the embedded file.
        check_environment(self.settings)
        self.clock = clock
        if token_counter is not None and not callable(token_counter):
            raise ConfigurationError(
                f"token_counter must be a callable from text to a number of tokens, got {type(token_counter).__name__}"
            )
        if summarizer is not None and not callable(getattr(summarizer, "summarize", None)):
            raise ConfigurationError(
                f"summarizer must have an async summarize(messages, *, previous_summary, max_tokens) method, got "
                f"{type(summarizer).__name__}"
            )
        self.summarizer = summarizer
        """The host's summarizer, or None for the configured one (conversations/history.py)."""
        self.count_tokens: TokenCounter = (
            estimate_tokens if token_counter is None else checked_counter(token_counter)
        )
        url = self.settings.database_url
        self._backend = backend_for(url)
        self._where = self._backend.describe(url)
        if self.settings.is_embedded and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: errors and logs must never carry what users wrote (message content, e-mails).
        self.engine: AsyncEngine = create_async_engine(
            url, hide_parameters=True, **self._backend.engine_options(self.settings)
        )
        self._backend.install(self.engine.sync_engine)
        self._metrics = OperationMetrics()
        self.samples = ServiceSamples(self)
        """This handle's per-minute counts of calls (and, under the service, of requests and probes)."""
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self.log = get_logger()
        self._slow_operation_s = self.settings.STRATUS_LOG_SLOW_OPERATION_MS / 1000
        self._extensions: dict[str, Any] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._operations_in_flight = 0
        self._drained: asyncio.Event | None = None
        """Set when the last operation under way ends while close() waits for it."""
        self._metric_sources: dict[str, Callable[[], dict[str, Any]]] = {}
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        """The one closing, which every close() awaits."""

    def extension(self, name: str, factory: Callable[[], E]) -> E:
        """The one instance of a per-database helper (a domain's cache), made by `factory` on first use.

        Domain code keeps its shared state here, so that every manager built on this handle sees the same state and
        the database never needs to know the domains.
        """
        if name not in self._extensions:
            self._extensions[name] = factory()
        extension: E = self._extensions[name]
        return extension

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run `closer` when the handle closes, before the pool is disposed (e.g. flush buffered writes)."""
        self._closers.append(closer)

    def add_metrics_source(self, name: str, source: Callable[[], dict[str, Any]]) -> None:
        """Include `source()` under `name` in `metrics()`."""
        self._metric_sources[name] = source

    @staticmethod
    def after_commit(tx: AsyncConnection, callback: Callable[[], None]) -> None:
        """Call `callback` when `tx`'s outermost transaction commits — just before COMMIT is sent — never on rollback.

        Callers use it to forget cached state; a reader racing the commit still waits on the writer's row locks.
        """
        event.listen(tx.sync_connection, "commit", lambda _connection: callback(), once=True)

    @property
    def backend(self) -> str:
        """`postgresql` or `sqlite`."""
        return self._backend.name

    # -- schema ---------------------------------------------------------------------------------------------------

    async def migrate(self) -> str:
        """Upgrade the schema to the newest revision this package ships; returns that revision.

        Raises:
            DatabaseUnavailableError: the database cannot be reached.
        """
        await self._change_schema(partial(schema.upgrade_to_head, settings=self.settings))
        self._schema_ready = True
        return schema.head_revision()

    async def grant_application_role(self, role: str) -> None:
        """PostgreSQL: let `role`, the login the application runs as, do what the library does and no more on the
        audit trail (schema.py `grant_application_role`, docs/audit.md "Append-only"). Run with the migrations'
        role, which owns the tables, after `migrate`; idempotent.

        Raises:
            ValidationError: `role` is not a role name, does not exist, is a superuser or owns the tables.
            ConfigurationError: the database is the embedded SQLite file, which has no roles.
            DatabaseUnavailableError: the database cannot be reached.
        """
        if not isinstance(role, str):
            raise ValidationError(f"role must be a PostgreSQL role name, got {shown(role)}")
        if self.backend != "postgresql":
            raise ConfigurationError(
                "grant_application_role needs PostgreSQL (DATABASE_URL): the embedded SQLite file has no roles"
            )
        await self._change_schema(partial(schema.grant_application_role, role=role))

    async def downgrade(self, revision: str) -> str | None:
        """Downgrade the schema to an older `revision` (a revision id, or `base`: no table left), in one transaction;
        returns the revision the database is now at (None for base). Destructive: the columns and tables the
        newer revisions added are dropped with their data. On the embedded SQLite file the tables are rebuilt with
        foreign keys off and checked before COMMIT, as `migrate` does.

        Raises:
            ValidationError: `revision` is not a revision this package ships, or not older than the database's.
            ConflictError: a migration refused to go down (its message says why); nothing was changed.
            DatabaseUnavailableError: the database cannot be reached.
        """
        revisions.resolve(revision, "revision")  # malformed: refused before anything connects

        def down(connection: Connection) -> str | None:
            target = revisions.downgrade_target(revision, schema.current_revision(connection))
            try:
                revisions.downgrade_to(connection, target, self.settings)
            except (CommandError, RuntimeError) as exc:
                raise ConflictError(
                    f"the downgrade to {target or revisions.BASE} was refused: {exc}; nothing was changed"
                ) from exc
            return target

        self._schema_ready = False
        return await self._change_schema(down)

    async def _change_schema(self, change: Callable[[Connection], T]) -> T:
        """Run `change` (Alembic migrations) in one transaction, with what the dialect needs around it, and fail
        before COMMIT if it left a reference broken."""
        async with self._connection() as conn, self._backend.schema_change(conn):
            try:
                async with conn.begin():
                    result = await conn.run_sync(change)
                    await conn.run_sync(schema.check_references)
            except SQLAlchemyError as exc:
                raise self._translate(exc, may_have_committed=False) from exc
        return result

    async def schema_revision(self) -> str | None:
        """The database's schema revision (None: an empty database). Never migrates, even the embedded file.

        Raises:
            DatabaseUnavailableError: the database cannot be reached.
        """
        async with self._unit_of_work(read_only=True) as conn:
            return await conn.run_sync(schema.current_revision)

    async def revision_history(self) -> list[str]:
        """Alembic's history of the revisions this package ships, newest first, one line each, the head and the
        database's current revision marked `(head)` and `(current)`. Never migrates.

        Raises:
            DatabaseUnavailableError: the database cannot be reached.
        """
        async with self._unit_of_work(read_only=True) as conn:
            return await conn.run_sync(revisions.history)

    async def check_schema(self) -> SchemaCheck:
        """Whether the database is at the head revision and its tables match the models (`schema.schema_drift`);
        the differences are compared only at head, where there should be none. Never migrates.

        Raises:
            DatabaseUnavailableError: the database cannot be reached.
        """
        async with self._unit_of_work(read_only=True) as conn:
            revision = await conn.run_sync(schema.current_revision)
            head = schema.head_revision()
            drift = await conn.run_sync(schema.schema_drift) if revision == head else []
        return SchemaCheck(revision=revision, head=head, differences=[str(item) for item in drift])

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if not self._schema_ready:
                await self._prepare_schema()

    async def _prepare_schema(self) -> None:
        async with self._unit_of_work(read_only=True) as conn:
            current = await conn.run_sync(schema.current_revision)
        expected = schema.head_revision()
        if current == expected:
            self._schema_ready = True
        elif self.settings.is_embedded:
            # The embedded database belongs to this process's user: bring it to head on first use.
            await self.migrate()
        else:
            raise SchemaNotReadyError(
                f"the database ({self._where}) is at schema revision {current or 'none (empty)'}, "
                f"this code expects {expected}: run `stratus-db migrate` with the same DATABASE_URL"
            )

    # -- units of work --------------------------------------------------------------------------------------------

    def _checkout_failed(self, exc: Exception) -> StratusError:
        """Why no connection could be had from the pool: it is exhausted, or connecting failed."""
        if isinstance(exc, PoolTimeoutError):
            return DatabaseUnavailableError(
                f"no free connection in the pool within {self.settings.STRATUS_POOL_TIMEOUT_S} s "
                "(STRATUS_POOL_SIZE + STRATUS_POOL_MAX_OVERFLOW are all in use)"
            )
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        if getattr(reason, "sqlstate", None) in _REFUSED_SQLSTATES:
            return ConfigurationError(
                f"the database ({self._where}) refused the connection: {reason}; check DATABASE_URL"
            )
        # Nothing was sent, so trying again is always safe.
        return DatabaseUnavailableError(
            f"cannot reach the database ({self._where}, from DATABASE_URL): {reason}", retryable=True
        )

    def _refuse_if_closed(self) -> None:
        # A disposed engine would quietly open a new pool that nothing ever closes.
        if self._closed:
            raise DatabaseClosedError(
                f"this handle on {self._where} was closed: open a new StratusPostgreSQLIntegration"
            )

    @asynccontextmanager
    async def _connection(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        self._refuse_if_closed()
        try:
            conn = await self.engine.connect()
        except _CHECKOUT_ERRORS as exc:
            raise self._checkout_failed(exc) from exc
        try:
            if read_only:
                await conn.execution_options(**{READ_ONLY_OPTION: True})
            yield conn
        finally:
            await conn.close()

    @asynccontextmanager
    async def _unit_of_work(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        async with self._connection(read_only=read_only) as conn:
            try:
                async with conn.begin():
                    try:
                        yield conn
                    except SQLAlchemyError as exc:
                        raise self._translate(exc, may_have_committed=False) from exc
            except SQLAlchemyError as exc:
                # Raised by COMMIT itself: if the link broke then, the server may have committed.
                raise self._translate(exc, may_have_committed=not read_only) from exc

    @asynccontextmanager
    async def _autocommit(self, *, read_only: bool) -> AsyncIterator[AsyncConnection]:
        """A connection outside any transaction: each statement commits as it completes."""
        await self._ensure_schema()
        async with self._connection(read_only=read_only) as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                yield conn
            except SQLAlchemyError as exc:
                # A write whose connection broke may have committed: only a read is repeated.
                raise self._translate(exc, may_have_committed=not read_only) from exc

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        Pass the yielded connection as `tx=` to manager calls so that they share the transaction.

        Raises:
            DatabaseUnavailableError: the server cannot be reached, or aborted the transaction (then `retryable`).
            SchemaNotReadyError: a PostgreSQL database is not migrated to head.
            ConfigurationError: the server refused DATABASE_URL's credentials or database name.
        """
        await self._ensure_schema()
        async with self._unit_of_work(read_only=read_only) as conn:
            yield conn

    def _translate(self, exc: SQLAlchemyError, *, may_have_committed: bool) -> StratusError:
        """A SQLAlchemy error that no repository translated with more context (kit/failures.py).

        Before COMMIT the server rolls back what a lost connection had done, so repeating is safe (this is also how
        a pooled connection the server closed gets replaced).
        """
        lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
        return translate(exc, where=self._where, lost=lost, may_have_committed=may_have_committed)

    def operation(self, name: str, *, read_only: bool = False, principal: object = None) -> Operation:
        """Measure and log one public call, validation included, as `principal` when given: the call's own
        `principal=` argument, passed on unvalidated (see `Operation`)."""
        return Operation(self, name, read_only, principal)

    def _observe(self, name: str, read_only: bool, seconds: float, exc: BaseException | None) -> None:
        """Every call's metrics; a warning for a call that raised or was slow, else a line at DEBUG only."""
        self._metrics.observe(name, seconds, exc)
        self.samples.count_outcome(name, exc)
        if exc is not None:
            self.log.warning(
                f"{name} failed", operation=name, error=type(exc).__name__, duration_ms=seconds * 1000
            )
        elif seconds > self._slow_operation_s:
            self.log.warning(f"{name} was slow", operation=name, duration_ms=seconds * 1000)
        elif _library_log.isEnabledFor(logging.DEBUG):
            # Checked first: a healthy call's line is built only when someone reads it (a level check, not 60 µs).
            self.log.debug(f"{name} succeeded", operation=name, duration_ms=seconds * 1000)

    async def _record_refusal(
        self, operation: str, subject: uuid.UUID | None, reason: str, tx: AsyncConnection | None
    ) -> None:
        """The audit row of a refused call, in a transaction of its own (the call itself writes nothing), so that it
        stays even when the caller rolls back. If it cannot be written, the refusal still stands: the failure is
        logged.

        SQLite has one writer: while the caller's transaction `tx` holds the write lock, a transaction of our own
        would wait for it (the whole statement timeout) and fail. There the row is written once `tx` ends, committed
        or rolled back, by a background task."""
        entry = AuditEntry(
            action=AuditAction.deny,
            table_name=ACCESS_TABLE,
            record_id=None,
            user_id=subject,
            timestamp=self.clock(),
            old_values=None,
            new_values={"operation": operation, "reason": reason},
            context=audit_context(),
            audit_id=new_id(),
        )
        if tx is not None and self.backend == "sqlite" and tx.in_transaction():
            self._after_transaction(
                tx,
                lambda: start_background(
                    self._write_refusal(operation, entry), log=self.log, what="access.record_refusal"
                ),
            )
            return
        await self._write_refusal(operation, entry)

    async def _write_refusal(self, operation: str, entry: AuditEntry) -> None:
        try:
            async with self.transaction() as tx:
                await AuditRepository(tx).append([entry])
        except StratusError as exc:
            self.log.warning(
                f"{operation} was refused, and its audit row could not be written",
                operation=operation,
                error=type(exc).__name__,
            )

    @staticmethod
    def _after_transaction(tx: AsyncConnection, callback: Callable[[], object]) -> None:
        """Call `callback` once `tx`'s outermost transaction ends, by COMMIT or ROLLBACK (whichever comes first)."""
        fired = False

        def ended(_connection: object) -> None:
            # A listener may not be removed while its event is dispatched: both are `once`, and the one left
            # over goes at the connection's next commit or rollback, doing nothing.
            nonlocal fired
            if not fired:
                fired = True
                callback()

        event.listen(tx.sync_connection, "commit", ended, once=True)
        event.listen(tx.sync_connection, "rollback", ended, once=True)

    async def _run_with_retries(self, name: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds, fails for good, or STRATUS_RETRY_ATTEMPTS are spent."""
        attempts = self.settings.STRATUS_RETRY_ATTEMPTS
        for number in range(1, attempts + 1):
            try:
                return await attempt()
            except DatabaseUnavailableError as exc:
                if not exc.retryable or number == attempts:
                    raise
                self._metrics.retried(name)
                self.log.warning(
                    f"{name} retried",
                    operation=name,
                    attempt=number,
                    error=type(exc).__name__,
                    reason=exc.message,
                )
                # Exponential backoff with jitter, so that colliding transactions do not collide again.
                await asyncio.sleep(
                    self.settings.STRATUS_RETRY_BACKOFF_S * 2 ** (number - 1) * random.uniform(0.5, 1.5)
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_on_own_connection(
        self, work: Callable[[AsyncConnection], Awaitable[T]], read_only: bool, single_statement: bool
    ) -> T:
        if single_statement and self._backend.autocommit_single_statements:
            scope = self._autocommit(read_only=read_only)
        else:
            scope = self.transaction(read_only=read_only)
        async with scope as conn:
            return await work(conn)

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[PoolProxiedConnection]:
        """A connection taken straight from the pool, with no SQLAlchemy Connection around it (PostgreSQL)."""
        await self._ensure_schema()
        self._refuse_if_closed()
        try:
            pooled = await self.engine.raw_connection()
        except _CHECKOUT_ERRORS as exc:
            raise self._checkout_failed(exc) from exc
        try:
            yield pooled
        finally:
            # Back to the pool, whose reset on return may await the driver: SQLAlchemy runs that in a greenlet.
            await greenlet_spawn(pooled.close)

    async def _fetch_pooled(
        self, sql: str, arguments: tuple[Any, ...], read_only: bool
    ) -> list[dict[str, Any]]:
        async with self._pooled() as pooled:
            return await driver.fetch_pooled(pooled, sql, *arguments, read_only=read_only)

    @asynccontextmanager
    async def driver_transaction(self) -> AsyncIterator[driver.DriverTransaction]:
        """PostgreSQL: one transaction of prepared statements on a pooled asyncpg connection, sent by the driver
        alone (kit/driver.py `DriverTransaction`); not retried. For short hot transactions such as the batch
        creations of new memories.

        Raises:
            DatabaseUnavailableError: no connection, or it was lost (`retryable` when nothing can have committed).
            TransientDatabaseError / DatabaseError / ConflictError: a statement was refused; nothing was written.
        """
        async with self._pooled() as pooled, driver.DriverTransaction(pooled) as transaction:
            yield transaction

    # -- request context ------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def context(
        self,
        *,
        principal: Principal | None = None,
        trace_id: str | None = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
        purpose: str | None = None,
    ) -> AsyncIterator[RequestContext]:
        """Set who acts and on whose behalf for the enclosed calls; unset fields keep the enclosing context's value.

        Raises:
            ValidationError: a field is malformed (e.g. an IP address that is not one).
        """
        given = {
            "principal": principal,
            "trace_id": trace_id,
            "ip_address": ip_address,
            "user_agent": user_agent,
            "purpose": purpose,
        }
        merged = current_context().model_dump() | {
            key: value for key, value in given.items() if value is not None
        }
        with use_context(
            validate_input(RequestContext, merged), names_principal=principal is not None
        ) as context:
            yield context

    # -- operations -----------------------------------------------------------------------------------------------

    def _pool_status(self) -> PoolStatus:
        pool: Any = self.engine.pool
        return PoolStatus(size=pool.size(), checked_out=pool.checkedout(), overflow=max(pool.overflow(), 0))

    async def health_check(self) -> HealthStatus:
        """Round-trip to the database: latency, pool state and schema revision. Never raises."""
        started = time.perf_counter()
        revision: str | None = None
        error: str | None = None
        try:
            async with self._unit_of_work(read_only=True) as conn:
                await conn.execute(text("SELECT 1"))
                revision = await conn.run_sync(schema.current_revision)
        except StratusError as exc:
            error = exc.message
        expected = schema.head_revision()
        if error is None and revision != expected and not self.settings.is_embedded:
            error = f"schema at revision {revision}, expected {expected}: run `stratus-db migrate`"
        return HealthStatus(
            healthy=error is None,
            backend=self.backend,
            latency_ms=(time.perf_counter() - started) * 1000,
            schema_revision=revision,
            expected_revision=expected,
            pool=self._pool_status(),
            error=error,
        )

    def metrics(self) -> dict[str, Any]:
        """Per-operation count, errors, retries and duration histogram, plus the pool state."""
        return {
            "backend": self.backend,
            "operations": self._metrics.snapshot(),
            "pool": self._pool_status().model_dump(),
        } | {name: source() for name, source in self._metric_sources.items()}

    def metrics_exposition(self) -> bytes:
        """The same metrics in the Prometheus text format."""
        return self._metrics.exposition()

    def _operation_ended(self) -> None:
        self._operations_in_flight -= 1
        if self._operations_in_flight == 0 and self._drained is not None:
            self._drained.set()

    async def close(self) -> None:
        """Wait for the calls under way (a graceful shutdown), flush what helpers buffered, then close every pooled
        connection. Calls made afterwards raise DatabaseClosedError. Closing again, or from several tasks at once,
        waits for the same closing (only the first close() raises its failure). close() must not be awaited inside a
        call.

        Raises:
            StratusError: a helper could not flush what it buffered (the pool is closed all the same).
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
            await asyncio.shield(self._closing)
        else:
            await asyncio.wait({self._closing})

    async def _close(self) -> None:
        await self._calls_finished()
        failures: list[Exception] = []
        closers, self._closers = self._closers, []
        # The samples last: the other helpers' flushes are calls too.
        for closer in [*closers, self.samples.close]:
            try:
                await closer()
            except (
                Exception
            ) as exc:  # the other helpers and the pool still close; the first failure is raised
                failures.append(exc)
        self._closed = True
        await self._calls_finished()  # calls that began while the helpers flushed
        await self.engine.dispose()
        if failures:
            raise failures[0]

    async def _calls_finished(self) -> None:
        while self._operations_in_flight:
            self._drained = asyncio.Event()
            await self._drained.wait()
        self._drained = None

    async def __aenter__(self) -> StratusPostgreSQLIntegration:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


Database = StratusPostgreSQLIntegration
