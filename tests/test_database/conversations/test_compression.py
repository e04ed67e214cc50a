"""compress_history: summaries that take older messages out of the context window, by hand and automatically."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from pydantic import SecretStr

from stratus_db import (
    AuditManager,
    ConsentManager,
    ConversationManager,
    Database,
    NotFoundError,
    UserManager,
    ValidationError,
)
from stratus_db.conversations.summarizer import ExtractiveSummarizer, SummaryInput
from stratus_db.errors import ConfigurationError, SummarizerUnavailableError
from tests.fixtures.chat_completions import ChatCompletionsStub, Reply
from tests.fixtures.factories import count_rows, create_user


class RecordingSummarizer:
    """A summarizer whose output says what it was given (the protocol is the seam for remote models). It runs here,
    and says so: no consent to external_summarizer is needed (tests/test_database/test_consents.py tests that)."""

    sends_text_out = False

    def __init__(self, gate: asyncio.Event | None = None, fail: bool = False) -> None:
        self.calls: list[tuple[list[int], str | None, int]] = []
        self.called = asyncio.Event()
        self._gate = gate
        self._fail = fail

    async def summarize(
        self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
    ) -> str:
        self.calls.append(([m.seq for m in messages], previous_summary, max_tokens))
        self.called.set()
        if self._gate is not None:
            await self._gate.wait()
        if self._fail:
            raise SummarizerUnavailableError("o modelo não respondeu", retryable=True)
        return f"resumo das mensagens {messages[0].seq}–{messages[-1].seq}"


async def _conversation(
    users: UserManager, conversations: ConversationManager, count: int
) -> tuple[uuid.UUID, uuid.UUID]:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "briefing")
    await conversations.add_messages(
        conv.conversation_id,
        user.user_id,
        [
            {"content": f"Mensagem {n}: METAR SBGR e teto para VFR.", "tokens_used": 10}
            for n in range(1, count + 1)
        ],
    )
    return conv.conversation_id, user.user_id


async def test_folds_older_messages_which_leave_the_window_but_stay_readable(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 10)
    summarizer = RecordingSummarizer()
    result = await conversations.compress_history(
        conversation_id, user_id, keep_last=4, summarizer=summarizer
    )
    assert (result.folded_messages, result.summarized_through_seq) == (6, 6)
    assert summarizer.calls == [([1, 2, 3, 4, 5, 6], None, db.settings.STRATUS_SUMMARY_MAX_TOKENS)]
    stored = await conversations.get_conversation(conversation_id, user_id)
    assert stored is not None
    assert (stored.summary, stored.summarized_through_seq, stored.summarized_tokens) == (
        "resumo das mensagens 1–6",
        6,
        60,
    )
    context = await conversations.get_context(conversation_id, user_id, 10_000)
    assert context.summary == "resumo das mensagens 1–6"
    assert [m.seq for m in context.messages] == [7, 8, 9, 10]
    assert len(await conversations.get_messages(conversation_id, user_id)) == 10
    events = (await AuditManager(db).query(record_id=conversation_id, action="summarize")).items
    assert [(e.old_values, e.new_values) for e in events] == [
        (
            {"summarized_through_seq": 0},
            {"folded_messages": 6, "summarized_through_seq": 6, "summary_tokens": result.summary_tokens},
        )
    ]


async def test_idempotent_then_incremental_with_the_previous_summary(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 6)
    summarizer = RecordingSummarizer()
    await conversations.compress_history(conversation_id, user_id, keep_last=2, summarizer=summarizer)
    audit_rows = await count_rows(db, "audit_log")
    again = await conversations.compress_history(conversation_id, user_id, keep_last=2, summarizer=summarizer)
    assert (again.folded_messages, again.summarized_through_seq) == (0, 4)
    assert await count_rows(db, "audit_log") == audit_rows
    assert len(summarizer.calls) == 1
    await conversations.add_messages(conversation_id, user_id, [{"content": "nova"}, {"content": "outra"}])
    later = await conversations.compress_history(conversation_id, user_id, keep_last=2, summarizer=summarizer)
    assert (later.folded_messages, later.summarized_through_seq) == (2, 6)
    assert summarizer.calls[-1][:2] == ([5, 6], "resumo das mensagens 1–4")


async def test_keeping_more_than_there_is_folds_nothing(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 3)
    summarizer = RecordingSummarizer()
    result = await conversations.compress_history(
        conversation_id, user_id, keep_last=3, summarizer=summarizer
    )
    assert (result.folded_messages, summarizer.calls) == (0, [])


async def test_the_default_summarizer_is_offline_extractive_and_within_budget(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 30)
    await conversations.archive_conversation(
        conversation_id, user_id, pack=True
    )  # folded bodies are unpacked
    result = await conversations.compress_history(conversation_id, user_id, keep_last=0)
    assert result.folded_messages == 30
    assert 0 < result.summary_tokens <= db.settings.STRATUS_SUMMARY_MAX_TOKENS
    stored = await conversations.get_conversation(conversation_id, user_id)
    assert stored is not None
    assert stored.summary is not None
    assert "SBGR" in stored.summary
    expected = await ExtractiveSummarizer().summarize(
        [
            SummaryInput(
                seq=m.seq, message_type=m.message_type.value, agent_name=m.agent_name, content=m.content
            )
            for m in await conversations.get_messages(conversation_id, user_id)
        ],
        previous_summary=None,
        max_tokens=db.settings.STRATUS_SUMMARY_MAX_TOKENS,
    )
    assert stored.summary == expected


async def test_two_compressions_at_once_fold_once(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 8)
    gate = asyncio.Event()
    slow, fast = RecordingSummarizer(gate), RecordingSummarizer()
    first = asyncio.create_task(
        conversations.compress_history(conversation_id, user_id, keep_last=2, summarizer=slow)
    )
    await slow.called.wait()  # the first compression has read the conversation and waits for its model
    second = await conversations.compress_history(conversation_id, user_id, keep_last=2, summarizer=fast)
    gate.set()
    late = await first
    assert (second.folded_messages, late.folded_messages) == (6, 0)
    stored = await conversations.get_conversation(conversation_id, user_id)
    assert stored is not None
    assert (stored.summarized_through_seq, stored.summarized_tokens) == (6, 60)


async def test_a_failing_summarizer_writes_nothing(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 5)
    audit_rows = await count_rows(db, "audit_log")
    with pytest.raises(SummarizerUnavailableError):
        await conversations.compress_history(
            conversation_id, user_id, summarizer=RecordingSummarizer(fail=True), keep_last=1
        )
    stored = await conversations.get_conversation(conversation_id, user_id)
    assert stored is not None
    assert (stored.summary, stored.summarized_through_seq) == (None, 0)
    assert await count_rows(db, "audit_log") == audit_rows


@pytest.mark.parametrize("keep_last", [-1, 1.5, "2", True])
async def test_bad_keep_last(
    users: UserManager, conversations: ConversationManager, keep_last: object
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, 2)
    with pytest.raises(ValidationError, match="keep_last"):
        await conversations.compress_history(conversation_id, user_id, keep_last=keep_last)  # type: ignore[arg-type]


async def test_another_users_conversation_is_not_found(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, _ = await _conversation(users, conversations, 2)
    intruder = await create_user(users)
    with pytest.raises(NotFoundError, match="does not belong"):
        await conversations.compress_history(conversation_id, intruder.user_id)


@asynccontextmanager
async def _compressing_past(
    db: Database, *, threshold: int, keep_last: int
) -> AsyncIterator[ConversationManager]:
    """Conversations on a handle of their own that compresses automatically past `threshold` tokens."""
    eager = Database(
        db.settings.model_copy(
            update={"STRATUS_SUMMARY_THRESHOLD_TOKENS": threshold, "STRATUS_SUMMARY_KEEP_LAST": keep_last}
        )
    )
    try:
        yield ConversationManager(eager)
    finally:
        await eager.close()


async def test_appends_past_the_threshold_compress_in_the_background(
    db: Database, users: UserManager
) -> None:
    async with _compressing_past(db, threshold=50, keep_last=2) as conversations:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "longa")
        for n in range(5):  # 50 tokens: not past the threshold yet
            await conversations.add_message(
                conv.conversation_id, user.user_id, f"pergunta {n}", tokens_used=10
            )
        await conversations.wait_for_compressions()
        untouched = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert untouched is not None
        assert untouched.summarized_through_seq == 0
        await conversations.add_message(
            conv.conversation_id, user.user_id, "Qual o METAR de SBGR?", tokens_used=10
        )
        await conversations.wait_for_compressions()
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert (stored.summarized_through_seq, stored.summarized_tokens) == (4, 40)
        assert stored.summary
        context = await conversations.get_context(conv.conversation_id, user.user_id, 1000)
        assert [m.seq for m in context.messages] == [5, 6]


async def test_close_waits_for_background_compressions(db: Database, users: UserManager) -> None:
    eager = Database(
        db.settings.model_copy(update={"STRATUS_SUMMARY_THRESHOLD_TOKENS": 5, "STRATUS_SUMMARY_KEEP_LAST": 0})
    )
    conversations = ConversationManager(eager)
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "longa")
    await conversations.add_message(
        conv.conversation_id, user.user_id, "Qual o METAR de SBGR?", tokens_used=10
    )
    await eager.close()
    stored = await ConversationManager(db).get_conversation(conv.conversation_id, user.user_id)
    assert stored is not None
    assert stored.summarized_through_seq == 1


async def test_an_openai_key_alone_sends_nothing_to_openai(
    db: Database, users: UserManager, stub: ChatCompletionsStub
) -> None:
    """The agents set OPENAI_API_KEY for themselves: that must not send conversation text to a third party. Automatic
    compression summarizes offline unless STRATUS_SUMMARIZER=openai says otherwise."""
    keyed = Database(
        db.settings.model_copy(
            update={
                "OPENAI_API_KEY": SecretStr("sk-dos-agentes"),
                "OPENAI_BASE_URL": stub.base_url,
                "STRATUS_SUMMARY_THRESHOLD_TOKENS": 30,
                "STRATUS_SUMMARY_KEEP_LAST": 1,
            }
        )
    )
    try:
        conversations = ConversationManager(keyed)
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "briefing")
        for n in range(1, 5):
            await conversations.add_message(
                conv.conversation_id,
                user.user_id,
                f"Mensagem {n}: METAR SBGR e teto para VFR.",
                tokens_used=10,
            )
        await conversations.wait_for_compressions()
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
    finally:
        await keyed.close()
    assert stub.requests == []
    assert stored is not None
    assert stored.summarized_through_seq >= 2, "compressed, offline"
    assert stored.summary is not None
    assert "SBGR" in stored.summary


async def test_when_openai_is_chosen_the_configured_server_summarizes(
    db: Database, users: UserManager, stub: ChatCompletionsStub
) -> None:
    stub.replies = [Reply(content="Piloto prepara navegação VFR com METAR de SBGR.")]
    remote = Database(
        db.settings.model_copy(
            update={
                "STRATUS_SUMMARIZER": "openai",
                "OPENAI_API_KEY": SecretStr("sk-teste"),
                "OPENAI_BASE_URL": stub.base_url,
            }
        )
    )
    try:
        conversations = ConversationManager(remote)
        conversation_id, user_id = await _conversation(users, conversations, 3)
        # Text goes out to the server: the user's consent first (docs/privacy.md).
        await ConsentManager(remote).grant_consent(user_id, "external_summarizer", "v1", "app")
        result = await conversations.compress_history(conversation_id, user_id, keep_last=1)
    finally:
        await remote.close()
    assert result.folded_messages == 2
    (request,) = stub.requests
    assert request.headers["authorization"] == "Bearer sk-teste"
    assert request.body["model"] == db.settings.STRATUS_SUMMARY_MODEL
    assert "Mensagem 2: METAR SBGR" in json.dumps(request.body, ensure_ascii=False)
    stored = await ConversationManager(db).get_conversation(conversation_id, user_id)
    assert stored is not None
    assert stored.summary == "Piloto prepara navegação VFR com METAR de SBGR."


async def test_openai_chosen_without_a_key_is_a_configuration_error(db: Database, users: UserManager) -> None:
    chosen = Database(db.settings.model_copy(update={"STRATUS_SUMMARIZER": "openai", "OPENAI_API_KEY": None}))
    try:
        with pytest.raises(ConfigurationError, match="STRATUS_SUMMARIZER=openai needs OPENAI_API_KEY"):
            ConversationManager(chosen)
    finally:
        await chosen.close()


def _words(text: str) -> int:
    """A host's own token counter: one token a word."""
    return len(text.split())


