"""Field encryption on both backends (docs/security.md): no table — the audit trail and SQLite's full-text shadow
tables included — holds a name, an e-mail, a CANAC, a birth date, a credential's number, issue date or
restrictions, or a sensitive memory in clear; what the API returns is the plaintext; a token copied to another row
does not decrypt; rotation moves every data key to the new key, resumably; the migration encrypts rows stored
before it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import text

from stratus_db import (
    AuditManager,
    Database,
    DecryptionError,
    KeyManager,
    MemoryManager,
    NotFoundError,
    PrivacyManager,
    UserManager,
    ValidationError,
)
from stratus_db.privacy.kinds import ErasableKind
from stratus_db.schema import alembic_config
from stratus_db.security.crypto import new_key_entry
from tests.fixtures.databases import handles_on, settings_for, sqlite_url, throwaway_postgres_database
from tests.test_database.test_privacy_erasure import every_row_as_text, occurrences

NAME = "Marina Figueiredo Albuquerque"
NEW_NAME = "Marina Albuquerque Prado"
EMAIL = "marina.albuquerque@aeroclube-sp.com.br"
NEW_EMAIL = "marina.prado@linhaaerea.com.br"
CANAC = "482913"
BIRTH = date(1985, 3, 14)
NUMBER = "CMA-77351-SP"
ISSUED = date(2025, 11, 20)
RESTRICTIONS = "Uso obrigatório de lentes corretivas"
CONDITION = "hipertensão controlada com losartana"
PLAINTEXTS = (
    NAME,
    NEW_NAME,
    EMAIL,
    NEW_EMAIL,
    CANAC,
    "1985-03-14",
    NUMBER,
    "2025-11-20",
    RESTRICTIONS,
    "losartana",
)


async def a_pilot_with_personal_data(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    """A user with every kind of encrypted value, each changed once (so the trail has old and new values)."""
    users, memories = UserManager(db), MemoryManager(db)
    user = await users.create_user(NAME, EMAIL, "pilot", licenses=["PP"], birth_date=BIRTH, canac=CANAC)
    credential = await users.add_credential(
        user.user_id,
        "CMA1",
        number="0000",
        issued_at=ISSUED,
        expires_at=date(2026, 12, 1),
        restrictions="nenhuma",
    )
    await users.update_credential(
        user.user_id, credential.credential_id, number=NUMBER, restrictions=RESTRICTIONS
    )
    await users.update_user(user.user_id, name=NEW_NAME, email=NEW_EMAIL)
    await memories.store_memory(user.user_id, "saude", "sem restrições", sensitive=True)
    await memories.store_memory(user.user_id, "saude", CONDITION, sensitive=True)
    await memories.store_memory(user.user_id, "aeronave", "Cessna 172", "long_term")
    return user.user_id, credential.credential_id


async def test_no_table_holds_personal_data_in_clear_and_the_api_returns_it(db: Database) -> None:
    user_id, credential_id = await a_pilot_with_personal_data(db)
    users, memories = UserManager(db), MemoryManager(db)

    assert occurrences(await every_row_as_text(db), PLAINTEXTS) == {}
    assert occurrences(await every_row_as_text(db), ("Cessna 172",)) != {}, "the scan sees what is in clear"

    user = await users.get_user(user_id)
    assert user is not None
    assert (user.name, user.email, user.canac, user.birth_date) == (NEW_NAME, NEW_EMAIL, CANAC, BIRTH)
    assert await users.get_user_by_email(NEW_EMAIL.upper()) == user
    assert await users.get_user_by_email(EMAIL) is None
    held = {c.credential_id: c for c in [s.credential for s in await users.credential_status(user_id)]}
    assert (held[credential_id].number, held[credential_id].issued_at, held[credential_id].restrictions) == (
        NUMBER,
        ISSUED,
        RESTRICTIONS,
    )
    memory = await memories.get_memory(user_id, "saude")
    assert memory is not None
    assert (memory.value, memory.sensitive) == (CONDITION, True)
    again = await memories.get_memory(user_id, "saude")  # from the cache now
    assert again is not None
    assert (again.memory_id, again.value) == (memory.memory_id, CONDITION)
    assert [entry.value for entry in (await memories.list_memories(user_id)).items] == [
        "Cessna 172",
        CONDITION,
    ]
    assert await memories.search_memories(user_id, "losartana") == []
    assert await memories.search_memories(user_id, "saude") == []

    trail = (await AuditManager(db).query(user_id=user_id, limit=100)).items
    renamed = next(e for e in trail if e.table_name == "users" and e.action == "update")
    assert (renamed.old_values, renamed.new_values) == (
        {"name": NAME, "email": EMAIL},
        {"name": NEW_NAME, "email": NEW_EMAIL},
    )
    changed = next(e for e in trail if e.table_name == "user_credentials" and e.action == "update")
    assert changed.new_values == {"number": NUMBER, "restrictions": RESTRICTIONS}
    stored = [e for e in trail if e.table_name == "memory_entries" and e.record_id == memory.memory_id]
    assert [e.new_values["value"] for e in stored] == [CONDITION, "sem restrições"], "newest first"

    export = b"".join([chunk async for chunk in await PrivacyManager(db).export_user_data(user_id)]).decode()
    assert all(value in export for value in (NEW_NAME, NEW_EMAIL, CANAC, NUMBER, RESTRICTIONS, CONDITION))


async def test_a_sensitive_memory_stays_sensitive(db: Database) -> None:
    user_id, _ = await a_pilot_with_personal_data(db)
    memories = MemoryManager(db)
    with pytest.raises(ValidationError, match="'saude' is sensitive"):
        await memories.store_memory(user_id, "saude", "em clara")
    assert (await memories.get_memory(user_id, "saude")).value == CONDITION  # type: ignore[union-attr]
    assert occurrences(await every_row_as_text(db), ("em clara",)) == {}


async def _raw(db: Database, statement: str, **values: Any) -> Any:
    """Run SQL on the tables directly (no schema check: also after a downgrade); the first row, if any."""
    async with db.engine.begin() as conn:
        result = await conn.execute(text(statement), values)
        return result.first() if result.returns_rows else None


def _key(db: Database, value: uuid.UUID) -> Any:
    return value.hex if db.backend == "sqlite" else value


async def test_a_token_copied_to_another_row_does_not_decrypt(db: Database) -> None:
    victim, credential_id = await a_pilot_with_personal_data(db)
    users, memories = UserManager(db), MemoryManager(db)
    thief = await users.create_user("Outra Pessoa", "outra@aviacao.com", "pilot", licenses=["CMA1"])
    await memories.store_memory(thief.user_id, "saude", "nada", sensitive=True)

    # Another user's row: same column.
    name = (await _raw(db, "SELECT name FROM users WHERE user_id = :u", u=_key(db, victim)))[0]
    await _raw(db, "UPDATE users SET name = :n WHERE user_id = :u", n=name, u=_key(db, thief.user_id))
    with pytest.raises(DecryptionError, match=r"users\.name of row"):
        await users.get_user(thief.user_id)
    # The same row, another column: the bytes are under the right key, bound elsewhere.
    await _raw(db, "UPDATE users SET name = canac WHERE user_id = :u", u=_key(db, victim))
    with pytest.raises(DecryptionError):
        await users.get_user(victim)

    stolen = (
        await _raw(
            db,
            "SELECT restrictions FROM user_credentials WHERE credential_id = :c",
            c=_key(db, credential_id),
        )
    )[0]
    await _raw(
        db,
        "UPDATE user_credentials SET restrictions = :r WHERE user_id = :u",
        r=stolen,
        u=_key(db, thief.user_id),
    )
    with pytest.raises(DecryptionError):
        await users.credential_status(thief.user_id)

    await _raw(
        db,
        "UPDATE memory_entries SET value = (SELECT value FROM memory_entries WHERE user_id = :v AND key = 'saude') "
        "WHERE user_id = :t AND key = 'saude'",
        v=_key(db, victim),
        t=_key(db, thief.user_id),
    )
    with pytest.raises(DecryptionError):
        await memories.get_memory(thief.user_id, "saude")


@pytest.fixture
async def handles(db: Database) -> AsyncIterator[Any]:
    async for open_handle in handles_on(db):
        yield open_handle


async def test_rotation_moves_every_data_key_to_the_new_key_and_resumes(db: Database, handles: Any) -> None:
    old_keys = db.settings.STRATUS_ENCRYPTION_KEYS
    assert old_keys is not None
    old_entry = old_keys.get_secret_value()
    new_entry = new_key_entry("krotated")
    ids = [(await a_pilot_with_personal_data(db))[0]]
    ids += [
        (await UserManager(db).create_user(f"Piloto {n}", f"p{n}@aviacao.com", "pilot")).user_id
        for n in range(4)
    ]

    rotating = handles(STRATUS_ENCRYPTION_KEYS=SecretStr(f"{new_entry},{old_entry}"))
    keys = KeyManager(rotating)
    report = await keys.rotate_keys(batch_size=2)
    assert (report.active_key, report.rewrapped, report.already_current) == ("krotated", 5, 0)
    assert report.remaining_key_ids == ("krotated",)
    again = await keys.rotate_keys()
    assert (again.rewrapped, again.already_current) == (0, 5), "a second run changes nothing"

    only_new = handles(STRATUS_ENCRYPTION_KEYS=SecretStr(new_entry))
    read = await UserManager(only_new).get_user(ids[0])
    assert read is not None
    assert (read.name, read.canac) == (NEW_NAME, CANAC)
    assert (await MemoryManager(only_new).get_memory(ids[0], "saude")).value == CONDITION  # type: ignore[union-attr]
    assert all([await UserManager(only_new).get_user(user_id) for user_id in ids])

    only_old = handles(STRATUS_ENCRYPTION_KEYS=SecretStr(old_entry))
    with pytest.raises(DecryptionError, match="krotated"):
        await UserManager(only_old).get_user(ids[1])


async def test_erasure_shreds_what_the_trail_held_under_the_data_key(db: Database) -> None:
    user_id, _ = await a_pilot_with_personal_data(db)
    report = await PrivacyManager(db).erase_user(user_id, "pedido do titular")
    assert occurrences(await every_row_as_text(db), (*PLAINTEXTS, str(user_id), user_id.hex)) == {}
    assert report.deleted["users"] == 1


async def _encrypts_rows_stored_before(url: str) -> None:
    """Users and credentials stored under revision 0008 are encrypted by 0009, and read back the same."""
    db = Database(settings_for(url))
    try:
        async with db.engine.connect() as conn, db._backend.schema_change(conn), conn.begin():

            def to_0008(connection: Any) -> None:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "0008")

            await conn.run_sync(to_0008)
            user_id, credential_id = uuid.uuid4(), uuid.uuid4()
            now = "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC)
            await conn.execute(
                text(
                    "INSERT INTO users (user_id, name, email, role, licenses, preferences, created_at, updated_at, "
                    "last_active, birth_date, canac) VALUES (:u, :n, :e, 'pilot', '[\"CMA1\"]', '{}', :t, :t, :t, "
                    ":b, :c)"
                ),
                {"u": _key(db, user_id), "n": NAME, "e": EMAIL, "t": now, "b": BIRTH, "c": CANAC},
            )
            await conn.execute(
                text(
                    "INSERT INTO user_credentials (credential_id, user_id, code, kind, number, issued_at, "
                    "restrictions, created_at, updated_at) VALUES (:c, :u, 'CMA1', 'medical', :n, :i, :r, :t, :t)"
                ),
                {
                    "c": _key(db, credential_id),
                    "u": _key(db, user_id),
                    "n": NUMBER,
                    "i": ISSUED,
                    "r": RESTRICTIONS,
                    "t": now,
                },
            )
        await db.migrate()
        assert (
            occurrences(await every_row_as_text(db), (NAME, EMAIL, CANAC, NUMBER, RESTRICTIONS, "1985-03-14"))
            == {}
        )
        users = UserManager(db)
        user = await users.get_user_by_email(EMAIL)
        assert user is not None
        assert (user.user_id, user.name, user.birth_date, user.canac) == (
            user_id,
            NAME,
            BIRTH,
            CANAC,
        )
        [status] = await users.credential_status(user_id)
        assert (status.credential.number, status.credential.issued_at) == (NUMBER, ISSUED)
        await MemoryManager(db).store_memory(user_id, "saude", CONDITION, sensitive=True)
        assert await db.downgrade("0008") == "0008"
        row = await _raw(db, "SELECT name, email, canac FROM users")
        assert tuple(row) == (NAME, EMAIL, CANAC)
        async with db.engine.connect() as conn:
            value = (await conn.execute(text("SELECT value FROM memory_entries"))).scalar_one()
            audited = (
                await conn.execute(
                    text("SELECT new_values FROM audit_log WHERE table_name = 'memory_entries'")
                )
            ).scalar_one()
        as_json = [json.loads(item) if db.backend == "sqlite" else item for item in (value, audited)]
        assert as_json == [CONDITION, {**as_json[1], "value": CONDITION}], (
            "the memory and its trail, decrypted"
        )
    finally:
        await db.close()


async def test_postgres_migration_0009_encrypts_existing_rows() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _encrypts_rows_stored_before(url)


async def test_sqlite_migration_0009_encrypts_existing_rows(tmp_path: Any) -> None:
    await _encrypts_rows_stored_before(sqlite_url(tmp_path / "before-0009.db"))


async def test_the_trail_of_an_expired_sensitive_memory_replaced_still_reads(
    db: Database, clock: Any
) -> None:
    user_id, _ = await a_pilot_with_personal_data(db)
    memories = MemoryManager(db)
    await memories.store_memory(user_id, "exame", "glicemia alterada", sensitive=True, ttl=60)
    clock.advance(seconds=120)
    await memories.store_memory(user_id, "exame", "glicemia normal", sensitive=True)

    trail = (await AuditManager(db).query(user_id=user_id, table="memory_entries", limit=100)).items
    replaced = trail[0]
    assert (replaced.action, replaced.new_values["value"]) == ("create", "glicemia normal")
    assert replaced.old_values["value"] == "glicemia alterada", (
        "the expired memory's token is bound to its own id"
    )
    assert occurrences(await every_row_as_text(db), ("glicemia",)) == {}


async def test_an_erased_user_kept_as_a_tombstone_cannot_be_written_to(db: Database, handles: Any) -> None:
    user_id, _ = await a_pilot_with_personal_data(db)
    holding = handles(STRATUS_ERASURE_LEGAL_HOLD=frozenset({ErasableKind.consents}))
    await PrivacyManager(holding).erase_user(user_id, "pedido do titular")

    users = UserManager(holding)
    with pytest.raises(NotFoundError, match="erased"):
        await users.update_user(user_id, name="Outro Nome")
    with pytest.raises(NotFoundError, match="erased"):
        await users.add_credential(user_id, "PCM", number="123")
    tombstone = await users.get_user(user_id)
    assert tombstone is not None
    assert (tombstone.name, tombstone.birth_date, tombstone.canac) == ("[erased]", None, None)
    assert occurrences(await every_row_as_text(db), (*PLAINTEXTS, "Outro Nome")) == {}
