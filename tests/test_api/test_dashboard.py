"""/dashboard and /v1/metrics/report through HTTP, on each backend: who may read them, the sign-in cookie, the page's
security headers, and hostile names escaped. (What the page shows is tests/test_api/test_dashboard_browser.py's.)"""

from __future__ import annotations

from datetime import date

import httpx

from stratus_db import AnalyticsManager, ConversationManager, Database, Principal, PrincipalKind
from tests.fixtures.http import ADMIN, assert_problem, bearer, new_user

AUDITOR = Principal(kind=PrincipalKind.auditor, id="dpo")


async def test_without_a_token_the_page_sends_to_the_sign_in_form(client: httpx.AsyncClient) -> None:
    answer = await client.get("/dashboard")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/dashboard/login"
    form = await client.get("/dashboard/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert form.headers["content-security-policy"].startswith("default-src 'none'")


async def test_signing_in_keeps_the_token_in_a_strict_cookie(client: httpx.AsyncClient, db: Database) -> None:
    token = bearer(db, AUDITOR)["Authorization"].removeprefix("Bearer ")
    signed_in = await client.post(
        "/dashboard/login",
        content=f"token={token}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/dashboard"
    cookie = signed_in.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/dashboard"):
        assert attribute in cookie
    assert "secure" not in cookie, "plain HTTP here; over HTTPS (or X-Forwarded-Proto: https) it is Secure"

    page = await client.get("/dashboard", headers={"cookie": f"stratus_dashboard={token}"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "<h1>Stratus.IA metrics</h1>" in page.text

    over_https = await client.post(
        "/dashboard/login",
        content=f"token={token}",
        headers={"content-type": "application/x-www-form-urlencoded", "x-forwarded-proto": "https"},
    )
    assert "secure" in over_https.headers["set-cookie"].lower()
    signed_out = await client.post("/dashboard/logout")
    assert signed_out.status_code == 303
    assert 'stratus_dashboard=""' in signed_out.headers["set-cookie"]


async def test_only_administrators_and_auditors_read_the_figures(
    client: httpx.AsyncClient, db: Database
) -> None:
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    assert_problem(await client.get("/dashboard", headers=as_ana), 403)
    assert_problem(await client.get("/v1/metrics/report", headers=as_ana), 403)
    refused = await client.post(
        "/dashboard/login",
        content=f"token={as_ana['Authorization'].removeprefix('Bearer ')}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 403
    assert "administrators and auditors" in refused.text
    forged = await client.post(
        "/dashboard/login", content="token=abc", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert forged.status_code == 401
    expired_cookie = await client.get("/dashboard", headers={"cookie": "stratus_dashboard=abc"})
    assert expired_cookie.status_code == 303, "a cookie that no longer holds: sign in again"
    for reader in (ADMIN, AUDITOR):
        assert (await client.get("/dashboard", headers=bearer(db, reader))).status_code == 200


async def test_the_report_as_json_is_the_modules(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    conversation = await ConversationManager(db).create_conversation(ana, principal=Principal.for_user(ana))
    await ConversationManager(db).add_message(
        conversation.conversation_id, ana, "Bom dia", principal=Principal.for_user(ana)
    )
    today = AnalyticsManager(db).today()
    answer = await client.get(
        "/v1/metrics/report", params={"since": today.isoformat()}, headers=bearer(db, AUDITOR)
    )
    assert answer.status_code == 200, answer.text
    figures = answer.json()
    assert (figures["since"], figures["until"]) == (today.isoformat(), today.isoformat())
    expected = await AnalyticsManager(db).report(today, today, principal=AUDITOR)
    assert figures | {"generated_at": None} == expected.model_dump(mode="json") | {"generated_at": None}
    assert figures["daily_active_users"] == 1
    too_long = await client.get(
        "/v1/metrics/report",
        params={"since": date(2020, 1, 1).isoformat(), "until": today.isoformat()},
        headers=bearer(db, AUDITOR),
    )
    assert "at most 366 days" in str(assert_problem(too_long, 422))
    for edge in ({"until": "0001-01-01"}, {"since": "9999-12-31"}):
        assert_problem(await client.get("/v1/metrics/report", params=edge, headers=bearer(db, AUDITOR)), 422)
        assert_problem(await client.get("/dashboard", params=edge, headers=bearer(db, AUDITOR)), 422)


async def test_a_hostile_filter_is_escaped_on_the_page(client: httpx.AsyncClient, db: Database) -> None:
    """The agent filter is the one text the page repeats that the database did not check (agent names follow a
    pattern, roles are an enumeration)."""
    hostile = '"><script>alert(1)</script>'
    page = await client.get("/dashboard", params={"agent": hostile}, headers=bearer(db, ADMIN))
    assert page.status_code == 200
    assert hostile not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_a_form_posted_from_another_site_is_refused(client: httpx.AsyncClient, db: Database) -> None:
    """Login CSRF: another site's page must not sign a browser in (with its own token) or out."""
    token = bearer(db, AUDITOR)["Authorization"].removeprefix("Bearer ")
    form = {"content-type": "application/x-www-form-urlencoded"}
    elsewhere = await client.post(
        "/dashboard/login", content=f"token={token}", headers=form | {"origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    assert "set-cookie" not in elsewhere.headers
    assert "another site" in elsewhere.text
    out = await client.post("/dashboard/logout", headers={"origin": "https://evil.example"})
    assert out.status_code == 403
    here = await client.post(
        "/dashboard/login", content=f"token={token}", headers=form | {"origin": "https://stratus.test"}
    )
    assert here.status_code == 303, "the service's own page, whatever the scheme the proxy ended"
