"""All SQL on audit_log. Append and read only: no statement here updates or deletes a row."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.rows import AuditEntry
from stratus_db.kit.models import table_of
from stratus_db.models import AuditRow
from stratus_db.models.audit import APART_FROM_APPENDS, APPEND_ACTION, APPEND_TABLE

_audit = table_of(AuditRow)


class AuditRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Insert audit entries (a write plan's, or AuditManager.entry's)."""
        if entries:
            await self.conn.execute(insert(_audit), [entry.row() for entry in entries])

    @staticmethod
    def query_statement(
        *,
        user_id: uuid.UUID | None,
        record_id: uuid.UUID | None,
        table: str | None,
        action: str | None,
        actor: str | None = None,
        trace_id: str | None = None,
        since: datetime | None,
        until: datetime | None,
        after: tuple[Any, ...] | None,
    ) -> Select[Any]:
        # Newest first; each filter combination is served by one of the table's indexes (subject, record, actor,
        # trace, time).
        statement = select(_audit).order_by(AuditRow.timestamp.desc(), AuditRow.audit_id.desc())
        if user_id is not None:
            statement = statement.where(AuditRow.user_id == user_id)
        if record_id is not None:
            statement = statement.where(AuditRow.record_id == record_id)
        if table is not None:
            statement = statement.where(AuditRow.table_name == table)
        if not (table in (None, APPEND_TABLE) and action in (None, APPEND_ACTION)):
            # The filters exclude message appends: say so in the partial indexes' own words, so that they serve.
            statement = statement.where(text(APART_FROM_APPENDS))
        if action is not None:
            statement = statement.where(AuditRow.action == action)
        if actor is not None:
            statement = statement.where(AuditRow.actor == actor)
        if trace_id is not None:
            statement = statement.where(AuditRow.trace_id == trace_id)
        if since is not None:
            statement = statement.where(AuditRow.timestamp >= since)
        if until is not None:
            statement = statement.where(AuditRow.timestamp < until)
        if after is not None:
            last_timestamp, last_id = after
            statement = statement.where(
                or_(
                    AuditRow.timestamp < last_timestamp,
                    and_(AuditRow.timestamp == last_timestamp, AuditRow.audit_id < last_id),
                )
            )
        return statement

    async def fetch(self, statement: Select[Any], limit: int) -> list[dict[str, Any]]:
        result = await self.conn.execute(statement.limit(limit))
        return [dict(row) for row in result.mappings()]
