"""The consent checks the library makes before it acts on a purpose that needs consent (STRATUS_CONSENT_REQUIRED).

`ConsentCheck` is what a manager holds: the purposes its handle's settings require, and the handle's `ConsentCache`.
A check outside a caller's transaction is answered from the cache when it can be; a miss reads the latest event of the
(user, purpose) in one indexed statement and caches the answer for STRATUS_CONSENT_CACHE_TTL_S.

Staleness. A grant or revocation made through this handle forgets the cached answer at once, and again as its
transaction commits; an answer read while that write was in flight is not cached (the epoch check). Another process's
grant or revocation is seen here within the TTL, when the cached answer expires: that TTL is the bound (docs/privacy.md).
A check inside a caller's transaction reads the ledger in that transaction (it sees a grant made earlier in it) and
neither uses nor fills the cache.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import ConsentRequiredError
from stratus_db.models import ConsentAction, ConsentPurpose
from stratus_db.privacy.consent_repository import ConsentRepository

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

CACHE_MAX_ENTRIES = 50_000
"""(user, purpose) answers a process keeps; the least recently used goes first (an entry is about 200 bytes)."""

ConsentKey = tuple[uuid.UUID, ConsentPurpose]


class ConsentCache:
    """Each handle's cached consent answers, and the counts `db.metrics()` shows under `consent`."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self.ttl = db.settings.STRATUS_CONSENT_CACHE_TTL_S
        self.now: Callable[[], float] = time.monotonic
        """The TTL's clock: monotonic seconds (a wall clock may jump); tests replace it."""
        self._entries: OrderedDict[ConsentKey, tuple[bool, float]] = OrderedDict()
        self._epoch = 0
        self.hits = self.misses = self.refusals = self.skipped = 0
        db.add_metrics_source("consent", self.stats)

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> ConsentCache:
        """The cache of this database handle, shared by every manager built on it."""
        return db.extension("privacy.consent_cache", lambda: cls(db))

    def lookup(self, key: ConsentKey) -> bool | None:
        """The cached answer, or None when there is none or it is older than the TTL."""
        found = self._entries.get(key)
        if found is None:
            return None
        granted, expires = found
        if self.now() >= expires:
            del self._entries[key]
            return None
        return granted

    def epoch(self) -> int:
        """Taken before a read: `admit` refuses the answer if anything was invalidated since."""
        return self._epoch

    def admit(self, key: ConsentKey, granted: bool, epoch: int) -> None:
        if epoch != self._epoch or self.ttl <= 0:
            return
        self._entries[key] = (granted, self.now() + self.ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > CACHE_MAX_ENTRIES:
            self._entries.popitem(last=False)

    def invalidate(self, key: ConsentKey) -> None:
        self._epoch += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "cached": len(self._entries),
            "ttl_s": self.ttl,
            "hits": self.hits,
            "misses": self.misses,
            "refusals": self.refusals,
            "skipped_background_compressions": self.skipped,
        }


class ConsentCheck:
    """The consent checks of one manager: the purposes required when it was made, and its handle's cache."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self.required: frozenset[ConsentPurpose] = db.settings.STRATUS_CONSENT_REQUIRED
        self.cache = ConsentCache.of(db)

    async def allowed(
        self, user_id: uuid.UUID, purpose: ConsentPurpose, *, tx: AsyncConnection | None
    ) -> bool:
        """Whether the latest event of (user, purpose) is a grant: False for a user who was never asked, or who
        does not exist."""
        if purpose not in self.required:
            return True
        key = (user_id, purpose)
        if tx is None:
            cached = self.cache.lookup(key)
            if cached is not None:
                self.cache.hits += 1
                return cached
            self.cache.misses += 1
        epoch = self.cache.epoch()

        async def read(conn: AsyncConnection) -> bool:
            latest = await ConsentRepository(conn, user_id).latest(purpose)
            return latest is not None and latest.action is ConsentAction.granted

        # An operation of its own (measured as `consent.check`, read-only): the calling operation may be a write,
        # whose own transaction this read need not take part in.
        async with self._db.operation("consent.check", read_only=True) as op:
            granted = await op.run(read, tx=tx, single_statement=True)
        if tx is None:
            self.cache.admit(key, granted, epoch)
        return granted

    async def require(
        self, user_id: uuid.UUID, purpose: ConsentPurpose, *, tx: AsyncConnection | None, acting: str
    ) -> None:
        """Go on only if the user has consented to `purpose` (when STRATUS_CONSENT_REQUIRED names it).

        Raises:
            ConsentRequiredError: the latest event is not a grant; `acting` says what was not done.
        """
        if tx is None and self.cache.lookup((user_id, purpose)) is True:
            # The common case answered without a coroutine of its own: this sits on get_memory's cached path.
            self.cache.hits += 1
            return
        if not await self.allowed(user_id, purpose, tx=tx):
            self.cache.refusals += 1
            raise ConsentRequiredError(
                f"user {user_id} has not consented to {purpose.value}, which {acting} needs; nothing was sent or "
                f"written (ConsentManager.grant_consent records a consent)",
                purpose=purpose.value,
                user_id=str(user_id),
            )
