"""The spec's "Exemplo de Uso Básico", with only its import lines changed, on both backends."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stratus_db import ConversationManager, MemoryManager, StratusPostgreSQLIntegration, UserManager
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database

REPOSITORY = Path(__file__).resolve().parents[2]


async def exemplo_uso() -> None:
    # Inicializar sistema
    db = StratusPostgreSQLIntegration()
    memory_mgr = MemoryManager(db)
    conv_mgr = ConversationManager(db)
    user_mgr = UserManager(db)

    # Criar usuário
    user = await user_mgr.create_user(
        name="João Silva", email="joao@aviacao.com", role="pilot", licenses=["PP", "PC", "IFR"]
    )

    # Armazenar memória
    await memory_mgr.store_memory(
        user_id=user.user_id,
        key="preferred_aircraft",
        value="Cessna 172",
        memory_type="long_term",
        importance_score=0.8,
    )

    # Criar conversa
    conv = await conv_mgr.create_conversation(user_id=user.user_id, title="Consulta meteorológica")

    # Adicionar mensagem
    await conv_mgr.add_message(
        conversation_id=conv.conversation_id,
        user_id=user.user_id,
        content="Qual o METAR de SBGR?",
        message_type="user_input",
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def example_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database the example has never seen; the SQLite file does not even exist yet."""
    if request.param == "postgresql":
        async with throwaway_postgres_database() as url:
            yield url
    else:
        yield sqlite_url(tmp_path / "example.db")


async def test_the_spec_example_runs_and_stores_everything(
    example_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", example_database_url)
    monkeypatch.setenv("LOG_LEVEL", "WARNING")

    await exemplo_uso()  # the spec's code, verbatim: it never closes its handle

    db = StratusPostgreSQLIntegration()
    try:
        user = await UserManager(db).get_user_by_email("joao@aviacao.com")
        assert user is not None
        assert (user.name, user.role, user.licenses) == ("João Silva", "pilot", ["PPR", "PCM", "IFRA"])
        memory = await MemoryManager(db).get_memory(user.user_id, "preferred_aircraft")
        assert memory is not None
        assert (memory.value, memory.memory_type, memory.importance_score) == ("Cessna 172", "long_term", 0.8)
        (conv,) = (await ConversationManager(db).list_conversations(user.user_id)).items
        assert (conv.title, conv.message_count) == ("Consulta meteorológica", 1)
        messages = await ConversationManager(db).get_messages(conv.conversation_id, user.user_id)
        assert [(m.seq, m.content, m.message_type) for m in messages] == [
            (1, "Qual o METAR de SBGR?", "user_input")
        ]
    finally:
        await db.close()


async def test_demo_script_runs_on_a_fresh_embedded_database_and_again(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    environment |= {"STRATUS_DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"}
    outputs = []
    for _run in range(2):  # a second run reuses the user the first one created
        completed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(REPOSITORY / "demo_database.py")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        outputs.append(completed.stdout)
    assert "Created user" in outputs[0]
    assert "Reusing user" in outputs[1]

    db = StratusPostgreSQLIntegration(settings_for(sqlite_url(tmp_path / "data" / "stratus.db")))
    try:
        user = await UserManager(db).get_user_by_email("joao@aviacao.com")
        assert user is not None
        assert str(user.user_id) in outputs[0]
        conversations = (await ConversationManager(db).list_conversations(user.user_id)).items
        assert [conv.message_count for conv in conversations] == [2, 2]
        assert all(str(conv.conversation_id) in "".join(outputs) for conv in conversations)
    finally:
        await db.close()
