"""Message-body compression benchmark: zstd per message, with and without the shipped dictionary, and per conversation.

    .venv/bin/python bench/compression.py [--no-write]

Measures on the held-out half of the corpus (bench/data): the conversations the dictionary was not trained on, split
exactly as scripts/train_message_dictionary.py splits them. Prints a markdown table and writes it between the
compression markers of docs/benchmarks.md. Sizes are exact; speeds are the best of several rounds on a noisy machine.
One frame per conversation is shown for comparison only: it loses random access to single messages.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, environment, write_section
from stratus_db.conversations.packing import COMPRESSION_LEVEL, pack, unpack

ROUNDS = 7
MIN_ROUND_SECONDS = 0.2


def load_training_script() -> ModuleType:
    """The dictionary's training script, so that the held-out split here is the one it used, by construction."""
    path = ROOT / "scripts" / "train_message_dictionary.py"
    spec = importlib.util.spec_from_file_location("train_message_dictionary", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Row:
    method: str
    frames: int
    packed_bytes: int
    pack_seconds: float
    unpack_seconds: float


def best_time(work: Callable[[], object]) -> float:
    """Seconds for one call of `work`: the best round of ROUNDS, each repeating it for at least MIN_ROUND_SECONDS."""
    best = float("inf")
    for _ in range(ROUNDS):
        calls = 0
        started = time.perf_counter()
        while True:
            work()
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= MIN_ROUND_SECONDS:
                break
        best = min(best, elapsed / calls)
    return best


def measure(
    method: str,
    units: Sequence[str],
    compress: Callable[[str], bytes],
    decompress: Callable[[bytes], str],
) -> Row:
    frames = [compress(unit) for unit in units]
    assert [decompress(frame) for frame in frames] == list(units)
    return Row(
        method=method,
        frames=len(frames),
        packed_bytes=sum(len(frame) for frame in frames),
        pack_seconds=best_time(lambda: [compress(unit) for unit in units]),
        unpack_seconds=best_time(lambda: [decompress(frame) for frame in frames]),
    )


def zstd_codec(level: int, dictionary: zstandard.ZstdCompressionDict | None = None) -> tuple[
    Callable[[str], bytes], Callable[[bytes], str]
]:  # fmt: skip
    compressor = zstandard.ZstdCompressor(
        level=level, dict_data=dictionary, write_checksum=True, write_content_size=True
    )
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
    return (
        lambda text: compressor.compress(text.encode("utf-8")),
        lambda data: decompressor.decompress(data).decode("utf-8"),
    )


def run() -> tuple[list[Row], int, int, str]:
    training_script = load_training_script()
    _, held_out = training_script.split_conversations(training_script.load_conversations())
    messages = [body.decode("utf-8") for bodies in held_out.values() for body in bodies]
    conversations = ["\n".join(body.decode("utf-8") for body in bodies) for bodies in held_out.values()]
    raw_bytes = sum(len(message.encode("utf-8")) for message in messages)
    shipped = zstandard.ZstdCompressionDict(
        (ROOT / "src" / "stratus_db" / "conversations" / "data" / "messages-v1.zdict").read_bytes()
    )
    level = COMPRESSION_LEVEL
    rows = [
        measure(f"per message, no dictionary (level {level})", messages, *zstd_codec(level)),
        measure("per message, no dictionary (level 3)", messages, *zstd_codec(3)),
        measure(f"per message, dictionary: `pack`/`unpack` (level {level})", messages, pack, unpack),
        measure("per message, dictionary (level 3)", messages, *zstd_codec(3, shipped)),
        measure(
            f"one frame per conversation (level {level}), comparison only", conversations, *zstd_codec(level)
        ),
    ]
    held_out_names = ", ".join(held_out)
    return rows, raw_bytes, len(messages), held_out_names


def markdown(rows: Sequence[Row], raw_bytes: int, message_count: int, held_out_names: str) -> list[str]:
    """The compression section of docs/benchmarks.md, without its markers."""
    table = [
        "| Method | Frames | Packed bytes | Ratio | Pack µs/frame | Pack MB/s | Unpack µs/frame | Unpack MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        table.append(
            f"| {row.method} | {row.frames} | {row.packed_bytes:,} | {raw_bytes / row.packed_bytes:.2f}× "
            f"| {row.pack_seconds / row.frames * 1e6:.1f} | {raw_bytes / row.pack_seconds / 1e6:.1f} "
            f"| {row.unpack_seconds / row.frames * 1e6:.1f} | {raw_bytes / row.unpack_seconds / 1e6:.1f} |"
        )
    packed = [row.packed_bytes for row in rows]
    libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
    return [
        "## Message compression (`bench/compression.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {environment(['zstandard'])} (libzstd {libzstd}). "
        f"Held-out conversations {held_out_names}: {message_count} messages, {raw_bytes:,} bytes of UTF-8 "
        "text. The dictionary (`messages-v1.zdict`, 16 KiB) was trained on the other half only "
        "(`scripts/train_message_dictionary.py`). Frames carry a 4-byte checksum. Ratio = raw bytes / packed "
        "bytes; speeds in MB/s of raw text, best of 7 rounds.",
        "",
        *table,
        "",
        f"The dictionary makes per-message frames {1 - packed[2] / packed[0]:.0%} smaller than without one at "
        f"the same level; one frame per whole conversation would save only {1 - packed[4] / packed[2]:.0%} "
        "more, and every read would then decompress the whole conversation.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args(argv)
    section = markdown(*run())
    print("\n".join(section))
    if not arguments.no_write:
        write_section("compression", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
