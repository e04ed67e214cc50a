"""The metrics of docs/metrics.md against values computed by hand, on both backends: a small month of three users,
two agents and nine exchanges, in Brasília time, read from the messages, then from the rollups, then from both.

The data (local time, America/Sao_Paulo, UTC−3):

    week of 2 Nov   ana (pilot) signs up Mon 2, writes Mon 2        briefing answers in 1.0 s, 100 tokens
                    bia (instructor) signs up Tue 3, writes Tue 3   metar answers in 2.0 s, 50 tokens
    week of 9 Nov   caio (mechanic) signs up Tue 10 and writes      briefing 0.5 s, 80 tokens
                    ana writes Tue 10 at 23:30 (Wed 11 in UTC)      briefing 3.0 s, 120 tokens
                    caio writes Wed 11 at 00:30 (no answer)
                    bia writes Wed 11                               metar 4.0 s, 60 tokens
    week of 16 Nov  caio writes Tue 17, a new conversation          briefing 2.0 s, 90 tokens
                    ana writes Wed 18                               briefing 1.5 s, 110 tokens
    week of 30 Nov  ana writes Mon 30, a new conversation           metar 10.0 s, 40 tokens

Every user input is 10 tokens. The report runs on Mon 7 Dec.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select

from stratus_db import (
    AnalyticsManager,
    ConversationManager,
    Database,
    MemoryManager,
    MetricsReport,
    Principal,
    PrincipalKind,
    UserManager,
)
from stratus_db.analytics import sources
from stratus_db.analytics.calendar import LocalCalendar
from stratus_db.errors import ConflictError, PermissionDeniedError, ValidationError
from stratus_db.kit.histogram import GROWTH
from stratus_db.models import ActivityDailyRow, ServiceSampleRow
from tests.fixtures.clock import ManualClock
from tests.fixtures.databases import handles_on

BRASILIA = ZoneInfo("America/Sao_Paulo")
ADMIN = Principal(kind=PrincipalKind.admin, id="ops")
AUDITOR = Principal(kind=PrincipalKind.auditor, id="dpo")
SINCE, UNTIL = date(2026, 11, 2), date(2026, 11, 30)
TOLERANCE = GROWTH**0.5 - 1
"""A histogram percentile's largest relative error (kit/histogram.py)."""


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BRASILIA).astimezone(UTC)


class Month:
    def __init__(self, db: Database, clock: ManualClock) -> None:
        self.db, self.clock = db, clock
        self.users: dict[str, uuid.UUID] = {}
        self.conversations: dict[str, uuid.UUID] = {}

    async def sign_up(self, name: str, role: str, when: datetime) -> None:
        self.clock.now = when
        user = await UserManager(self.db).create_user(name, f"{name}@aeroclube.com.br", role, principal=ADMIN)
        self.users[name] = user.user_id

    async def exchange(
        self,
        name: str,
        conversation: str,
        when: datetime,
        agent: str | None,
        seconds: float = 0.0,
        tokens: int = 0,
    ) -> None:
        user_id = self.users[name]
        as_user = Principal.for_user(user_id)
        conversations = ConversationManager(self.db)
        self.clock.now = when
        if conversation not in self.conversations:
            started = await conversations.create_conversation(user_id, conversation, principal=as_user)
            self.conversations[conversation] = started.conversation_id
        conversation_id = self.conversations[conversation]
        await conversations.add_message(
            conversation_id, user_id, "Bom dia", tokens_used=10, principal=as_user
        )
        if agent is not None:
            self.clock.now = when + timedelta(minutes=1)
            await conversations.add_message(
                conversation_id,
                user_id,
                "Resposta",
                "agent_response",
                agent,
                tokens_used=tokens,
                response_time=seconds,
                principal=Principal.agent(agent, acting_for=user_id),
            )


