"""export_user_data (LGPD Art. 18 II and V) on both backends: the document holds everything the tables hold about
the person and nothing about anyone else, it is streamed in bounded memory, and every export is audited."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from stratus_db import (
    AuditManager,
    ConsentManager,
    ConversationManager,
    Database,
    MemoryManager,
    NotFoundError,
    PermissionDeniedError,
    Principal,
    PrivacyManager,
    UserManager,
    ValidationError,
)
from stratus_db.models import Base
from stratus_db.privacy.export import CHUNK_BYTES, EXPORT_FORMAT, EXPORT_VERSION
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user


async def export_document(db: Database, user_id: uuid.UUID) -> tuple[dict[str, Any], list[bytes]]:
    chunks = [chunk async for chunk in await PrivacyManager(db).export_user_data(user_id)]
    return json.loads(b"".join(chunks)), chunks


async def rows_of(db: Database, table: str, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The table's rows about the user, as the database holds them."""
    columns = Base.metadata.tables[table]
    async with db.transaction(read_only=True) as conn:
        result = await conn.execute(select(columns).where(columns.c.user_id == user_id))
        return [dict(row) for row in result.mappings()]


async def test_the_export_holds_everything_about_the_person_and_nothing_else(
    db: Database, clock: ManualClock
) -> None:
    users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
    person = await users.create_user(
        "Ana Souza", "ana@aeroclube.com.br", "pilot", licenses=["PP"], preferences={"units": "aviation"}
    )
    stranger = await users.create_user("Outro Piloto", "outro@aeroclube.com.br", "pilot")
    await users.add_credential(person.user_id, "CMA1", number="998877", expires_at=date(2027, 6, 1))
    await memories.store_memory(
        person.user_id, "aeronave", {"modelo": "C172", "prefixo": "PP-ABC"}, "long_term"
    )
    await memories.store_memory(person.user_id, "clima", "teto baixo em SBGR", "short_term")
    await memories.store_memory(stranger.user_id, "aeronave", "segredo do outro")
    ledger = ConsentManager(db)
    await ledger.grant_consent(person.user_id, "analytics", "v3", "app")
    await ledger.revoke_consent(person.user_id, "analytics", "web")
    await ledger.grant_consent(stranger.user_id, "marketing", "v1", "app")
    statuses = {}
    for title, status in (("Ativa", None), ("Arquivada", "archive"), ("Apagada", "delete")):
        conversation = await conversations.create_conversation(person.user_id, title)
        await conversations.add_message(conversation.conversation_id, person.user_id, f"Pergunta em {title}")
        await conversations.add_message(
            conversation.conversation_id,
            person.user_id,
            f"Resposta em {title}",
            message_type="agent_response",
            agent_name="meteorologia",
        )
        if status == "archive":
            await conversations.archive_conversation(conversation.conversation_id, person.user_id)
        elif status == "delete":
            await conversations.delete_conversation(conversation.conversation_id, person.user_id)
        statuses[conversation.conversation_id] = title
    async with db.context(ip_address="198.51.100.9", user_agent="Curioso/1.0"):  # the stranger tries, refused
        with pytest.raises(PermissionDeniedError):
            await users.get_user(person.user_id, principal=Principal.for_user(stranger.user_id))
    other_chat = await conversations.create_conversation(stranger.user_id, "Alheia")
    await conversations.add_message(other_chat.conversation_id, stranger.user_id, "mensagem do outro")
    clock.advance(days=30)  # the short-term memory expires; it is still held until purged

    document, _ = await export_document(db, person.user_id)

    assert document["format"] == EXPORT_FORMAT
    assert document["version"] == EXPORT_VERSION
    assert document["user_id"] == str(person.user_id)
    assert document["user"]["name"] == "Ana Souza"
    assert document["user"]["preferences"] == {"units": "aviation"}
    assert sorted(c["code"] for c in document["credentials"]) == sorted(
        row["code"] for row in await rows_of(db, "user_credentials", person.user_id)
    )
    assert {c["number"] for c in document["credentials"]} == {None, "998877"}
    assert [(c["purpose"], c["action"], c["channel"]) for c in document["consents"]] == [
        ("analytics", "revoked", "web"),
        ("analytics", "granted", "app"),
    ]
    held_memories = await rows_of(db, "memory_entries", person.user_id)
    assert sorted(m["key"] for m in document["memories"]) == sorted(m["key"] for m in held_memories)
    assert {m["key"]: m["value"] for m in document["memories"]} == {
        "aeronave": {"modelo": "C172", "prefixo": "PP-ABC"},
        "clima": "teto baixo em SBGR",
    }
    exported = {c["conversation_id"]: c for c in document["conversations"]}
    assert set(exported) == {str(key) for key in statuses}
    assert {c["status"] for c in exported.values()} == {"active", "archived", "deleted"}
    held_messages = await rows_of(db, "messages", person.user_id)
    assert sum(len(c["messages"]) for c in exported.values()) == len(held_messages) == 6
    for conversation_id, title in statuses.items():
        messages = exported[str(conversation_id)]["messages"]
        assert [m["content"] for m in messages] == [f"Pergunta em {title}", f"Resposta em {title}"]
        assert [m["seq"] for m in messages] == [1, 2]
    held_audit = await rows_of(db, "audit_log", person.user_id)
    assert [e["audit_id"] for e in document["audit_events"]] == [
        str(row["audit_id"]) for row in sorted(held_audit, key=lambda r: (r["timestamp"], r["audit_id"]))
    ]
    refusal = next(e for e in document["audit_events"] if e["action"] == "deny")
    assert (refusal["actor"], refusal["ip_address"], refusal["user_agent"]) == ("user", None, None)
    text = json.dumps(document, ensure_ascii=False)
    assert "198.51.100.9" not in text
    assert "segredo do outro" not in text
    assert "mensagem do outro" not in text
    assert str(stranger.user_id) not in text


