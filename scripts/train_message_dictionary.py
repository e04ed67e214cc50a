"""Train the zstd dictionary that packs message bodies: src/stratus_db/conversations/data/messages-v1.zdict.

    .venv/bin/python scripts/train_message_dictionary.py            # write the dictionary, print its sha256
    .venv/bin/python scripts/train_message_dictionary.py --check    # retrain; fail if it differs from the file

Honest by construction: the corpus's conversations, sorted by id, alternate between training (even positions) and
held out (odd positions); only the training half is ever read here, and bench/compression.py measures on the held-out
half with the same split. The dictionary size is chosen on the training half alone, by leave-one-conversation-out:
each candidate size is trained without one conversation and scored on it, for every training conversation.

Deterministic: samples are taken in (conversation, seq) order and zstd's trainer runs single-threaded with fixed
settings, so the same corpus and zstandard version give the same bytes. A new dictionary gets a new id and file
(messages-v2.zdict) registered beside the old one in stratus_db.conversations.packing; never overwrite v1, since
stored frames name it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import zstandard

from stratus_db.conversations.packing import COMPRESSION_LEVEL, MESSAGES_V1_DICTIONARY_ID

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "bench" / "data" / "conversas-aviacao.jsonl"
OUTPUT = ROOT / "src" / "stratus_db" / "conversations" / "data" / "messages-v1.zdict"

CANDIDATE_SIZES = (4096, 8192, 16384, 32768)
"""Dictionary sizes tried. The training half is ~53 kB of text: a larger dictionary would mostly memorize it."""

Conversation = list[bytes]
"""The UTF-8 message bodies of one conversation, in sequence order."""


def load_conversations(corpus: Path = CORPUS) -> dict[str, Conversation]:
    """The corpus's message bodies by conversation id, conversations sorted by id and messages by seq."""
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows.sort(key=lambda row: (row["conversation_id"], row["seq"]))
    conversations: dict[str, Conversation] = {}
    for row in rows:
        conversations.setdefault(row["conversation_id"], []).append(row["content"].encode("utf-8"))
    return dict(sorted(conversations.items()))


def split_conversations(
    conversations: dict[str, Conversation],
) -> tuple[dict[str, Conversation], dict[str, Conversation]]:
    """(training, held out): conversations at even positions of the id order train, odd ones are held out."""
    ordered = sorted(conversations.items())
    return dict(ordered[0::2]), dict(ordered[1::2])


def train(samples: Sequence[bytes], size: int) -> zstandard.ZstdCompressionDict:
    """One dictionary of at most `size` bytes, tuned for COMPRESSION_LEVEL, carrying the v1 id."""
    return zstandard.train_dictionary(
        size,
        list(samples),
        dict_id=MESSAGES_V1_DICTIONARY_ID,
        level=COMPRESSION_LEVEL,
        threads=1,  # the parameter search is deterministic on one thread
    )


def packed_size(messages: Sequence[bytes], dictionary: zstandard.ZstdCompressionDict) -> int:
    compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, dict_data=dictionary, write_checksum=True)
    return sum(len(compressor.compress(message)) for message in messages)


def choose_size(training: dict[str, Conversation]) -> tuple[int, dict[int, float]]:
    """The candidate size with the best leave-one-conversation-out ratio (the smaller one on a tie)."""
    ratios: dict[int, float] = {}
    for size in CANDIDATE_SIZES:
        raw = packed = 0
        for left_out, messages in training.items():
            samples = [body for conversation_id, bodies in training.items() if conversation_id != left_out
                       for body in bodies]  # fmt: skip
            raw += sum(len(message) for message in messages)
            packed += packed_size(messages, train(samples, size))
        ratios[size] = raw / packed
    best = max(CANDIDATE_SIZES, key=lambda size: (round(ratios[size], 6), -size))
    return best, ratios


def build_dictionary(corpus: Path = CORPUS) -> tuple[bytes, str]:
    """The dictionary's bytes and a report of how they were chosen."""
    training, held_out = split_conversations(load_conversations(corpus))
    size, ratios = choose_size(training)
    samples = [body for bodies in training.values() for body in bodies]
    dictionary = train(samples, size)
    lines = [
        f"training conversations: {', '.join(training)} ({len(samples)} messages, "
        f"{sum(map(len, samples)):,} bytes); held out: {', '.join(held_out)}",
        "leave-one-conversation-out ratio by size: "
        + ", ".join(f"{candidate}: {ratio:.3f}" for candidate, ratio in ratios.items()),
        f"chosen size {size}; dictionary id {dictionary.dict_id()}, {len(dictionary.as_bytes()):,} bytes",
    ]
    return dictionary.as_bytes(), "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="compare with --output instead of writing it")
    arguments = parser.parse_args(argv)
    data, report = build_dictionary(arguments.corpus)
    print(report)
    digest = hashlib.sha256(data).hexdigest()
    if arguments.check:
        shipped = arguments.output.read_bytes() if arguments.output.exists() else b""
        same = shipped == data
        print(f"sha256 {digest}: {'identical to' if same else 'DIFFERS from'} {arguments.output}")
        return 0 if same else 1
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_bytes(data)
    print(f"wrote {arguments.output} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
