"""Conversations themselves: create, read, list, update, archive, delete, restore and purge."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import changed_fields
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations import packing
from stratus_db.conversations.repository import ConversationRepository
from stratus_db.conversations.rooms_base import (
    CONVERSATIONS,
    MESSAGES,
    ConversationRoom,
    conversation_audit_values,
    not_found,
)
from stratus_db.conversations.schemas import (
    Conversation,
    ConversationCreate,
    ConversationUpdate,
)
from stratus_db.errors import ConflictError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, aware_datetime, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.statistics import analyze_after
from stratus_db.kit.validation import (
    parse_enum,
    parse_uuid,
    validate_input,
)
from stratus_db.models import ConversationStatus
from stratus_db.security.principal import Principal

VISIBLE_STATUSES = (ConversationStatus.active, ConversationStatus.archived)
"""What list_conversations shows when no status is asked for: deleted conversations are hidden."""


class ConversationLifecycle(ConversationRoom):
    """Conversations themselves: create, read, list, update, archive, delete, restore and purge."""

    async def create_conversation(
        self,
        user_id: uuid.UUID | str,
        title: str | None = None,
        context: dict[str, Any] | None = None,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Conversation:
        """Start a conversation for the user.

        Args:
            user_id: the owner.
            title: up to 500 characters.
            context: a JSON object the agents keep with the conversation.
            tx: a transaction from `db.transaction()` to join.
            principal: who makes this call, instead of the context's principal (see the class docstring).

        Raises:
            ValidationError: a malformed argument; nothing is written.
            NotFoundError: the user does not exist.
        """
        async with self._db.operation("conversation.create", principal=principal) as op:
            data = validate_input(
                ConversationCreate,
                {"user_id": user_id, "title": title, "context": {} if context is None else context},
            )
            await op.authorize(data.user_id, tx=tx)
            now = self._db.clock()
            new_conversation = Conversation(
                conversation_id=new_id(),
                user_id=data.user_id,
                title=data.title,
                status=ConversationStatus.active,
                context=data.context,
                summary=None,
                summarized_through_seq=0,
                summarized_tokens=0,
                message_count=0,
                total_tokens=0,
                created_at=now,
                updated_at=now,
                last_activity_at=now,
            )

            async def work(conn: AsyncConnection) -> Conversation:
                conversation = await ConversationRepository(conn, data.user_id).insert(new_conversation)
                await self._audit.record(
                    conn,
                    action=AuditAction.create,
                    table_name=CONVERSATIONS,
                    record_id=conversation.conversation_id,
                    user_id=conversation.user_id,
                    new_values=conversation_audit_values(conversation),
                )
                return conversation

            return await op.run(work, tx=tx)

    async def get_conversation(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Conversation | None:
        """The user's conversation with this id (whatever its status), or None.

        Raises:
            ValidationError: an id is not a UUID.
        """
        async with self._db.operation("conversation.get", read_only=True, principal=principal) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            await op.authorize(owner, tx=tx)

            async def work(conn: AsyncConnection) -> Conversation | None:
                return await ConversationRepository(conn, owner).get(key)

            return await op.run(work, tx=tx)

    async def list_conversations(
        self,
        user_id: uuid.UUID | str,
        *,
        status: ConversationStatus | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[Conversation]:
        """The user's conversations, most recent activity first; without `status`, active and archived ones.

        Raises:
            ValidationError: a malformed user id, status, limit or cursor.
        """
        async with self._db.operation("conversation.list", read_only=True, principal=principal) as op:
            owner = parse_uuid(user_id, "user_id")
            statuses = (
                VISIBLE_STATUSES if status is None else (parse_enum(ConversationStatus, status, "status"),)
            )
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (aware_datetime, uuid.UUID))
            await op.authorize(owner, tx=tx)

            async def work(conn: AsyncConnection) -> Page[Conversation]:
                conversations = await ConversationRepository(conn, owner).page(
                    statuses=statuses, after=after, limit=limit + 1
                )
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
        principal: Principal | None = None,
    ) -> Conversation:
        """Change the title and/or replace the context of an active or archived conversation.

        An argument left out (None) keeps its value. Changing nothing writes nothing.

        Raises:
            ValidationError: a malformed argument, or neither title nor context given; nothing is written.
            NotFoundError: no such conversation for this user.
            ConflictError: the conversation is deleted (restore it first).
        """
        async with self._db.operation("conversation.update", principal=principal) as op:
            data = validate_input(
                ConversationUpdate,
                {"conversation_id": conversation_id, "user_id": user_id, "title": title, "context": context},
            )
            changes = data.model_dump(include={"title", "context"}, exclude_none=True)
            if not changes:
                raise ValidationError("update_conversation needs a title or a context to change")
            await op.authorize(data.user_id, tx=tx)

            async def work(conn: AsyncConnection) -> Conversation:
                repository, current = await self._locked(conn, data.conversation_id, data.user_id)
                if current.status == ConversationStatus.deleted:
                    raise ConflictError(
                        f"conversation {current.conversation_id} is deleted: restore it before changing it"
                    )
                _, new_values = changed_fields(current, changes)
                if not new_values:
                    return current
                updated = await repository.set_details(
                    current.conversation_id,
                    title=data.title,
                    context=data.context,
                    updated_at=self._db.clock(),
                )
                # Which fields changed, not what they said (see conversation_audit_values).
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
        principal: Principal | None = None,
    ) -> Conversation:
        """Archive an active conversation: it stays listed and readable but takes no more messages.

        Args:
            pack: store its message bodies compressed (zstd, conversations/packing.py); reading them back is
                transparent. Default: the STRATUS_PACK_ARCHIVED_MESSAGES setting (on).
            principal: who makes this call, instead of the context's principal (see the class docstring).

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
            principal=principal,
        )

    async def delete_conversation(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
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
            principal=principal,
        )

    async def restore_conversation(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
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
            principal=principal,
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
        principal: Principal | None,
    ) -> Conversation:
        async with self._db.operation(name, principal=principal) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            await op.authorize(owner, tx=tx)

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
                    updated = await repository.set_status(key, to, self._db.clock())
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
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> int:
        """Delete the conversation and all its messages for good (LGPD erasure), whatever its status.

        The audit row keeps counts, not content. Returns how many messages were deleted.

        Raises:
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.purge", principal=principal) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            await op.authorize(owner, tx=tx)

            async def work(conn: AsyncConnection) -> int:
                repository, current = await self._locked(conn, key, owner)
                await repository.delete(key)
                await self._audit.record(
                    conn,
                    action=AuditAction.purge,
                    table_name=CONVERSATIONS,
                    record_id=key,
                    user_id=owner,
                    old_values=conversation_audit_values(current),
                )
                return current.message_count

            deleted = await op.run(work, tx=tx)
            await analyze_after(self._db, MESSAGES, deleted, tx=tx)
            return deleted

    async def _locked(
        self, conn: AsyncConnection, conversation_id: uuid.UUID, user_id: uuid.UUID
    ) -> tuple[ConversationRepository, Conversation]:
        repository = ConversationRepository(conn, user_id)
        conversation = await repository.get(conversation_id, for_update=True)
        if conversation is None:
            raise not_found(conversation_id, user_id)
        return repository, conversation
