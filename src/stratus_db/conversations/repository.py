"""All SQL on conversations and messages, scoped to one user: every statement carries the owner's filter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Executable,
    Update,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.repository import AuditRepository
from stratus_db.audit.rows import AUDIT_INPUT, AuditEntry, insert_audit_rows
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.plans import NewMessage, numbered
from stratus_db.conversations.schemas import Conversation
from stratus_db.errors import NotFoundError, Violation
from stratus_db.kit import driver
from stratus_db.kit.failures import violation_of
from stratus_db.kit.models import table_of
from stratus_db.kit.sql import BatchColumns
from stratus_db.models import ConversationRow, ConversationStatus, MessageRow

_conversations = table_of(ConversationRow)
_messages = table_of(MessageRow)
MESSAGES_TABLE = _messages.name
_RETURNED = [column for column in _conversations.c if column.name in Conversation.model_fields]
"""The columns a Conversation is made of: every statement returning conversations returns these."""


class StoredMessage(NamedTuple):
    """A row of messages as read: built straight from the driver's row (cheap), made a Message only when returned."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    seq: int
    agent_name: str | None
    message_type: str
    """A MessageType, or its value as PostgreSQL's driver returns it."""
    content: str | None
    packed_content: bytes | None
    """The zstd frame of the body once packed (conversations/packing.py); then `content` is None."""
    metadata: dict[str, Any]
    tokens_used: int
    response_time: float | None
    created_at: datetime


STORED_MESSAGE_COLUMNS = [_messages.c[name] for name in StoredMessage._fields]
"""The columns of a StoredMessage, in its order: a row selecting them is `StoredMessage(*row)`."""


class ContextRead(NamedTuple):
    """What `ConversationRepository.context` reads: the conversation's head and its newest unsummarized messages."""

    summary: str | None
    summarized_through_seq: int
    message_count: int
    newest: list[StoredMessage]
    """Newest first: those within the budget, then the first that is not (when there is one)."""


COPY_THRESHOLD = 100
"""From this many messages on, PostgreSQL takes them by binary COPY rather than a multi-row INSERT."""

_APPEND_INPUT = (
    BatchColumns(
        (
            ("message_id", "uuid"),
            ("conversation_id", "uuid"),
            ("user_id", "uuid"),
            ("agent_name", "text"),
            ("message_type", "text"),
            ("content", "text"),
            ("metadata", "text"),
            ("tokens_used", "int"),
            ("response_time", "float8"),
            ("called_at", "timestamptz"),
        )
    )
    + AUDIT_INPUT
)
"""What each append carries: the parameters of _PG_APPEND in this order, and the arrays of _PG_APPEND_MANY."""

_APPEND_AUDITED = insert_audit_rows(
    source="inserted",
    action=AuditAction.create,
    table_name="messages",
    user_id="$3",
    record_id="$1",
    new_values=f"{_APPEND_INPUT.parameter('new_values')}::jsonb || jsonb_build_object('seq', seq)",
    parameters=_APPEND_INPUT,
)
"""The audit row of _PG_APPEND's message, with its number."""
_APPEND_MANY_AUDITED = insert_audit_rows(
    source="numbered",
    action=AuditAction.create,
    table_name="messages",
    user_id="user_id",
    record_id="message_id",
    new_values="new_values::jsonb || jsonb_build_object('seq', seq)",
)
"""The audit rows of _PG_APPEND_MANY's messages, with their numbers."""

