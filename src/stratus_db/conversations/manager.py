"""ConversationManager: conversations with the agents and their append-only messages."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.repository import ConversationRepository
from stratus_db.conversations.schemas import Conversation, ConversationCreate, Message, MessageCreate
from stratus_db.conversations.tokens import estimate_tokens
from stratus_db.errors import ConflictError, NotFoundError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, aware_datetime, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.validation import parse_enum, parse_uuid, validate_input
from stratus_db.models import ConversationStatus, MessageType

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

CONVERSATIONS = "conversations"
MESSAGES = "messages"
VISIBLE_STATUSES = (ConversationStatus.active, ConversationStatus.archived)
"""What list_conversations shows when no status is asked for: deleted conversations are hidden."""


def _message_audit_values(message: Message) -> dict[str, Any]:
    # The audit trail outlives erasure, so it records that a message was written, never what it said.
    return {
        "conversation_id": str(message.conversation_id),
        "seq": message.seq,
        "message_type": message.message_type.value,
        "agent_name": message.agent_name,
        "tokens_used": message.tokens_used,
        "content_chars": len(message.content),
    }


class ConversationManager:
    """Create and read conversations, append and read messages. Every change is audited."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)

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
                    new_values=conversation.model_dump(mode="json"),
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
        tx: AsyncConnection | None = None,
    ) -> Message:
        """Append a message to the user's active conversation and update its counters, in one transaction.

        Args:
            conversation_id: the conversation, which must belong to `user_id` and be active.
            user_id: the owner.
            content: the text; not empty, no NUL characters, up to 1,000,000 characters.
            message_type: user_input, agent_response or system.
            agent_name: the agent that answered (letters, digits, `_ . -`), for agent responses.
            metadata: a JSON object.
            tokens_used: when None, estimated as round(len(content) / 3.5).
            response_time: seconds the agent took.
            tx: a transaction from `db.transaction()` to join.

        Returns:
            The stored message with its per-conversation sequence number `seq` (1, 2, 3… without gaps).

        Raises:
            ValidationError: a malformed argument; nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is archived or deleted.
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
                },
            )
            tokens = data.tokens_used if data.tokens_used is not None else estimate_tokens(data.content)
            message_id = new_id()

            async def work(conn: AsyncConnection) -> Message:
                repository = ConversationRepository(conn, data.user_id)
                now = self._db.clock()
                seq = await repository.take_sequence_number(data.conversation_id, tokens, now)
                if seq is None:
                    raise await self._why_not_appendable(repository, data.conversation_id)
                row = await repository.insert_message(
                    {
                        "message_id": message_id,
                        "conversation_id": data.conversation_id,
                        "seq": seq,
                        "agent_name": data.agent_name,
                        "message_type": data.message_type,
                        "content": data.content,
                        "metadata": data.metadata,
                        "tokens_used": tokens,
                        "response_time": data.response_time,
                        "created_at": now,
                    }
                )
                message = Message.model_validate(row)
                await self._audit.record(
                    conn,
                    action=AuditAction.create,
                    table_name=MESSAGES,
                    record_id=message.message_id,
                    user_id=message.user_id,
                    new_values=_message_audit_values(message),
                )
                return message

            return await op.run(work, tx=tx)

    @staticmethod
    async def _why_not_appendable(
        repository: ConversationRepository, conversation_id: uuid.UUID
    ) -> Exception:
        row = await repository.get(conversation_id)
        if row is None:
            return NotFoundError(
                f"conversation {conversation_id} does not exist or does not belong to user {repository.user_id}"
            )
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
        """Messages of the user's conversation in sequence order.

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
                if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
                    raise ValidationError(
                        f"{name} must be a non-negative integer sequence number, got {bound!r}"
                    )

            async def work(conn: AsyncConnection) -> list[Message]:
                repository = ConversationRepository(conn, owner)
                rows = await repository.messages(key, after_seq=after_seq, before_seq=before_seq, limit=limit)
                if not rows and await repository.get(key) is None:
                    raise NotFoundError(
                        f"conversation {key} does not exist or does not belong to user {owner}"
                    )
                return [Message.model_validate(row) for row in rows]

            return await op.run(work, tx=tx)
