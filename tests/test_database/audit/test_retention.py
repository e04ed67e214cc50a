"""Audit retention by table and action (both backends), and, on PostgreSQL, the month partitions that a purge drops
whole."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from stratus_db import AuditManager, Database, MemoryManager, UserManager
from stratus_db.config import load_settings
from stratus_db.errors import ConfigurationError
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import audit_partitions, count_rows, create_user


def retaining(db: Database, clock: ManualClock, days: int, rules: dict[str, int]) -> Database:
    """Another handle on the same database, with these retention settings and the test's clock."""
    settings = db.settings.model_copy(
        update={"STRATUS_AUDIT_RETENTION_DAYS": days, "STRATUS_AUDIT_RETENTION_RULES": rules}
    )
    return Database(settings, clock=clock)


async def purge(db: Database, clock: ManualClock, days: int, rules: dict[str, int]) -> tuple[int, int]:
    handle = retaining(db, clock, days, rules)
    try:
        report = await AuditManager(handle).purge()
        assert (await AuditManager(handle).verify()).ok
        return report.checkpoints, report.rows
    finally:
        await handle.close()


async def test_each_row_is_kept_as_long_as_its_table_and_action_say(db: Database, clock: ManualClock) -> None:
    users, memories, trail = UserManager(db), MemoryManager(db), AuditManager(db)
    user = await create_user(users)
    await trail.seal()  # checkpoint 1: users/create
    await memories.store_memory(user.user_id, "base", "SBKP", "long_term")
    await trail.seal()  # checkpoint 2: memory_entries/create
    await users.update_user(user.user_id, name="Ana Prado")
    await trail.seal()  # checkpoint 3: users/update
    clock.advance(days=45)

    rules = {"memory_entries": 90, "*:update": 0, "users:update": 400}
    # 45 days on: only the users/create row is past its 30 days; memories are kept 90.
    assert await purge(db, clock, 30, rules) == (1, 1)
    clock.advance(days=60)
    # 105 days on: the memory's row goes; the update is kept 400 days (users:update wins over *:update).
    assert await purge(db, clock, 30, rules) == (1, 1)
    assert await purge(db, clock, 30, {"memory_entries": 90, "*:update": 0}) == (0, 0), "kept for ever"
    assert await purge(db, clock, 30, {"*:update": 0, "users": 10}) == (0, 0), "*:action is more specific"
    assert await purge(db, clock, 0, {"users": 100}) == (1, 1), "a rule applies with no default retention"
    remaining = (await trail.query(limit=100)).items
    assert [(event.table_name, event.action) for event in remaining] == [("audit_log", "purge")] * 3
    assert [event.new_values["rows"] for event in remaining] == [1, 1, 1]


async def test_the_chain_goes_on_after_a_purge_of_everything_sealed(db: Database, clock: ManualClock) -> None:
    users, trail = UserManager(db), AuditManager(db)
    for _ in range(3):
        await create_user(users)
    await trail.seal()
    clock.advance(days=40)

    assert await purge(db, clock, 30, {}) == (1, 3)  # and the purge's row is sealed after the purged head
    await create_user(users)
    await trail.seal()
    report = await trail.verify()
    assert (report.ok, report.rows_checked, report.unsealed) == (True, 2, 0), report.problems
    assert [(c.first_position, c.last_position) for c in await trail.checkpoints()] == [
        (1, 3),
        (4, 4),
        (5, 5),
    ]


@pytest.mark.parametrize(
    "rules",
    [{"users; DROP TABLE audit_log": 1}, {"users:": 1}, {"*": 1}, {"users": -1}, {"users": "muito"}],
    ids=["sql", "empty action", "lone star", "negative", "not a number"],
)
def test_a_malformed_rule_is_refused_by_the_settings(rules: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="STRATUS_AUDIT_RETENTION_RULES"):
        load_settings(STRATUS_AUDIT_RETENTION_RULES=rules)


async def partitions(db: Database) -> dict[str, int]:
    """The partitions of this file's far-off months (the others are other tests')."""
    return await audit_partitions(db, "audit_log_2041")


async def test_postgres_a_purge_drops_each_month_whose_rows_all_go(
    postgresql_only: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = postgresql_only
    # Months of their own, far from the other tests' rows: the partitions are the database's, not the test's.
    clock = ManualClock(datetime(2041, 1, 10, tzinfo=UTC))
    monkeypatch.setattr(db, "clock", clock)
    users, trail = UserManager(db), AuditManager(db)
    await trail.seal()  # makes January to March
    assert await partitions(db) == {"audit_log_2041_01": 0, "audit_log_2041_02": 0, "audit_log_2041_03": 0}
    for _ in range(3):
        await create_user(users)
    await trail.seal()
    clock.advance(days=25)  # February 4
    february = await create_user(users)
    await trail.seal()
    assert await partitions(db) == {
        "audit_log_2041_01": 3,
        "audit_log_2041_02": 1,
        "audit_log_2041_03": 0,
        "audit_log_2041_04": 0,
    }
    clock.advance(days=40)  # March 16: January's rows are 65 days old, February's 40

    assert await purge(db, clock, 60, {}) == (1, 3)
    assert await partitions(db) == {
        "audit_log_2041_02": 1,
        "audit_log_2041_03": 1,
        "audit_log_2041_04": 0,
        "audit_log_2041_05": 0,
    }, "January dropped whole; the purge's own row is in March, and sealing it made May"
    assert await count_rows(db, "audit_log") == 2
    assert {event.record_id for event in (await trail.query(table="users")).items} == {february.user_id}


async def test_postgres_a_month_not_wholly_past_is_purged_row_by_row(
    postgresql_only: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = postgresql_only
    clock = ManualClock(datetime(2041, 6, 1, tzinfo=UTC))
    monkeypatch.setattr(db, "clock", clock)
    users, trail = UserManager(db), AuditManager(db)
    await trail.seal()
    await create_user(users)
    await trail.seal()
    clock.advance(days=20)
    kept = await create_user(users)
    await trail.seal()
    clock.advance(days=20)  # July 11: the first row is 40 days old, the second 20

    assert await purge(db, clock, 30, {}) == (1, 1)
    assert (await partitions(db))["audit_log_2041_06"] == 1, "June stays, with its row within retention"
    assert [event.record_id for event in (await trail.query(table="users")).items] == [kept.user_id]