_PG_APPEND = f"""-- add_message on PostgreSQL: count, insert and audit in one statement (one round trip, autocommit)
WITH counted AS (
    UPDATE conversations
    SET message_count = message_count + 1, total_tokens = total_tokens + $8,
        last_activity_at = greatest(last_activity_at, $10), updated_at = $10
    WHERE conversation_id = $2 AND user_id = $3 AND status = 'active'
    RETURNING message_count AS seq, last_activity_at AS created_at, total_tokens - summarized_tokens AS unsummarized
), inserted AS (
    INSERT INTO messages (message_id, conversation_id, user_id, seq, agent_name, message_type, content, metadata,
                          tokens_used, response_time, created_at)
    SELECT $1, $2, $3, seq, $4, $5, $6, $7::jsonb, $8, $9, created_at FROM counted
    RETURNING seq
), audited AS (
    {_APPEND_AUDITED}
)
SELECT $1::uuid AS message_id, counted.* FROM counted JOIN inserted USING (seq)
"""

_PG_APPEND_MANY = f"""-- coalesced add_message calls on PostgreSQL: one statement for many callers' appends
WITH input AS (
    SELECT *
    FROM {_APPEND_INPUT.unnest(1)} WITH ORDINALITY AS i({_APPEND_INPUT.names}, position)
    LIMIT ${
    _APPEND_INPUT.after(1)
}  -- the arrays' length: planned as one lookup (memory/repository.py says why)
), per_conversation AS (
    SELECT conversation_id, user_id, count(*)::int AS appended, sum(tokens_used)::bigint AS tokens,
           max(called_at) AS called_at
    FROM input GROUP BY conversation_id, user_id
), locked AS (
    -- Row locks in one order (by id) for every batch: two batches in flight never wait for each other in a cycle.
    -- Each conversation is locked through its own lookup by key (a subquery with LIMIT stays apart from the join):
    -- joined, the status filter made a never-analyzed table look one row long, and the plan scanned it whole.
    SELECT c.conversation_id
    FROM (SELECT conversation_id, user_id FROM per_conversation ORDER BY conversation_id) AS p
    CROSS JOIN LATERAL (
        SELECT c.conversation_id FROM conversations AS c
        WHERE c.conversation_id = p.conversation_id AND c.user_id = p.user_id AND c.status = 'active'
        LIMIT 1
        FOR NO KEY UPDATE
    ) AS c
), counted AS (
    UPDATE conversations AS c
    SET message_count = c.message_count + p.appended, total_tokens = c.total_tokens + p.tokens,
        last_activity_at = greatest(c.last_activity_at, p.called_at), updated_at = p.called_at
    FROM per_conversation AS p JOIN locked USING (conversation_id)
    WHERE c.conversation_id = p.conversation_id AND c.user_id = p.user_id AND c.status = 'active'
    RETURNING c.conversation_id, c.user_id, c.message_count - p.appended AS base,
              c.last_activity_at AS created_at, c.total_tokens - c.summarized_tokens AS unsummarized
), numbered AS (
    -- By conversation AND owner: another user's append to this conversation was not counted, so it is not written.
    SELECT i.*, counted.base + row_number() OVER (PARTITION BY i.conversation_id ORDER BY i.position) AS seq,
           counted.created_at, counted.unsummarized
    FROM input AS i JOIN counted USING (conversation_id, user_id)
), inserted AS (
    INSERT INTO messages (message_id, conversation_id, user_id, seq, agent_name, message_type, content, metadata,
                          tokens_used, response_time, created_at)
    SELECT message_id, conversation_id, user_id, seq, agent_name, message_type, content, metadata::jsonb,
           tokens_used, response_time, created_at
    FROM numbered
), audited AS (
    {_APPEND_MANY_AUDITED}
)
SELECT message_id, seq, created_at, unsummarized FROM numbered
"""
"""The messages of one conversation are numbered in the order their callers queued them; a conversation the UPDATE
does not count (missing, foreign, not active) leaves its messages out of the result."""

