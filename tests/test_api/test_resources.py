"""Conversations, messages, statistics, LGPD and the audit trail through HTTP, on both backends, with the library's
access rules: one user never reaches another's data, an auditor reads the trail, a user does not."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from stratus_db import Database, Principal, PrincipalKind
from tests.fixtures.http import ADMIN, assert_problem, bearer, new_user

AUDITOR = Principal(kind=PrincipalKind.auditor, id="dpo")


async def test_a_conversation_from_creation_to_deletion(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    bia = await new_user(client, db, "bia@aeroclube.com.br")
    as_ana, as_bia = bearer(db, Principal.for_user(ana)), bearer(db, Principal.for_user(bia))
    base = f"/v1/users/{ana}/conversations"

    created = await client.post(base, json={"title": "Rota SBKP-SBRJ"}, headers=as_ana)
    assert created.status_code == 201, created.text
    chat = created.json()["conversation_id"]
    for text in ("Qual o METAR de SBKP?", "E o TAF de SBRJ?"):
        sent = await client.post(
            f"{base}/{chat}/messages", json={"content": text, "tokens_used": 12}, headers=as_ana
        )
        assert sent.status_code == 201, sent.text
    retried_id = str(uuid.uuid4())
    first = await client.post(
        f"{base}/{chat}/messages", json={"content": "Obrigado", "message_id": retried_id}, headers=as_ana
    )
    again = await client.post(
        f"{base}/{chat}/messages", json={"content": "Obrigado", "message_id": retried_id}, headers=as_ana
    )
    assert first.json()["seq"] == again.json()["seq"] == 3, "a retry is the same message"

    messages = await client.get(f"{base}/{chat}/messages", params={"limit": 2}, headers=as_ana)
    assert [m["seq"] for m in messages.json()] == [1, 2]
    window = await client.get(f"{base}/{chat}/context", params={"max_tokens": 1000}, headers=as_ana)
    assert window.status_code == 200, window.text
    found = await client.get(f"{base}/search", params={"q": "metar"}, headers=as_ana)
    assert [hit["message"]["content"] for hit in found.json()] == ["Qual o METAR de SBKP?"]
    stats = await client.get(f"{base}/{chat}/stats", headers=as_ana)
    assert stats.json()["messages"] == 3
    renamed = await client.patch(f"{base}/{chat}", json={"title": "Rota revisada"}, headers=as_ana)
    assert renamed.json()["title"] == "Rota revisada"

    # Bia reaches none of it, whichever way she asks.
    assert_problem(await client.get(f"{base}/{chat}", headers=as_bia), 403)
    assert_problem(await client.get(f"{base}/{chat}/messages", headers=as_bia), 403)
    assert_problem(
        await client.post(f"{base}/{chat}/messages", json={"content": "intrusa"}, headers=as_bia), 403
    )
    assert_problem(await client.get(f"/v1/users/{bia}/conversations/{chat}", headers=as_bia), 404)

    assert (await client.post(f"{base}/{chat}/archive", headers=as_ana)).json()["status"] == "archived"
    assert_problem(
        await client.post(f"{base}/{chat}/messages", json={"content": "tarde"}, headers=as_ana), 409
    )
    assert (await client.post(f"{base}/{chat}/restore", headers=as_ana)).json()["status"] == "active"
    assert (await client.delete(f"{base}/{chat}", headers=as_ana)).json()["status"] == "deleted"
    listed = await client.get(base, params={"status": "deleted"}, headers=as_ana)
    assert [c["conversation_id"] for c in listed.json()["items"]] == [chat]
    assert_problem(await client.get(f"{base}/{uuid.uuid4()}", headers=as_ana), 404)


async def test_usage_statistics_for_a_user_and_for_everyone(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    chat = (await client.post(f"/v1/users/{ana}/conversations", json={}, headers=as_ana)).json()[
        "conversation_id"
    ]
    await client.post(
        f"/v1/users/{ana}/conversations/{chat}/messages",
        json={"content": "oi", "tokens_used": 5},
        headers=as_ana,
    )

    mine = await client.get("/v1/stats/usage", params={"user_id": str(ana)}, headers=as_ana)
    assert mine.status_code == 200, mine.text
    assert mine.json()["messages"] == 1
    assert_problem(await client.get("/v1/stats/usage", headers=as_ana), 403)
    everyone = await client.get("/v1/stats/usage", headers=bearer(db, ADMIN))
    assert everyone.json()["messages"] == 1


async def test_consents_export_and_erasure(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    bia = await new_user(client, db, "bia@aeroclube.com.br")
    as_ana = bearer(db, Principal.for_user(ana))
    base = f"/v1/users/{ana}"

    granted = await client.put(
        f"{base}/consents/analytics", json={"text_version": "v3", "channel": "app"}, headers=as_ana
    )
    assert granted.status_code == 201, granted.text
    states = {
        state["purpose"]: state["granted"]
        for state in (await client.get(f"{base}/consents", headers=as_ana)).json()
    }
    assert states["analytics"] is True
    revoked = await client.request(
        "DELETE", f"{base}/consents/analytics", json={"channel": "app"}, headers=as_ana
    )
    assert revoked.json()["action"] == "revoked"
    history = await client.get(f"{base}/consents/history", headers=as_ana)
    assert [event["action"] for event in history.json()["items"]] == ["revoked", "granted"], "newest first"
    assert_problem(
        await client.put(
            f"{base}/consents/nao_existe", json={"text_version": "v1", "channel": "app"}, headers=as_ana
        ),
        422,
    )

    exported = await client.get(f"{base}/export", headers=as_ana)
    assert exported.status_code == 200
    document = json.loads(exported.content)
    assert document["user"]["email"] == "ana@aeroclube.com.br"
    assert_problem(await client.get(f"{base}/export", headers=bearer(db, Principal.for_user(bia))), 403)
    assert_problem(await client.get(f"{base}/export", headers=bearer(db, ADMIN)), 403)

    erased = await client.post(f"{base}/erase", json={"reason": "pedido da titular"}, headers=as_ana)
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["users"] == 1
    assert_problem(await client.get(base, headers=bearer(db, ADMIN)), 404)


async def test_the_audit_trail_is_for_auditors(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    as_auditor = bearer(db, AUDITOR)
    rows = await client.get("/v1/audit", params={"table": "users"}, headers=as_auditor)
    assert rows.status_code == 200, rows.text
    assert [(row["action"], row["record_id"]) for row in rows.json()["items"]] == [("create", str(ana))]
    now = datetime.now(UTC)
    report = await client.get(
        "/v1/audit/report",
        params={
            "since": (now - timedelta(hours=1)).isoformat(),
            "until": (now + timedelta(hours=1)).isoformat(),
        },
        headers=as_auditor,
    )
    assert report.status_code == 200, report.text
    verified = await client.post("/v1/audit/verify", json={}, headers=as_auditor)
    assert verified.json()["ok"] is True
    assert verified.json()["unsealed"] >= 1
    assert (await client.get("/v1/audit/checkpoints", headers=as_auditor)).json() == []
    assert_problem(
        await client.post("/v1/audit/verify", json={}, headers=bearer(db, Principal.for_user(ana))), 403
    )
    naive = await client.get(
        "/v1/audit/report",
        params={"since": "2026-01-01T00:00:00", "until": "2026-02-01T00:00:00"},
        headers=as_auditor,
    )
    assert_problem(naive, 422)


async def test_preferences_credentials_and_deactivation(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    as_ana, as_admin = bearer(db, Principal.for_user(ana)), bearer(db, ADMIN)
    base = f"/v1/users/{ana}"

    merged = await client.patch(
        f"{base}/preferences",
        json={"language": "pt-BR", "units": "aviation", "radio": {"callsign": "PT-XYZ"}},
        headers=as_ana,
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["preferences"]["radio"] == {"callsign": "PT-XYZ"}

    added = await client.post(
        f"{base}/credentials",
        json={"code": "cma-1", "issued_at": "2026-01-10", "expires_at": "2027-01-10"},
        headers=as_ana,
    )
    assert added.status_code == 201, added.text
    credential = added.json()["credential_id"]
    assert added.json()["code"] == "CMA1"
    assert (await client.get(base, headers=as_ana)).json()["licenses"] == ["CMA1"]
    changed = await client.patch(
        f"{base}/credentials/{credential}", json={"restrictions": "usar lentes"}, headers=as_ana
    )
    assert changed.json()["restrictions"] == "usar lentes"
    states = await client.get(f"{base}/credentials/status", params={"on": "2026-12-20"}, headers=as_ana)
    assert [(state["status"], state["days_left"]) for state in states.json()] == [("expiring", 21)]
    expiring = await client.get("/v1/credentials/expiring", params={"within_days": 60}, headers=as_admin)
    assert expiring.status_code == 200, expiring.text
    assert_problem(
        await client.get("/v1/credentials/expiring", params={"within_days": 60}, headers=as_ana), 403
    )
    assert (await client.delete(f"{base}/credentials/{credential}", headers=as_ana)).status_code == 200
    assert (await client.get(base, headers=as_ana)).json()["licenses"] == []

    deactivated = await client.post(f"{base}/deactivate", json={"reason": "aposentado"}, headers=as_admin)
    assert deactivated.json()["deactivated_at"] is not None
    assert (await client.post(f"{base}/reactivate", headers=as_admin)).json()["deactivated_at"] is None


@pytest.mark.parametrize(
    ("method", "path", "request_", "location"),
    [
        (
            "POST",
            "/v1/users",
            {"json": {"name": "  ", "email": "c@x.com.br", "role": "pilot"}},
            ["body", "name"],
        ),
        ("GET", "/v1/users", {"params": {"role": "astronauta"}}, ["query", "role"]),
        ("PATCH", "/v1/users/{ana}", {"json": {"apelido": "Aninha"}}, ["body", "apelido"]),
        (
            "POST",
            "/v1/users/{ana}/credentials",
            {"json": {"code": "PPR", "number": "9" * 51}},
            ["body", "number"],
        ),
        (
            "PUT",
            "/v1/users/{ana}/memories/base",
            {"json": {"value": 1, "importance_score": 1.5}},
            ["body", "importance_score"],
        ),
        (
            "PUT",
            "/v1/users/{ana}/memories/base",
            {"json": {"value": 1, "ttl_seconds": 0}},
            ["body", "ttl_seconds"],
        ),
        ("GET", "/v1/users/{ana}/conversations", {"params": {"status": "apagada"}}, ["query", "status"]),
        (
            "POST",
            "/v1/users/{ana}/conversations/{chat}/messages",
            {"json": {"content": "oi", "tokens_used": -1}},
            ["body", "tokens_used"],
        ),
        ("PATCH", "/v1/users/{ana}/conversations/{chat}", {"json": {"title": "\x00"}}, ["body", "title"]),
        (
            "PUT",
            "/v1/users/{ana}/consents/analytics",
            {"json": {"text_version": "v1", "channel": "bate papo"}},
            ["body", "channel"],
        ),
        (
            "PUT",
            "/v1/users/{ana}/consents/publicidade",
            {"json": {"text_version": "v1", "channel": "app"}},
            ["path", "purpose"],
        ),
        (
            "POST",
            "/v1/audit/verify",
            {"json": {"expected_heads": [{"last_position": 1, "head": "curta"}]}},
            ["body", "expected_heads", "0", "head"],
        ),
    ],
    ids=[
        "blank name",
        "unknown role",
        "unknown field",
        "number too long",
        "importance above 1",
        "no lifetime",
        "unknown status",
        "negative tokens",
        "NUL in a title",
        "channel with a space",
        "unknown purpose",
        "head of the wrong size",
    ],
)
async def test_what_the_library_refuses_the_request_model_refuses_naming_the_field(
    client: httpx.AsyncClient,
    db: Database,
    method: str,
    path: str,
    request_: dict[str, Any],
    location: list[str],
) -> None:
    """The OpenAPI document says what the library accepts, and the request models hold to it: a request outside it
    is a 422 from the request model itself (its `errors` name the field), before the library is called."""
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    chat = (await client.post(f"/v1/users/{ana}/conversations", json={}, headers=as_ana)).json()[
        "conversation_id"
    ]
    caller = bearer(db, AUDITOR) if path.startswith("/v1/audit") else as_ana
    response = await client.request(method, path.format(ana=ana, chat=chat), headers=caller, **request_)
    problem = assert_problem(response, 422)
    errors = problem.get("errors")
    assert isinstance(errors, list), "refused by the request model, not by the library"
    assert location in [error["location"] for error in errors], errors


async def test_what_the_library_accepts_the_api_accepts(client: httpx.AsyncClient, db: Database) -> None:
    ana = await new_user(client, db)
    as_ana = bearer(db, Principal.for_user(ana))
    base = f"/v1/users/{ana}"
    chat = (await client.post(f"{base}/conversations", json={}, headers=as_ana)).json()["conversation_id"]

    # JSON has one kind of number: 12.0 is the integer 12, as JSON Schema reads it.
    sent = await client.post(
        f"{base}/conversations/{chat}/messages",
        json={"content": "oi", "tokens_used": 12.0, "metadata": None},
        headers=as_ana,
    )
    assert sent.status_code == 201, sent.text
    assert (sent.json()["tokens_used"], sent.json()["metadata"]) == (12, {})

    # A cursor the API issued is taken back whatever its length: 200 accented characters, escaped, make a long one.
    for letter in "áé":
        stored = await client.put(f"{base}/memories/{letter * 200}", json={"value": letter}, headers=as_ana)
        assert stored.status_code == 200, stored.text
    first = (await client.get(f"{base}/memories", params={"limit": 1}, headers=as_ana)).json()
    assert len(first["next_cursor"]) > 1000
    second = await client.get(
        f"{base}/memories", params={"limit": 1, "cursor": first["next_cursor"]}, headers=as_ana
    )
    assert second.status_code == 200, second.text
    assert [item["value"] for item in first["items"] + second.json()["items"]] == ["á", "é"]

    # The library reads these spellings too, beyond what the schema lists.
    changed = await client.patch(
        base, json={"canac": " 123456 ", "preferences": {"home_aerodrome": "sbkp"}}, headers=as_ana
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["canac"], changed.json()["preferences"]) == ("123456", {"home_aerodrome": "SBKP"})
    granted = await client.put(
        f"{base}/consents/analytics", json={"text_version": "v1", "channel": " App "}, headers=as_ana
    )
    assert granted.json()["channel"] == "app"
