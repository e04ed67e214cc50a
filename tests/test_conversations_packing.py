"""pack / unpack: per-message zstd frames with the shipped dictionary; any text back exactly, any bad bytes refused."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
import zstandard

from stratus_db.conversations.packing import (
    CURRENT_DICTIONARY_ID,
    MAX_UNPACKED_BYTES,
    MESSAGES_V1_DICTIONARY_ID,
    pack,
    packed_dictionary_id,
    unpack,
)
from stratus_db.conversations.schemas import MAX_CONTENT_CHARS
from stratus_db.errors import StoredDataError, ValidationError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "bench" / "data" / "conversas-aviacao.jsonl"
SHIPPED_DICTIONARY = ROOT / "src" / "stratus_db" / "conversations" / "data" / "messages-v1.zdict"


def corpus_messages() -> list[str]:
    return [json.loads(line)["content"] for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def training_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_message_dictionary", ROOT / "scripts" / "train_message_dictionary.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestRoundTrip:
    def test_every_corpus_message_comes_back_exactly_and_smaller(self) -> None:
        messages = corpus_messages()
        packed = [pack(message) for message in messages]
        assert [unpack(frame) for frame in packed] == messages
        raw_bytes = sum(len(message.encode("utf-8")) for message in messages)
        assert sum(len(frame) for frame in packed) < raw_bytes / 1.5

    @pytest.mark.parametrize(
        "text",
        [
            "",
            " ",
            "\n\n\t",
            "Olá! Vou de SBKP para SBRP amanhã às 14h30 (UTC−3), ✈️🛩️🌧️ — tudo certo?",
            "👨‍✈️👩🏽‍✈️ ZWJ sequences and skin tones",
            "e\u0301 combining accent, ﬁ ligature, Ω, 漢字, العربية, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
            "\x01\x02\x7f control characters other than NUL",
            "METAR SBGR 251200Z 18005KT 9999 FEW030 25/15 Q1015=",
        ],
    )
    def test_any_storable_text_comes_back_exactly(self, text: str) -> None:
        assert unpack(pack(text)) == text

    def test_the_largest_message_comes_back(self) -> None:
        text = ("Relatório de voo SBGR→SBKP: teto 1.500 ft, visibilidade 5 km. " * 20_000)[:MAX_CONTENT_CHARS]
        assert len(text) == MAX_CONTENT_CHARS
        assert unpack(pack(text)) == text

    def test_four_byte_characters_at_the_largest_size_come_back(self) -> None:
        text = "🛩" * MAX_CONTENT_CHARS  # 4 MB of UTF-8: the most bytes a message may hold
        assert unpack(pack(text)) == text

    def test_packing_is_deterministic_across_processes(self) -> None:
        text = "Checklist antes da decolagem: combustível, magnetos, compensador. SBJD 12:30Z."
        program = (
            "import sys; from stratus_db.conversations.packing import pack; "
            "sys.stdout.write(pack(sys.argv[1]).hex())"
        )
        outputs = {
            subprocess.run(
                [sys.executable, "-c", program, text],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONHASHSEED": seed},
            ).stdout
            for seed in ("1", "2")
        }
        assert outputs == {pack(text).hex()}

    def test_threads_packing_at_once_each_get_their_own_text_back(self) -> None:
        messages = corpus_messages()
        with ThreadPoolExecutor(max_workers=8) as pool:
            frames = list(pool.map(pack, messages * 4))
            texts = list(pool.map(unpack, frames))
        assert texts == messages * 4


class TestFrames:
    def test_a_frame_names_the_current_dictionary_and_carries_a_checksum(self) -> None:
        frame = pack("Qual o QNH de SBSP?")
        parameters = zstandard.get_frame_parameters(frame)
        assert CURRENT_DICTIONARY_ID == MESSAGES_V1_DICTIONARY_ID
        assert parameters.dict_id == packed_dictionary_id(frame) == MESSAGES_V1_DICTIONARY_ID
        assert parameters.has_checksum
        assert parameters.content_size == len("Qual o QNH de SBSP?")

    def test_standard_zstd_reads_a_frame_with_the_shipped_dictionary(self) -> None:
        dictionary = zstandard.ZstdCompressionDict(SHIPPED_DICTIONARY.read_bytes())
        text = "Reserva de combustível de 45 minutos em voo VFR."
        assert zstandard.ZstdDecompressor(dict_data=dictionary).decompress(pack(text)).decode() == text

    def test_a_frame_written_without_a_dictionary_is_readable(self) -> None:
        frame = zstandard.ZstdCompressor(write_content_size=True).compress("sem dicionário".encode())
        assert unpack(frame) == "sem dicionário"

    def test_the_shipped_dictionary_is_what_the_training_script_builds(self) -> None:
        script = training_script()
        training, held_out = script.split_conversations(script.load_conversations())
        assert training
        assert held_out
        assert not set(training) & set(held_out)
        shipped = SHIPPED_DICTIONARY.read_bytes()
        samples = [body for bodies in training.values() for body in bodies]
        assert script.train(samples, len(shipped)).as_bytes() == shipped


class TestRefusals:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [("antes\x00depois", "NUL"), ("lone \ud800 surrogate", "surrogate")],
    )
    def test_text_no_message_column_can_hold_is_refused(self, text: str, problem: str) -> None:
        with pytest.raises(ValidationError, match=problem):
            pack(text)

    def test_a_frame_naming_an_unknown_dictionary_is_a_typed_error(self) -> None:
        samples: list[bytes | bytearray | memoryview] = [message.encode() for message in corpus_messages()]
        future_dictionary = zstandard.train_dictionary(2048, samples, dict_id=40_000)
        frame = zstandard.ZstdCompressor(dict_data=future_dictionary).compress(b"mensagem de um v2")
        assert packed_dictionary_id(frame) == 40_000
        with pytest.raises(StoredDataError, match=r"dictionary 40000.*does not ship \(known: 32769\)"):
            unpack(frame)

    @pytest.mark.parametrize(
        "data",
        [b"", b"\x00", b"not a zstd frame at all", b"\x28\xb5\x2f\xfd", bytes(range(256))],
    )
    def test_bytes_that_are_not_a_frame_are_a_typed_error(self, data: bytes) -> None:
        with pytest.raises(StoredDataError):
            unpack(data)

    def test_every_single_byte_corruption_is_refused_or_harmless(self) -> None:
        text = "Vento 270/15G25KT em SBPA; pista 11 com componente de través de 14 kt. Avalie antes de sair."
        frame = pack(text)
        for position in range(len(frame)):
            for flip in (0x01, 0x80, 0xFF):
                damaged = bytearray(frame)
                damaged[position] ^= flip
                with contextlib.suppress(StoredDataError):
                    assert unpack(bytes(damaged)) == text, f"byte {position} ^ {flip:#x} changed the text"

    def test_a_truncated_frame_is_a_typed_error(self) -> None:
        frame = pack("Mensagem que será cortada no armazenamento.")
        for length in range(len(frame)):
            with pytest.raises(StoredDataError):
                unpack(frame[:length])

    def test_bytes_after_the_frame_are_a_typed_error(self) -> None:
        with pytest.raises(StoredDataError, match="corrupt"):
            unpack(pack("uma mensagem") + b"\x00lixo")

    def test_a_frame_that_does_not_record_its_size_is_refused(self) -> None:
        # A streamed frame never knows its size up front.
        stream = zstandard.ZstdCompressor().compressobj()
        frame = stream.compress(b"texto") + stream.flush()
        with pytest.raises(StoredDataError, match="does not record its size"):
            unpack(frame)

    def test_a_frame_claiming_more_than_a_message_can_hold_is_refused_before_decoding(self) -> None:
        frame = zstandard.ZstdCompressor().compress(b"a" * (MAX_UNPACKED_BYTES + 1))
        with pytest.raises(StoredDataError, match="claims"):
            unpack(frame)

    def test_a_frame_holding_bytes_that_are_not_utf8_is_a_typed_error(self) -> None:
        frame = zstandard.ZstdCompressor().compress(b"\xff\xfe invalid")
        with pytest.raises(StoredDataError, match="UTF-8"):
            unpack(frame)
