"""The audit report (`AuditManager.report`, `stratus-db audit report`): what happened in a time range, counted in SQL
(GROUP BY over the range of ix_audit_log_timestamp_audit_id), and its CSV and HTML renderings."""

from __future__ import annotations

import csv
import html
import io
import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.schemas import AuditAction
from stratus_db.kit.models import table_of
from stratus_db.kit.schemas import FrozenModel
from stratus_db.models import AuditRow

TOP_USERS: Final = 10
UNSPECIFIED: Final = "unspecified"
"""The purpose of rows written without one."""
_audit = table_of(AuditRow)


class PurposeLine(FrozenModel):
    """One purpose of the record of processing operations (LGPD Art. 37): how many rows, of which actions."""

    purpose: str
    rows: int
    actions: dict[str, int]


class AuditReport(FrozenModel):
    """What the audit trail holds for [since, until)."""

    since: datetime
    until: datetime
    rows: int
    by_action: dict[str, int]
    by_table: dict[str, int]
    by_principal_kind: dict[str, int]
    """`user`, `agent`, `admin`, `auditor`, `system` (the actor's kind)."""
    by_day: dict[str, int]
    """UTC days, `YYYY-MM-DD`, oldest first."""
    denied: dict[str, int]
    """Refused calls (action `deny`) by the principal kind that tried."""
    exports: int
    erasures: int
    sensitive_reads: int
    """Reads of medical-certificate data (action `read`)."""
    top_users: list[tuple[uuid.UUID, int]]
    """The data subjects with the most rows, most first (at most 10)."""
    by_purpose: list[PurposeLine]
    """The record of processing operations: rows by purpose, and by action within each, most rows first."""


def _principal_kind(dialect: str) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.split_part(_audit.c.actor, ":", 1)
    # As split_part: the whole actor when it has no colon.
    colon = func.instr(_audit.c.actor, ":")
    return case((colon > 0, func.substr(_audit.c.actor, 1, colon - 1)), else_=_audit.c.actor)


def _day(dialect: str) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", _audit.c.timestamp), "YYYY-MM-DD")
    return func.substr(_audit.c.timestamp, 1, 10)  # stored as UTC text, `YYYY-MM-DD HH:MM:SS…`


async def build_report(conn: AsyncConnection, since: datetime, until: datetime) -> AuditReport:
    dialect = conn.dialect.name
    in_range = (_audit.c.timestamp >= since) & (_audit.c.timestamp < until)

    async def counted(key: ColumnElement[Any], *where: ColumnElement[bool]) -> dict[str, int]:
        statement: Select[Any] = (
            select(key.label("key"), func.count().label("rows"))
            .where(in_range, *where)
            .group_by(key)
            .order_by(key)
        )
        return {str(row.key): int(row.rows) for row in await conn.execute(statement)}

    purpose = func.coalesce(_audit.c.purpose, literal(UNSPECIFIED))
    by_purpose: dict[str, dict[str, int]] = {}
    statement = (
        select(purpose.label("purpose"), _audit.c.action, func.count().label("rows"))
        .where(in_range)
        .group_by(purpose, _audit.c.action)
    )
    for row in await conn.execute(statement):
        by_purpose.setdefault(row.purpose, {})[row.action] = int(row.rows)
    top = await conn.execute(
        select(_audit.c.user_id, func.count().label("rows"))
        .where(in_range, _audit.c.user_id.is_not(None))
        .group_by(_audit.c.user_id)
        .order_by(func.count().desc(), _audit.c.user_id)
        .limit(TOP_USERS)
    )
    by_action = await counted(_audit.c.action)
    special = {
        name: int(count)
        for name, count in (
            await conn.execute(
                select(
                    func.count(case((_audit.c.action == AuditAction.export, 1))).label("exports"),
                    func.count(case((_audit.c.action == AuditAction.erase, 1))).label("erasures"),
                    func.count(case((_audit.c.action == AuditAction.read, 1))).label("sensitive_reads"),
                ).where(in_range)
            )
        )
        .mappings()
        .one()
        .items()
    }
    return AuditReport(
        since=since,
        until=until,
        rows=sum(by_action.values()),
        by_action=by_action,
        by_table=await counted(_audit.c.table_name),
        by_principal_kind=await counted(_principal_kind(dialect)),
        by_day=await counted(_day(dialect)),
        denied=await counted(_principal_kind(dialect), _audit.c.action == AuditAction.deny),
        exports=special["exports"],
        erasures=special["erasures"],
        sensitive_reads=special["sensitive_reads"],
        top_users=[(row.user_id, int(row.rows)) for row in top],
        by_purpose=sorted(
            (
                PurposeLine(purpose=name, rows=sum(actions.values()), actions=actions)
                for name, actions in by_purpose.items()
            ),
            key=lambda line: (-line.rows, line.purpose),
        ),
    )


def _lines(report: AuditReport) -> list[tuple[str, str, int]]:
    """The report as (section, key, count) lines: what CSV and HTML show."""
    lines: list[tuple[str, str, int]] = [("total", "rows", report.rows)]
    for section in ("by_action", "by_table", "by_principal_kind", "by_day", "denied"):
        lines += [(section, key, count) for key, count in getattr(report, section).items()]
    lines += [
        ("special", "exports", report.exports),
        ("special", "erasures", report.erasures),
        ("special", "sensitive_reads", report.sensitive_reads),
    ]
    lines += [("top_users", str(user_id), count) for user_id, count in report.top_users]
    for line in report.by_purpose:
        lines += [
            (f"purpose:{line.purpose}", action, count) for action, count in sorted(line.actions.items())
        ]
    return lines


def as_csv(report: AuditReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["section", "key", "count"])
    writer.writerows(_lines(report))
    return buffer.getvalue()


def as_html(report: AuditReport) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(section)}</td><td>{html.escape(key)}</td><td>{count}</td></tr>"
        for section, key, count in _lines(report)
    )
    title = f"Audit report {report.since.isoformat()} – {report.until.isoformat()}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n"
        "<table><thead><tr><th>Section</th><th>Key</th><th>Count</th></tr></thead><tbody>\n"
        f"{rows}\n</tbody></table></body></html>\n"
    )
