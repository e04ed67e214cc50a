"""PyStemmer (C, a runtime dependency) stems Portuguese exactly as the pure-Python snowballstemmer did: the same
Snowball algorithm, 30 to 60 times faster. snowballstemmer stays a dev dependency for this comparison only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

# The pure-Python class itself: `snowballstemmer.stemmer()` hands out PyStemmer's when PyStemmer is installed.
from snowballstemmer.portuguese_stemmer import PortugueseStemmer

from stratus_db.kit.text import fold, fts5_stem_query, words

CORPUS = Path(__file__).resolve().parents[1] / "bench" / "data" / "conversas-aviacao.jsonl"
_WORD = re.compile(r"[^\W_]+")


def _corpus_words() -> list[str]:
    """Every word of the corpus's messages (read as bench/harness.py corpus_messages() does): as written, lower
    case, and folded as search folds it (stratus_db.kit.text.words splits camelCase too)."""
    found: set[str] = set()
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        content = json.loads(line)["content"]
        for word in _WORD.findall(content):
            found.update((word, word.lower(), fold(word)))
        found.update(words(content))
    return sorted(found)


def test_pystemmer_stems_every_corpus_word_as_snowballstemmer() -> None:
    corpus_words = _corpus_words()
    assert len(corpus_words) > 4000  # the corpus was read

    fast = Stemmer.Stemmer("portuguese").stemWords(corpus_words)
    pure = PortugueseStemmer().stemWords(corpus_words)

    differences = [(word, a, b) for word, a, b in zip(corpus_words, fast, pure, strict=True) if a != b]
    assert differences == []


@settings(max_examples=300)
@given(st.text(st.characters(max_codepoint=0x24F), max_size=30))
def test_pystemmer_agrees_on_arbitrary_latin_text(text: str) -> None:
    assert Stemmer.Stemmer("portuguese").stemWord(text) == PortugueseStemmer().stemWord(text)


def test_the_search_query_uses_the_same_stems() -> None:
    assert fts5_stem_query(["meteorologica", "voo"]) == '"meteorolog"* OR "voo"'
