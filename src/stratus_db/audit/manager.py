"""AuditManager: writes the audit row of every change (inside the change's transaction) and answers queries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

from pydantic import BaseModel, StrictStr, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.report import AuditReport, build_report
from stratus_db.audit.repository import AuditRepository
from stratus_db.audit.rows import AuditEntry, audit_context
from stratus_db.audit.schemas import AuditAction, AuditEvent
from stratus_db.audit.sealing import (
    Checkpoint,
    FieldHasher,
    RetentionPolicy,
    VerifyReport,
    add_partitions,
    purge_through,
    purgeable,
    seal_batch,
)
from stratus_db.audit.sealing import checkpoints as list_checkpoints
from stratus_db.audit.sealing import verify as verify_trail
from stratus_db.errors import ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, aware_datetime, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.sql import begin_snapshot
from stratus_db.kit.validation import InputModel, Timestamp, check_callback, parse_int, shown, validate_input
from stratus_db.security.crypto import DataKey, is_token
from stratus_db.security.personal import ENCRYPTED_COLUMNS, PersonalData
from stratus_db.security.principal import Principal

if TYPE_CHECKING:
    from stratus_db.database import Operation, StratusPostgreSQLIntegration

OUTSIDE_ACTOR_PREFIX = "db:"
"""The actor of a row the database's trigger wrote for a write made outside the library (revision 0011)."""
DEFAULT_SEAL_BATCH = 1000
MAX_SEAL_BATCH = 10_000
AuditName = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_.:\-]+$")
]


class _AuditQuery(InputModel):
    user_id: uuid.UUID | None = None
    record_id: uuid.UUID | None = None
    table: AuditName | None = None
    action: AuditName | None = None
    actor: Annotated[StrictStr, StringConstraints(min_length=1, max_length=210)] | None = None
    trace_id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)] | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None