@pytest.fixture
async def month(db: Database) -> AsyncIterator[Month]:
    async for open_handle in handles_on(db):
        clock = ManualClock()
        handle: Database = open_handle(clock=clock, STRATUS_METRICS_FLUSH_S=0)
        seeded = Month(handle, clock)
        await seeded.sign_up("ana", "pilot", local(2, 9))
        await seeded.sign_up("bia", "instructor", local(3, 8))
        await seeded.exchange("ana", "A", local(2, 10), "briefing", 1.0, 100)
        await seeded.exchange("bia", "B", local(3, 9), "metar", 2.0, 50)
        await seeded.sign_up("caio", "mechanic", local(10, 7))
        await seeded.exchange("caio", "C", local(10, 8), "briefing", 0.5, 80)
        await seeded.exchange("ana", "A", local(10, 23, 30), "briefing", 3.0, 120)
        await seeded.exchange("caio", "C", local(11, 0, 30), None)
        await seeded.exchange("bia", "B", local(11, 14), "metar", 4.0, 60)
        await seeded.exchange("caio", "C2", local(17, 15), "briefing", 2.0, 90)
        await seeded.exchange("ana", "A", local(18, 11), "briefing", 1.5, 110)
        await seeded.exchange("ana", "D", local(30, 16), "metar", 10.0, 40)
        memories = MemoryManager(handle)
        ana, caio = Principal.for_user(seeded.users["ana"]), Principal.for_user(seeded.users["caio"])
        await memories.store_memory(seeded.users["ana"], "base", "SBKP", "long_term", principal=ana)
        await memories.store_memory(
            seeded.users["ana"], "nota", "temp", ttl=60, principal=ana
        )  # expired by then
        await memories.store_memory(seeded.users["caio"], "aviao", "C172", "critical", principal=caio)
        clock.now = datetime(2026, 12, 7, 12, tzinfo=BRASILIA).astimezone(UTC)
        yield seeded


def near(value: float | None, exact: float) -> bool:
    return value is not None and abs(value - exact) <= exact * TOLERANCE


def check_the_month(report: MetricsReport) -> None:
    """Every figure, as computed by hand from the module docstring's data."""
    dau = {day.day: day.active_users for day in report.days}
    assert {day: users for day, users in dau.items() if users} == {
        date(2026, 11, 2): 1,
        date(2026, 11, 3): 1,
        date(2026, 11, 10): 2,  # caio, and ana at 23:30 (already the 11th in UTC)
        date(2026, 11, 11): 2,  # bia, and caio at 00:30
        date(2026, 11, 17): 1,
        date(2026, 11, 18): 1,
        date(2026, 11, 30): 1,
    }
    assert len(report.days) == 29
    assert report.agents == ["briefing", "metar"]
    assert report.daily_active_users == 1
    assert report.weekly_active_users == 1
    assert report.monthly_active_users == 3
    assert report.stickiness == pytest.approx(9 / 30 / 3)  # nine user-days in the 30 days to the 30th
    assert report.active_users == 3

    assert report.conversations == 5
    assert {day.day: day.conversations for day in report.days if day.conversations} == {
        date(2026, 11, 2): 1,
        date(2026, 11, 3): 1,
        date(2026, 11, 10): 1,
        date(2026, 11, 17): 1,
        date(2026, 11, 30): 1,
    }
    assert report.messages == 17
    assert report.tokens == 9 * 10 + 100 + 50 + 120 + 80 + 60 + 90 + 110 + 40
    assert report.per_type == {"user_input": 9, "agent_response": 8, "system": 0}
    assert {day.day: day.messages for day in report.days if day.messages}[date(2026, 11, 10)] == 4
    assert [(role.role, role.conversations, role.messages) for role in report.per_role] == [
        ("instructor", 1, 4),
        ("mechanic", 2, 5),
        ("pilot", 2, 8),
    ]
    assert report.messages_per_conversation_mean == pytest.approx(17 / 5)
    assert report.messages_per_conversation_median == 3

    briefing, metar = report.per_agent
    assert (briefing.agent_name, briefing.responses, briefing.tokens) == ("briefing", 5, 500)
    assert briefing.tokens_per_response == 100
    assert briefing.conversations == 5  # A on the 2nd; A and C on the 10th; C2 on the 17th; A on the 18th
    assert briefing.response_time_mean == pytest.approx(8.0 / 5)
    assert near(briefing.response_time_p50, 1.5)  # 0.5 1.0 [1.5] 2.0 3.0
    assert near(briefing.response_time_p95, 3.0)
    assert briefing.per_day == {
        date(2026, 11, 2): 1,
        date(2026, 11, 10): 2,
        date(2026, 11, 17): 1,
        date(2026, 11, 18): 1,
    }
    assert (metar.agent_name, metar.responses, metar.tokens, metar.conversations) == ("metar", 3, 150, 3)
    assert metar.response_time_mean == pytest.approx(16.0 / 3)
    assert near(metar.response_time_p50, 4.0)  # 2.0 [4.0] 10.0
    assert near(metar.response_time_p95, 10.0)

    [november] = report.engagement
    assert (november.month, november.active_users) == (date(2026, 11, 1), 3)
    assert november.active_days_per_user == 3.0  # ana 4 days, bia 2, caio 3
    assert report.conversations_per_active_user == pytest.approx(5 / 3)

    cohorts = {cohort.week: cohort for cohort in report.cohorts}
    assert list(cohorts) == [date(2026, 11, d) for d in (2, 9, 16, 23, 30)]
    assert cohorts[date(2026, 11, 2)].users == 2
    assert cohorts[date(2026, 11, 2)].retention == [1.0, 0.5, 0.0, 0.5, None, None, None, None]
    assert cohorts[date(2026, 11, 9)].users == 1
    assert cohorts[date(2026, 11, 9)].retention == [1.0, 0.0, 0.0, None, None, None, None, None]
    assert cohorts[date(2026, 11, 16)].users == 0
    assert cohorts[date(2026, 11, 16)].retention == [None] * 8

    assert report.memory.memories == 2
    assert report.memory.users == 3
    assert report.memory.memories_per_user == pytest.approx(2 / 3)
    assert report.memory.per_type == {"critical": 1, "long_term": 1}


