"""API keys on both backends: a key stands for its principal until revoked or expired, its secret is shown once and
never stored, every change is audited, and a malformed request writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stratus_db import (
    ApiKeyManager,
    AuditManager,
    Database,
    Principal,
    PrincipalKind,
    PrivacyManager,
    UserManager,
    ValidationError,
)
from stratus_db.errors import NotFoundError, PermissionDeniedError
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user


async def test_a_key_stands_for_its_principal_until_revoked(db: Database) -> None:
    ana = await create_user(UserManager(db))
    keys = ApiKeyManager(db)
    made = await keys.create_key(Principal.agent("briefing", acting_for=ana.user_id), "serviço de briefing")
    assert made.token.startswith("sk_stratus_")
    assert await keys.principal_for(made.token) == Principal.agent("briefing", acting_for=ana.user_id)

    async with db.engine.connect() as conn:
        stored = [dict(row) for row in (await conn.exec_driver_sql("SELECT * FROM api_keys")).mappings()]
    secret = made.token.removeprefix("sk_stratus_").partition("_")[2]  # a secret may hold "_" itself
    assert len(stored) == 1
    assert all(secret not in str(value) for value in stored[0].values()), "the secret is never stored"

    forged = made.token[:-4] + ("AAAA" if not made.token.endswith("AAAA") else "BBBB")
    for refused in (forged, "sk_stratus_notakey", f"sk_stratus_{uuid.uuid4().hex}_x", "eyJhbGciOi", ""):
        assert await keys.principal_for(refused) is None

    revoked = await keys.revoke_key(made.key.key_id)
    assert revoked.revoked_at is not None
    assert await keys.principal_for(made.token) is None
    assert (await keys.revoke_key(made.key.key_id)).revoked_at == revoked.revoked_at, (
        "revoking again changes nothing"
    )
    assert await keys.list_keys() == []
    assert [key.key_id for key in await keys.list_keys(include_revoked=True)] == [made.key.key_id]

    trail = (await AuditManager(db).query(table="api_keys")).items
    assert [(event.action, event.record_id) for event in trail] == [
        ("update", made.key.key_id),
        ("create", made.key.key_id),
    ]
    assert trail[1].new_values == {"name": "serviço de briefing", "stands_for": "agent:briefing"}
    assert secret not in str([event.model_dump() for event in trail])


async def test_erasing_a_user_erases_their_keys(db: Database) -> None:
    ana = await create_user(UserManager(db))
    keys = ApiKeyManager(db)
    made = await keys.create_key(Principal.for_user(ana.user_id), "app da Ana")
    report = await PrivacyManager(db).erase_user(ana.user_id, "pedido da titular")
    assert report.deleted["api_keys"] == 1
    assert await keys.principal_for(made.token) is None
    assert await count_rows(db, "api_keys") == 0


async def test_a_key_expires(db: Database, clock: ManualClock) -> None:
    keys = ApiKeyManager(db)
    made = await keys.create_key(
        Principal.system("relatorios"), "relatórios", expires_at=clock.now + timedelta(days=1)
    )
    assert await keys.principal_for(made.token) == Principal.system("relatorios")
    clock.advance(days=1, seconds=1)
    assert await keys.principal_for(made.token) is None


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"for_principal": "admin:ops", "name": "x"}, "for_principal"),
        ({"for_principal": Principal.system("s"), "name": ""}, "name"),
        ({"for_principal": Principal.system("s"), "name": "x" * 101}, "name"),
        (
            {
                "for_principal": Principal.system("s"),
                "name": "x",
                "expires_at": datetime(2020, 1, 1, tzinfo=UTC),
            },
            "future",
        ),
        (
            {"for_principal": Principal.system("s"), "name": "x", "expires_at": datetime(2030, 1, 1)},  # noqa: DTZ001
            "expires_at",
        ),
    ],
    ids=["not a principal", "empty name", "long name", "past expiry", "naive expiry"],
)
async def test_a_malformed_key_request_writes_nothing(
    db: Database, arguments: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        await ApiKeyManager(db).create_key(**arguments)
    assert await count_rows(db, "api_keys") == 0


async def test_only_trusted_code_makes_keys(db: Database) -> None:
    ana = await create_user(UserManager(db))
    keys = ApiKeyManager(db)
    for who in (
        Principal.for_user(ana.user_id),
        Principal(kind=PrincipalKind.auditor, id="dpo"),
        Principal(kind=PrincipalKind.admin, id="ops"),  # a key may stand for `system`: more than an admin
    ):
        with pytest.raises(PermissionDeniedError):
            await keys.create_key(Principal(kind=PrincipalKind.admin, id="eu"), "escalada", principal=who)
    assert await count_rows(db, "api_keys") == 0
    with pytest.raises(NotFoundError):
        await keys.revoke_key(uuid.uuid4())