_PG_CONTEXT = """-- get_context on PostgreSQL: the conversation and its newest unsummarized messages within the budget
SELECT c.summary, c.summarized_through_seq, c.message_count, recent.*
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT newest.*, sum(greatest(newest.tokens_used, 1)) OVER (ORDER BY newest.seq DESC) AS running_tokens
    FROM (
        SELECT m.message_id, m.seq, m.agent_name, m.message_type, m.content, m.metadata, m.tokens_used,
               m.response_time, m.created_at, m.packed_content
        FROM messages AS m
        WHERE m.conversation_id = c.conversation_id AND m.seq > greatest(c.summarized_through_seq, $4)
        ORDER BY m.seq DESC
        LIMIT $3 + 1
    ) AS newest
) AS recent ON recent.running_tokens - greatest(recent.tokens_used, 1) <= $3
WHERE c.conversation_id = $1 AND c.user_id = $2
ORDER BY recent.seq DESC
"""
"""A message counts at least one token in a window, so no more than max_tokens of them can fit. The rows are the
newest messages that fit, then the first that does not (when there is one): the boundary tells a cached tail whether
a larger budget needs older messages (conversations/recent.py)."""


def _append_row(message: NewMessage, audit: AuditEntry) -> dict[str, Any]:
    """One append as _APPEND_INPUT's columns, by name: the arguments of the statement, not a row read back."""
    return {
        "message_id": message.message_id,
        "conversation_id": message.conversation_id,
        "user_id": message.user_id,
        "agent_name": message.agent_name,
        "message_type": message.message_type.value,
        "content": message.content,
        "metadata": json.dumps(message.metadata),
        "tokens_used": message.tokens_used,
        "response_time": message.response_time,
        "called_at": message.created_at,
    } | audit.batch_input()


class Appended(NamedTuple):
    seq: int
    """The (last) appended message's sequence number."""
    created_at: datetime
    unsummarized: int
    """The conversation's tokens outside its summary, after the append."""


def appends_statement(appends: Sequence[tuple[NewMessage, AuditEntry]]) -> tuple[str, tuple[Any, ...]]:
    """The one PostgreSQL statement, and its arguments, that appends messages of any users and conversations, each
    with its audit entry (which the statement numbers). A lone message takes the lighter one-message statement.
    Their rows go to `appended_by_message`."""
    rows = [_append_row(message, audit) for message, audit in appends]
    if len(rows) == 1:
        return _PG_APPEND, tuple(rows[0][name] for name, _type in _APPEND_INPUT.columns)
    return _PG_APPEND_MANY, (*_APPEND_INPUT.arrays(rows), len(rows))


def appended_by_message(rows: list[dict[str, Any]]) -> dict[uuid.UUID, Appended]:
    """What an append statement wrote, by message id; a message whose conversation is missing, foreign or not active
    is not in it. `rows` are the driver's, as `driver.fetch` and `Operation.fetch` return them."""
    return {row["message_id"]: Appended(row["seq"], row["created_at"], row["unsummarized"]) for row in rows}