async def test_the_report_from_the_messages(month: Month) -> None:
    report = await AnalyticsManager(month.db).report(SINCE, UNTIL, principal=AUDITOR)
    assert report.rolled_through is None
    assert report.time_zone == "America/Sao_Paulo"
    check_the_month(report)


async def test_the_rollups_give_the_same_report(month: Month) -> None:
    analytics = AnalyticsManager(month.db)
    partly = await analytics.rollup(through=date(2026, 11, 10), principal=ADMIN)
    assert partly.rolled_through == date(2026, 11, 10)
    assert partly.days_rolled == 9  # from the first message's day, the 2nd
    halfway = await analytics.report(SINCE, UNTIL, principal=ADMIN)
    assert halfway.rolled_through == date(2026, 11, 10)
    check_the_month(halfway)

    rest = await analytics.rollup(principal=ADMIN)  # through yesterday, the 6th of December
    assert (rest.rolled_through, rest.days_rolled, rest.rebuilt) == (date(2026, 12, 6), 26, False)
    assert (await analytics.rollup(principal=ADMIN)).days_rolled == 0, "nothing new: idempotent"
    rolled = await analytics.report(SINCE, UNTIL, principal=ADMIN)
    assert rolled.rolled_through == date(2026, 12, 6)
    check_the_month(rolled)
    async with month.db.transaction() as conn:
        ana_rows = await conn.execute(
            select(ActivityDailyRow.day, ActivityDailyRow.message_type, ActivityDailyRow.messages)
            .where(ActivityDailyRow.user_id == month.users["ana"], ActivityDailyRow.agent_name == "")
            .order_by(ActivityDailyRow.day)
        )
        assert [tuple(row) for row in ana_rows] == [
            (date(2026, 11, d), "user_input", 1) for d in (2, 10, 18, 30)
        ]


async def test_another_time_zone_counts_other_days_and_rebuilds_the_rollups(
    month: Month, db: Database
) -> None:
    await AnalyticsManager(month.db).rollup(principal=ADMIN)
    async for open_handle in handles_on(db):
        in_utc = AnalyticsManager(open_handle(clock=month.clock, STRATUS_METRICS_TIME_ZONE="UTC"))
        from_messages = await in_utc.report(SINCE, UNTIL, principal=ADMIN)
        assert from_messages.rolled_through is None, "the rollups are Brasília's days"
        dau = {day.day: day.active_users for day in from_messages.days}
        assert (dau[date(2026, 11, 10)], dau[date(2026, 11, 11)]) == (1, 3)  # ana's 23:30 is the 11th in UTC
        rebuilt = await in_utc.rollup(principal=ADMIN)
        assert rebuilt.rebuilt is True
        assert rebuilt.time_zone == "UTC"
        assert (await in_utc.report(SINCE, UNTIL, principal=ADMIN)).days == from_messages.days


