"""UserManager on both backends: what is returned, what is stored, and what bad input leaves behind (nothing)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from stratus_db import (
    AuditManager,
    ConflictError,
    Database,
    NotFoundError,
    UserManager,
    UserRead,
    UserRole,
    ValidationError,
)
from stratus_db.kit.schemas import encode_cursor
from stratus_db.models import Base
from tests.fixtures.factories import count_rows, create_user
from tests.fixtures.sealed import opened_row

HOSTILE_NAME = "Robert'); DROP TABLE users;-- \"Bobby\" O'Brien 👩\u200d✈️ ✈️🛫"
ACCENTED_NAME = ("Conceição Ávila Ñandú Çedilha Müller " * 6)[:199] + "ã"
HOSTILE_PREFERENCES: dict[str, Any] = {
    "nota": 'it\'s "quoted" -- ; DROP TABLE users; /* */',
    "emoji": "✈️🛫👩\u200d✈️",
    "aspas'chave\"": "valor com acentuação: ção, ñ, ü",
    "aninhado": {"lista": [1, 2.5, None, True, False, "ção", {"fundo": "\\x00 is only text here"}]},
    "vazio": {},
}


async def written_rows(db: Database) -> tuple[int, int]:
    """How many rows `users` and `audit_log` hold: a failed call must leave both unchanged."""
    return await count_rows(db, "users"), await count_rows(db, "audit_log")


async def stored_email(db: Database, user_id: uuid.UUID) -> str:
    """The e-mail the database holds (encrypted: decrypted here), read without the manager."""
    table = Base.metadata.tables["users"]
    async with db.transaction(read_only=True) as conn:
        row = (await conn.execute(select(table).where(table.c.user_id == user_id))).mappings().one()
    value = (await opened_row(db, "users", dict(row), user_id, user_id))["email"]
    assert isinstance(value, str)
    return value


class TestCreateUser:
    async def test_returns_every_field_of_the_stored_user(self, users: UserManager) -> None:
        before = datetime.now(UTC)

        user = await users.create_user(
            name="João Silva",
            email="joao@aviacao.com",
            role="pilot",
            licenses=["PP", "PC", "IFR"],
            experience_level="commercial",
            preferences={"units": "metric", "aircraft": ["C172", "PA-28"]},
        )

        assert isinstance(user.user_id, uuid.UUID)
        assert user.name == "João Silva"
        assert user.email == "joao@aviacao.com"
        assert user.role is UserRole.pilot
        assert user.licenses == ["PPR", "PCM", "IFRA"]  # canonical: docs/users.md
        assert user.experience_level == "commercial"
        assert user.preferences == {"units": "metric", "aircraft": ["C172", "PA-28"]}
        assert user.created_at.tzinfo is not None
        assert before - timedelta(seconds=1) <= user.created_at <= datetime.now(UTC) + timedelta(seconds=1)
        assert user.updated_at == user.created_at
        assert user.last_active == user.created_at
        assert await users.get_user(user.user_id) == user

    async def test_defaults_to_no_licences_the_student_level_and_empty_preferences(
        self, users: UserManager
    ) -> None:
        user = await users.create_user(name="Ana Lima", email="ana@aeroclube.com.br", role=UserRole.student)

        assert user.licenses == []
        assert user.experience_level == "student"
        assert user.preferences == {}
        assert await users.get_user(user.user_id) == user

    async def test_licences_are_canonical_and_de_duplicated_in_order(self, users: UserManager) -> None:
        user = await users.create_user(
            name="Carlos Mendes",
            email="carlos@aviacao.com",
            role="instructor",
            licenses=["pp", "PC", "pp", " ifr ", "Inva", "PC", "cma-1"],
        )

        assert user.licenses == ["PPR", "PCM", "IFRA", "INVA", "CMA1"]
        stored = await users.get_user(user.user_id)
        assert stored is not None
        assert stored.licenses == ["PPR", "PCM", "IFRA", "INVA", "CMA1"]

    async def test_email_is_stored_lower_cased(self, db: Database, users: UserManager) -> None:
        user = await users.create_user(name="Joana Prado", email="Joana.Prado@AVIACAO.Com.BR", role="pilot")

        assert user.email == "joana.prado@aviacao.com.br"
        assert await stored_email(db, user.user_id) == "joana.prado@aviacao.com.br"

    async def test_writes_one_user_row_and_one_audit_row(self, db: Database, users: UserManager) -> None:
        await create_user(users)

        assert await written_rows(db) == (1, 1)

    async def test_hostile_but_valid_text_round_trips_exactly(self, users: UserManager) -> None:
        user = await users.create_user(
            name=HOSTILE_NAME,
            email="o'brien+teste@aviação.example.com",
            role="other",
            licenses=["tipo: emb-120"],
            preferences=HOSTILE_PREFERENCES,
        )

        stored = await users.get_user(user.user_id)
        assert stored is not None
        assert stored.name == HOSTILE_NAME
        assert stored.experience_level is None  # "PLA/IFR" is no catalogue code: no level is derived
        assert stored.preferences == HOSTILE_PREFERENCES
        assert stored.licenses == ["TIPO:EMB-120"]
        assert stored == user

    async def test_a_200_character_accented_name_round_trips_exactly(self, users: UserManager) -> None:
        assert len(ACCENTED_NAME) == 200
        assert ACCENTED_NAME.strip() == ACCENTED_NAME

        user = await users.create_user(name=ACCENTED_NAME, email="conceicao@aviacao.com", role="mechanic")

        stored = await users.get_user(user.user_id)
        assert stored is not None
        assert stored.name == ACCENTED_NAME

    @pytest.mark.parametrize(
        "email", ["not-an-email", "joao@", "@aviacao.com", "joao silva@aviacao.com", "", "a\x00b@aviacao.com"]
    )
    async def test_an_invalid_email_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, email: str
    ) -> None:
        with pytest.raises(ValidationError, match="email"):
            await users.create_user(name="João Silva", email=email, role="pilot")

        assert await written_rows(db) == (0, 0)

    async def test_an_email_differing_only_in_case_is_a_conflict_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        await create_user(users, email="joao@aviacao.com")

        with pytest.raises(ConflictError, match=r"joao@aviacao\.com"):
            await users.create_user(name="Outro João", email="JOAO@Aviacao.COM", role="pilot")

        assert await written_rows(db) == (1, 1)

    @pytest.mark.parametrize("role", ["pilto", "PILOT", "captain", "", "pilot; DROP TABLE users"])
    async def test_an_unknown_role_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, role: str
    ) -> None:
        with pytest.raises(ValidationError, match="role") as caught:
            await users.create_user(name="João Silva", email="joao@aviacao.com", role=role)

        assert "pilot" in str(caught.value)  # the message lists what is accepted
        assert await written_rows(db) == (0, 0)

    @pytest.mark.parametrize("name", ["", " ", "   \t\n  "])
    async def test_an_empty_or_whitespace_name_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, name: str
    ) -> None:
        with pytest.raises(ValidationError, match="name"):
            await users.create_user(name=name, email="joao@aviacao.com", role="pilot")

        assert await written_rows(db) == (0, 0)

    async def test_a_name_longer_than_200_characters_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        with pytest.raises(ValidationError, match=r"name.*200"):
            await users.create_user(name=ACCENTED_NAME + "x", email="joao@aviacao.com", role="pilot")

        assert await written_rows(db) == (0, 0)

    async def test_a_name_with_a_nul_byte_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        with pytest.raises(ValidationError, match=r"name.*NUL"):
            await users.create_user(name="João\x00Silva", email="joao@aviacao.com", role="pilot")

        assert await written_rows(db) == (0, 0)

    @pytest.mark.parametrize(
        ("preferences", "problem"),
        [
            ({"score": float("nan")}, "NaN"),
            ({"limits": {"max": float("inf")}}, "infinite"),
            ({"a": {"b": ["ok", "bad\x00value"]}}, "NUL"),
            ({"key\x00": "value"}, "NUL"),
        ],
    )
    async def test_preferences_that_are_not_storable_json_are_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, preferences: dict[str, Any], problem: str
    ) -> None:
        with pytest.raises(ValidationError, match="preferences") as caught:
            await users.create_user(
                name="João Silva", email="joao@aviacao.com", role="pilot", preferences=preferences
            )

        assert problem in str(caught.value)
        assert await written_rows(db) == (0, 0)

    @pytest.mark.parametrize(
        "licenses",
        [["PP", ""], ["PLA/IFR"], ["PP; DROP"], ["X" * 33], ["IFR"], ["PP", "PCH", "IFR"], ["CMA"]],
    )
    async def test_a_malformed_licence_code_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, licenses: list[str]
    ) -> None:
        with pytest.raises(ValidationError, match="licenses"):
            await users.create_user(
                name="João Silva", email="joao@aviacao.com", role="pilot", licenses=licenses
            )

        assert await written_rows(db) == (0, 0)


class TestGetUser:
    async def test_returns_the_stored_user(self, users: UserManager) -> None:
        user = await create_user(users)

        assert await users.get_user(user.user_id) == user
        assert await users.get_user(str(user.user_id)) == user

    async def test_returns_none_for_an_unknown_id(self, users: UserManager) -> None:
        await create_user(users)

        assert await users.get_user(uuid.uuid4()) is None

    @pytest.mark.parametrize("user_id", ["1; DROP TABLE users", "", "not-a-uuid", "1234", "\x00"])
    async def test_a_non_uuid_id_is_a_validation_error(
        self, db: Database, users: UserManager, user_id: str
    ) -> None:
        await create_user(users)

        with pytest.raises(ValidationError, match="user_id must be a UUID"):
            await users.get_user(user_id)


class TestGetUserByEmail:
    @pytest.mark.parametrize("lookup", ["joao@aviacao.com", "JOAO@AVIACAO.COM", "Joao@Aviacao.com"])
    async def test_finds_the_user_whatever_the_case(self, users: UserManager, lookup: str) -> None:
        user = await users.create_user(name="João Silva", email="Joao@Aviacao.com", role="pilot")

        assert await users.get_user_by_email(lookup) == user

    async def test_returns_none_for_an_unknown_email(self, users: UserManager) -> None:
        await create_user(users, email="joao@aviacao.com")

        assert await users.get_user_by_email("maria@aviacao.com") is None

    async def test_an_invalid_email_is_a_validation_error(self, users: UserManager) -> None:
        with pytest.raises(ValidationError, match="email"):
            await users.get_user_by_email("' OR '1'='1")


class TestUpdateUser:
    async def test_applies_the_changes_and_keeps_the_other_fields(self, users: UserManager) -> None:
        user = await users.create_user(
            name="João Silva",
            email="joao@aviacao.com",
            role="student",
            licenses=["PP"],
            experience_level="student",
            preferences={"units": "metric"},
        )

        updated = await users.update_user(
            user.user_id,
            name="João P. Silva",
            role="pilot",
            licenses=["PP", "PC", "PP"],
            experience_level="private",
            preferences={"units": "imperial", "theme": "dark"},
        )

        assert updated.user_id == user.user_id
        assert updated.name == "João P. Silva"
        assert updated.email == "joao@aviacao.com"
        assert updated.role is UserRole.pilot
        assert updated.licenses == ["PPR", "PCM"]
        assert updated.experience_level == "private"
        assert updated.preferences == {"units": "imperial", "theme": "dark"}
        assert updated.created_at == user.created_at
        assert await users.get_user(user.user_id) == updated

    async def test_new_licences_are_canonical_and_de_duplicated(self, users: UserManager) -> None:
        user = await create_user(users)

        updated = await users.update_user(user.user_id, licenses=["pp", "pc", "PP", "ifr"])

        assert updated.licenses == ["PPR", "PCM", "IFRA"]
        assert await users.get_user(user.user_id) == updated

    async def test_moves_updated_at_forward(self, users: UserManager) -> None:
        user = await create_user(users)

        updated = await users.update_user(user.user_id, experience_level="airline")

        assert updated.updated_at > user.updated_at
        assert updated.last_active > user.last_active
        assert updated.created_at == user.created_at

    async def test_a_new_email_is_stored_lower_cased_and_found_by_its_new_address(
        self, db: Database, users: UserManager
    ) -> None:
        user = await create_user(users, email="joao@aviacao.com")

        updated = await users.update_user(str(user.user_id), email="Joao.Silva@NovoAeroclube.com")

        assert updated.email == "joao.silva@novoaeroclube.com"
        assert await stored_email(db, user.user_id) == "joao.silva@novoaeroclube.com"
        assert await users.get_user_by_email("joao@aviacao.com") is None
        assert await users.get_user_by_email("JOAO.SILVA@novoaeroclube.com") == updated

    async def test_own_email_in_another_case_is_not_a_conflict(
        self, db: Database, users: UserManager
    ) -> None:
        user = await create_user(users, email="joao@aviacao.com")

        updated = await users.update_user(user.user_id, email="JOAO@Aviacao.com", name="João Silva")

        assert updated.email == "joao@aviacao.com"
        assert updated.name == "João Silva"
        assert await count_rows(db, "users") == 1

    async def test_audit_row_holds_old_and_new_values_of_only_the_changed_fields(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await users.create_user(
            name="João Silva", email="joao@aviacao.com", role="pilot", licenses=["PP", "PC"]
        )

        # licences and role are given but unchanged: they are not changes and must not be audited as such
        await users.update_user(
            user.user_id, name="João P. Silva", licenses=["PP", "PC"], role="pilot", preferences={"a": 1}
        )

        page = await audit.query(record_id=user.user_id, action="update")
        assert len(page.items) == 1
        event = page.items[0]
        assert event.table_name == "users"
        assert event.user_id == user.user_id
        assert event.old_values == {"name": "João Silva", "preferences": {}}
        assert event.new_values == {"name": "João P. Silva", "preferences": {"a": 1}}
        assert await written_rows(db) == (1, 2)

    async def test_a_preference_of_another_json_type_is_a_change(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)
        await users.update_user(user.user_id, preferences={"notify": 1, "radius_nm": 50})

        updated = await users.update_user(user.user_id, preferences={"notify": True, "radius_nm": 50.0})

        stored = await users.get_user(user.user_id)
        assert stored is not None
        for entry in (updated, stored):
            assert json.dumps(entry.preferences) == json.dumps({"notify": True, "radius_nm": 50.0})
        event = (await audit.query(record_id=user.user_id, action="update")).items[0]
        assert json.dumps(event.old_values) == json.dumps({"preferences": {"notify": 1, "radius_nm": 50}})

    async def test_hostile_but_valid_text_round_trips_exactly(self, users: UserManager) -> None:
        user = await create_user(users)

        await users.update_user(user.user_id, name=HOSTILE_NAME, preferences=HOSTILE_PREFERENCES)

        stored = await users.get_user(user.user_id)
        assert stored is not None
        assert stored.name == HOSTILE_NAME
        assert stored.preferences == HOSTILE_PREFERENCES

    @pytest.mark.parametrize("field", ["nickname", "user_id_", "password"])
    async def test_an_unknown_field_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, field: str
    ) -> None:
        user = await create_user(users)

        changes: dict[str, Any] = {field: "x"}

        with pytest.raises(ValidationError, match=f"{field}: unknown argument") as caught:
            await users.update_user(user.user_id, **changes)

        assert "accepted arguments: name, email, role" in str(caught.value)
        assert await users.get_user(user.user_id) == user
        assert await written_rows(db) == (1, 1)

    async def test_no_field_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        user = await create_user(users)

        with pytest.raises(ValidationError, match="at least one field"):
            await users.update_user(user.user_id)

        assert await users.get_user(user.user_id) == user
        assert await written_rows(db) == (1, 1)

    @pytest.mark.parametrize("field", ["name", "role"])
    async def test_a_required_field_cannot_be_set_to_none(
        self, db: Database, users: UserManager, field: str
    ) -> None:
        user = await create_user(users)

        changes: dict[str, Any] = {field: None}

        with pytest.raises(ValidationError, match="cannot be removed"):
            await users.update_user(user.user_id, **changes)

        assert await users.get_user(user.user_id) == user
        assert await written_rows(db) == (1, 1)

    @pytest.mark.parametrize(
        ("changes", "problem"),
        [
            ({"name": "  "}, "name"),
            ({"name": "Jo\x00ão"}, "NUL"),
            ({"email": "not-an-email"}, "email"),
            ({"role": "captain"}, "role"),
            ({"preferences": {"x": [float("nan")]}}, "NaN"),
            ({"preferences": {"x": {"y": "a\x00b"}}}, "NUL"),
        ],
    )
    async def test_a_malformed_value_is_rejected_and_nothing_is_written(
        self, db: Database, users: UserManager, changes: dict[str, Any], problem: str
    ) -> None:
        user = await create_user(users)

        with pytest.raises(ValidationError, match=problem):
            await users.update_user(user.user_id, **changes)

        assert await users.get_user(user.user_id) == user
        assert await written_rows(db) == (1, 1)

    async def test_a_missing_user_is_not_found_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        await create_user(users)
        missing = uuid.uuid4()

        with pytest.raises(NotFoundError, match=str(missing)):
            await users.update_user(missing, name="Ninguém")

        assert await written_rows(db) == (1, 1)

    async def test_a_non_uuid_id_is_a_validation_error_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        user = await create_user(users)

        with pytest.raises(ValidationError, match="user_id must be a UUID"):
            await users.update_user("1; DROP TABLE users", name="Hacker")

        assert await users.get_user(user.user_id) == user
        assert await written_rows(db) == (1, 1)

    async def test_another_users_email_is_a_conflict_and_nothing_is_written(
        self, db: Database, users: UserManager
    ) -> None:
        await create_user(users, email="joao@aviacao.com")
        maria = await create_user(users, email="maria@aviacao.com")

        with pytest.raises(ConflictError, match=r"joao@aviacao\.com"):
            await users.update_user(maria.user_id, email="JOAO@aviacao.com", name="Maria Silva")

        assert await users.get_user(maria.user_id) == maria
        assert await written_rows(db) == (2, 2)


async def all_pages(users: UserManager, *, limit: int, role: str | None = None) -> list[list[UserRead]]:
    """Follow `next_cursor` from the first page to the last."""
    pages: list[list[UserRead]] = []
    cursor: str | None = None
    while True:
        page = await users.list_users(role=role, limit=limit, cursor=cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


class TestListUsers:
    async def test_pages_through_every_user_in_creation_order(self, users: UserManager) -> None:
        created = [await create_user(users) for _ in range(7)]

        pages = await all_pages(users, limit=3)

        assert [len(page) for page in pages] == [3, 3, 1]
        assert [user for page in pages for user in page] == created

    async def test_an_exactly_full_last_page_has_no_next_cursor(self, users: UserManager) -> None:
        created = [await create_user(users) for _ in range(4)]

        first = await users.list_users(limit=2)
        assert first.next_cursor is not None
        second = await users.list_users(limit=2, cursor=first.next_cursor)

        assert second.next_cursor is None
        assert [*first.items, *second.items] == created

    async def test_an_empty_table_is_one_empty_page(self, users: UserManager) -> None:
        page = await users.list_users()

        assert page.items == []
        assert page.next_cursor is None

    async def test_filters_by_role_across_pages(self, users: UserManager) -> None:
        created = [await create_user(users, role=role) for role in ["pilot", "instructor"] * 4]
        instructors = [user for user in created if user.role is UserRole.instructor]

        pages = await all_pages(users, limit=3, role="instructor")

        assert [len(page) for page in pages] == [3, 1]
        assert [user for page in pages for user in page] == instructors
        assert (await users.list_users(role=UserRole.mechanic)).items == []

    async def test_an_unknown_role_filter_is_a_validation_error(self, users: UserManager) -> None:
        with pytest.raises(ValidationError, match="role must be one of pilot"):
            await users.list_users(role="captain")

    @pytest.mark.parametrize("limit", [0, -1, 501])
    async def test_a_limit_out_of_range_is_a_validation_error(self, users: UserManager, limit: int) -> None:
        with pytest.raises(ValidationError, match="limit"):
            await users.list_users(limit=limit)

    async def test_a_tampered_cursor_is_a_validation_error(self, users: UserManager) -> None:
        for _ in range(3):
            await create_user(users)
        cursor = (await users.list_users(limit=1)).next_cursor
        assert cursor is not None
        tampered = [
            cursor[:-3],
            cursor[::-1],
            "X" + cursor,
            "not a cursor",
            "",
            encode_cursor("1; DROP TABLE users"),
            encode_cursor(uuid.uuid4(), uuid.uuid4()),
        ]

        for bad in tampered:
            with pytest.raises(ValidationError, match="cursor"):
                await users.list_users(limit=1, cursor=bad)
