"""/dashboard: the metrics of docs/metrics.md as a page, for administrators and auditors; /v1/metrics/report: the
same figures as JSON.

A browser cannot send a bearer header on a plain navigation, so the page also takes the token from a cookie that
/dashboard/login sets (HttpOnly, SameSite=Strict, Secure over HTTPS, scoped to /dashboard) from a token pasted into
its form; a form posted from another site (its Origin another host) is refused. The page loads nothing from elsewhere: its styles are inline, its charts SVG drawn on the server, and its
Content-Security-Policy forbids everything else.
"""

from __future__ import annotations

import html
from datetime import date, timedelta
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import StringConstraints

from stratus_db.analytics import AnalyticsManager, MetricsReport
from stratus_db.analytics.manager import EARLIEST_DAY, LATEST_DAY, MAX_REPORT_DAYS
from stratus_db.analytics.render import to_html
from stratus_db.api.auth import UnauthenticatedError, bearer_scheme, principal_for_token
from stratus_db.api.context import Caller, Db
from stratus_db.api.problems import responses
from stratus_db.errors import PermissionDeniedError, StratusError
from stratus_db.security.principal import Principal, PrincipalKind

COOKIE = "stratus_dashboard"
READERS = frozenset({PrincipalKind.admin, PrincipalKind.auditor})
"""The issue's readers of the page: those who run the service and those who check it."""
DEFAULT_DAYS = 30
CONTENT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
AgentFilter = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Since = Annotated[
    date | None,
    Query(
        ge=EARLIEST_DAY, le=LATEST_DAY, description="The first day, included (default: 29 days before until)."
    ),
]
Until = Annotated[
    date | None, Query(ge=EARLIEST_DAY, le=LATEST_DAY, description="The last day, included (default: today).")
]

router = APIRouter(tags=["metrics"])


def _page(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={"Content-Security-Policy": CONTENT_POLICY, "Cache-Control": "no-store"},
    )


def _range(db: Db, since: date | None, until: date | None) -> tuple[date, date]:
    """The range asked for; by default the 30 days ending today in the metrics' time zone."""
    last = until or AnalyticsManager(db).today()
    return since or last - timedelta(days=DEFAULT_DAYS - 1), last


@router.get(
    "/v1/metrics/report",
    response_model=MetricsReport,
    responses=responses(403),
    summary="The metrics of docs/metrics.md over local days (administrators, auditors)",
)
async def metrics_report(
    caller: Caller,
    db: Db,
    since: Since = None,
    until: Until = None,
    agent: Annotated[AgentFilter | None, Query(description="Only this agent's users and responses.")] = None,
) -> MetricsReport:
    first, last = _range(db, since, until)
    return await AnalyticsManager(db).report(first, last, agent=agent, principal=caller)


async def _reader(request: Request, db: Db, header: HTTPAuthorizationCredentials | None) -> Principal | None:
    """Who reads the page: the bearer header's principal, else the cookie's; None when neither is given."""
    token = header.credentials if header is not None else request.cookies.get(COOKIE)
    if not token:
        return None
    principal = await principal_for_token(db, token)
    if principal.kind not in READERS:
        raise PermissionDeniedError("the dashboard is for administrators and auditors")
    return principal


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(
    request: Request,
    db: Db,
    header: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    since: Since = None,
    until: Until = None,
    agent: Annotated[str | None, Query(max_length=100)] = None,  # the form sends "" for every agent
) -> Response:
    try:
        reader = await _reader(request, db, header)
    except UnauthenticatedError:
        if header is not None:
            raise
        reader = None  # the cookie's token has expired or was revoked: sign in again
    if reader is None:
        to_sign_in = RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)
        to_sign_in.delete_cookie(COOKIE, path="/dashboard")
        return to_sign_in
    first, last = _range(db, since, until)
    if (last - first).days >= MAX_REPORT_DAYS:
        first = last - timedelta(days=MAX_REPORT_DAYS - 1)  # a page asked for too much shows the most it may
    async with db.context(principal=reader, trace_id=request.state.trace_id):
        report = await AnalyticsManager(db).report(first, last, agent=agent or None)
    return _page(to_html(report, served=True))


LOGIN_FORM = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stratus.IA metrics · sign in</title>
<style>body{{font:15px system-ui,sans-serif;margin:0;display:grid;place-items:center;min-height:100vh;background:#f6f8fa}}
form{{background:#fff;border:1px solid #d9e1e8;border-radius:10px;padding:20px;width:min(460px,92vw)}}
textarea{{width:100%;min-height:90px;font:13px monospace}}button{{margin-top:10px;padding:6px 14px}}
p.error{{color:#a4262c}}</style></head>
<body><form method="post" action="/dashboard/login">
<h1>Stratus.IA metrics</h1>
<p>Paste an administrator's or an auditor's token (<code>stratus-db create-token --kind auditor --id …</code>).</p>
{error}<label for="token">Bearer token</label>
<textarea id="token" name="token" required autocomplete="off" spellcheck="false"></textarea>
<button type="submit">Sign in</button></form></body></html>"""


CROSS_SITE = '<p class="error">a form posted from another site is refused</p>'


@router.get("/dashboard/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form() -> HTMLResponse:
    return _page(LOGIN_FORM.format(error=""))


def _from_this_site(request: Request) -> bool:
    """Whether a form was posted from this service's own pages: a browser names the page's origin on every
    cross-site POST, so another site cannot sign someone in or out (login CSRF). Hosts are compared, not schemes:
    behind Cloud Run the service sees plain HTTP. A client that sends no Origin (not a browser) is let through."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


@router.post("/dashboard/login", include_in_schema=False)
async def login(request: Request, db: Db) -> Response:
    """Check the token pasted and keep it in the page's cookie; the form again, with why, when it does not hold."""
    if not _from_this_site(request):
        return _page(LOGIN_FORM.format(error=CROSS_SITE), status_code=status.HTTP_403_FORBIDDEN)
    form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    try:
        if not token:
            raise UnauthenticatedError("no token was given")
        principal = await principal_for_token(db, token)
        if principal.kind not in READERS:
            raise PermissionDeniedError("the dashboard is for administrators and auditors")
    except StratusError as exc:
        problem = f'<p class="error">{html.escape(exc.message)}</p>'
        refused = status.HTTP_403_FORBIDDEN if isinstance(exc, PermissionDeniedError) else 401
        return _page(LOGIN_FORM.format(error=problem), status_code=refused)
    answer = RedirectResponse("/dashboard", status_code=status.HTTP_303_SEE_OTHER)
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
    answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/dashboard")
    return answer


@router.post("/dashboard/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    if not _from_this_site(request):
        return _page(LOGIN_FORM.format(error=CROSS_SITE), status_code=status.HTTP_403_FORBIDDEN)
    answer = RedirectResponse("/dashboard/login", status_code=status.HTTP_303_SEE_OTHER)
    answer.delete_cookie(COOKIE, path="/dashboard")
    return answer
