"""Everything held about one person, as one JSON document (LGPD Art. 18 II and V): docs/privacy.md "Export".

The document is streamed: each table is read in keyset batches inside one read-only transaction (a snapshot: on
PostgreSQL REPEATABLE READ, on SQLite the WAL read transaction), and the JSON text is handed out in chunks of about
CHUNK_BYTES as it is made, so a person with 100,000 messages is exported in memory bounded by one batch.

Format `stratus-db/user-export`, version 1 (a consumer checks both; a field added later keeps the version, a field
changed or removed raises it):

    {"format": "stratus-db/user-export", "version": 1, "exported_at": "<UTC ISO 8601>", "user_id": "<uuid>",
     "user": {<the profile: UserRead>},
     "credentials": [{<CredentialRead>}, ...],
     "consents": [{<ConsentEvent>}, ...],                      the consent ledger's events, newest first
     "memories": [{<MemoryEntry>}, ...],                       every stored memory, expired ones not yet purged too
     "conversations": [{<Conversation>, "messages": [{<Message>}, ...]}, ...],  every status, deleted ones too
     "audit_events": [{<AuditEvent>}, ...]}                    the audit rows about the person, oldest first; when
                                                               someone else acted, only the actor's kind is given
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import open_events
from stratus_db.conversations.repository import ConversationRepository, StoredMessage
from stratus_db.conversations.rooms_base import message_of
from stratus_db.conversations.schemas import Conversation
from stratus_db.kit.models import table_of
from stratus_db.memory.repository import entry_of, reveal
from stratus_db.memory.schemas import MemoryEntry
from stratus_db.models import AuditRow, ConversationStatus, MemoryRow
from stratus_db.privacy.consent_repository import ConsentRepository
from stratus_db.privacy.consent_schemas import ConsentEvent
from stratus_db.security.personal import PersonalData
from stratus_db.users.credential_repository import CredentialRepository
from stratus_db.users.repository import UserRepository

EXPORT_FORMAT = "stratus-db/user-export"
EXPORT_VERSION = 1
BATCH_ROWS = 500
"""Rows read per statement: what the export holds in memory at once (with one chunk of text)."""
CHUNK_BYTES = 64 * 1024

_memories = table_of(MemoryRow)
_audit = table_of(AuditRow)
_Row = TypeVar("_Row")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _model_json(model: BaseModel) -> str:
    return model.model_dump_json()


Piece = str | AsyncIterator[str]
"""One element of a JSON array: its text, or the pieces of its text (a conversation and its messages)."""


async def _array(elements: AsyncIterator[Piece]) -> AsyncIterator[str]:
    """A JSON array of `elements`, in pieces."""
    yield "["
    separator = ""
    async for element in elements:
        yield separator
        separator = ","
        if isinstance(element, str):
            yield element
        else:
            async for piece in element:
                yield piece
    yield "]"


async def _batches(
    read: Callable[[Any], Awaitable[Sequence[_Row]]], position: Callable[[_Row], Any]
) -> AsyncIterator[_Row]:
    """Every row `read(after)` pages through, `after` being the last row's position (None at first)."""
    after: Any = None
    while True:
        rows = await read(after)
        for row in rows:
            yield row
        if len(rows) < BATCH_ROWS:
            return
        after = position(rows[-1])


async def stream_export(
    conn: AsyncConnection, user_id: uuid.UUID, exported_at: datetime, personal: PersonalData
) -> AsyncIterator[bytes]:
    """The export document of `user_id`, read on `conn` (a snapshot transaction), in chunks of UTF-8 JSON text of
    about CHUNK_BYTES."""
    pieces: list[str] = []
    size = 0
    async for piece in _document(conn, user_id, exported_at, personal):
        pieces.append(piece)
        size += len(piece)
        if size >= CHUNK_BYTES:
            yield "".join(pieces).encode()
            pieces, size = [], 0
    if pieces:
        yield "".join(pieces).encode()