async def test_the_hosts_summarizer_and_token_counter_are_used_by_compression_and_the_context(
    db: Database, users: UserManager
) -> None:
    summarizer = RecordingSummarizer()
    hosted = Database(
        db.settings.model_copy(
            update={"STRATUS_SUMMARY_THRESHOLD_TOKENS": 20, "STRATUS_SUMMARY_KEEP_LAST": 1}
        ),
        summarizer=summarizer,
        token_counter=_words,
    )
    try:
        conversations = ConversationManager(hosted)
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "briefing")
        appended = [
            await conversations.add_message(
                conv.conversation_id, user.user_id, f"pergunta número {n} sobre SBGR"
            )
            for n in range(1, 6)
        ]
        await conversations.wait_for_compressions()
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        context = await conversations.get_context(conv.conversation_id, user.user_id, 100)
    finally:
        await hosted.close()
    assert [message.tokens_used for message in appended] == [5] * 5, "counted by the host's counter: 5 words"
    assert summarizer.calls, "the automatic compression called the host's summarizer"
    assert stored.summary is not None
    assert stored.summary.startswith("resumo das mensagens 1")
    assert context.summary == stored.summary
    assert context.summary_tokens == _words(stored.summary), "the summary is counted by the host's counter"


async def test_a_summary_is_trimmed_to_the_budget_by_the_hosts_counter(
    db: Database, users: UserManager
) -> None:
    class Wordy:
        sends_text_out = False

        async def summarize(
            self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
        ) -> str:
            return " ".join(f"palavra{n}." for n in range(200))

    def characters(text: str) -> int:  # much stricter than the offline estimate
        return len(text)

    hosted = Database(
        db.settings.model_copy(update={"STRATUS_SUMMARY_MAX_TOKENS": 50}),
        summarizer=Wordy(),
        token_counter=characters,
    )
    try:
        conversations = ConversationManager(hosted)
        conversation_id, user_id = await _conversation(users, conversations, 3)
        await conversations.compress_history(conversation_id, user_id, keep_last=1)
        stored = await conversations.get_conversation(conversation_id, user_id)
    finally:
        await hosted.close()
    assert stored is not None
    assert stored.summary is not None
    assert 0 < characters(stored.summary) <= 50


