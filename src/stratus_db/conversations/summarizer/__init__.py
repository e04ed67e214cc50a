"""Summaries of a conversation's older messages, so that they can leave the context window without being forgotten.

`Summarizer` is the protocol compression calls: it folds the previous summary and the messages being compressed into
one summary within a token budget (as `estimate_tokens` counts). Two implementations:

- `ExtractiveSummarizer`, the offline default: deterministic, Portuguese-aware, it keeps the most informative whole
  sentences (aviation codes, numbers, the user's questions, the conversation's recurring terms) in their original
  order, each line prefixed by its speaker.
- `OpenAISummarizer`, only when chosen (STRATUS_SUMMARIZER=openai, with OPENAI_API_KEY): a Chat Completions call
  with a Portuguese prompt, its answer trimmed to the budget by the same rules.

A summarizer that sends the text out of the process (OpenAI's, a chat model's, and a host's unless it declares
`sends_text_out = False`) needs the user's consent to `external_summarizer` (docs/privacy.md).

A host may pass any object with `summarize` to the database handle instead (`Database(summarizer=...)`), such as
`ChatModelSummarizer(chat_model)` over a LangChain chat model it already uses.
"""

from stratus_db.conversations.summarizer.chat_model import ChatModelSummarizer
from stratus_db.conversations.summarizer.extractive import ExtractiveSummarizer, extractive_summary
from stratus_db.conversations.summarizer.llm import (
    DEFAULT_MAX_INPUT_TOKENS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_OPENAI_MODEL,
    DEFAULT_TIMEOUT_SECONDS,
    SYSTEM_PROMPT,
    OpenAISummarizer,
    summarizer_for,
)
from stratus_db.conversations.summarizer.text import (
    MESSAGE_TYPES,
    Summarizer,
    SummaryInput,
    clean_text,
    sends_text_out,
    speaker_label,
    split_sentences,
    trim_to_budget,
    truncate_on_word,
    within_budget,
)

__all__ = [
    "DEFAULT_MAX_INPUT_TOKENS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_OPENAI_MODEL",
    "DEFAULT_TIMEOUT_SECONDS",
    "MESSAGE_TYPES",
    "SYSTEM_PROMPT",
    "ChatModelSummarizer",
    "ExtractiveSummarizer",
    "OpenAISummarizer",
    "Summarizer",
    "SummaryInput",
    "clean_text",
    "extractive_summary",
    "sends_text_out",
    "speaker_label",
    "split_sentences",
    "summarizer_for",
    "trim_to_budget",
    "truncate_on_word",
    "within_budget",
]
