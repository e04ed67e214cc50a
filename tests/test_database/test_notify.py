"""PostgresNotifier notices a LISTEN connection that dies silently (no reset from the network), and recovers."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from stratus_db.kit.notify import PostgresNotifier
from stratus_db.logging import get_logger

CHANNEL = "stratus_test_heartbeat"
PATIENCE_S = 30
"""How long a test waits for something that must happen before calling it a failure (not a performance bound)."""


class FreezableProxy:
    """A TCP proxy in front of PostgreSQL that can stop passing bytes while keeping every socket open: what a NAT or
    load balancer that silently drops a connection looks like from both ends."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        pumps = [
            asyncio.ensure_future(self._pump(reader, upstream_writer)),
            asyncio.ensure_future(self._pump(upstream_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        for stream in (writer, upstream_writer):
            stream.close()

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            await self._flowing.wait()
            target.write(data)
            await target.drain()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _until(condition: asyncio.Event) -> None:
    await asyncio.wait_for(condition.wait(), PATIENCE_S)


async def test_a_silently_dropped_listen_connection_reports_a_gap_and_listens_again(
    postgres_url: str,
) -> None:
    url = make_url(postgres_url)
    proxy = FreezableProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    notifier = PostgresNotifier(
        url.set(host="127.0.0.1", port=proxy.port),
        CHANNEL,
        log=get_logger(),
        heartbeat_s=0.2,
        heartbeat_timeout_s=1.0,
    )
    received: list[str] = []
    arrived, gap = asyncio.Event(), asyncio.Event()

    def deliver(payload: str) -> None:
        received.append(payload)
        arrived.set()

    sender = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await notifier.start(deliver, gap.set)
        await sender.execute(f"SELECT pg_notify('{CHANNEL}', 'antes')")
        await _until(arrived)
        assert received == ["antes"]

        proxy.freeze()  # the connection stays open at both ends, and nothing gets through any more
        await _until(gap)
        assert not notifier.listening

        proxy.thaw()
        arrived.clear()
        for _ in range(PATIENCE_S * 5):  # sent until the reconnected listener hears it
            await sender.execute(f"SELECT pg_notify('{CHANNEL}', 'depois')")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 0.2)
            if "depois" in received:
                break
        assert "depois" in received, "the listener never came back"
        assert notifier.listening
    finally:
        await sender.close()
        await notifier.stop()
        await proxy.stop()


async def test_a_healthy_connection_survives_its_heartbeats(postgres_url: str) -> None:
    heartbeat_s = 0.05
    notifier = PostgresNotifier(
        make_url(postgres_url), CHANNEL, log=get_logger(), heartbeat_s=heartbeat_s, heartbeat_timeout_s=5
    )
    gaps: list[int] = []
    try:
        await notifier.start(lambda _payload: None, lambda: gaps.append(1))
        await asyncio.sleep(heartbeat_s * 10)  # ten heartbeats
        assert notifier.listening
        assert gaps == []
    finally:
        await notifier.stop()


async def test_the_listen_connection_names_itself_in_pg_stat_activity(postgres_url: str) -> None:
    url = make_url(postgres_url)
    notifier = PostgresNotifier(url, CHANNEL, log=get_logger())
    observer = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await notifier.start(lambda _payload: None, lambda: None)
        names = await observer.fetch(
            "SELECT application_name FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
        assert "stratus_db:listen" in [row["application_name"] for row in names]
    finally:
        await observer.close()
        await notifier.stop()


async def test_connecting_gives_up_after_the_connect_timeout(postgres_url: str) -> None:
    """A server that accepts the connection and never answers (a frozen proxy) costs the configured wait."""
    url = make_url(postgres_url)
    proxy = FreezableProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxy.freeze()
    notifier = PostgresNotifier(
        url.set(host="127.0.0.1", port=proxy.port), CHANNEL, log=get_logger(), connect_timeout_s=0.3
    )
    started = asyncio.get_running_loop().time()
    try:
        with pytest.raises(TimeoutError):
            await notifier.start(lambda _payload: None, lambda: None)
        assert asyncio.get_running_loop().time() - started < 5, "the old hard-coded wait was 10 s"
    finally:
        await notifier.stop()
        await proxy.stop()


async def test_the_memory_cache_listens_with_the_configured_connect_timeout(postgres_url: str) -> None:
    from stratus_db import Database
    from stratus_db.memory.cache import MemoryCache
    from tests.fixtures.databases import settings_for

    db = Database(settings_for(postgres_url).model_copy(update={"STRATUS_CONNECT_TIMEOUT_S": 2.5}))
    try:
        notifier = MemoryCache.of(db)._notifier
        assert isinstance(notifier, PostgresNotifier)
        assert notifier._connect_timeout_s == 2.5
    finally:
        await db.close()
