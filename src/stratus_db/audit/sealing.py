"""Tamper evidence for the audit trail: a hash chain over the rows, sealed in checkpoints, and its verification.

The sealer (`seal_batch`, run by `AuditManager.seal` / `stratus-db audit seal`) takes audit rows that have committed
but are not yet sealed, gives each the next position, and stores in `audit_chain` the hash of its fields and the
chain's hash up to it; each run ends in a checkpoint whose head (the chain's hash at its last position) can be kept
outside the database (`stratus-db audit checkpoint --export`). Writers never wait for it: an audit row is written as
before, and sealed later. `verify` recomputes every row's hash and the whole chain, in position order, in batches
(time linear in the rows, memory bounded by a batch), and reports what no longer matches: a row modified, a row
deleted, a row inserted into the sealed past, a seal or checkpoint altered, or a head that differs from one kept
outside.

A row's hash is the hash of its fields' hashes, each field hashed on its own: an erasure (LGPD) that rewrites fields
of a sealed row records each rewrite as the field's hash before and after (`audit_redactions`), and verification
accepts exactly those rewrites. Values encrypted under a user's data key are hashed as stored (ciphertext), so
destroying the key changes nothing here. docs/audit.md tells the model and its limits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from sqlalchemy import ColumnElement, and_, bindparam, case, delete, func, insert, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.rows import AuditEntry
from stratus_db.kit.models import table_of
from stratus_db.models import (
    AuditChainRow,
    AuditCheckpointRow,
    AuditRedactionRow,
    AuditRewritePermitRow,
    AuditRow,
)

FIELDS: Final = (
    "audit_id",
    "user_id",
    "action",
    "table_name",
    "record_id",
    "old_values",
    "new_values",
    "timestamp",
    "ip_address",
    "user_agent",
    "actor",
    "trace_id",
    "purpose",
)
"""The columns of an audit row that its hash covers, in this order. Listed, not read from the model: a column added to
audit_log later must not change the hash of a row sealed before it (see LATER_FIELDS)."""
LATER_FIELDS: Final = ("on_behalf_of",)
"""Columns added after the first seals (revision 0013), in this order after FIELDS: a row's hash covers one only when
it holds a value. Rows sealed before it existed hold NULL there and keep their hashes; a value set or cleared later
changes the hash all the same."""
GENESIS: Final = "0" * 64
"""The chain's hash before its first row."""
LATE_COMMIT_GRACE: Final = timedelta(minutes=5)
"""An unsealed row whose timestamp is older than the newest sealed row by more than this was not a slow commit: it was
put into the sealed past (verify reports it as inserted, and the sealer leaves it). Longer than any transaction the
library runs on its own; a caller's transaction (`tx=`) or a psql session held open longer has its rows reported."""
REFERENCE_WINDOW: Final = 100
MAX_PROBLEMS: Final = 100
MAX_COMBINATIONS: Final = 4096
"""Combinations of rewritten fields' earlier values tried for one row (far more than erasures ever produce)."""
PARTITIONS_AHEAD: Final = 2
"""PostgreSQL: months of audit_log partitions made ahead of the current one."""
_SEALER_LOCK: Final = 0x5EA1_A0D1
"""PostgreSQL advisory lock key: one sealer at a time (SQLite's single writer already serialises them)."""

_audit = table_of(AuditRow)
_chain = table_of(AuditChainRow)
_checkpoints = table_of(AuditCheckpointRow)
_redactions = table_of(AuditRedactionRow)
_permits = table_of(AuditRewritePermitRow)


