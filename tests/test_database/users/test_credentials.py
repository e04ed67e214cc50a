"""Structured credentials on both backends: what is stored, audited, refused, and each credential's status."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from stratus_db import AuditManager, ConflictError, Database, NotFoundError, UserManager, ValidationError
from stratus_db.models import Base
from tests.fixtures.factories import count_rows, create_user
from tests.fixtures.sealed import opened_row


async def stored_credentials(db: Database, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The user's credential rows as the table holds them, read without the manager, the encrypted columns
    decrypted (each checked to be a token)."""
    table = Base.metadata.tables["user_credentials"]
    statement = select(table).where(table.c.user_id == user_id).order_by(table.c.credential_id)
    async with db.transaction(read_only=True) as conn:
        rows = [dict(row) for row in (await conn.execute(statement)).mappings()]
    return [await opened_row(db, "user_credentials", row, row["credential_id"], user_id) for row in rows]


async def written(db: Database) -> tuple[int, int]:
    return await count_rows(db, "user_credentials"), await count_rows(db, "audit_log")


class TestLicensesBecomeCredentials:
    async def test_the_specs_call_stores_one_credential_per_canonical_code(
        self, db: Database, users: UserManager
    ) -> None:
        user = await users.create_user(
            "João Silva", "joao@aviacao.com", "pilot", licenses=["PP", "PC", "IFR"]
        )

        assert user.licenses == ["PPR", "PCM", "IFRA"]
        rows = await stored_credentials(db, user.user_id)
        assert [(row["code"], row["kind"]) for row in rows] == [
            ("PPR", "licence"),
            ("PCM", "licence"),
            ("IFRA", "rating"),
        ]
        assert all(row["number"] is None and row["expires_at"] is None for row in rows)

    async def test_new_licenses_keep_the_details_of_codes_still_held(
        self, db: Database, users: UserManager
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", licenses=["PP", "CMA-2"])
        medical = (await users.credential_status(user.user_id, on=date(2026, 1, 1)))[-1].credential
        await users.update_credential(user.user_id, medical.credential_id, expires_at=date(2027, 5, 1))

        updated = await users.update_user(user.user_id, licenses=["cma2", "PC"])

        assert updated.licenses == ["CMA2", "PCM"]
        rows = await stored_credentials(db, user.user_id)
        assert [(row["code"], row["expires_at"]) for row in rows] == [
            ("CMA2", date(2027, 5, 1)),
            ("PCM", None),
        ]

    @pytest.mark.parametrize(
        ("licenses", "problem"), [(["XYZ"], "not an ANAC credential code"), (["IFR"], "IFRA or IFRH")]
    )
    async def test_an_unknown_or_ambiguous_code_names_the_valid_ones_and_writes_nothing(
        self, db: Database, users: UserManager, licenses: list[str], problem: str
    ) -> None:
        with pytest.raises(ValidationError, match="licenses") as caught:
            await users.create_user("João", "joao@aviacao.com", "pilot", licenses=licenses)

        assert problem in str(caught.value)
        assert await count_rows(db, "users") == 0
        assert await written(db) == (0, 0)


class TestAddUpdateRemove:
    async def test_add_stores_every_detail_and_audits_it(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)  # licenses=["PP"]

        added = await users.add_credential(
            user.user_id,
            "cma-1",
            number="123456",
            issued_at=date(2026, 3, 1),
            expires_at=date(2027, 3, 1),
            restrictions="Deve usar lentes corretivas",
        )

        assert (added.code, added.kind, added.number) == ("CMA1", "medical", "123456")
        assert (added.issued_at, added.expires_at) == (date(2026, 3, 1), date(2027, 3, 1))
        rows = await stored_credentials(db, user.user_id)
        assert [row["code"] for row in rows] == ["PPR", "CMA1"]
        assert rows[1]["restrictions"] == "Deve usar lentes corretivas"
        assert (await users.get_user(user.user_id)).licenses == ["PPR", "CMA1"]  # type: ignore[union-attr]
        event = (await audit.query(record_id=added.credential_id)).items[0]
        assert (event.action, event.table_name, event.user_id) == ("create", "user_credentials", user.user_id)
        assert event.new_values["expires_at"] == "2027-03-01"

    @pytest.mark.parametrize(
        ("arguments", "problem"),
        [
            ({"code": "XYZ"}, "not an ANAC credential code; accepted: PPR"),
            ({"code": "CMA"}, "ambiguous"),
            (
                {"code": "PCM", "issued_at": date(2026, 5, 1), "expires_at": date(2026, 4, 30)},
                "before issued_at",
            ),
            ({"code": "PCM", "expires_at": datetime(2027, 1, 1, tzinfo=UTC)}, "expires_at"),
            ({"code": "PCM", "issued_at": "2026-01-01"}, "issued_at"),
            ({"code": "PCM", "number": "x" * 51}, "number"),
            ({"code": "PCM", "restrictions": "  "}, "restrictions"),
        ],
    )
    async def test_bad_input_names_the_argument_and_writes_nothing(
        self, db: Database, users: UserManager, arguments: dict[str, Any], problem: str
    ) -> None:
        user = await create_user(users)
        before = await written(db)

        with pytest.raises(ValidationError, match=problem):
            await users.add_credential(user.user_id, **arguments)

        assert await written(db) == before

    async def test_a_code_already_held_is_a_conflict(self, db: Database, users: UserManager) -> None:
        user = await create_user(users)
        before = await written(db)

        with pytest.raises(ConflictError, match="PPR"):
            await users.add_credential(user.user_id, "pp")

        assert await written(db) == before

    async def test_an_unknown_user_is_not_found(self, db: Database, users: UserManager) -> None:
        with pytest.raises(NotFoundError):
            await users.add_credential(uuid.uuid4(), "PPR")
        assert await written(db) == (0, 0)

    async def test_update_changes_clears_and_audits_only_what_changed(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)
        added = await users.add_credential(user.user_id, "PCM", number="99", restrictions="VFR")

        updated = await users.update_credential(
            user.user_id, added.credential_id, number="99", expires_at=date(2028, 1, 31), restrictions=None
        )

        assert (updated.number, updated.expires_at, updated.restrictions) == ("99", date(2028, 1, 31), None)
        row = (await stored_credentials(db, user.user_id))[1]
        assert (row["expires_at"], row["restrictions"]) == (date(2028, 1, 31), None)
        event = (await audit.query(record_id=added.credential_id, action="update")).items[0]
        assert event.old_values == {"expires_at": None, "expiry_basis": None, "restrictions": "VFR"}
        assert event.new_values == {
            "expires_at": "2028-01-31",
            "expiry_basis": "recorded",
            "restrictions": None,
        }

    async def test_update_checks_the_new_expiry_against_the_stored_issue(
        self, db: Database, users: UserManager
    ) -> None:
        user = await create_user(users)
        added = await users.add_credential(user.user_id, "PCM", issued_at=date(2026, 6, 1))
        before = await written(db)

        with pytest.raises(ValidationError, match="before issued_at"):
            await users.update_credential(user.user_id, added.credential_id, expires_at=date(2026, 5, 1))
        with pytest.raises(ValidationError, match="code: cannot be changed"):
            await users.update_credential(user.user_id, added.credential_id, code="PLA")
        with pytest.raises(ValidationError, match="at least one field"):
            await users.update_credential(user.user_id, added.credential_id)

        assert await written(db) == before

    async def test_remove_deletes_the_row_updates_licenses_and_audits(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", licenses=["PP", "PC"])
        first = (await stored_credentials(db, user.user_id))[0]

        removed = await users.remove_credential(user.user_id, first["credential_id"])

        assert removed.code == "PPR"
        assert [row["code"] for row in await stored_credentials(db, user.user_id)] == ["PCM"]
        assert (await users.get_user(user.user_id)).licenses == ["PCM"]  # type: ignore[union-attr]
        event = (await audit.query(record_id=removed.credential_id, action="delete")).items[0]
        assert event.old_values["code"] == "PPR"
        with pytest.raises(NotFoundError):
            await users.remove_credential(user.user_id, first["credential_id"])

    async def test_another_users_credential_is_not_found(self, db: Database, users: UserManager) -> None:
        owner, other = await create_user(users), await create_user(users)
        held = (await stored_credentials(db, owner.user_id))[0]

        with pytest.raises(NotFoundError):
            await users.remove_credential(other.user_id, held["credential_id"])
        with pytest.raises(NotFoundError):
            await users.update_credential(other.user_id, held["credential_id"], number="1")
        assert len(await stored_credentials(db, owner.user_id)) == 1


class TestStatus:
    async def test_each_state_with_its_reason(self, users: UserManager) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", licenses=[])
        await users.add_credential(user.user_id, "PCM")
        await users.add_credential(user.user_id, "MLTE", expires_at=date(2026, 6, 30))
        await users.add_credential(user.user_id, "IFRA", expires_at=date(2026, 7, 1))
        await users.add_credential(user.user_id, "CMA1", expires_at=date(2026, 7, 31))
        await users.add_credential(user.user_id, "CMA2")
        await users.add_credential(user.user_id, "TIPO:A320", expires_at=date(2026, 8, 1))

        statuses = await users.credential_status(user.user_id, on=date(2026, 7, 1))

        assert [(s.credential.code, s.status.value, s.days_left) for s in statuses] == [
            ("PCM", "no expiry", None),
            ("IFRA", "expiring", 0),  # valid through its expiry date
            ("MLTE", "expired", -1),
            ("TIPO:A320", "valid", 31),
            ("CMA1", "expiring", 30),
            ("CMA2", "no expiry", None),
        ]
        assert "birth date" in statuses[-1].reason
        assert "2026-06-30" in statuses[2].reason

    async def test_bad_arguments(self, users: UserManager) -> None:
        with pytest.raises(ValidationError, match=r"on must be a datetime\.date"):
            await users.credential_status(uuid.uuid4(), on=datetime(2026, 1, 1, tzinfo=UTC))
        with pytest.raises(NotFoundError):
            await users.credential_status(uuid.uuid4())


class TestExpiring:
    async def test_pages_across_users_by_expiry_then_id(self, users: UserManager) -> None:
        a, b = await create_user(users), await create_user(users)
        await users.add_credential(a.user_id, "CMA1", expires_at=date(2026, 7, 10))
        await users.add_credential(b.user_id, "CMA2", expires_at=date(2026, 7, 1))
        await users.add_credential(b.user_id, "MLTE", expires_at=date(2026, 7, 10))
        await users.add_credential(a.user_id, "IFRA", expires_at=date(2026, 6, 30))  # expired
        await users.add_credential(a.user_id, "PCM", expires_at=date(2026, 8, 1))  # outside the window

        seen: list[tuple[str, date | None]] = []
        cursor = None
        while True:
            page = await users.expiring_credentials(30, on=date(2026, 7, 1), limit=2, cursor=cursor)
            seen += [(c.code, c.expires_at) for c in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

        assert seen[0] == ("CMA2", date(2026, 7, 1))
        assert sorted(seen[1:]) == [("CMA1", date(2026, 7, 10)), ("MLTE", date(2026, 7, 10))]
        assert len(seen) == 3

    @pytest.mark.parametrize(
        ("arguments", "problem"),
        [({"within_days": -1}, "within_days"), ({"within_days": 5000}, "within_days"),
         ({"within_days": 1, "cursor": "x"}, "cursor"), ({"within_days": 1, "limit": 0}, "limit")],
    )  # fmt: skip
    async def test_bad_arguments(self, users: UserManager, arguments: dict[str, Any], problem: str) -> None:
        with pytest.raises(ValidationError, match=problem):
            await users.expiring_credentials(**arguments)
