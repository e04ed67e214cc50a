"""Key rotation: after a new key is put first in STRATUS_ENCRYPTION_KEYS, `KeyManager.rotate_keys` (the CLI's
`stratus-db rotate-keys`) rewraps every user's data key under it, in bounded batches, each its own transaction.

Every personal value is encrypted under its owner's data key (security/personal.py), never directly under a keyring
key: rewrapping the data keys is what moves every value to the active key, without decrypting or rewriting the
values themselves. A data key already under the active key is left as it is, so a rotation interrupted (or run
twice) resumes where it stopped. Once it reports no key left under an old one, the old key can leave the keyring.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.kit.models import table_of
from stratus_db.kit.validation import check_callback, parse_int
from stratus_db.models import UserRow
from stratus_db.security.personal import PersonalData
from stratus_db.security.principal import Principal

if TYPE_CHECKING:
    import uuid

    from stratus_db.database import StratusPostgreSQLIntegration

DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000
_users = table_of(UserRow)


class RotationReport(NamedTuple):
    """What rotate_keys did: the active key id, the data keys rewrapped under it, those already under it, and the
    key ids still named by a data key afterwards (only the active one once the rotation is complete)."""

    active_key: str
    rewrapped: int
    already_current: int
    remaining_key_ids: tuple[str, ...]


class KeyManager:
    """Operations on the encryption keys of one database. Every public method takes a keyword-only `principal`
    (docs/users.md, "Access control"): rotating keys is for trusted code and administrators."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db

    async def rotate_keys(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_progress: Callable[[int, int], None] | None = None,
        principal: Principal | None = None,
    ) -> RotationReport:
        """Rewrap every user's data key under the active keyring key (the first of STRATUS_ENCRYPTION_KEYS).

        Args:
            batch_size: 1-10,000 users per transaction.
            on_progress: called after each batch with (users done, users in all).
            principal: who makes this call, instead of the context's principal.

        Returns:
            RotationReport.

        Raises:
            ValidationError: a malformed batch size or callback.
            DecryptionError: a data key does not unwrap (under a key the keyring no longer holds, or altered); the
                batches before it are committed, and a later run resumes after fixing the keyring.
            PermissionDeniedError: not trusted code or an administrator.
        """
        async with self._db.operation("keys.rotate", principal=principal) as op:
            size = parse_int(batch_size, "batch_size", minimum=1, maximum=MAX_BATCH_SIZE)
            check_callback(on_progress, "on_progress")
            await op.authorize(None)
            personal = PersonalData.of(self._db)
            active = personal.cipher.keyring.active_id
            total = await op.run(_count_keys, tx=None)
            rewrapped = current = 0
            after: uuid.UUID | None = None
            while True:
                batch = partial(_rewrap_batch, personal=personal, after=after, size=size)
                changed, unchanged, after = await op.run(batch, tx=None)
                if after is None:
                    break
                rewrapped += changed
                current += unchanged
                if on_progress is not None:
                    on_progress(rewrapped + current, max(total, rewrapped + current))
            remaining = await op.run(_key_ids, tx=None)
            self._db.log.info(
                "data keys rewrapped", active_key=active, rewrapped=rewrapped, already_current=current
            )
            return RotationReport(active, rewrapped, current, remaining)


async def _count_keys(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.count()).where(_users.c.data_key.is_not(None))) or 0)


async def _key_ids(conn: AsyncConnection) -> tuple[str, ...]:
    """The keyring key ids the stored data keys are wrapped under (a wrapped key reads `v1:w:<key id>:…`, the id at
    most 16 characters: the first 22 name it)."""
    heads = await conn.execute(
        select(func.substr(_users.c.data_key, 1, 22)).where(_users.c.data_key.is_not(None)).distinct()
    )
    return tuple(sorted({head.split(":")[2] for (head,) in heads}))


async def _rewrap_batch(
    conn: AsyncConnection, *, personal: PersonalData, after: uuid.UUID | None, size: int
) -> tuple[int, int, uuid.UUID | None]:
    """Rewrap the data keys of the next `size` users after `after` (locked); returns (rewrapped, already current,
    the last user id, or None when there were none left)."""
    statement = (
        select(_users.c.user_id, _users.c.data_key)
        .where(_users.c.data_key.is_not(None))
        .order_by(_users.c.user_id)
        .limit(size)
        # FOR NO KEY UPDATE: the rows' keys stay shareable, so inserts that reference these users go on meanwhile.
        .with_for_update(key_share=True)
    )
    if after is not None:
        statement = statement.where(_users.c.user_id > after)
    rows = list(await conn.execute(statement))
    if not rows:
        return 0, 0, None
    changes = []
    for row in rows:
        if personal.cipher.needs_rotation(row.data_key):
            changes.append(
                {"b_id": row.user_id, "b_key": personal.cipher.rewrap_data_key(row.data_key, row.user_id)}
            )
    if changes:
        await conn.execute(
            update(_users).where(_users.c.user_id == bindparam("b_id")).values(data_key=bindparam("b_key")),
            changes,
        )
    return len(changes), len(rows) - len(changes), rows[-1].user_id
