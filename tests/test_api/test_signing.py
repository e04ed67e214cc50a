"""EdDSA bearer tokens: signed by whoever holds the Ed25519 private key, checked by the service with the public key
alone, each algorithm with its own key (a public key is never taken as an HMAC secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from stratus_db import Database, Principal
from stratus_db.api import create_app, issue_token
from stratus_db.api.auth import principal_of
from stratus_db.config import Settings, load_settings
from stratus_db.errors import ConfigurationError
from tests.fixtures.databases import settings_for
from tests.fixtures.http import ADMIN, CLIENT, assert_problem

SIGNING = Ed25519PrivateKey.generate()
PRIVATE_PEM = SIGNING.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
PUBLIC_PEM = SIGNING.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def with_keys(settings: Settings, **keys: object) -> Settings:
    return Settings.model_validate(settings.model_dump() | keys)


@pytest.fixture
async def public_key_only(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The service on the test's database, checking EdDSA tokens with the public key and nothing else."""
    url = db.settings.database_url.render_as_string(hide_password=False)
    service = Database(
        with_keys(settings_for(url), STRATUS_API_JWT_SECRET=None, STRATUS_API_JWT_PUBLIC_KEY=PUBLIC_PEM)
    )
    transport = httpx.ASGITransport(app=create_app(service), client=CLIENT)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as client:
            yield client
    finally:
        await service.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_eddsa_token_is_checked_with_the_public_key(
    public_key_only: httpx.AsyncClient, db: Database
) -> None:
    client = public_key_only
    issuer = with_keys(db.settings, STRATUS_API_JWT_PRIVATE_KEY=PRIVATE_PEM)
    admin_token = issue_token(issuer, ADMIN, timedelta(hours=1))
    assert jwt.get_unverified_header(admin_token)["alg"] == "EdDSA"
    created = await client.post(
        "/v1/users",
        json={"name": "Ana Voo", "email": "ana@aeroclube.com.br", "role": "pilot"},
        headers=bearer(admin_token),
    )
    assert created.status_code == 201, created.text
    ana = created.json()["user_id"]
    mine = await client.get(
        f"/v1/users/{ana}", headers=bearer(issue_token(issuer, Principal.for_user(ana), timedelta(hours=1)))
    )
    assert mine.status_code == 200
    assert mine.json()["email"] == "ana@aeroclube.com.br"


async def test_tokens_of_another_key_or_algorithm_are_401(
    public_key_only: httpx.AsyncClient, db: Database
) -> None:
    client = public_key_only
    other_key = jwt.encode(admin_claims(db), Ed25519PrivateKey.generate(), algorithm="EdDSA")
    problem = assert_problem(await client.get("/v1/users", headers=bearer(other_key)), 401)
    assert problem["detail"] == "the bearer token was refused: Signature verification failed"

    hmac_token = issue_token(
        db.settings, ADMIN, timedelta(hours=1)
    )  # with a secret this service does not have
    problem = assert_problem(await client.get("/v1/users", headers=bearer(hmac_token)), 401)
    assert problem["detail"] == (
        "the bearer token was refused: its algorithm 'HS256' is not accepted here (accepted: EdDSA)"
    )


async def test_a_public_key_is_never_an_hmac_secret(db: Database) -> None:
    """The classic confusion: an HS256 token whose "secret" is the public key, which anyone may have. With both keys
    configured, HS256 is checked with the secret alone."""
    url = db.settings.database_url.render_as_string(hide_password=False)
    service = Database(with_keys(settings_for(url), STRATUS_API_JWT_PUBLIC_KEY=PUBLIC_PEM))
    transport = httpx.ASGITransport(app=create_app(service), client=CLIENT)
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(admin_claims(db) | {"exp": int(time.time()) + 3600}).encode())
    signature = b64url(hmac.new(PUBLIC_PEM.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as client:
            forged = await client.get("/v1/users", headers=bearer(f"{header}.{payload}.{signature}"))
            assert_problem(forged, 401)
            both = await client.get(
                "/v1/users", headers=bearer(issue_token(db.settings, ADMIN, timedelta(hours=1)))
            )
            assert both.status_code == 200, "the secret's tokens are still good beside the public key's"
    finally:
        await service.close()


def test_a_key_that_is_not_ed25519_is_refused_at_start() -> None:
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    rsa_public = rsa.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(
        ConfigurationError, match=r"STRATUS_API_JWT_PUBLIC_KEY.*Ed25519 public key, got a RSA one"
    ):
        load_settings(STRATUS_API_JWT_PUBLIC_KEY=rsa_public)
    with pytest.raises(ConfigurationError, match=r"STRATUS_API_JWT_PRIVATE_KEY.*Ed25519 private key in PEM"):
        load_settings(
            STRATUS_API_JWT_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"
        )
    assert "BEGIN PRIVATE KEY" not in repr(load_settings(STRATUS_API_JWT_PRIVATE_KEY=PRIVATE_PEM)), "a secret"


def test_without_any_key_no_token_is_checked_or_issued(db: Database) -> None:
    bare = with_keys(db.settings, STRATUS_API_JWT_SECRET=None)
    with pytest.raises(
        ConfigurationError, match="neither STRATUS_API_JWT_PRIVATE_KEY nor STRATUS_API_JWT_SECRET"
    ):
        issue_token(bare, ADMIN, timedelta(hours=1))
    with pytest.raises(
        ConfigurationError, match="neither STRATUS_API_JWT_SECRET nor STRATUS_API_JWT_PUBLIC_KEY"
    ):
        principal_of(bare, issue_token(db.settings, ADMIN, timedelta(hours=1)))


def admin_claims(db: Database) -> dict[str, object]:
    return {
        "sub": "ops",
        "kind": "admin",
        "aud": db.settings.STRATUS_API_AUDIENCE,
        "exp": datetime.now(UTC) + timedelta(hours=1),
    }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_header_whose_algorithm_is_not_a_name_is_401(public_key_only: httpx.AsyncClient) -> None:
    """`alg` as a list (or a number): refused as any foreign token is, not a failure of the service."""
    for algorithm in (["EdDSA"], 7, None):
        header = b64url(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
        token = f"{header}.{b64url(b'{}')}.{b64url(b'x')}"
        problem = assert_problem(await public_key_only.get("/v1/users", headers=bearer(token)), 401)
        assert "is not accepted here" in str(problem["detail"])
