"""Reads of medical-certificate data (health data, LGPD Art. 11) leave an audit row on both backends: who read which
certificates of whom, never their contents; reads of other credentials leave none."""

from __future__ import annotations

from datetime import date

from stratus_db import AuditManager, Database, Principal, UserManager
from tests.fixtures.factories import create_user


async def test_credential_status_of_a_medical_certificate_is_audited_without_its_contents(
    db: Database, users: UserManager, audit: AuditManager
) -> None:
    holder = await create_user(users)  # PPR: no medical certificate
    await users.credential_status(holder.user_id)
    assert (await audit.query(user_id=holder.user_id, action="read")).items == []

    cma = await users.add_credential(
        holder.user_id, "CMA2", number="9911", expires_at=date(2030, 1, 1), restrictions="lentes"
    )
    await users.credential_status(holder.user_id, principal=Principal.for_user(holder.user_id))

    [read] = (await audit.query(user_id=holder.user_id, action="read")).items
    assert (read.table_name, read.actor, read.old_values) == (
        "user_credentials",
        f"user:{holder.user_id}",
        None,
    )
    assert read.new_values == {"operation": "credential_status", "credential_ids": [str(cma.credential_id)]}


async def test_expiring_credentials_audits_one_read_per_holder_of_a_medical_certificate(
    db: Database, users: UserManager, audit: AuditManager
) -> None:
    first, second = await create_user(users), await create_user(users)
    one = await users.add_credential(first.user_id, "CMA1", expires_at=date(2027, 1, 10))
    two = await users.add_credential(first.user_id, "CMA4", expires_at=date(2027, 1, 20))
    await users.add_credential(second.user_id, "IFRA", expires_at=date(2027, 1, 15))

    page = await users.expiring_credentials(30, on=date(2027, 1, 1))
    assert len(page.items) == 3

    reads = (await audit.query(action="read")).items
    assert [(r.user_id, r.new_values) for r in reads] == [
        (
            first.user_id,
            {
                "operation": "expiring_credentials",
                "credential_ids": [str(one.credential_id), str(two.credential_id)],
            },
        )
    ]


async def test_the_trail_is_queried_by_actor_and_by_trace_id(
    db: Database, users: UserManager, audit: AuditManager
) -> None:
    async with db.context(
        principal=Principal.system("importador"), trace_id="4bf92f3577b34da6a3ce929d0e0e4736"
    ):
        imported = await create_user(users)
        await users.update_user(imported.user_id, name="Importada")
    await create_user(users)

    by_actor = (await audit.query(actor="system:importador")).items
    assert [(e.action, e.record_id) for e in by_actor] == [
        ("update", imported.user_id),
        ("create", imported.user_id),
    ]
    by_trace = (await audit.query(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")).items
    assert [e.audit_id for e in by_trace] == [e.audit_id for e in by_actor]
    assert (await audit.query(actor="system:ninguem")).items == []
