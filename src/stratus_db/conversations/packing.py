"""zstd storage of message bodies (placeholder until the dictionary-trained packer lands)."""

from __future__ import annotations

import zstandard


def pack(text: str) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(text.encode())


def unpack(data: bytes) -> str:
    return zstandard.ZstdDecompressor().decompress(data).decode()
