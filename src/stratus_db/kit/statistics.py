"""Fresh planner statistics after a bulk change (PostgreSQL).

The planner estimates from the statistics ANALYZE gathers. Autovacuum runs it as tables change, but a server may run
without it (this project's test and benchmark server does), and a table that has changed by a large share since its
last ANALYZE is then planned for the table it was. So the calls that change many rows at once analyze the table they
changed, once their change has committed, when it is at least ANALYZE_MIN_ROWS rows and ANALYZE_SHARE of the rows
the table held at its last ANALYZE: autovacuum's own rule (`autovacuum_analyze_scale_factor`), with a floor of its
own so that a small table is not analyzed after every call — statistics of a nearly empty table would tell the
planner that reading it whole is cheapest, which a generic plan keeps after the table has grown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import StratusError

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

ANALYZE_MIN_ROWS = 1_000
"""Fewer rows changed by one call never analyze."""
ANALYZE_SHARE = 0.1
"""Nor does a change smaller than this share of the table's rows at its last ANALYZE (pg_class.reltuples)."""


async def analyze_after(
    db: StratusPostgreSQLIntegration, table: str, changed: int, *, tx: AsyncConnection | None
) -> None:
    """ANALYZE `table`, which a call has just changed `changed` rows of, when that is enough to matter (see above).

    Inside a caller's transaction (`tx`) nothing is done: the rows are not committed yet, and the caller may still
    roll them back. The ANALYZE runs in a transaction of its own and skips a table another ANALYZE or VACUUM holds
    (it is gathering the same statistics). Never raises a database error: the call's change is committed, and stale
    statistics only make plans worse; such a failure is logged.
    """
    if db.backend != "postgresql" or tx is not None or changed < ANALYZE_MIN_ROWS:
        return
    try:
        async with db.transaction() as conn:
            known = await conn.scalar(
                text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)"), {"table": table}
            )
            if changed >= ANALYZE_SHARE * max(known, 0.0):  # -1: never analyzed
                name = conn.dialect.identifier_preparer.quote(table)
                await conn.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {name}")
    except StratusError as exc:
        db.log.warning(
            f"ANALYZE {table} after a bulk change failed: its statistics stay as they were",
            table=table,
            changed=changed,
            error=type(exc).__name__,
        )
