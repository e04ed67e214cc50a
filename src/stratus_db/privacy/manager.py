"""PrivacyManager: the data subject's rights under LGPD (docs/privacy.md)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import StringConstraints
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.rooms_base import recent_messages
from stratus_db.errors import NotFoundError, StratusError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import check_limit
from stratus_db.kit.sql import begin_snapshot
from stratus_db.kit.statistics import analyze_after
from stratus_db.kit.tasks import start_background
from stratus_db.kit.validation import (
    InputModel,
    NonEmptyStr,
    check_callback,
    parse_uuid,
    shown,
    validate_input,
)
from stratus_db.memory.cache import MemoryCache
from stratus_db.privacy.erasure import (
    ErasureReport,
    delete_owned,
    forget_words,
    pseudonymise_audit,
)
from stratus_db.privacy.export import EXPORT_FORMAT, EXPORT_VERSION, stream_export
from stratus_db.privacy.retention import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    Batch,
    RetentionKind,
    RetentionReport,
    RetentionRule,
    configured_rules,
    count_past,
    inactive_users,
    purge_conversations,
    purge_memories,
)
from stratus_db.security.personal import PersonalData
from stratus_db.security.principal import Principal
from stratus_db.users.repository import UserRepository

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration


class ErasureReason(InputModel):
    reason: Annotated[NonEmptyStr, StringConstraints(max_length=500)]


RETENTION_TABLES = {
    RetentionKind.conversations: "conversations",
    RetentionKind.memories: "memory_entries",
    RetentionKind.inactive_accounts: "users",
}
"""The table each retention rule deletes from: analyzed after a large run (kit/statistics.py)."""


class PrivacyManager:
    """Export and erasure of a person's data, and retention (docs/privacy.md). Every method takes a keyword-only
    `principal`, who makes the call, over the context's (as UserManager's do)."""

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
                if await UserRepository(conn, PersonalData.of(self._db)).get(key) is None:
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
            async for chunk in stream_export(conn, key, exported_at, PersonalData.of(self._db)):
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
        - the user's data key goes with their row (or is cleared from the tombstone, unless a held kind needs it:
          credentials or memories), so every value encrypted under it, in the audit trail too, is unreadable for
          good (crypto-shredding);
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
            cause = validate_input(ErasureReason, {"reason": reason}).reason
            await op.authorize(key, tx=tx)
            held = self._db.settings.STRATUS_ERASURE_LEGAL_HOLD

            async def work(conn: AsyncConnection) -> ErasureReport:
                if await UserRepository(conn, PersonalData.of(self._db)).get(key, for_update=True) is None:
                    raise NotFoundError(f"user {key} does not exist")
                pseudonym = new_id()
                deleted = await delete_owned(conn, key, pseudonym, held, self._db.clock())
                pseudonymised = await pseudonymise_audit(
                    conn, key, pseudonym, self._db.clock(), PersonalData.of(self._db).blind_index.audit_field
                )
                await MemoryCache.of(self._db).invalidate_everywhere(conn, key)
                # This process's conversation tails; another process's are never served for a purged conversation
                # and leave its memory as its LRU turns over (docs/privacy.md).
                self._db.after_commit(conn, partial(recent_messages(self._db).drop_user, key))
                self._db.after_commit(conn, partial(PersonalData.of(self._db).forget, key))
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
                # The address and user agent of the request may be the person's own device, and the actor the person.
                actor = f"user:{pseudonym}" if entry.context.actor == f"user:{key}" else entry.context.actor
                entry = entry._replace(
                    context=entry.context._replace(actor=actor, ip_address=None, user_agent=None)
                )
                await self._audit.append(conn, [entry])
                return report

            report = await op.run(work, tx=tx)
            if tx is None:
                await self._forget_words()
            else:  # once the caller's transaction has committed the deletions
                self._db.after_commit(tx, self._forget_words_soon)
            return report

    def _forget_words_soon(self) -> None:
        start_background(self._forget_words(), log=self._db.log, what="privacy.erase")

    async def _forget_words(self) -> None:
        async with self._db.transaction() as conn:
            await forget_words(conn)

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
        unfinished = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        written = 0
        try:
            # Only the owner of the process may read it: it holds health data (medical certificates).
            with os.fdopen(os.open(unfinished, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
                async for chunk in chunks:
                    written += file.write(chunk)
            unfinished.replace(target)
        except OSError as exc:
            raise StratusError(f"could not write the export to {target}: {exc.strerror or exc}") from exc
        finally:
            unfinished.unlink(missing_ok=True)
        return written

    async def apply_retention(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False,
        on_progress: Callable[[RetentionKind, int], object] | None = None,
        principal: Principal | None = None,
    ) -> RetentionReport:
        """Delete what the retention settings no longer keep (docs/privacy.md "Retention"): conversations with no
        activity for STRATUS_RETENTION_CONVERSATIONS_DAYS, with their messages; memories neither updated nor read
        for STRATUS_RETENTION_MEMORIES_DAYS; users inactive (`last_active`) for
        STRATUS_RETENTION_INACTIVE_ACCOUNTS_DAYS, erased with erase_user. A setting of 0 (the default) keeps that
        kind for ever. The cutoffs are taken once, when the call begins.

        Each rule deletes in batches of at most `batch_size` rows, each batch in a transaction of its own, so a
        large backlog never holds one long transaction; a run stopped half-way is resumed by running it again. Every
        deletion is audited with the rule's reason: one `purge` row per conversation (its counts), one `purge` row
        per user and batch of memories (their ids and keys), one `erase` row per user (under their pseudonym).

        `on_progress(kind, deleted_so_far)` is called after each batch that deleted something has committed. If it
        raises, the run stops there (a StratusError as it is, anything else as the cause of an UnexpectedError);
        the batches already committed stay deleted.

        Args:
            batch_size: 1-10,000 rows per transaction (conversations, memories or users).
            dry_run: count what would be deleted, per rule, and delete nothing (on_progress is not called).
            on_progress: a function, or None.

        Returns:
            RetentionReport: the rules applied and the rows deleted (or, in a dry run, that would be) per rule.

        Raises:
            ValidationError: `batch_size` outside 1-10,000, `dry_run` not a bool, `on_progress` not a function.
            PermissionDeniedError: not an administrator or trusted code.
        """
        async with self._db.operation(
            "privacy.apply_retention", read_only=dry_run is True, principal=principal
        ) as op:
            size = check_limit(batch_size, maximum=MAX_BATCH_SIZE, name="batch_size")
            if not isinstance(dry_run, bool):
                raise ValidationError(f"dry_run must be true or false, got {shown(dry_run)}")
            check_callback(on_progress, "on_progress")
            await op.authorize(None)
            rules = configured_rules(self._db.settings, self._db.clock())

            if dry_run:

                async def count(conn: AsyncConnection) -> list[tuple[int, int]]:
                    return [await count_past(conn, rule) for rule in rules]

                counts = await op.run(count)
                return RetentionReport(
                    True,
                    rules,
                    {rule.kind: deleted for rule, (deleted, _messages) in zip(rules, counts, strict=True)},
                    sum(messages for _deleted, messages in counts),
                )

            deleted: dict[RetentionKind, int] = {}
            messages = 0
            for rule in rules:
                total, after = 0, None
                while True:
                    batch = await op.run(partial(self._retention_batch, rule, after, size))
                    total += batch.deleted
                    messages += batch.messages
                    if batch.deleted and on_progress is not None:
                        on_progress(rule.kind, total)
                    if batch.deleted < size:
                        break
                    after = batch.last
                deleted[rule.kind] = total
            await self._after_retention(deleted, messages)
            return RetentionReport(False, rules, deleted, messages)

    async def _retention_batch(
        self, rule: RetentionRule, after: uuid.UUID | None, size: int, conn: AsyncConnection
    ) -> Batch:
        if rule.kind is RetentionKind.conversations:
            return await purge_conversations(conn, self._audit, rule, after, size)
        if rule.kind is RetentionKind.memories:
            return await purge_memories(conn, MemoryCache.of(self._db), self._db.clock(), rule, after, size)
        users = await inactive_users(conn, rule, after, size)
        for user in users:
            await self.erase_user(user, rule.reason, tx=conn)
        return Batch(len(users), 0, users[-1] if users else after)

    async def _after_retention(self, deleted: dict[RetentionKind, int], messages: int) -> None:
        """What follows a run: SQLite's full-text indexes merged so that no deleted word stays in them (as after
        erase_user; after every run, so that running again also completes a run that stopped half-way), and fresh
        planner statistics for the tables that shrank by much (PostgreSQL)."""
        if not deleted:
            return
        async with self._db.transaction() as conn:
            await forget_words(conn)
        for kind, count in deleted.items():
            await analyze_after(self._db, RETENTION_TABLES[kind], count, tx=None)
        await analyze_after(self._db, "messages", messages, tx=None)
