"""Access control on every public call (security/policy.py): one table of every public method of every manager,
called by every kind of principal on one user's data; a refused call raises PermissionDeniedError, writes nothing
and is itself audited."""

from __future__ import annotations

import inspect
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stratus_db import (
    AuditManager,
    ConversationManager,
    Database,
    MemoryManager,
    Principal,
    PrincipalKind,
    PrivacyManager,
    UserManager,
)
from stratus_db.errors import PermissionDeniedError, ValidationError
from tests.fixtures.factories import count_rows, create_user

MANAGERS = (UserManager, MemoryManager, ConversationManager, AuditManager, PrivacyManager)
NOT_CALLS = {
    "AuditManager.record": "writes an audit row inside another manager's call, which was authorized",
    "AuditManager.append": "writes audit entries inside another manager's call, which was authorized",
    "ConversationManager.wait_for_compressions": "waits for background work; touches no data",
}
"""Public methods that are not calls on someone's data, and why."""

ALL = frozenset({"system", "owner", "owner's agent", "other user", "other user's agent", "admin", "auditor"})
OWNER = frozenset({"system", "owner", "owner's agent"})
PROFILE = OWNER | {"admin"}
MANAGING = frozenset({"system", "admin"})
TRAIL = OWNER | {"auditor"}
PERSON = frozenset({"system", "owner"})
PERSON_OR_MANAGER = PERSON | {"admin"}
"""Who may: the expectations, written here independently of the policy's own table."""


@dataclass
class World:
    """The owner's data (a user with a memory and a conversation) and the managers, on one database."""

    db: Database
    users: UserManager
    memories: MemoryManager
    conversations: ConversationManager
    audit: AuditManager
    owner: uuid.UUID
    email: str
    conversation: uuid.UUID
    credential: uuid.UUID
    spare: uuid.UUID | None = None
    """A conversation made for the call under test (archive, delete, restore, purge)."""
    spare_credential: uuid.UUID | None = None
    """A credential made for remove_credential."""

    @property
    def privacy(self) -> PrivacyManager:
        return PrivacyManager(self.db)


async def _read_export(w: World) -> bytes:
    chunks = await w.privacy.export_user_data(w.owner)
    return b"".join([chunk async for chunk in chunks])


Call = Callable[[World], Awaitable[Any]]