async def test_an_agent_filter_counts_that_agents_users_and_answers(month: Month) -> None:
    report = await AnalyticsManager(month.db).report(SINCE, UNTIL, agent="metar", principal=ADMIN)
    assert report.agent == "metar"
    assert report.active_users == 2  # bia on the 3rd and the 11th, ana on the 30th
    assert {day.day: day.active_users for day in report.days if day.active_users} == {
        date(2026, 11, 3): 1,
        date(2026, 11, 11): 1,
        date(2026, 11, 30): 1,
    }
    assert [agent.agent_name for agent in report.per_agent] == ["metar"]
    assert report.messages == 3
    assert report.conversations == 3
    assert report.conversations_per_active_user == 1.5
    assert report.agents == ["briefing", "metar"], "the dashboard's choice stays whole"


async def test_quality_comes_from_every_processs_samples(month: Month) -> None:
    inside, outside = local(20, 10), local(1, 2)  # the 1st is before the range
    rows = [
        ("operation", "user.get", inside, "a", 100, 2, 5),
        ("operation", "user.get", inside, "b", 50, 1, 0),
        ("operation", "user.get", outside, "a", 999, 999, 0),
        ("operation", "memory.store", inside, "a", 10, 0, 1),
        ("probe", "/ready", inside, "a", 60, 3, 0),
        ("http", "/v1/users/{user_id}", inside, "a", 200, 4, 0),
        ("http", "/v1/users", inside, "b", 100, 0, 0),
        ("cache", "memory", inside, "a", 40, 10, 0),
    ]
    async with month.db.transaction() as conn:
        await conn.execute(
            insert(ServiceSampleRow),
            [
                {"kind": kind, "name": name, "minute": minute, "instance": instance}
                | {"total": total, "failed": failed, "refused": refused}
                for kind, name, minute, instance, total, failed, refused in rows
            ],
        )
    report = await AnalyticsManager(month.db).report(SINCE, UNTIL, principal=ADMIN)
    assert [(op.operation, op.calls, op.failed, op.refused) for op in report.operations] == [
        ("memory.store", 10, 0, 1),
        ("user.get", 150, 3, 5),
    ]
    assert report.operations[1].error_rate == pytest.approx(3 / 150)
    assert report.availability.probe_availability == pytest.approx(57 / 60)
    assert report.availability.request_availability == pytest.approx(296 / 300)
    assert report.memory.cache_hit_ratio == pytest.approx(30 / 40)