def _canonical(value: Any) -> str:
    """One text per value, whatever the backend returned: UUIDs in their usual form, instants in UTC with
    microseconds, JSON with sorted keys."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


FieldHasher = Callable[[bytes], str]
"""Keyed hash of a field's bytes: BlindIndex.audit_field (HMAC-SHA-256 under a key derived from
STRATUS_BLIND_INDEX_KEY), so that a hash kept after an erasure cannot be checked against guesses."""


def field_hash(hasher: FieldHasher, name: str, value: Any) -> str:
    """The hash of one field of an audit row (its name bound in)."""
    return hasher(f"{name}\x00{_canonical(value)}".encode())


def field_hashes(hasher: FieldHasher, row: Mapping[str, Any]) -> dict[str, str]:
    """The hashes of the fields a row's hash covers: every one of FIELDS, and those of LATER_FIELDS that hold a
    value."""
    hashes = {name: field_hash(hasher, name, row[name]) for name in FIELDS}
    for name in LATER_FIELDS:
        if row.get(name) is not None:
            hashes[name] = field_hash(hasher, name, row[name])
    return hashes


def row_hash(hashes: Mapping[str, str]) -> str:
    return hashlib.sha256(
        "".join(hashes[name] for name in (*FIELDS, *LATER_FIELDS) if name in hashes).encode()
    ).hexdigest()


def chain_hash(previous: str, position: int, hashed_row: str) -> str:
    return hashlib.sha256(f"{previous}:{position}:{hashed_row}".encode()).hexdigest()


# -- sealing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One run of the sealer: the positions it sealed and the chain's hash after the last one."""

    checkpoint_id: int
    sealed_at: datetime
    first_position: int
    last_position: int
    head: str
    purged_at: datetime | None = None
    """When retention purged its rows and seals (its head stays: verification starts after it)."""

    def exported(self) -> dict[str, Any]:
        """The form `stratus-db audit checkpoint --export` writes, and `verify(expected_heads=...)` reads."""
        return {
            "checkpoint_id": self.checkpoint_id,
            "sealed_at": self.sealed_at.isoformat(),
            "last_position": self.last_position,
            "head": self.head,
        }


async def seal_batch(
    conn: AsyncConnection, hasher: FieldHasher, now: datetime, size: int
) -> Checkpoint | None:
    """Seal up to `size` committed, unsealed audit rows (oldest first) in one checkpoint; None when none is left."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEALER_LOCK})
    # The chain goes on from the newest checkpoint (each batch ends in one): its seals may have been purged since.
    last = (
        await conn.execute(
            select(_checkpoints.c.last_position, _checkpoints.c.head)
            .order_by(_checkpoints.c.checkpoint_id.desc())
            .limit(1)
        )
    ).first()
    position, previous = (0, GENESIS) if last is None else (last.last_position, last.head)
    reference = await sealed_reference(conn)
    pending = (
        select(_audit)
        .outerjoin(_chain, _chain.c.audit_id == _audit.c.audit_id)
        .where(_chain.c.audit_id.is_(None))
        .order_by(_audit.c.timestamp, _audit.c.audit_id)
        .limit(size)
    )
    if reference is not None:
        # Rows are sealed oldest first: what is left starts near the last one sealed (a range of the timestamp
        # index, not the whole trail). An unsealed row older than that by more than the grace was not a slow
        # commit: verify reports it as inserted, by the same reference.
        pending = pending.where(_audit.c.timestamp >= reference - LATE_COMMIT_GRACE)
    rows = [dict(row) for row in (await conn.execute(pending)).mappings()]
    if not rows:
        return None
    latest = await conn.scalar(select(func.max(_checkpoints.c.checkpoint_id)))
    checkpoint_id = (latest or 0) + 1
    first = position + 1
    seals = []
    for row in rows:
        position += 1
        hashed = row_hash(field_hashes(hasher, row))
        previous = chain_hash(previous, position, hashed)
        seals.append(
            {
                "position": position,
                "audit_id": row["audit_id"],
                "row_hash": hashed,
                "chain_hash": previous,
                "checkpoint_id": checkpoint_id,
            }
        )
    await conn.execute(insert(_chain), seals)
    checkpoint = Checkpoint(checkpoint_id, now, first, position, previous)
    await conn.execute(
        insert(_checkpoints).values(
            checkpoint_id=checkpoint_id,
            sealed_at=now,
            first_position=first,
            last_position=position,
            head=previous,
        )
    )
    return checkpoint


async def add_partitions(conn: AsyncConnection, now: datetime) -> None:
    """PostgreSQL: make audit_log's partitions for the month of `now` and the PARTITIONS_AHEAD next, those not made
    yet (`stratus_audit_add_partition`, revision 0013): the sealer runs it, so a month's rows land in their partition,
    which retention can drop whole. Nothing on SQLite."""
    if conn.dialect.name != "postgresql":
        return
    month = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(PARTITIONS_AHEAD + 1):
        await conn.execute(text("SELECT stratus_audit_add_partition(:moment)"), {"moment": month})
        month = (month + timedelta(days=32)).replace(day=1)


async def sealed_reference(conn: AsyncConnection) -> datetime | None:
    """The timestamp of the newest sealed row still present (among the last REFERENCE_WINDOW positions): the sealer
    takes rows from it on (less the grace), and verify calls older unsealed rows inserted. Once retention has purged
    every sealed row, the time the newest checkpoint was sealed (its rows were all dated before it). None before any
    seal."""
    recent = select(_chain.c.audit_id).order_by(_chain.c.position.desc()).limit(REFERENCE_WINDOW).subquery()
    newest: datetime | None = await conn.scalar(
        select(func.max(_audit.c.timestamp)).join_from(recent, _audit, _audit.c.audit_id == recent.c.audit_id)
    )
    if newest is None:
        newest = await conn.scalar(
            select(_checkpoints.c.sealed_at).order_by(_checkpoints.c.checkpoint_id.desc()).limit(1)
        )
    return newest


async def checkpoints(conn: AsyncConnection) -> list[Checkpoint]:
    rows = await conn.execute(select(_checkpoints).order_by(_checkpoints.c.checkpoint_id))
    return [Checkpoint(**row) for row in rows.mappings()]


def redactions(
    hasher: FieldHasher,
    audit_id: uuid.UUID,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    now: datetime,
) -> list[dict[str, Any]]:
    """The redaction rows of an erasure's rewrite of audit row `audit_id` from `before` to `after`: one per field
    that changes, its hash before and after. A field rewritten again later gets another row: verification follows
    them back to whichever value was sealed."""
    return [
        {
            "audit_id": audit_id,
            "field": name,
            "original_hash": field_hash(hasher, name, before[name]),
            "redacted_hash": field_hash(hasher, name, after[name]),
            "erased_at": now,
        }
        for name in after
        if field_hash(hasher, name, before[name]) != field_hash(hasher, name, after[name])
    ]


async def record_redactions(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write redaction rows (`redactions`) in one statement; one already recorded is left as it is."""
    if not rows:
        return
    known = {
        (row.audit_id, row.field, row.original_hash)
        for row in await conn.execute(
            select(_redactions.c.audit_id, _redactions.c.field, _redactions.c.original_hash).where(
                _redactions.c.audit_id.in_({row["audit_id"] for row in rows})
            )
        )
    }
    fresh = [row for row in rows if (row["audit_id"], row["field"], row["original_hash"]) not in known]
    if fresh:
        await conn.execute(insert(_redactions), fresh)


