"""PostgreSQL down, then back: the service answers 503 with Retry-After while its database refuses connections, and
recovers by itself on the next requests once it accepts them again. The outage is real, on this test's own database
only: `ALLOW_CONNECTIONS false` and its sessions ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from sqlalchemy import func, make_url, select

from stratus_db import Database, Principal
from stratus_db.api import create_app
from stratus_db.errors import DatabaseUnavailableError
from stratus_db.models import ServiceSampleRow
from tests.fixtures.databases import settings_for, throwaway_postgres_database
from tests.fixtures.http import CLIENT, assert_problem, bearer, new_user


async def ready_again(client: httpx.AsyncClient) -> None:
    """/ready is 200 again once the cache's listener has reconnected by itself (it retries every half second)."""
    for _ in range(100):
        if (await client.get("/ready")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("/ready stayed 503")


@dataclass
class Rig:
    """The service on a database of the test's own, and an administrator's connection to the cluster that can shut
    that database (and it alone) out."""

    db: Database
    client: httpx.AsyncClient
    name: str
    admin: asyncpg.Connection

    async def allow_connections(self, allowed: bool) -> None:
        await self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {str(allowed).lower()}')


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with throwaway_postgres_database() as url:
        db = Database(settings_for(url))
        admin = await asyncpg.connect(
            make_url(url)
            .set(drivername="postgresql", database="postgres")
            .render_as_string(hide_password=False)
        )
        name = str(make_url(url).database)
        transport = httpx.ASGITransport(app=create_app(db), client=CLIENT)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as client:
                yield Rig(db, client, name, admin)
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
            await db.close()


async def test_postgres_an_outage_is_503_and_the_service_recovers_by_itself(rig: Rig) -> None:
    db, client, name = rig.db, rig.client, rig.name
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    assert (await client.get("/ready")).status_code == 200

    await rig.allow_connections(False)
    await rig.admin.fetchval(
        "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity WHERE datname = $1", name
    )
    down = await client.get(f"/v1/users/{ana}", headers=as_ana)
    problem = assert_problem(down, 503)
    assert down.headers["retry-after"] == "5"
    assert problem["detail"] == "the database cannot be reached just now: retry shortly"
    assert name not in down.text, "the server and database are not the client's business"
    assert (await client.get("/ready")).status_code == 503
    assert (await client.get("/health")).status_code == 200, "alive all along"
    with pytest.raises(DatabaseUnavailableError):
        await db.samples.flush()  # the counts stay for the next flush

    await rig.allow_connections(True)
    for _ in range(3):
        assert (await client.get(f"/v1/users/{ana}", headers=as_ana)).status_code == 200
    await ready_again(client)
    await db.samples.flush()
    async with db.transaction() as conn:
        probes = (
            await conn.execute(
                select(func.sum(ServiceSampleRow.total), func.sum(ServiceSampleRow.failed)).where(
                    ServiceSampleRow.kind == "probe"
                )
            )
        ).one()
    assert probes[1] >= 1, "the failed probes of the outage are recorded once it is over"
    assert probes[0] > probes[1]


async def test_postgres_not_ready_while_the_caches_listener_is_down(rig: Rig) -> None:
    """The database answers (the pool's connections live on) but the cache's LISTEN connection was cut and cannot
    come back: another instance's writes would go unheard, so the instance is not ready until it does."""
    db, client = rig.db, rig.client
    ana = await new_user(client, db)
    assert (await client.get("/ready")).status_code == 200
    assert db.metrics()["memory_cache"]["listening"] is True

    await rig.allow_connections(False)
    cut = await rig.admin.fetchval(
        "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
        " WHERE datname = $1 AND application_name = 'stratus_db:listen'",
        rig.name,
    )
    assert cut == 1
    for _ in range(500):  # until the loss is noticed
        if not db.metrics()["memory_cache"]["listening"]:
            break
        await asyncio.sleep(0.01)
    not_ready = await client.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json() == {"healthy": False}
    assert not_ready.headers["retry-after"] == "5"
    as_ana = bearer(db, Principal.for_user(ana))
    assert (await client.get(f"/v1/users/{ana}", headers=as_ana)).status_code == 200, "still serving"

    await rig.allow_connections(True)
    await ready_again(client)
    assert db.metrics()["memory_cache"]["listening"] is True
