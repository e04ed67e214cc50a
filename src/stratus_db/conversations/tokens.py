"""The offline token estimator used when a caller does not say how many tokens a message used."""

from __future__ import annotations

CHARACTERS_PER_TOKEN = 3.5
"""Portuguese prose averages about 3.5 characters per token with the OpenAI tokenizers (the corpus uses it too)."""


def estimate_tokens(text: str) -> int:
    """`round(len(text) / 3.5)`, at least 1 (messages are never empty)."""
    return max(1, round(len(text) / CHARACTERS_PER_TOKEN))
