"""The context window: which part of a conversation an agent sends its model under a token budget.

Rules (docs/conversations.md): the summary of the folded history comes first when it fits in the budget; if it alone
is larger than the budget it is left out. The newest unsummarized messages then fill what is left, newest first,
stopping at the first that does not fit: the window is a contiguous tail of the conversation, a message is never cut
and never skipped to make room for an older one. A message counts its `tokens_used` (at least 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from stratus_db.kit.tokens import TokenCounter


def message_tokens(tokens_used: int) -> int:
    """What a message weighs in a window (the SQL that bounds the read counts the same)."""
    return max(1, tokens_used)


def summary_tokens(summary: str | None, count_tokens: TokenCounter) -> int:
    return 0 if not summary else count_tokens(summary)


def fit(
    summary: str | None, newest_first_tokens: Sequence[int], max_tokens: int, count_tokens: TokenCounter
) -> tuple[bool, int]:
    """(whether the summary is included, how many of the newest messages are) within `max_tokens`, the summary
    counted by `count_tokens`."""
    cost = summary_tokens(summary, count_tokens)
    with_summary = 0 < cost <= max_tokens
    room = max_tokens - cost if with_summary else max_tokens
    taken = 0
    for tokens in newest_first_tokens:
        weight = message_tokens(tokens)
        if weight > room:
            break
        room -= weight
        taken += 1
    return with_summary, taken