@asynccontextmanager
async def rewrite_permit(conn: AsyncConnection, reason: str) -> AsyncIterator[None]:
    """Let the enclosed statements update or delete audit_log rows (revision 0012's triggers refuse otherwise): a
    permit row written in `conn`'s transaction and deleted before it commits, so no other transaction sees it. On an
    error the transaction is rolled back, permit included."""
    permit = uuid.uuid4()
    await conn.execute(insert(_permits).values(permit_id=permit, reason=reason))
    yield
    await conn.execute(delete(_permits).where(_permits.c.permit_id == permit))


class RetentionPolicy(NamedTuple):
    """How long audit rows are kept: `default_days` (STRATUS_AUDIT_RETENTION_DAYS) unless one of `rules`
    (STRATUS_AUDIT_RETENTION_RULES: `table`, `table:action` or `*:action` → days) is more specific; 0 is for ever."""

    default_days: int
    rules: Mapping[str, int]

    @property
    def keeps_everything(self) -> bool:
        return not self.default_days and not any(self.rules.values())

    def exported(self) -> dict[str, Any]:
        return {"default_days": self.default_days, "rules": dict(self.rules)}

    def cutoff(self, now: datetime) -> ColumnElement[datetime]:
        """Each audit row's cutoff as an SQL expression: the row is past retention when dated before it (NULL: kept
        for ever)."""

        def moment(days: int) -> ColumnElement[datetime]:
            return literal(None if days == 0 else now - timedelta(days=days), type_=_audit.c.timestamp.type)

        def specificity(key: str) -> int:
            table, _, action = key.partition(":")
            return 0 if table != "*" and action else 1 if action else 2

        branches = []
        for key in sorted(self.rules, key=specificity):
            table, _, action = key.partition(":")
            conditions = [
                *([_audit.c.table_name == table] if table != "*" else []),
                *([_audit.c.action == action] if action else []),
            ]
            branches.append((and_(*conditions), moment(self.rules[key])))
        if not branches:
            return moment(self.default_days)
        return case(*branches, else_=moment(self.default_days))


