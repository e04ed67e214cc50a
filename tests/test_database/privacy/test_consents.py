"""The consent ledger on both backends: append-only events, the latest decides, bad input writes nothing, every
write audited; and the library's own checks (memories, external summarizers) blocked and let through by it."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import delete, insert, select

from stratus_db import (
    AuditManager,
    ConsentManager,
    ConsentRequiredError,
    ConversationManager,
    Database,
    MemoryManager,
    NotFoundError,
    UserManager,
    ValidationError,
)
from stratus_db.config import Settings, load_settings
from stratus_db.conversations.summarizer import (
    ChatModelSummarizer,
    ExtractiveSummarizer,
    OpenAISummarizer,
    SummaryInput,
    sends_text_out,
)
from stratus_db.errors import ConfigurationError, ConflictError
from stratus_db.kit.ids import new_id
from stratus_db.models import Base
from stratus_db.privacy.gate import ConsentCache
from tests.fixtures.clock import ManualClock
from tests.fixtures.databases import handles_on
from tests.fixtures.factories import count_rows, create_user

CONSENTS = Base.metadata.tables["user_consents"]


@pytest.fixture
def consents(db: Database) -> ConsentManager:
    return ConsentManager(db)


async def ledger(db: Database, user_id: uuid.UUID) -> list[dict[str, Any]]:
    """The user's rows exactly as the table holds them, read without the manager, in insertion order."""
    statement = select(CONSENTS).where(CONSENTS.c.user_id == user_id).order_by(CONSENTS.c.consent_id)
    async with db.transaction(read_only=True) as conn:
        return [dict(row) for row in (await conn.execute(statement)).mappings()]


async def written(db: Database) -> tuple[int, int]:
    return await count_rows(db, "user_consents"), await count_rows(db, "audit_log")