async def _document(
    conn: AsyncConnection, user_id: uuid.UUID, exported_at: datetime, personal: PersonalData
) -> AsyncIterator[str]:
    user = await UserRepository(conn, personal).get(user_id)
    if user is None:  # erased since the export was asked for: the snapshot holds nothing about them
        return
    conversations = ConversationRepository(conn, user_id)

    async def credentials() -> AsyncIterator[Piece]:
        for credential in await CredentialRepository(conn, personal).of_user(user_id):
            yield _model_json(credential)

    async def consents() -> AsyncIterator[Piece]:
        ledger = ConsentRepository(conn, user_id)

        async def read(after: tuple[datetime, uuid.UUID] | None) -> list[ConsentEvent]:
            return await ledger.history(None, after, BATCH_ROWS)

        async for event in _batches(read, lambda e: (e.occurred_at, e.consent_id)):
            yield _model_json(event)

    async def memories() -> AsyncIterator[Piece]:
        async def read(after: str | None) -> list[Any]:
            statement = (
                select(*(_memories.c[name] for name in MemoryEntry.model_fields))
                .where(MemoryRow.user_id == user_id)
                .order_by(MemoryRow.key)
                .limit(BATCH_ROWS)
            )
            if after is not None:
                statement = statement.where(MemoryRow.key > after)
            return list((await conn.execute(statement)).mappings())

        async for row in _batches(read, lambda row: row["key"]):
            entry = entry_of(row)
            yield _model_json((await reveal(personal, conn, [entry]))[0] if entry.sensitive else entry)

    async def messages(conversation_id: uuid.UUID) -> AsyncIterator[Piece]:
        async def read(after: int | None) -> list[StoredMessage]:
            return await conversations.messages(
                conversation_id, after_seq=after, before_seq=None, limit=BATCH_ROWS
            )

        async for stored in _batches(read, lambda message: message.seq):
            yield _model_json(message_of(stored))

    async def conversation(found: Conversation) -> AsyncIterator[str]:
        # A conversation's messages can be many: its text is handed out in pieces too.
        yield _model_json(found)[:-1] + ',"messages":'
        async for piece in _array(messages(found.conversation_id)):
            yield piece
        yield "}"

    async def every_conversation() -> AsyncIterator[Piece]:
        async def read(after: tuple[datetime, uuid.UUID] | None) -> list[Conversation]:
            return await conversations.page(statuses=tuple(ConversationStatus), after=after, limit=BATCH_ROWS)

        async for found in _batches(read, lambda c: (c.last_activity_at, c.conversation_id)):
            yield conversation(found)

    async def audit_events() -> AsyncIterator[Piece]:
        async def read(after: tuple[datetime, uuid.UUID] | None) -> list[Any]:
            statement = (
                select(_audit)
                .where(AuditRow.user_id == user_id)
                .order_by(AuditRow.timestamp, AuditRow.audit_id)
                .limit(BATCH_ROWS)
            )
            if after is not None:
                moment, last = after
                statement = statement.where(
                    or_(
                        AuditRow.timestamp > moment,
                        and_(AuditRow.timestamp == moment, AuditRow.audit_id > last),
                    )
                )
            return list((await conn.execute(statement)).mappings())

        themselves = f"user:{user_id}"
        async for row in _batches(read, lambda row: (row["timestamp"], row["audit_id"])):
            event = (await open_events(conn, personal, [row]))[0]
            if event.actor != themselves:
                # Someone else acted (an admin, an agent, a refused stranger): the person learns what was done with
                # their data and by what kind of actor, not that actor's identity, address or user agent.
                kind = event.actor.partition(":")[0]
                event = event.model_copy(update={"actor": kind, "ip_address": None, "user_agent": None})
            yield _model_json(event)

    head = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": exported_at.isoformat(),
        "user_id": str(user_id),
    }
    yield _json(head)[:-1] + ',"user":' + _model_json(user)
    sections: dict[str, Callable[[], AsyncIterator[Piece]]] = {
        "credentials": credentials,
        "consents": consents,
        "memories": memories,
        "conversations": every_conversation,
        "audit_events": audit_events,
    }
    for name, elements in sections.items():
        yield f',"{name}":'
        async for piece in _array(elements()):
            yield piece
    yield "}"