async def purgeable(
    conn: AsyncConnection, policy: RetentionPolicy, now: datetime
) -> list[tuple[Checkpoint, int]]:
    """The oldest checkpoints not purged yet all of whose rows are past their retention (`policy`), in order, each
    with its number of rows: retention purges whole sealed ranges only, from the start of the chain."""
    found = []
    kept = case((_audit.c.timestamp < policy.cutoff(now), 0), else_=1)
    for checkpoint in await checkpoints(conn):
        if checkpoint.purged_at is not None:
            continue
        present, still_kept, rows = (
            await conn.execute(
                select(func.count(_audit.c.audit_id), func.sum(kept), func.count(_chain.c.position))
                .select_from(_chain.outerjoin(_audit, _audit.c.audit_id == _chain.c.audit_id))
                .where(_chain.c.checkpoint_id == checkpoint.checkpoint_id)
            )
        ).one()
        if not present or still_kept:
            break
        found.append((checkpoint, int(rows)))
    return found


async def purge_through(
    conn: AsyncConnection, checkpoint: Checkpoint, now: datetime, entry: AuditEntry
) -> int:
    """Remove every sealed row up to `checkpoint` (the last of those `purgeable` found), with their seals and
    redactions; keep the checkpoints, marked purged; write the purge's audit row (`entry`, its new values completed
    with the last checkpoint purged and the rows removed). One transaction. Returns the rows removed.

    PostgreSQL: through `stratus_audit_purge` (revision 0013), which the application's role may run though it may
    not DELETE from audit_log: it drops each past month partition all of whose rows go rather than deleting them,
    writes the audit row itself (a direct call cannot purge unrecorded), and refuses to go under the owner's minimum
    retention, if one is set."""
    if conn.dialect.name == "postgresql":
        context = entry.context._asdict()
        removed = await conn.scalar(
            text("SELECT stratus_audit_purge(:checkpoint, :now, CAST(:row AS jsonb))"),
            {
                "checkpoint": checkpoint.checkpoint_id,
                "now": now,
                "row": json.dumps({"new_values": entry.new_values} | context, default=str),
            },
        )
        return int(removed or 0)
    sealed = select(_chain.c.audit_id).where(_chain.c.position <= checkpoint.last_position)
    async with rewrite_permit(conn, "retention"):
        await conn.execute(delete(_redactions).where(_redactions.c.audit_id.in_(sealed)))
        removed = (await conn.execute(delete(_audit).where(_audit.c.audit_id.in_(sealed)))).rowcount
    await conn.execute(delete(_chain).where(_chain.c.position <= checkpoint.last_position))
    await conn.execute(
        _checkpoints.update()
        .where(_checkpoints.c.checkpoint_id <= checkpoint.checkpoint_id, _checkpoints.c.purged_at.is_(None))
        .values(purged_at=now)
    )
    values = entry.new_values | {"through_checkpoint": checkpoint.checkpoint_id, "rows": removed}
    await conn.execute(insert(_audit).values(entry._replace(new_values=values).row()))
    return int(removed)


async def rewrite_for_erasure(
    conn: AsyncConnection,
    subject: uuid.UUID,
    pseudonym: uuid.UUID,
    rows: Sequence[Mapping[str, Any]],
    rewrites: Sequence[Mapping[str, Any]],
) -> None:
    """Apply an erasure's rewrite of audit rows about `subject` (each of `rows`: its audit_id and its new user_id,
    record_id, old_values, new_values, actor and on_behalf_of; the address and user agent go) and record its
    redactions.

    PostgreSQL: through `stratus_audit_erase` (revision 0013), which the application's role may run though it may
    not UPDATE audit_log: given only the rows' ids, it checks that the person is erased, each row is about them and
    the pseudonym is new, and computes the new values itself, as `rows` has them (their redactions' hashes must
    match). SQLite: `rows`' values, written under a rewrite permit."""
    if conn.dialect.name == "postgresql":
        await conn.execute(
            text("SELECT stratus_audit_erase(:subject, :pseudonym, :rewritten, CAST(:rewrites AS jsonb))"),
            {
                "subject": subject,
                "pseudonym": pseudonym,
                "rewritten": [row["audit_id"] for row in rows],
                "rewrites": json.dumps(list(rewrites), default=str),
            },
        )
        return
    columns = ("user_id", "record_id", "old_values", "new_values", "actor", "on_behalf_of")
    statement = (
        _audit.update()
        .where(_audit.c.audit_id == bindparam("b_audit_id"))
        .values(
            {name: bindparam(f"b_{name}", type_=_audit.c[name].type) for name in columns}
            | {"ip_address": None, "user_agent": None}
        )
    )
    async with rewrite_permit(conn, "erasure"):
        await record_redactions(conn, rewrites)
        await conn.execute(
            statement,
            [{"b_audit_id": row["audit_id"]} | {f"b_{name}": row[name] for name in columns} for row in rows],
        )


