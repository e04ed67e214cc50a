"""Retention (LGPD Art. 15 and 16: data kept no longer than needed): docs/privacy.md "Retention".

Three rules, each off until configured (Settings `STRATUS_RETENTION_*_DAYS`), applied in this order:

- **conversations**: one with no activity (`last_activity_at`) for N days is purged with all its messages. A message
  is never deleted on its own: a conversation's messages are numbered without gaps (`seq`), and its summary, its
  counters and the context window are made from them, so a conversation loses its history whole or not at all;
- **memories**: one neither updated (`updated_at`) nor read (`last_accessed_at`) for N days is purged, whatever its
  tier (retention is the controller's limit; expiry is the memory's own lifetime);
- **inactive accounts**: a user whose `last_active` is N days old is erased (`erase_user`, legal hold included).
  Tombstones, users already erased whose held rows remain, are not erased again.

Each batch takes its candidates in primary key order from where the batch before it stopped (keyset), in a
transaction of its own: a run reads each table once through its primary key, whatever the backlog, and needs no
index on the times it compares. Such indexes would be written by every add_message (`last_activity_at`), every read
of a memory (`last_accessed_at`) and the activity tracker (`last_active`), to serve a job run once a day. Candidates
are locked with SKIP LOCKED on PostgreSQL, and the lock re-checks the rule on the row as it is now: a conversation or
user active since the batch began is left alone; a row another transaction holds waits for the next run. Like
purge_expired's, these statements reach every user's rows: the rare cross-user paths DESIGN.md allows, each
audited per owner.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.rows import AuditEntry, audit_context
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.rooms_base import CONVERSATIONS, conversation_audit_values
from stratus_db.conversations.schemas import Conversation
from stratus_db.kit.models import table_of
from stratus_db.memory.plans import purge_audit
from stratus_db.memory.repository import PurgedMemory
from stratus_db.models import ConversationRow, MemoryRow, UserRow
from stratus_db.privacy.erasure import is_tombstone

if TYPE_CHECKING:
    from stratus_db.config import Settings
    from stratus_db.memory.cache import MemoryCache

DEFAULT_BATCH_SIZE = 100
"""Rows per batch: a batch of conversations takes their messages with it, one of users everything they hold."""
MAX_BATCH_SIZE = 10_000

_memories = table_of(MemoryRow)
_conversations = table_of(ConversationRow)
_CONVERSATION_COLUMNS = [column for column in _conversations.c if column.name in Conversation.model_fields]


class RetentionKind(StrEnum):
    """A retention rule: the kind of data it deletes."""

    conversations = "conversations"
    """With their messages."""
    memories = "memories"
    inactive_accounts = "inactive_accounts"
    """Users erased with everything of theirs (erase_user)."""


SETTINGS: dict[RetentionKind, str] = {
    RetentionKind.conversations: "STRATUS_RETENTION_CONVERSATIONS_DAYS",
    RetentionKind.memories: "STRATUS_RETENTION_MEMORIES_DAYS",
    RetentionKind.inactive_accounts: "STRATUS_RETENTION_INACTIVE_ACCOUNTS_DAYS",
}
"""Each rule's setting, in the order the rules are applied."""
_REASONS = {
    RetentionKind.conversations: "retention: no activity for {days} days",
    RetentionKind.memories: "retention: neither updated nor read for {days} days",
    RetentionKind.inactive_accounts: "retention: inactive for {days} days",
}


class RetentionRule(NamedTuple):
    """A configured rule: its data older than `cutoff` (now − `days`) goes."""

    kind: RetentionKind
    days: int
    cutoff: datetime

    @property
    def reason(self) -> str:
        """Why a deletion under this rule was made, for its audit row."""
        return _REASONS[self.kind].format(days=self.days)


class RetentionReport(NamedTuple):
    """What apply_retention did (or, in a dry run, would do).

    `rules` are the configured rules (an unconfigured kind is absent: kept for ever); `deleted` counts, per rule,
    the conversations purged, the memories purged and the users erased; `messages` the messages that went with the
    conversations. The counts of a dry run are taken on the data as it is, each rule on its own.
    """

    dry_run: bool
    rules: tuple[RetentionRule, ...]
    deleted: dict[RetentionKind, int]
    messages: int


class Batch(NamedTuple):
    """One batch's outcome: rows deleted, messages deleted with them, and the key to go on after."""

    deleted: int
    messages: int
    last: uuid.UUID | None


def configured_rules(settings: Settings, now: datetime) -> tuple[RetentionRule, ...]:
    """The rules the settings turn on (a setting of 0 keeps that kind for ever), with their cutoffs at `now`."""
    rules = []
    for kind, setting in SETTINGS.items():
        days: int = getattr(settings, setting)
        if days > 0:
            rules.append(RetentionRule(kind, days, now - timedelta(days=days)))
    return tuple(rules)


