"""Appends: batches, and exact numbering when several processes append to one conversation at once."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid

import pytest

from stratus_db import (
    AuditManager,
    ConflictError,
    ConversationManager,
    Database,
    UserManager,
    ValidationError,
)
from stratus_db.conversations import coalescing
from tests.fixtures.databases import empty_all_tables
from tests.fixtures.factories import count_rows, create_user

PROCESSES = 4
APPENDS_PER_PROCESS = 50

_APPENDER = textwrap.dedent(
    """
    import asyncio, sys
    from stratus_db import ConversationManager, Database, Settings

    async def main(url, conversation_id, user_id, worker, count):
        db = Database(Settings(
            DATABASE_URL=url, LOG_LEVEL="WARNING", STRATUS_RETRY_ATTEMPTS=10, STRATUS_POOL_SIZE=4, STRATUS_POOL_MAX_OVERFLOW=0
        ))
        conversations = ConversationManager(db)
        try:
            await asyncio.gather(*(
                conversations.add_message(conversation_id, user_id, f"processo {worker} mensagem {n}", tokens_used=3)
                for n in range(count)
            ))
        finally:
            await db.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    """
)


async def test_200_appends_from_several_processes_get_distinct_gap_free_numbers_and_exact_counters(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "concorrência")
    url = db.settings.database_url.render_as_string(hide_password=False)
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _APPENDER,
            url,
            str(conv.conversation_id),
            str(user.user_id),
            str(worker),
            str(APPENDS_PER_PROCESS),
            stderr=asyncio.subprocess.PIPE,
        )
        for worker in range(PROCESSES)
    ]
    for worker in workers:
        _, stderr = await worker.communicate()
        assert worker.returncode == 0, stderr.decode()
    total = PROCESSES * APPENDS_PER_PROCESS
    messages = await conversations.get_messages(conv.conversation_id, user.user_id, limit=1000)
    assert [message.seq for message in messages] == list(range(1, total + 1))
    assert len({message.content for message in messages}) == total
    stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
    assert stored is not None
    assert (stored.message_count, stored.total_tokens) == (total, 3 * total)
    assert stored.last_activity_at == max(message.created_at for message in messages)
    audited = await AuditManager(db).query(table="messages", limit=total)
    assert sorted(event.new_values["seq"] for event in audited.items) == list(range(1, total + 1))


class TestAddMessages:
    async def test_appends_a_batch_in_order_with_counters_and_one_audit_row_each(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "lote")
        await conversations.add_message(conv.conversation_id, user.user_id, "primeira")
        batch = await conversations.add_messages(
            conv.conversation_id,
            user.user_id,
            [
                {"content": "Qual o METAR de SBGR?"},
                {
                    "content": "SBGR 141200Z 34006KT CAVOK",
                    "message_type": "agent_response",
                    "agent_name": "meteorologia",
                    "metadata": {"fonte": "REDEMET"},
                    "tokens_used": 40,
                    "response_time": 1.5,
                },
            ],
        )
        assert [(m.seq, m.content) for m in batch] == [
            (2, "Qual o METAR de SBGR?"),
            (3, "SBGR 141200Z 34006KT CAVOK"),
        ]
        assert (batch[1].agent_name, batch[1].metadata, batch[1].response_time) == (
            "meteorologia",
            {"fonte": "REDEMET"},
            1.5,
        )
        assert await conversations.get_messages(conv.conversation_id, user.user_id, after_seq=1) == batch
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        first_tokens = round(len("primeira") / 3.5)
        assert (stored.message_count, stored.total_tokens) == (3, first_tokens + batch[0].tokens_used + 40)
        events = (await AuditManager(db).query(table="messages")).items
        assert sorted(event.new_values["seq"] for event in events) == [1, 2, 3]

    @pytest.mark.parametrize(
        ("messages", "complaint"),
        [
            ([], "at least 1"),
            ("texto", "list"),
            ([{"content": "ok"}, {"content": ""}], "messages.1.content"),
            ([{"content": "ok", "tokens_used": -5}], "tokens_used"),
            ([{"content": "ok", "surprise": 1}], "surprise"),
            ([{"content": "ok\x00"}], "NUL"),
        ],
    )
    async def test_one_bad_message_refuses_the_whole_batch(
        self,
        db: Database,
        users: UserManager,
        conversations: ConversationManager,
        messages: object,
        complaint: str,
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "lote")
        with pytest.raises(ValidationError, match=complaint):
            await conversations.add_messages(conv.conversation_id, user.user_id, messages)  # type: ignore[arg-type]
        assert await count_rows(db, "messages") == 0
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert stored.message_count == 0

    async def test_a_batch_to_an_archived_conversation_is_refused(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "lote")
        await conversations.archive_conversation(conv.conversation_id, user.user_id)
        with pytest.raises(ConflictError, match="archived"):
            await conversations.add_messages(conv.conversation_id, user.user_id, [{"content": "oi"}])
        assert await count_rows(db, "messages") == 0

    async def test_a_batch_joins_the_callers_transaction_and_rolls_back_with_it(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "lote")

        async def append_then_give_up() -> None:
            async with db.transaction() as tx:
                await conversations.add_messages(
                    conv.conversation_id, user.user_id, [{"content": "a"}], tx=tx
                )
                await conversations.add_message(conv.conversation_id, user.user_id, "b", tx=tx)
                raise RuntimeError("o chamador desistiu")

        with pytest.raises(RuntimeError, match="desistiu"):
            await append_then_give_up()
        assert await count_rows(db, "messages") == 0
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (0, 0)


async def test_concurrent_appends_to_many_conversations_each_get_their_own_result_or_error(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    """On PostgreSQL these appends are written together (conversations/coalescing.py): a refused one among them fails
    alone, with the error it would get on its own."""
    owner = await create_user(users)
    stranger = await create_user(users)
    open_ones = [
        (await conversations.create_conversation(owner.user_id, f"c{n}")).conversation_id for n in range(3)
    ]
    archived = (await conversations.create_conversation(owner.user_id, "arquivada")).conversation_id
    await conversations.archive_conversation(archived, owner.user_id)
    calls = [(conversation_id, owner.user_id) for conversation_id in open_ones for _ in range(10)]
    calls[5:5] = [(archived, owner.user_id), (open_ones[0], stranger.user_id), (uuid.uuid4(), owner.user_id)]
    before = _batching(db)
    results = await asyncio.gather(
        *(
            conversations.add_message(conversation_id, user_id, f"mensagem {n}", tokens_used=2)
            for n, (conversation_id, user_id) in enumerate(calls)
        ),
        return_exceptions=True,
    )
    errors = [type(result).__name__ for result in results if isinstance(result, Exception)]
    assert errors == ["ConflictError", "NotFoundError", "NotFoundError"]
    for conversation_id in open_ones:
        messages = await conversations.get_messages(conversation_id, owner.user_id)
        assert [m.seq for m in messages] == list(range(1, 11))
        stored = await conversations.get_conversation(conversation_id, owner.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (10, 20)
    assert await count_rows(db, "messages") == 30
    audited = await AuditManager(db).query(table="messages", limit=100)
    assert len(audited.items) == 30
    assert {event.record_id for event in audited.items} == {
        result.message_id for result in results if not isinstance(result, BaseException)
    }
    if db.backend == "postgresql":
        # The good appends were written by batch statements, none of which failed: the refused three, and only
        # they, went back to their callers.
        after = _batching(db)
        assert after["failed_statements"] == before["failed_statements"]
        assert after["appended"] - before["appended"] == 30
        assert after["returned"] - before["returned"] == 3


def _batching(db: Database) -> dict[str, int]:
    """The append coalescer's counts (PostgreSQL); zeros where appends are not coalesced (SQLite)."""
    counts: dict[str, int] = db.metrics().get("append_coalescer", {})
    return {name: counts.get(name, 0) for name in ("statements", "appended", "returned", "failed_statements")}


