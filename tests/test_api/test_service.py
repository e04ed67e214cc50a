"""The HTTP service through its ASGI application (httpx), on both backends: authentication, the request context in
the audit trail, the problem details of each failure, the body limit, users and memories."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlalchemy import select

from stratus_db import ApiKeyManager, AuditManager, Database, Principal
from stratus_db.api import create_app, issue_token
from stratus_db.models import ServiceSampleRow
from tests.fixtures.databases import settings_for
from tests.fixtures.http import ADMIN, CLIENT, assert_problem, bearer, new_user


async def test_health_and_ready_need_no_token(client: httpx.AsyncClient, db: Database) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"healthy": True}, "no more than that: the endpoint is public"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
    ],
    ids=["none", "malformed", "not bearer"],
)
async def test_a_request_without_a_valid_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get(f"/v1/users/{uuid.uuid4()}", headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_foreign_and_forged_tokens_are_401(client: httpx.AsyncClient, db: Database) -> None:
    settings = db.settings
    expired = issue_token(settings, ADMIN, timedelta(minutes=1), now=datetime.now(UTC) - timedelta(hours=1))
    other_audience = issue_token(
        settings.model_copy(update={"STRATUS_API_AUDIENCE": "outro"}), ADMIN, timedelta(hours=1)
    )
    forged = jwt.encode(
        {
            "sub": "ops",
            "kind": "admin",
            "aud": settings.STRATUS_API_AUDIENCE,
            "exp": datetime.now(UTC) + timedelta(hours=1),
        },
        "a key that is not the service's, long enough",
        algorithm="HS256",
    )
    unsigned = jwt.encode(
        {
            "sub": "ops",
            "kind": "admin",
            "aud": settings.STRATUS_API_AUDIENCE,
            "exp": datetime.now(UTC) + timedelta(hours=1),
        },
        "",
        algorithm="none",
    )
    for token in (expired, other_audience, forged, unsigned):
        response = await client.get("/v1/users", headers={"Authorization": f"Bearer {token}"})
        assert_problem(response, 401)


async def test_users_through_http_with_the_access_rules_of_the_library(
    client: httpx.AsyncClient, db: Database
) -> None:
    ana = await new_user(client, db)
    bia = await new_user(client, db, "bia@aeroclube.com.br")
    as_ana = bearer(db, Principal.for_user(ana))

    mine = await client.get(f"/v1/users/{ana}", headers=as_ana)
    assert mine.status_code == 200
    assert mine.json()["email"] == "ana@aeroclube.com.br"
    assert_problem(await client.get(f"/v1/users/{bia}", headers=as_ana), 403)
    assert_problem(await client.get(f"/v1/users/{uuid.uuid4()}", headers=bearer(db, ADMIN)), 404)

    changed = await client.patch(f"/v1/users/{ana}", json={"name": "Ana Prado"}, headers=as_ana)
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Ana Prado"
    duplicate = await client.post(
        "/v1/users",
        json={"name": "Outra", "email": "ANA@aeroclube.com.br", "role": "pilot"},
        headers=bearer(db, ADMIN),
    )
    assert_problem(duplicate, 409)
    page = await client.get("/v1/users", params={"limit": 1}, headers=bearer(db, ADMIN))
    assert page.status_code == 200
    assert len(page.json()["items"]) == 1
    assert page.json()["next_cursor"] is not None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"name": "Ana", "email": "ana@aeroclube.com.br"}, "role"),
        ({"name": "Ana", "email": "não é e-mail", "role": "pilot"}, "email"),
        ({"name": "Ana", "email": "ana@aeroclube.com.br", "role": "astronauta"}, "role"),
    ],
    ids=["missing field", "bad e-mail", "unknown role"],
)
async def test_a_malformed_body_is_422_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient, db: Database, body: dict[str, str], where: str
) -> None:
    response = await client.post("/v1/users", json=body, headers=bearer(db, ADMIN))
    problem = assert_problem(response, 422)
    assert where in response.text
    assert "não é e-mail" not in str(problem.get("errors", "")), "the value sent is not echoed"
    assert (await client.get("/v1/users", headers=bearer(db, ADMIN))).json()["items"] == []


async def test_memories_through_http(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    bia = await new_user(client, db, "bia@aeroclube.com.br")
    as_ana = bearer(db, Principal.for_user(ana))
    base = f"/v1/users/{ana}/memories"
    search = f"/v1/users/{ana}/memory-search"

    stored = await client.put(
        f"{base}/aeroporto_base",
        json={"value": "SBKP, Viracopos", "memory_type": "long_term"},
        headers=as_ana,
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["value"] == "SBKP, Viracopos"
    got = await client.get(f"{base}/aeroporto_base", headers=as_ana)
    assert got.json()["memory_type"] == "long_term"
    found = await client.get(search, params={"q": "viracopos"}, headers=as_ana)
    assert [item["memory"]["key"] for item in found.json()] == ["aeroporto_base"]
    listed = await client.get(base, headers=as_ana)
    assert [item["key"] for item in listed.json()["items"]] == ["aeroporto_base"]

    as_bia = bearer(db, Principal.for_user(bia))
    assert_problem(await client.get(f"{base}/aeroporto_base", headers=as_bia), 403)
    assert_problem(await client.delete(f"{base}/aeroporto_base", headers=as_bia), 403)
    assert (await client.delete(f"{base}/aeroporto_base", headers=as_ana)).status_code == 204
    assert_problem(await client.get(f"{base}/aeroporto_base", headers=as_ana), 404)
    assert_problem(await client.delete(f"{base}/aeroporto_base", headers=as_ana), 404)


async def test_the_request_context_reaches_the_audit_trail(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    agent = Principal.agent("briefing", acting_for=ana)
    response = await client.put(
        f"/v1/users/{ana}/memories/rota",
        json={"value": "SBKP-SBRJ"},
        headers=bearer(db, agent) | {"User-Agent": "StratusAgent/2.0", "X-Request-ID": "req-42.a"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-42.a"
    [event] = (await AuditManager(db).query(trace_id="req-42.a")).items
    assert (event.actor, event.on_behalf_of, event.ip_address, event.user_agent, event.table_name) == (
        "agent:briefing",
        ana,
        CLIENT[0],
        "StratusAgent/2.0",
        "memory_entries",
    )


async def test_the_trace_id_comes_from_traceparent_or_is_made(client: httpx.AsyncClient) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get("/health", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert response.headers["x-request-id"] == trace
    made = (await client.get("/health", headers={"X-Request-ID": "has spaces; DROP"})).headers["x-request-id"]
    assert uuid.UUID(made)


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(db: Database) -> None:
    trusting = Database(
        settings_for(db.settings.database_url.render_as_string(hide_password=False)).model_copy(
            update={"STRATUS_API_TRUSTED_PROXIES": (ipaddress.ip_network("203.0.113.0/24"),)}
        )
    )
    try:
        for handle, expected in ((db, CLIENT[0]), (trusting, "198.51.100.7")):
            transport = httpx.ASGITransport(app=create_app(handle), client=CLIENT)
            async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as http:
                trace = f"xff-{handle is trusting}"
                headers = bearer(handle, ADMIN) | {
                    "X-Forwarded-For": "10.9.9.9, 198.51.100.7",
                    "X-Request-ID": trace,
                }
                created = await http.post(
                    "/v1/users",
                    json={"name": "Ana", "email": f"{trace}@aeroclube.com.br", "role": "pilot"},
                    headers=headers,
                )
                assert created.status_code == 201, created.text
            [event] = (await AuditManager(db).query(trace_id=trace)).items
            assert event.ip_address == expected
        # A proxy that adds a line of its own: the client's line comes first, and is not believed either.
        transport = httpx.ASGITransport(app=create_app(trusting), client=CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as http:
            created = await http.post(
                "/v1/users",
                json={"name": "Bia", "email": "xff-lines@aeroclube.com.br", "role": "pilot"},
                headers=[
                    *bearer(trusting, ADMIN).items(),
                    ("X-Forwarded-For", "10.9.9.9"),
                    ("X-Forwarded-For", "198.51.100.8"),
                    ("X-Request-ID", "xff-lines"),
                ],
            )
            assert created.status_code == 201, created.text
        [event] = (await AuditManager(db).query(trace_id="xff-lines")).items
        assert event.ip_address == "198.51.100.8"
    finally:
        await trusting.close()


async def test_a_body_over_the_limit_is_413_before_it_is_read(
    client: httpx.AsyncClient, db: Database
) -> None:
    limit = db.settings.STRATUS_API_MAX_BODY_BYTES
    ana = await new_user(client, db)
    huge = {"value": "x" * (limit + 1)}
    declared = await client.put(
        f"/v1/users/{ana}/memories/grande", json=huge, headers=bearer(db, Principal.for_user(ana))
    )
    assert_problem(declared, 413)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"value": "'
        for _ in range(limit // 65536 + 1):
            yield b"y" * 65536
        yield b'"}'

    streamed = await client.put(
        f"/v1/users/{ana}/memories/grande",
        content=chunks(),
        headers=bearer(db, Principal.for_user(ana)) | {"Content-Type": "application/json"},
    )
    assert_problem(streamed, 413)
    # A small Content-Length beside a chunked body larger than the limit: the bytes are counted, not the header.
    lying = await client.put(
        f"/v1/users/{ana}/memories/grande",
        content=chunks(),
        headers=bearer(db, Principal.for_user(ana))
        | {"Content-Type": "application/json", "Content-Length": "10"},
    )
    assert_problem(lying, 413)
    assert_problem(
        await client.get(f"/v1/users/{ana}/memories/grande", headers=bearer(db, Principal.for_user(ana))), 404
    )


async def test_metrics_count_requests_by_route_for_operators(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    for _ in range(3):
        assert (await client.get(f"/v1/users/{ana}", headers=as_ana)).status_code == 200
    assert (await client.get(f"/v1/users/{uuid.uuid4()}", headers=as_ana)).status_code == 403
    await client.get("/no/such/path")
    await client.request("BREW", "/no/such/pot")
    await client.get(f"/v1/users/{ana}/memories/base", headers=as_ana)  # the memory cache's figures appear
    too_large = {"value": "x" * (db.settings.STRATUS_API_MAX_BODY_BYTES + 1)}
    assert_problem(await client.put(f"/v1/users/{ana}/memories/base", json=too_large, headers=as_ana), 413)

    assert_problem(await client.get("/metrics"), 401)
    assert_problem(await client.get("/metrics", headers=as_ana), 403)
    scraped = await client.get("/metrics", headers=bearer(db, ADMIN))
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert 'stratus_http_requests_total{method="GET",route="/v1/users/{user_id}",status="200"} 3.0' in text
    assert 'stratus_http_requests_total{method="GET",route="/v1/users/{user_id}",status="403"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    # Refused before routing, and still labelled with the route it was for.
    assert (
        'stratus_http_requests_total{method="PUT",route="/v1/users/{user_id}/memories/{key}",status="413"} 1.0'
        in text
    )
    assert 'method="OTHER",route="unmatched"' in text, "a client's made-up method is one label"
    assert "BREW" not in text
    assert str(ana) not in text, "a route's template, never its path"
    assert 'stratus_http_request_duration_seconds_count{method="GET",route="/v1/users/{user_id}"} 4.0' in text
    assert 'stratus_db_operation_duration_seconds_count{operation="user.get"}' in text
    assert "stratus_db_pool_size " in text
    assert "stratus_db_memory_cache_hits " in text


async def test_metrics_may_be_public(db: Database) -> None:
    public = Database(
        settings_for(db.settings.database_url.render_as_string(hide_password=False)).model_copy(
            update={"STRATUS_API_PUBLIC_METRICS": True}
        )
    )
    try:
        transport = httpx.ASGITransport(app=create_app(public), client=CLIENT)
        async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as http:
            assert (await http.get("/metrics")).status_code == 200
            assert (await http.get("/v1/users")).status_code == 401, "only the metrics"
    finally:
        await public.close()


async def test_a_services_api_key_is_a_bearer_token(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    bia = await new_user(client, db, "bia@aeroclube.com.br")
    keys = ApiKeyManager(db)
    made = await keys.create_key(Principal.for_user(ana), "app móvel da Ana")
    as_key = {"Authorization": f"Bearer {made.token}", "X-Request-ID": "por-chave"}

    assert (await client.get(f"/v1/users/{ana}", headers=as_key)).status_code == 200
    assert_problem(await client.get(f"/v1/users/{bia}", headers=as_key), 403)
    [refusal] = (await AuditManager(db).query(trace_id="por-chave", action="deny")).items
    assert refusal.actor == f"user:{ana}"

    await keys.revoke_key(made.key.key_id)
    assert_problem(await client.get(f"/v1/users/{ana}", headers=as_key), 401)
    assert_problem(
        await client.get(f"/v1/users/{ana}", headers={"Authorization": "Bearer sk_stratus_x_y"}), 401
    )


async def test_requests_and_probes_are_sampled_and_the_current_figures_are_gauges(
    client: httpx.AsyncClient, db: Database
) -> None:
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    conversation = await client.post(f"/v1/users/{ana}/conversations", json={"title": "Voo"}, headers=as_ana)
    assert conversation.status_code == 201, conversation.text
    said = await client.post(
        f"/v1/users/{ana}/conversations/{conversation.json()['conversation_id']}/messages",
        json={"content": "Bom dia"},
        headers=as_ana,
    )
    assert said.status_code == 201, said.text
    assert (await client.get("/ready")).status_code == 200
    assert (await client.get("/health")).status_code == 200
    await db.samples.flush()

    async with db.transaction() as conn:
        rows = (
            await conn.execute(
                select(ServiceSampleRow.kind, ServiceSampleRow.name, ServiceSampleRow.total).where(
                    ServiceSampleRow.instance == db.samples.instance
                )
            )
        ).all()
    sampled = {(kind, name) for kind, name, _total in rows}
    assert ("http", "/v1/users/{user_id}/conversations") in sampled
    assert ("probe", "/ready") in sampled
    assert not {name for kind, name in sampled if kind == "http"} & {"/health", "/ready", "/metrics"}

    text = (await client.get("/metrics", headers=bearer(db, ADMIN))).text
    assert "stratus_active_users_today 1.0" in text, "ana wrote today"
    assert 'stratus_availability{source="probes"} 1.0' in text
    assert 'stratus_availability{source="requests"}' in text
    assert "stratus_error_rate " in text


async def test_a_streamed_answer_is_not_cut_by_a_declared_body_it_never_reads(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The export streams, listening for the client leaving; a Content-Length over the limit on a GET whose body
    nobody reads must not turn into a refusal once the answer has begun."""
    ana = await new_user(client, db)
    exported = await client.get(
        f"/v1/users/{ana}/export",
        headers=bearer(db, Principal.for_user(ana)) | {"Content-Length": "999999999"},
    )
    assert exported.status_code == 200, exported.text
    assert exported.json()["user_id"] == str(ana)