@pytest.mark.parametrize("counter", [42, "len"])
async def test_a_token_counter_that_cannot_count_is_refused(db: Database, counter: object) -> None:
    with pytest.raises(ConfigurationError, match="token_counter must be a callable"):
        Database(db.settings, token_counter=counter)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("returned", "complaint"),
    [(None, "NoneType, not text"), (42, "int, not text"), ("resumo\x00", "NUL")],
)
async def test_a_summarizer_returning_what_cannot_be_stored_writes_nothing(
    db: Database, users: UserManager, conversations: ConversationManager, returned: object, complaint: str
) -> None:
    class Broken:
        sends_text_out = False

        async def summarize(
            self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
        ) -> object:
            return returned

    conversation_id, user_id = await _conversation(users, conversations, 3)
    with pytest.raises(SummarizerUnavailableError, match=complaint):
        await conversations.compress_history(conversation_id, user_id, keep_last=1, summarizer=Broken())  # type: ignore[arg-type]
    stored = await conversations.get_conversation(conversation_id, user_id)
    assert stored is not None
    assert (stored.summary, stored.summarized_through_seq) == (None, 0)


async def test_an_over_long_summary_is_trimmed_to_the_budget(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    class Verbose:
        sends_text_out = False

        async def summarize(
            self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
        ) -> str:
            return "Frase longa sobre METAR e TAF. " * 1000

    conversation_id, user_id = await _conversation(users, conversations, 3)
    result = await conversations.compress_history(conversation_id, user_id, keep_last=1, summarizer=Verbose())
    assert 0 < result.summary_tokens <= db.settings.STRATUS_SUMMARY_MAX_TOKENS


async def test_automatic_compression_keeps_at_most_half_the_threshold_so_long_messages_do_not_resummarize(
    db: Database, users: UserManager
) -> None:
    async with _compressing_past(db, threshold=1000, keep_last=20) as conversations:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "longa")
        for n in range(12):  # 500 tokens each: 20 kept messages would be 10 times the threshold
            await conversations.add_message(
                conv.conversation_id, user.user_id, f"resposta {n}", tokens_used=500
            )
            await conversations.wait_for_compressions()
        events = (await AuditManager(db).query(record_id=conv.conversation_id, action="summarize")).items
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        # Past 1,000 tokens (the 3rd message) a compression keeps what fits in 500 tokens: one message. Then each
        # compression waits until the window passes 1,000 again: every second message, not every message.
        assert stored.total_tokens - stored.summarized_tokens <= 1000
        assert len(events) == 5
