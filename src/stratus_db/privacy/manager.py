"""PrivacyManager: the data subject's rights under LGPD (docs/privacy.md)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError, StratusError, ValidationError
from stratus_db.kit.validation import parse_uuid
from stratus_db.privacy.export import EXPORT_FORMAT, EXPORT_VERSION, begin_snapshot, stream_export
from stratus_db.users.repository import UserRepository

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration


class PrivacyManager:
    """Export of a person's data (and, later in issue 14, erasure and consents)."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)

    async def export_user_data(self, user_id: uuid.UUID | str) -> AsyncGenerator[bytes]:
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
        async with self._db.operation("privacy.export") as op:
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

    async def write_user_export(self, user_id: uuid.UUID | str, path: str | os.PathLike[str]) -> int:
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
        chunks = await self.export_user_data(user_id)
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
