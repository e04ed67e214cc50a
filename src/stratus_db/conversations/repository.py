"""All SQL on conversations and messages, scoped to one user: every statement carries the owner's filter."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import NotFoundError
from stratus_db.kit.integrity import Violation, violation_of
from stratus_db.kit.models import table_of
from stratus_db.models import Conversation, ConversationStatus, Message

_conversations = table_of(Conversation)
_messages = table_of(Message)


class ConversationRepository:
    def __init__(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        self.conn = conn
        self.user_id = user_id
        self._owned: ColumnElement[bool] = Conversation.user_id == user_id
        self._owned_messages: ColumnElement[bool] = Message.user_id == user_id

    async def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        statement = insert(_conversations).values(user_id=self.user_id, **values).returning(_conversations)
        try:
            return dict((await self.conn.execute(statement)).mappings().one())
        except IntegrityError as exc:
            if violation_of(exc) is Violation.foreign_key:
                raise NotFoundError(f"user {self.user_id} does not exist") from exc
            raise

    async def get(self, conversation_id: uuid.UUID) -> dict[str, Any] | None:
        statement = select(_conversations).where(self._owned, Conversation.conversation_id == conversation_id)
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else dict(row)

    async def page(
        self,
        *,
        statuses: tuple[ConversationStatus, ...],
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        statement = (
            select(_conversations)
            .where(self._owned, Conversation.status.in_(statuses))
            .order_by(Conversation.last_activity_at.desc(), Conversation.conversation_id.desc())
            .limit(limit)
        )
        if after is not None:
            last_activity, last_id = after
            statement = statement.where(
                or_(
                    Conversation.last_activity_at < last_activity,
                    and_(
                        Conversation.last_activity_at == last_activity, Conversation.conversation_id < last_id
                    ),
                )
            )
        return [dict(row) for row in (await self.conn.execute(statement)).mappings()]

    async def take_sequence_number(
        self, conversation_id: uuid.UUID, tokens: int, now: datetime
    ) -> int | None:
        """Count one more message on an active conversation and return its sequence number.

        The row lock this UPDATE takes serializes concurrent appends, so numbers are distinct and gap-free.
        None when the conversation is missing, foreign or not active.
        """
        statement = (
            update(_conversations)
            .where(
                self._owned,
                Conversation.conversation_id == conversation_id,
                Conversation.status == ConversationStatus.active,
            )
            .values(
                message_count=Conversation.message_count + 1,
                total_tokens=Conversation.total_tokens + tokens,
                last_activity_at=now,
                updated_at=now,
            )
            .returning(Conversation.message_count)
        )
        return (await self.conn.execute(statement)).scalar_one_or_none()

    async def insert_message(self, values: dict[str, Any]) -> dict[str, Any]:
        statement = insert(_messages).values(user_id=self.user_id, **values).returning(_messages)
        return dict((await self.conn.execute(statement)).mappings().one())

    async def messages(
        self, conversation_id: uuid.UUID, *, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Messages in sequence order: the first `limit` after `after_seq`, or the last `limit` before `before_seq`."""
        statement = select(_messages).where(self._owned_messages, Message.conversation_id == conversation_id)
        if after_seq is not None:
            statement = statement.where(Message.seq > after_seq)
        if before_seq is not None:
            statement = statement.where(Message.seq < before_seq)
        newest_first = before_seq is not None and after_seq is None
        statement = statement.order_by(Message.seq.desc() if newest_first else Message.seq).limit(limit)
        rows = [dict(row) for row in (await self.conn.execute(statement)).mappings()]
        return rows[::-1] if newest_first else rows
