"""The HTTP service under load on loopback: appending a message and searching memories through `stratus-db serve`
(uvicorn, one process) against the same calls made directly on the managers, in the same run.

    make bench-http   (or: .venv-bench/bin/python bench/http_service.py [--ops 3000] [--rounds 3] [--no-write])

One throw-away PostgreSQL database; 50 users, each with a conversation and 20 memories from the Portuguese aviation
corpus. The server is a process of its own on 127.0.0.1, given each user's bearer token; the client is httpx at
concurrency 16 with keep-alive. The four setups take turns in slices. What the HTTP layer costs is the ratio of the
two throughputs and the difference of the latencies: authentication, the request context, validation, routing,
JSON both ways and the loopback — with the server, the client and PostgreSQL sharing the machine's cores. Not a test:
nothing here asserts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Contender, compare, corpus_messages, corpus_sentences, run_sliced
from stratus_db import ConversationManager, Database, MemoryManager, Principal, UserManager
from stratus_db.api import issue_token
from stratus_db.security.crypto import new_secret
from tests.fixtures.databases import settings_for, throwaway_postgres_database

CONCURRENCY = 16
USERS = 50
MEMORIES = 20
QUERIES = ("metar sbgr", "teto nuvens", "combustível reserva", "NOTAM pista", "vento cruzado")


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`stratus-db serve` on a free port; its process and base URL, once it answers /health."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = os.environ | {"DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "stratus-db"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=environment,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1):
                return process, base
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("stratus-db serve did not start")


async def measure(ops: int, rounds: int) -> list[str]:
    os.environ.setdefault("STRATUS_API_JWT_SECRET", new_secret())
    corpus, sentences = corpus_messages(), corpus_sentences()
    async with throwaway_postgres_database() as url:
        settings = settings_for(url).model_copy(
            update={"STRATUS_POOL_SIZE": CONCURRENCY, "STRATUS_POOL_MAX_OVERFLOW": 0}
        )
        db = Database(settings)
        users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
        owners: list[tuple[Any, Any, dict[str, str]]] = []
        for n in range(USERS):
            user = await users.create_user(f"Piloto {n}", f"piloto{n}@carga.com.br", "pilot")
            chat = await conversations.create_conversation(user.user_id, f"Conversa {n}")
            for m in range(MEMORIES):
                await memories.store_memory(
                    user.user_id, f"nota_{m}", sentences[(n * MEMORIES + m) % len(sentences)]
                )
            token = issue_token(settings, Principal.for_user(user.user_id), timedelta(hours=2))
            owners.append((user.user_id, chat.conversation_id, {"Authorization": f"Bearer {token}"}))
        process, base = serve(url, Path.cwd())
        client = httpx.AsyncClient(
            base_url=base,
            limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        )
        try:

            def message(index: int) -> dict[str, Any]:
                text = corpus[index % len(corpus)]
                return {
                    "content": text["content"],
                    "message_type": text["message_type"],
                    "tokens_used": text["tokens_used"],
                }

            async def append_direct(index: int) -> None:
                user_id, chat_id, _headers = owners[index % USERS]
                body = message(index)
                await conversations.add_message(
                    chat_id, user_id, body["content"], body["message_type"], tokens_used=body["tokens_used"]
                )

            async def append_http(index: int) -> None:
                user_id, chat_id, headers = owners[index % USERS]
                answer = await client.post(
                    f"/v1/users/{user_id}/conversations/{chat_id}/messages",
                    json=message(index),
                    headers=headers,
                )
                answer.raise_for_status()

            async def search_direct(index: int) -> None:
                user_id, _chat_id, _headers = owners[index % USERS]
                await memories.search_memories(user_id, QUERIES[index % len(QUERIES)])

            async def search_http(index: int) -> None:
                user_id, _chat_id, headers = owners[index % USERS]
                answer = await client.get(
                    f"/v1/users/{user_id}/memory-search",
                    params={"q": QUERIES[index % len(QUERIES)]},
                    headers=headers,
                )
                answer.raise_for_status()

            lines = [
                "| Operation, concurrency 16 | direct: ops/s, p50, p99 | HTTP: requests/s, p50, p99 | HTTP ÷ direct "
                "| CPU per call: direct (this process) / HTTP (service, client) |",
                "|---|---:|---:|---:|---:|",
            ]
            for operation, direct, http in (
                ("append a message", append_direct, append_http),
                ("search memories", search_direct, search_http),
            ):
                service_before = process_cpu_seconds(process.pid)
                results = await compare(
                    [Contender("direct", operation, direct), Contender("HTTP", operation, http)],
                    ops,
                    CONCURRENCY,
                    rounds=rounds,
                    warmup=200,
                )
                # The service is idle while the direct calls run: its CPU is the HTTP calls' (warm-up included).
                service_us = (process_cpu_seconds(process.pid) - service_before) * 1e6 / (ops + 200)
                cells = [
                    f"{r.throughput:,.0f}/s, {r.percentile(0.5):.1f} ms, {r.percentile(0.99):.1f} ms"
                    for r in results
                ]
                direct, http = results
                lines.append(
                    f"| {operation} | {cells[0]} | {cells[1]} | {http.throughput / direct.throughput:.2f} "
                    f"| {direct.client_cpu_us:,.0f} µs / {service_us:,.0f} µs, {http.client_cpu_us:,.0f} µs |"
                )
        finally:
            await client.aclose()
            process.terminate()
            process.wait(timeout=30)
            await db.close()
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    run_sliced(
        __doc__,
        measure,
        section="http",
        intro=(
            "The HTTP service against direct manager calls, on loopback, interleaved in one run (`make bench-http`; "
            "server, client and PostgreSQL on the same two cores):"
        ),
        packages=("sqlalchemy", "asyncpg", "fastapi", "uvicorn", "httpx"),
        default_ops=3000,
        ops_help="calls per setup and operation",
    )


if __name__ == "__main__":
    main()