async def test_the_export_is_audited_before_it_is_read(db: Database) -> None:
    users = UserManager(db)
    person = await create_user(users)
    before = await count_rows(db, "audit_log")

    chunks = await PrivacyManager(db).export_user_data(person.user_id)
    await chunks.aclose()  # the reader stopped at once: the export begun is still on record

    exports = (await AuditManager(db).query(user_id=person.user_id, action="export")).items
    assert await count_rows(db, "audit_log") == before + 1
    assert len(exports) == 1
    assert exports[0].new_values == {"format": EXPORT_FORMAT, "version": EXPORT_VERSION}
    assert exports[0].record_id == person.user_id


async def test_an_unknown_user_or_a_malformed_id_writes_nothing(db: Database) -> None:
    await create_user(UserManager(db))
    before = await count_rows(db, "audit_log")
    with pytest.raises(NotFoundError, match="does not exist"):
        await PrivacyManager(db).export_user_data(uuid.uuid4())
    with pytest.raises(ValidationError, match="user_id must be a UUID"):
        await PrivacyManager(db).export_user_data("robert'); DROP TABLE users;--")
    assert await count_rows(db, "audit_log") == before


async def _person_with_messages(db: Database, count: int) -> uuid.UUID:
    users, conversations = UserManager(db), ConversationManager(db)
    person = await create_user(users)
    conversation = await conversations.create_conversation(person.user_id, "Longa")
    body = "Autorizado pouso na pista 09R, vento 120 graus 8 nós, QNH 1015. " * 16  # ~1 kB
    for start in range(0, count, 1000):
        await conversations.import_messages(
            conversation.conversation_id,
            person.user_id,
            [{"content": f"{start + n:05d} {body}"} for n in range(min(1000, count - start))],
        )
    return person.user_id


async def _measured_export(db: Database, user_id: uuid.UUID) -> tuple[int, int, int, int]:
    """The document's size, its number of chunks, the largest chunk and the peak of memory allocated meanwhile."""
    tracemalloc.start()
    try:
        size = count = largest = 0
        async for chunk in await PrivacyManager(db).export_user_data(user_id):
            size, count, largest = size + len(chunk), count + 1, max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size, count, largest, peak


async def test_many_messages_are_exported_in_chunks_within_bounded_memory(db: Database) -> None:
    small, large = await _person_with_messages(db, 1000), await _person_with_messages(db, 5000)

    small_size, _, _, small_peak = await _measured_export(db, small)
    size, count, largest, peak = await _measured_export(db, large)

    assert size > 5 * 1024 * 1024, "the document holds every message"
    assert size > 4.5 * small_size
    assert count > 50, "handed out in chunks as it is made"
    assert largest < CHUNK_BYTES + 8 * 1024
    # Five times the messages, about the same memory: a batch of rows and a chunk at a time, not the document.
    assert peak < 1.5 * small_peak, f"peak {peak:,} bytes for {size:,}, {small_peak:,} for {small_size:,}"
    document, _ = await export_document(db, large)
    messages = document["conversations"][0]["messages"]
    assert [int(m["content"][:5]) for m in messages] == list(range(5000))
    assert [m["seq"] for m in messages] == list(range(1, 5001))


async def test_write_user_export_writes_the_whole_document_to_a_file(db: Database, tmp_path: Path) -> None:
    person = await create_user(UserManager(db))
    target = tmp_path / "ana.json"

    written = await PrivacyManager(db).write_user_export(person.user_id, target)

    assert target.stat().st_size == written
    assert target.stat().st_mode & 0o777 == 0o600, "it holds health data: the owner alone reads it"
    assert json.loads(target.read_text(encoding="utf-8"))["user"]["email"] == person.email
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == [target], (
        "no partial file left behind"
    )
    with pytest.raises(ValidationError, match="does not exist"):
        await PrivacyManager(db).write_user_export(person.user_id, tmp_path / "missing" / "x.json")


async def test_the_count_of_audit_events_matches_the_trail(db: Database) -> None:
    users = UserManager(db)
    person = await create_user(users)
    for n in range(3):
        await users.update_user(person.user_id, name=f"Nome {n}")
    document, _ = await export_document(db, person.user_id)
    async with db.transaction(read_only=True) as conn:
        audit = Base.metadata.tables["audit_log"]
        held = (
            await conn.execute(
                select(func.count()).select_from(audit).where(audit.c.user_id == person.user_id)
            )
        ).scalar_one()
    assert len(document["audit_events"]) == held
