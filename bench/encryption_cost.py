"""What field encryption costs create_user and get_user: the library as it is, against the same library with the
encryption taken out (each value stored as it is, no data key, the e-mail's index the address itself), in one run.

    make bench-encryption   (or: .venv/bin/python bench/encryption_cost.py [--ops 4000] [--rounds 3] [--no-write])

One throw-away PostgreSQL database and one SQLite file, two handles on each taking turns in slices: `encrypted` (the
default) and `plain` (security/personal.py's PersonalData replaced by a pass-through on that handle only). create_user
writes a user (name, e-mail, CANAC, birth date: every encrypted field) and its audit row; get_user reads one of the
users back (a data key unwrapped once per user per handle, then cached). Concurrency 16 on PostgreSQL, 1 on SQLite
(one writer). Writes the table into docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Spent, _timed, run_sliced
from stratus_db import Database, UserManager
from stratus_db.security.crypto import DataKey
from stratus_db.security.keystore import load_encryption
from stratus_db.security.personal import PersonalData
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database

SETUPS = ("encrypted", "plain")
_PLAIN_KEY = DataKey(uuid.UUID(int=0), "plain", bytes(32))


class _PlainIndex:
    """The blind index's interface, answering the normalised value itself."""

    def email(self, address: str) -> str:
        return address.strip().lower()

    def canac(self, code: str) -> str:
        return code.strip()


class PlainPersonalData(PersonalData):
    """Personal data as it was before encryption: values stored as they are (dates as ISO text), no data key."""

    def __init__(self, db: Database) -> None:
        super().__init__(load_encryption(db.settings))
        self.blind_index = _PlainIndex()  # type: ignore[assignment]

    def new_key(self, user_id: uuid.UUID) -> tuple[DataKey, str]:
        return _PLAIN_KEY, "plain"

    def unwrap(self, user_id: uuid.UUID, wrapped: str) -> DataKey:
        return _PLAIN_KEY

    async def key_of(self, conn: Any, user_id: uuid.UUID) -> DataKey | None:
        return _PLAIN_KEY

    def seal(self, value: Any, table: str, column: str, row_id: uuid.UUID, data_key: DataKey) -> str | None:
        return value.isoformat() if isinstance(value, date) else value  # type: ignore[no-any-return]

    def open(self, token: str | None, table: str, column: str, row_id: uuid.UUID, data_key: DataKey) -> Any:
        return token

    def seal_audit(
        self, fields: tuple[str, ...], side: str, values: Any, audit_id: uuid.UUID, data_key: DataKey
    ) -> Any:
        return values


def plain_handle(db: Database) -> Database:
    db._extensions["security.personal_data"] = PlainPersonalData(db)
    return db


async def measure_backend(url: str, ops: int, rounds: int, concurrency: int) -> dict[str, dict[str, Spent]]:
    base = settings_for(url).model_copy(
        update={"STRATUS_POOL_SIZE": concurrency, "STRATUS_POOL_MAX_OVERFLOW": 0}
    )
    handles = {"encrypted": Database(base), "plain": plain_handle(Database(base))}
    numbers = itertools.count()
    created: dict[str, list[uuid.UUID]] = {setup: [] for setup in SETUPS}
    try:

        def operations(setup: str) -> Mapping[str, Callable[[int], Awaitable[Any]]]:
            users = UserManager(handles[setup])

            async def create(_i: int) -> None:
                n = next(numbers)
                user = await users.create_user(
                    f"Piloto Número {n} da Silva",
                    f"piloto.{n}@aeroclube-bench.com.br",
                    "pilot",
                    birth_date=date(1980 + n % 30, 1 + n % 12, 1 + n % 28),
                    canac=f"{n % 1_000_000:06d}",
                )
                created[setup].append(user.user_id)

            async def get(i: int) -> None:
                mine = created[setup]
                assert await users.get_user(mine[i % len(mine)]) is not None

            return {"create_user": create, "get_user": get}

        spent = {name: {setup: Spent() for setup in SETUPS} for name in ("create_user", "get_user")}
        for name in spent:
            order = list(SETUPS)
            for setup in SETUPS:  # warm-up: pools, prepared statements, caches
                await _timed(operations(setup)[name], range(200), concurrency, [])
            for round_number in range(rounds):
                start, stop = ops * round_number // rounds, ops * (round_number + 1) // rounds
                order = order[1:] + order[:1]  # each setup goes first in turn
                for setup in order:
                    spent[name][setup] += await _timed(
                        operations(setup)[name], range(start, stop), concurrency, []
                    )
    finally:
        for handle in handles.values():
            await handle.close()
    return spent


async def measure(ops: int, rounds: int) -> list[str]:
    lines = [
        "| Backend, operation | encrypted | plain | client CPU, encrypted ÷ plain | wall, encrypted ÷ plain |",
        "|---|---:|---:|---:|---:|",
    ]
    async with throwaway_postgres_database() as url:
        results = {"PostgreSQL, concurrency 16": await measure_backend(url, ops, rounds, 16)}
    with tempfile.TemporaryDirectory() as directory:
        url = sqlite_url(Path(directory) / "bench.db")
        setup_db = Database(settings_for(url))
        await setup_db.migrate()
        await setup_db.close()
        results["SQLite, concurrency 1"] = await measure_backend(url, ops // 4, rounds, 1)
    for backend, spent in results.items():
        count = ops if backend.startswith("PostgreSQL") else ops // 4
        for name, by_setup in spent.items():
            encrypted, plain = by_setup["encrypted"], by_setup["plain"]
            cells = [
                f"{count / s.wall:,.0f}/s, client {s.client_cpu * 1e6 / count:.0f} µs"
                for s in (encrypted, plain)
            ]
            line = (
                f"| {backend}, `{name}` | {cells[0]} | {cells[1]} | {encrypted.client_cpu / plain.client_cpu:.2f} "
                f"| {encrypted.wall / plain.wall:.2f} |"
            )
            print(line, flush=True)
            lines.append(line)
    return lines


def main() -> None:
    run_sliced(
        __doc__,
        measure,
        section="encryption",
        intro=(
            "What field encryption costs `create_user` and `get_user`: the library against itself with the "
            "encryption taken out (`plain`: values stored as they are), interleaved in one run, "
            "`make bench-encryption`:"
        ),
        packages=("sqlalchemy", "asyncpg", "cryptography"),
        default_ops=4000,
        ops_help="calls per setup and operation on PostgreSQL",
    )


if __name__ == "__main__":
    main()
