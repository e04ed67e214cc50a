"""Field encryption micro-benchmark: what encrypting and decrypting one typical personal value costs the client.

    .venv/bin/python bench/crypto.py [--no-write]

Times security/crypto.py on a name and an e-mail address (under a keyring key and under a user's data key), the
blind index, unwrapping a data key, and, as the floor, cryptography's AESGCM alone on the same bytes (one nonce from
os.urandom, one encrypt, one decrypt). Prints a markdown table and writes it between the crypto markers of
docs/benchmarks.md. Single-threaded time per value: each operation's best of several rounds, the operations interleaved so that
they see the same load on a shared machine. Not a test:
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

ROUNDS = 30
ROUND_SECONDS = 0.04
"""Each round times every operation for this long, one after the other: interleaved, the operations see the same
load from whatever else runs on the machine, and the best round of each is comparable with the others'."""
NAME = "João Carlos da Silva Albuquerque"
EMAIL = "joao.carlos.albuquerque@aeroclube-sp.com.br"


def timed_round(work: Callable[[], object]) -> float:
    """Seconds per call of `work`, repeated in batches of 100 for at least ROUND_SECONDS."""
    calls = 0
    started = time.perf_counter()
    while True:
        for _ in range(100):
            work()
        calls += 100
        elapsed = time.perf_counter() - started
        if elapsed >= ROUND_SECONDS:
            return elapsed / calls


def best_times(operations: Sequence[tuple[str, Callable[[], object]]]) -> list[tuple[str, float]]:
    """Each operation's best round of ROUNDS, the operations interleaved within each round."""
    best = [float("inf")] * len(operations)
    for _ in range(ROUNDS):
        for position, (_, work) in enumerate(operations):
            best[position] = min(best[position], timed_round(work))
    return [(name, seconds) for (name, _), seconds in zip(operations, best, strict=True)]


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

    return best_times(
        [
            ("floor: AESGCM encrypt + decrypt of the e-mail's bytes (cryptography alone)", floor),
            ("`encrypt` name (keyring key)", lambda: cipher.encrypt(NAME, name_cell)),
            ("`decrypt` name (keyring key)", lambda: cipher.decrypt(name_token, name_cell)),
            (
                "`encrypt` + `decrypt` name (keyring key)",
                lambda: cipher.decrypt(cipher.encrypt(NAME, name_cell), name_cell),
            ),
            (
                "`encrypt` + `decrypt` e-mail (keyring key)",
                lambda: cipher.decrypt(cipher.encrypt(EMAIL, email_cell), email_cell),
            ),
            (
                "`encrypt` + `decrypt` e-mail (user's data key)",
                lambda: cipher.decrypt(
                    cipher.encrypt(EMAIL, email_cell, data_key=data_key), email_cell, data_key=data_key
                ),
            ),
            (
                "`decrypt` e-mail (user's data key)",
                lambda: cipher.decrypt(email_under_data_key, email_cell, data_key=data_key),
            ),
            ("`decrypt` e-mail (keyring key)", lambda: cipher.decrypt(email_token, email_cell)),
            ("blind index of the e-mail (`BlindIndex.email`)", lambda: index.email(EMAIL)),
            (
                "`unwrap_data_key` (once per user per request)",
                lambda: cipher.unwrap_data_key(wrapped, user),
            ),
            ("`new_data_key` (once per user)", lambda: cipher.new_data_key(user)),
            ("`Cell(...)` (building the binding)", lambda: Cell("users", "email", user)),
        ]
    )


def markdown(rows: Sequence[tuple[str, float]]) -> list[str]:
    """The crypto section of docs/benchmarks.md, without its markers."""
    floor = rows[0][1]
    table = ["| Operation | µs per value | × floor |", "|---|---:|---:|"]
    table += [f"| {operation} | {seconds * 1e6:.2f} | {seconds / floor:.1f} |" for operation, seconds in rows]
    return [
        "## Field encryption (`bench/crypto.py`)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {environment(['cryptography'])}; load average "
        f"{load_average()} when it started (other jobs share the cores: the × floor column, measured in the same "
        f"run, is the steadier figure). One thread; each operation's best of {ROUNDS} interleaved rounds. Name: {len(NAME.encode())} bytes; "
        f"e-mail: {len(EMAIL.encode())} bytes.",
        "",
        *table,
    ]


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


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
