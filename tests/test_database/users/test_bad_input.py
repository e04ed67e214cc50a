"""Issue 13, item 6: every kind of bad input to the users' API is a ValidationError that names the argument and what
is accepted, and writes nothing — checked against a snapshot of every users table and the audit trail, on both
backends."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from stratus_db import Database, UserManager, ValidationError
from stratus_db.kit.validation import MAX_JSON_BYTES
from stratus_db.models import Base

TABLES = ("users", "user_credentials", "audit_log")


async def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the users tables and the audit trail, as the database holds them."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with db.transaction(read_only=True) as conn:
        for name in TABLES:
            table = Base.metadata.tables[name]
            result = await conn.execute(select(table).order_by(*table.primary_key.columns))
            rows[name] = [tuple(row) for row in result]
    return rows


@dataclass
class Holder:
    users: UserManager
    user_id: uuid.UUID
    credential_id: uuid.UUID


Call = Callable[[Holder], Awaitable[Any]]

BAD_CALLS: dict[str, tuple[str, Call]] = {
    "malformed e-mail on create": (
        "email",
        lambda h: h.users.create_user("Bia", "bia@@aeroclube", "pilot"),
    ),
    "malformed e-mail on update": ("email", lambda h: h.users.update_user(h.user_id, email="sem-arroba")),
    "unknown role": (
        "role.*pilot",
        lambda h: h.users.create_user("Bia", "bia@aeroclube.com.br", "astronaut"),
    ),
    "unknown role on update": ("role.*pilot", lambda h: h.users.update_user(h.user_id, role="captain")),
    "unknown experience level": (
        "experience_level.*student",
        lambda h: h.users.create_user("Bia", "bia@aeroclube.com.br", "pilot", experience_level="ace"),
    ),
    "unknown credential code on create": (
        "licenses.*PPR",
        lambda h: h.users.create_user("Bia", "bia@aeroclube.com.br", "pilot", licenses=["PP", "XYZ123"]),
    ),
    "unknown credential code on add": ("code.*PPR", lambda h: h.users.add_credential(h.user_id, "CMA-9")),
    "expiry before issue on add": (
        "expires_at.*before issued_at",
        lambda h: h.users.add_credential(
            h.user_id, "PCM", issued_at=date(2026, 5, 1), expires_at=date(2025, 5, 1)
        ),
    ),
    "expiry before the stored issue on update": (
        "expires_at.*before issued_at",
        lambda h: h.users.update_credential(h.user_id, h.credential_id, expires_at=date(2020, 1, 1)),
    ),
    "a home aerodrome that is not an ICAO code": (
        "home_aerodrome",
        lambda h: h.users.update_preferences(h.user_id, {"home_aerodrome": "Congonhas"}),
    ),
    "a home aerodrome that is not an ICAO code on create": (
        "home_aerodrome",
        lambda h: h.users.create_user(
            "Bia", "bia@aeroclube.com.br", "pilot", preferences={"home_aerodrome": "SB-SP"}
        ),
    ),
    "preferences that are not an object": (
        "patch must be a JSON object",
        lambda h: h.users.update_preferences(h.user_id, ["units", "metric"]),  # type: ignore[arg-type]
    ),
    "preferences that are not an object on update_user": (
        "preferences",
        lambda h: h.users.update_user(h.user_id, preferences="metric"),
    ),
    "preferences over the size limit": (
        "bytes",
        lambda h: h.users.update_preferences(h.user_id, {"notes": "x" * (MAX_JSON_BYTES + 1)}),
    ),
    "an attempt to change user_id": (
        r"user_id: cannot be changed \(it is the user's identity\)",
        lambda h: h.users.update_user(h.user_id, user_id=uuid.uuid4()),
    ),
    "an attempt to change created_at": (
        "created_at: cannot be changed",
        lambda h: h.users.update_user(h.user_id, created_at="2020-01-01T00:00:00Z"),
    ),
    "an attempt to change last_active": (
        "last_active: cannot be changed",
        lambda h: h.users.update_user(h.user_id, last_active="2020-01-01T00:00:00Z"),
    ),
    "an attempt to change a credential's code": (
        "code: cannot be changed.*remove the credential",
        lambda h: h.users.update_credential(h.user_id, h.credential_id, code="PPR"),
    ),
    "an attempt to move a credential to another user": (
        "user_id: cannot be changed",
        lambda h: h.users.update_credential(h.user_id, h.credential_id, user_id=uuid.uuid4()),
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_bad_input_is_named_and_writes_nothing(db: Database, users: UserManager, case: str) -> None:
    user = await users.create_user(
        "Ana", "ana@aeroclube.com.br", "pilot", licenses=["PP"], preferences={"units": "metric"}
    )
    credential = await users.add_credential(
        user.user_id, "PCM", number="123456", issued_at=date(2025, 3, 1), expires_at=date(2030, 3, 1)
    )
    before = await snapshot(db)
    named, call = BAD_CALLS[case]

    with pytest.raises(ValidationError, match=named):
        await call(Holder(users, user.user_id, credential.credential_id))

    assert await snapshot(db) == before
