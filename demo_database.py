"""Complete demonstration of the Stratus.IA database layer (`make demo`, or `python demo_database.py`).

Runs on the embedded SQLite file (./stratus.db, or $STRATUS_DATA_DIR/stratus.db) unless DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio

from stratus_db import StratusPostgreSQLIntegration
from stratus_db.demo import run_demo
from stratus_db.logging import configure_json


async def main() -> None:
    configure_json("ERROR")  # defects only, as JSON lines on standard error: the refusal it shows is expected
    async with StratusPostgreSQLIntegration() as db:
        await run_demo(db)


if __name__ == "__main__":
    asyncio.run(main())
