"""What both summarizers share: the messages they are given, the Summarizer protocol, and text handling (cleaning,
sentences, speakers, the token budget)."""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from stratus_db.errors import ValidationError
from stratus_db.kit.text import fold
from stratus_db.kit.tokens import CHARACTERS_PER_TOKEN, TokenCounter, estimate_tokens, weighted_characters

MESSAGE_TYPES = ("user_input", "agent_response", "system")


@dataclass(frozen=True, slots=True)
class SummaryInput:
    """One message to fold into a summary.

    Attributes:
        seq: the message's sequence number in its conversation; summaries follow this order.
        message_type: "user_input", "agent_response" or "system".
        agent_name: the agent that answered, for agent responses ("meteorologia"); None otherwise.
        content: the message text.
    """

    seq: int
    message_type: str
    agent_name: str | None
    content: str

    def __post_init__(self) -> None:
        if self.message_type not in MESSAGE_TYPES:
            raise ValidationError(
                f"message_type must be one of {', '.join(MESSAGE_TYPES)}; got {str(self.message_type)[:40]!r}"
            )


class Summarizer(Protocol):
    """Folds a previous summary and newer messages into one summary that fits a token budget."""

    async def summarize(
        self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
    ) -> str:
        """Summarize `previous_summary` followed by `messages`.

        Args:
            messages: the messages to fold in, in any order (they are read by `seq`).
            previous_summary: the conversation's current summary, or None.
            max_tokens: the budget; `estimate_tokens(result) <= max_tokens` always holds.

        Returns:
            The new summary; "" when there is nothing to summarize.

        Raises:
            ValidationError: `max_tokens` is not a positive integer.
            SummarizerUnavailableError: a remote summarizer failed (`retryable` says whether to try again).
            ConfigurationError: a remote summarizer refused the credentials or does not know the model.
        """
        ...


def sends_text_out(summarizer: object) -> bool:
    """Whether `summarizer` sends the messages it is given out of this process, so that compress_history needs the
    user's consent to `external_summarizer`: its `sends_text_out` attribute, and True when it has none (a host's
    summarizer is taken to be remote unless it says `sends_text_out = False`)."""
    return getattr(summarizer, "sends_text_out", True) is not False


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"\*\*|__|`")
_HEADING_OR_QUOTE = re.compile(r"^\s*(?:#{1,6}|>+)\s+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•▪–]|\d{1,2}[.)])\s+")
SPACES = re.compile(r"\s+")
_TABLE_RULE = re.compile(r"[|:\-\s]+")
SPEAKER = re.compile(r"^(?:Usuário|Sistema|Agente(?: [^\s:][^:\n]{0,99})?): ")

_SENTENCE_END = re.compile(r"(?:[.!?]+|…|(?<=[A-Z0-9])=)[\"'”’)\]»]*(?=\s|$)")
"""Where a sentence may end: terminal punctuation (or the `=` closing a METAR/TAF report) followed by a space or
the end. Dots inside a token (3.000 ft, 1,5, www.redemet.aer.mil.br, p.ex.) never qualify."""
_PREVIOUS_WORD = re.compile(r"(\S+)\s*$")
_NON_SPACE = re.compile(r"\S")
_WEATHER_REPORT = re.compile(r"\b(?:METAR|SPECI|TAF)(?:\s+[A-Z0-9/+\-]+(?:\.[A-Z0-9]+)*)+")
"""A coded weather report: the keyword and the upper-case groups after it. Nothing inside it ends a sentence."""

TITLES = frozenset({"sr", "sra", "srta", "dr", "dra", "prof", "profa", "eng", "cmte", "cte", "cel", "ten", "maj",
                    "gen", "brig", "sgt", "av", "exmo", "exma", "sto", "sta"})  # fmt: skip
"""Abbreviations that always precede a name ("Cmte. Silva"): their dot never ends a sentence."""
ABBREVIATIONS = TITLES | frozenset({
    "aprox", "etc", "ex", "p", "pag", "pags", "fig", "art", "arts", "inc", "cap", "vol", "tel", "obs", "min", "max",
    "no", "nos", "num", "km", "kg", "h", "hr", "hrs", "seg", "ref", "ed", "op", "cia", "ltda", "aeron", "vs",
    "qtd", "qtde", "depto", "dept",
})  # fmt: skip
"""Abbreviations (folded, without the dot) whose dot ends a sentence only when a capital letter follows."""