class AuditManager:
    """The audit trail. Rows are appended by the other managers, in the same transaction as their change.

    Every public method takes a keyword-only `principal`: who makes that call. Given, it is the call's principal,
    over the context's (`db.context(principal=...)`) if that names another: security/policy.py decides the call for
    it, and its audit rows record it as the actor. Omitted, the context's principal applies, and without one the
    STRATUS_ANONYMOUS_CALLS setting. A call refused raises PermissionDeniedError and writes only the refusal's audit
    row; a `principal` that is not a Principal raises ValidationError. docs/users.md, "Access control", has the rules.
    """

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db

    @property
    def _hasher(self) -> FieldHasher:
        """The keyed hash of the trail's fields (audit/sealing.py), from the handle's blind-index secret."""
        return PersonalData.of(self._db).blind_index.audit_field

    async def record(
        self,
        tx: AsyncConnection,
        *,
        action: AuditAction,
        table_name: str,
        record_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
        old_values: Any | None = None,
        new_values: Any | None = None,
        data_key: DataKey | None = None,
        sealed_fields: tuple[str, ...] | None = None,
    ) -> None:
        """Append one audit row in `tx`, with actor, trace id, address, user agent and purpose from the context;
        `data_key` and `sealed_fields` as `entry` takes them."""
        await self.append(
            tx,
            [
                self.entry(
                    action=action,
                    table_name=table_name,
                    record_id=record_id,
                    user_id=user_id,
                    old_values=old_values,
                    new_values=new_values,
                    data_key=data_key,
                    sealed_fields=sealed_fields,
                )
            ],
        )

    @staticmethod
    async def append(tx: AsyncConnection, entries: Sequence[AuditEntry]) -> None:
        """Write audit entries that a write plan carries (one statement for a batch)."""
        await AuditRepository(tx).append(entries)

    def entry(
        self,
        *,
        action: AuditAction,
        table_name: str,
        record_id: uuid.UUID | None,
        user_id: uuid.UUID | None,
        old_values: Any | None = None,
        new_values: Any | None = None,
        data_key: DataKey | None = None,
        sealed_fields: tuple[str, ...] | None = None,
    ) -> AuditEntry:
        """The audit entry `record` writes, now and in the current request context.

        Given the subject's `data_key`, the personal fields among the old and new values (`sealed_fields`; by
        default the table's encrypted columns, security/personal.py ENCRYPTED_COLUMNS) are encrypted under it,
        bound to this audit row: the trail never holds them in clear, and erasing the user shreds them."""
        audit_id = new_id()
        if data_key is not None:
            personal = PersonalData.of(self._db)
            fields = ENCRYPTED_COLUMNS.get(table_name, ()) if sealed_fields is None else sealed_fields
            old_values = personal.seal_audit(fields, "old_values", old_values, audit_id, data_key)
            new_values = personal.seal_audit(fields, "new_values", new_values, audit_id, data_key)
        return AuditEntry(
            action=action,
            table_name=table_name,
            record_id=record_id,
            user_id=user_id,
            timestamp=self._db.clock(),
            old_values=old_values,
            new_values=new_values,
            context=audit_context(),
            audit_id=audit_id,
        )

    async def query(
        self,
        *,
        user_id: uuid.UUID | str | None = None,
        record_id: uuid.UUID | str | None = None,
        table: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        trace_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[AuditEvent]:
        """Audit rows, newest first, filtered by subject, record, table, action, actor (`kind:id`, e.g.
        `agent:briefing` or `user:<id>`), trace id and time range [since, until).

        Returns:
            A page of AuditEvent; pass `next_cursor` back as `cursor` for the following page.

        Raises:
            ValidationError: a malformed filter, limit or cursor.
        """
        async with self._db.operation("audit.query", read_only=True, principal=principal) as op:
            filters = validate_input(
                _AuditQuery,
                {
                    "user_id": user_id,
                    "record_id": record_id,
                    "table": table,
                    "action": action,
                    "actor": actor,
                    "trace_id": trace_id,
                    "since": since,
                    "until": until,
                },
            )
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (aware_datetime, uuid.UUID))
            # A user (or their agent) reads the trail of their own data only: its rows are filtered by user_id.
            await op.authorize(filters.user_id, tx=tx)

            async def work(conn: AsyncConnection) -> Page[AuditEvent]:
                repository = AuditRepository(conn)
                statement = repository.query_statement(**filters.model_dump(), after=after)
                rows = await repository.fetch(statement, limit + 1)
                events = await open_events(conn, PersonalData.of(self._db), rows)
                return make_page(
                    events, limit, lambda event: encode_cursor(event.timestamp.isoformat(), event.audit_id)
                )

            return await op.run(work, tx=tx)

    async def seal(
        self,
        *,
        batch_size: int = DEFAULT_SEAL_BATCH,
        on_progress: Callable[[int], None] | None = None,
        principal: Principal | None = None,
    ) -> SealReport:
        """Seal every audit row committed and not yet sealed into the hash chain (audit/sealing.py), in batches of
        `batch_size` rows, each a checkpoint and a transaction of its own. Writers never wait for the sealing; run
        it periodically (`stratus-db audit seal`), and keep the heads outside the database (docs/audit.md). On
        PostgreSQL it first makes audit_log's month partitions for this month and the next two that are missing
        (about once a month: that takes a lock writers wait on, for at most two seconds, or it gives up until the
        next run).

        Raises:
            ValidationError: a malformed batch size or callback.
            PermissionDeniedError: not trusted code or an administrator.
        """
        async with self._db.operation("audit.seal", principal=principal) as op:
            size = parse_int(batch_size, "batch_size", minimum=1, maximum=MAX_SEAL_BATCH)
            check_callback(on_progress, "on_progress")
            await op.authorize(None)
            return await self._seal_all(op, size, on_progress)

    async def _seal_all(
        self, op: Operation, size: int, on_progress: Callable[[int], None] | None = None
    ) -> SealReport:
        await op.run(partial(_add_partitions, now=self._db.clock()), tx=None)
        made: list[Checkpoint] = []
        sealed = 0
        while True:
            checkpoint = await op.run(
                partial(_seal_batch, hasher=self._hasher, now=self._db.clock(), size=size), tx=None
            )
            if checkpoint is None:
                break
            made.append(checkpoint)
            sealed += checkpoint.last_position - checkpoint.first_position + 1
            if on_progress is not None:
                on_progress(sealed)
        return SealReport(tuple(made), sealed)

    async def verify(
        self,
        *,
        expected_heads: Sequence[Mapping[str, Any]] = (),
        principal: Principal | None = None,
    ) -> VerifyReport:
        """Check the whole trail against its seals (audit/sealing.py): every sealed row's hash, the chain, the
        checkpoints, and `expected_heads` (what `checkpoints()` gave earlier, kept outside the database). Reads in
        batches, in one snapshot: time linear in the rows, memory bounded.

        Returns:
            VerifyReport: `ok`, and the problems in chain order (the first is where the trail stops being the one
            that was sealed), with the rows checked and those not sealed yet.

        Raises:
            ValidationError: `expected_heads` is not a list of exported checkpoints.
            PermissionDeniedError: not trusted code or an auditor.
        """
        async with self._db.operation("audit.verify", read_only=True, principal=principal) as op:
            heads = _checked_heads(expected_heads)
            await op.authorize(None)
            # One snapshot throughout: an erasure committing between two batches would otherwise look like tampering.
            async with self._db.transaction(read_only=True) as conn:
                await begin_snapshot(conn)
                return await verify_trail(conn, self._hasher, expected_heads=heads)

    async def purge(self, *, dry_run: bool = False, principal: Principal | None = None) -> AuditPurgeReport:
        """Delete the audit rows past their retention (STRATUS_AUDIT_RETENTION_DAYS, 0 by default: for ever, and
        STRATUS_AUDIT_RETENTION_RULES by table and action), in whole sealed checkpoints from the start of the chain,
        in one transaction: a checkpoint with a row still within its retention, and every later one, stays. On
        PostgreSQL a month partition all of whose rows go is dropped rather than deleted row by row. A purged checkpoint keeps its head, so `verify`
        goes on from it (and heads exported before still match). Rows not sealed yet are never purged. The purge
        is audited in the same transaction (action `purge`, table `audit_log`, the retention and counts), and that
        row is sealed at once, with whatever else awaited the sealer, in a new checkpoint.

        Raises:
            ValidationError: `dry_run` is not a bool.
            PermissionDeniedError: not trusted code or an administrator.
        """
        async with self._db.operation("audit.purge", principal=principal) as op:
            if not isinstance(dry_run, bool):
                raise ValidationError(f"dry_run must be True or False, got {shown(dry_run)}")
            await op.authorize(None)
            settings = self._db.settings
            policy = RetentionPolicy(
                settings.STRATUS_AUDIT_RETENTION_DAYS, settings.STRATUS_AUDIT_RETENTION_RULES
            )
            if policy.keeps_everything:
                return AuditPurgeReport(policy, 0, 0)
            now = self._db.clock()
            due = await op.run(partial(_purgeable, policy=policy, now=now), tx=None)
            report = AuditPurgeReport(policy, len(due), sum(rows for _checkpoint, rows in due))
            if dry_run or not due:
                return report
            entry = self.entry(
                action=AuditAction.purge,
                table_name="audit_log",
                record_id=None,
                user_id=None,
                new_values={"retention": policy.exported(), "checkpoints": report.checkpoints},
            )
            removed = await op.run(
                partial(_purge_through, checkpoint=due[-1][0], now=now, entry=entry), tx=None
            )
            report = report._replace(rows=removed)
            # The purge's own row is sealed at once, in a new checkpoint after the purged ones.
            await self._seal_all(op, DEFAULT_SEAL_BATCH)
            return report

    async def report(
        self, since: datetime, until: datetime, *, principal: Principal | None = None
    ) -> AuditReport:
        """What the trail holds for [since, until), counted in SQL (audit/report.py): rows by action, table,
        principal kind and UTC day; refusals; exports, erasures and sensitive reads; the most active data subjects;
        and the record of processing operations by purpose (LGPD Art. 37).

        Raises:
            ValidationError: `since` or `until` not a time-zone-aware datetime, or `until` not after `since`.
            PermissionDeniedError: not trusted code or an auditor.
        """
        async with self._db.operation("audit.report", read_only=True, principal=principal) as op:
            window = validate_input(_ReportWindow, {"since": since, "until": until})
            await op.authorize(None)
            return await op.run(partial(_build_report, since=window.since, until=window.until), tx=None)

    async def checkpoints(self, *, principal: Principal | None = None) -> list[Checkpoint]:
        """Every checkpoint, oldest first: `Checkpoint.exported()` is what to keep outside the database.

        Raises:
            PermissionDeniedError: not trusted code or an auditor.
        """
        async with self._db.operation("audit.checkpoints", read_only=True, principal=principal) as op:
            await op.authorize(None)
            return await op.run(list_checkpoints, tx=None)


