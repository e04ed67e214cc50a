"""kit/text.py: the table-driven folding and camelCase splitting agree with their character-by-character definitions;
whatever a user types reaches a search engine as plain words."""

from __future__ import annotations

import re
import unicodedata
import uuid

from hypothesis import given
from hypothesis import strategies as st

from stratus_db.kit.text import (
    _TABLES_END,
    _split_camel_case,
    fold,
    fts5_owned_query,
    fts5_stem_query,
    query_terms,
    split_camel_case_by_character,
)
from tests.fixtures.hostile import hostile_text


def _fold_by_character(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


# Mostly the characters the tables answer for, where a mismatch would hide, and some of any other kind.
_latin = st.characters(max_codepoint=0x36F)
_tabled = st.characters(max_codepoint=ord(_TABLES_END) - 1)
_text = st.text(st.one_of(_latin, _latin, _tabled, st.characters()), max_size=60)


@given(_text)
def test_folding_matches_its_definition(text: str) -> None:
    assert fold(text) == _fold_by_character(text)


@given(_text)
def test_camel_case_splitting_matches_its_definition(text: str) -> None:
    assert _split_camel_case(text) == split_camel_case_by_character(text)


def test_every_character_the_tables_cover_is_folded_and_split_by_its_definition() -> None:
    for code in range(ord(_TABLES_END)):
        char = chr(code)
        # Each character after a lower-case letter (is it a capital?) and before a capital (does it start one?).
        for text in (char, "a" + char, char + "A", "1" + char, char + char):
            assert fold(text) == _fold_by_character(text), text
            assert _split_camel_case(text) == split_camel_case_by_character(text), text


_PHRASE = r'"[^"]+"\*?'


@given(st.one_of(_text, hostile_text, st.text()))
def test_a_query_reaches_the_engines_as_quoted_words_only(text: str) -> None:
    """PostgreSQL gets the words or'ed (`w1 | w2`: letters and digits are never tsquery syntax); SQLite gets each word
    as an FTS5 string, so that `NEAR`, `AND`, `or`, a column name or digits are words, never operators."""
    terms = query_terms(text)
    assert all(re.fullmatch(r"[^\W_]+", term) for term in terms)
    owner = uuid.UUID(int=7)
    query = fts5_owned_query(owner, "content", fts5_stem_query(terms or ["metar"]))
    assert re.fullmatch(rf'user_id : "{owner.hex}" AND content : \({_PHRASE}( OR {_PHRASE})*\)', query)