CALLS: dict[str, tuple[frozenset[str], Call]] = {
    "UserManager.create_user": (
        MANAGING,
        lambda w: w.users.create_user("Nova", f"nova-{uuid.uuid4().hex[:8]}@aviacao.com.br", "pilot"),
    ),
    "UserManager.get_user": (PROFILE, lambda w: w.users.get_user(w.owner)),
    "UserManager.get_user_by_email": (PROFILE, lambda w: w.users.get_user_by_email(w.email)),
    "UserManager.update_user": (
        PROFILE,
        lambda w: w.users.update_user(w.owner, name=f"Nome {uuid.uuid4().hex}"),
    ),
    "UserManager.list_users": (MANAGING, lambda w: w.users.list_users()),
    "UserManager.update_preferences": (
        PROFILE,
        lambda w: w.users.update_preferences(w.owner, {"theme": uuid.uuid4().hex}),
    ),
    "UserManager.active_users": (
        MANAGING,
        lambda w: w.users.active_users(datetime.now(UTC) - timedelta(days=1)),
    ),
    "UserManager.activity_counts": (
        MANAGING,
        lambda w: w.users.activity_counts(datetime.now(UTC) - timedelta(days=7), datetime.now(UTC)),
    ),
    "UserManager.add_credential": (
        PROFILE,
        lambda w: w.users.add_credential(w.owner, f"TIPO:A{uuid.uuid4().hex[:8]}"),
    ),
    "UserManager.update_credential": (
        PROFILE,
        lambda w: w.users.update_credential(w.owner, w.credential, number=uuid.uuid4().hex[:12]),
    ),
    "UserManager.remove_credential": (
        PROFILE,
        lambda w: w.users.remove_credential(w.owner, _spare_credential_id(w)),
    ),
    "UserManager.credential_status": (PROFILE, lambda w: w.users.credential_status(w.owner)),
    "UserManager.expiring_credentials": (MANAGING, lambda w: w.users.expiring_credentials(30)),
    "MemoryManager.store_memory": (
        OWNER,
        lambda w: w.memories.store_memory(w.owner, "base", uuid.uuid4().hex),
    ),
    "MemoryManager.get_memory": (OWNER, lambda w: w.memories.get_memory(w.owner, "base")),
    "MemoryManager.list_memories": (OWNER, lambda w: w.memories.list_memories(w.owner)),
    "MemoryManager.delete_memory": (OWNER, lambda w: w.memories.delete_memory(w.owner, "descartavel")),
    "MemoryManager.search_memories": (OWNER, lambda w: w.memories.search_memories(w.owner, "SBGR")),
    "MemoryManager.purge_expired": (MANAGING, lambda w: w.memories.purge_expired()),
    "ConversationManager.create_conversation": (
        OWNER,
        lambda w: w.conversations.create_conversation(w.owner),
    ),
    "ConversationManager.get_conversation": (
        OWNER,
        lambda w: w.conversations.get_conversation(w.conversation, w.owner),
    ),
    "ConversationManager.list_conversations": (OWNER, lambda w: w.conversations.list_conversations(w.owner)),
    "ConversationManager.update_conversation": (
        OWNER,
        lambda w: w.conversations.update_conversation(w.conversation, w.owner, title=uuid.uuid4().hex),
    ),
    "ConversationManager.archive_conversation": (
        OWNER,
        lambda w: w.conversations.archive_conversation(_spare(w), w.owner),
    ),
    "ConversationManager.delete_conversation": (
        OWNER,
        lambda w: w.conversations.delete_conversation(_spare(w), w.owner),
    ),
    "ConversationManager.restore_conversation": (
        OWNER,
        lambda w: w.conversations.restore_conversation(_spare(w), w.owner),
    ),
    "ConversationManager.purge_conversation": (
        OWNER,
        lambda w: w.conversations.purge_conversation(_spare(w), w.owner),
    ),
    "ConversationManager.add_message": (
        OWNER,
        lambda w: w.conversations.add_message(w.conversation, w.owner, "Qual o METAR de SBGR?"),
    ),
    "ConversationManager.add_messages": (
        OWNER,
        lambda w: w.conversations.add_messages(w.conversation, w.owner, [{"content": "TAF de SBKP?"}]),
    ),
    "ConversationManager.import_messages": (
        OWNER,
        lambda w: w.conversations.import_messages(w.conversation, w.owner, [{"content": "Histórico antigo"}]),
    ),
    "ConversationManager.get_messages": (
        OWNER,
        lambda w: w.conversations.get_messages(w.conversation, w.owner),
    ),
    "ConversationManager.get_context": (
        OWNER,
        lambda w: w.conversations.get_context(w.conversation, w.owner, 1000),
    ),
    "ConversationManager.search_messages": (
        OWNER,
        lambda w: w.conversations.search_messages(w.owner, "METAR"),
    ),
    "ConversationManager.compress_history": (
        OWNER,
        lambda w: w.conversations.compress_history(w.conversation, w.owner, keep_last=0),
    ),
    "ConversationManager.get_usage_stats": (PROFILE, lambda w: w.conversations.get_usage_stats(w.owner)),
    "ConversationManager.get_conversation_stats": (
        PROFILE,
        lambda w: w.conversations.get_conversation_stats(w.conversation, w.owner),
    ),
    "AuditManager.query": (TRAIL, lambda w: w.audit.query(user_id=w.owner)),
    "PrivacyManager.export_user_data": (PERSON, _read_export),
    "PrivacyManager.erase_user": (
        PERSON_OR_MANAGER,
        lambda w: w.privacy.erase_user(w.owner, "teste de acesso"),
    ),
    # The session's database configures no retention: allowed, the call deletes nothing.
    "PrivacyManager.apply_retention": (MANAGING, lambda w: w.privacy.apply_retention()),
    "PrivacyManager.write_user_export": (
        PERSON,
        lambda w: w.privacy.write_user_export(w.owner, Path(tempfile.gettempdir()) / f"{uuid.uuid4()}.json"),
    ),
}
"""Every public call on the owner's data, and who may make it."""
NEEDS_SPARE = {"ConversationManager.restore_conversation": True} | dict.fromkeys(
    ("ConversationManager.archive_conversation", "ConversationManager.delete_conversation",
     "ConversationManager.purge_conversation"),
    False,
)  # fmt: skip
"""Calls that need a conversation of their own, and whether it is archived first."""
NEEDS_NEW_OWNER = frozenset({"PrivacyManager.erase_user"})
"""Calls after which the owner is gone: each principal tries them on a world of its own."""