class _ReportWindow(InputModel):
    since: Timestamp
    until: Timestamp

    @model_validator(mode="after")
    def _until_after_since(self) -> _ReportWindow:
        if self.until <= self.since:
            raise ValueError(
                f"until ({self.until.isoformat()}) must be after since ({self.since.isoformat()})"
            )
        return self


async def _build_report(conn: AsyncConnection, *, since: datetime, until: datetime) -> AuditReport:
    return await build_report(conn, since, until)


async def _purgeable(
    conn: AsyncConnection, *, policy: RetentionPolicy, now: datetime
) -> list[tuple[Checkpoint, int]]:
    return await purgeable(conn, policy, now)


async def _purge_through(
    conn: AsyncConnection, *, checkpoint: Checkpoint, now: datetime, entry: AuditEntry
) -> int:
    return await purge_through(conn, checkpoint, now, entry)


async def _add_partitions(conn: AsyncConnection, *, now: datetime) -> None:
    await add_partitions(conn, now)


async def _seal_batch(
    conn: AsyncConnection, *, hasher: FieldHasher, now: datetime, size: int
) -> Checkpoint | None:
    return await seal_batch(conn, hasher, now, size)


def _checked_heads(heads: object) -> list[Mapping[str, Any]]:
    """Exported checkpoints: a list of objects each with an integer `last_position` and a 64-hex `head`."""
    if not isinstance(heads, list | tuple) or not all(
        isinstance(head, Mapping)
        and isinstance(head.get("last_position"), int)
        and not isinstance(head.get("last_position"), bool)
        and isinstance(head.get("head"), str)
        and len(head["head"]) == 64
        for head in heads
    ):
        raise ValidationError(
            "expected_heads must be a list of exported checkpoints ({'checkpoint_id', 'last_position', 'head'}, "
            f"as Checkpoint.exported() gives them), got {shown(heads)}"
        )
    return list(heads)


