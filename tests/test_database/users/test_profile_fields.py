"""Birth date, CANAC, deactivation, medical expiries computed from the birth date, and list_users by credential code,
on both backends. Tables are read back without the manager."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from stratus_db import (
    AuditManager,
    ConflictError,
    Database,
    NotFoundError,
    Principal,
    UserManager,
    ValidationError,
)
from stratus_db.errors import PermissionDeniedError
from stratus_db.models import Base
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user
from tests.fixtures.sealed import opened_row

USERS = Base.metadata.tables["users"]
CREDENTIALS = Base.metadata.tables["user_credentials"]
NOON_IN_BRASILIA = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
"""The tests' "now": 1 July 2026 in Brasília time too."""


async def user_row(db: Database, user_id: uuid.UUID) -> dict[str, Any]:
    """The user's row as the table holds it, its encrypted columns decrypted (each checked to be a token)."""
    async with db.transaction(read_only=True) as conn:
        row = (await conn.execute(select(USERS).where(USERS.c.user_id == user_id))).mappings().one()
    return await opened_row(db, "users", dict(row), user_id, user_id)


async def credential_rows(db: Database, user_id: uuid.UUID) -> dict[str, tuple[Any, Any]]:
    """Each of the user's credentials as the table holds it: code → (expires_at, expiry_basis)."""
    statement = select(CREDENTIALS.c.code, CREDENTIALS.c.expires_at, CREDENTIALS.c.expiry_basis).where(
        CREDENTIALS.c.user_id == user_id
    )
    async with db.transaction(read_only=True) as conn:
        return {row.code: (row.expires_at, row.expiry_basis) for row in await conn.execute(statement)}


async def written(db: Database) -> tuple[int, int, int]:
    return (
        await count_rows(db, "users"),
        await count_rows(db, "user_credentials"),
        await count_rows(db, "audit_log"),
    )


@pytest.fixture
def now(clock: ManualClock) -> ManualClock:
    clock.now = NOON_IN_BRASILIA
    return clock


