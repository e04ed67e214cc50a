"""get_context's per-process cache of conversation tails (conversations/recent.py) never serves a stale window."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest

from stratus_db import ConversationManager, Database, NotFoundError, UserManager
from tests.fixtures.factories import create_user


@pytest.fixture
async def other_process(db: Database) -> AsyncIterator[ConversationManager]:
    """Another handle on the same database, with no cache: what another process of the platform would write."""
    other = Database(db.settings.model_copy(update={"STRATUS_CONTEXT_CACHE_CONVERSATIONS": 0}))
    yield ConversationManager(other)
    await other.close()


async def test_windows_match_an_uncached_read_through_appends_compressions_and_budgets(
    db: Database, users: UserManager, conversations: ConversationManager, other_process: ConversationManager
) -> None:
    user = await create_user(users)
    conversation_id = (await conversations.create_conversation(user.user_id, "cache")).conversation_id
    chance = random.Random(20261125)
    for step in range(60):
        appended = chance.choice([0, 1, 1, 2, 5])
        if appended:
            writer = chance.choice([conversations, other_process])
            await writer.add_messages(
                conversation_id,
                user.user_id,
                [
                    {"content": f"passo {step} mensagem {n}", "tokens_used": chance.randint(0, 40)}
                    for n in range(appended)
                ],
            )
        if step % 17 == 16:
            await other_process.compress_history(
                conversation_id, user.user_id, keep_last=chance.randint(0, 6)
            )
        budget = chance.choice([1, 15, 60, 200, 5000])
        cached = await conversations.get_context(conversation_id, user.user_id, budget)
        fresh = await other_process.get_context(conversation_id, user.user_id, budget)
        assert cached == fresh, f"step {step}, budget {budget}"


async def test_a_larger_budget_reads_past_the_cached_tail(
    users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    conversation_id = (await conversations.create_conversation(user.user_id, "cache")).conversation_id
    await conversations.add_messages(
        conversation_id, user.user_id, [{"content": f"m{n}", "tokens_used": 10} for n in range(10)]
    )
    small = await conversations.get_context(conversation_id, user.user_id, 25)
    assert [m.seq for m in small.messages] == [9, 10]
    large = await conversations.get_context(conversation_id, user.user_id, 65)
    assert [m.seq for m in large.messages] == [5, 6, 7, 8, 9, 10]


async def test_a_purged_conversation_is_not_found_from_the_cache(
    users: UserManager, conversations: ConversationManager, other_process: ConversationManager
) -> None:
    user = await create_user(users)
    conversation_id = (await conversations.create_conversation(user.user_id, "cache")).conversation_id
    await conversations.add_message(conversation_id, user.user_id, "oi")
    assert len((await conversations.get_context(conversation_id, user.user_id, 100)).messages) == 1
    await other_process.purge_conversation(conversation_id, user.user_id)
    with pytest.raises(NotFoundError):
        await conversations.get_context(conversation_id, user.user_id, 100)


async def test_a_read_inside_a_transaction_that_rolls_back_leaves_nothing_behind(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    conversation_id = (await conversations.create_conversation(user.user_id, "cache")).conversation_id
    await conversations.add_message(conversation_id, user.user_id, "primeira")
    await conversations.get_context(conversation_id, user.user_id, 100)

    async def append_read_and_give_up() -> None:
        async with db.transaction() as tx:
            await conversations.add_message(conversation_id, user.user_id, "fantasma", tx=tx)
            inside = await conversations.get_context(conversation_id, user.user_id, 100, tx=tx)
            assert [m.content for m in inside.messages] == ["primeira", "fantasma"]
            raise RuntimeError("desistiu")

    with pytest.raises(RuntimeError, match="desistiu"):
        await append_read_and_give_up()
    await conversations.add_message(conversation_id, user.user_id, "segunda")
    after = await conversations.get_context(conversation_id, user.user_id, 100)
    assert [m.content for m in after.messages] == ["primeira", "segunda"]


async def test_another_owner_never_reads_a_cached_tail(
    users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    intruder = await create_user(users)
    conversation_id = (await conversations.create_conversation(user.user_id, "cache")).conversation_id
    await conversations.add_message(conversation_id, user.user_id, "segredo")
    await conversations.get_context(conversation_id, user.user_id, 100)
    with pytest.raises(NotFoundError):
        await conversations.get_context(conversation_id, intruder.user_id, 100)
    with pytest.raises(NotFoundError):
        await conversations.get_context(uuid.uuid4(), user.user_id, 100)
