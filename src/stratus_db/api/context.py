"""The request context: each authenticated request's calls run as its principal, under its trace id, with the
client's address and user agent in their audit rows."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from stratus_db.api.auth import authenticate
from stratus_db.database import StratusPostgreSQLIntegration
from stratus_db.security.principal import Principal

MAX_USER_AGENT = 500


async def database(request: Request) -> StratusPostgreSQLIntegration:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request.
    db: StratusPostgreSQLIntegration = request.app.state.db
    return db


def client_ip(
    request: Request, trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy, then the nearest address in
    `X-Forwarded-For` that is not one (a client can put anything at the start of that header; only what the trusted
    proxies appended counts)."""
    peer = request.client.host if request.client is not None else None
    if peer is None or not _trusted(peer, trusted_proxies):
        return peer if peer is not None and _is_ip(peer) else None
    # Every X-Forwarded-For line, in order: a proxy may add a line of its own after the client's.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [part.strip() for part in forwarded.split(",") if part.strip()]
    for address in reversed(hops):
        if not _trusted(address, trusted_proxies):
            return address if _is_ip(address) else None
    return hops[0] if hops and _is_ip(hops[0]) else peer


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _trusted(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def _user_agent(request: Request) -> str | None:
    """The User-Agent header as the audit trail can keep it: printable, at most 500 characters."""
    raw = request.headers.get("user-agent")
    if not raw:
        return None
    cleaned = "".join(character for character in raw if character.isprintable())[:MAX_USER_AGENT]
    return cleaned or None


async def request_context(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    db: Annotated[StratusPostgreSQLIntegration, Depends(database)],
) -> AsyncIterator[Principal]:
    """Run the route's calls as the caller, with the request's audit context (a FastAPI dependency)."""
    async with db.context(
        principal=principal,
        trace_id=request.state.trace_id,
        ip_address=client_ip(request, db.settings.STRATUS_API_TRUSTED_PROXIES),
        user_agent=_user_agent(request),
    ):
        yield principal


Caller = Annotated[Principal, Depends(request_context)]
"""A route's parameter: the calling principal, with the request's context set around the route."""
Db = Annotated[StratusPostgreSQLIntegration, Depends(database)]
