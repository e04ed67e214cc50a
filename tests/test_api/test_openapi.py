"""Schemathesis over the whole OpenAPI document, against the real server (`stratus-db serve`, a process of its own)
on each backend: thousands of generated requests, valid and not, with an administrator's token, and not one 5xx, one
undocumented status or content type, or one response that breaks its schema. Seeded: a failure reproduces."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from stratus_db import Database, Principal, PrincipalKind
from stratus_db.api import issue_token
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database
from tests.fixtures.server import BIN, serving

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgresql":
        async with throwaway_postgres_database() as url:
            yield url
    else:
        url = sqlite_url(tmp_path / "served.db")
        db = Database(settings_for(url))
        await db.migrate()
        await db.close()
        yield url


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    with serving(database_url, tmp_path) as base:
        yield base


def test_the_whole_api_holds_to_its_openapi_document(server: str, database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url)
    token = issue_token(settings, Principal(kind=PrincipalKind.admin, id="schemathesis"), timedelta(hours=1))
    run = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{server}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--seed",
            "20261207",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ | {"NO_COLOR": "1"},
        cwd=tmp_path,  # its cache (.schemathesis/) goes there
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated is not None, run.stdout[-2000:]
    assert int(generated[1]) == int(generated[2]) >= 1000, "thousands of requests, every one passed"