async def open_events(conn: AsyncConnection, personal: PersonalData, rows: Sequence[Any]) -> list[AuditEvent]:
    """AuditEvents from audit rows, their sealed values decrypted with each subject's data key (SHREDDED for a
    user erased since)."""
    events = []
    for row in rows:
        event = AuditEvent.model_validate(row)
        if is_token_bearing(event.old_values) or is_token_bearing(event.new_values):
            data_key = None if event.user_id is None else await personal.key_of(conn, event.user_id)
            event = event.model_copy(
                update={
                    side: personal.open_audit(
                        side,
                        getattr(event, side),
                        event.audit_id,
                        data_key,
                        table=event.table_name,
                        record_id=event.record_id,
                        outside=event.actor.startswith(OUTSIDE_ACTOR_PREFIX),
                    )
                    for side in ("old_values", "new_values")
                }
            )
        events.append(event)
    return events


def is_token_bearing(values: Any) -> bool:
    """Whether an audit row's old or new values hold a sealed value."""
    return isinstance(values, dict) and any(is_token(value) for value in values.values())


class AuditPurgeReport(NamedTuple):
    """What `AuditManager.purge` did (or would do) under `retention`: rows past it purged in whole checkpoints."""

    retention: RetentionPolicy
    checkpoints: int
    rows: int


class SealReport(NamedTuple):
    """What `AuditManager.seal` did: the checkpoints it made (the last one's head is the chain's head) and the rows
    they sealed."""

    checkpoints: tuple[Checkpoint, ...]
    rows_sealed: int


def same_value(old: Any, new: Any) -> bool:
    """Whether storing `new` over `old` changes nothing, compared as JSON: by type and value, so `true` is not `1`
    and `1.0` is not `1` (each reads back as what was stored), objects whatever their key order, arrays in order.
    Datetimes are compared as instants: the same instant written in another time zone is no change."""
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool) and old == new
    if isinstance(old, float) or isinstance(new, float):
        return isinstance(old, float) and isinstance(new, float) and old == new
    if isinstance(old, dict) or isinstance(new, dict):
        return (
            isinstance(old, dict)
            and isinstance(new, dict)
            and old.keys() == new.keys()
            and all(same_value(item, new[key]) for key, item in old.items())
        )
    if isinstance(old, list | tuple) or isinstance(new, list | tuple):
        return (
            isinstance(old, list | tuple)
            and isinstance(new, list | tuple)
            and len(old) == len(new)
            and all(same_value(a, b) for a, b in zip(old, new, strict=True))
        )
    # int with int, str (or a str enum) with str, datetime with datetime (as instants), None, UUIDs…
    return bool(old == new)


def changed_fields(before: BaseModel, changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What an update's audit row keeps: (old values, new values) of the fields whose value really changes.

    Values are compared as JSON (`same_value`): `true` over `1` is a change; the same instant written in another
    time zone is not.
    """
    changed = {key for key, value in changes.items() if not same_value(getattr(before, key), value)}
    after = type(before).model_validate(before.model_dump() | changes)
    return before.model_dump(mode="json", include=changed), after.model_dump(mode="json", include=changed)