async def test_concurrent_appends_are_numbered_in_call_order_and_spread_over_two_statements(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    """On PostgreSQL, callers that queue together leave in two statements, so that one half's callers prepare their
    next appends while the server writes the other half; a conversation's appends all go in one of them."""
    owner = await create_user(users)
    busy = (await conversations.create_conversation(owner.user_id, "movimentada")).conversation_id
    quiet = [
        (await conversations.create_conversation(owner.user_id, f"c{n}")).conversation_id for n in range(16)
    ]

    before = _batching(db)
    one_conversation = await asyncio.gather(
        *(conversations.add_message(busy, owner.user_id, f"mensagem {n}", tokens_used=1) for n in range(16))
    )
    stored = await conversations.get_messages(busy, owner.user_id)
    assert sorted(message.seq for message in one_conversation) == list(range(1, 17))
    assert {(m.seq, m.content) for m in one_conversation} == {(m.seq, m.content) for m in stored}
    after_one = _batching(db)

    many_conversations = await asyncio.gather(
        *(conversations.add_message(c, owner.user_id, "primeira", tokens_used=1) for c in quiet)
    )
    assert [message.seq for message in many_conversations] == [1] * 16
    for conversation_id in quiet:
        conversation = await conversations.get_conversation(conversation_id, owner.user_id)
        assert conversation is not None
        assert conversation.message_count == 1
    if db.backend == "postgresql":
        after_many = _batching(db)
        # Sixteen appends to one conversation: one statement, numbered in the order the callers queued.
        assert [message.seq for message in one_conversation] == list(range(1, 17))
        assert after_one["statements"] - before["statements"] == 1
        # Sixteen conversations: two statements of eight, in flight together.
        assert after_many["statements"] - after_one["statements"] == 2
        assert after_many["appended"] - before["appended"] == 32


async def test_closing_the_database_lets_queued_and_in_flight_appends_finish(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    owner = await create_user(users)
    conversation_ids = [
        (await conversations.create_conversation(owner.user_id, f"c{n}")).conversation_id for n in range(4)
    ]
    closing = Database(db.settings)
    appending = ConversationManager(closing)
    calls = [
        asyncio.ensure_future(
            appending.add_message(conversation_ids[n % 4], owner.user_id, f"mensagem {n}", tokens_used=1)
        )
        for n in range(40)
    ]
    await asyncio.sleep(0)  # every call is under way: validated and queued, some statements sent
    await closing.close()
    assert all(call.done() for call in calls), "close() returned while appends were still waiting"
    appended = [call.result() for call in calls]
    assert sorted(m.content for m in appended) == sorted(f"mensagem {n}" for n in range(40))
    assert await count_rows(db, "messages") == 40
    for conversation_id in conversation_ids:
        stored = await conversations.get_messages(conversation_id, owner.user_id)
        assert [m.seq for m in stored] == list(range(1, 11))


class TestRepeatedAppends:
    """add_message(message_id=…): a call repeated after an error that left its outcome unknown stores the message
    once."""

    async def test_a_repeat_returns_the_stored_message_and_writes_nothing(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "retentativas")
        message_id = uuid.uuid4()

        first = await conversations.add_message(
            conv.conversation_id, owner.user_id, "Qual o METAR de SBGR?", message_id=message_id, tokens_used=4
        )
        again = await conversations.add_message(
            conv.conversation_id,
            owner.user_id,
            "Qual o METAR de SBGR?",
            message_id=str(message_id),
            tokens_used=4,
        )

        assert first.message_id == message_id
        assert again == first
        stored = await conversations.get_conversation(conv.conversation_id, owner.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (1, 4)
        assert await count_rows(db, "messages") == 1
        assert len((await AuditManager(db).query(record_id=message_id)).items) == 1

    async def test_concurrent_repeats_store_the_message_once_beside_other_appends(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "concorrentes")
        message_id = uuid.uuid4()

        results = await asyncio.gather(
            *(
                conversations.add_message(
                    conv.conversation_id, owner.user_id, "repetida", message_id=message_id, tokens_used=2
                )
                for _ in range(8)
            ),
            *(
                conversations.add_message(conv.conversation_id, owner.user_id, f"outra {n}", tokens_used=1)
                for n in range(8)
            ),
        )

        repeats = results[:8]
        assert all(result == repeats[0] for result in repeats)
        messages = await conversations.get_messages(conv.conversation_id, owner.user_id, limit=100)
        assert [m.seq for m in messages] == list(range(1, 10))
        assert [m.content for m in messages].count("repetida") == 1
        stored = await conversations.get_conversation(conv.conversation_id, owner.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (9, 10)

    async def test_a_repeat_in_the_callers_transaction_returns_the_stored_message(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "na transação")
        message_id = uuid.uuid4()

        async with db.transaction() as tx:
            first = await conversations.add_message(
                conv.conversation_id, owner.user_id, "uma vez", message_id=message_id, tx=tx
            )
            again = await conversations.add_message(
                conv.conversation_id, owner.user_id, "uma vez", message_id=message_id, tx=tx
            )

        assert again == first
        assert await count_rows(db, "messages") == 1
        stored = await conversations.get_conversation(conv.conversation_id, owner.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (1, first.tokens_used)

    async def test_a_repeat_after_the_conversation_was_archived_returns_the_stored_message(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "arquivada depois")
        message_id = uuid.uuid4()
        first = await conversations.add_message(
            conv.conversation_id, owner.user_id, "antes do arquivo", message_id=message_id
        )
        await conversations.archive_conversation(conv.conversation_id, owner.user_id)

        again = await conversations.add_message(
            conv.conversation_id, owner.user_id, "antes do arquivo", message_id=message_id
        )

        assert again == first
        with pytest.raises(ConflictError, match="archived"):
            await conversations.add_message(
                conv.conversation_id, owner.user_id, "nova", message_id=uuid.uuid4()
            )
        assert await count_rows(db, "messages") == 1

    async def test_an_id_that_is_another_message_is_a_conflict_and_writes_nothing(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        stranger = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "primeira")
        other = await conversations.create_conversation(owner.user_id, "segunda")
        strangers = await conversations.create_conversation(stranger.user_id, "alheia")
        message_id = uuid.uuid4()
        await conversations.add_message(
            conv.conversation_id, owner.user_id, "original", message_id=message_id
        )

        with pytest.raises(ConflictError, match="already another message"):
            await conversations.add_message(
                other.conversation_id, owner.user_id, "original", message_id=message_id
            )
        with pytest.raises(ConflictError, match="already another message"):
            await conversations.add_message(
                conv.conversation_id, owner.user_id, "mudada", message_id=message_id
            )
        with pytest.raises(ConflictError, match="already another message"):
            await conversations.add_message(
                conv.conversation_id, owner.user_id, "original", message_id=message_id, tokens_used=99
            )
        with pytest.raises(ConflictError) as foreign:
            await conversations.add_message(
                strangers.conversation_id, stranger.user_id, "original", message_id=message_id
            )
        # Whose message holds the id is not the stranger's business.
        assert "already another message" not in foreign.value.message
        assert str(owner.user_id) not in foreign.value.message
        with pytest.raises(ValidationError, match="message_id"):
            await conversations.add_message(
                conv.conversation_id, owner.user_id, "texto", message_id="nem-uuid"
            )

        assert await count_rows(db, "messages") == 1
        for conversation_id, user_id in (
            (other.conversation_id, owner.user_id),
            (strangers.conversation_id, stranger.user_id),
        ):
            stored = await conversations.get_conversation(conversation_id, user_id)
            assert stored is not None
            assert stored.message_count == 0
        original = await conversations.get_conversation(conv.conversation_id, owner.user_id)
        assert original is not None
        assert original.message_count == 1


async def test_an_append_whose_batch_wrote_it_without_telling_finds_its_message(
    postgresql_db: Database,
) -> None:
    """A batch statement that wrote its appends but whose outcome never reached its callers (a batch cancelled while
    its statement was in flight) hands them back to append alone: each meets its own id and gets its stored message.
    PostgreSQL only: SQLite does not batch appends."""
    db = postgresql_db
    conversations = ConversationManager(db)
    try:
        owner = await create_user(UserManager(db))
        conv = await conversations.create_conversation(owner.user_id, "resultado perdido")
        with pytest.MonkeyPatch.context() as patch:
            # The statement runs and commits; what it returned is lost, so every caller is handed back.
            patch.setattr(coalescing, "appended_by_message", lambda rows: {})
            results = await asyncio.gather(
                *(
                    conversations.add_message(
                        conv.conversation_id, owner.user_id, f"mensagem {n}", tokens_used=1
                    )
                    for n in range(4)
                )
            )
        messages = await conversations.get_messages(conv.conversation_id, owner.user_id)
        assert sorted(m.message_id for m in messages) == sorted(r.message_id for r in results)
        assert sorted(r.seq for r in results) == [1, 2, 3, 4]
        stored = await conversations.get_conversation(conv.conversation_id, owner.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (4, 4)
        assert db.metrics()["append_coalescer"]["returned"] >= 4, "the appends were handed back"
    finally:
        await empty_all_tables(db)