class TestLedger:
    async def test_a_revocation_is_a_new_row_and_the_grant_row_is_unchanged(
        self, db: Database, users: UserManager, consents: ConsentManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        granted = await consents.grant_consent(user.user_id, "marketing", " termos-2026-12 ", "App")
        before = await ledger(db, user.user_id)
        clock.advance(minutes=5)
        revoked = await consents.revoke_consent(user.user_id, "marketing", "support")
        after = await ledger(db, user.user_id)

        assert (granted.text_version, granted.channel) == ("termos-2026-12", "app"), "trimmed, lower-cased"
        assert len(before) == 1
        assert len(after) == 2
        assert after[0] == before[0], "the grant's row is never rewritten"
        assert {
            key: after[1][key] for key in ("consent_id", "purpose", "action", "text_version", "channel")
        } == {
            "consent_id": revoked.consent_id,
            "purpose": "marketing",
            "action": "revoked",
            "text_version": None,
            "channel": "support",
        }
        assert after[1]["occurred_at"] == clock.now
        assert await consents.has_consent(user.user_id, "marketing") is False

    async def test_the_latest_event_wins(
        self, users: UserManager, consents: ConsentManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        assert await consents.has_consent(user.user_id, "analytics") is False, "never asked"
        await consents.grant_consent(user.user_id, "analytics", "v1", "web")
        assert await consents.has_consent(user.user_id, "analytics") is True
        clock.advance(days=1)
        await consents.revoke_consent(user.user_id, "analytics", "web", text_version="v1")
        assert await consents.has_consent(user.user_id, "analytics") is False
        clock.advance(days=1)
        regranted = await consents.grant_consent(user.user_id, "analytics", "v2", "app")
        assert await consents.has_consent(user.user_id, "analytics") is True

        states = {state.purpose.value: state for state in await consents.consents(user.user_id)}
        assert list(states) == [
            "memory_personalisation",
            "external_summarizer",
            "analytics",
            "marketing",
            "model_improvement",
        ]
        assert states["analytics"].granted is True
        assert states["analytics"].latest == regranted
        assert all(
            not state.granted and state.latest is None
            for name, state in states.items()
            if name != "analytics"
        )

    async def test_events_at_the_same_instant_are_ordered_as_recorded(
        self, users: UserManager, consents: ConsentManager, clock: ManualClock
    ) -> None:
        """The clock does not move between these: the key (UUIDv7, in insertion order) breaks the tie."""
        user = await create_user(users)
        await consents.grant_consent(user.user_id, "marketing", "v1", "app")
        await consents.revoke_consent(user.user_id, "marketing", "app")
        assert await consents.has_consent(user.user_id, "marketing") is False
        await consents.grant_consent(user.user_id, "marketing", "v1", "app")
        assert await consents.has_consent(user.user_id, "marketing") is True

    async def test_history_is_newest_first_by_purpose_and_in_pages(
        self, users: UserManager, consents: ConsentManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        recorded = []
        for purpose, version in [("marketing", "m1"), ("analytics", "a1"), ("marketing", "m2")]:
            recorded.append(await consents.grant_consent(user.user_id, purpose, version, "app"))
            clock.advance(seconds=1)
        recorded.append(await consents.revoke_consent(user.user_id, "marketing", "app"))

        everything = await consents.consent_history(user.user_id)
        assert everything.items == list(reversed(recorded))
        assert everything.next_cursor is None
        marketing = await consents.consent_history(user.user_id, purpose="marketing")
        assert [(e.action.value, e.text_version) for e in marketing.items] == [
            ("revoked", None),
            ("granted", "m2"),
            ("granted", "m1"),
        ]
        pages, cursor = [], None
        while True:
            page = await consents.consent_history(user.user_id, limit=1, cursor=cursor)
            pages += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == everything.items

    async def test_every_write_is_audited_with_what_was_recorded(
        self, db: Database, users: UserManager, consents: ConsentManager
    ) -> None:
        user = await create_user(users)
        granted = await consents.grant_consent(user.user_id, "model_improvement", "v3", "api")
        revoked = await consents.revoke_consent(user.user_id, "model_improvement", "app", text_version="v3")
        trail = (await AuditManager(db).query(user_id=user.user_id, table="user_consents")).items
        assert [(event.action, event.record_id, event.new_values) for event in reversed(trail)] == [
            (
                "grant",
                granted.consent_id,
                {"purpose": "model_improvement", "action": "granted", "text_version": "v3", "channel": "api"},
            ),
            (
                "revoke",
                revoked.consent_id,
                {"purpose": "model_improvement", "action": "revoked", "text_version": "v3", "channel": "app"},
            ),
        ]

    async def test_a_caller_transaction_that_rolls_back_keeps_neither_event_nor_audit(
        self, db: Database, users: UserManager, consents: ConsentManager
    ) -> None:
        user = await create_user(users)
        before = await written(db)

        async def grant_and_give_up() -> None:
            async with db.transaction() as tx:
                await consents.grant_consent(user.user_id, "marketing", "v1", "app", tx=tx)
                assert await consents.has_consent(user.user_id, "marketing", tx=tx) is True
                raise RuntimeError("the caller changes its mind")

        with pytest.raises(RuntimeError, match="changes its mind"):
            await grant_and_give_up()
        assert await written(db) == before
        assert await consents.has_consent(user.user_id, "marketing") is False

    async def test_deleting_the_user_deletes_their_events(
        self, db: Database, users: UserManager, consents: ConsentManager
    ) -> None:
        user = await create_user(users)
        await consents.grant_consent(user.user_id, "marketing", "v1", "app")
        users_table = Base.metadata.tables["users"]
        async with db.transaction() as conn:
            await conn.execute(delete(users_table).where(users_table.c.user_id == user.user_id))
        assert await ledger(db, user.user_id) == []

    async def test_the_schema_refuses_a_grant_without_a_text_version(
        self, db: Database, users: UserManager
    ) -> None:
        user = await create_user(users)
        row = {
            "consent_id": new_id(),
            "user_id": user.user_id,
            "purpose": "marketing",
            "action": "granted",
            "text_version": None,
            "channel": "app",
            "occurred_at": db.clock(),
        }
        with pytest.raises(ConflictError, match="text_version"):
            async with db.transaction() as conn:
                await conn.execute(insert(CONSENTS).values(**row))
        assert await ledger(db, user.user_id) == []


class TestBadInputWritesNothing:
    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({"purpose": "newsletter"}, "memory_personalisation, external_summarizer, analytics, marketing"),
            ({"purpose": 7}, "purpose must be one of"),
            ({"text_version": ""}, "text_version"),
            ({"text_version": "   "}, "text_version"),
            ({"text_version": "v" * 51}, "text_version: String should have at most 50 characters"),
            ({"text_version": b"v1"}, "text_version"),
            ({"channel": ""}, "channel"),
            ({"channel": "c" * 51}, "channel"),
            ({"channel": "app store"}, "lower-case letters"),
            ({"user_id": "not-a-uuid"}, "user_id"),
        ],
    )
    async def test_a_malformed_grant(
        self,
        db: Database,
        users: UserManager,
        consents: ConsentManager,
        arguments: dict[str, Any],
        complaint: str,
    ) -> None:
        user = await create_user(users)
        call: dict[str, Any] = {
            "user_id": user.user_id,
            "purpose": "marketing",
            "text_version": "v1",
            "channel": "app",
        } | arguments
        before = await written(db)
        with pytest.raises(ValidationError, match=complaint):
            await consents.grant_consent(**call)
        assert await written(db) == before

    async def test_a_malformed_revocation(
        self, db: Database, users: UserManager, consents: ConsentManager
    ) -> None:
        user = await create_user(users)
        before = await written(db)
        with pytest.raises(ValidationError, match="purpose must be one of"):
            await consents.revoke_consent(user.user_id, "everything", "app")
        with pytest.raises(ValidationError, match="text_version"):
            await consents.revoke_consent(user.user_id, "marketing", "app", text_version="x" * 51)
        with pytest.raises(ValidationError, match="channel"):
            await consents.revoke_consent(user.user_id, "marketing", " ")
        assert await written(db) == before

    async def test_an_unknown_user(self, db: Database, consents: ConsentManager) -> None:
        nobody = uuid.uuid4()
        before = await written(db)
        with pytest.raises(NotFoundError, match=f"user {nobody} does not exist"):
            await consents.grant_consent(nobody, "marketing", "v1", "app")
        with pytest.raises(NotFoundError, match=f"user {nobody} does not exist"):
            await consents.revoke_consent(nobody, "marketing", "app")
        with pytest.raises(NotFoundError):
            await consents.consents(nobody)
        with pytest.raises(NotFoundError):
            await consents.consent_history(nobody)
        assert await consents.has_consent(nobody, "marketing") is False
        assert await written(db) == before

    async def test_reads_refuse_bad_arguments(self, users: UserManager, consents: ConsentManager) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError, match="purpose must be one of"):
            await consents.has_consent(user.user_id, "sales")
        with pytest.raises(ValidationError, match="purpose must be one of"):
            await consents.consent_history(user.user_id, purpose="sales")
        with pytest.raises(ValidationError, match="limit"):
            await consents.consent_history(user.user_id, limit=0)
        with pytest.raises(ValidationError, match="cursor"):
            await consents.consent_history(user.user_id, cursor="abc")
        deep = base64.urlsafe_b64encode(b"[" * 1500 + b"]" * 1500).decode().rstrip("=")
        with pytest.raises(ValidationError, match="cursor"):
            await consents.consent_history(user.user_id, cursor=deep)
        with pytest.raises(ValidationError, match="user_id"):
            await consents.has_consent(b"not text", "marketing")  # type: ignore[arg-type]


