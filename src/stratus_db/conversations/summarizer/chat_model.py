"""Summaries by any chat model the host already uses: a LangChain `BaseChatModel` (ChatOpenAI, ChatVertexAI,
ChatAnthropic, a local model…) or anything with the same `ainvoke`.

No LangChain dependency: the model is duck-typed, `await model.ainvoke([("system", …), ("human", …)])` returning a
message whose `content` is the text (or LangChain's list of content blocks). Pass it to the handle:
`Database(settings, summarizer=ChatModelSummarizer(ChatOpenAI(model="gpt-4o-mini")))`. The conversation text goes
wherever that model sends it: choosing the model is choosing the transfer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from stratus_db.conversations.summarizer.llm import (
    DEFAULT_MAX_INPUT_TOKENS,
    finished_summary,
    summary_request,
)
from stratus_db.conversations.summarizer.text import SummaryInput
from stratus_db.errors import ConfigurationError, SummarizerUnavailableError


def _text_of(content: Any) -> str | None:
    """A reply's text: a string, or the text parts of LangChain's content blocks; None when there is none."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part if isinstance(part, str) else part.get("text", "")
            for part in content
            if isinstance(part, str) or (isinstance(part, dict) and part.get("type", "text") == "text")
        ]
        return "".join(part for part in parts if isinstance(part, str))
    return None


class ChatModelSummarizer:
    """A `Summarizer` over a chat model's `ainvoke`, with the same Portuguese prompt and budget rules as
    `OpenAISummarizer` (an over-long transcript is first reduced by the extractive summarizer; the answer is trimmed).

    `sends_text_out` (default True) says whether the model's calls take the text out of the process, so that
    compress_history needs the user's consent to `external_summarizer` (docs/privacy.md); False only for a model that
    runs where the data already is.

    Raises:
        ConfigurationError: `chat_model` has no `ainvoke`, `max_input_tokens` is not a positive integer, or
            `sends_text_out` is not a bool.
    """

    def __init__(
        self,
        chat_model: Any,
        *,
        max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS,
        sends_text_out: bool = True,
    ) -> None:
        if not callable(getattr(chat_model, "ainvoke", None)):
            raise ConfigurationError(
                f"chat_model must have an async ainvoke(messages) method (a LangChain chat model), got "
                f"{type(chat_model).__name__}"
            )
        if (
            isinstance(max_input_tokens, bool)
            or not isinstance(max_input_tokens, int)
            or max_input_tokens < 1
        ):
            raise ConfigurationError(f"max_input_tokens must be a positive integer, got {max_input_tokens!r}")
        if not isinstance(sends_text_out, bool):
            raise ConfigurationError(f"sends_text_out must be True or False, got {sends_text_out!r}")
        self.chat_model = chat_model
        self.max_input_tokens = max_input_tokens
        self.sends_text_out = sends_text_out

    async def summarize(
        self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
    ) -> str:
        """See `Summarizer.summarize`. One `ainvoke` of the chat model (its own retries, if any, apply).

        Raises:
            SummarizerUnavailableError: the model failed (retryable: it is the model's own failure, of any kind) or
                answered no text (not retryable).
        """
        request = summary_request(messages, previous_summary, max_tokens, self.max_input_tokens)
        if request is None:
            return ""
        prompt, transcript = request
        name = type(self.chat_model).__name__
        try:
            reply = await self.chat_model.ainvoke([("system", prompt), ("human", transcript)])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the host's model, whatever it raises: a summarizer failure, never a crash
            raise SummarizerUnavailableError(
                f"chat model {name} failed ({type(exc).__name__})", retryable=True
            ) from exc
        text = _text_of(getattr(reply, "content", reply))
        if not text or not text.strip():
            raise SummarizerUnavailableError(f"chat model {name} returned no summary text", retryable=False)
        metadata = getattr(reply, "response_metadata", None)
        finish_reason = metadata.get("finish_reason") if isinstance(metadata, dict) else None
        return finished_summary(text, max_tokens, cut_off=finish_reason == "length")
