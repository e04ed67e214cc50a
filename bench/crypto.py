"""Field encryption micro-benchmark: what encrypting and decrypting one typical personal value costs the client.

    .venv/bin/python bench/crypto.py [--no-write]

Times security/crypto.py on a name and an e-mail address (under a keyring key and under a user's data key), the
blind index, unwrapping a data key, and, as the floor, cryptography's AESGCM alone on the same bytes (one nonce from
os.urandom, one encrypt, one decrypt). Prints a markdown table and writes it between the crypto markers of
docs/benchmarks.md. Single-threaded CPU time per value: best of several rounds on a noisy machine. Not a test:
nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.harness import environment, write_section
from stratus_db.security.crypto import BlindIndex, Cell, FieldCipher, Keyring, new_key_entry, new_secret

ROUNDS = 7
MIN_ROUND_SECONDS = 0.2
NAME = "João Carlos da Silva Albuquerque"
EMAIL = "joao.carlos.albuquerque@aeroclube-sp.com.br"


def best_time(work: Callable[[], object]) -> float:
    """Seconds for one call of `work`: the best round of ROUNDS, each repeating it for at least MIN_ROUND_SECONDS."""
    best = float("inf")
    for _ in range(ROUNDS):
        calls = 0
        started = time.perf_counter()
        while True:
            for _ in range(100):
                work()
            calls += 100
            elapsed = time.perf_counter() - started
            if elapsed >= MIN_ROUND_SECONDS:
                break
        best = min(best, elapsed / calls)
    return best


def run() -> list[tuple[str, float]]:
    cipher = FieldCipher(Keyring.parse(f"{new_key_entry('k2')},{new_key_entry('k1')}"))
    index = BlindIndex.parse(new_secret())
    user = uuid.uuid4()
    data_key, wrapped = cipher.new_data_key(user)
    name_cell, email_cell = Cell("users", "name", user), Cell("users", "email", user)
    name_token = cipher.encrypt(NAME, name_cell)
    email_token = cipher.encrypt(EMAIL, email_cell)
    email_under_data_key = cipher.encrypt(EMAIL, email_cell, data_key=data_key)

    aead = AESGCM(os.urandom(32))
    plaintext = b"s" + EMAIL.encode()
    associated = b"x" * 60  # about the size of a cell's associated data

    def floor() -> None:
        nonce = os.urandom(12)
        aead.decrypt(nonce, aead.encrypt(nonce, plaintext, associated), associated)

    return [
        ("floor: AESGCM encrypt + decrypt of the e-mail's bytes (cryptography alone)", best_time(floor)),
        ("`encrypt` name (keyring key)", best_time(lambda: cipher.encrypt(NAME, name_cell))),
        ("`decrypt` name (keyring key)", best_time(lambda: cipher.decrypt(name_token, name_cell))),
        (
            "`encrypt` + `decrypt` name (keyring key)",
            best_time(lambda: cipher.decrypt(cipher.encrypt(NAME, name_cell), name_cell)),
        ),
        (
            "`encrypt` + `decrypt` e-mail (keyring key)",
            best_time(lambda: cipher.decrypt(cipher.encrypt(EMAIL, email_cell), email_cell)),
        ),
        (
            "`encrypt` + `decrypt` e-mail (user's data key)",
            best_time(
                lambda: cipher.decrypt(
                    cipher.encrypt(EMAIL, email_cell, data_key=data_key), email_cell, data_key=data_key
                )
            ),
        ),
        (
            "`decrypt` e-mail (user's data key)",
            best_time(lambda: cipher.decrypt(email_under_data_key, email_cell, data_key=data_key)),
        ),
        ("`decrypt` e-mail (keyring key)", best_time(lambda: cipher.decrypt(email_token, email_cell))),
        ("blind index of the e-mail (`BlindIndex.email`)", best_time(lambda: index.email(EMAIL))),
        (
            "`unwrap_data_key` (once per user per request)",
            best_time(lambda: cipher.unwrap_data_key(wrapped, user)),
        ),
        ("`new_data_key` (once per user)", best_time(lambda: cipher.new_data_key(user))),
        ("`Cell(...)` (building the binding)", best_time(lambda: Cell("users", "email", user))),
    ]


def markdown(rows: Sequence[tuple[str, float]]) -> list[str]:
    """The crypto section of docs/benchmarks.md, without its markers."""
    table = ["| Operation | µs per value |", "|---|---:|"]
    table += [f"| {operation} | {seconds * 1e6:.2f} |" for operation, seconds in rows]
    return [
        "## Field encryption (`bench/crypto.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {environment(['cryptography'])}. One thread; best of "
        f"{ROUNDS} rounds. Name: {len(NAME.encode())} bytes; e-mail: {len(EMAIL.encode())} bytes.",
        "",
        *table,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args(argv)
    section = markdown(run())
    print("\n".join(section))
    if not arguments.no_write:
        write_section("crypto", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
