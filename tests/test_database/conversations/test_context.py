"""get_context: the summary and the newest messages under a token budget, never more, never half a message."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from stratus_db import ConversationManager, Database, NotFoundError, UserManager, ValidationError
from stratus_db.conversations import window
from stratus_db.kit.tokens import estimate_tokens
from stratus_db.models import ConversationRow
from tests.fixtures.factories import create_user


async def _conversation(
    users: UserManager, conversations: ConversationManager, tokens: list[int]
) -> tuple[uuid.UUID, uuid.UUID]:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "janela")
    if tokens:
        await conversations.add_messages(
            conv.conversation_id,
            user.user_id,
            [{"content": f"mensagem {n}", "tokens_used": count} for n, count in enumerate(tokens, start=1)],
        )
    return conv.conversation_id, user.user_id


async def _summarize(db: Database, conversation_id: uuid.UUID, summary: str, through_seq: int) -> None:
    """Stand in for compress_history: what it writes, so the window's rules are tested on their own."""
    async with db.transaction() as conn:
        await conn.execute(
            update(ConversationRow)
            .where(ConversationRow.conversation_id == conversation_id)
            .values(summary=summary, summarized_through_seq=through_seq)
        )


async def test_the_newest_messages_that_fit_in_order(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [10, 20, 30, 40])
    context = await conversations.get_context(conversation_id, user_id, 75)
    assert [m.content for m in context.messages] == ["mensagem 3", "mensagem 4"]
    assert (context.total_tokens, context.omitted_messages, context.summary) == (70, 2, None)


async def test_the_window_is_contiguous_a_small_older_message_does_not_jump_the_gap(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [1, 50, 10])
    context = await conversations.get_context(conversation_id, user_id, 30)
    assert [m.seq for m in context.messages] == [3]
    assert context.total_tokens == 10


async def test_a_budget_smaller_than_the_newest_message_gives_no_message(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [5, 100])
    context = await conversations.get_context(conversation_id, user_id, 99)
    assert (context.messages, context.total_tokens, context.omitted_messages) == ([], 0, 2)


async def test_an_exact_fit_is_included(users: UserManager, conversations: ConversationManager) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [5, 100])
    context = await conversations.get_context(conversation_id, user_id, 105)
    assert [m.seq for m in context.messages] == [1, 2]
    assert context.total_tokens == 105


async def test_an_empty_conversation(users: UserManager, conversations: ConversationManager) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [])
    context = await conversations.get_context(conversation_id, user_id, 1000)
    assert (context.summary, context.messages, context.total_tokens, context.omitted_messages) == (
        None,
        [],
        0,
        0,
    )


async def test_the_summary_comes_first_and_summarized_messages_leave_the_window(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [10, 10, 10, 10, 10])
    summary = "Usuário planeja navegação VFR de SBKP para SBRP num Cessna 172."
    await _summarize(db, conversation_id, summary, through_seq=3)
    cost = estimate_tokens(summary)
    context = await conversations.get_context(conversation_id, user_id, cost + 15)
    assert (context.summary, context.summary_tokens) == (summary, cost)
    assert [m.seq for m in context.messages] == [5]
    assert (context.total_tokens, context.omitted_messages) == (cost + 10, 1)
    roomy = await conversations.get_context(conversation_id, user_id, 10_000)
    assert [m.seq for m in roomy.messages] == [4, 5]


async def test_a_summary_larger_than_the_budget_is_left_out_and_messages_get_the_budget(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [4, 4, 4])
    await _summarize(db, conversation_id, "resumo " * 200, through_seq=1)
    context = await conversations.get_context(conversation_id, user_id, 10)
    assert (context.summary, context.summary_tokens) == (None, 0)
    assert [m.seq for m in context.messages] == [2, 3]
    assert context.total_tokens == 8


async def test_a_message_counted_at_zero_tokens_still_weighs_one(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [0, 0, 0])
    context = await conversations.get_context(conversation_id, user_id, 2)
    assert [m.seq for m in context.messages] == [2, 3]
    assert context.total_tokens == 2


async def test_a_long_conversation_never_exceeds_the_budget(
    users: UserManager, conversations: ConversationManager
) -> None:
    sizes = [(n * 37) % 90 + 1 for n in range(300)]
    conversation_id, user_id = await _conversation(users, conversations, sizes)
    for budget in (1, 45, 46, 1000, 4321, sum(sizes), sum(sizes) + 1):
        context = await conversations.get_context(conversation_id, user_id, budget)
        expected = window.fit(None, sizes[::-1], budget, estimate_tokens)[1]
        assert len(context.messages) == expected
        assert context.total_tokens == sum(sizes[len(sizes) - expected :]) <= budget
        assert [m.seq for m in context.messages] == list(range(301 - expected, 301))


@pytest.mark.parametrize("budget", [0, -1, 2_000_001, 1.5, "100", True, None])
async def test_bad_budgets(users: UserManager, conversations: ConversationManager, budget: object) -> None:
    conversation_id, user_id = await _conversation(users, conversations, [1])
    with pytest.raises(ValidationError, match="max_tokens"):
        await conversations.get_context(conversation_id, user_id, budget)  # type: ignore[arg-type]


async def test_another_users_conversation_is_not_found(
    users: UserManager, conversations: ConversationManager
) -> None:
    conversation_id, _ = await _conversation(users, conversations, [1])
    intruder = await create_user(users)
    with pytest.raises(NotFoundError, match="does not belong"):
        await conversations.get_context(conversation_id, intruder.user_id, 100)


@given(
    summary_tokens=st.integers(min_value=0, max_value=50),
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    budget=st.integers(min_value=1, max_value=200),
)
def test_fit_takes_the_longest_newest_run_within_the_budget(
    summary_tokens: int, sizes: list[int], budget: int
) -> None:
    summary = "x" * round(summary_tokens * 3.5) if summary_tokens else None
    with_summary, taken = window.fit(summary, sizes, budget, estimate_tokens)
    cost = window.summary_tokens(summary, estimate_tokens) if with_summary else 0
    used = cost + sum(max(1, size) for size in sizes[:taken])
    assert used <= budget
    assert with_summary == (summary is not None and window.summary_tokens(summary, estimate_tokens) <= budget)
    if taken < len(sizes):
        assert used + max(1, sizes[taken]) > budget  # the next older message would not have fitted
