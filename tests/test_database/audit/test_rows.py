"""audit/rows.py: the audit row is spelled once. Its context columns are audit_log's own, and every write path, the
batched ones on PostgreSQL included, fills each of them from the request context."""

from __future__ import annotations

import asyncio

from stratus_db import (
    AuditManager,
    ConversationManager,
    Database,
    MemoryManager,
    Principal,
    UserManager,
)
from stratus_db.audit.rows import AUDIT_INPUT, CONTEXT_COLUMNS
from stratus_db.models import AuditRow
from tests.fixtures.factories import create_user

ROW_COLUMNS = (
    "audit_id",
    "user_id",
    "action",
    "table_name",
    "record_id",
    "old_values",
    "new_values",
    "timestamp",
)
"""What the statement writing a row gives itself; everything else comes from the request context."""


def test_the_context_columns_are_the_rest_of_audit_log() -> None:
    assert set(ROW_COLUMNS) | set(CONTEXT_COLUMNS) == set(AuditRow.__table__.columns.keys())
    assert [name for name, _type in AUDIT_INPUT.columns] == [
        "audit_id",
        "audited_at",
        "old_values",
        "new_values",
        *CONTEXT_COLUMNS,
    ]


async def test_every_write_path_fills_every_context_column(
    db: Database,
    users: UserManager,
    memories: MemoryManager,
    conversations: ConversationManager,
    audit: AuditManager,
) -> None:
    user = await create_user(users)
    conversation = await conversations.create_conversation(user_id=user.user_id, title="Voo")
    await memories.store_memory(user.user_id, "updated", "SBGR", "long_term")
    agent = Principal.agent("planner", acting_for=user.user_id)
    async with db.context(
        principal=agent,
        trace_id="trace-rows",
        ip_address="10.0.0.7",
        user_agent="stratus-agent/1.0",
        purpose="voo",
    ):
        # Concurrent calls: on PostgreSQL they are written in batches (new keys, an update, appends).
        await asyncio.gather(
            *(memories.store_memory(user.user_id, f"new-{n}", f"valor {n}") for n in range(6)),
            memories.store_memory(user.user_id, "updated", "SBKP"),
            *(
                conversations.add_message(
                    conversation_id=conversation.conversation_id,
                    user_id=user.user_id,
                    content=f"mensagem {n}",
                    message_type="user_input",
                )
                for n in range(6)
            ),
        )
    page = await audit.query(user_id=user.user_id, limit=100)
    written = [event for event in page.items if event.trace_id == "trace-rows"]
    assert len(written) == 13
    assert {(event.table_name, event.action) for event in written} == {
        ("memory_entries", "create"),
        ("memory_entries", "update"),
        ("messages", "create"),
    }
    for event in written:
        assert (event.actor, event.ip_address, event.user_agent, event.purpose) == (
            "agent:planner",
            "10.0.0.7",
            "stratus-agent/1.0",
            "voo",
        ), event