def clean_text(text: str) -> str:
    """Text safe to store and to split: lone surrogates become U+FFFD, control characters (NUL included) spaces,
    and line ends "\\n"."""
    text = _LONE_SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))


def _weather_spans(line: str) -> tuple[list[int], list[int]]:
    starts: list[int] = []
    ends: list[int] = []
    for match in _WEATHER_REPORT.finditer(line):
        starts.append(match.start())
        ends.append(match.end())
    return starts, ends


def _inside(position: int, spans: tuple[list[int], list[int]]) -> bool:
    starts, ends = spans
    index = bisect.bisect_right(starts, position) - 1
    return index >= 0 and position < ends[index]


def _ends_sentence(line: str, match: re.Match[str], spans: tuple[list[int], list[int]]) -> bool:
    if _inside(match.start(), spans):
        return False
    if not match.group().startswith(".") or match.group().startswith(".."):
        return True
    following = _NON_SPACE.search(line, match.end())
    if following is None:
        return True
    # Looking back a bounded distance keeps splitting linear on a 100 kB line of dots.
    window_start = max(0, match.start() - 40)
    before = _PREVIOUS_WORD.search(line, window_start, match.start())
    if before is None:
        return True
    word = before.group(1).lstrip("([{\"'“‘«")
    folded = fold(word)
    next_char = following.group()
    if len(word) == 1 and word.isalpha() and word.isupper():
        return False  # an initial: "J. Silva"
    if folded in TITLES:
        return False
    if folded in ABBREVIATIONS and not next_char.isupper():
        return False
    if word.isdigit() and len(word) <= 2:
        # An enumeration ("Passos: 1. abrir o plano 2. enviar") rather than a sentence ending in a number.
        if next_char.islower():
            return False
        preceding = line[max(0, before.start(1) - 40) : before.start(1)].rstrip()
        if (not preceding and before.start(1) <= 40) or preceding.endswith((":", ";")):
            return False
    return True


def split_sentences(line: str) -> list[str]:
    """The sentences of one line of text, each with its spaces collapsed.

    Splits after ., !, ?, … and a METAR/TAF's closing "=", but not after abbreviations ("Sr.", "aprox."), initials,
    inline enumerations, inside numbers ("3.000", "1,5") or inside a coded weather report.
    """
    spans = _weather_spans(line)
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(line):
        if _ends_sentence(line, match, spans):
            sentence = SPACES.sub(" ", line[start : match.end()]).strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
    rest = SPACES.sub(" ", line[start:]).strip()
    if rest:
        sentences.append(rest)
    return sentences


def plain_lines(text: str) -> list[str]:
    """The non-empty lines of a message as plain text: no Markdown emphasis, headings, quotes, list markers or
    table rules, and a table row's cells separated by "; "."""
    lines = []
    for raw in clean_text(text).split("\n"):
        line = _LIST_MARKER.sub("", _HEADING_OR_QUOTE.sub("", _MARKDOWN.sub("", raw))).strip()
        if line.startswith("|"):
            if _TABLE_RULE.fullmatch(line):
                continue
            line = "; ".join(cell.strip() for cell in line.strip("|").split("|") if cell.strip())
        if line:
            lines.append(line)
    return lines


def fits(text: str, max_tokens: int) -> bool:
    return estimate_tokens(text) <= max_tokens


def truncate_on_word(text: str, max_tokens: int) -> str:
    """`text` cut at the last word boundary that keeps it, plus "…", within `max_tokens`.

    A first word longer than the whole budget is cut between characters (never inside a combining sequence).
    """
    if fits(text, max_tokens):
        return text
    # The longest prefix that fits with its "…": the estimate only grows with the prefix, so bisect.
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(text[:middle] + "…", max_tokens):
            low = middle
        else:
            high = middle - 1
    room = low
    if room <= 0:
        return "…" if fits("…", max_tokens) else ""
    cut = text.rfind(" ", 0, room + 1)
    if cut <= 0:
        cut = room
        while cut > 0 and unicodedata.combining(text[cut]):
            cut -= 1
    head = text[:cut].rstrip(" ,;:–-")
    return head + "…"


