"""Erasure of a person's data (LGPD Art. 16 and 18 VI): docs/privacy.md "Erasure".

In one transaction: the audit rows about the person are pseudonymised (their ids replaced by a fresh pseudonym, their
values by the names of the fields that changed, their address and user agent cleared), every row of theirs is
deleted (the user's row, and with it by ON DELETE CASCADE their credentials, memories, conversations, messages and
consents) — except the kinds of data a legal hold keeps (`STRATUS_ERASURE_LEGAL_HOLD`), in which case the user's row
stays as a tombstone without personal data so that the held rows keep their owner — and the erasure itself is
audited under the pseudonym, without the erased values. The user's data key goes with their row (or is cleared from
the tombstone when no held kind needs it): what the trail kept encrypted under it can never be read again.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, bindparam, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.sealing import FieldHasher, redactions, rewrite_for_erasure
from stratus_db.kit.models import Base, table_of
from stratus_db.models import AuditRow, UserRow
from stratus_db.privacy.kinds import ErasableKind
from stratus_db.users.repository import TOMBSTONE_INDEX_PREFIX

ERASED = "[erased]"
"""What an erased value becomes in the audit trail."""
BATCH_ROWS = 1000
SQLITE_SEARCH_INDEXES = ("memory_entries_fts", "memory_entries_fts_trigram", "messages_fts")
"""SQLite's full-text indexes: a deleted row's words stay in their segments until merged (see `forget_words`)."""

TOMBSTONE_EMAIL_DOMAIN = "erased.invalid"
"""The e-mail domain of a tombstone (a user row kept under a legal hold): `.invalid` is reserved (RFC 2606)."""

KEYED_KINDS = frozenset({ErasableKind.credentials, ErasableKind.memories})
"""Held kinds whose rows hold values under the user's data key (credentials' details, sensitive memories): holding
one keeps the key on the tombstone; otherwise erasure destroys it."""

NOT_OWNED = frozenset({"users", "audit_log"})
"""Tables with a `user_id` that erasure treats on their own: the profile itself, and the trail (pseudonymised)."""

_audit = table_of(AuditRow)
_users = table_of(UserRow)


class ErasureReport(NamedTuple):
    """What erase_user did: the pseudonym that now stands for the person in the audit trail (give it to whoever
    must refer to the erasure later), the rows deleted per table, the audit rows pseudonymised and the kinds kept
    under a legal hold."""

    pseudonym: uuid.UUID
    deleted: dict[str, int]
    audit_rows_pseudonymised: int
    held: tuple[str, ...]


def redacted(values: Any) -> Any:
    """An audit row's old or new values without their content: an object keeps its keys (which fields changed is
    not personal), each value becomes ERASED; anything else becomes ERASED; None stays None."""
    if values is None:
        return None
    if isinstance(values, dict):
        return dict.fromkeys(values, ERASED)
    return ERASED


def owned_tables(held: frozenset[ErasableKind]) -> list[str]:
    """The tables of rows owned by a user (a `user_id` column), minus those a legal hold keeps (messages go with
    conversations). Found from the schema, so that a table added later is erased without being listed here."""
    kept = {kind.value for kind in held}
    if ErasableKind.conversations in held:
        kept.add("messages")
    # Dependents first (messages before their conversations): each table's rows are deleted by its own statement.
    return [
        table.name
        for table in reversed(Base.metadata.sorted_tables)
        if table.name not in kept and table.name not in NOT_OWNED and "user_id" in table.c
    ]


async def pseudonymise_audit(
    conn: AsyncConnection, user_id: uuid.UUID, pseudonym: uuid.UUID, now: datetime, hasher: FieldHasher
) -> int:
    """Rewrite the audit rows about the person (their `user_id`, naming them as the acting user, or an agent acting
    for them) without their
    values, ids, address or user agent. Returns how many rows were rewritten. Runs after their rows are deleted, so
    that a write of theirs committed meanwhile (its audit row with it) is either refused or rewritten here. Each
    field rewritten is recorded as a redaction (audit/sealing.py), so that the sealed trail still verifies."""
    actor = f"user:{user_id}"
    statement = (
        select(_audit)
        .where((AuditRow.user_id == user_id) | (AuditRow.actor == actor) | (AuditRow.on_behalf_of == user_id))
        .order_by(AuditRow.audit_id)
        .limit(BATCH_ROWS)
    )

    def renamed(values: Any) -> Any:
        return (
            None if values is None else json.loads(json.dumps(values).replace(str(user_id), str(pseudonym)))
        )

    rewritten = 0
    after: uuid.UUID | None = None
    while True:
        page = statement if after is None else statement.where(AuditRow.audit_id > after)
        rows = [dict(row) for row in (await conn.execute(page)).mappings()]
        if not rows:
            break
        changes, rewrites = [], []
        for row in rows:
            about_them = row["user_id"] == user_id
            new = {
                "user_id": pseudonym if about_them else row["user_id"],
                "record_id": pseudonym if row["record_id"] == user_id else row["record_id"],
                # About them: values erased. About someone else, with them acting (a refused attempt, say): that
                # person's values stay, only the mentions of the erased id (a refusal's reason) change.
                "old_values": redacted(row["old_values"]) if about_them else renamed(row["old_values"]),
                "new_values": redacted(row["new_values"]) if about_them else renamed(row["new_values"]),
                "ip_address": None,
                "user_agent": None,
                "actor": f"user:{pseudonym}" if row["actor"] == actor else row["actor"],
                "on_behalf_of": pseudonym if row["on_behalf_of"] == user_id else row["on_behalf_of"],
            }
            changes.append({"audit_id": row["audit_id"]} | new)
            rewrites += redactions(hasher, row["audit_id"], row, new, now)
        await rewrite_for_erasure(conn, user_id, pseudonym, changes, rewrites)
        rewritten += len(rows)
        after = rows[-1]["audit_id"]
    return rewritten


async def delete_owned(
    conn: AsyncConnection,
    user_id: uuid.UUID,
    pseudonym: uuid.UUID,
    held: frozenset[ErasableKind],
    now: datetime,
) -> dict[str, int]:
    """Delete the person's rows, table by table (dependents first), and return how many went from each: every kind
    not held, then the user row — or, under a legal hold, its personal data (a tombstone that the held rows keep as
    their owner)."""
    deleted = {}
    for name in owned_tables(held):
        table = Base.metadata.tables[name]
        result = await conn.execute(delete(table).where(table.c.user_id == user_id))
        deleted[name] = result.rowcount
    if not held:
        deleted["users"] = (await conn.execute(delete(_users).where(UserRow.user_id == user_id))).rowcount
        return deleted
    tombstone: dict[str, Any] = {
        "name": ERASED,
        "email": f"erased-{pseudonym.hex}@{TOMBSTONE_EMAIL_DOMAIN}",
        "email_index": f"{TOMBSTONE_INDEX_PREFIX}{pseudonym.hex}",
        "preferences": {},
        "experience_level": None,
        "birth_date": None,
        "canac": None,
        "canac_index": None,
        "deactivated_at": func.coalesce(
            UserRow.deactivated_at, bindparam("b_now", type_=UserRow.deactivated_at.type)
        ),
    }
    if ErasableKind.credentials not in held:
        tombstone["licenses"] = []
    if not held & KEYED_KINDS:
        # No row kept needs the data key: destroying it shreds what the audit trail held under it.
        tombstone["data_key"] = None
    await conn.execute(update(_users).where(UserRow.user_id == user_id).values(tombstone), {"b_now": now})
    return deleted


def is_tombstone() -> ColumnElement[bool]:
    """The users that are tombstones (see `delete_owned`): already erased, the rows a legal hold keeps are theirs."""
    return UserRow.email_index.like(f"{TOMBSTONE_INDEX_PREFIX}%")


async def forget_words(conn: AsyncConnection) -> None:
    """SQLite: merge the full-text indexes' segments so that the deleted rows' words leave the shadow tables (FTS5
    keeps them, marked deleted, until a merge). PostgreSQL's tsvector is a column of the deleted row itself."""
    if conn.dialect.name != "sqlite":
        return
    for index in SQLITE_SEARCH_INDEXES:
        await conn.execute(text(f"INSERT INTO {index}({index}) VALUES ('optimize')"))