class TestBirthDateAndCanac:
    async def test_create_stores_them_and_audits_them(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await users.create_user(
            "Ana", "ana@aviacao.com", "pilot", birth_date=date(1980, 5, 17), canac=" 012345 "
        )

        assert (user.birth_date, user.canac, user.deactivated_at) == (date(1980, 5, 17), "012345", None)
        row = await user_row(db, user.user_id)
        assert (row["birth_date"], row["canac"], row["deactivated_at"]) == (date(1980, 5, 17), "012345", None)
        event = (await audit.query(record_id=user.user_id, action="create")).items[0]
        assert (event.new_values["birth_date"], event.new_values["canac"]) == ("1980-05-17", "012345")

    async def test_update_changes_and_clears_them_and_audits_only_those(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", canac="111111")

        updated = await users.update_user(user.user_id, birth_date=date(1990, 1, 2), canac=None)

        assert (updated.birth_date, updated.canac) == (date(1990, 1, 2), None)
        row = await user_row(db, user.user_id)
        assert (row["birth_date"], row["canac"]) == (date(1990, 1, 2), None)
        event = (await audit.query(record_id=user.user_id, action="update")).items[0]
        assert event.old_values == {"birth_date": None, "canac": "111111"}
        assert event.new_values == {"birth_date": "1990-01-02", "canac": None}

    async def test_users_without_a_canac_are_many_and_a_taken_canac_is_a_conflict(
        self, db: Database, users: UserManager
    ) -> None:
        first, second = await create_user(users), await create_user(users)  # no CANAC, both
        holder = await users.create_user("Ana", "ana@aviacao.com", "pilot", canac="123456")
        before = await written(db)

        with pytest.raises(ConflictError, match="canac '123456'") as caught:
            await users.create_user("Bia", "bia@aviacao.com", "pilot", canac="123456")
        assert "canac" in (caught.value.constraint or "")
        with pytest.raises(ConflictError, match="canac '123456'"):
            await users.update_user(first.user_id, canac="123456")

        assert await written(db) == before
        assert (await user_row(db, first.user_id))["canac"] is None
        assert (await user_row(db, holder.user_id))["canac"] == "123456"
        assert (await users.update_user(second.user_id, canac="654321")).canac == "654321"

    async def test_a_taken_email_is_still_named_as_the_email(self, db: Database, users: UserManager) -> None:
        await users.create_user("Ana", "ana@aviacao.com", "pilot", canac="123456")
        with pytest.raises(ConflictError, match="e-mail"):
            await users.create_user("Ana", "ANA@aviacao.com", "pilot", canac="654321")

    @pytest.mark.parametrize(
        ("arguments", "problem"),
        [
            ({"birth_date": datetime(1980, 1, 1, tzinfo=UTC)}, r"birth_date: .*datetime\.date"),
            ({"birth_date": "1980-01-01"}, r"birth_date: .*datetime\.date"),
            ({"birth_date": date(1899, 12, 31)}, "birth_date: must be on or after 1900-01-01"),
            ({"birth_date": date(2026, 7, 2)}, "birth_date 2026-07-02 is in the future"),
            ({"canac": "12345"}, "canac: .*exactly 6 digits"),
            ({"canac": "12345a"}, "canac: .*exactly 6 digits"),
            ({"canac": 123456}, "canac: must be text"),
            ({"canac": "１２３４５６"}, "canac: .*exactly 6 digits"),  # full-width digits are not ASCII
        ],
    )
    async def test_bad_input_names_the_field_and_writes_nothing(
        self, db: Database, users: UserManager, now: ManualClock, arguments: dict[str, Any], problem: str
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot")
        before = await written(db)

        with pytest.raises(ValidationError, match=problem):
            await users.create_user("Bia", "bia@aviacao.com", "pilot", **arguments)
        with pytest.raises(ValidationError, match=problem):
            await users.update_user(user.user_id, **arguments)

        assert await written(db) == before
        row = await user_row(db, user.user_id)
        assert (row["birth_date"], row["canac"]) == (None, None)

    async def test_today_is_a_valid_birth_date(self, users: UserManager, now: ManualClock) -> None:
        user = await users.create_user("Bebê", "bebe@aviacao.com", "other", birth_date=date(2026, 7, 1))
        assert user.birth_date == date(2026, 7, 1)


class TestComputedMedicalExpiry:
    async def test_a_medical_certificate_without_an_expiry_gets_one_from_the_birth_date(
        self, db: Database, users: UserManager, audit: AuditManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1981, 3, 15))

        # Aged 45 on the exam: a 1st class certificate is valid 12 months; a 2nd class one, 24.
        first = await users.add_credential(user.user_id, "CMA1", issued_at=date(2026, 3, 31))
        second = await users.add_credential(user.user_id, "CMA-2", issued_at=date(2026, 3, 31))

        assert (first.expires_at, first.expiry_basis) == (date(2027, 3, 31), "computed")
        assert (second.expires_at, second.expiry_basis) == (date(2028, 3, 31), "computed")
        assert await credential_rows(db, user.user_id) == {
            "CMA1": (date(2027, 3, 31), "computed"),
            "CMA2": (date(2028, 3, 31), "computed"),
        }
        event = (await audit.query(record_id=first.credential_id)).items[0]
        assert (event.new_values["expires_at"], event.new_values["expiry_basis"]) == (
            "2027-03-31",
            "computed",
        )

    async def test_status_says_it_was_computed_and_expiring_credentials_finds_it(
        self, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1981, 3, 15))
        await users.add_credential(user.user_id, "CMA1", issued_at=date(2025, 7, 20))  # expires 2026-07-20

        (status,) = await users.credential_status(user.user_id)
        assert (status.status, status.days_left) == ("expiring", 19)
        assert (
            "computed from the birth date under RBAC 67.15(a): CMA class 1, holder aged 44" in status.reason
        )
        assert "12 months" in status.reason
        assert "single-pilot commercial passenger operations, which are not recorded" in status.reason
        found = await users.expiring_credentials(30)
        assert [(c.code, c.expires_at, c.expiry_basis) for c in found.items] == [
            ("CMA1", date(2026, 7, 20), "computed")
        ]

    async def test_a_recorded_expiry_is_never_overwritten(
        self, db: Database, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1981, 3, 15))
        held = await users.add_credential(
            user.user_id, "CMA2", issued_at=date(2026, 3, 31), expires_at=date(2026, 12, 31)
        )
        assert held.expiry_basis == "recorded"

        await users.update_user(user.user_id, birth_date=date(1996, 3, 15))
        await users.update_credential(user.user_id, held.credential_id, issued_at=date(2026, 4, 1))

        assert await credential_rows(db, user.user_id) == {"CMA2": (date(2026, 12, 31), "recorded")}
        (status,) = await users.credential_status(user.user_id)
        assert "computed" not in status.reason

    async def test_a_birth_date_set_changed_and_removed_follows_through(
        self, db: Database, users: UserManager, audit: AuditManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot")
        held = await users.add_credential(user.user_id, "CMA2", issued_at=date(2026, 3, 31))
        await users.add_credential(user.user_id, "PCM", issued_at=date(2020, 1, 1))
        assert await credential_rows(db, user.user_id) == {"CMA2": (None, None), "PCM": (None, None)}
        (_, medical) = await users.credential_status(user.user_id)
        assert "no birth date is stored" in medical.reason

        await users.update_user(user.user_id, birth_date=date(1990, 1, 1))  # 36 on the exam: 60 months
        assert (await credential_rows(db, user.user_id))["CMA2"] == (date(2031, 3, 31), "computed")

        await users.update_user(user.user_id, birth_date=date(1980, 1, 1))  # 46: 24 months
        assert (await credential_rows(db, user.user_id))["CMA2"] == (date(2028, 3, 31), "computed")

        await users.update_user(user.user_id, birth_date=None)
        assert await credential_rows(db, user.user_id) == {"CMA2": (None, None), "PCM": (None, None)}

        trail = [
            (e.old_values, e.new_values)
            for e in reversed((await audit.query(record_id=held.credential_id, action="update")).items)
        ]
        assert trail == [
            (
                {"expires_at": None, "expiry_basis": None},
                {"expires_at": "2031-03-31", "expiry_basis": "computed"},
            ),
            ({"expires_at": "2031-03-31"}, {"expires_at": "2028-03-31"}),
            (
                {"expires_at": "2028-03-31", "expiry_basis": "computed"},
                {"expires_at": None, "expiry_basis": None},
            ),
        ]

    async def test_a_new_issue_date_recomputes_and_a_given_expiry_takes_over(
        self, db: Database, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1960, 8, 1))
        held = await users.add_credential(
            user.user_id, "CMA1", issued_at=date(2020, 7, 1)
        )  # aged 59: 12 months
        assert held.expires_at == date(2021, 7, 1)

        moved = await users.update_credential(user.user_id, held.credential_id, issued_at=date(2020, 8, 1))
        assert (moved.expires_at, moved.expiry_basis) == (date(2021, 2, 1), "computed")  # aged 60: 6 months

        given = await users.update_credential(user.user_id, held.credential_id, expires_at=date(2020, 12, 1))
        assert (given.expires_at, given.expiry_basis) == (date(2020, 12, 1), "recorded")

        # Removing the given expiry lets the computed one take its place again.
        cleared = await users.update_credential(user.user_id, held.credential_id, expires_at=None)
        assert (cleared.expires_at, cleared.expiry_basis) == (date(2021, 2, 1), "computed")
        assert await credential_rows(db, user.user_id) == {"CMA1": (date(2021, 2, 1), "computed")}

    async def test_a_new_issue_date_after_the_computed_expiry_is_not_refused(
        self, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1990, 1, 1))
        held = await users.add_credential(user.user_id, "CMA1", issued_at=date(2024, 1, 10))  # to 2025-01-10

        renewed = await users.update_credential(user.user_id, held.credential_id, issued_at=date(2026, 1, 10))

        assert renewed.expires_at == date(2027, 1, 10)

    async def test_classes_without_a_rule_and_other_kinds_get_no_computed_expiry(
        self, db: Database, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1990, 1, 1))
        await users.add_credential(user.user_id, "CMA4", issued_at=date(2026, 1, 1))
        await users.add_credential(user.user_id, "PCM", issued_at=date(2026, 1, 1))
        await users.add_credential(user.user_id, "CMA1")  # no issue date

        assert await credential_rows(db, user.user_id) == {
            "CMA4": (None, None),
            "PCM": (None, None),
            "CMA1": (None, None),
        }
        reasons = {s.credential.code: s.reason for s in await users.credential_status(user.user_id)}
        assert "no validity rule is catalogued for CMA class 4" in reasons["CMA4"]
        assert "no issued_at is recorded" in reasons["CMA1"]
        assert reasons["PCM"] == "no expiry date recorded"

    async def test_an_issue_before_the_birth_date_is_refused_and_writes_nothing(
        self, db: Database, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", birth_date=date(1990, 1, 1))
        held = await users.add_credential(user.user_id, "CMA1", issued_at=date(2026, 1, 1))
        before = await written(db)

        with pytest.raises(ValidationError, match="issued_at: credential CMA2 was issued on 1989"):
            await users.add_credential(user.user_id, "CMA2", issued_at=date(1989, 12, 31))
        with pytest.raises(ValidationError, match="issued_at: credential CMA1 was issued on 1989"):
            await users.update_credential(user.user_id, held.credential_id, issued_at=date(1989, 12, 31))
        with pytest.raises(ValidationError, match="birth_date: credential CMA1 was issued on 2026-01-01"):
            await users.update_user(user.user_id, birth_date=date(2026, 1, 2))

        assert await written(db) == before
        assert (await user_row(db, user.user_id))["birth_date"] == date(1990, 1, 1)
        assert await credential_rows(db, user.user_id) == {"CMA1": (date(2027, 1, 1), "computed")}

    async def test_new_licences_and_a_birth_date_in_one_call(
        self, db: Database, users: UserManager, now: ManualClock
    ) -> None:
        user = await users.create_user("Ana", "ana@aviacao.com", "pilot", licenses=["PP"])
        await users.add_credential(user.user_id, "CMA2", issued_at=date(2026, 1, 1))
        await users.add_credential(user.user_id, "CMA1", issued_at=date(2026, 1, 1))

        await users.update_user(user.user_id, licenses=["PP", "CMA1", "PC"], birth_date=date(1990, 1, 1))

        assert await credential_rows(db, user.user_id) == {
            "PPR": (None, None),
            "CMA1": (date(2027, 1, 1), "computed"),
            "PCM": (None, None),
        }


class TestDeactivation:
    async def test_deactivate_and_reactivate_are_stored_and_audited(
        self, db: Database, users: UserManager, audit: AuditManager, now: ManualClock
    ) -> None:
        user = await create_user(users)
        last_active = (await user_row(db, user.user_id))["last_active"]
        now.advance(minutes=5)

        closed = await users.deactivate_user(user.user_id, "pediu o encerramento da conta")

        assert closed.deactivated_at == now.now
        row = await user_row(db, user.user_id)
        assert (row["deactivated_at"], row["updated_at"], row["last_active"]) == (
            now.now,
            now.now,
            last_active,
        )
        event = (await audit.query(record_id=user.user_id, action="update")).items[0]
        assert event.old_values == {"deactivated_at": None}
        assert event.new_values == {
            "deactivated_at": closed.model_dump(mode="json")["deactivated_at"],
            "reason": "pediu o encerramento da conta",
        }

        now.advance(minutes=5)
        reopened = await users.reactivate_user(user.user_id)

        assert reopened.deactivated_at is None
        assert (await user_row(db, user.user_id))["deactivated_at"] is None
        latest = (await audit.query(record_id=user.user_id, action="update")).items[0]
        assert latest.old_values == {"deactivated_at": event.new_values["deactivated_at"]}
        assert latest.new_values == {"deactivated_at": None}

    async def test_twice_is_a_no_op_that_writes_nothing(
        self, db: Database, users: UserManager, now: ManualClock
    ) -> None:
        user = await create_user(users)
        assert (await users.reactivate_user(user.user_id)).deactivated_at is None  # active: nothing to do
        first = await users.deactivate_user(user.user_id, "primeira")
        before = await written(db)
        now.advance(hours=1)

        again = await users.deactivate_user(user.user_id, "segunda")

        assert again == first
        assert await written(db) == before
        assert (await user_row(db, user.user_id))["deactivated_at"] == first.deactivated_at

    async def test_list_users_and_active_users_leave_deactivated_users_out(
        self, users: UserManager, now: ManualClock
    ) -> None:
        kept, closed = await create_user(users), await create_user(users)
        await users.deactivate_user(closed.user_id, "saiu da escola")
        since = now.now - timedelta(hours=1)

        assert [u.user_id for u in (await users.list_users()).items] == [kept.user_id]
        assert [u.user_id for u in (await users.active_users(since)).items] == [kept.user_id]
        everyone = (await users.list_users(include_deactivated=True)).items
        assert [u.user_id for u in everyone] == [kept.user_id, closed.user_id]
        assert everyone[1].deactivated_at == now.now
        assert len((await users.active_users(since, include_deactivated=True)).items) == 2
        assert (await users.get_user(closed.user_id)) is not None  # still there, shown as deactivated

    @pytest.mark.parametrize(
        ("reason", "problem"), [("", "reason"), ("   ", "reason"), ("x" * 501, "reason"), (None, "reason")]
    )
    async def test_a_bad_reason_is_refused_and_writes_nothing(
        self, db: Database, users: UserManager, reason: Any, problem: str
    ) -> None:
        user = await create_user(users)
        before = await written(db)

        with pytest.raises(ValidationError, match=problem):
            await users.deactivate_user(user.user_id, reason)

        assert await written(db) == before
        assert (await user_row(db, user.user_id))["deactivated_at"] is None

    async def test_unknown_users_and_bad_ids(self, db: Database, users: UserManager) -> None:
        with pytest.raises(NotFoundError):
            await users.deactivate_user(uuid.uuid4(), "motivo")
        with pytest.raises(NotFoundError):
            await users.reactivate_user(uuid.uuid4())
        with pytest.raises(ValidationError, match="user_id"):
            await users.deactivate_user("nope", "motivo")
        with pytest.raises(ValidationError, match="include_deactivated"):
            await users.list_users(include_deactivated="yes")  # type: ignore[arg-type]
        assert await count_rows(db, "audit_log") == 0

    async def test_a_user_may_close_their_account_but_not_reopen_it(
        self, db: Database, users: UserManager
    ) -> None:
        user, other = await create_user(users), await create_user(users)
        async with db.context(principal=Principal.for_user(user.user_id)):
            with pytest.raises(PermissionDeniedError, match="another user"):
                await users.deactivate_user(other.user_id, "não é minha")
            closed = await users.deactivate_user(user.user_id, "vou parar de voar")
            with pytest.raises(PermissionDeniedError, match=r"user\.reactivate"):
                await users.reactivate_user(user.user_id)
        assert closed.deactivated_at is not None
        assert (await user_row(db, other.user_id))["deactivated_at"] is None
        assert (await user_row(db, user.user_id))["deactivated_at"] == closed.deactivated_at


class TestListUsersByCredential:
    async def test_holders_of_a_code_in_pages_whatever_its_spelling(self, users: UserManager) -> None:
        holders = []
        for index in range(5):
            user = await create_user(users)  # each holds PPR
            if index % 2 == 0:
                await users.add_credential(user.user_id, "TIPO:A320")
                holders.append(user.user_id)
        closed = await create_user(users)
        await users.add_credential(closed.user_id, "TIPO:A320")
        await users.deactivate_user(closed.user_id, "aposentado")

        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = await users.list_users(credential_code="tipo a320", limit=2, cursor=cursor)
            seen += [user.user_id for user in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

        assert seen == holders
        assert len((await users.list_users(credential_code="pp")).items) == 5
        assert len((await users.list_users(credential_code="PPR", include_deactivated=True)).items) == 6
        assert (await users.list_users(credential_code="PLA")).items == []
        both = await users.list_users(credential_code="TIPO:A320", experience_level="private", role="pilot")
        assert [user.user_id for user in both.items] == holders

    @pytest.mark.parametrize(
        ("code", "problem"),
        [
            ("XYZ", "credential_code 'XYZ' is not an ANAC credential code; accepted: PPR, PPH"),
            ("IFR", "credential_code 'IFR' is ambiguous: it may mean IFRA or IFRH"),
            (7, "credential_code must be text"),
        ],
    )
    async def test_an_unknown_code_lists_the_valid_ones(
        self, users: UserManager, code: Any, problem: str
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            await users.list_users(credential_code=code)
        assert problem in str(caught.value)
