"""AnalyticsManager: the report of docs/metrics.md over a range of local days, and the job that rolls up complete
days."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Annotated, Final

from pydantic import Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.analytics import report, sources
from stratus_db.analytics.calendar import LocalCalendar
from stratus_db.analytics.schemas import CurrentFigures, MetricsReport, RollupOutcome
from stratus_db.errors import ValidationError
from stratus_db.kit.sql import begin_snapshot
from stratus_db.kit.validation import InputModel, validate_input
from stratus_db.security.principal import Principal

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

MAX_REPORT_DAYS: Final = 366
EARLIEST_DAY: Final = date(1970, 1, 1)
LATEST_DAY: Final = date(2999, 12, 31)
"""The days a report or a rollup may name: the figures look up to 29 days before and nine weeks after them, which
the calendar's ends would not allow."""
Day = Annotated[date, Field(strict=True, ge=EARLIEST_DAY, le=LATEST_DAY)]
ROLLUP_CHUNK_DAYS: Final = 31
"""Days rolled up per transaction: a long rebuild keeps what it has done if it stops."""


class _Range(InputModel):
    since: Day
    until: Day
    agent: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.until < self.since:
            raise ValueError("until must be on or after since")
        if (self.until - self.since).days + 1 > MAX_REPORT_DAYS:
            raise ValueError(f"a report covers at most {MAX_REPORT_DAYS} days")
        return self


class _Through(InputModel):
    through: Day | None = None


class AnalyticsManager:
    """The metrics of docs/metrics.md. For administrators, auditors and trusted code: the figures are about every
    user. Every public method takes a keyword-only `principal`, as the other managers' do."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db

    @property
    def calendar(self) -> LocalCalendar:
        return LocalCalendar(self._db.settings.STRATUS_METRICS_TIME_ZONE)

    def today(self) -> date:
        """Today in the metrics' time zone."""
        return self.calendar.day_of(self._db.clock())

    async def report(
        self,
        since: date,
        until: date,
        *,
        agent: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> MetricsReport:
        """Every figure of docs/metrics.md over the local days `since` … `until` (both included, at most 366), in
        STRATUS_METRICS_TIME_ZONE; with `agent`, filtered to that agent's users and responses.

        Reads the rollups for the days they hold and counts the later days from the messages (the same figures
        either way, docs/metrics.md "Rollups").

        Raises:
            ValidationError: since/until are not dates, until is before since, the range is over 366 days, or the
                agent is not 1–100 characters.
            PermissionDeniedError: the principal is not an administrator, an auditor or trusted code.
        """
        async with self._db.operation("analytics.report", read_only=True, principal=principal) as op:
            asked = validate_input(_Range, {"since": since, "until": until, "agent": agent})
            await op.authorize(None, tx=tx)
            calendar, now = self.calendar, self._db.clock()

            async def work(conn: AsyncConnection) -> MetricsReport:
                if tx is None:
                    await begin_snapshot(conn)  # a dozen statements, one state: the days add up to the totals
                state = await sources.rollup_state(conn)
                through = state[1] if state is not None and state[0] == calendar.zone_name else None
                window = report.Window(
                    calendar=calendar,
                    since=asked.since,
                    until=asked.until,
                    today=calendar.day_of(now),
                    agent=asked.agent,
                    through=through,
                )
                return await report.build(conn, window, now)

            return await op.run(work, tx=tx)

    async def current(self, *, principal: Principal | None = None) -> CurrentFigures:
        """Today's active users (in STRATUS_METRICS_TIME_ZONE) and, over the last hour, the error rate of every
        operation and the availability, from every process's samples (flushed every STRATUS_METRICS_FLUSH_S): the
        gauges of /metrics.

        Raises:
            PermissionDeniedError: the principal is not an administrator, an auditor or trusted code.
        """
        async with self._db.operation("analytics.current", read_only=True, principal=principal) as op:
            await op.authorize(None)
            calendar, now = self.calendar, self._db.clock()
            return await op.run(lambda conn: report.current(conn, calendar, now))

    async def rollup(
        self, *, through: date | None = None, principal: Principal | None = None
    ) -> RollupOutcome:
        """Roll up every complete local day not rolled up yet, through `through` (default: yesterday), in chunks of
        31 days, one transaction each. Idempotent; the rollups of another time zone are dropped and made again. Also
        deletes the service samples older than STRATUS_METRICS_SAMPLE_RETENTION_DAYS. Run it once a day
        (docs/metrics.md, docs/deploy.md).

        Raises:
            ValidationError: `through` is not a date, or is today or later (a day is rolled up once it is over).
            PermissionDeniedError: the principal is not an administrator or trusted code.
            ConflictError: another process rolls up in another time zone (STRATUS_METRICS_TIME_ZONE differs).
        """
        async with self._db.operation("analytics.rollup", principal=principal) as op:
            asked = validate_input(_Through, {"through": through})
            calendar, now = self.calendar, self._db.clock()
            today = calendar.day_of(now)
            last = asked.through or today - timedelta(days=1)
            if last >= today:
                raise ValidationError(
                    f"through must be a day that is over (before {today.isoformat()} in "
                    f"{calendar.zone_name}), got {last.isoformat()}"
                )
            await op.authorize(None)

            async def plan(conn: AsyncConnection) -> tuple[date | None, bool]:
                """The first day to roll up, and whether another zone's rollups were dropped for it."""
                await sources.lock_rollups(conn)
                state = await sources.rollup_state(conn)
                rebuilt = state is not None and state[0] != calendar.zone_name
                if state is not None and not rebuilt:
                    return state[1] + timedelta(days=1), False
                if rebuilt:
                    await sources.drop_rollups(conn)
                return await sources.first_message_day(conn, calendar), rebuilt

            first, rebuilt = await op.run(plan)
            keep_days = self._db.settings.STRATUS_METRICS_SAMPLE_RETENTION_DAYS
            purged = (
                await op.run(lambda conn: sources.purge_samples(conn, now - timedelta(days=keep_days)))
                if keep_days
                else 0
            )
            rolled = 0
            while first is not None and first <= last:
                chunk_last = min(last, first + timedelta(days=ROLLUP_CHUNK_DAYS - 1))

                async def chunk(
                    conn: AsyncConnection, first: date = first, chunk_last: date = chunk_last
                ) -> None:
                    await sources.roll_up_days(conn, calendar, first, chunk_last, self._db.clock())

                await op.run(chunk)
                rolled += (chunk_last - first).days + 1
                first = chunk_last + timedelta(days=1)
            state = await op.run(sources.rollup_state)
            return RollupOutcome(
                time_zone=calendar.zone_name,
                rolled_through=None if state is None else state[1],
                days_rolled=rolled,
                rebuilt=rebuilt,
                samples_purged=purged,
            )