# -- verification --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that no longer matches its seal."""

    kind: str
    """`modified`, `deleted`, `inserted`, `seal altered`, `checkpoint altered`, `head differs` or `checkpoint missing`."""
    position: int | None
    audit_id: uuid.UUID | None
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """What `verify` found: rows and checkpoints checked, rows not sealed yet, and the problems in chain order (the
    first is where the trail stops being the one that was sealed; at most MAX_PROBLEMS are listed)."""

    rows_checked: int = 0
    checkpoints_checked: int = 0
    unsealed: int = 0
    redacted: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


async def verify(
    conn: AsyncConnection,
    hasher: FieldHasher,
    *,
    expected_heads: Sequence[Mapping[str, Any]] = (),
    batch: int = 1000,
) -> VerifyReport:
    """Recompute every sealed row's hash and the chain, compare them with the seals, the checkpoints and
    `expected_heads` (checkpoints exported earlier), and count the rows not sealed yet."""
    report = VerifyReport()
    listed = await checkpoints(conn)
    stored = {checkpoint.last_position: checkpoint for checkpoint in listed}
    report.checkpoints_checked = len(stored)
    _check_ranges(report, listed)
    # Retention purged the oldest checkpoints' rows and seals: the chain goes on from the last purged head.
    purged = [checkpoint for checkpoint in stored.values() if checkpoint.purged_at is not None]
    heads_at: dict[int, str] = {checkpoint.last_position: checkpoint.head for checkpoint in purged}
    last_purged = max(purged, key=lambda checkpoint: checkpoint.last_position, default=None)
    previous, position = (
        (GENESIS, 0) if last_purged is None else (last_purged.head, last_purged.last_position)
    )
    while True:
        statement = (
            select(_chain).where(_chain.c.position > position).order_by(_chain.c.position).limit(batch)
        )
        seals = [dict(seal) for seal in (await conn.execute(statement)).mappings()]
        if not seals:
            break
        ids = [seal["audit_id"] for seal in seals]
        rows = {
            row["audit_id"]: dict(row)
            for row in (await conn.execute(select(_audit).where(_audit.c.audit_id.in_(ids)))).mappings()
        }
        rewrites: dict[uuid.UUID, dict[str, dict[str, str]]] = {}
        for redaction in await conn.execute(select(_redactions).where(_redactions.c.audit_id.in_(ids))):
            rewrites.setdefault(redaction.audit_id, {}).setdefault(redaction.field, {})[
                redaction.redacted_hash
            ] = redaction.original_hash
        for seal in seals:
            report.rows_checked += 1
            if seal["position"] != position + 1:
                report.add(
                    Problem(
                        "seal altered",
                        position + 1,
                        None,
                        f"positions {position + 1} to {seal['position'] - 1} are missing from the chain",
                    )
                )
            position = seal["position"]
            _check_row(report, hasher, seal, rows.get(seal["audit_id"]), rewrites.get(seal["audit_id"], {}))
            # Going on from the recomputed hash: one altered seal is one report, not one for every later row.
            previous = chain_hash(previous, position, seal["row_hash"])
            if previous != seal["chain_hash"]:
                report.add(
                    Problem(
                        "seal altered", position, seal["audit_id"], "the chain's hash here does not follow"
                    )
                )
            if position in stored:
                heads_at[position] = previous
                if stored[position].head != previous:
                    report.add(
                        Problem(
                            "checkpoint altered",
                            position,
                            None,
                            f"checkpoint {stored[position].checkpoint_id}'s head differs from the chain",
                        )
                    )
    for checkpoint in stored.values():
        if checkpoint.last_position > position:
            report.add(
                Problem(
                    "seal altered",
                    checkpoint.last_position,
                    None,
                    f"checkpoint {checkpoint.checkpoint_id} ends at position {checkpoint.last_position}, past the "
                    f"chain's end ({position}): sealed rows were removed",
                )
            )
    _check_heads(report, expected_heads, stored, heads_at, position)
    await _count_unsealed(conn, report)
    return report