class ConversationRepository:
    def __init__(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        self.conn = conn
        self.user_id = user_id

    # The ownership filters are built on first use: building both cost add_message a tenth of its client time
    # (22 µs a call), and the PostgreSQL hot paths, whose SQL carries the filter itself, never use them.
    @cached_property
    def _owned(self) -> ColumnElement[bool]:
        return ConversationRow.user_id == self.user_id

    @cached_property
    def _owned_messages(self) -> ColumnElement[bool]:
        return MessageRow.user_id == self.user_id

    async def _one(self, statement: Executable) -> Conversation | None:
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else Conversation.model_validate(row)

    async def insert(self, conversation: Conversation) -> Conversation:
        """Insert the user's new `conversation`; the stored row comes back (its context as the database keeps it)."""
        assert conversation.user_id == self.user_id, "a repository writes its own user's conversations only"
        statement = insert(_conversations).values(**conversation.model_dump()).returning(*_RETURNED)
        try:
            inserted = await self._one(statement)
        except IntegrityError as exc:
            if violation_of(exc) is Violation.foreign_key:
                raise NotFoundError(f"user {self.user_id} does not exist") from exc
            raise
        assert inserted is not None, "an INSERT without a conflict clause returns its row"
        return inserted

    async def get(self, conversation_id: uuid.UUID, *, for_update: bool = False) -> Conversation | None:
        statement = select(*_RETURNED).where(self._owned, ConversationRow.conversation_id == conversation_id)
        if for_update:
            statement = statement.with_for_update()
        return await self._one(statement)

    def _update(self, conversation_id: uuid.UUID, values: dict[str, Any]) -> Update:
        # By column name: each caller below writes its own set of columns.
        return (
            update(_conversations)
            .where(self._owned, ConversationRow.conversation_id == conversation_id)
            .values(**values)
        )

    async def _set(self, conversation_id: uuid.UUID, values: dict[str, Any]) -> Conversation:
        conversation = await self._one(self._update(conversation_id, values).returning(*_RETURNED))
        assert conversation is not None, "the row is locked by this transaction"
        return conversation

    async def set_details(
        self,
        conversation_id: uuid.UUID,
        *,
        title: str | None,
        context: dict[str, Any] | None,
        updated_at: datetime,
    ) -> Conversation:
        """Replace the title and/or the context; None keeps the stored one (a title cannot be cleared)."""
        details = {"title": title, "context": context}
        return await self._set(
            conversation_id,
            {name: value for name, value in details.items() if value is not None}
            | {"updated_at": updated_at},
        )

    async def set_status(
        self, conversation_id: uuid.UUID, status: ConversationStatus, updated_at: datetime
    ) -> Conversation:
        return await self._set(conversation_id, {"status": status, "updated_at": updated_at})

    async def set_summary(
        self,
        conversation_id: uuid.UUID,
        *,
        summary: str | None,
        summarized_through_seq: int,
        summarized_tokens: int,
        updated_at: datetime,
    ) -> None:
        """Fold messages 1…summarized_through_seq (`summarized_tokens` in all) into `summary`."""
        await self.conn.execute(
            self._update(
                conversation_id,
                {
                    "summary": summary,
                    "summarized_through_seq": summarized_through_seq,
                    "summarized_tokens": summarized_tokens,
                    "updated_at": updated_at,
                },
            )
        )

    async def delete(self, conversation_id: uuid.UUID) -> None:
        """Delete the conversation; its messages go with it (ON DELETE CASCADE)."""
        await self.conn.execute(
            delete(_conversations).where(self._owned, ConversationRow.conversation_id == conversation_id)
        )

    async def page(
        self,
        *,
        statuses: tuple[ConversationStatus, ...],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Conversation]:
        statement = (
            select(*_RETURNED)
            .where(self._owned, ConversationRow.status.in_(statuses))
            .order_by(ConversationRow.last_activity_at.desc(), ConversationRow.conversation_id.desc())
            .limit(limit)
        )
        if after is not None:
            last_activity, last_id = after
            statement = statement.where(
                or_(
                    ConversationRow.last_activity_at < last_activity,
                    and_(
                        ConversationRow.last_activity_at == last_activity,
                        ConversationRow.conversation_id < last_id,
                    ),
                )
            )
        return [Conversation.model_validate(row) for row in (await self.conn.execute(statement)).mappings()]

    async def take_sequence_numbers(
        self, conversation_id: uuid.UUID, count: int, tokens: int, now: datetime
    ) -> Appended | None:
        """Count `count` more messages on an active conversation: the last of their sequence numbers, and their time.

        The row lock this UPDATE takes serializes concurrent appends, so numbers are distinct and gap-free. Their
        time is `now`, or the conversation's last activity if a concurrent append that took its clock later
        committed first: a message is never older than the one before it. None when the conversation is missing,
        foreign or not active.
        """
        statement = (
            update(_conversations)
            .where(
                self._owned,
                ConversationRow.conversation_id == conversation_id,
                ConversationRow.status == ConversationStatus.active,
            )
            .values(
                message_count=ConversationRow.message_count + count,
                total_tokens=ConversationRow.total_tokens + tokens,
                last_activity_at=case(
                    (ConversationRow.last_activity_at > now, ConversationRow.last_activity_at), else_=now
                ),
                updated_at=now,
            )
            .returning(
                ConversationRow.message_count,
                ConversationRow.last_activity_at,
                ConversationRow.total_tokens - ConversationRow.summarized_tokens,
            )
        )
        row = (await self.conn.execute(statement)).one_or_none()
        return None if row is None else Appended(*row)

    async def insert_messages(
        self, messages: Sequence[NewMessage], first_seq: int, *, created_at: datetime | None = None
    ) -> None:
        """Insert `messages` numbered from `first_seq`, each at `created_at` (None: its own time)."""
        rows = [
            message.columns(first_seq + index, message.created_at if created_at is None else created_at)
            for index, message in enumerate(messages)
        ]
        if self.conn.dialect.name == "postgresql" and len(rows) >= COPY_THRESHOLD:
            columns = [column.name for column in _messages.c]
            await driver.copy_records(
                self.conn, MESSAGES_TABLE, columns, (self._record(row, columns) for row in rows)
            )
            return
        await self.conn.execute(insert(_messages), rows)

    @staticmethod
    def _record(row: dict[str, Any], columns: list[str]) -> tuple[Any, ...]:
        """A message's row (`NewMessage.columns`, by column name, as Core's INSERT takes it too) as COPY takes it:
        values in column order, enums as text, jsonb as a JSON string."""
        values = row | {"message_type": row["message_type"].value, "metadata": json.dumps(row["metadata"])}
        return tuple(values[column] for column in columns)

    async def append(self, message: NewMessage, audit: AuditEntry) -> Appended | None:
        """Insert one message with the next sequence number, count it and write its audit entry (numbered).

        None when the conversation is missing, foreign or not active.
        """
        if self.conn.dialect.name == "postgresql":
            # The hottest write of the platform: one prepared statement on the driver (kit/driver.py says why).
            sql, arguments = appends_statement([(message, audit)])
            return appended_by_message(await driver.fetch(self.conn, sql, *arguments)).get(message.message_id)
        taken = await self.take_sequence_numbers(
            message.conversation_id, 1, message.tokens_used, message.created_at
        )
        if taken is None:
            return None
        await self.insert_messages([message], taken.seq, created_at=taken.created_at)
        await AuditRepository(self.conn).append([numbered(audit, taken.seq)])
        return taken

    async def message(self, message_id: uuid.UUID) -> StoredMessage | None:
        """The user's message with this id, in whichever conversation."""
        statement = select(*STORED_MESSAGE_COLUMNS).where(
            self._owned_messages, MessageRow.message_id == message_id
        )
        row = (await self.conn.execute(statement)).one_or_none()
        return None if row is None else StoredMessage(*row)

    async def messages(
        self, conversation_id: uuid.UUID, *, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[StoredMessage]:
        """Messages in sequence order: the first `limit` after `after_seq`, or the last `limit` before `before_seq`."""
        statement = select(*STORED_MESSAGE_COLUMNS).where(
            self._owned_messages, MessageRow.conversation_id == conversation_id
        )
        if after_seq is not None:
            statement = statement.where(MessageRow.seq > after_seq)
        if before_seq is not None:
            statement = statement.where(MessageRow.seq < before_seq)
        newest_first = before_seq is not None and after_seq is None
        statement = statement.order_by(MessageRow.seq.desc() if newest_first else MessageRow.seq).limit(limit)
        rows = [StoredMessage(*row) for row in await self.conn.execute(statement)]
        return rows[::-1] if newest_first else rows

    async def context(
        self, conversation_id: uuid.UUID, max_tokens: int, *, after_seq: int = 0
    ) -> ContextRead | None:
        """The conversation's summary and its newest unsummarized messages numbered after `after_seq` whose tokens
        add up to ≤ max_tokens, and the next older one (the first that does not fit), if any; None when the
        conversation does not exist for this user.
        """
        if self.conn.dialect.name == "postgresql":
            rows = await driver.fetch(
                self.conn, _PG_CONTEXT, conversation_id, self.user_id, max_tokens, after_seq, read_only=True
            )
            if not rows:
                return None
            first = rows[0]  # every row carries the conversation's head
            # The hot read: each message built by position, with the ids this call knows already (cheaper to
            # validate than the driver's UUIDs); a head without messages comes as one row of NULL message columns.
            return ContextRead(
                first["summary"],
                first["summarized_through_seq"],
                first["message_count"],
                [
                    StoredMessage(
                        row["message_id"],
                        conversation_id,
                        self.user_id,
                        row["seq"],
                        row["agent_name"],
                        row["message_type"],
                        row["content"],
                        row["packed_content"],
                        row["metadata"],
                        row["tokens_used"],
                        row["response_time"],
                        row["created_at"],
                    )
                    for row in rows
                    if row["message_id"] is not None
                ],
            )
        head = (
            await self.conn.execute(
                select(
                    ConversationRow.summary,
                    ConversationRow.summarized_through_seq,
                    ConversationRow.message_count,
                ).where(self._owned, ConversationRow.conversation_id == conversation_id)
            )
        ).one_or_none()
        if head is None:
            return None
        newest = (
            select(*STORED_MESSAGE_COLUMNS)
            .where(
                self._owned_messages,
                MessageRow.conversation_id == conversation_id,
                MessageRow.seq > max(head.summarized_through_seq, after_seq),
            )
            .order_by(MessageRow.seq.desc())
            .limit(max_tokens + 1)
            .subquery()
        )
        at_least_one = case((newest.c.tokens_used < 1, 1), else_=newest.c.tokens_used)
        running = func.sum(at_least_one).over(order_by=newest.c.seq.desc()).label("running_tokens")
        windowed = select(newest, running, at_least_one.label("weight")).subquery()
        statement = (
            select(*(windowed.c[name] for name in StoredMessage._fields))
            .where(windowed.c.running_tokens - windowed.c.weight <= max_tokens)
            .order_by(windowed.c.seq.desc())
        )
        return ContextRead(
            head.summary,
            head.summarized_through_seq,
            head.message_count,
            [StoredMessage(*row) for row in await self.conn.execute(statement)],
        )

    async def message_bodies(self, conversation_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
        """(message_id, content) of the conversation's messages not packed yet."""
        statement = select(MessageRow.message_id, MessageRow.content).where(
            self._owned_messages,
            MessageRow.conversation_id == conversation_id,
            MessageRow.content.is_not(None),
        )
        return [(row.message_id, row.content) for row in await self.conn.execute(statement)]

    async def pack_messages(self, packed: Sequence[tuple[uuid.UUID, bytes]]) -> None:
        """Replace each message's `content` by its packed body."""
        if packed:
            statement = (
                update(_messages)
                .where(self._owned_messages, MessageRow.message_id == bindparam("packed_id"))
                .values(content=None, packed_content=bindparam("body"))
            )
            await self.conn.execute(statement, [{"packed_id": key, "body": body} for key, body in packed])

    async def messages_between(
        self, conversation_id: uuid.UUID, after_seq: int, through_seq: int
    ) -> list[StoredMessage]:
        """Messages with after_seq < seq ≤ through_seq, in order."""
        statement = (
            select(*STORED_MESSAGE_COLUMNS)
            .where(
                self._owned_messages,
                MessageRow.conversation_id == conversation_id,
                MessageRow.seq > after_seq,
                MessageRow.seq <= through_seq,
            )
            .order_by(MessageRow.seq)
        )
        return [StoredMessage(*row) for row in await self.conn.execute(statement)]
