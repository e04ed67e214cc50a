"""The extractive summarizer, the offline default: deterministic and Portuguese-aware, it keeps the most
informative whole sentences (aviation codes, numbers, the user's questions, the conversation's recurring terms) in
their original order, each line prefixed by its speaker."""

from __future__ import annotations

import asyncio
import heapq
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import Stemmer

from stratus_db.conversations.summarizer.text import (
    SPACES,
    SPEAKER,
    SummaryInput,
    budget_weight,
    check_budget,
    fits,
    plain_lines,
    speaker_label,
    split_sentences,
    truncate_line,
)
from stratus_db.kit.text import fold
from stratus_db.kit.tokens import weighted_characters


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = frozenset(fold(word) for word in _words("""
a à ao aos aquela aquelas aquele aqueles aquilo as às até com como da das de dela delas dele deles depois do dos e
é ela elas ele eles em entre era eram essa essas esse esses esta está estão estas estava estavam este estes eu foi
foram há isso isto já lhe lhes mais mas me mesmo meu meus minha minhas muito na não nas nem no nos nós nossa nossas
nosso nossos num numa o os ou para pela pelas pelo pelos por qual quando que quem se seja sem ser será seu seus só
sua suas também te tem têm tenho teu teus ti tu tua tuas um uma umas uns você vocês vos cada pra pro pras pros
ser sido sendo sou são somos estar estou estamos estive esteve ter tinha tive teve haver havia houve fazer faz
pode podem posso poder vai vou vamos ir sobre ainda assim então porque pois onde aqui aí lá ali agora bem tudo todo
toda todos todas outro outra outros outras qualquer algum alguma alguns algumas nada nenhum nenhuma coisa dá
oi olá ola obrigado obrigada obrigadão valeu blz beleza ok okay certo claro sim bom boa dia tarde noite tá né pq
vc vcs tb tbm entendi perfeito ótimo show legal aliás enfim tipo daí
"""))  # fmt: skip
"""Portuguese function words and chat pleasantries: they say nothing about what a conversation is about."""

AVIATION_TERMS = _words("""
METAR SPECI TAF NOTAM AIP ROTAER AISWEB REDEMET DECEA ANAC RBAC RBHA IS CMA CHT CIV VFR IFR VMC IMC CAVOK NOSIG
BECMG TEMPO PROB30 PROB40 QNH QFE QNE ATIS CTR TMA ATZ FIR AWY ATC ACC APP TWR AFIS ILS VOR NDB DME RNAV RNP GNSS
GPS ADF PAPI VASIS TSRA SHRA RA DZ BR FG HZ CB TCU FEW SCT BKN OVC VV SIGMET AIRMET GAMET SIGWX POH AFM MEL PCN
TODA TORA ASDA LDA MTOW MLW UTC ETA ETD EET SID STAR IAC VAC ARC TCAS ELT PIC SIC PP PC PLA IFRA MNTE MLTE
""")  # fmt: skip
"""Upper-case aviation terms whose mention makes a sentence worth keeping."""

MAX_STEMMED_CHARS = 40
"""Longer runs of letters are not Portuguese words: they are not stemmed."""
_TOKEN = re.compile(r"[^\W_]+(?:[/:.,'’+\-][^\W_]+)*")
_AERODROME = re.compile(r"S[BDIJNSW][A-Z]{2}")
_REGISTRATION = re.compile(r"P[PRSTU]-?[A-Z]{3}")

CODE_WEIGHT = 2.0
"""An aviation code (SBGR, 34006KT, FL100, PR-ABC, METAR) counts as much as this many ordinary words."""
NUMBER_WEIGHT = 1.5
"""A number or time (1.500 ft, 14h30, 09:00) counts as much as this many ordinary words."""
WEIGHTED_PER_SENTENCE = 4
"""Only a sentence's first few codes and numbers get their extra weight: a raw TAF of 25 groups is one fact, not
25, and must not outrank everything else."""
QUESTION_FACTOR = 2.0
"""A question the user asked: what they wanted to know is what an agent most needs to remember."""
SYSTEM_FACTOR = 3.0
"""System messages hold the conversation's standing context (who the user is, what they fly): it should survive
every fold."""
LEAD_FACTOR = 1.2
"""The first sentence of a message usually states its point."""
PREVIOUS_SUMMARY_FACTOR = 1.5
"""The previous summary's sentences already survived a selection: they outrank new sentences of equal merit."""
PREVIOUS_SUMMARY_SHARE = 0.5
"""While new sentences still want room, the previous summary may take at most this share of the budget; so a
summary folded many times keeps learning, and what is left over goes to whichever sentences remain."""
THIN_SENTENCE_FACTOR = 0.25
"""A sentence with fewer than two content terms ("Cabeçalho", "Entendi.") rarely carries anything on its own."""
LENGTH_EXPONENT = 0.6
"""Sentences are chosen by gain / length ** LENGTH_EXPONENT: below 1, so that long informative sentences are not
crowded out by fragments; above 0, so that one long sentence does not eat a budget several short ones would use
better."""
_PREFIX_TYPES = {"Usuário": "user_input", "Agente": "agent_response", "Sistema": "system"}
OFFLOAD_CHARACTERS = 64_000
"""Above this much input text, summarizing runs in a worker thread so the event loop stays responsive."""


