"""History compression: older messages folded into the conversation's summary, on request or in the background."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations import window
from stratus_db.conversations.lifecycle import ConversationLifecycle
from stratus_db.conversations.repository import ConversationRepository, StoredMessage
from stratus_db.conversations.rooms_base import (
    CONVERSATIONS,
    message_of,
    not_found,
)
from stratus_db.conversations.schemas import (
    CompressionResult,
    Conversation,
)
from stratus_db.conversations.summarizer import Summarizer, SummaryInput, sends_text_out, within_budget
from stratus_db.errors import SummarizerUnavailableError, ValidationError
from stratus_db.kit.validation import (
    parse_uuid,
    storable_text,
)
from stratus_db.models import ConsentPurpose
from stratus_db.security.principal import Principal

EXTERNAL = ConsentPurpose.external_summarizer


class HistoryCompressor(ConversationLifecycle):
    """History compression: older messages folded into the conversation's summary, on request or in the background."""

    def _compress_if_long(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, unsummarized: int, tx: AsyncConnection | None
    ) -> None:
        """Ask for a background compress_history once the window holds more than the threshold's tokens.

        Called after the append committed; not for appends inside a caller's transaction, which may still roll
        back: the next append outside one asks again.
        """
        threshold = self._db.settings.STRATUS_SUMMARY_THRESHOLD_TOKENS
        if tx is None and threshold and unsummarized > threshold:
            # The kept messages hold at most half the threshold, so the next compression waits for as many tokens
            # again, however long the messages are (not one summarizer call per append).
            self._history.schedule(
                conversation_id,
                lambda: self._compress_in_background(conversation_id, user_id, keep_tokens=threshold // 2),
            )

    def _needs_consent(self, summarizer: Summarizer) -> bool:
        return EXTERNAL in self._consent.required and sends_text_out(summarizer)

    async def _compress_in_background(
        self, conversation_id: uuid.UUID, user_id: uuid.UUID, *, keep_tokens: int
    ) -> None:
        """The automatic compression; skipped (and logged at DEBUG, counted in metrics) when the summarizer sends
        text out and the user has not consented to it: there is no caller to refuse, and the window still fits
        get_context's budget without a summary."""
        if self._needs_consent(self._history.summarizer) and not await self._consent.allowed(
            user_id, EXTERNAL, tx=None
        ):
            self._consent.cache.skipped += 1
            self._db.log.debug(
                "background history compression skipped: no consent to external_summarizer",
                operation="conversation.compress_history",
                conversation_id=str(conversation_id),
            )
            return
        await self._compress(conversation_id, user_id, None, keep_tokens=keep_tokens, summarizer=None)

    async def wait_for_compressions(self) -> None:
        """Until the background compressions that appends asked for have finished (`db.close()` waits too)."""
        await self._history.wait()

    async def compress_history(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        keep_last: int | None = None,
        *,
        summarizer: Summarizer | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> CompressionResult:
        """Fold all but the newest `keep_last` messages into the conversation's summary.

        The folded messages stay stored and readable (get_messages) but leave the context window (get_context). The
        summarizer receives the previous summary and the newly folded messages and returns the new summary within
        STRATUS_SUMMARY_MAX_TOKENS: the handle's (`Database(summarizer=...)`), else the one STRATUS_SUMMARIZER names
        (the offline extractive one by default, whatever keys are set).
        It runs outside any transaction of ours (a remote model may take seconds); if another compression of the
        same conversation commits meanwhile, this one writes nothing. Idempotent: with nothing new to fold, nothing is
        written. Works on conversations of any status.

        A summarizer that sends the text out of the process (OpenAI's, a chat model's, a host's that does not declare
        `sends_text_out = False`) is given a user's messages only if the user consented to `external_summarizer`,
        when STRATUS_CONSENT_REQUIRED names it (the default; docs/privacy.md). The automatic compression skips such
        users instead.

        Args:
            keep_last: messages to leave in the window; default STRATUS_SUMMARY_KEEP_LAST.
            summarizer: use this one instead of the configured one.
            principal: who makes this call, instead of the context's principal (see the class docstring).

        Raises:
            ValidationError: a malformed id or keep_last; nothing is written.
            NotFoundError: no such conversation for this user.
            ConsentRequiredError: there is something to fold, the summarizer sends text out, and the user has not
                consented to `external_summarizer`; nothing is sent or written.
            SummarizerUnavailableError: the remote summarizer failed; nothing is written.
        """
        return await self._compress(
            conversation_id,
            user_id,
            keep_last,
            keep_tokens=None,
            summarizer=summarizer,
            tx=tx,
            principal=principal,
        )

    async def _compress(
        self,
        conversation_id: uuid.UUID | str,
        user_id: uuid.UUID | str,
        keep_last: int | None,
        *,
        keep_tokens: int | None,
        summarizer: Summarizer | None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> CompressionResult:
        """compress_history; `keep_tokens` also caps what the kept messages may weigh (the automatic compression)."""
        async with self._db.operation("conversation.compress_history", principal=principal) as op:
            key = parse_uuid(conversation_id, "conversation_id")
            owner = parse_uuid(user_id, "user_id")
            keep = self._db.settings.STRATUS_SUMMARY_KEEP_LAST if keep_last is None else keep_last
            if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
                raise ValidationError(f"keep_last must be a non-negative integer, got {keep_last!r}")
            await op.authorize(owner, tx=tx)

            async def read(conn: AsyncConnection) -> tuple[Conversation, list[StoredMessage]]:
                repository = ConversationRepository(conn, owner)
                current = await repository.get(key)
                if current is None:
                    raise not_found(key, owner)
                kept = keep
                if keep_tokens is not None:
                    newest = await repository.messages(
                        key, after_seq=None, before_seq=current.message_count + 1, limit=max(keep, 1)
                    )
                    weights = [message.tokens_used for message in reversed(newest)][:keep]
                    kept = window.fit(None, weights, keep_tokens, self._db.count_tokens)[1]
                through = current.message_count - kept
                if through <= current.summarized_through_seq:
                    return current, []
                return current, await repository.messages_between(
                    key, current.summarized_through_seq, through
                )

            before, folded = await op.run(read, tx=tx)
            if not folded:
                return CompressionResult(
                    conversation_id=key,
                    folded_messages=0,
                    summarized_through_seq=before.summarized_through_seq,
                    summary_tokens=window.summary_tokens(before.summary, self._db.count_tokens),
                )
            chosen = summarizer or self._history.summarizer
            if self._needs_consent(chosen):
                await self._consent.require(
                    owner, EXTERNAL, tx=tx, acting="compress_history with a summarizer that sends text out"
                )
            messages = [message_of(stored) for stored in folded]
            summary = await chosen.summarize(
                [
                    SummaryInput(
                        seq=message.seq,
                        message_type=message.message_type.value,
                        agent_name=message.agent_name,
                        content=message.content,
                    )
                    for message in messages
                ],
                previous_summary=before.summary,
                max_tokens=self._db.settings.STRATUS_SUMMARY_MAX_TOKENS,
            )
            summary = self._checked_summary(summary)
            through = messages[-1].seq
            folded_tokens = sum(message.tokens_used for message in messages)

            async def write(conn: AsyncConnection) -> CompressionResult:
                repository, current = await self._locked(conn, key, owner)
                if current.summarized_through_seq != before.summarized_through_seq:
                    # Another compression got there first: its summary stands.
                    return CompressionResult(
                        conversation_id=key,
                        folded_messages=0,
                        summarized_through_seq=current.summarized_through_seq,
                        summary_tokens=window.summary_tokens(current.summary, self._db.count_tokens),
                    )
                await repository.set_summary(
                    key,
                    summary=summary or None,
                    summarized_through_seq=through,
                    summarized_tokens=current.summarized_tokens + folded_tokens,
                    updated_at=self._db.clock(),
                )
                result = CompressionResult(
                    conversation_id=key,
                    folded_messages=len(messages),
                    summarized_through_seq=through,
                    summary_tokens=window.summary_tokens(summary, self._db.count_tokens),
                )
                await self._audit.record(
                    conn,
                    action=AuditAction.summarize,
                    table_name=CONVERSATIONS,
                    record_id=key,
                    user_id=owner,
                    old_values={"summarized_through_seq": before.summarized_through_seq},
                    new_values=result.model_dump(mode="json", exclude={"conversation_id"}),
                )
                return result

            return await op.run(write, tx=tx)

    def _checked_summary(self, summary: object) -> str:
        """What a summarizer returned, as it may be stored: text without NUL, within STRATUS_SUMMARY_MAX_TOKENS."""
        if not isinstance(summary, str):
            raise SummarizerUnavailableError(
                f"the summarizer returned {type(summary).__name__}, not text; nothing was written",
                retryable=False,
            )
        try:
            text = storable_text(summary)
        except ValueError as exc:
            raise SummarizerUnavailableError(
                f"the summarizer returned text that cannot be stored ({exc}); nothing was written",
                retryable=False,
            ) from exc
        return within_budget(text, self._db.settings.STRATUS_SUMMARY_MAX_TOKENS, self._db.count_tokens)
