"""Compressed storage of message bodies: one zstd frame per message, with a dictionary trained on Portuguese chat.

Each message is its own frame, so any one message can be read without its neighbours. A chat turn of a few hundred
bytes compresses poorly on its own (zstd has no history to refer back to), so the frames are written against a
dictionary trained offline on Portuguese aviation chat (`scripts/train_message_dictionary.py`). A frame's header
names its dictionary, which lets a later dictionary coexist with this one: `unpack` chooses by that id, and frames
written with any shipped dictionary stay readable for good.

Frames are standard zstd: `zstd -d -D messages-v1.zdict` reads one too.
"""

from __future__ import annotations

import threading
from functools import cache
from importlib.resources import files

import zstandard

from stratus_db.conversations.schemas import MAX_CONTENT_CHARS
from stratus_db.errors import StoredDataError, ValidationError
from stratus_db.kit.validation import storable_text

MESSAGES_V1_DICTIONARY_ID = 32769
"""The id written into every frame packed with `data/messages-v1.zdict`. zstd reserves ids below 32768 for a public
registry; ids up to 65535 still take two bytes of the frame header."""

DICTIONARY_FILES = {MESSAGES_V1_DICTIONARY_ID: "messages-v1.zdict"}
"""Every dictionary this version can read, by id. Never remove one: stored frames name it."""

CURRENT_DICTIONARY_ID = MESSAGES_V1_DICTIONARY_ID
"""The dictionary new frames are written with."""

COMPRESSION_LEVEL = 19
"""Packing happens when a conversation is archived, off the hot path: level 19 packs a typical message in ~50 µs
and makes the held-out corpus 9 % smaller than level 3 does (bench/compression.py). Unpacking stays ~2 µs."""

MAX_UNPACKED_BYTES = 4 * MAX_CONTENT_CHARS
"""The largest message body in UTF-8: a frame claiming more is corrupt, and is refused before memory is reserved."""

_local = threading.local()
"""zstd contexts are not safe to share between threads (asyncio.to_thread may run packing on several)."""


@cache
def _dictionary(dictionary_id: int) -> zstandard.ZstdCompressionDict:
    name = DICTIONARY_FILES.get(dictionary_id)
    if name is None:
        known = ", ".join(str(known_id) for known_id in sorted(DICTIONARY_FILES))
        raise StoredDataError(
            f"packed message names zstd dictionary {dictionary_id}, which this version does not ship "
            f"(known: {known}); it was written by a newer stratus_db or is corrupt"
        )
    data = files("stratus_db.conversations").joinpath("data", name).read_bytes()
    dictionary = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
    # A file swapped under the same name would make old frames unreadable: catch it on first use, not on a read.
    if dictionary.dict_id() != dictionary_id:
        raise StoredDataError(
            f"{name} carries dictionary id {dictionary.dict_id()}, expected {dictionary_id}"
        )
    return dictionary


def _compressor() -> zstandard.ZstdCompressor:
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(
            level=COMPRESSION_LEVEL,
            dict_data=_dictionary(CURRENT_DICTIONARY_ID),
            # The 4-byte checksum turns silent corruption (a flipped bit in a literal) into an error on read.
            write_checksum=True,
            write_content_size=True,
            write_dict_id=True,
        )
        _local.compressor = compressor
    return compressor


def _decompressor(dictionary_id: int) -> zstandard.ZstdDecompressor:
    decompressors: dict[int, zstandard.ZstdDecompressor] | None = getattr(_local, "decompressors", None)
    if decompressors is None:
        decompressors = _local.decompressors = {}
    decompressor = decompressors.get(dictionary_id)
    if decompressor is None:
        if dictionary_id == 0:  # a frame written without a dictionary: readable as it is
            decompressor = zstandard.ZstdDecompressor()
        else:
            decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary(dictionary_id))
        decompressors[dictionary_id] = decompressor
    return decompressor


def pack(text: str) -> bytes:
    """Compress one message body into a self-describing zstd frame.

    Args:
        text: the message content; any text a message may hold (no NUL, no lone surrogates), the empty string
            included.

    Returns:
        One zstd frame naming the current dictionary; the same text always gives the same bytes.

    Raises:
        ValidationError: the text contains NUL or a lone surrogate, which no message column can hold.
    """
    try:
        storable_text(text)
    except ValueError as exc:
        raise ValidationError(f"text to pack {exc}") from None
    return _compressor().compress(text.encode("utf-8"))


def packed_dictionary_id(data: bytes) -> int:
    """The id of the dictionary a packed message was written with (0: none), read from the frame header.

    Raises:
        StoredDataError: `data` does not start with a zstd frame header.
    """
    try:
        return zstandard.get_frame_parameters(data).dict_id
    except zstandard.ZstdError as exc:
        raise StoredDataError(f"packed message is not a zstd frame ({len(data)} bytes): {exc}") from exc


def unpack(data: bytes) -> str:
    """Decompress one packed message body, choosing the dictionary by the id in its frame header.

    Args:
        data: the bytes `pack` returned (with this or any earlier dictionary).

    Returns:
        The original text, exactly.

    Raises:
        StoredDataError: the bytes are not one intact frame (truncated, altered, extra bytes after it), the frame
            names a dictionary this version does not ship, or it claims more than a message can hold.
    """
    try:
        parameters = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise StoredDataError(f"packed message is not a zstd frame ({len(data)} bytes): {exc}") from exc
    # pack always records the size; a frame without it (or claiming gigabytes) is not ours.
    if parameters.content_size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise StoredDataError("packed message does not record its size; frames from pack always do")
    if parameters.content_size > MAX_UNPACKED_BYTES:
        raise StoredDataError(
            f"packed message claims {parameters.content_size} bytes; "
            f"frames from pack hold at most {MAX_UNPACKED_BYTES} and record their size"
        )
    decompressor = _decompressor(parameters.dict_id)
    try:
        body = decompressor.decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise StoredDataError(f"packed message is corrupt ({len(data)} bytes): {exc}") from exc
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoredDataError("packed message does not decode to UTF-8 text; it is corrupt") from exc