async def test_only_administrators_auditors_and_trusted_code_read_the_figures(month: Month) -> None:
    analytics = AnalyticsManager(month.db)
    with pytest.raises(PermissionDeniedError):
        await analytics.report(SINCE, UNTIL, principal=Principal.for_user(month.users["ana"]))
    with pytest.raises(PermissionDeniedError):
        await analytics.rollup(principal=AUDITOR)
    await analytics.report(SINCE, UNTIL, principal=Principal.system("dashboard"))


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"since": date(2026, 11, 30), "until": date(2026, 11, 1)}, "until must be on or after since"),
        ({"since": date(2025, 1, 1), "until": date(2026, 11, 1)}, "at most 366 days"),
        ({"since": "2026-11-01", "until": date(2026, 11, 30)}, "since"),
        (
            {"since": datetime(2026, 11, 1, tzinfo=UTC), "until": date(2026, 11, 30)},
            "since: Input should be a valid date",
        ),
        ({"since": SINCE, "until": UNTIL, "agent": ""}, "agent"),
        ({"since": SINCE, "until": UNTIL, "agent": "x" * 101}, "agent"),
    ],
)
async def test_a_bad_range_is_refused(month: Month, arguments: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        await AnalyticsManager(month.db).report(principal=ADMIN, **arguments)  # type: ignore[arg-type]


async def test_a_day_not_over_is_not_rolled_up(month: Month) -> None:
    analytics = AnalyticsManager(month.db)
    with pytest.raises(ValidationError, match="a day that is over"):
        await analytics.rollup(through=date(2026, 12, 7), principal=ADMIN)
    async with month.db.transaction() as conn:
        assert (await conn.execute(select(func.count()).select_from(ActivityDailyRow))).scalar_one() == 0


async def test_erasing_a_user_removes_their_rolled_up_days(month: Month) -> None:
    from stratus_db import PrivacyManager

    await AnalyticsManager(month.db).rollup(principal=ADMIN)
    await PrivacyManager(month.db).erase_user(month.users["bia"], "the test", principal=ADMIN)
    report = await AnalyticsManager(month.db).report(SINCE, UNTIL, principal=ADMIN)
    assert report.active_users == 2
    assert report.memory.users == 2
    async with month.db.transaction() as conn:
        left = (
            await conn.execute(
                select(func.count())
                .select_from(ActivityDailyRow)
                .where(ActivityDailyRow.user_id == month.users["bia"])
            )
        ).scalar_one()
    assert left == 0


@pytest.mark.parametrize(
    ("since", "until"), [(date.min, date.min), (date.max, date.max), (date(1969, 12, 31), UNTIL)]
)
async def test_days_at_the_calendars_ends_are_refused_not_a_failure(
    month: Month, since: date, until: date
) -> None:
    with pytest.raises(ValidationError, match=r"since|until"):
        await AnalyticsManager(month.db).report(since, until, principal=ADMIN)


async def test_old_history_imported_after_a_rollup_is_counted_again(month: Month) -> None:
    analytics = AnalyticsManager(month.db)
    await analytics.rollup(principal=ADMIN)
    bia = month.users["bia"]
    await ConversationManager(month.db).import_messages(
        month.conversations["B"],
        bia,
        [{"content": "Mensagem antiga", "tokens_used": 10, "created_at": local(20, 9)}],
        principal=Principal.for_user(bia),
    )
    before_rollup = await analytics.report(SINCE, UNTIL, principal=ADMIN)
    assert before_rollup.rolled_through == date(2026, 11, 19), "the rollups end before the imported day now"
    assert {day.day: day.active_users for day in before_rollup.days}[date(2026, 11, 20)] == 1
    assert before_rollup.messages == 18
    again = await analytics.rollup(principal=ADMIN)
    assert (again.days_rolled, again.rolled_through) == (17, date(2026, 12, 6))
    after_rollup = await analytics.report(SINCE, UNTIL, principal=ADMIN)
    assert after_rollup.days == before_rollup.days


async def test_the_rollup_job_deletes_samples_past_their_retention(month: Month) -> None:
    now = month.clock.now
    rows = [(now - timedelta(days=91), "old"), (now - timedelta(days=89), "kept")]
    async with month.db.transaction() as conn:
        await conn.execute(
            insert(ServiceSampleRow),
            [
                {"minute": minute, "instance": instance, "kind": "probe", "name": "/ready"}
                | {"total": 1, "failed": 0, "refused": 0}
                for minute, instance in rows
            ],
        )
    outcome = await AnalyticsManager(month.db).rollup(principal=ADMIN)
    assert outcome.samples_purged == 1
    async with month.db.transaction() as conn:
        left = (await conn.execute(select(ServiceSampleRow.instance))).scalars().all()
    assert left == ["kept"]


async def test_a_rollup_in_another_time_zone_meanwhile_is_refused(month: Month) -> None:
    """Two processes with different STRATUS_METRICS_TIME_ZONE (a deployment half done) must not mix their days."""
    await AnalyticsManager(month.db).rollup(through=date(2026, 11, 10), principal=ADMIN)
    async with month.db.transaction() as conn:
        with pytest.raises(ConflictError, match="STRATUS_METRICS_TIME_ZONE"):
            await sources.roll_up_days(
                conn, LocalCalendar("UTC"), date(2026, 11, 11), date(2026, 11, 12), month.clock.now
            )
