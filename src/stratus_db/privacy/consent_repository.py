"""All SQL on user_consents: append an event, and read the latest events and the history of one user's ledger.

Every statement filters by the owner first (the leading column of the table's one index). There is no UPDATE and no
DELETE here: the ledger is append-only (deleting a user deletes their events through the foreign key).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, bindparam, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import NotFoundError, Violation
from stratus_db.kit.failures import violation_of
from stratus_db.kit.models import table_of
from stratus_db.models import ConsentPurpose, ConsentRow, UserRow
from stratus_db.privacy.consent_schemas import ConsentEvent

_consents = table_of(ConsentRow)
_NEWEST_FIRST = (ConsentRow.occurred_at.desc(), ConsentRow.consent_id.desc())
"""The order of one user's events, newest first: the latest event is the first (ids are UUIDv7 and break a tie)."""


_LATEST = (
    select(_consents)
    .where(ConsentRow.user_id == bindparam("user_id"), ConsentRow.purpose == bindparam("purpose"))
    .order_by(*_NEWEST_FIRST)
    .limit(1)
)
"""The latest event of (user, purpose): one backward descent of ix_user_consents_user_id_purpose_occurred_at_….
Built once: a consent check that misses the cache sends it, and building a Select costs more than running it."""


class ConsentRepository:
    def __init__(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        self.conn = conn
        self.user_id = user_id

    async def append(self, event: ConsentEvent) -> ConsentEvent:
        """Write one event of this user's.

        Raises:
            NotFoundError: the user does not exist (the foreign key refused the row).
        """
        assert event.user_id == self.user_id, "an event is appended to its owner's ledger"
        try:
            await self.conn.execute(insert(_consents).values(**event.model_dump()))
        except IntegrityError as exc:
            if violation_of(exc) is Violation.foreign_key:
                raise NotFoundError(f"user {self.user_id} does not exist") from exc
            raise
        return event

    async def user_exists(self) -> bool:
        statement = select(UserRow.user_id).where(UserRow.user_id == self.user_id)
        return (await self.conn.execute(statement)).first() is not None

    async def latest(self, purpose: ConsentPurpose) -> ConsentEvent | None:
        found = await self.conn.execute(_LATEST, {"user_id": self.user_id, "purpose": purpose})
        row = found.mappings().one_or_none()
        return None if row is None else ConsentEvent.model_validate(row)

    async def latest_per_purpose(self) -> dict[ConsentPurpose, ConsentEvent]:
        """The latest event of each purpose the user has any event for."""
        ranked = (
            select(
                _consents,
                func.row_number()
                .over(partition_by=ConsentRow.purpose, order_by=_NEWEST_FIRST)
                .label("newness"),
            )
            .where(ConsentRow.user_id == self.user_id)
            .subquery()
        )
        statement = select(*(ranked.c[column.name] for column in _consents.columns)).where(
            ranked.c.newness == 1
        )
        events = [ConsentEvent.model_validate(row) for row in (await self.conn.execute(statement)).mappings()]
        return {event.purpose: event for event in events}

    async def history(
        self, purpose: ConsentPurpose | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[ConsentEvent]:
        """The user's events newest first, of one purpose or all, after the key `after` (a page's last event)."""
        statement = select(_consents).where(ConsentRow.user_id == self.user_id).order_by(*_NEWEST_FIRST)
        if purpose is not None:
            statement = statement.where(ConsentRow.purpose == purpose)
        if after is not None:
            last_at, last_id = after
            statement = statement.where(
                or_(
                    ConsentRow.occurred_at < last_at,
                    and_(ConsentRow.occurred_at == last_at, ConsentRow.consent_id < last_id),
                )
            )
        rows = (await self.conn.execute(statement.limit(limit))).mappings()
        return [ConsentEvent.model_validate(row) for row in rows]
