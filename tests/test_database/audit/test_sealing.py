"""The audit trail's tamper evidence on both backends: a sealed trail verifies; each kind of tampering done directly
in SQL (a value edited, a row deleted, a forged row put into the past, two rows swapped, the tail truncated with its
seals) is reported at its place; an erasure after sealing still verifies, and a redacted row altered again does not;
exported heads catch what the database alone cannot."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update

from stratus_db import (
    AuditManager,
    ConversationManager,
    Database,
    MemoryManager,
    Principal,
    PrincipalKind,
    PrivacyManager,
    UserManager,
    ValidationError,
)
from stratus_db.audit.sealing import rewrite_permit
from stratus_db.errors import ConflictError, PermissionDeniedError
from stratus_db.kit.models import table_of
from stratus_db.models import (
    AuditChainRow,
    AuditCheckpointRow,
    AuditRedactionRow,
    AuditRewritePermitRow,
    AuditRow,
)
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user

AUDIT = table_of(AuditRow)
CHAIN = table_of(AuditChainRow)
CHECKPOINTS = table_of(AuditCheckpointRow)


async def some_history(db: Database) -> uuid.UUID:
    users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
    user = await users.create_user("Ana Voo", "ana.voo@aeroclube.com.br", "pilot", licenses=["PP"])
    await users.update_user(user.user_id, name="Ana Voo Prado")
    await memories.store_memory(user.user_id, "base", "SBKP", "long_term")
    chat = await conversations.create_conversation(user.user_id, "Rota")
    await conversations.add_message(chat.conversation_id, user.user_id, "METAR SBKP?")
    other = await create_user(users)
    await memories.store_memory(other.user_id, "base", "SBGR", "long_term")
    return user.user_id


async def sealed_ids(db: Database) -> list[uuid.UUID]:
    """The audit ids in chain order."""
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(CHAIN.c.audit_id).order_by(CHAIN.c.position))).scalars())


async def sql(db: Database, statement: Any) -> None:
    """Tampering as someone with the database's password would: straight SQL, no library, past the append-only
    triggers with a permit of their own (revision 0012 stops mistakes, not them)."""
    async with db.engine.begin() as conn, rewrite_permit(conn, "tampering"):
        await conn.execute(statement)


async def test_a_sealed_trail_verifies_and_sealing_again_seals_only_what_is_new(
    db: Database, audit: AuditManager
) -> None:
    await some_history(db)
    rows = await count_rows(db, "audit_log")

    first = await audit.seal(batch_size=3)
    assert first.rows_sealed == rows
    assert len(first.checkpoints) == -(-rows // 3), "a checkpoint per batch"
    assert [c.first_position for c in first.checkpoints] == list(range(1, rows + 1, 3))
    report = await audit.verify(expected_heads=[c.exported() for c in await audit.checkpoints()])
    assert (report.ok, report.rows_checked, report.unsealed, report.problems) == (True, rows, 0, [])

    assert (await audit.seal()).rows_sealed == 0
    await create_user(UserManager(db))
    report = await audit.verify()
    assert (report.ok, report.unsealed) == (True, 1), "not sealed yet is not tampering"
    again = await audit.seal()
    assert (again.rows_sealed, again.checkpoints[0].first_position) == (1, rows + 1)
    assert (await audit.verify()).ok


async def test_an_edited_value_is_reported_at_its_row(db: Database, audit: AuditManager) -> None:
    await some_history(db)
    await audit.seal()
    target = (await sealed_ids(db))[3]
    await sql(db, update(AUDIT).where(AUDIT.c.audit_id == target).values(actor="user:someone-else"))

    report = await audit.verify()
    assert not report.ok
    assert [(p.kind, p.position, p.audit_id) for p in report.problems] == [("modified", 4, target)]


async def test_a_deleted_row_is_reported_at_its_place(db: Database, audit: AuditManager) -> None:
    await some_history(db)
    await audit.seal()
    target = (await sealed_ids(db))[1]
    await sql(db, delete(AUDIT).where(AUDIT.c.audit_id == target))

    problems = (await audit.verify()).problems
    assert [(p.kind, p.position, p.audit_id) for p in problems] == [("deleted", 2, target)]


async def test_a_forged_row_put_into_the_past_is_reported_as_inserted(
    db: Database, audit: AuditManager
) -> None:
    await some_history(db)
    [checkpoint] = (await audit.seal()).checkpoints
    forged = uuid.uuid4()
    await sql(
        db,
        insert(AUDIT).values(
            audit_id=forged,
            action="delete",
            table_name="users",
            timestamp=checkpoint.sealed_at - timedelta(days=3),
            actor="system:forged",
        ),
    )

    problems = (await audit.verify()).problems
    assert [(p.kind, p.audit_id) for p in problems] == [("inserted", forged)]


async def test_two_rows_swapped_are_reported_from_the_first(db: Database, audit: AuditManager) -> None:
    await some_history(db)
    await audit.seal()
    ids = await sealed_ids(db)
    async with db.engine.begin() as conn, rewrite_permit(conn, "tampering"):
        read = select(AUDIT.c.action, AUDIT.c.new_values)
        a = (await conn.execute(read.where(AUDIT.c.audit_id == ids[0]))).one()
        b = (await conn.execute(read.where(AUDIT.c.audit_id == ids[2]))).one()
        await conn.execute(
            update(AUDIT).where(AUDIT.c.audit_id == ids[0]).values(action=b[0], new_values=b[1])
        )
        await conn.execute(
            update(AUDIT).where(AUDIT.c.audit_id == ids[2]).values(action=a[0], new_values=a[1])
        )

    problems = (await audit.verify()).problems
    assert [(p.kind, p.position) for p in problems] == [("modified", 1), ("modified", 3)]


async def test_a_truncated_tail_with_its_seals_is_caught_by_the_heads_kept_outside(
    db: Database, audit: AuditManager
) -> None:
    await some_history(db)
    await audit.seal(batch_size=4)
    checkpoints = await audit.checkpoints()
    kept = [checkpoint.exported() for checkpoint in checkpoints]
    last = checkpoints[-1]
    tail = (await sealed_ids(db))[last.first_position - 1 :]

    # The rows alone: the seals show them gone.
    await sql(db, delete(AUDIT).where(AUDIT.c.audit_id.in_(tail)))
    assert {p.kind for p in (await audit.verify()).problems} == {"deleted"}
    # Their seals and checkpoint too: the database agrees with itself again; only the heads kept outside tell.
    await sql(db, delete(CHAIN).where(CHAIN.c.audit_id.in_(tail)))
    await sql(db, delete(CHECKPOINTS).where(CHECKPOINTS.c.checkpoint_id == last.checkpoint_id))
    assert (await audit.verify()).ok
    problems = (await audit.verify(expected_heads=kept)).problems
    assert [(p.kind, p.position) for p in problems] == [("checkpoint missing", last.last_position)]


async def test_a_checkpoint_removed_or_stretched_in_the_middle_is_caught_without_heads(
    db: Database, audit: AuditManager
) -> None:
    await some_history(db)
    await audit.seal(batch_size=2)
    first, second, third, *_ = await audit.checkpoints()
    await sql(db, delete(CHECKPOINTS).where(CHECKPOINTS.c.checkpoint_id == second.checkpoint_id))
    assert [(p.kind, p.position) for p in (await audit.verify()).problems] == [
        ("checkpoint missing", second.first_position)
    ]

    await sql(
        db,
        insert(CHECKPOINTS).values(
            checkpoint_id=second.checkpoint_id,
            sealed_at=second.sealed_at,
            first_position=second.first_position,
            last_position=second.last_position + 1,
            head=second.head,
        ),
    )
    problems = [(p.kind, p.position) for p in (await audit.verify()).problems]
    assert ("checkpoint altered", third.first_position + 1) in problems
    assert first.first_position == 1


async def test_an_altered_seal_or_checkpoint_is_reported(db: Database, audit: AuditManager) -> None:
    await some_history(db)
    await audit.seal()
    async with db.engine.connect() as conn:
        original = await conn.scalar(select(CHAIN.c.chain_hash).where(CHAIN.c.position == 2))
    await sql(db, update(CHAIN).where(CHAIN.c.position == 2).values(chain_hash="f" * 64))
    assert [(p.kind, p.position) for p in (await audit.verify()).problems] == [("seal altered", 2)]

    await sql(db, update(CHAIN).where(CHAIN.c.position == 2).values(chain_hash=original))
    await sql(db, update(CHECKPOINTS).values(head="e" * 64))
    assert [p.kind for p in (await audit.verify()).problems] == ["checkpoint altered"]


async def test_an_erasure_after_sealing_still_verifies_and_its_rows_stay_protected(
    db: Database, audit: AuditManager
) -> None:
    person = await some_history(db)
    await audit.seal()
    report = await PrivacyManager(db).erase_user(person, "pedido do titular")

    verified = await audit.verify()
    assert verified.ok, verified.problems
    assert verified.redacted == report.audit_rows_pseudonymised, "every sealed row the erasure rewrote"
    await audit.seal()
    assert (await audit.verify()).ok

    pseudonymised = (await audit.query(user_id=report.pseudonym, action="update")).items[0]
    await sql(db, update(AUDIT).where(AUDIT.c.audit_id == pseudonymised.audit_id).values(action="create"))
    problems = (await audit.verify()).problems
    assert [(p.kind, p.audit_id) for p in problems] == [("modified", pseudonymised.audit_id)]


async def test_sealing_and_verifying_are_for_operators_and_auditors(
    db: Database, audit: AuditManager
) -> None:
    user = await create_user(UserManager(db))
    with pytest.raises(PermissionDeniedError):
        await audit.seal(principal=Principal.for_user(user.user_id))
    with pytest.raises(PermissionDeniedError):
        await audit.verify(principal=Principal.for_user(user.user_id))
    assert (await audit.verify(principal=Principal(kind=PrincipalKind.auditor, id="dpo"))).ok
    with pytest.raises(ValidationError, match="batch_size"):
        await audit.seal(batch_size=0)
    with pytest.raises(ValidationError, match="expected_heads"):
        await audit.verify(expected_heads=[{"head": "x"}])
    async with db.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(CHAIN)) == 0, "nothing sealed by a refusal"


async def test_a_row_that_commits_late_is_sealed_by_the_next_run(
    db: Database, clock: ManualClock, audit: AuditManager
) -> None:
    users = UserManager(db)
    await create_user(users)
    await audit.seal()
    clock.now -= timedelta(minutes=1)  # its transaction took its timestamp before the last row sealed
    await create_user(users)
    clock.now += timedelta(minutes=2)

    assert (await audit.verify()).ok, "not sealed yet, within the grace: a slow commit, not tampering"
    assert (await audit.seal()).rows_sealed == 1
    report = await audit.verify()
    assert (report.ok, report.rows_checked, report.unsealed) == (True, 2, 0)


async def test_the_trail_refuses_updates_and_deletes_outside_an_erasure(
    db: Database, audit: AuditManager
) -> None:
    await some_history(db)
    before = [(e.audit_id, e.action, e.actor) for e in (await audit.query(limit=100)).items]

    for statement in (update(AUDIT).values(actor="system:intruso"), delete(AUDIT)):
        with pytest.raises(ConflictError):
            async with db.transaction() as conn:
                await conn.execute(statement)
    assert [(e.audit_id, e.action, e.actor) for e in (await audit.query(limit=100)).items] == before
    async with db.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(table_of(AuditRewritePermitRow))) == 0


async def test_a_row_rewritten_by_two_erasures_still_verifies_and_its_hashes_are_keyed(
    db: Database, audit: AuditManager
) -> None:
    users = UserManager(db)
    ana, bia = await create_user(users), await create_user(users)
    async with db.context(ip_address="203.0.113.9"):
        with pytest.raises(PermissionDeniedError):  # about Ana, Bia acting: a refusal row naming both
            await MemoryManager(db).get_memory(ana.user_id, "base", principal=Principal.for_user(bia.user_id))
    await PrivacyManager(db).erase_user(bia.user_id, "pedido de Bia")  # rewrites that row before it is sealed
    await audit.seal()
    await PrivacyManager(db).erase_user(ana.user_id, "pedido de Ana")  # and again, after

    report = await audit.verify()
    assert report.ok, report.problems
    assert report.redacted >= 1
    async with db.engine.connect() as conn:
        stored = set((await conn.execute(select(table_of(AuditRedactionRow).c.original_hash))).scalars())
    guessable = hashlib.sha256(b'ip_address\x00"203.0.113.9"').hexdigest()
    assert stored
    assert guessable not in stored, (
        "a hash kept after an erasure is keyed: guesses cannot be checked against it"
    )


async def test_retention_purges_whole_sealed_checkpoints_and_the_trail_still_verifies(
    db: Database, clock: ManualClock
) -> None:
    users = UserManager(db)
    start = clock.now
    old = [await create_user(users) for _ in range(3)]  # day 0
    trail = AuditManager(db)
    await trail.seal(batch_size=2)  # checkpoints 1 (2 rows) and 2 (1 row)
    clock.now = start + timedelta(days=40)
    recent = await create_user(users)
    await trail.seal()  # checkpoint 3
    kept = [checkpoint.exported() for checkpoint in await trail.checkpoints()]
    clock.now = start + timedelta(days=45)

    keeping = db.settings.model_copy(update={"STRATUS_AUDIT_RETENTION_DAYS": 30})
    retaining = Database(keeping, clock=clock)
    try:
        audit = AuditManager(retaining)
        dry = await audit.purge(dry_run=True)
        assert (dry.checkpoints, dry.rows) == (2, 3)
        assert await count_rows(db, "audit_log") == 4, "a dry run purges nothing"

        done = await audit.purge()
        assert (done.retention.default_days, done.checkpoints, done.rows) == (30, 2, 3)
        remaining = {e.record_id for e in (await audit.query(table="users", action="create")).items}
        assert remaining == {recent.user_id}
        assert not {user.user_id for user in old} & remaining
        [purge] = (await audit.query(action="purge", table="audit_log")).items
        assert purge.new_values == {
            "retention": {"default_days": 30, "rules": {}},
            "through_checkpoint": 2,
            "checkpoints": 2,
            "rows": 3,
        }

        report = await audit.verify(expected_heads=kept)
        # The user created on day 40, and the purge's row, sealed by the purge in a checkpoint of its own.
        assert (report.ok, report.rows_checked, report.unsealed) == (True, 2, 0), report.problems
        assert [c.last_position - c.first_position + 1 for c in await audit.checkpoints()][-1] == 1
        assert (await audit.purge()).rows == 0, "nothing more is due"
        await sql(db, update(AUDIT).where(AUDIT.c.record_id == recent.user_id).values(actor="system:outro"))
        assert [p.kind for p in (await audit.verify()).problems] == ["modified"]
    finally:
        await retaining.close()


async def test_without_retention_the_trail_is_kept(db: Database, audit: AuditManager) -> None:
    await some_history(db)
    await audit.seal()
    report = await audit.purge()
    assert (report.retention.keeps_everything, report.checkpoints, report.rows) == (True, 0, 0)
    assert (await audit.verify()).ok


async def test_an_agents_rows_name_whom_it_acted_for_and_erasure_pseudonymises_that_too(
    db: Database, audit: AuditManager
) -> None:
    users, memories = UserManager(db), MemoryManager(db)
    ana, bia = await create_user(users), await create_user(users)
    for_ana = Principal.agent("briefing", acting_for=ana.user_id)
    await memories.store_memory(ana.user_id, "base", "SBKP", "long_term", principal=for_ana)
    with pytest.raises(PermissionDeniedError):  # Ana's agent reaching for Bia's data: refused, and audited
        await memories.store_memory(bia.user_id, "base", "SBGR", "long_term", principal=for_ana)
    rows = (await audit.query(actor="agent:briefing")).items
    assert [(event.action, event.user_id, event.on_behalf_of) for event in rows] == [
        ("deny", bia.user_id, ana.user_id),
        ("create", ana.user_id, ana.user_id),
    ]
    assert {event.on_behalf_of for event in (await audit.query(actor="system:system")).items} == {None}
    await audit.seal()

    report = await PrivacyManager(db).erase_user(ana.user_id, "pedido de Ana")
    [refusal] = (await audit.query(user_id=bia.user_id, action="deny")).items
    assert refusal.on_behalf_of == report.pseudonym
    assert str(ana.user_id) not in refusal.model_dump_json()
    verified = await audit.verify()
    assert verified.ok, verified.problems
    # The value is covered by the row's seal: changed or cleared, the row is reported.
    await sql(db, update(AUDIT).where(AUDIT.c.audit_id == refusal.audit_id).values(on_behalf_of=bia.user_id))
    assert [(p.kind, p.audit_id) for p in (await audit.verify()).problems] == [("modified", refusal.audit_id)]
    await sql(db, update(AUDIT).where(AUDIT.c.audit_id == refusal.audit_id).values(on_behalf_of=None))
    assert [(p.kind, p.audit_id) for p in (await audit.verify()).problems] == [("modified", refusal.audit_id)]
