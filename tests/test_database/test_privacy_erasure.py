"""erase_user (LGPD Art. 16 and 18 VI) on both backends: afterwards no table — the audit trail and SQLite's full-text
index shadow tables included — holds the person's plaintext values or ids; other people's data is untouched; the
audit rows about them remain, pseudonymised; the erasure itself is audited without the erased values; a legal hold
keeps what it names."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import pytest
from sqlalchemy import text

from stratus_db import (
    AuditManager,
    ConsentManager,
    ConversationManager,
    Database,
    MemoryManager,
    NotFoundError,
    Principal,
    PrivacyManager,
    UserManager,
    ValidationError,
)
from stratus_db.conversations.rooms_base import recent_messages
from stratus_db.errors import PermissionDeniedError
from stratus_db.privacy.erasure import ERASED
from stratus_db.privacy.kinds import ErasableKind
from tests.fixtures.factories import count_rows, create_user

NAME = "Zuleica Tempestade"
EMAIL = "zuleica.tempestade@aeroclube.com.br"
SECRETS = (NAME, EMAIL, "Hangarsecreto", "Xiquexique", "784512", "735194", "1971-03-09")
"""The person's plaintext values: a name, an e-mail, a memory, a message, a credential number, a CANAC code and a
birth date."""


async def every_row_as_text(db: Database) -> list[str]:
    """Every row of every table of the database, as text: SQLite's full-text shadow tables (blobs as bytes decoded
    leniently) and PostgreSQL's tables alike."""
    texts: list[str] = []
    async with db.transaction(read_only=True) as conn:
        if conn.dialect.name == "sqlite":
            names = (
                await conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"))
            ).scalars()
            for name in list(names):
                for row in await conn.execute(text(f'SELECT * FROM "{name}"')):
                    texts.append(
                        " ".join(
                            value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                            for value in row
                        )
                    )
        else:
            names = (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
                )
            ).scalars()
            for name in list(names):
                texts += (await conn.execute(text(f'SELECT t::text FROM "{name}" t'))).scalars().all()
    return texts


def occurrences(texts: list[str], needles: tuple[str, ...]) -> dict[str, int]:
    found = {needle: sum(needle.lower() in line.lower() for line in texts) for needle in needles}
    return {needle: count for needle, count in found.items() if count}