def _past_conversations(cutoff: datetime) -> ColumnElement[bool]:
    return ConversationRow.last_activity_at < cutoff


def _past_memories(cutoff: datetime) -> ColumnElement[bool]:
    # A memory never read has no last_accessed_at: its last update is its last use.
    return (MemoryRow.updated_at < cutoff) & or_(
        MemoryRow.last_accessed_at.is_(None), MemoryRow.last_accessed_at < cutoff
    )


def _past_users(cutoff: datetime) -> ColumnElement[bool]:
    return (UserRow.last_active < cutoff) & ~is_tombstone()


async def count_past(conn: AsyncConnection, rule: RetentionRule) -> tuple[int, int]:
    """How many rows `rule` would delete now, and (conversations) how many messages with them."""
    if rule.kind is RetentionKind.conversations:
        statement = select(func.count(), func.coalesce(func.sum(ConversationRow.message_count), 0)).where(
            _past_conversations(rule.cutoff)
        )
        conversations, messages = (await conn.execute(statement)).one()
        return int(conversations), int(messages)
    if rule.kind is RetentionKind.memories:
        past = select(func.count()).select_from(MemoryRow).where(_past_memories(rule.cutoff))
    else:
        past = select(func.count()).select_from(UserRow).where(_past_users(rule.cutoff))
    return (await conn.execute(past)).scalar_one(), 0


async def purge_conversations(
    conn: AsyncConnection, audit: AuditManager, rule: RetentionRule, after: uuid.UUID | None, limit: int
) -> Batch:
    """Purge up to `limit` conversations past `rule` with key greater than `after`, their messages with them (ON
    DELETE CASCADE), audited as purge_conversation does (a `purge` row per conversation with its counts, never its
    words), plus the reason. One statement deletes the batch: a statement per conversation cost ten times as much."""
    candidates = (
        select(ConversationRow.conversation_id)
        .where(_past_conversations(rule.cutoff))
        .order_by(ConversationRow.conversation_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        candidates = candidates.where(ConversationRow.conversation_id > after)
    statement = (
        delete(_conversations)
        .where(ConversationRow.conversation_id.in_(candidates.scalar_subquery()))
        .returning(*_CONVERSATION_COLUMNS)
    )
    purged = [Conversation.model_validate(dict(row)) for row in (await conn.execute(statement)).mappings()]
    await AuditManager.append(
        conn,
        [
            audit.entry(
                action=AuditAction.purge,
                table_name=CONVERSATIONS,
                record_id=conversation.conversation_id,
                user_id=conversation.user_id,
                old_values=conversation_audit_values(conversation),
                new_values={"reason": rule.reason},
            )
            for conversation in purged
        ],
    )
    return Batch(
        len(purged),
        sum(conversation.message_count for conversation in purged),
        max((conversation.conversation_id for conversation in purged), default=after),
    )


async def purge_memories(
    conn: AsyncConnection,
    cache: MemoryCache,
    now: datetime,
    rule: RetentionRule,
    after: uuid.UUID | None,
    limit: int,
) -> Batch:
    """Purge up to `limit` memories past `rule` with key greater than `after`, audited as purge_expired does (one
    row per user per batch, listing the ids and keys), plus the reason; the caches forget them everywhere."""
    candidates = (
        select(MemoryRow.memory_id)
        .where(_past_memories(rule.cutoff))
        .order_by(MemoryRow.memory_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        candidates = candidates.where(MemoryRow.memory_id > after)
    statement = (
        delete(_memories)
        .where(MemoryRow.memory_id.in_(candidates.scalar_subquery()))
        .returning(MemoryRow.memory_id, MemoryRow.user_id, MemoryRow.key)
    )
    purged = [PurgedMemory(*row) for row in await conn.execute(statement)]
    by_user: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {}
    for memory in purged:
        by_user.setdefault(memory.user_id, []).append((memory.memory_id, memory.key))
    context = audit_context()
    entries: list[AuditEntry] = []
    for owner, memories in by_user.items():
        await cache.invalidate_everywhere(conn, owner, [key for _memory_id, key in memories])
        entries.append(
            purge_audit(owner, memories, now, context)._replace(new_values={"reason": rule.reason})
        )
    await AuditManager.append(conn, entries)
    return Batch(len(purged), 0, max((memory.memory_id for memory in purged), default=after))


async def inactive_users(
    conn: AsyncConnection, rule: RetentionRule, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Up to `limit` users past `rule` with key greater than `after`, locked for their erasure in this transaction."""
    candidates = (
        select(UserRow.user_id)
        .where(_past_users(rule.cutoff))
        .order_by(UserRow.user_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        candidates = candidates.where(UserRow.user_id > after)
    return list((await conn.execute(candidates)).scalars())
