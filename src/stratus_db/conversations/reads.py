"""Reads: messages in order, the context window within a token budget, search and usage statistics."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.conversations import stats, window
from stratus_db.conversations.recent import Tail
from stratus_db.conversations.repository import ContextRead, ConversationRepository
from stratus_db.conversations.rooms_base import (
    ConversationRoom,
    message_of,
    not_found,
)
from stratus_db.conversations.schemas import (
    ContextWindow,
    ConversationStats,
    Message,
    MessageQuery,
    SearchHit,
    StatsWindow,
    UsageStats,
)
from stratus_db.errors import ValidationError
from stratus_db.kit.schemas import check_limit
from stratus_db.kit.text import query_terms
from stratus_db.kit.validation import (
    INT32_MAX,
    parse_int,
    parse_uuid,
    validate_input,
)
from stratus_db.security.principal import Principal

MAX_CONTEXT_TOKENS = 2_000_000


class ConversationReads(ConversationRoom):
    """Reads: messages in order, the context window within a token budget, search and usage statistics."""

    async def get_messages(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        limit: int = 50,
        after_seq: int | None = None,
        before_seq: int | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[Message]:
        """Messages of the user's conversation in sequence order, summarized ones included.

        Without bounds, the first `limit` messages; with `after_seq`, the `limit` messages that follow it; with only
        `before_seq`, the `limit` messages just before it (still oldest first), which pages backwards from the end.

        Raises:
            ValidationError: a malformed id, limit or bound.
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.get_messages", read_only=True, principal=principal) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            limit = check_limit(limit, maximum=1000)
            for name, bound in (("after_seq", after_seq), ("before_seq", before_seq)):
                if bound is not None:
                    parse_int(bound, name, minimum=0, maximum=INT32_MAX)  # seq is an integer column
            await op.authorize(owner, tx=tx)

            async def work(conn: AsyncConnection) -> list[Message]:
                repository = ConversationRepository(conn, owner)
                found = await repository.messages(
                    key, after_seq=after_seq, before_seq=before_seq, limit=limit
                )
                if not found and await repository.get(key) is None:
                    raise not_found(key, owner)
                return [message_of(stored) for stored in found]

            return await op.run(work, tx=tx)

    async def get_context(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        max_tokens: int,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> ContextWindow:
        """What an agent sends its model: the summary (if any, and if it fits) and the newest messages that fit.

        Never more than `max_tokens` in all, never half a message (rules in conversations/window.py). Works on
        conversations of any status.

        Raises:
            ValidationError: a malformed id, or max_tokens not an integer from 1 to 2,000,000.
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation("conversation.get_context", read_only=True, principal=principal) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            if (
                isinstance(max_tokens, bool)
                or not isinstance(max_tokens, int)
                or not 1 <= max_tokens <= MAX_CONTEXT_TOKENS
            ):
                raise ValidationError(
                    f"max_tokens must be an integer from 1 to {MAX_CONTEXT_TOKENS:,}, got {max_tokens!r}"
                )
            await op.authorize(owner, tx=tx)

            # A read inside a caller's transaction may see rows that roll back: it neither uses nor fills the cache.
            tail = self._recent.get(key, owner) if tx is None else None

            async def work(conn: AsyncConnection) -> ContextWindow:
                repository = ConversationRepository(conn, owner)
                read = await repository.context(
                    key, max_tokens, after_seq=0 if tail is None else tail.last_seq
                )
                if read is None:
                    self._recent.drop(key)
                    raise not_found(key, owner)
                context = self._fit(key, owner, max_tokens, read, tail, cache=tx is None)
                if context is None:  # the cached tail does not reach back far enough for this budget
                    read = await repository.context(key, max_tokens)
                    assert read is not None, "the conversation was there a statement ago, in this transaction"
                    context = self._fit(key, owner, max_tokens, read, None, cache=tx is None)
                    assert context is not None, "a read without a tail always fits"
                return context

            return await op.run(work, tx=tx, single_statement=True)  # each read stands on its own

    def _fit(
        self,
        conversation_id: uuid.UUID,
        user_id: uuid.UUID,
        max_tokens: int,
        read: ContextRead,
        tail: Tail | None,
        *,
        cache: bool,
    ) -> ContextWindow | None:
        """The window from what ConversationRepository.context read (newest first) and the cached tail it continues;
        None when the budget reaches past the tail and the older messages must be read."""
        summary, summarized, count = read.summary, read.summarized_through_seq, read.message_count
        delta = [message_of(stored) for stored in reversed(read.newest)]
        unsummarized = count - summarized
        after = summarized if tail is None else max(summarized, tail.last_seq)
        if tail is not None and tail.last_seq <= count and len(delta) == count - after:
            # The new messages join the tail: together they are the conversation's newest, without a gap.
            candidates = [message for message in tail.messages if message.seq > summarized] + delta
        else:
            candidates = delta
        newest_first = [message.tokens_used for message in reversed(candidates)]
        with_summary, taken = window.fit(summary, newest_first, max_tokens, self._db.count_tokens)
        if taken == len(candidates) < unsummarized:
            # Everything known fits, even the message that once marked the budget's edge: older ones might too.
            return None
        if cache:
            # What fits this budget, and the first message that does not (the edge a larger budget starts from).
            kept = min(
                len(candidates), window.fit(None, newest_first, max_tokens, self._db.count_tokens)[1] + 1
            )
            self._recent.put(
                conversation_id, Tail(user_id, tuple(candidates[len(candidates) - kept :]), count)
            )
        chosen = candidates[len(candidates) - taken :]
        summary_cost = window.summary_tokens(summary, self._db.count_tokens) if with_summary else 0
        return ContextWindow(
            conversation_id=conversation_id,
            max_tokens=max_tokens,
            summary=summary if with_summary else None,
            summary_tokens=summary_cost,
            messages=chosen,
            total_tokens=summary_cost + sum(window.message_tokens(message.tokens_used) for message in chosen),
            omitted_messages=unsummarized - len(chosen),
        )

    async def search_messages(
        self,
        user_id: uuid.UUID | str,
        query: str,
        limit: int = 20,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[SearchHit]:
        """The user's messages most relevant to `query`, best first, from conversations that are not deleted.

        Accent-insensitive, stemmed Portuguese full text ("meteorológica" finds "meteorologia"); a message matches
        when it has any of the query's words, and ranks higher with more of them. Packed (archived) messages are
        found too. Any text is a valid query: what is not a word is ignored, and a query with no words finds nothing.

        Raises:
            ValidationError: a malformed user id, a query that is not text, or limit outside 1–100.
        """
        async with self._db.operation(
            "conversation.search_messages", read_only=True, principal=principal
        ) as op:
            data = validate_input(
                MessageQuery,
                {"user_id": user_id, "query": query, "limit": limit},
            )
            await op.authorize(data.user_id, tx=tx)
            terms = query_terms(data.query)
            if not terms:
                return []

            async def work(conn: AsyncConnection) -> list[SearchHit]:
                matches = await self._search.matches(conn, data.user_id, terms, data.limit)
                return [SearchHit(message=message_of(match.message), score=match.score) for match in matches]

            return await op.run(work, tx=tx, single_statement=True)

    async def get_usage_stats(
        self,
        user_id: uuid.UUID | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> UsageStats:
        """Usage of one user (or of everyone, without `user_id`) in [since, until), computed by the database.

        Conversations started, messages and tokens per UTC day; messages, tokens, average and 95th-percentile
        response time per agent; messages per type. Purged conversations are gone from the statistics too.

        Raises:
            ValidationError: a malformed user id, a naive datetime, or until not after since.
        """
        async with self._db.operation("conversation.usage_stats", read_only=True, principal=principal) as op:
            window_ = validate_input(StatsWindow, {"user_id": user_id, "since": since, "until": until})
            scope = stats.Scope(user_id=window_.user_id, since=window_.since, until=window_.until)
            await op.authorize(
                window_.user_id, tx=tx
            )  # everyone's usage (no user_id): for those who manage users

            async def work(conn: AsyncConnection) -> UsageStats:
                per_day = await stats.daily_usage(conn, scope)
                return UsageStats(
                    user_id=window_.user_id,
                    since=window_.since,
                    until=window_.until,
                    conversations=sum(day.conversations for day in per_day),
                    messages=sum(day.messages for day in per_day),
                    tokens=sum(day.tokens for day in per_day),
                    per_day=per_day,
                    per_agent=await stats.agent_usage(conn, scope),
                    per_type=await stats.type_usage(conn, scope),
                )

            return await op.run(work, tx=tx)

    async def get_conversation_stats(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> ConversationStats:
        """One conversation's messages and tokens, per agent (with response times) and per type.

        Raises:
            ValidationError: a malformed id.
            NotFoundError: no such conversation for this user.
        """
        async with self._db.operation(
            "conversation.conversation_stats", read_only=True, principal=principal
        ) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            scope = stats.Scope(user_id=owner, conversation_id=key)
            await op.authorize(owner, tx=tx)

            async def work(conn: AsyncConnection) -> ConversationStats:
                conversation = await ConversationRepository(conn, owner).get(key)
                if conversation is None:
                    raise not_found(key, owner)
                first, last = await stats.message_span(conn, scope)
                return ConversationStats(
                    conversation_id=key,
                    messages=conversation.message_count,
                    tokens=conversation.total_tokens,
                    first_message_at=first,
                    last_message_at=last,
                    per_agent=await stats.agent_usage(conn, scope),
                    per_type=await stats.type_usage(conn, scope),
                )

            return await op.run(work, tx=tx)