async def a_person_with_data_everywhere(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
    person = await users.create_user(
        NAME,
        EMAIL,
        "pilot",
        licenses=["PP"],
        preferences={"units": "aviation"},
        birth_date=date(1971, 3, 9),
        canac="735194",
    )
    await users.add_credential(person.user_id, "CMA1", number="784512", expires_at=date(2030, 1, 1))
    await memories.store_memory(person.user_id, "hangar", "Hangarsecreto em Jundiaí", "long_term")
    assert await memories.get_memory(person.user_id, "hangar") is not None  # cached now
    chat = await conversations.create_conversation(person.user_id, "Rota")
    await conversations.add_message(chat.conversation_id, person.user_id, "Minha rota passa por Xiquexique")
    archived = await conversations.create_conversation(person.user_id, "Antiga")
    await conversations.add_message(archived.conversation_id, person.user_id, "Xiquexique de novo")
    await conversations.archive_conversation(archived.conversation_id, person.user_id)  # packed with zstd
    await users.update_user(person.user_id, name=f"{NAME} Filho")
    await ConsentManager(db).grant_consent(person.user_id, "analytics", "v3", "app")
    other = await create_user(users)
    async with db.context(ip_address="203.0.113.77", user_agent="StratusApp/3.1 (Zuleica)"):
        with pytest.raises(PermissionDeniedError):  # a refused attempt: its audit row names them as the actor
            await memories.get_memory(other.user_id, "hangar", principal=Principal.for_user(person.user_id))
    await memories.store_memory(other.user_id, "hangar", "Hangar do outro em Bragança", "long_term")
    other_chat = await conversations.create_conversation(other.user_id, "Outro")
    await conversations.add_message(other_chat.conversation_id, other.user_id, "Mensagem de outra pessoa")
    return person.user_id, other.user_id


async def test_nothing_of_the_person_is_left_in_any_table(db: Database) -> None:
    person, other = await a_person_with_data_everywhere(db)
    assert occurrences(await every_row_as_text(db), (*SECRETS, str(person))) != {}, (
        "the scan finds them before"
    )
    audit_rows_about_them = len((await AuditManager(db).query(user_id=person, limit=500)).items)

    async with db.context(ip_address="198.51.100.23", user_agent="PortalDPO/1.0"):
        report = await PrivacyManager(db).erase_user(person, "pedido do titular, protocolo 2026-118")

    left = await every_row_as_text(db)
    assert occurrences(left, (*SECRETS, str(person), person.hex, "203.0.113.77", "198.51.100.23")) == {}
    assert occurrences(left, ("Hangar do outro", "Mensagem de outra pessoa", str(other))) != {}
    assert await UserManager(db).get_user(person) is None
    assert await MemoryManager(db).get_memory(person, "hangar") is None, "the cache forgot it too"
    assert report.deleted == {
        "users": 1,
        "activity_daily": 0,  # today's messages are not rolled up yet (tests/test_database/test_analytics.py)
        "api_keys": 0,
        "user_credentials": 2,
        "memory_entries": 1,
        "conversations": 2,
        "messages": 2,
        "user_consents": 1,
    }
    trail = AuditManager(db)
    assert len((await trail.query(user_id=person)).items) == 0
    about_pseudonym = (await trail.query(user_id=report.pseudonym, limit=500)).items
    assert len(about_pseudonym) == audit_rows_about_them + 1, "pseudonymised, not deleted; plus the erasure"
    assert report.audit_rows_pseudonymised == audit_rows_about_them + 1, "and the refusal of their attempt"
    renamed = next(e for e in about_pseudonym if e.action == "update" and e.table_name == "users")
    assert renamed.old_values == {"name": ERASED}
    assert renamed.new_values == {"name": ERASED}
    erasure = about_pseudonym[0]
    assert (erasure.action, erasure.record_id) == ("erase", report.pseudonym)
    assert erasure.new_values == {
        "reason": "pedido do titular, protocolo 2026-118",
        "deleted": report.deleted,
        "audit_rows_pseudonymised": audit_rows_about_them + 1,
        "held": [],
    }


async def test_erasure_asked_for_by_the_person_leaves_no_trace_of_them_either(db: Database) -> None:
    person, _ = await a_person_with_data_everywhere(db)
    async with db.context(ip_address="203.0.113.77", user_agent="StratusApp/3.1 (Zuleica)"):
        report = await PrivacyManager(db).erase_user(
            person, "pedido do titular pelo app", principal=Principal.for_user(person)
        )

    left = await every_row_as_text(db)
    assert occurrences(left, (*SECRETS, str(person), person.hex, "203.0.113.77", "(Zuleica)")) == {}
    erasure = (await AuditManager(db).query(action="erase")).items[0]
    assert (erasure.actor, erasure.ip_address, erasure.user_agent) == (f"user:{report.pseudonym}", None, None)


async def test_erasure_in_the_callers_transaction_clears_the_search_indexes_after_commit(
    db: Database,
) -> None:
    person, _ = await a_person_with_data_everywhere(db)

    async with db.transaction() as tx:
        await PrivacyManager(db).erase_user(person, "pedido do titular", tx=tx)

    for _ in range(100):  # the indexes are merged by a task started at commit
        left = await every_row_as_text(db)
        if not occurrences(left, (*SECRETS, str(person), person.hex)):
            break
        await asyncio.sleep(0.05)
    assert occurrences(left, (*SECRETS, str(person), person.hex)) == {}


async def test_a_legal_hold_keeps_what_it_names_under_a_tombstone(db: Database) -> None:
    person, _ = await a_person_with_data_everywhere(db)
    holding = Database(
        db.settings.model_copy(update={"STRATUS_ERASURE_LEGAL_HOLD": frozenset({ErasableKind.conversations})})
    )
    try:
        report = await PrivacyManager(holding).erase_user(person, "pedido do titular")
    finally:
        await holding.close()

    assert report.held == ("conversations",)
    assert report.deleted == {
        "activity_daily": 0,
        "api_keys": 0,
        "user_credentials": 2,
        "memory_entries": 1,
        "user_consents": 1,
    }
    tombstone = await UserManager(db).get_user(person)
    assert tombstone is not None
    assert (tombstone.name, tombstone.preferences, tombstone.licenses) == (ERASED, {}, [])
    assert (tombstone.birth_date, tombstone.canac) == (None, None)
    assert tombstone.deactivated_at is not None
    assert tombstone.email.endswith("@erased.invalid")
    assert await count_rows(db, "messages") == 3, "the held conversations keep their messages"
    left = await every_row_as_text(db)
    assert occurrences(left, (NAME, EMAIL, "Hangarsecreto", "784512", "735194", "1971-03-09")) == {}
    assert occurrences(left, ("Xiquexique",)) != {}, "held"


@pytest.mark.parametrize(
    ("user_id", "reason", "error", "match"),
    [
        ("not-a-uuid", "pedido", ValidationError, "user_id must be a UUID"),
        (None, "", ValidationError, "reason"),
        (None, "x" * 501, ValidationError, "reason"),
        (None, 42, ValidationError, "reason"),
        (uuid.UUID(int=7), "pedido", NotFoundError, "does not exist"),
    ],
)
async def test_bad_input_erases_nothing(
    db: Database, user_id: Any, reason: Any, error: type, match: str
) -> None:
    person, _ = await a_person_with_data_everywhere(db)
    before = {table: await count_rows(db, table) for table in ("users", "messages", "audit_log")}

    with pytest.raises(error, match=match):
        await PrivacyManager(db).erase_user(person if user_id is None else user_id, reason)

    assert {table: await count_rows(db, table) for table in before} == before
    assert (await UserManager(db).get_user(person)) is not None


async def test_erasure_empties_this_process_cache_of_their_conversations(db: Database) -> None:
    users, conversations = UserManager(db), ConversationManager(db)
    person = await create_user(users)
    chat = await conversations.create_conversation(person.user_id, "Rota")
    await conversations.add_message(chat.conversation_id, person.user_id, "Minha rota passa por Xiquexique")
    await conversations.get_context(chat.conversation_id, person.user_id, 1000)  # caches the tail
    assert recent_messages(db).get(chat.conversation_id, person.user_id) is not None

    await PrivacyManager(db).erase_user(person.user_id, "pedido do titular")

    assert recent_messages(db).get(chat.conversation_id, person.user_id) is None
