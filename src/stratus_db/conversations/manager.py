"""ConversationManager: conversations with the agents and their append-only messages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager, changed_fields
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations import packing, stats, window
from stratus_db.conversations.coalescing import AppendCoalescer
from stratus_db.conversations.history import HistoryCompression
from stratus_db.conversations.recent import RecentMessages, Tail
from stratus_db.conversations.repository import Appended, ConversationRepository
from stratus_db.conversations.schemas import (
    CompressionResult,
    ContextWindow,
    Conversation,
    ConversationCreate,
    ConversationStats,
    ConversationUpdate,
    ImportResult,
    Message,
    MessageBatch,
    MessageCreate,
    MessageImportBatch,
    MessageInput,
    MessageQuery,
    SearchHit,
    StatsWindow,
    UsageStats,
)
from stratus_db.conversations.search import message_search_for
from stratus_db.conversations.summarizer import Summarizer, SummaryInput, trim_to_budget
from stratus_db.conversations.tokens import estimate_tokens
from stratus_db.errors import ConflictError, NotFoundError, SummarizerUnavailableError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, aware_datetime, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.statistics import analyze_after
from stratus_db.kit.text import query_terms
from stratus_db.kit.validation import (
    INT32_MAX,
    parse_enum,
    parse_int,
    parse_uuid,
    storable_text,
    validate_input,
)
from stratus_db.models import ConversationStatus, MessageType

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

CONVERSATIONS = "conversations"
MESSAGES = "messages"
VISIBLE_STATUSES = (ConversationStatus.active, ConversationStatus.archived)
"""What list_conversations shows when no status is asked for: deleted conversations are hidden."""
MAX_CONTEXT_TOKENS = 2_000_000


def _message_audit_values(message: Mapping[str, Any]) -> dict[str, Any]:
    # The audit trail outlives erasure, so it records that a message was written, never what it said.
    return {
        "conversation_id": str(message["conversation_id"]),
        "message_type": message["message_type"].value,
        "agent_name": message["agent_name"],
        "tokens_used": message["tokens_used"],
        "content_chars": len(message["content"]),
    }


def _conversation_audit_values(conversation: Conversation) -> dict[str, Any]:
    # Title, context and summary are the user's words: erasure must be able to remove them, so the trail keeps counts.
    return {
        "status": conversation.status.value,
        "message_count": conversation.message_count,
        "total_tokens": conversation.total_tokens,
    }


def message_from_row(
    row: Mapping[str, Any], conversation_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> Message:
    """A stored message as the API returns it: a packed body is unpacked (conversations/packing.py).

    Callers that know the conversation and the owner pass them: the row's copies (driver UUIDs) cost more to convert.
    """
    content = row["content"]
    if content is None:
        content = packing.unpack(row["packed_content"])
    return Message(
        message_id=row["message_id"],
        conversation_id=row["conversation_id"] if conversation_id is None else conversation_id,
        user_id=row["user_id"] if user_id is None else user_id,
        seq=row["seq"],
        agent_name=row["agent_name"],
        message_type=MessageType(row["message_type"]),
        content=content,
        metadata=row["metadata"],
        tokens_used=row["tokens_used"],
        response_time=row["response_time"],
        created_at=row["created_at"],
    )


def _not_found(conversation_id: uuid.UUID, user_id: uuid.UUID) -> NotFoundError:
    return NotFoundError(
        f"conversation {conversation_id} does not exist or does not belong to user {user_id}"
    )


class ConversationManager:
    """Conversations and their messages: lifecycle, appends, reads and the context window. Every change is audited."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)
        self._search = message_search_for(db.backend)
        self._history = HistoryCompression.of(db)
        # PostgreSQL writes concurrent appends together; SQLite's one writer at a time leaves nothing to share.
        self._appends = AppendCoalescer.of(db) if db.backend == "postgresql" else None
        self._recent = db.extension(
            "conversations.recent", lambda: RecentMessages(db.settings.STRATUS_CONTEXT_CACHE_CONVERSATIONS)
        )

    async def create_conversation(
        self,
        user_id: uuid.UUID | str,
        title: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        tx: AsyncConnection | None = None,
    ) -> Conversation:
        """Start a conversation for the user.

        Args:
            user_id: the owner.
            title: up to 500 characters.
            context: a JSON object the agents keep with the conversation.
            tx: a transaction from `db.transaction()` to join.

        Raises:
            ValidationError: a malformed argument; nothing is written.
            NotFoundError: the user does not exist.
        """
        async with self._db.operation("conversation.create") as op:
            data = validate_input(
                ConversationCreate,
                {"user_id": user_id, "title": title, "context": {} if context is None else context},
            )
            now = self._db.clock()
            values = {
                "conversation_id": new_id(),
                "title": data.title,
                "status": ConversationStatus.active,
                "context": data.context,
                "summary": None,
                "summarized_through_seq": 0,
                "summarized_tokens": 0,
                "message_count": 0,
                "total_tokens": 0,
                "created_at": now,
                "updated_at": now,
                "last_activity_at": now,
            }

            async def work(conn: AsyncConnection) -> Conversation:
                conversation = Conversation.model_validate(
                    await ConversationRepository(conn, data.user_id).insert(values)
                )
                await self._audit.record(
                    conn,
                    action=AuditAction.create,
                    table_name=CONVERSATIONS,
                    record_id=conversation.conversation_id,
                    user_id=conversation.user_id,
                    new_values=_conversation_audit_values(conversation),
                )
                return conversation

            return await op.run(work, tx=tx)

    async def get_conversation(
        self, conversation_id: uuid.UUID | str, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None
    ) -> Conversation | None:
        """The user's conversation with this id (whatever its status), or None.

        Raises:
            ValidationError: an id is not a UUID.
        """
        async with self._db.operation("conversation.get", read_only=True) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")

            async def work(conn: AsyncConnection) -> Conversation | None:
                row = await ConversationRepository(conn, owner).get(key)
                return None if row is None else Conversation.model_validate(row)

            return await op.run(work, tx=tx)

    async def list_conversations(
        self,
        user_id: uuid.UUID | str,
        *,
        status: ConversationStatus | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
    ) -> Page[Conversation]:
        """The user's conversations, most recent activity first; without `status`, active and archived ones.

        Raises:
            ValidationError: a malformed user id, status, limit or cursor.
        """
        async with self._db.operation("conversation.list", read_only=True) as op:
            owner = parse_uuid(user_id, "user_id")
            statuses = (
                VISIBLE_STATUSES if status is None else (parse_enum(ConversationStatus, status, "status"),)
            )
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (aware_datetime, uuid.UUID))

            async def work(conn: AsyncConnection) -> Page[Conversation]:
                rows = await ConversationRepository(conn, owner).page(
                    statuses=statuses, after=after, limit=limit + 1
                )
                conversations = [Conversation.model_validate(row) for row in rows]
                return make_page(
                    conversations,
                    limit,
                    lambda item: encode_cursor(item.last_activity_at.isoformat(), item.conversation_id),
                )

            return await op.run(work, tx=tx)

    async def update_conversation(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        title: str | None = None,
        context: dict[str, Any] | None = None,
        tx: AsyncConnection | None = None,
    ) -> Conversation:
        """Change the title and/or replace the context of an active or archived conversation.

        An argument left out (None) keeps its value. Changing nothing writes nothing.

        Raises:
            ValidationError: a malformed argument, or neither title nor context given; nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is deleted (restore it first).
        """
        async with self._db.operation("conversation.update") as op:
            data = validate_input(
                ConversationUpdate,
                {"conversation_id": conversation_id, "user_id": user_id, "title": title, "context": context},
            )
            changes = data.model_dump(include={"title", "context"}, exclude_none=True)
            if not changes:
                raise ValidationError("update_conversation needs a title or a context to change")

            async def work(conn: AsyncConnection) -> Conversation:
                repository, current = await self._locked(conn, data.conversation_id, data.user_id)
                if current.status == ConversationStatus.deleted:
                    raise ConflictError(
                        f"conversation {current.conversation_id} is deleted: restore it before changing it"
                    )
                _, new_values = changed_fields(current, changes)
                if not new_values:
                    return current
                updated = Conversation.model_validate(
                    await repository.set_fields(
                        current.conversation_id, changes | {"updated_at": self._db.clock()}
                    )
                )
                # Which fields changed, not what they said (see _conversation_audit_values).
                await self._audit.record(
                    conn,
                    action=AuditAction.update,
                    table_name=CONVERSATIONS,
                    record_id=current.conversation_id,
                    user_id=current.user_id,
                    new_values={"changed": sorted(new_values)},
                )
                return updated

            return await op.run(work, tx=tx)

    async def archive_conversation(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        pack: bool | None = None,
        tx: AsyncConnection | None = None,
    ) -> Conversation:
        """Archive an active conversation: it stays listed and readable but takes no more messages.

        Args:
            pack: store its message bodies compressed (zstd, conversations/packing.py); reading them back is
                transparent. Default: the STRATUS_PACK_ARCHIVED_MESSAGES setting (on).

        Archiving an archived conversation changes nothing (but packs it when asked to).

        Raises:
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is deleted.
        """
        should_pack = self._db.settings.STRATUS_PACK_ARCHIVED_MESSAGES if pack is None else pack
        if not isinstance(should_pack, bool):
            raise ValidationError(f"pack must be True, False or None, got {pack!r}")
        return await self._change_status(
            "conversation.archive",
            conversation_id,
            user_id,
            to=ConversationStatus.archived,
            allowed_from=(ConversationStatus.active, ConversationStatus.archived),
            action=AuditAction.archive,
            pack=should_pack,
            tx=tx,
        )

    async def delete_conversation(
        self, conversation_id: uuid.UUID | str, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None
    ) -> Conversation:
        """Soft-delete: the conversation is hidden from lists and takes no messages; `restore_conversation` undoes it.

        For erasure, use `purge_conversation`. Deleting a deleted conversation changes nothing.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        return await self._change_status(
            "conversation.delete",
            conversation_id,
            user_id,
            to=ConversationStatus.deleted,
            allowed_from=tuple(ConversationStatus),
            action=AuditAction.delete,
            tx=tx,
        )

    async def restore_conversation(
        self, conversation_id: uuid.UUID | str, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None
    ) -> Conversation:
        """Make an archived or deleted conversation active again (packed bodies stay packed and readable).

        Raises:
            NotFoundError: no such conversation for this user.
        """
        return await self._change_status(
            "conversation.restore",
            conversation_id,
            user_id,
            to=ConversationStatus.active,
            allowed_from=tuple(ConversationStatus),
            action=AuditAction.restore,
            tx=tx,
        )

    async def _change_status(
        self,
        name: str,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        to: ConversationStatus,
        allowed_from: tuple[ConversationStatus, ...],
        action: AuditAction,
        pack: bool = False,
        tx: AsyncConnection | None,
    ) -> Conversation:
        async with self._db.operation(name) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")

            async def work(conn: AsyncConnection) -> Conversation:
                repository, current = await self._locked(conn, key, owner)
                if current.status not in allowed_from:
                    raise ConflictError(
                        f"conversation {key} is {current.status.value}: it cannot become {to.value}"
                    )
                packed = await self._pack(repository, key) if pack else 0
                if current.status == to and not packed:
                    return current
                updated = current
                if current.status != to:
                    updated = Conversation.model_validate(
                        await repository.set_fields(key, {"status": to, "updated_at": self._db.clock()})
                    )
                await self._audit.record(
                    conn,
                    action=action,
                    table_name=CONVERSATIONS,
                    record_id=key,
                    user_id=owner,
                    old_values={"status": current.status.value},
                    new_values={"status": to.value} | ({"packed_messages": packed} if pack else {}),
                )
                return updated

            return await op.run(work, tx=tx)

    @staticmethod
    async def _pack(repository: ConversationRepository, conversation_id: uuid.UUID) -> int:
        """Compress the bodies of the conversation's messages not packed yet; how many were."""
        bodies = await repository.message_bodies(conversation_id)
        # zstd at level 19 takes ~50 µs a message (a second for a megabyte): off the event loop.
        packed = await asyncio.to_thread(lambda: [(key, packing.pack(text)) for key, text in bodies])
        await repository.pack_messages(packed)
        return len(bodies)

    async def purge_conversation(
        self, conversation_id: uuid.UUID | str, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None
    ) -> int:
        """Delete the conversation and all its messages for good (LGPD erasure), whatever its status.

        The audit row keeps counts, not content. Returns how many messages were deleted.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.purge") as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")

            async def work(conn: AsyncConnection) -> int:
                repository, current = await self._locked(conn, key, owner)
                await repository.delete(key)
                await self._audit.record(
                    conn,
                    action=AuditAction.purge,
                    table_name=CONVERSATIONS,
                    record_id=key,
                    user_id=owner,
                    old_values=_conversation_audit_values(current),
                )
                return current.message_count

            deleted = await op.run(work, tx=tx)
            await analyze_after(self._db, MESSAGES, deleted, tx=tx)
            return deleted

    async def _locked(
        self, conn: AsyncConnection, conversation_id: uuid.UUID, user_id: uuid.UUID
    ) -> tuple[ConversationRepository, Conversation]:
        repository = ConversationRepository(conn, user_id)
        row = await repository.get(conversation_id, for_update=True)
        if row is None:
            raise _not_found(conversation_id, user_id)
        return repository, Conversation.model_validate(row)

    async def add_message(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        content: str,
        message_type: MessageType | str = MessageType.user_input,
        agent_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        tokens_used: int | None = None,
        response_time: float | None = None,
        *,
        message_id: uuid.UUID | str | None = None,
        tx: AsyncConnection | None = None,
    ) -> Message:
        """Append a message to the user's active conversation and update its counters, in one transaction.

        On PostgreSQL the message, the counters and the audit row are one statement: one round trip.

        A call that failed with DatabaseUnavailableError may or may not have stored its message. To repeat it
        safely, give the message an id of your own (`message_id`, a UUID, preferably a UUIDv7): a call with an id
        already stored in this conversation returns the stored message and writes nothing, so the message is
        stored once however often the call is repeated.

        Args:
            conversation_id: the conversation, which must belong to `user_id` and be active.
            user_id: the owner.
            content: the text; not empty, no NUL characters, up to 1,000,000 characters.
            message_type: user_input, agent_response or system.
            agent_name: the agent that answered (letters, digits, `_ . -`), for agent responses.
            metadata: a JSON object.
            tokens_used: when None, estimated as round(len(content) / 3.5) (conversations/tokens.py).
            response_time: seconds the agent took.
            message_id: the message's id (by default a new UUIDv7); see above.
            tx: a transaction from `db.transaction()` to join.

        Returns:
            The stored message with its per-conversation sequence number `seq` (1, 2, 3… without gaps).

        Raises:
            ValidationError: a malformed argument; nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is archived or deleted, or `message_id` is another message's.
        """
        async with self._db.operation("conversation.add_message") as op:
            data = validate_input(
                MessageCreate,
                {
                    "conversation_id": conversation_id,
                    "user_id": user_id,
                    "content": content,
                    "message_type": message_type,
                    "agent_name": agent_name,
                    "metadata": {} if metadata is None else metadata,
                    "tokens_used": tokens_used,
                    "response_time": response_time,
                    "message_id": message_id,
                },
            )
            values = self._message_values(data, data.conversation_id, self._db.clock(), data.message_id)
            audit_row = self._audit.row(
                action=AuditAction.create,
                table_name=MESSAGES,
                record_id=values["message_id"],
                user_id=data.user_id,
                new_values=_message_audit_values(values),
            )

            appended = None
            if self._appends is not None and tx is None:
                appended = await self._appends.append(values | {"user_id": data.user_id}, audit_row)
            if appended is None:

                async def work(conn: AsyncConnection) -> Appended:
                    repository = ConversationRepository(conn, data.user_id)
                    alone = await repository.append(values, audit_row)
                    if alone is None:
                        raise await self._why_not_appendable(repository, data.conversation_id)
                    return alone

                try:
                    appended = await op.run(work, tx=tx, single_statement=True)
                except ConflictError as exc:
                    # The message may be stored already: the caller repeats a call with its message_id (then even in
                    # a conversation archived since), or a batch that carried this append wrote it although its
                    # outcome never reached us (cancelled while its statement was in flight), and appending alone
                    # met its own id.
                    if data.message_id is None and exc.violation is None:
                        raise
                    stored = await op.run(
                        partial(self._stored_before, data=data, values=values), tx=tx, single_statement=True
                    )
                    if stored is None:
                        raise
                    return stored
            self._compress_if_long(data.conversation_id, data.user_id, appended.unsummarized, tx)
            return message_from_row(
                values | {"seq": appended.seq, "created_at": appended.created_at, "user_id": data.user_id}
            )

    async def add_messages(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tx: AsyncConnection | None = None,
    ) -> list[Message]:
        """Append a batch of messages (each a mapping of `add_message`'s arguments) in one transaction, in order.

        All or nothing: one bad message refuses the whole batch. Up to 10,000 messages per call.

        Raises:
            ValidationError: a malformed argument (the error names the message's index); nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is archived or deleted.
        """
        async with self._db.operation("conversation.add_messages") as op:
            if not isinstance(messages, list | tuple):
                raise ValidationError("messages must be a list of mappings of add_message's arguments")
            batch = validate_input(
                MessageBatch,
                {"conversation_id": conversation_id, "user_id": user_id, "messages": list(messages)},
            )
            now = self._db.clock()
            rows = [self._message_values(item, batch.conversation_id, now) for item in batch.messages]

            async def work(conn: AsyncConnection) -> tuple[list[Message], int]:
                repository = ConversationRepository(conn, batch.user_id)
                tokens = sum(row["tokens_used"] for row in rows)
                taken = await repository.take_sequence_numbers(batch.conversation_id, len(rows), tokens, now)
                if taken is None:
                    raise await self._why_not_appendable(repository, batch.conversation_id)
                numbered = [
                    row | {"seq": taken.seq - len(rows) + 1 + index, "created_at": taken.created_at}
                    for index, row in enumerate(rows)
                ]
                await repository.insert_messages(numbered)
                audit_rows = [
                    self._audit.row(
                        action=AuditAction.create,
                        table_name=MESSAGES,
                        record_id=row["message_id"],
                        user_id=batch.user_id,
                        new_values=_message_audit_values(row) | {"seq": row["seq"]},
                    )
                    for row in numbered
                ]
                await self._audit.append(conn, audit_rows)
                return [
                    message_from_row(row | {"user_id": batch.user_id}) for row in numbered
                ], taken.unsummarized

            appended, unsummarized = await op.run(work, tx=tx)
            await analyze_after(self._db, MESSAGES, len(appended), tx=tx)
            self._compress_if_long(batch.conversation_id, batch.user_id, unsummarized, tx)
            return appended

    async def import_messages(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        messages: Iterable[Mapping[str, Any]],
        *,
        tx: AsyncConnection | None = None,
    ) -> ImportResult:
        """Bulk-append existing history (a migration from another system) to the user's active conversation.

        Each message is a mapping of `add_message`'s arguments plus an optional `created_at` (aware datetime, the
        time it was originally written; default now), appended in the order given. PostgreSQL takes them by binary
        COPY; sequence numbers and counters are exact afterwards, and the import is one audit event (one row listing
        the count and the range of sequence numbers, not one row per message). All or nothing.

        Raises:
            ValidationError: a malformed message (the error names its index), or `created_at` going backwards along
                the batch; nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is archived or deleted.
        """
        async with self._db.operation("conversation.import_messages") as op:
            if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
                raise ValidationError("messages must be an iterable of mappings of add_message's arguments")
            batch = validate_input(
                MessageImportBatch,
                {"conversation_id": conversation_id, "user_id": user_id, "messages": list(messages)},
            )
            now = self._db.clock()
            rows = []
            previous: datetime | None = None
            for index, item in enumerate(batch.messages):
                if item.created_at is not None:
                    if previous is not None and item.created_at < previous:
                        raise ValidationError(
                            f"messages.{index}.created_at is earlier than the message before it: import history "
                            "in the order it was written"
                        )
                    previous = item.created_at
                rows.append(self._message_values(item, batch.conversation_id, item.created_at or now))
            tokens = sum(row["tokens_used"] for row in rows)

            async def work(conn: AsyncConnection) -> ImportResult:
                repository = ConversationRepository(conn, batch.user_id)
                if not rows:
                    if await repository.get(batch.conversation_id) is None:
                        raise _not_found(batch.conversation_id, batch.user_id)
                    return ImportResult(
                        conversation_id=batch.conversation_id,
                        imported=0,
                        first_seq=None,
                        last_seq=None,
                        total_tokens=0,
                    )
                latest = max(row["created_at"] for row in rows)
                taken = await repository.take_sequence_numbers(
                    batch.conversation_id, len(rows), tokens, latest
                )
                if taken is None:
                    raise await self._why_not_appendable(repository, batch.conversation_id)
                first = taken.seq - len(rows) + 1
                await repository.insert_messages(
                    [row | {"seq": first + index} for index, row in enumerate(rows)]
                )
                result = ImportResult(
                    conversation_id=batch.conversation_id,
                    imported=len(rows),
                    first_seq=first,
                    last_seq=taken.seq,
                    total_tokens=tokens,
                )
                await self._audit.record(
                    conn,
                    action=AuditAction.import_,
                    table_name=MESSAGES,
                    record_id=batch.conversation_id,
                    user_id=batch.user_id,
                    new_values=result.model_dump(mode="json", exclude={"conversation_id"}),
                )
                return result

            imported = await op.run(work, tx=tx)
            await analyze_after(self._db, MESSAGES, imported.imported, tx=tx)
            return imported

    def _compress_if_long(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, unsummarized: int, tx: AsyncConnection | None
    ) -> None:
        """Ask for a background compress_history once the window holds more than the threshold's tokens.

        Called after the append committed; not for appends inside a caller's transaction, which may still roll
        back: the next append outside one asks again.
        """
        threshold = self._db.settings.STRATUS_SUMMARY_THRESHOLD_TOKENS
        if tx is None and threshold and unsummarized > threshold:
            # The kept messages hold at most half the threshold, so the next compression waits for as many tokens
            # again, however long the messages are (not one summarizer call per append).
            self._history.schedule(
                conversation_id,
                lambda: self._compress(
                    conversation_id, user_id, None, keep_tokens=threshold // 2, summarizer=None
                ),
            )

    async def wait_for_compressions(self) -> None:
        """Until the background compressions that appends asked for have finished (`db.close()` waits too)."""
        await self._history.wait()

    async def compress_history(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        keep_last: int | None = None,
        *,
        summarizer: Summarizer | None = None,
        tx: AsyncConnection | None = None,
    ) -> CompressionResult:
        """Fold all but the newest `keep_last` messages into the conversation's summary.

        The folded messages stay stored and readable (get_messages) but leave the context window (get_context). The
        summarizer receives the previous summary and the newly folded messages and returns the new summary within
        STRATUS_SUMMARY_MAX_TOKENS: by default the offline extractive one, or OpenAI's when OPENAI_API_KEY is set.
        It runs outside any transaction of ours (a remote model may take seconds); if another compression of the
        same conversation commits meanwhile, this one writes nothing. Idempotent: with nothing new to fold, nothing is
        written. Works on conversations of any status.

        Args:
            keep_last: messages to leave in the window; default STRATUS_SUMMARY_KEEP_LAST.
            summarizer: use this one instead of the configured one.

        Raises:
            ValidationError: a malformed id or keep_last; nothing is written.
            NotFoundError: no such conversation for this user.
            SummarizerUnavailableError: the remote summarizer failed; nothing is written.
        """
        return await self._compress(
            conversation_id, user_id, keep_last, keep_tokens=None, summarizer=summarizer, tx=tx
        )

    async def _compress(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        keep_last: int | None,
        *,
        keep_tokens: int | None,
        summarizer: Summarizer | None,
        tx: AsyncConnection | None = None,
    ) -> CompressionResult:
        """compress_history; `keep_tokens` also caps what the kept messages may weigh (the automatic compression)."""
        async with self._db.operation("conversation.compress_history") as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            keep = self._db.settings.STRATUS_SUMMARY_KEEP_LAST if keep_last is None else keep_last
            if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
                raise ValidationError(f"keep_last must be a non-negative integer, got {keep_last!r}")

            async def read(conn: AsyncConnection) -> tuple[Conversation, list[dict[str, Any]]]:
                repository = ConversationRepository(conn, owner)
                row = await repository.get(key)
                if row is None:
                    raise _not_found(key, owner)
                current = Conversation.model_validate(row)
                kept = keep
                if keep_tokens is not None:
                    newest = await repository.messages(
                        key, after_seq=None, before_seq=current.message_count + 1, limit=max(keep, 1)
                    )
                    weights = [message["tokens_used"] for message in reversed(newest)][:keep]
                    kept = window.fit(None, weights, keep_tokens)[1]
                through = current.message_count - kept
                if through <= current.summarized_through_seq:
                    return current, []
                return current, await repository.messages_between(
                    key, current.summarized_through_seq, through
                )

            before, folded = await op.run(read, tx=tx)
            if not folded:
                return CompressionResult(
                    conversation_id=key,
                    folded_messages=0,
                    summarized_through_seq=before.summarized_through_seq,
                    summary_tokens=window.summary_tokens(before.summary),
                )
            messages = [message_from_row(row) for row in folded]
            summary = await (summarizer or self._history.summarizer).summarize(
                [
                    SummaryInput(
                        seq=message.seq,
                        message_type=message.message_type.value,
                        agent_name=message.agent_name,
                        content=message.content,
                    )
                    for message in messages
                ],
                previous_summary=before.summary,
                max_tokens=self._db.settings.STRATUS_SUMMARY_MAX_TOKENS,
            )
            summary = self._checked_summary(summary)
            through = messages[-1].seq
            folded_tokens = sum(message.tokens_used for message in messages)

            async def write(conn: AsyncConnection) -> CompressionResult:
                repository, current = await self._locked(conn, key, owner)
                if current.summarized_through_seq != before.summarized_through_seq:
                    # Another compression got there first: its summary stands.
                    return CompressionResult(
                        conversation_id=key,
                        folded_messages=0,
                        summarized_through_seq=current.summarized_through_seq,
                        summary_tokens=window.summary_tokens(current.summary),
                    )
                await repository.set_fields(
                    key,
                    {
                        "summary": summary or None,
                        "summarized_through_seq": through,
                        "summarized_tokens": current.summarized_tokens + folded_tokens,
                        "updated_at": self._db.clock(),
                    },
                )
                result = CompressionResult(
                    conversation_id=key,
                    folded_messages=len(messages),
                    summarized_through_seq=through,
                    summary_tokens=window.summary_tokens(summary),
                )
                await self._audit.record(
                    conn,
                    action=AuditAction.summarize,
                    table_name=CONVERSATIONS,
                    record_id=key,
                    user_id=owner,
                    old_values={"summarized_through_seq": before.summarized_through_seq},
                    new_values=result.model_dump(mode="json", exclude={"conversation_id"}),
                )
                return result

            return await op.run(write, tx=tx)

    def _checked_summary(self, summary: object) -> str:
        """What a summarizer returned, as it may be stored: text without NUL, within STRATUS_SUMMARY_MAX_TOKENS."""
        if not isinstance(summary, str):
            raise SummarizerUnavailableError(
                f"the summarizer returned {type(summary).__name__}, not text; nothing was written",
                retryable=False,
            )
        try:
            text = storable_text(summary)
        except ValueError as exc:
            raise SummarizerUnavailableError(
                f"the summarizer returned text that cannot be stored ({exc}); nothing was written",
                retryable=False,
            ) from exc
        return trim_to_budget(text, self._db.settings.STRATUS_SUMMARY_MAX_TOKENS)

    @staticmethod
    async def _stored_before(
        conn: AsyncConnection, *, data: MessageCreate, values: Mapping[str, Any]
    ) -> Message | None:
        """The message a repeated add_message stored before (`values` are the columns the repeat would write), or
        None when its id is not one of the user's messages.

        Raises:
            ConflictError: the user's message with this id is another message.
        """
        row = await ConversationRepository(conn, data.user_id).message(values["message_id"])
        if row is None:
            return None
        stored = message_from_row(row)
        same_message = (
            stored.conversation_id == values["conversation_id"]
            and stored.content == values["content"]
            and stored.message_type == values["message_type"]
            and stored.agent_name == values["agent_name"]
            and stored.metadata == values["metadata"]
            and stored.tokens_used == values["tokens_used"]
            and stored.response_time == values["response_time"]
        )
        if not same_message:
            raise ConflictError(
                f"message_id {values['message_id']} is already another message (other conversation, text, type, "
                "agent, metadata, tokens or response time): give each message its own id, and repeat a call only "
                "with the same arguments"
            )
        return stored

    @staticmethod
    def _message_values(
        data: MessageInput, conversation_id: uuid.UUID, now: datetime, message_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """The columns of a new message, but its `seq` (and `user_id`, which the repository sets)."""
        return {
            "message_id": new_id() if message_id is None else message_id,
            "conversation_id": conversation_id,
            "agent_name": data.agent_name,
            "message_type": data.message_type,
            "content": data.content,
            "packed_content": None,
            "metadata": data.metadata,
            "tokens_used": data.tokens_used
            if data.tokens_used is not None
            else estimate_tokens(data.content),
            "response_time": data.response_time,
            "created_at": now,
        }

    @staticmethod
    async def _why_not_appendable(
        repository: ConversationRepository, conversation_id: uuid.UUID
    ) -> Exception:
        row = await repository.get(conversation_id)
        if row is None:
            return _not_found(conversation_id, repository.user_id)
        return ConflictError(
            f"conversation {conversation_id} is {row['status']}: messages can only be added to an active conversation"
        )

    async def get_messages(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        limit: int = 50,
        after_seq: int | None = None,
        before_seq: int | None = None,
        tx: AsyncConnection | None = None,
    ) -> list[Message]:
        """Messages of the user's conversation in sequence order, summarized ones included.

        Without bounds, the first `limit` messages; with `after_seq`, the `limit` messages that follow it; with only
        `before_seq`, the `limit` messages just before it (still oldest first), which pages backwards from the end.

        Raises:
            ValidationError: a malformed id, limit or bound.
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.get_messages", read_only=True) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            limit = check_limit(limit, maximum=1000)
            for name, bound in (("after_seq", after_seq), ("before_seq", before_seq)):
                if bound is not None:
                    parse_int(bound, name, minimum=0, maximum=INT32_MAX)  # seq is an integer column

            async def work(conn: AsyncConnection) -> list[Message]:
                repository = ConversationRepository(conn, owner)
                rows = await repository.messages(key, after_seq=after_seq, before_seq=before_seq, limit=limit)
                if not rows and await repository.get(key) is None:
                    raise _not_found(key, owner)
                return [message_from_row(row) for row in rows]

            return await op.run(work, tx=tx)

    async def get_context(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        max_tokens: int,
        *,
        tx: AsyncConnection | None = None,
    ) -> ContextWindow:
        """What an agent sends its model: the summary (if any, and if it fits) and the newest messages that fit.

        Never more than `max_tokens` in all, never half a message (rules in conversations/window.py). Works on
        conversations of any status.

        Raises:
            ValidationError: a malformed id, or max_tokens not an integer from 1 to 2,000,000.
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.get_context", read_only=True) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            if (
                isinstance(max_tokens, bool)
                or not isinstance(max_tokens, int)
                or not 1 <= max_tokens <= MAX_CONTEXT_TOKENS
            ):
                raise ValidationError(
                    f"max_tokens must be an integer from 1 to {MAX_CONTEXT_TOKENS:,}, got {max_tokens!r}"
                )

            # A read inside a caller's transaction may see rows that roll back: it neither uses nor fills the cache.
            tail = self._recent.get(key, owner) if tx is None else None

            async def work(conn: AsyncConnection) -> ContextWindow:
                repository = ConversationRepository(conn, owner)
                rows = await repository.context(
                    key, max_tokens, after_seq=0 if tail is None else tail.last_seq
                )
                if rows is None:
                    self._recent.drop(key)
                    raise _not_found(key, owner)
                context = self._fit(key, owner, max_tokens, rows, tail, cache=tx is None)
                if context is None:  # the cached tail does not reach back far enough for this budget
                    rows = await repository.context(key, max_tokens)
                    assert rows is not None, "the conversation was there a statement ago, in this transaction"
                    context = self._fit(key, owner, max_tokens, rows, None, cache=tx is None)
                    assert context is not None, "a read without a tail always fits"
                return context

            return await op.run(work, tx=tx, single_statement=True)  # each read stands on its own

    def _fit(
        self,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        max_tokens: int,
        rows: list[dict[str, Any]],
        tail: Tail | None,
        *,
        cache: bool,
    ) -> ContextWindow | None:
        """The window from what ConversationRepository.context read (newest first) and the cached tail it continues;
        None when the budget reaches past the tail and the older messages must be read."""
        head = rows[0]
        summary, summarized, count = head["summary"], head["summarized_through_seq"], head["message_count"]
        delta = [
            message_from_row(row, conversation_id, user_id)
            for row in reversed(rows)
            if row["message_id"] is not None
        ]
        unsummarized = count - summarized
        after = summarized if tail is None else max(summarized, tail.last_seq)
        if tail is not None and tail.last_seq <= count and len(delta) == count - after:
            # The new messages join the tail: together they are the conversation's newest, without a gap.
            candidates = [message for message in tail.messages if message.seq > summarized] + delta
        else:
            candidates = delta
        newest_first = [message.tokens_used for message in reversed(candidates)]
        with_summary, taken = window.fit(summary, newest_first, max_tokens)
        if taken == len(candidates) < unsummarized:
            # Everything known fits, even the message that once marked the budget's edge: older ones might too.
            return None
        if cache:
            # What fits this budget, and the first message that does not (the edge a larger budget starts from).
            kept = min(len(candidates), window.fit(None, newest_first, max_tokens)[1] + 1)
            self._recent.put(
                conversation_id, Tail(user_id, tuple(candidates[len(candidates) - kept :]), count)
            )
        chosen = candidates[len(candidates) - taken :]
        summary_cost = window.summary_tokens(summary) if with_summary else 0
        return ContextWindow(
            conversation_id=conversation_id,
            max_tokens=max_tokens,
            summary=summary if with_summary else None,
            summary_tokens=summary_cost,
            messages=chosen,
            total_tokens=summary_cost + sum(window.message_tokens(message.tokens_used) for message in chosen),
            omitted_messages=unsummarized - len(chosen),
        )

    async def search_messages(
        self, user_id: uuid.UUID | str, query: str, limit: int = 20, *, tx: AsyncConnection | None = None
    ) -> list[SearchHit]:
        """The user's messages most relevant to `query`, best first, from conversations that are not deleted.

        Accent-insensitive, stemmed Portuguese full text ("meteorológica" finds "meteorologia"); a message matches
        when it has any of the query's words, and ranks higher with more of them. Packed (archived) messages are
        found too. Any text is a valid query: what is not a word is ignored, and a query with no words finds nothing.

        Raises:
            ValidationError: a malformed user id, a query that is not text, or limit outside 1–100.
        """
        async with self._db.operation("conversation.search_messages", read_only=True) as op:
            data = validate_input(
                MessageQuery,
                {"user_id": user_id, "query": query, "limit": limit},
            )
            terms = query_terms(data.query)
            if not terms:
                return []

            async def work(conn: AsyncConnection) -> list[SearchHit]:
                rows = await self._search.matches(conn, data.user_id, terms, data.limit)
                return [SearchHit(message=message_from_row(row), score=row["score"]) for row in rows]

            return await op.run(work, tx=tx, single_statement=True)

    async def get_usage_stats(
        self,
        user_id: uuid.UUID | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        tx: AsyncConnection | None = None,
    ) -> UsageStats:
        """Usage of one user (or of everyone, without `user_id`) in [since, until), computed by the database.

        Conversations started, messages and tokens per UTC day; messages, tokens, average and 95th-percentile
        response time per agent; messages per type. Purged conversations are gone from the statistics too.

        Raises:
            ValidationError: a malformed user id, a naive datetime, or until not after since.
        """
        async with self._db.operation("conversation.usage_stats", read_only=True) as op:
            window_ = validate_input(StatsWindow, {"user_id": user_id, "since": since, "until": until})
            scope = stats.Scope(user_id=window_.user_id, since=window_.since, until=window_.until)

            async def work(conn: AsyncConnection) -> UsageStats:
                per_day = await stats.daily_usage(conn, scope)
                return UsageStats(
                    user_id=window_.user_id,
                    since=window_.since,
                    until=window_.until,
                    conversations=sum(day.conversations for day in per_day),
                    messages=sum(day.messages for day in per_day),
                    tokens=sum(day.tokens for day in per_day),
                    per_day=per_day,
                    per_agent=await stats.agent_usage(conn, scope),
                    per_type=await stats.type_usage(conn, scope),
                )

            return await op.run(work, tx=tx)

    async def get_conversation_stats(
        self, conversation_id: uuid.UUID | str, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None
    ) -> ConversationStats:
        """One conversation's messages and tokens, per agent (with response times) and per type.

        Raises:
            ValidationError: a malformed id.
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.conversation_stats", read_only=True) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            scope = stats.Scope(user_id=owner, conversation_id=key)

            async def work(conn: AsyncConnection) -> ConversationStats:
                conversation = await ConversationRepository(conn, owner).get(key)
                if conversation is None:
                    raise _not_found(key, owner)
                first, last = await stats.message_span(conn, scope)
                return ConversationStats(
                    conversation_id=key,
                    messages=conversation["message_count"],
                    tokens=conversation["total_tokens"],
                    first_message_at=first,
                    last_message_at=last,
                    per_agent=await stats.agent_usage(conn, scope),
                    per_type=await stats.type_usage(conn, scope),
                )

            return await op.run(work, tx=tx)
