"""The service's ASGI application on the test's database, through httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from stratus_db import Database
from stratus_db.api import create_app
from tests.fixtures.http import CLIENT


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(db), client=CLIENT)
    async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as http:
        yield http