# -- the library's own checks ------------------------------------------------------------------------------------


def _requiring(db: Database, monkeypatch: pytest.MonkeyPatch, *purposes: str) -> None:
    """Managers made after this require consent to `purposes` (as STRATUS_CONSENT_REQUIRED would)."""
    monkeypatch.setattr(
        db, "settings", db.settings.model_copy(update={"STRATUS_CONSENT_REQUIRED": frozenset(purposes)})
    )


class TestMemoryPersonalisation:
    async def test_not_checked_by_default(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR")
        assert await count_rows(db, "memory_entries") == 1

    async def test_refused_without_consent_let_through_after_a_grant_refused_again_after_a_revocation(
        self, db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _requiring(db, monkeypatch, "memory_personalisation", "external_summarizer")
        memories, consents = MemoryManager(db), ConsentManager(db)
        user = await create_user(users)
        before = await written(db)

        with pytest.raises(ConsentRequiredError, match="memory_personalisation") as refused:
            await memories.store_memory(user.user_id, "base", "SBGR")
        assert (refused.value.purpose, refused.value.user_id) == ("memory_personalisation", str(user.user_id))
        assert refused.value.status_code == 403
        with pytest.raises(ConsentRequiredError):
            await memories.search_memories(user.user_id, "SBGR")
        with pytest.raises(ConsentRequiredError):
            await memories.get_memory(user.user_id, "base")
        assert await written(db) == before, "a refused call writes nothing, not even an audit row"

        await consents.grant_consent(user.user_id, "memory_personalisation", "v1", "app")
        await memories.store_memory(user.user_id, "base", "SBGR Guarulhos", "long_term")
        assert (await memories.get_memory(user.user_id, "base")) is not None
        assert (await memories.get_memory(user.user_id, "base")) is not None, "from the memory cache"
        assert [r.memory.key for r in await memories.search_memories(user.user_id, "Guarulhos")] == ["base"]

        # This process's revocation is seen at once, whatever the cache held.
        await consents.revoke_consent(user.user_id, "memory_personalisation", "app")
        stored = await count_rows(db, "memory_entries")
        with pytest.raises(ConsentRequiredError):
            await memories.store_memory(user.user_id, "outra", "SBKP")
        with pytest.raises(ConsentRequiredError):
            await memories.get_memory(user.user_id, "base")
        with pytest.raises(ConsentRequiredError):
            await memories.search_memories(user.user_id, "Guarulhos")
        assert await count_rows(db, "memory_entries") == stored
        # The user's own access to what is held stays open (LGPD Art. 18 II), and so does deleting it.
        assert [entry.key for entry in (await memories.list_memories(user.user_id)).items] == ["base"]
        assert await memories.delete_memory(user.user_id, "base") is True
        assert db.metrics()["consent"]["refusals"] >= 6

    async def test_a_grant_in_the_callers_transaction_counts_in_it_and_rolls_back_with_it(
        self, db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _requiring(db, monkeypatch, "memory_personalisation")
        memories, consents = MemoryManager(db), ConsentManager(db)
        user = await create_user(users)

        async def grant_store_and_give_up() -> None:
            async with db.transaction() as tx:
                await consents.grant_consent(user.user_id, "memory_personalisation", "v1", "app", tx=tx)
                await memories.store_memory(user.user_id, "base", "SBGR", tx=tx)
                raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError, match="rolled back"):
            await grant_store_and_give_up()
        with pytest.raises(ConsentRequiredError):
            await memories.store_memory(user.user_id, "base", "SBGR")
        assert await count_rows(db, "memory_entries") == 0


class RemoteSummarizer:
    """A host's summarizer that does not say where it sends the text: taken to send it out."""

    def __init__(self) -> None:
        self.calls = 0

    async def summarize(
        self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
    ) -> str:
        self.calls += 1
        return f"resumo até {messages[-1].seq}"


async def _conversation(
    users: UserManager, conversations: ConversationManager, count: int
) -> tuple[uuid.UUID, uuid.UUID]:
    user = await create_user(users)
    conversation = await conversations.create_conversation(user.user_id, "briefing")
    await conversations.add_messages(
        conversation.conversation_id,
        user.user_id,
        [{"content": f"Mensagem {n}: METAR SBGR.", "tokens_used": 10} for n in range(1, count + 1)],
    )
    return conversation.conversation_id, user.user_id


class TestExternalSummarizer:
    async def test_text_goes_to_a_remote_summarizer_only_with_consent(
        self, db: Database, users: UserManager, conversations: ConversationManager, consents: ConsentManager
    ) -> None:
        remote = RemoteSummarizer()
        conversation_id, user_id = await _conversation(users, conversations, 4)
        before = await written(db)
        with pytest.raises(ConsentRequiredError, match="external_summarizer"):
            await conversations.compress_history(conversation_id, user_id, keep_last=1, summarizer=remote)
        assert remote.calls == 0, "nothing was sent"
        assert await written(db) == before
        stored = await conversations.get_conversation(conversation_id, user_id)
        assert stored is not None
        assert stored.summarized_through_seq == 0

        await consents.grant_consent(user_id, "external_summarizer", "v1", "app")
        result = await conversations.compress_history(
            conversation_id, user_id, keep_last=2, summarizer=remote
        )
        assert (result.folded_messages, remote.calls) == (2, 1)

        await consents.revoke_consent(user_id, "external_summarizer", "app")
        with pytest.raises(ConsentRequiredError):
            await conversations.compress_history(conversation_id, user_id, keep_last=1, summarizer=remote)
        assert remote.calls == 1

    async def test_local_summarizers_need_no_consent(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, user_id = await _conversation(users, conversations, 3)
        offline = await conversations.compress_history(conversation_id, user_id, keep_last=2)
        assert offline.folded_messages == 1, "the default extractive summarizer sends nothing out"

        class Local:
            sends_text_out = False

            async def ainvoke(self, _messages: object) -> str:
                return "Resumo local."

        local = await conversations.compress_history(
            conversation_id,
            user_id,
            keep_last=1,
            summarizer=ChatModelSummarizer(Local(), sends_text_out=False),
        )
        assert local.folded_messages == 1

    async def test_nothing_to_fold_needs_no_consent(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, user_id = await _conversation(users, conversations, 2)
        result = await conversations.compress_history(
            conversation_id, user_id, keep_last=5, summarizer=RemoteSummarizer()
        )
        assert result.folded_messages == 0

    async def test_not_checked_when_the_setting_leaves_it_out(
        self, db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _requiring(db, monkeypatch)
        conversations = ConversationManager(db)
        conversation_id, user_id = await _conversation(users, conversations, 3)
        result = await conversations.compress_history(
            conversation_id, user_id, keep_last=1, summarizer=RemoteSummarizer()
        )
        assert result.folded_messages == 2

    async def test_the_background_compression_skips_users_without_consent(
        self, db: Database, users: UserManager
    ) -> None:
        remote = RemoteSummarizer()
        eager = Database(
            db.settings.model_copy(
                update={"STRATUS_SUMMARY_THRESHOLD_TOKENS": 30, "STRATUS_SUMMARY_KEEP_LAST": 1}
            ),
            summarizer=remote,
        )
        try:
            conversations, consents = ConversationManager(eager), ConsentManager(eager)
            user = await create_user(users)
            conversation = await conversations.create_conversation(user.user_id, "longa")
            for n in range(5):
                await conversations.add_message(
                    conversation.conversation_id, user.user_id, f"msg {n}", tokens_used=10
                )
                await conversations.wait_for_compressions()
            skipped = await conversations.get_conversation(conversation.conversation_id, user.user_id)
            assert skipped is not None
            assert (skipped.summarized_through_seq, remote.calls) == (0, 0)
            assert eager.metrics()["consent"]["skipped_background_compressions"] >= 2

            await consents.grant_consent(user.user_id, "external_summarizer", "v1", "app")
            await conversations.add_message(
                conversation.conversation_id, user.user_id, "mais uma", tokens_used=10
            )
            await conversations.wait_for_compressions()
            compressed = await conversations.get_conversation(conversation.conversation_id, user.user_id)
            assert compressed is not None
            assert compressed.summarized_through_seq >= 4
            assert remote.calls == 1
        finally:
            await eager.close()


class MonotonicClock:
    """The consent cache's clock, moved by hand."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


class TestOtherProcesses:
    @pytest.fixture
    async def handles(self, db: Database) -> AsyncIterator[Any]:
        async for open_handle in handles_on(db):
            yield open_handle

    async def test_a_grant_elsewhere_is_seen_within_the_ttl(self, db: Database, handles: Any) -> None:
        """Two handles, as two processes: B's cached refusal stands until its TTL passes, then A's grant counts."""
        a = handles(STRATUS_CONSENT_REQUIRED=frozenset({"memory_personalisation"}))
        b = handles(STRATUS_CONSENT_REQUIRED=frozenset({"memory_personalisation"}))
        b_clock = MonotonicClock()
        ConsentCache.of(b).now = b_clock
        user = await create_user(UserManager(a))
        memories_b = MemoryManager(b)
        with pytest.raises(ConsentRequiredError):
            await memories_b.store_memory(user.user_id, "base", "SBGR")

        await ConsentManager(a).grant_consent(user.user_id, "memory_personalisation", "v1", "app")
        with pytest.raises(ConsentRequiredError):
            await memories_b.store_memory(user.user_id, "base", "SBGR")  # still B's cached answer
        b_clock.advance(b.settings.STRATUS_CONSENT_CACHE_TTL_S)
        await memories_b.store_memory(user.user_id, "base", "SBGR")

        await ConsentManager(a).revoke_consent(user.user_id, "memory_personalisation", "app")
        await memories_b.store_memory(user.user_id, "base", "SBGR Guarulhos")  # within the bound
        b_clock.advance(b.settings.STRATUS_CONSENT_CACHE_TTL_S)
        with pytest.raises(ConsentRequiredError):
            await memories_b.store_memory(user.user_id, "base", "SBKP")

    async def test_without_a_cache_every_check_reads_the_ledger(self, db: Database, handles: Any) -> None:
        a = handles(STRATUS_CONSENT_REQUIRED=frozenset({"memory_personalisation"}))
        b = handles(
            STRATUS_CONSENT_REQUIRED=frozenset({"memory_personalisation"}), STRATUS_CONSENT_CACHE_TTL_S=0
        )
        user = await create_user(UserManager(a))
        with pytest.raises(ConsentRequiredError):
            await MemoryManager(b).store_memory(user.user_id, "base", "SBGR")
        await ConsentManager(a).grant_consent(user.user_id, "memory_personalisation", "v1", "app")
        await MemoryManager(b).store_memory(user.user_id, "base", "SBGR")
        assert b.metrics()["consent"]["cached"] == 0


class TestSettings:
    @pytest.mark.parametrize(
        ("raw", "purposes"),
        [
            ("external_summarizer", {"external_summarizer"}),
            (
                " external_summarizer , memory_personalisation ",
                {"external_summarizer", "memory_personalisation"},
            ),
            ('["memory_personalisation"]', {"memory_personalisation"}),
            ("", set()),
            ("[]", set()),
        ],
    )
    def test_the_required_purposes_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, raw: str, purposes: set[str]
    ) -> None:
        monkeypatch.setenv("STRATUS_CONSENT_REQUIRED", raw)
        assert purposes == load_settings().STRATUS_CONSENT_REQUIRED

    def test_the_default_checks_external_summarizers_only(self) -> None:
        assert {"external_summarizer"} == Settings().STRATUS_CONSENT_REQUIRED

    @pytest.mark.parametrize(
        ("raw", "complaint"),
        [("newsletter", "STRATUS_CONSENT_REQUIRED"), ("marketing", "for the host to check with")],
    )
    def test_unknown_or_unchecked_purposes_are_refused(
        self, monkeypatch: pytest.MonkeyPatch, raw: str, complaint: str
    ) -> None:
        monkeypatch.setenv("STRATUS_CONSENT_REQUIRED", raw)
        with pytest.raises(ConfigurationError, match=complaint):
            load_settings()


def test_which_summarizers_send_text_out() -> None:
    class Host:
        async def summarize(self) -> str:
            return ""

    assert sends_text_out(ExtractiveSummarizer()) is False
    assert sends_text_out(OpenAISummarizer("sk-x")) is True
    assert sends_text_out(Host()) is True, "a host's summarizer that does not say is taken to send text out"

    class Model:
        async def ainvoke(self, _messages: object) -> str:
            return ""

    assert sends_text_out(ChatModelSummarizer(Model())) is True
    assert sends_text_out(ChatModelSummarizer(Model(), sends_text_out=False)) is False
    with pytest.raises(ConfigurationError, match="sends_text_out"):
        ChatModelSummarizer(Model(), sends_text_out="no")  # type: ignore[arg-type]
