"""How long each memory tier lives, when a memory is promoted, and how many one user may keep."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from stratus_db.config import Settings
from stratus_db.models import MemoryType


@dataclass(frozen=True)
class PromotionRule:
    """A `source` memory read at least `min_accesses` times, with importance ≥ `min_importance`, becomes `target`."""

    source: MemoryType
    target: MemoryType
    min_accesses: int
    min_importance: float


@dataclass(frozen=True)
class MemoryPolicy:
    ttls: dict[MemoryType, timedelta | None]
    sliding: frozenset[MemoryType]
    promotions: tuple[PromotionRule, ...]
    max_per_user: int
    recency_half_life: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryPolicy:
        def ttl(seconds: int) -> timedelta | None:
            return timedelta(seconds=seconds) if seconds else None

        return cls(
            ttls={
                MemoryType.short_term: ttl(settings.STRATUS_MEMORY_TTL_SHORT_TERM_S),
                MemoryType.medium_term: ttl(settings.STRATUS_MEMORY_TTL_MEDIUM_TERM_S),
                MemoryType.long_term: ttl(settings.STRATUS_MEMORY_TTL_LONG_TERM_S),
                MemoryType.critical: None,
            },
            # Critical memories never expire, so there is nothing to slide.
            sliding=settings.STRATUS_MEMORY_SLIDING_TIERS - {MemoryType.critical},
            promotions=(
                PromotionRule(
                    MemoryType.short_term,
                    MemoryType.medium_term,
                    settings.STRATUS_MEMORY_PROMOTE_TO_MEDIUM_ACCESSES,
                    settings.STRATUS_MEMORY_PROMOTE_MIN_IMPORTANCE,
                ),
                PromotionRule(
                    MemoryType.medium_term,
                    MemoryType.long_term,
                    settings.STRATUS_MEMORY_PROMOTE_TO_LONG_ACCESSES,
                    settings.STRATUS_MEMORY_PROMOTE_MIN_IMPORTANCE,
                ),
            ),
            max_per_user=settings.STRATUS_MEMORY_MAX_PER_USER,
            recency_half_life=timedelta(seconds=settings.STRATUS_MEMORY_RECENCY_HALF_LIFE_S),
        )

    def room(self, live: int) -> int:
        """How many more memories a user with `live` memories counting towards the cap may keep (< 0: too many)."""
        return self.max_per_user - live

    def default_expiry(self, tier: MemoryType, now: datetime) -> datetime | None:
        ttl = self.ttls[tier]
        return None if ttl is None else now + ttl

    @property
    def reads_slide(self) -> bool:
        """Whether a read extends some memory's expiry: a sliding tier has a lifetime."""
        return any(self.ttls[tier] is not None for tier in self.sliding)

    def sliding_expiries(self, now: datetime) -> dict[MemoryType, datetime]:
        """For each sliding tier with a TTL, the expiry a read at `now` extends a memory to."""
        return {tier: now + ttl for tier in self.sliding if (ttl := self.ttls[tier]) is not None}

    def promotion_for(self, tier: MemoryType, access_count: int, importance: float) -> PromotionRule | None:
        for rule in self.promotions:
            if (
                rule.source == tier
                and access_count >= rule.min_accesses
                and importance >= rule.min_importance
            ):
                return rule
        return None


IMPORTANCE_WEIGHT = 0.5
RECENCY_WEIGHT = 0.3
FREQUENCY_WEIGHT = 0.2
"""How a memory's standing blends importance, recency and use (they sum to 1)."""
FREQUENCY_SATURATION = 100
"""Accesses at which the frequency component reaches 1 (it grows logarithmically up to there)."""


def recency(last_used: datetime, now: datetime, half_life: timedelta) -> float:
    """1 for a memory used now, 0.5 after one half-life, decaying exponentially (Generative Agents)."""
    age = max((now - last_used).total_seconds(), 0.0)
    return math.pow(0.5, age / half_life.total_seconds())


def frequency(access_count: int) -> float:
    return min(1.0, math.log1p(max(access_count, 0)) / math.log1p(FREQUENCY_SATURATION))


LEXICAL_WEIGHT = 0.6
"""Share of a search score that comes from matching the query; the rest is the memory's standing."""


def standing(importance: float, recency_score: float, frequency_score: float) -> float:
    """The value of keeping a memory, from 0 to 1: what eviction ranks by, and the non-lexical part of search."""
    return (
        IMPORTANCE_WEIGHT * importance + RECENCY_WEIGHT * recency_score + FREQUENCY_WEIGHT * frequency_score
    )


def search_score(lexical: float, standing_score: float) -> float:
    return LEXICAL_WEIGHT * lexical + (1 - LEXICAL_WEIGHT) * standing_score
