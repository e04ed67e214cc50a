"""The dashboard as a person sees it: the system's headless Chromium (scripts/ensure_chromium.sh) driven by Playwright
against `stratus-db serve`, on a database holding a month of the aviation corpus, on each backend. Every chart, figure
and table on the page must show what AnalyticsManager computes for the same range, with and without an agent filter,
on a laptop's screen and a phone's; the page loads nothing from anywhere else. Screenshots go to
build/test-artifacts/ (or STRATUS_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from stratus_db import AnalyticsManager, Database, MetricsReport, Principal, PrincipalKind
from stratus_db.analytics.render import number, percent
from stratus_db.api import issue_token
from tests.fixtures.clock import ManualClock
from tests.fixtures.corpus_month import seed_corpus_month
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database
from tests.fixtures.server import serving

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STRATUS_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
SINCE, UNTIL = date(2026, 11, 1), date(2026, 11, 30)
PHONE_WIDTH = 390
AUDITOR = Principal(kind=PrincipalKind.auditor, id="dpo")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise AssertionError("no Chromium on the PATH: `make browser` (scripts/ensure_chromium.sh) installs it")


@pytest.fixture(params=["sqlite", "postgresql"])
async def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database holding the corpus's month."""

    async def seed(url: str) -> None:
        db = Database(settings_for(url), clock=ManualClock())
        await db.migrate()
        await seed_corpus_month(db, db.clock)  # type: ignore[arg-type]
        await db.close()

    if request.param == "postgresql":
        async with throwaway_postgres_database() as url:
            await seed(url)
            yield url
    else:
        url = sqlite_url(tmp_path / "month.db")
        await seed(url)
        yield url


async def values(page: Page, selector: str) -> list[list[Any]]:
    """Each matching element's data-key and data-value, as the page holds them."""
    found: list[list[Any]] = await page.eval_on_selector_all(
        selector, "elements => elements.map(e => [e.dataset.key, Number(e.dataset.value)])"
    )
    return found


async def check_page_against(page: Page, report: MetricsReport) -> None:
    """Every chart, figure and table of the page against the report the module computed."""
    assert await values(page, '[data-chart="dau"] circle') == [
        [day.day.isoformat(), day.active_users] for day in report.days
    ]
    assert await values(page, '[data-chart="messages"] rect') == [
        [day.day.isoformat(), day.messages] for day in report.days
    ]
    assert await values(page, '[data-chart="conversations"] rect') == [
        [day.day.isoformat(), day.conversations] for day in report.days
    ]
    assert await values(page, '[data-chart="responses"] rect') == [
        [agent.agent_name, agent.responses] for agent in report.per_agent
    ]
    assert await values(page, '[data-chart="latency"] rect') == [
        [agent.agent_name, agent.response_time_p95] for agent in report.per_agent
    ]
    shown = {
        figure: await page.inner_text(f'[data-figure="{figure}"]')
        for figure in (
            "daily_active_users",
            "weekly_active_users",
            "monthly_active_users",
            "stickiness",
            "active_users",
            "conversations",
            "messages",
            "conversations_per_active_user",
            "memories_per_user",
        )
    }
    assert shown == {
        "daily_active_users": number(report.daily_active_users),
        "weekly_active_users": number(report.weekly_active_users),
        "monthly_active_users": number(report.monthly_active_users),
        "stickiness": percent(report.stickiness),
        "active_users": number(report.active_users),
        "conversations": number(report.conversations),
        "messages": number(report.messages),
        "conversations_per_active_user": number(report.conversations_per_active_user),
        "memories_per_user": number(report.memory.memories_per_user),
    }
    agents = await page.eval_on_selector_all(
        '[data-table="per_agent"] tbody tr', "rows => rows.map(r => [...r.cells].map(c => c.innerText))"
    )
    assert agents == [
        [
            agent.agent_name,
            number(agent.responses),
            number(agent.tokens),
            number(agent.tokens_per_response),
            number(agent.response_time_mean),
            number(agent.response_time_p50),
            number(agent.response_time_p95),
        ]
        for agent in report.per_agent
    ]
    cohorts = await page.eval_on_selector_all(
        '[data-table="cohorts"] tbody tr',
        "rows => rows.map(r => [r.dataset.key, ...[...r.querySelectorAll('td.cell')].map(c => c.dataset.value)])",
    )
    assert cohorts == [
        [cohort.week.isoformat(), *("" if share is None else str(share) for share in cohort.retention)]
        for cohort in report.cohorts
    ]
    roles = await page.eval_on_selector_all(
        '[data-table="per_role"] tbody tr', "rows => rows.map(r => r.dataset.key)"
    )
    assert roles == [role.role for role in report.per_role]


async def test_the_dashboard_shows_what_the_metrics_module_computes(seeded: str, tmp_path: Path) -> None:
    db = Database(settings_for(seeded))
    analytics = AnalyticsManager(db)
    whole = await analytics.report(SINCE, UNTIL, principal=AUDITOR)
    assert whole.messages == 309, "the corpus, every message of it in November"
    weather = await analytics.report(SINCE, UNTIL, agent="meteorologia", principal=AUDITOR)
    token = issue_token(db.settings, AUDITOR, timedelta(hours=1))
    backend = db.backend
    await db.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before the server starts)

    with serving(seeded, tmp_path) as base:
        async with async_playwright() as playwright:
            browser: Browser = await playwright.chromium.launch(
                executable_path=chromium(), args=["--no-sandbox"]
            )
            try:
                laptop = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await laptop.new_page()
                requested: list[str] = []
                page.on("request", lambda sent: requested.append(sent.url))

                await page.goto(f"{base}/dashboard")
                assert page.url == f"{base}/dashboard/login", "no token yet: the sign-in form"
                await page.fill("#token", token)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{base}/dashboard")
                await page.fill('input[name="since"]', SINCE.isoformat())
                await page.fill('input[name="until"]', UNTIL.isoformat())
                await page.click("form[action='/dashboard'] button[type=submit]")
                await page.wait_for_url(f"{base}/dashboard?since={SINCE}&until={UNTIL}&agent=")
                await check_page_against(page, whole)
                await page.screenshot(path=ARTIFACTS / f"dashboard-laptop-{backend}.png", full_page=True)

                await page.select_option('select[name="agent"]', "meteorologia")
                await page.click("form[action='/dashboard'] button[type=submit]")
                await page.wait_for_url(f"{base}/dashboard?since={SINCE}&until={UNTIL}&agent=meteorologia")
                assert await page.inner_text('[data-figure="agent"]') == "meteorologia"
                await check_page_against(page, weather)
                assert all(sent.startswith(base) for sent in requested), "nothing from the internet"

                phone = await browser.new_context(
                    viewport={"width": PHONE_WIDTH, "height": 844},
                    is_mobile=True,
                    extra_http_headers={"Authorization": f"Bearer {token}"},
                )
                small = await phone.new_page()
                await small.goto(f"{base}/dashboard?since={SINCE}&until={UNTIL}")
                await check_page_against(small, whole)
                # A phone widens its layout to fit content that overflows: the page must stay the screen's width.
                width = await small.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE_WIDTH, "the page fits a phone (wide tables scroll inside their box)"
                await small.screenshot(path=ARTIFACTS / f"dashboard-phone-{backend}.png", full_page=True)
            finally:
                await browser.close()