def _spare_credential_id(w: World) -> uuid.UUID:
    assert w.spare_credential is not None, "made before the call"
    return w.spare_credential


async def _spare_credential(w: World) -> None:
    async with w.db.context(principal=Principal.system("test")):
        added = await w.users.add_credential(w.owner, f"TIPO:R{uuid.uuid4().hex[:8]}")
    w.spare_credential = added.credential_id


def _spare(w: World) -> uuid.UUID:
    assert w.spare is not None, "made before the call"
    return w.spare


async def _spare_conversation(w: World, *, archived: bool) -> None:
    """A conversation of the owner's for a call that changes its status, made as trusted code before the call."""
    async with w.db.context(principal=Principal.system("test")):
        created = await w.conversations.create_conversation(w.owner, "descartável")
        if archived:
            await w.conversations.archive_conversation(created.conversation_id, w.owner)
    w.spare = created.conversation_id


def _public_methods() -> list[str]:
    return [
        f"{manager.__name__}.{name}"
        for manager in MANAGERS
        for name, method in inspect.getmembers(manager, inspect.iscoroutinefunction)
        if not name.startswith("_")
    ]


def test_every_public_method_is_in_the_table() -> None:
    methods = _public_methods()
    # A method missing here fails this; one whose operation has no rule is refused even to `system` below.
    assert sorted(set(methods) - set(NOT_CALLS)) == sorted(CALLS), "a public method without an access row"


async def _world(db: Database) -> tuple[World, uuid.UUID]:
    users = UserManager(db)
    owner, other = await create_user(users), await create_user(users)
    memories, conversations = MemoryManager(db), ConversationManager(db)
    await memories.store_memory(owner.user_id, "base", "SBGR", "long_term")
    conversation = await conversations.create_conversation(owner.user_id, "Briefing")
    held = await users.add_credential(owner.user_id, "CMA1", expires_at=date(2030, 1, 1))
    await conversations.add_message(conversation.conversation_id, owner.user_id, "Vou a SBGR.")
    world = World(
        db,
        users,
        memories,
        conversations,
        AuditManager(db),
        owner.user_id,
        owner.email,
        conversation.conversation_id,
        held.credential_id,
    )
    return world, other.user_id


def _principals(owner: uuid.UUID, other: uuid.UUID) -> dict[str, Principal]:
    return {
        "system": Principal.system("job"),
        "owner": Principal.for_user(owner),
        "owner's agent": Principal.agent("meteorologia", acting_for=owner),
        "other user": Principal.for_user(other),
        "other user's agent": Principal.agent("meteorologia", acting_for=other),
        "admin": Principal(kind=PrincipalKind.admin, id="ops"),
        "auditor": Principal(kind=PrincipalKind.auditor, id="dpo"),
    }


DATA_TABLES = ("users", "user_credentials", "memory_entries", "conversations", "messages")


async def _counts(db: Database) -> dict[str, int]:
    return {table: await count_rows(db, table) for table in (*DATA_TABLES, "audit_log")}