def truncate_line(prefix: str, sentence: str, max_tokens: int) -> str:
    """One over-long sentence cut to the budget, keeping its speaker prefix only if some words fit after it."""
    cut = truncate_on_word(prefix + sentence, max_tokens)
    if len(cut.removesuffix("…")) > len(prefix):
        return cut
    return truncate_on_word(sentence, max_tokens)


def trim_to_budget(text: str, max_tokens: int) -> str:
    """`text` reduced to its leading whole sentences that fit `max_tokens`, keeping its lines.

    Used on a model's answer: sentences are kept in order up to the first that does not fit; when not even the
    first fits, it is cut on a word boundary with "…". Speaker prefixes ("Usuário: ") are never split off.

    Raises:
        ValidationError: `max_tokens` is not a positive integer.
    """
    check_budget(max_tokens)
    lines = [SPACES.sub(" ", line).strip() for line in clean_text(text).split("\n")]
    lines = [line for line in lines if line]
    result = "\n".join(lines)
    if fits(result, max_tokens):
        return result
    max_weight = budget_weight(max_tokens)
    kept: list[str] = []
    used = 0.0
    for line in lines:
        prefix_match = SPEAKER.match(line)
        prefix = prefix_match.group() if prefix_match else ""
        body: list[str] = []
        line_length = weighted_characters(prefix) + (
            1 if kept else 0
        )  # its prefix, and the newline before it
        for sentence in split_sentences(line[len(prefix) :]):
            cost = weighted_characters(sentence) + (1 if body else 0)
            if used + line_length + cost > max_weight:
                if body:
                    kept.append(prefix + " ".join(body))
                if kept:
                    return _shorten_until_fits(kept, max_tokens)
                return truncate_line(prefix, sentence, max_tokens)
            body.append(sentence)
            line_length += cost
        if body:
            kept.append(prefix + " ".join(body))
            used += line_length
    return _shorten_until_fits(kept, max_tokens)


def _shorten_until_fits(lines: list[str], max_tokens: int) -> str:
    # The weights add up to the estimate but for its rounding: a last check.
    while len(lines) > 1 and not fits("\n".join(lines), max_tokens):
        lines.pop()
    result = "\n".join(lines)
    return result if fits(result, max_tokens) else truncate_on_word(result, max_tokens)


def within_budget(text: str, max_tokens: int, count_tokens: TokenCounter) -> str:
    """`text` trimmed (`trim_to_budget`) until `count_tokens` — the host's counter, which need not count as the
    offline estimate does — says it fits `max_tokens`; "" when not even a word does."""
    budget = max_tokens
    trimmed = trim_to_budget(text, budget)
    while trimmed and count_tokens(trimmed) > max_tokens:
        # Shrink the estimate's budget in proportion to the overrun, by at least one token each time.
        budget = min(budget - 1, budget * max_tokens // max(count_tokens(trimmed), 1))
        trimmed = trim_to_budget(text, budget) if budget >= 1 else ""
    return trimmed


def budget_weight(max_tokens: int) -> float:
    """`max_tokens` in weighted characters (kit/tokens.py), which add up over the pieces of a text: what the
    estimate rounds to `max_tokens` or less. A last `fits` check covers the rounding of a half."""
    return (max_tokens + 0.5) * CHARACTERS_PER_TOKEN


def check_budget(max_tokens: int) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValidationError(f"max_tokens must be a positive integer (tokens); got {repr(max_tokens)[:40]}")


def speaker_label(message: SummaryInput) -> str:
    """ "Usuário", "Agente meteorologia" (or "Agente" without a name) or "Sistema"."""
    if message.message_type == "user_input":
        return "Usuário"
    if message.message_type == "system":
        return "Sistema"
    name = SPACES.sub(" ", clean_text(message.agent_name or "")).replace(":", " ").strip()[:100].strip()
    return f"Agente {name}" if name else "Agente"
