"""Every process's per-minute counts in service_samples (kit/samples.py): what a call, a refusal and a failure
count as, that each flush adds to what a minute already holds, and that closing writes what is left."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from stratus_db import Database, MemoryManager, Principal, PrincipalKind, UserManager
from stratus_db.errors import DatabaseUnavailableError, PermissionDeniedError, ValidationError
from stratus_db.kit.samples import SampleKind
from stratus_db.models import ServiceSampleRow
from tests.fixtures.databases import handles_on, settings_for, sqlite_url

ADMIN = Principal(kind=PrincipalKind.admin, id="ops")


async def samples_of(db: Database, instance: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    async with db.transaction() as conn:
        rows = await conn.execute(select(ServiceSampleRow).where(ServiceSampleRow.instance == instance))
        totals: dict[tuple[str, str], tuple[int, int, int]] = {}
        for row in rows.mappings():
            before = totals.get((row["kind"], row["name"]), (0, 0, 0))
            totals[(row["kind"], row["name"])] = (
                before[0] + row["total"],
                before[1] + row["failed"],
                before[2] + row["refused"],
            )
        return totals


async def test_calls_refusals_and_cache_lookups_are_counted_and_flushed(db: Database) -> None:
    async for open_handle in handles_on(db):
        handle: Database = open_handle(clock=lambda: datetime.now(UTC), STRATUS_METRICS_FLUSH_S=3600)
        users = UserManager(handle)
        ana = await users.create_user("Ana", "ana@aeroclube.com.br", "pilot", principal=ADMIN)
        await users.get_user(ana.user_id, principal=ADMIN)
        with pytest.raises(ValidationError):
            await users.get_user("não é um id", principal=ADMIN)
        with pytest.raises(PermissionDeniedError):
            await users.get_user(ana.user_id, principal=Principal.for_user(uuid.uuid4()))
        memories = MemoryManager(handle)
        as_ana = Principal.for_user(ana.user_id)
        await memories.store_memory(ana.user_id, "base", "SBKP", principal=as_ana)
        await memories.get_memory(ana.user_id, "base", principal=as_ana)  # a miss, then cached
        await memories.get_memory(ana.user_id, "base", principal=as_ana)  # a hit

        assert await samples_of(handle, handle.samples.instance) == {}, "nothing written before the flush"
        assert await handle.samples.flush() >= 4
        written = await samples_of(handle, handle.samples.instance)
        assert written[("operation", "user.create")] == (1, 0, 0)
        assert written[("operation", "user.get")] == (3, 0, 2), (
            "a bad id and a stranger: refusals, not failures"
        )
        cache = written[("cache", "memory")]
        assert cache[0] >= 2
        assert cache[1] == cache[0] - 1, "every lookup a miss but the last"
        assert ("operation", "analytics.flush_samples") not in written, "the flush does not count itself"

        await users.get_user(ana.user_id, principal=ADMIN)
        await handle.close()  # writes what is left, into the same minute's row when it is still that minute
        assert (await samples_of(db, handle.samples.instance))[("operation", "user.get")][0] == 4


async def test_what_a_failure_is(tmp_path: Path) -> None:
    """The system's failures against the caller's refusals (nothing written: the classification alone)."""
    unused = Database(settings_for(sqlite_url(tmp_path / "unused.db")))
    recorder = unused.samples
    recorder.count_outcome("user.get", DatabaseUnavailableError("down"))
    recorder.count_outcome("user.get", PermissionDeniedError("no"))
    recorder.count_outcome("user.get", None)
    recorder.count_outcome("analytics.flush_samples", None)
    [(key, counts)] = recorder._pending.items()
    assert key[1:] == (SampleKind.operation.value, "user.get")
    assert counts == [3, 1, 1]
    await unused.close()  # its flush fails on a file with no tables: logged, not raised


async def test_no_samples_when_turned_off(db: Database) -> None:
    async for open_handle in handles_on(db):
        handle: Database = open_handle(STRATUS_METRICS_FLUSH_S=0)
        await UserManager(handle).list_users(principal=ADMIN)
        assert handle.samples.enabled is False
        assert await handle.samples.flush() == 0
        assert await samples_of(handle, handle.samples.instance) == {}


async def test_closing_writes_at_once_rather_than_waiting_for_the_next_flush(db: Database) -> None:
    """A flush scheduled but not yet begun is cancelled, and close() writes the counts itself (it used to wait for
    the scheduled one: the whole interval, an hour here)."""
    async for open_handle in handles_on(db):
        handle: Database = open_handle(STRATUS_METRICS_FLUSH_S=3600)
        await UserManager(handle).list_users(principal=ADMIN)
        scheduled = handle.samples._flusher
        assert scheduled is not None
        assert not scheduled.done()
        await handle.close()
        assert scheduled.cancelled()
        assert (await samples_of(db, handle.samples.instance))[("operation", "user.list")] == (1, 0, 0)
