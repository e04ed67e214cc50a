"""ConsentManager: the consent ledger (LGPD Art. 8 and 18 IX): who consented to what, to which text, where and when.

A manager of its own rather than methods of UserManager: consent has its own table, rules and cache, and the
managers that act on a purpose (memories, conversations) check it through privacy/gate.py, which a manager may use
without reaching into the users domain.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, aware_datetime, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.validation import parse_enum, parse_uuid, validate_input
from stratus_db.models import ConsentAction, ConsentPurpose
from stratus_db.privacy.consent_repository import ConsentRepository
from stratus_db.privacy.consent_schemas import (
    ConsentEvent,
    ConsentGrant,
    ConsentRevocation,
    ConsentState,
)
from stratus_db.privacy.gate import ConsentCache
from stratus_db.security.principal import Principal

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

TABLE = "user_consents"


class ConsentManager:
    """Grant and revoke consent to a purpose, and read where a user stands. Append-only: every grant and every
    revocation is a new row (the rows before it are never changed), written with its audit row in one transaction;
    the latest event of a (user, purpose) decides.

    Every method takes a keyword-only `principal`, who makes the call, over the context's (as UserManager's do)."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)
        self._cache = ConsentCache.of(db)

    async def grant_consent(
        self,
        user_id: uuid.UUID | str,
        purpose: ConsentPurpose | str,
        text_version: str,
        channel: str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> ConsentEvent:
        """Record that the user consents to `purpose`, having been shown version `text_version` of its text.

        Granting again (a new text version, a confirmation) records another event; the latest decides.

        Args:
            purpose: one of ConsentPurpose (memory_personalisation, external_summarizer, analytics, marketing,
                model_improvement).
            text_version: the version of the consent text shown, 1–50 characters (trimmed).
            channel: where the user consented: a short name (app, web, api, support…; lower-case letters, digits,
                `_` and `-`, 1–50 characters).
            tx: a transaction from `db.transaction()` to join.

        Returns:
            The event recorded.

        Raises:
            ValidationError: a malformed argument or an unknown purpose (the message lists the purposes); nothing is
                written.
            NotFoundError: no such user; nothing is written.
        """
        async with self._db.operation("consent.grant", principal=principal) as op:
            data = validate_input(
                ConsentGrant,
                {
                    "user_id": parse_uuid(user_id, "user_id"),
                    "purpose": parse_enum(ConsentPurpose, purpose, "purpose"),
                    "text_version": text_version,
                    "channel": channel,
                },
            )
            await op.authorize(data.user_id, tx=tx)
            event = ConsentEvent(
                consent_id=new_id(),
                user_id=data.user_id,
                purpose=data.purpose,
                action=ConsentAction.granted,
                text_version=data.text_version,
                channel=data.channel,
                occurred_at=self._db.clock(),
            )
            return await op.run(lambda conn: self._append(conn, event, AuditAction.grant), tx=tx)

    async def revoke_consent(
        self,
        user_id: uuid.UUID | str,
        purpose: ConsentPurpose | str,
        channel: str,
        *,
        text_version: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> ConsentEvent:
        """Record that the user withdraws consent to `purpose`. A new event: the grant's row is unchanged, and the
        library's checks refuse the purpose from now on (in other processes within STRATUS_CONSENT_CACHE_TTL_S).
        Revoking what was never granted is recorded too (an explicit refusal).

        Args:
            purpose: one of ConsentPurpose.
            channel: where the user revoked it (as for grant_consent).
            text_version: the version of the text shown at revocation, if any (1–50 characters).
            tx: a transaction from `db.transaction()` to join.

        Raises:
            ValidationError: a malformed argument or an unknown purpose; nothing is written.
            NotFoundError: no such user; nothing is written.
        """
        async with self._db.operation("consent.revoke", principal=principal) as op:
            data = validate_input(
                ConsentRevocation,
                {
                    "user_id": parse_uuid(user_id, "user_id"),
                    "purpose": parse_enum(ConsentPurpose, purpose, "purpose"),
                    "channel": channel,
                    "text_version": text_version,
                },
            )
            await op.authorize(data.user_id, tx=tx)
            event = ConsentEvent(
                consent_id=new_id(),
                user_id=data.user_id,
                purpose=data.purpose,
                action=ConsentAction.revoked,
                text_version=data.text_version,
                channel=data.channel,
                occurred_at=self._db.clock(),
            )
            return await op.run(lambda conn: self._append(conn, event, AuditAction.revoke), tx=tx)

    async def _append(self, conn: AsyncConnection, event: ConsentEvent, action: AuditAction) -> ConsentEvent:
        key = (event.user_id, event.purpose)
        # Forgotten now, so that no check of this process answers from before the write, and again at commit, so
        # that no answer read while the write was in flight is kept.
        self._cache.invalidate(key)
        self._db.after_commit(conn, lambda: self._cache.invalidate(key))
        recorded = await ConsentRepository(conn, event.user_id).append(event)
        await self._audit.record(
            conn,
            action=action,
            table_name=TABLE,
            record_id=event.consent_id,
            user_id=event.user_id,
            new_values=event.model_dump(
                mode="json", include={"purpose", "action", "text_version", "channel"}
            ),
        )
        return recorded

    async def has_consent(
        self,
        user_id: uuid.UUID | str,
        purpose: ConsentPurpose | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> bool:
        """Whether the user's latest event for `purpose` is a grant: False after a revocation, when the user was never
        asked, or when there is no such user. Read from the ledger (never from the checks' cache).

        Raises:
            ValidationError: a malformed user id or an unknown purpose.
        """
        async with self._db.operation("consent.has", read_only=True, principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            wanted = parse_enum(ConsentPurpose, purpose, "purpose")
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> bool:
                latest = await ConsentRepository(conn, key).latest(wanted)
                return latest is not None and latest.action is ConsentAction.granted

            return await op.run(work, tx=tx, single_statement=True)

    async def consents(
        self,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[ConsentState]:
        """Where the user stands on every purpose, in ConsentPurpose's order: granted or not, and the latest event
        (None for a purpose the user was never asked about).

        Raises:
            ValidationError: a malformed user id.
            NotFoundError: no such user.
        """
        async with self._db.operation("consent.list", read_only=True, principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> dict[ConsentPurpose, ConsentEvent]:
                repository = ConsentRepository(conn, key)
                if not await repository.user_exists():
                    raise NotFoundError(f"user {key} does not exist")
                return await repository.latest_per_purpose()

            latest = await op.run(work, tx=tx)
            return [
                ConsentState(
                    purpose=purpose,
                    granted=purpose in latest and latest[purpose].action is ConsentAction.granted,
                    latest=latest.get(purpose),
                )
                for purpose in ConsentPurpose
            ]

    async def consent_history(
        self,
        user_id: uuid.UUID | str,
        *,
        purpose: ConsentPurpose | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[ConsentEvent]:
        """The user's consent events, newest first, of one purpose or all: the ledger as recorded.

        Raises:
            ValidationError: a malformed user id, an unknown purpose, a limit outside 1–500, or a cursor not issued
                here.
            NotFoundError: no such user.
        """
        async with self._db.operation("consent.history", read_only=True, principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            wanted = None if purpose is None else parse_enum(ConsentPurpose, purpose, "purpose")
            limit = check_limit(limit)
            after: tuple[datetime, uuid.UUID] | None = None
            if cursor is not None:
                last_at, last_id = decode_cursor(cursor, (aware_datetime, uuid.UUID))
                after = (last_at, last_id)
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> Page[ConsentEvent]:
                repository = ConsentRepository(conn, key)
                if not await repository.user_exists():
                    raise NotFoundError(f"user {key} does not exist")
                events = await repository.history(wanted, after, limit + 1)
                return make_page(
                    events,
                    limit,
                    lambda event: encode_cursor(event.occurred_at.isoformat(), event.consent_id),
                )

            return await op.run(work, tx=tx)
