"""What every benchmark script shares: timing under concurrency, the corpus, the machine line, docs/benchmarks.md.

Not a test and not part of the package: the scripts in bench/ import it (`from bench.harness import …`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "bench" / "data" / "conversas-aviacao.jsonl"
RESULTS = ROOT / "docs" / "benchmarks.md"

MESSAGE_COLUMNS = [
    "message_id", "conversation_id", "user_id", "seq", "agent_name", "message_type", "content", "packed_content",
    "metadata", "tokens_used", "response_time", "created_at",
]  # fmt: skip
CONVERSATION_COLUMNS = [
    "conversation_id", "user_id", "title", "status", "context", "summary", "summarized_through_seq",
    "message_count", "total_tokens", "created_at", "updated_at", "last_activity_at",
]  # fmt: skip
"""The columns the benchmarks' COPY of seeded messages and conversations writes, in their records' order."""


@dataclass
class Spent:
    """Time spent by a run of calls: wall seconds, and CPU seconds of this process and of the PostgreSQL server."""

    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    def __iadd__(self, other: Spent) -> Spent:
        self.wall += other.wall
        self.client_cpu += other.client_cpu
        self.server_cpu += other.server_cpu
        return self


@dataclass
class Result:
    system: str
    operation: str
    concurrency: int
    ops: int
    spent: Spent
    latencies: list[float]
    unit: str = "ops"
    """What `throughput` counts per second: calls ("ops"), or the rows each call carries ("rows")."""
    items_per_op: int = 1

    @property
    def throughput(self) -> float:
        return self.ops * self.items_per_op / self.spent.wall

    @property
    def client_cpu_us(self) -> float:
        """Microseconds of this process's CPU per unit of throughput (call or row)."""
        return self.spent.client_cpu * 1e6 / (self.ops * self.items_per_op)

    @property
    def server_cpu_us(self) -> float:
        """Microseconds of PostgreSQL's CPU (all its processes on this machine) per unit of throughput."""
        return self.spent.server_cpu * 1e6 / (self.ops * self.items_per_op)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


@dataclass
class Contender:
    """One system's way of doing the operation being compared: `call(index)` does op number `index`."""

    system: str
    operation: str
    call: Callable[[int], Awaitable[Any]]
    unit: str = "ops"
    items_per_op: int = 1
    latencies: list[float] = field(default_factory=list)
    spent: Spent = field(default_factory=Spent)


def report(result: Result) -> None:
    print(
        f"{result.system:<30} {result.operation:<22} c={result.concurrency:<3} "
        f"{result.throughput:>9,.0f} {result.unit}/s   "
        f"p50 {result.percentile(0.5):7.3f} ms   p95 {result.percentile(0.95):7.3f} ms   "
        f"CPU µs/{result.unit[:-1]}: client {result.client_cpu_us:5.0f}, server {result.server_cpu_us:5.0f}",
        flush=True,
    )


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> dict[int, float]:
    """User and system CPU seconds used so far by each PostgreSQL process of this machine, by pid (from /proc), as
    the server the benchmarks use runs here (127.0.0.1) and nothing else uses it meanwhile. Empty without /proc."""
    proc, used = Path("/proc"), {}
    if not proc.is_dir():
        return used
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name.startswith("postgres"):
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
    return used


def server_cpu_since(before: dict[int, float]) -> float:
    """PostgreSQL CPU seconds used since `before` (a `server_cpu_seconds()` reading) by the processes alive now; a
    process that ended meanwhile (a closed connection, an autovacuum worker) takes its share with it."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in server_cpu_seconds().items())


async def _timed(
    call: Callable[[int], Awaitable[Any]], indexes: Iterable[int], concurrency: int, latencies: list[float]
) -> Spent:
    """Run `call` over `indexes` with `concurrency` workers; the time spent, each call's latency into `latencies`."""
    counter: Iterator[int] = iter(indexes)

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    # Reading /proc takes a millisecond or two: outside the wall-clock and client-CPU windows.
    server = server_cpu_seconds()
    client, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, client_cpu = time.perf_counter() - began, time.process_time() - client
    return Spent(wall, client_cpu, server_cpu_since(server))


