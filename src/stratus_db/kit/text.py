"""Text as search sees it: accents folded, case folded, split into words; and the words of a user's query."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import Stemmer

MAX_SEARCH_TEXT_CHARS = 20_000
"""How much of a memory's key and value is indexed for search."""
MAX_QUERY_TERMS = 32
MAX_TERM_CHARS = 64

_WORD = re.compile(r"[^\W_]+")

_TABLES_END = "\u3000"
"""Characters below this one — Latin, Greek, Cyrillic and the other alphabets, the combining marks, and the
punctuation, arrows, mathematical and technical signs that aviation text is full of (`–`, `→`, `≈`, `≥`, `✔`) —
are answered by the tables below in C, exactly as the character-by-character definitions do (about 8 ms to build
at import). Text with any character beyond (CJK, emoji) takes the character-by-character way, about twice as
costly a character: with the tables ending at U+0370, the corpus's texts holding such signs cost 175 µs each to
index against 32 µs for the others."""


def _character_class(predicate: Callable[[str], bool]) -> str:
    return "".join(re.escape(char) for code in range(ord(_TABLES_END)) if predicate(char := chr(code)))


_BEYOND_TABLES = re.compile(f"[^\x00-{re.escape(chr(ord(_TABLES_END) - 1))}]")
_COMBINING = re.compile(f"[{_character_class(lambda char: unicodedata.combining(char) != 0)}]")
_CAMEL_CASE_BOUNDARY = re.compile(
    f"(?<=[{_character_class(lambda char: char.islower() or char.isdigit())}])"
    f"(?=[{_character_class(str.isupper)}])"
)


def fold(text: str) -> str:
    """Lower-case without accents: "Meteorológica" → "meteorologica"."""
    decomposed = unicodedata.normalize("NFKD", text)
    if _BEYOND_TABLES.search(decomposed) is None:
        return _COMBINING.sub("", decomposed).casefold()
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


def _split_camel_case(text: str) -> str:
    """ "dataÚltimoVoo" → "data Último Voo": a capital after a lower-case letter or a digit starts a word."""
    if _BEYOND_TABLES.search(text) is None:
        return _CAMEL_CASE_BOUNDARY.sub(" ", text)
    return split_camel_case_by_character(text)


def split_camel_case_by_character(text: str) -> str:
    """The definition that _CAMEL_CASE_BOUNDARY is built from, one character at a time: for text beyond its tables
    (tests check that the two agree)."""
    pieces: list[str] = []
    previous = ""
    for char in text:
        if char.isupper() and (previous.islower() or previous.isdigit()):
            pieces.append(" ")
        pieces.append(char)
        previous = char
    return "".join(pieces)


def words(text: str) -> list[str]:
    """The folded words of `text`; camelCase, snake_case and punctuation all separate words."""
    return _WORD.findall(fold(_split_camel_case(text)))


def _flatten(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _flatten(item)
    elif isinstance(value, list):
        for item in value:
            yield from _flatten(item)


def search_text(key: str, value: Any) -> str:
    """What search indexes for a memory: the words of its key and of its JSON value (keys and scalars)."""
    text = " ".join(words(" ".join([key, *_flatten(value)])))
    return text[:MAX_SEARCH_TEXT_CHARS]


def query_terms(query: str) -> list[str]:
    """The distinct words of a user's query, in order, bounded in number and length.

    Anything goes in: SQL, FTS operators, quotes, NUL, emoji and huge strings all reduce to plain words (possibly
    none), which is all that ever reaches the search engine.
    """
    terms: dict[str, None] = {}
    for word in words(query[: MAX_QUERY_TERMS * (MAX_TERM_CHARS + 1) * 4]):
        terms.setdefault(word[:MAX_TERM_CHARS], None)
        if len(terms) == MAX_QUERY_TERMS:
            break
    return list(terms)


def trigrams(word: str) -> set[str]:
    """The trigrams pg_trgm takes from one word of letters and digits (lower case, no accents)."""
    padded = f"  {word} "  # as pg_trgm pads: a word's start weighs more than its end
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def best_word_similarity(terms: list[str], text: str) -> float:
    """The highest trigram similarity (|shared| / |union|, as pg_trgm computes it) between a term and a word of
    `text`: "cesna" and "cessna" score 0.625, unrelated words near 0."""
    term_grams = [trigrams(term) for term in terms]
    best = 0.0
    for word in set(text.split()):
        grams = trigrams(word)
        for wanted in term_grams:
            best = max(best, len(wanted & grams) / len(wanted | grams))
    return best


_PORTUGUESE_STEMMER = Stemmer.Stemmer("portuguese")
MIN_PREFIX_STEM = 4
"""Shorter stems would match too many words as prefixes: such terms are matched whole."""


def fts5_stem_query(terms: list[str]) -> str:
    """An SQLite FTS5 query matching any of `terms` by its Portuguese stem as a prefix ("meteorológica" →
    `"meteorolog"*`), for an index that folds accents as `words` does.

    Every term is quoted, so nothing in it is FTS syntax (the terms are words of letters and digits anyway).
    """
    stems = _PORTUGUESE_STEMMER.stemWords(terms)
    return " OR ".join(
        f'"{stem}"*' if len(stem) >= MIN_PREFIX_STEM else f'"{term}"'
        for term, stem in zip(terms, stems, strict=True)
    )


def fts5_owned_query(owner: uuid.UUID, column: str, query: str) -> str:
    """The SQLite FTS5 `query` asked of `column`, of `owner`'s rows only.

    SQLite's search tables hold each row's owner in a `user_id` column (migration 0005), as SQLite stores a UUID: 32
    hex digits, one token. So the index itself finds one user's matches, without going through anyone else's; and
    restricted to `column`, no query word can match an id.
    """
    return f'user_id : "{owner.hex}" AND {column} : ({query})'