def _check_ranges(report: VerifyReport, listed: Sequence[Checkpoint]) -> None:
    """Checkpoints, in order, cover the chain from position 1 without gap or overlap: a checkpoint deleted or
    altered in the middle shows here, heads kept outside or not."""
    expected = 1
    for checkpoint in listed:
        if checkpoint.first_position != expected or checkpoint.last_position < checkpoint.first_position:
            report.add(
                Problem(
                    "checkpoint missing" if checkpoint.first_position > expected else "checkpoint altered",
                    expected,
                    None,
                    f"checkpoint {checkpoint.checkpoint_id} covers positions {checkpoint.first_position} to "
                    f"{checkpoint.last_position}; the one before it ended at {expected - 1}",
                )
            )
        expected = checkpoint.last_position + 1


def _check_row(
    report: VerifyReport,
    hasher: FieldHasher,
    seal: Mapping[str, Any],
    row: Mapping[str, Any] | None,
    rewrites: Mapping[str, Mapping[str, str]],
) -> None:
    """Check one sealed row; `rewrites` are its fields' recorded erasure rewrites, field → {hash after: hash
    before}."""
    if row is None:
        report.add(Problem("deleted", seal["position"], seal["audit_id"], "the sealed audit row is gone"))
        return
    hashes = field_hashes(hasher, row)
    if row_hash(hashes) == seal["row_hash"]:
        return
    # Each rewritten field may have been sealed at any value along its rewrites (an erasure before the seal, another
    # after it): try them, newest first.
    candidates = []
    for name in hashes:
        values = [hashes[name]]
        steps = rewrites.get(name, {})
        while values[-1] in steps and steps[values[-1]] not in values:
            values.append(steps[values[-1]])
        candidates.append(values)
    for combination in itertools.islice(itertools.product(*candidates), 1, MAX_COMBINATIONS):
        if row_hash(dict(zip(hashes, combination, strict=True))) == seal["row_hash"]:
            report.redacted += 1
            return
    report.add(
        Problem("modified", seal["position"], seal["audit_id"], "the row's fields differ from its seal")
    )


def _check_heads(
    report: VerifyReport,
    expected: Iterable[Mapping[str, Any]],
    stored: Mapping[int, Checkpoint],
    heads_at: Mapping[int, str],
    end: int,
) -> None:
    """Compare the heads kept outside with the database: each must be a checkpoint still there, with the same
    head, which the recomputed chain reaches."""
    for head in expected:
        last, value, number = int(head["last_position"]), str(head["head"]), head.get("checkpoint_id")
        found = stored.get(last)
        if found is None or last > end:
            report.add(
                Problem(
                    "checkpoint missing",
                    last,
                    None,
                    f"checkpoint {number} (position {last}), kept outside, is not in the database any more",
                )
            )
        elif found.head != value or heads_at.get(last) != value:
            report.add(
                Problem("head differs", last, None, f"checkpoint {number}'s head differs from the one kept")
            )


async def _count_unsealed(conn: AsyncConnection, report: VerifyReport) -> None:
    """Rows not sealed yet; those older than the newest sealed row (beyond LATE_COMMIT_GRACE) were put into the past:
    the sealer will not take them either."""
    unsealed = (
        select(_audit.c.audit_id, _audit.c.timestamp)
        .outerjoin(_chain, _chain.c.audit_id == _audit.c.audit_id)
        .where(_chain.c.audit_id.is_(None))
    )
    report.unsealed = int(await conn.scalar(select(func.count()).select_from(unsealed.subquery())) or 0)
    reference = await sealed_reference(conn)
    if reference is None or not report.unsealed:
        return
    backdated = (
        await conn.execute(
            unsealed.where(_audit.c.timestamp < reference - LATE_COMMIT_GRACE)
            .order_by(_audit.c.timestamp, _audit.c.audit_id)
            .limit(MAX_PROBLEMS)
        )
    ).all()
    for audit_id, moment in backdated:
        report.add(
            Problem(
                "inserted",
                None,
                audit_id,
                f"an unsealed row dated {moment.isoformat()}, older than the newest sealed row ({reference.isoformat()})",
            )
        )