async def test_every_call_against_every_principal(db: Database) -> None:
    world, other = await _world(db)
    principals = _principals(world.owner, other)
    outcomes: dict[tuple[str, str], str] = {}
    for qualified, (_allowed, call) in CALLS.items():
        for label in list(principals):
            if qualified in NEEDS_NEW_OWNER:
                world, other = await _world(db)
                principals = _principals(world.owner, other)
            principal = principals[label]
            if qualified in NEEDS_SPARE:
                await _spare_conversation(world, archived=NEEDS_SPARE[qualified])
            if qualified == "UserManager.remove_credential":
                await _spare_credential(world)
            before = await _counts(db)
            async with db.context(principal=principal):
                try:
                    await call(world)
                except PermissionDeniedError:
                    outcomes[qualified, label] = "denied"
                    after = await _counts(db)
                    assert {t: after[t] for t in DATA_TABLES} == {t: before[t] for t in DATA_TABLES}, (
                        f"{qualified} by {label} was refused and wrote nothing"
                    )
                    assert after["audit_log"] == before["audit_log"] + 1, "the refusal is audited"
                    continue
            outcomes[qualified, label] = "allowed"
    expected = {
        (qualified, label): "allowed" if label in allowed else "denied"
        for qualified, (allowed, _call) in CALLS.items()
        for label in principals
    }
    assert {key: value for key, value in outcomes.items() if expected[key] != value} == {}


async def test_the_issues_reproduction_user_a_cannot_touch_user_b(db: Database) -> None:
    users, memories = UserManager(db), MemoryManager(db)
    a, b = await create_user(users), await create_user(users)
    async with db.context(principal=Principal.for_user(a.user_id)):
        with pytest.raises(PermissionDeniedError, match="another user"):
            await users.update_user(b.user_id, name="Renomeado")
        with pytest.raises(PermissionDeniedError):
            await users.update_user(b.user_id, role="instructor")
        with pytest.raises(PermissionDeniedError, match=r"user\.change_role"):
            await users.update_user(a.user_id, role="instructor")  # not even their own role
        with pytest.raises(PermissionDeniedError, match="another user"):
            await memories.store_memory(b.user_id, "intrusa", "x")
        with pytest.raises(PermissionDeniedError, match=r"user\.list"):
            await users.list_users()
        renamed = await users.update_user(a.user_id, name="A, por si mesmo")
    assert renamed.name == "A, por si mesmo"
    assert (await users.get_user(b.user_id)).name == b.name  # type: ignore[union-attr]
    assert (await users.get_user(b.user_id)).role == b.role  # type: ignore[union-attr]
    assert (await memories.list_memories(b.user_id)).items == []
    refusals = (await AuditManager(db).query(action="deny")).items
    assert len(refusals) == 5
    assert {event.actor for event in refusals} == {f"user:{a.user_id}"}
    assert {event.new_values["operation"] for event in refusals} == {
        "user.update",
        "user.change_role",
        "memory.store",
        "user.list",
    }


async def test_without_a_principal_the_setting_decides(db: Database) -> None:
    users = UserManager(db)
    user = await create_user(users)  # the default, STRATUS_ANONYMOUS_CALLS=system: trusted in-process code
    refusing = Database(db.settings.model_copy(update={"STRATUS_ANONYMOUS_CALLS": "refuse"}))
    try:
        with pytest.raises(PermissionDeniedError, match="needs a principal"):
            await UserManager(refusing).get_user(user.user_id)
        async with refusing.context(principal=Principal.for_user(user.user_id)):
            assert await UserManager(refusing).get_user(user.user_id) is not None
    finally:
        await refusing.close()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "user", "id": "a"}, "needs the user_id"),
        ({"kind": "agent", "id": "a"}, "needs the user_id"),
        ({"kind": "admin", "id": "a", "user_id": uuid.uuid4()}, "drop user_id"),
        ({"kind": "service", "id": "a"}, "kind"),
    ],
)
async def test_a_malformed_principal_is_refused(db: Database, fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        async with db.context(principal=fields):  # type: ignore[arg-type]
            pass