async def compare(
    contenders: list[Contender], ops: int, concurrency: int, *, rounds: int = 3, warmup: int = 0
) -> list[Result]:
    """Time each contender over the same `ops` indexes at `concurrency`, interleaved in `rounds` slices.

    Other work on the machine comes and goes; taking turns in slices (each round another going first) spreads it over
    every contender, so the ratios between them hold better than when each runs its whole share in one go. `warmup` calls per contender first
    (indexes after the measured ones) fill statement caches and pools; they are not counted.
    """
    for contender in contenders:
        contender.latencies, contender.spent = [], Spent()
        if warmup:
            await _timed(contender.call, range(ops, ops + warmup), concurrency, [])
    bounds = [ops * part // rounds for part in range(rounds + 1)]
    for turn, (start, stop) in enumerate(itertools.pairwise(bounds)):
        # Each round another contender goes first: background work one leaves behind (a deferred flush) lands in
        # the next one's slice, so the order rotates rather than always charging the same neighbour.
        first = turn % len(contenders)
        for contender in contenders[first:] + contenders[:first]:
            contender.spent += await _timed(
                contender.call, range(start, stop), concurrency, contender.latencies
            )
    results = [
        Result(c.system, c.operation, concurrency, ops, c.spent, c.latencies, c.unit, c.items_per_op)
        for c in contenders
    ]
    for result in results:
        report(result)
    return results


async def seed_through(
    label: str,
    count: int,
    call: Callable[[int], Awaitable[Any]],
    *,
    concurrency: int = 16,
    every: int = 10_000,
) -> list[float]:
    """Run `call(0)` … `call(count - 1)` at `concurrency`, printing the throughput of each `every` calls in turn;
    returns those figures. Seeding through the public API into a fresh database shows whether writing slows down as
    the tables grow (a plan made while a table was small, kept once it is large)."""
    rates = []
    for start in range(0, count, every):
        stop = min(start + every, count)
        spent = await _timed(call, range(start, stop), concurrency, [])
        rates.append((stop - start) / spent.wall)
        print(f"{label}: {stop:>9,} of {count:,} at {rates[-1]:,.0f}/s", flush=True)
    return rates


async def sequential_scans(url: str, table: str) -> int:
    """How many times `table` has been read whole (pg_stat_user_tables.seq_scan), counted once every other connection
    to the database has ended: a server process reports its counts when it exits."""
    connection = await asyncpg.connect(driver_url(url))
    try:
        others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        while await connection.fetchval(others):  # noqa: ASYNC110 (the server announces no process's exit)
            await asyncio.sleep(0.01)
        scans: int = await connection.fetchval(
            "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1", table
        )
        return scans
    finally:
        await connection.close()


def corpus_messages() -> list[dict[str, Any]]:
    """The messages of the Portuguese aviation corpus (bench/data/README.md), in conversation order."""
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_sentences() -> list[str]:
    sentences = []
    for message in corpus_messages():
        content = message["content"]
        sentences += [
            part.strip() for part in content.replace("\n", " ").split(". ") if len(part.strip()) > 30
        ]
    return sentences


def environment(packages: Iterable[str]) -> str:
    """The machine, Python and the given packages' versions, for the line above a results table."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    listed = ", ".join(f"{name} {version(name)}" for name in packages)
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; {listed}"


def driver_url(url: str) -> str:
    """asyncpg's and psycopg's spelling of a SQLAlchemy `postgresql+asyncpg://` URL."""
    return url.replace("postgresql+asyncpg", "postgresql")


async def server_version(url: str) -> str:
    connection = await asyncpg.connect(driver_url(url))
    try:
        return "PostgreSQL " + str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def results_table(results: Iterable[Result], *, throughput_header: str = "ops/s") -> list[str]:
    """Markdown rows; with a throughput header other than ops/s, each figure carries its unit. CPU columns are
    microseconds per unit of throughput (call or row): this process's, and the PostgreSQL server's."""
    rows = [
        f"| System | Operation | Concurrency | {throughput_header} | p50 ms | p95 ms | client CPU µs | "
        "server CPU µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        figure = f"{r.throughput:,.0f}" if throughput_header == "ops/s" else f"{r.throughput:,.0f} {r.unit}/s"
        rows.append(
            f"| {r.system} | {r.operation} | {r.concurrency} | {figure} | {r.percentile(0.5):.3f} | "
            f"{r.percentile(0.95):.3f} | {r.client_cpu_us:,.0f} | {r.server_cpu_us:,.0f} |"
        )
    return rows


def write_section(name: str, lines: list[str]) -> None:
    """Put `lines` between the `<!-- name:start -->` and `<!-- name:end -->` markers of docs/benchmarks.md.

    Everything outside the markers is kept; a section not there yet is appended.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = "\n".join([start, *lines, end])
    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    if start in existing:
        head, _, rest = existing.partition(start)
        _, _, tail = rest.partition(end)
        existing = head + section + tail
    else:
        existing = existing.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(existing, encoding="utf-8")


async def seed_users(connection: asyncpg.Connection, users: list[uuid.UUID]) -> None:
    """Users written with COPY, as owners of seeded rows only: no data key, the e-mail's index a placeholder (the
    library never reads these profiles in the benchmarks)."""
    now = datetime.now(UTC)
    await connection.copy_records_to_table(
        "users",
        records=[
            (u, f"Piloto {i}", f"piloto{i}@bench.com.br", f"bench-{i}", "pilot", "[]", None, "{}", now, now, now)
            for i, u in enumerate(users)
        ],
        columns=[
            "user_id", "name", "email", "email_index", "role", "licenses", "experience_level", "preferences",
            "created_at", "updated_at", "last_active",
        ],
    )  # fmt: skip


def run_sliced(
    doc: str | None,
    measure: Callable[[int, int], Awaitable[list[str]]],
    *,
    section: str,
    intro: str,
    packages: Iterable[str],
    default_ops: int,
    ops_help: str,
) -> None:
    """The command line of a benchmark whose setups take turns in slices (`--ops`, `--rounds`, `--no-write`): run
    `measure(ops, rounds)`, print its table, and write it with `intro` between the `section` markers of
    docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=default_ops, help=ops_help)
    parser.add_argument("--rounds", type=int, default=3, help="slices the setups take turns in")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    lines = asyncio.run(measure(arguments.ops, arguments.rounds))
    if not arguments.no_write:
        write_section(section, [intro, "", *lines, "", environment(packages)])
        print(f"written to {RESULTS}")