@dataclass(slots=True)
class _Line:
    prefix: str
    previous: bool
    sentence_indexes: list[int]


@dataclass(slots=True)
class _Sentence:
    text: str
    line: int
    terms: tuple[str, ...]
    kinds: tuple[float, ...]
    factor: float


class _Analyzer:
    """Terms of a sentence: aviation codes and numbers as written, other words stemmed without accents."""

    def __init__(self) -> None:
        # A stemmer keeps state while it works: one per summary, so worker threads never share one.
        self._stemmer = Stemmer.Stemmer("portuguese")
        self._stems: dict[str, str] = {}

    def _stem(self, word: str) -> str:
        stem = self._stems.get(word)
        if stem is None:
            stem = self._stems[word] = fold(self._stemmer.stemWord(word))
        return stem

    def terms(self, sentence: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """The sentence's distinct terms in order of appearance, with the weight of their kind."""
        terms: dict[str, float] = {}
        codes = numbers = 0
        for token in _TOKEN.findall(sentence):
            if token in terms:
                continue
            has_digit = any(char.isdigit() for char in token)
            if (
                token in AVIATION_TERMS
                or _AERODROME.fullmatch(token)
                or _REGISTRATION.fullmatch(token)
                or (has_digit and any(char.isupper() for char in token))
            ):
                codes += 1
                terms[token] = CODE_WEIGHT if codes <= WEIGHTED_PER_SENTENCE else 1.0
            elif has_digit:
                numbers += 1
                terms[token] = NUMBER_WEIGHT if numbers <= WEIGHTED_PER_SENTENCE else 1.0
            else:
                word = token.casefold()
                if len(word) > MAX_STEMMED_CHARS:
                    # Not a word but a run of letters (a pasted blob): as it is, since stemming costs its length.
                    terms.setdefault(fold(word[:MAX_STEMMED_CHARS]), 1.0)
                elif len(word) > 1 and fold(word) not in STOPWORDS:
                    terms.setdefault(self._stem(word), 1.0)
        return tuple(terms), tuple(terms.values())


def _collect(
    messages: Sequence[SummaryInput], previous_summary: str | None
) -> tuple[list[_Line], list[_Sentence]]:
    analyzer = _Analyzer()
    lines: list[_Line] = []
    sentences: list[_Sentence] = []

    def add_line(prefix: str, previous: bool, texts: list[str], factor: Callable[[int, str], float]) -> None:
        line = _Line(prefix=prefix, previous=previous, sentence_indexes=[])
        for position, text in enumerate(texts):
            terms, kinds = analyzer.terms(text)
            weight = factor(position, text) * (THIN_SENTENCE_FACTOR if len(terms) < 2 else 1.0)
            line.sentence_indexes.append(len(sentences))
            sentences.append(_Sentence(text, len(lines), terms, kinds, weight))
        if line.sentence_indexes:
            lines.append(line)

    def factor_for(message_type: str | None, base: float) -> Callable[[int, str], float]:
        def factor(position: int, text: str) -> float:
            value = base * (LEAD_FACTOR if position == 0 else 1.0)
            if message_type == "user_input" and text.rstrip("\"'”’)»").endswith("?"):
                value *= QUESTION_FACTOR
            if message_type == "system":
                value *= SYSTEM_FACTOR
            return value

        return factor

    for raw in plain_lines(previous_summary or ""):
        line_text = SPACES.sub(" ", raw).strip()
        prefix_match = SPEAKER.match(line_text)
        prefix = prefix_match.group() if prefix_match else ""
        # A line this summarizer wrote names its speaker: it keeps the standing of that speaker's messages.
        speaker = _PREFIX_TYPES.get(prefix.split(" ", 1)[0].rstrip(":")) if prefix else None
        add_line(
            prefix,
            True,
            split_sentences(line_text[len(prefix) :]),
            factor_for(speaker, PREVIOUS_SUMMARY_FACTOR),
        )

    for message in sorted(messages, key=lambda message: message.seq):
        texts = [
            sentence for line_text in plain_lines(message.content) for sentence in split_sentences(line_text)
        ]
        add_line(f"{speaker_label(message)}: ", False, texts, factor_for(message.message_type, 1.0))
    return lines, sentences


def _render(lines: list[_Line], sentences: list[_Sentence], chosen: set[int] | None = None) -> str:
    rendered = []
    for line in lines:
        texts = [
            sentences[index].text for index in line.sentence_indexes if chosen is None or index in chosen
        ]
        if texts:
            rendered.append(line.prefix + " ".join(texts))
    return "\n".join(rendered)


class _Selection:
    """Greedy choice of sentences under a budget of weighted characters (kit/tokens.py: what the token estimate
    divides, additive over sentences), each term counted once (the first sentence that
    mentions it covers it): what a chosen sentence already says adds nothing to another. Coverage only shrinks a
    sentence's gain, so a stale gain is an upper bound and the lazy re-evaluation below picks exactly what the
    plain greedy would."""

    def __init__(self, lines: list[_Line], sentences: list[_Sentence], max_weight: float) -> None:
        self.lines = lines
        self.sentences = sentences
        self.max_weight = max_weight
        # How many sentences mention a term: terms the conversation keeps returning to are what it is about.
        frequency: Counter[str] = Counter()
        for sentence in sentences:
            frequency.update(sentence.terms)
        self.term_weight = {term: math.log2(1 + count) for term, count in frequency.items()}
        self.covered: set[str] = set()
        self.chosen: set[int] = set()
        self.chosen_per_line = [0] * len(lines)
        self.used = 0.0
        self.previous_used = 0.0

    def gain(self, index: int) -> float:
        sentence = self.sentences[index]
        # Summed in the sentence's own term order (never a set's): identical floats in every process.
        total = 0.0
        for term, kind in zip(sentence.terms, sentence.kinds, strict=True):
            if term not in self.covered:
                total += kind * self.term_weight[term]
        return total * sentence.factor

    def priority(self, index: int) -> float:
        return self.gain(index) / math.pow(len(self.sentences[index].text) + 1, LENGTH_EXPONENT)

    def cost(self, index: int) -> float:
        sentence = self.sentences[index]
        if self.chosen_per_line[sentence.line]:
            return 1 + weighted_characters(sentence.text)  # after a space
        prefix = self.lines[sentence.line].prefix
        return weighted_characters(prefix + sentence.text) + (1 if self.chosen else 0)  # after a newline

    def run(self, candidates: list[int], previous_limit: float) -> list[int]:
        """Choose among `candidates` while they fit; returns those left out only by `previous_limit`."""
        heap = [(-self.priority(index), index) for index in candidates]
        heapq.heapify(heap)
        deferred: list[int] = []
        while heap:
            _, index = heapq.heappop(heap)
            current = -self.priority(index)
            if heap and current > heap[0][0]:
                heapq.heappush(heap, (current, index))  # another may now be worth more
                continue
            if current == 0:
                break  # the best remaining sentence says nothing new
            cost = self.cost(index)
            if self.used + cost > self.max_weight:
                continue
            sentence = self.sentences[index]
            if self.lines[sentence.line].previous:
                if self.previous_used + cost > previous_limit:
                    deferred.append(index)
                    continue
                self.previous_used += cost
            self.chosen.add(index)
            self.chosen_per_line[sentence.line] += 1
            self.used += cost
            self.covered.update(sentence.terms)
        return deferred


def extractive_summary(
    messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
) -> str:
    """The extractive summary, computed synchronously (`ExtractiveSummarizer.summarize` documents it)."""
    check_budget(max_tokens)
    lines, sentences = _collect(messages, previous_summary)
    everything = _render(lines, sentences)
    if fits(everything, max_tokens):
        return everything
    selection = _Selection(lines, sentences, budget_weight(max_tokens))
    has_new = any(not line.previous for line in lines)
    previous_limit = PREVIOUS_SUMMARY_SHARE * selection.max_weight if has_new else math.inf
    deferred = selection.run(list(range(len(sentences))), previous_limit)
    if deferred:
        selection.run(deferred, math.inf)
    chosen = selection.chosen
    summary = _render(lines, sentences, chosen)
    # The weights add up to the estimate but for its rounding: a last check.
    while chosen and not fits(summary, max_tokens):
        chosen.remove(max(chosen))
        summary = _render(lines, sentences, chosen)
    if chosen:
        return summary
    # Not one whole sentence fits: the most informative one, cut on a word boundary.
    best = max(range(len(sentences)), key=lambda index: (selection.gain(index), -index))
    return truncate_line(lines[sentences[best].line].prefix, sentences[best].text, max_tokens)


class ExtractiveSummarizer:
    """The offline default: keeps the most informative whole sentences, in order, with their speakers.

    Sentences are scored by how central their terms are to the conversation (Portuguese stems, stopwords ignored),
    boosted by aviation codes (SBGR, 34006KT, FL100), numbers and times, the user's questions and system context.
    The previous summary's sentences come first and outrank new ones of equal merit. The best sentences that fit
    are kept in their original order, one line per message: "Usuário: …", "Agente meteorologia: …", "Sistema: …".
    A sentence is never cut, unless not even one fits (then the best is cut on a word boundary with "…").
    Deterministic: the same input gives the same bytes, in any process.
    """

    sends_text_out = False
    """It runs in this process: no consent to `external_summarizer` is needed (docs/privacy.md)."""

    async def summarize(
        self, messages: Sequence[SummaryInput], *, previous_summary: str | None, max_tokens: int
    ) -> str:
        """See `Summarizer.summarize`."""
        size = len(previous_summary or "") + sum(len(message.content) for message in messages)
        if size > OFFLOAD_CHARACTERS:
            return await asyncio.to_thread(
                extractive_summary, messages, previous_summary=previous_summary, max_tokens=max_tokens
            )
        return extractive_summary(messages, previous_summary=previous_summary, max_tokens=max_tokens)
