"""PrivacyManager: the data subject's rights under LGPD (docs/privacy.md)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import StringConstraints
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError, StratusError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.validation import InputModel, NonEmptyStr, parse_uuid, validate_input
from stratus_db.memory.cache import MemoryCache
from stratus_db.privacy.erasure import (
    ErasureReport,
    count_owned,
    delete_owned,
    forget_words,
    owned_tables,
    pseudonymise_audit,
)
from stratus_db.privacy.export import EXPORT_FORMAT, EXPORT_VERSION, begin_snapshot, stream_export
from stratus_db.security.principal import Principal
from stratus_db.users.repository import UserRepository

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration


class _ErasureReason(InputModel):
    reason: Annotated[NonEmptyStr, StringConstraints(max_length=500)]


class PrivacyManager:
    """Export and erasure of a person's data (docs/privacy.md). Every method takes a keyword-only `principal`, who
    makes the call, over the context's (as UserManager's do)."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)

    async def export_user_data(
        self, user_id: uuid.UUID | str, *, principal: Principal | None = None
    ) -> AsyncGenerator[bytes]:
        """Everything held about the user as one JSON document (format `stratus-db/user-export` version 1,
        privacy/export.py and docs/privacy.md), streamed: `async for chunk in await privacy.export_user_data(uid)`.

        The call checks the arguments and the caller's right, and writes the export's audit row (action `export`,
        committed before anything is read: an export begun is on record even if the reader stops). Iterating reads
        the data in one snapshot transaction, in batches, so memory stays bounded whatever the person holds; the
        connection is held until the iteration ends (close the iterator, e.g. `aclosing`, to stop early).

        Raises:
            ValidationError: `user_id` is not a UUID.
            PermissionDeniedError: the caller may not export this user's data (the user and trusted code may; not
                an agent, not an administrator or auditor: the export holds conversation content).
            NotFoundError: no such user.
        """
        async with self._db.operation("privacy.export", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            await op.authorize(key)
            exported_at = self._db.clock()

            async def record(conn: AsyncConnection) -> None:
                if await UserRepository(conn).get(key) is None:
                    raise NotFoundError(f"user {key} does not exist")
                await self._audit.record(
                    conn,
                    action=AuditAction.export,
                    table_name="users",
                    record_id=key,
                    user_id=key,
                    new_values={"format": EXPORT_FORMAT, "version": EXPORT_VERSION},
                )

            await op.run(record)
        return self._read_export(key, exported_at)

    async def _read_export(self, key: uuid.UUID, exported_at: datetime) -> AsyncGenerator[bytes]:
        async with self._db.transaction(read_only=True) as conn:
            await begin_snapshot(conn)
            async for chunk in stream_export(conn, key, exported_at):
                yield chunk

    async def erase_user(
        self,
        user_id: uuid.UUID | str,
        reason: str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> ErasureReport:
        """Erase everything held about the person (LGPD Art. 16 and 18 VI), in one transaction:

        - the audit rows about them are pseudonymised: `user_id` (and a `record_id` that was theirs) become a fresh
          pseudonym, the old and new values keep only the names of the fields ("[erased]" for each value), the IP
          address and user agent are cleared, and `user:<their id>` as actor becomes `user:<pseudonym>`;
        - their rows are deleted: the profile, credentials, memories, conversations and messages (and any table
          that references users). Kinds named in STRATUS_ERASURE_LEGAL_HOLD are kept, and then so is the user's row,
          as a tombstone without personal data, so that the held rows keep their owner;
        - the erasure is audited (action `erase`) under the pseudonym, with the reason and the counts, never the
          erased values. `reason` is kept in the trail: it should cite the request, not describe the person.

        On SQLite the full-text indexes are then merged so that no deleted word stays in them. Caches in every
        process forget the person's memories.

        Returns:
            ErasureReport: the pseudonym, rows deleted per table, audit rows pseudonymised, kinds held.

        Raises:
            ValidationError: `user_id` is not a UUID, or `reason` is not 1-500 characters of text.
            PermissionDeniedError: not the person, an administrator or trusted code.
            NotFoundError: no such user.
        """
        async with self._db.operation("privacy.erase", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            cause = validate_input(_ErasureReason, {"reason": reason}).reason
            await op.authorize(key)
            held = self._db.settings.STRATUS_ERASURE_LEGAL_HOLD

            async def work(conn: AsyncConnection) -> ErasureReport:
                if await UserRepository(conn).get(key, for_update=True) is None:
                    raise NotFoundError(f"user {key} does not exist")
                pseudonym = new_id()
                tables = owned_tables(held)
                deleted = await count_owned(conn, key, tables)
                pseudonymised = await pseudonymise_audit(conn, key, pseudonym)
                await delete_owned(conn, key, pseudonym, held, self._db.clock())
                if not held:
                    deleted["users"] = 1
                await MemoryCache.of(self._db).invalidate_everywhere(conn, key)
                report = ErasureReport(pseudonym, deleted, pseudonymised, tuple(sorted(held)))
                entry = self._audit.entry(
                    action=AuditAction.erase,
                    table_name="users",
                    record_id=pseudonym,
                    user_id=pseudonym,
                    new_values={
                        "reason": cause,
                        "deleted": deleted,
                        "audit_rows_pseudonymised": pseudonymised,
                        "held": list(report.held),
                    },
                )
                if entry.context.actor == f"user:{key}":
                    # The person asked for it themselves: the row must not name them either.
                    anonymous = entry.context._replace(
                        actor=f"user:{pseudonym}", ip_address=None, user_agent=None
                    )
                    entry = entry._replace(context=anonymous)
                await self._audit.append(conn, [entry])
                return report

            report = await op.run(work, tx=tx)
            if tx is None:
                async with self._db.transaction() as conn:
                    await forget_words(conn)
            return report

    async def write_user_export(
        self, user_id: uuid.UUID | str, path: str | os.PathLike[str], *, principal: Principal | None = None
    ) -> int:
        """Write the user's export document to the file `path` (created or replaced only once complete: the text
        goes to a temporary file beside it, renamed at the end). Returns the number of bytes written.

        Raises:
            ValidationError: `path` is not a path or its directory does not exist; and as export_user_data.
        """
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValidationError(f"path must be a file path, got {type(path).__name__}")
        target = Path(path)
        if not target.parent.is_dir():
            raise ValidationError(f"path: the directory {target.parent} does not exist")
        chunks = await self.export_user_data(user_id, principal=principal)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        written = 0
        try:
            with partial.open("wb") as file:
                async for chunk in chunks:
                    written += file.write(chunk)
            partial.replace(target)
        except OSError as exc:
            raise StratusError(f"could not write the export to {target}: {exc.strerror or exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return written
