"""Appends: one message, a batch, or an import, numbered gap-free and counted exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.analytics.sources import rollups_stale_from
from stratus_db.audit.rows import audit_context
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.compression import HistoryCompressor
from stratus_db.conversations.plans import NewMessage, message_audit, numbered, plan_message
from stratus_db.conversations.repository import Appended, ConversationRepository
from stratus_db.conversations.rooms_base import (
    MESSAGES,
    message_of,
    not_found,
)
from stratus_db.conversations.schemas import (
    ImportResult,
    Message,
    MessageBatch,
    MessageCreate,
    MessageImportBatch,
)
from stratus_db.errors import ConflictError, ValidationError
from stratus_db.kit.statistics import analyze_after
from stratus_db.kit.validation import validate_input
from stratus_db.models import MessageType
from stratus_db.security.principal import Principal


class MessageAppends(HistoryCompressor):
    """Appends: one message, a batch, or an import, numbered gap-free and counted exactly."""

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
        principal: Principal | None = None,
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
            tokens_used: when None, counted by the handle's token counter (by default the offline estimate, kit/tokens.py).
            response_time: seconds the agent took.
            message_id: the message's id (by default a new UUIDv7); see above.
            tx: a transaction from `db.transaction()` to join.
            principal: who makes this call, instead of the context's principal (see the class docstring).

        Returns:
            The stored message with its per-conversation sequence number `seq` (1, 2, 3… without gaps).

        Raises:
            ValidationError: a malformed argument; nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is archived or deleted, or `message_id` is another message's.
        """
        async with self._db.operation("conversation.add_message", principal=principal) as op:
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
            await op.authorize(data.user_id, tx=tx)
            self._activity.note(data.user_id)
            message = plan_message(
                data,
                data.conversation_id,
                data.user_id,
                self._db.clock(),
                self._db.count_tokens,
                data.message_id,
            )
            audit = message_audit(message, audit_context())

            appended = None
            if self._appends is not None and tx is None:
                appended = await self._appends.append(message, audit)
            if appended is None:

                async def work(conn: AsyncConnection) -> Appended:
                    repository = ConversationRepository(conn, data.user_id)
                    alone = await repository.append(message, audit)
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
                        partial(self._stored_before, message=message), tx=tx, single_statement=True
                    )
                    if stored is None:
                        raise
                    return stored
            self._compress_if_long(data.conversation_id, data.user_id, appended.unsummarized, tx)
            return message.written(appended.seq, appended.created_at)

    async def add_messages(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[Message]:
        """Append a batch of messages (each a mapping of `add_message`'s arguments) in one transaction, in order.

        All or nothing: one bad message refuses the whole batch. Up to 10,000 messages per call.

        Raises:
            ValidationError: a malformed argument (the error names the message's index); nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is archived or deleted.
        """
        async with self._db.operation("conversation.add_messages", principal=principal) as op:
            if not isinstance(messages, list | tuple):
                raise ValidationError("messages must be a list of mappings of add_message's arguments")
            batch = validate_input(
                MessageBatch,
                {"conversation_id": conversation_id, "user_id": user_id, "messages": list(messages)},
            )
            await op.authorize(batch.user_id, tx=tx)
            self._activity.note(batch.user_id)
            now = self._db.clock()
            planned = [
                plan_message(item, batch.conversation_id, batch.user_id, now, self._db.count_tokens)
                for item in batch.messages
            ]
            context = audit_context()

            async def work(conn: AsyncConnection) -> tuple[list[Message], int]:
                repository = ConversationRepository(conn, batch.user_id)
                tokens = sum(message.tokens_used for message in planned)
                taken = await repository.take_sequence_numbers(
                    batch.conversation_id, len(planned), tokens, now
                )
                if taken is None:
                    raise await self._why_not_appendable(repository, batch.conversation_id)
                first = taken.seq - len(planned) + 1
                await repository.insert_messages(planned, first, created_at=taken.created_at)
                await self._audit.append(
                    conn,
                    [
                        numbered(message_audit(message, context), first + index)
                        for index, message in enumerate(planned)
                    ],
                )
                return [
                    message.written(first + index, taken.created_at) for index, message in enumerate(planned)
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
        principal: Principal | None = None,
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
        async with self._db.operation("conversation.import_messages", principal=principal) as op:
            if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
                raise ValidationError("messages must be an iterable of mappings of add_message's arguments")
            batch = validate_input(
                MessageImportBatch,
                {"conversation_id": conversation_id, "user_id": user_id, "messages": list(messages)},
            )
            await op.authorize(batch.user_id, tx=tx)
            now = self._db.clock()
            planned = []
            previous: datetime | None = None
            for index, item in enumerate(batch.messages):
                if item.created_at is not None:
                    if previous is not None and item.created_at < previous:
                        raise ValidationError(
                            f"messages.{index}.created_at is earlier than the message before it: import history "
                            "in the order it was written"
                        )
                    previous = item.created_at
                planned.append(
                    plan_message(
                        item,
                        batch.conversation_id,
                        batch.user_id,
                        item.created_at or now,
                        self._db.count_tokens,
                    )
                )
            tokens = sum(message.tokens_used for message in planned)

            async def work(conn: AsyncConnection) -> ImportResult:
                repository = ConversationRepository(conn, batch.user_id)
                if not planned:
                    if await repository.get(batch.conversation_id) is None:
                        raise not_found(batch.conversation_id, batch.user_id)
                    return ImportResult(
                        conversation_id=batch.conversation_id,
                        imported=0,
                        first_seq=None,
                        last_seq=None,
                        total_tokens=0,
                    )
                latest = max(message.created_at for message in planned)
                taken = await repository.take_sequence_numbers(
                    batch.conversation_id, len(planned), tokens, latest
                )
                if taken is None:
                    raise await self._why_not_appendable(repository, batch.conversation_id)
                first = taken.seq - len(planned) + 1
                await repository.insert_messages(planned, first)
                # Old history lands in days the metrics may have rolled up already: they are counted again.
                await rollups_stale_from(conn, min(message.created_at for message in planned))
                result = ImportResult(
                    conversation_id=batch.conversation_id,
                    imported=len(planned),
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

    @staticmethod
    async def _stored_before(conn: AsyncConnection, *, message: NewMessage) -> Message | None:
        """The message a repeated add_message stored before (`message` is what the repeat would write), or None
        when its id is not one of the user's messages.

        Raises:
            ConflictError: the user's message with this id is another message.
        """
        found = await ConversationRepository(conn, message.user_id).message(message.message_id)
        if found is None:
            return None
        stored = message_of(found)
        same_message = (
            stored.conversation_id == message.conversation_id
            and stored.content == message.content
            and stored.message_type == message.message_type
            and stored.agent_name == message.agent_name
            and stored.metadata == message.metadata
            and stored.tokens_used == message.tokens_used
            and stored.response_time == message.response_time
        )
        if not same_message:
            raise ConflictError(
                f"message_id {message.message_id} is already another message (other conversation, text, type, "
                "agent, metadata, tokens or response time): give each message its own id, and repeat a call only "
                "with the same arguments"
            )
        return stored

    @staticmethod
    async def _why_not_appendable(
        repository: ConversationRepository, conversation_id: uuid.UUID
    ) -> Exception:
        conversation = await repository.get(conversation_id)
        if conversation is None:
            return not_found(conversation_id, repository.user_id)
        return ConflictError(
            f"conversation {conversation_id} is {conversation.status}: messages can only be added to an active "
            "conversation"
        )
