"""kit/text.py: the table-driven folding and camelCase splitting agree with their character-by-character definitions."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from stratus_db.kit.text import _split_camel_case, fold, split_camel_case_by_character


def _fold_by_character(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


# Mostly the characters the tables answer for, where a mismatch would hide, and some of any other kind.
_latin = st.characters(max_codepoint=0x36F)
_text = st.text(st.one_of(_latin, _latin, _latin, st.characters()), max_size=60)


@given(_text)
def test_folding_matches_its_definition(text: str) -> None:
    assert fold(text) == _fold_by_character(text)


@given(_text)
def test_camel_case_splitting_matches_its_definition(text: str) -> None:
    assert _split_camel_case(text) == split_camel_case_by_character(text)


def test_every_character_the_tables_cover_is_folded_and_split_by_its_definition() -> None:
    for code in range(0x370):
        char = chr(code)
        # Each character after a lower-case letter (is it a capital?) and before a capital (does it start one?).
        for text in (char, "a" + char, char + "A", "1" + char, char + char):
            assert fold(text) == _fold_by_character(text), text
            assert _split_camel_case(text) == split_camel_case_by_character(text), text
