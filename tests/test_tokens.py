"""kit/tokens.py: the offline estimate against a real tokenizer on the project's corpus, and TiktokenCounter."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from stratus_db.errors import ConfigurationError
from stratus_db.kit.tokens import TiktokenCounter, estimate_tokens, weighted_characters

CORPUS = Path(__file__).resolve().parents[1] / "bench" / "data" / "conversas-aviacao.jsonl"
METAR = "METAR SBGR 071200Z 14008KT 9999 FEW025 BKN080 22/17 Q1018="


def _corpus() -> list[str]:
    return [json.loads(line)["content"] for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def test_the_estimate_is_within_a_tenth_of_cl100k_on_the_corpus() -> None:
    cl100k = TiktokenCounter()
    texts = _corpus()
    estimated, counted = [estimate_tokens(text) for text in texts], [cl100k(text) for text in texts]
    assert abs(sum(estimated) / sum(counted) - 1) < 0.03, "the corpus in all"
    assert statistics.mean(abs(e - c) / c for e, c in zip(estimated, counted, strict=True)) < 0.10
    assert abs(estimate_tokens(METAR) - cl100k(METAR)) / cl100k(METAR) < 0.15, "codes weigh more than prose"


def test_the_old_estimate_undercounted_what_the_new_one_does_not() -> None:
    cl100k = TiktokenCounter()
    texts = _corpus()
    counted = sum(cl100k(text) for text in texts)
    assert sum(max(1, round(len(text) / 3.5)) for text in texts) / counted < 0.9, "len / 3.5: 13 % short"
    assert round(len(METAR) / 3.5) < 0.6 * cl100k(METAR)


@pytest.mark.parametrize("text", ["", "a", "SBGR", "Qual o METAR?", "ção" * 50, "\ud800", "🛩️ FL350"])
def test_the_estimate_is_additive_and_at_least_one(text: str) -> None:
    assert estimate_tokens(text) >= 1
    assert weighted_characters(text + text) == 2 * weighted_characters(text)


def test_tiktoken_counts_special_token_text_as_text() -> None:
    assert TiktokenCounter()("<|endoftext|>") > 1


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base", "gpt2"])
def test_an_encoding_that_would_be_downloaded_is_refused(encoding: str) -> None:
    with pytest.raises(ConfigurationError, match="would be downloaded"):
        TiktokenCounter(encoding)


def test_an_encoding_that_is_not_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"tiktoken\.Encoding"):
        TiktokenCounter(42)
