"""Access control on every public call (security/policy.py): one table of every public method of every manager,
called by every kind of principal on one user's data; a refused call raises PermissionDeniedError, writes nothing
and is itself audited."""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from stratus_db import (
    AnalyticsManager,
    ApiKeyManager,
    AuditManager,
    ConsentManager,
    ConversationManager,
    Database,
    KeyManager,
    MemoryManager,
    Principal,
    PrincipalKind,
    PrivacyManager,
    UserManager,
)
from stratus_db.context import current_principal
from stratus_db.errors import PermissionDeniedError, ValidationError
from stratus_db.kit.models import table_of
from stratus_db.models import ApiKeyRow
from tests.fixtures.factories import count_rows, create_user

MANAGERS = (
    AnalyticsManager,
    UserManager,
    MemoryManager,
    ConversationManager,
    ConsentManager,
    AuditManager,
    PrivacyManager,
    KeyManager,
    ApiKeyManager,
)
NOT_CALLS = {
    "AuditManager.record": "writes an audit row inside another manager's call, which was authorized",
    "AuditManager.append": "writes audit entries inside another manager's call, which was authorized",
    "ConversationManager.wait_for_compressions": "waits for background work; touches no data",
    "ApiKeyManager.principal_for": "authentication: tells whom a token stands for, before there is a principal",
    "AnalyticsManager.today": "reads the clock in the metrics' time zone; touches no data",
}
"""Public methods that are not calls on someone's data, and why."""

ALL = frozenset({"system", "owner", "owner's agent", "other user", "other user's agent", "admin", "auditor"})
OWNER = frozenset({"system", "owner", "owner's agent"})
PROFILE = OWNER | {"admin"}
MANAGING = frozenset({"system", "admin"})
TRAIL = OWNER | {"auditor"}
AUDITING = frozenset({"system", "auditor"})
CONSENT_RECORD = OWNER | {"admin", "auditor"}
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
    consents: ConsentManager
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


async def _read_export(w: World, **by: Any) -> bytes:
    chunks = await w.privacy.export_user_data(w.owner, **by)
    return b"".join([chunk async for chunk in chunks])


async def _revoke_a_key(w: World, **by: Any) -> Any:
    """Revoke a key put there directly (made through the manager, its audit row would be another principal's)."""
    key_id = uuid.uuid4()
    async with w.db.engine.begin() as conn:
        await conn.execute(
            insert(table_of(ApiKeyRow)).values(
                key_id=key_id,
                name="chave a revogar",
                principal_kind="system",
                principal_id="servico",
                secret_hash="0" * 64,
                created_at=datetime.now(UTC),
            )
        )
    return await ApiKeyManager(w.db).revoke_key(key_id, **by)


Call = Callable[..., Awaitable[Any]]
"""A call on the owner's data: `call(world, **by)`, where `by` is empty or holds the call's `principal`."""

CALLS: dict[str, tuple[frozenset[str], Call]] = {
    "UserManager.create_user": (
        MANAGING,
        lambda w, **by: w.users.create_user(
            "Nova", f"nova-{uuid.uuid4().hex[:8]}@aviacao.com.br", "pilot", **by
        ),
    ),
    "UserManager.get_user": (PROFILE, lambda w, **by: w.users.get_user(w.owner, **by)),
    "UserManager.get_user_by_email": (PROFILE, lambda w, **by: w.users.get_user_by_email(w.email, **by)),
    "UserManager.update_user": (
        PROFILE,
        lambda w, **by: w.users.update_user(w.owner, name=f"Nome {uuid.uuid4().hex}", **by),
    ),
    "UserManager.list_users": (MANAGING, lambda w, **by: w.users.list_users(**by)),
    "UserManager.update_preferences": (
        PROFILE,
        lambda w, **by: w.users.update_preferences(w.owner, {"theme": uuid.uuid4().hex}, **by),
    ),
    "UserManager.active_users": (
        MANAGING,
        lambda w, **by: w.users.active_users(datetime.now(UTC) - timedelta(days=1), **by),
    ),
    "UserManager.activity_counts": (
        MANAGING,
        lambda w, **by: w.users.activity_counts(
            datetime.now(UTC) - timedelta(days=7), datetime.now(UTC), **by
        ),
    ),
    "UserManager.add_credential": (
        PROFILE,
        lambda w, **by: w.users.add_credential(w.owner, f"TIPO:A{uuid.uuid4().hex[:8]}", **by),
    ),
    "UserManager.update_credential": (
        PROFILE,
        lambda w, **by: w.users.update_credential(w.owner, w.credential, number=uuid.uuid4().hex[:12], **by),
    ),
    "UserManager.remove_credential": (
        PROFILE,
        lambda w, **by: w.users.remove_credential(w.owner, _spare_credential_id(w), **by),
    ),
    "UserManager.credential_status": (PROFILE, lambda w, **by: w.users.credential_status(w.owner, **by)),
    "UserManager.expiring_credentials": (MANAGING, lambda w, **by: w.users.expiring_credentials(30, **by)),
    "UserManager.deactivate_user": (
        PERSON_OR_MANAGER,
        lambda w, **by: w.users.deactivate_user(w.owner, "encerramento pedido pelo usuário", **by),
    ),
    "UserManager.reactivate_user": (MANAGING, lambda w, **by: w.users.reactivate_user(w.owner, **by)),
    "MemoryManager.store_memory": (
        OWNER,
        lambda w, **by: w.memories.store_memory(w.owner, "base", uuid.uuid4().hex, **by),
    ),
    "MemoryManager.get_memory": (OWNER, lambda w, **by: w.memories.get_memory(w.owner, "base", **by)),
    "MemoryManager.list_memories": (OWNER, lambda w, **by: w.memories.list_memories(w.owner, **by)),
    "MemoryManager.delete_memory": (
        OWNER,
        lambda w, **by: w.memories.delete_memory(w.owner, "descartavel", **by),
    ),
    "MemoryManager.search_memories": (
        OWNER,
        lambda w, **by: w.memories.search_memories(w.owner, "SBGR", **by),
    ),
    "MemoryManager.purge_expired": (MANAGING, lambda w, **by: w.memories.purge_expired(**by)),
    "ConversationManager.create_conversation": (
        OWNER,
        lambda w, **by: w.conversations.create_conversation(w.owner, **by),
    ),
    "ConversationManager.get_conversation": (
        OWNER,
        lambda w, **by: w.conversations.get_conversation(w.conversation, w.owner, **by),
    ),
    "ConversationManager.list_conversations": (
        OWNER,
        lambda w, **by: w.conversations.list_conversations(w.owner, **by),
    ),
    "ConversationManager.update_conversation": (
        OWNER,
        lambda w, **by: w.conversations.update_conversation(
            w.conversation, w.owner, title=uuid.uuid4().hex, **by
        ),
    ),
    "ConversationManager.archive_conversation": (
        OWNER,
        lambda w, **by: w.conversations.archive_conversation(_spare(w), w.owner, **by),
    ),
    "ConversationManager.delete_conversation": (
        OWNER,
        lambda w, **by: w.conversations.delete_conversation(_spare(w), w.owner, **by),
    ),
    "ConversationManager.restore_conversation": (
        OWNER,
        lambda w, **by: w.conversations.restore_conversation(_spare(w), w.owner, **by),
    ),
    "ConversationManager.purge_conversation": (
        OWNER,
        lambda w, **by: w.conversations.purge_conversation(_spare(w), w.owner, **by),
    ),
    "ConversationManager.add_message": (
        OWNER,
        lambda w, **by: w.conversations.add_message(w.conversation, w.owner, "Qual o METAR de SBGR?", **by),
    ),
    "ConversationManager.add_messages": (
        OWNER,
        lambda w, **by: w.conversations.add_messages(
            w.conversation, w.owner, [{"content": "TAF de SBKP?"}], **by
        ),
    ),
    "ConversationManager.import_messages": (
        OWNER,
        lambda w, **by: w.conversations.import_messages(
            w.conversation, w.owner, [{"content": "Histórico antigo"}], **by
        ),
    ),
    "ConversationManager.get_messages": (
        OWNER,
        lambda w, **by: w.conversations.get_messages(w.conversation, w.owner, **by),
    ),
    "ConversationManager.get_context": (
        OWNER,
        lambda w, **by: w.conversations.get_context(w.conversation, w.owner, 1000, **by),
    ),
    "ConversationManager.search_messages": (
        OWNER,
        lambda w, **by: w.conversations.search_messages(w.owner, "METAR", **by),
    ),
    "ConversationManager.compress_history": (
        OWNER,
        lambda w, **by: w.conversations.compress_history(w.conversation, w.owner, keep_last=0, **by),
    ),
    "ConversationManager.get_usage_stats": (
        PROFILE,
        lambda w, **by: w.conversations.get_usage_stats(w.owner, **by),
    ),
    "ConversationManager.get_conversation_stats": (
        PROFILE,
        lambda w, **by: w.conversations.get_conversation_stats(w.conversation, w.owner, **by),
    ),
    "ConsentManager.grant_consent": (
        PERSON,
        lambda w, **by: w.consents.grant_consent(w.owner, "marketing", "v1", "app", **by),
    ),
    "ConsentManager.revoke_consent": (
        PROFILE,
        lambda w, **by: w.consents.revoke_consent(w.owner, "marketing", "support", **by),
    ),
    "ConsentManager.has_consent": (
        CONSENT_RECORD,
        lambda w, **by: w.consents.has_consent(w.owner, "marketing", **by),
    ),
    "ConsentManager.consents": (CONSENT_RECORD, lambda w, **by: w.consents.consents(w.owner, **by)),
    "ConsentManager.consent_history": (
        CONSENT_RECORD,
        lambda w, **by: w.consents.consent_history(w.owner, **by),
    ),
    "AuditManager.query": (TRAIL, lambda w, **by: w.audit.query(user_id=w.owner, **by)),
    "AuditManager.seal": (MANAGING, lambda w, **by: w.audit.seal(**by)),
    "ApiKeyManager.create_key": (
        frozenset({"system"}),
        lambda w, **by: ApiKeyManager(w.db).create_key(Principal.system("servico"), "chave de teste", **by),
    ),
    "ApiKeyManager.revoke_key": (MANAGING, lambda w, **by: _revoke_a_key(w, **by)),
    "ApiKeyManager.list_keys": (MANAGING, lambda w, **by: ApiKeyManager(w.db).list_keys(**by)),
    # The session's database keeps the trail for ever: allowed, the call purges nothing.
    "AuditManager.purge": (MANAGING, lambda w, **by: w.audit.purge(**by)),
    "AuditManager.verify": (AUDITING, lambda w, **by: w.audit.verify(**by)),
    "AuditManager.checkpoints": (AUDITING, lambda w, **by: w.audit.checkpoints(**by)),
    "AuditManager.report": (
        AUDITING,
        lambda w, **by: w.audit.report(
            datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), **by
        ),
    ),
    "AnalyticsManager.report": (
        MANAGING | {"auditor"},
        lambda w, **by: AnalyticsManager(w.db).report(date(2026, 11, 1), date(2026, 11, 30), **by),
    ),
    "AnalyticsManager.current": (
        MANAGING | {"auditor"},
        lambda w, **by: AnalyticsManager(w.db).current(**by),
    ),
    "AnalyticsManager.rollup": (MANAGING, lambda w, **by: AnalyticsManager(w.db).rollup(**by)),
    "PrivacyManager.export_user_data": (PERSON, _read_export),
    "PrivacyManager.erase_user": (
        PERSON_OR_MANAGER,
        lambda w, **by: w.privacy.erase_user(w.owner, "teste de acesso", **by),
    ),
    # The session's database configures no retention: allowed, the call deletes nothing.
    "PrivacyManager.apply_retention": (MANAGING, lambda w, **by: w.privacy.apply_retention(**by)),
    "KeyManager.rotate_keys": (MANAGING, lambda w, **by: KeyManager(w.db).rotate_keys(**by)),
    "PrivacyManager.write_user_export": (
        PERSON,
        lambda w, **by: w.privacy.write_user_export(
            w.owner, Path(tempfile.gettempdir()) / f"{uuid.uuid4()}.json", **by
        ),
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


ACTIVATION = {"UserManager.deactivate_user": True, "UserManager.reactivate_user": False}
"""Calls that change whether the owner is active, and whether the owner is made active before each (so that an
allowed call changes something)."""


async def _set_active(w: World, *, active: bool) -> None:
    async with w.db.context(principal=Principal.system("test")):
        if active:
            await w.users.reactivate_user(w.owner)
        else:
            await w.users.deactivate_user(w.owner, "preparação do teste")


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


def test_every_public_method_takes_a_keyword_only_principal() -> None:
    without = []
    for qualified in sorted(set(_public_methods()) - set(NOT_CALLS)):
        manager, name = qualified.split(".")
        parameter = inspect.signature(getattr(globals()[manager], name)).parameters.get("principal")
        if (
            parameter is None
            or parameter.kind is not inspect.Parameter.KEYWORD_ONLY
            or parameter.default is not None
            or parameter.annotation not in ("Principal | None", Principal | None)
        ):
            without.append(qualified)
    assert without == [], "every public call takes `principal: Principal | None = None`, keyword-only"


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
        ConsentManager(db),
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


DATA_TABLES = ("users", "user_credentials", "memory_entries", "conversations", "messages", "user_consents")


async def _counts(db: Database) -> dict[str, int]:
    return {table: await count_rows(db, table) for table in DATA_TABLES}


async def _audit_rows_by_actor(db: Database) -> Counter[str]:
    async with db.transaction(read_only=True) as conn:
        rows = await conn.execute(text("SELECT actor, count(*) FROM audit_log GROUP BY actor"))
        return Counter({str(actor): int(count) for actor, count in rows})


def _contrary(qualified: str, label: str, principals: dict[str, Principal]) -> tuple[str, Principal]:
    """For "argument over context": a principal for the context that the call's table answers otherwise than for
    `label` (when one does) and that the audit trail tells apart from it."""
    allowed = CALLS[qualified][0]
    others = [
        (other, principal)
        for other, principal in principals.items()
        if principal.actor != principals[label].actor
    ]
    return next(
        ((other, principal) for other, principal in others if (other in allowed) != (label in allowed)),
        others[0],
    )


@pytest.mark.parametrize("way", ["context", "argument", "argument over context"])
async def test_every_call_against_every_principal(db: Database, way: str) -> None:
    """Every call, by every principal: from the context, as the `principal=` argument, or as the argument while the
    context names a principal the call's rule treats otherwise (the argument decides). Whatever the call wrote to the
    audit trail, its refusal included, records the call's principal as the actor."""
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
            if qualified in ACTIVATION:
                await _set_active(world, active=ACTIVATION[qualified])
            in_context = {
                "context": principal,
                "argument": None,
                "argument over context": _contrary(qualified, label, principals)[1],
            }[way]
            by = {} if way == "context" else {"principal": principal}
            before, audited_before = await _counts(db), await _audit_rows_by_actor(db)
            async with db.context(principal=in_context):
                try:
                    await call(world, **by)
                    outcomes[qualified, label] = "allowed"
                except PermissionDeniedError:
                    outcomes[qualified, label] = "denied"
            audited = await _audit_rows_by_actor(db) - audited_before
            if qualified not in NEEDS_NEW_OWNER or label != "owner":
                # (The person's own erasure is audited under their pseudonym: test_privacy_erasure.py checks it.)
                assert set(audited) <= {principal.actor}, (
                    f"{qualified} by {label} ({way}) audited as {audited}"
                )
            if outcomes[qualified, label] == "denied":
                assert await _counts(db) == before, (
                    f"{qualified} by {label} ({way}) was refused and wrote nothing"
                )
                assert audited == {principal.actor: 1}, "the refusal is audited, with the call's principal"
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


async def _actors(db: Database, table: str, record_ids: list[uuid.UUID]) -> dict[tuple[uuid.UUID, str], str]:
    """Who audit_log says made each change of these records: (record, action) → actor."""
    async with db.transaction(read_only=True) as conn:
        rows = await conn.execute(
            text("SELECT record_id, action, actor FROM audit_log WHERE table_name = :table"), {"table": table}
        )
        wanted = set(record_ids)
        return {
            (uuid.UUID(str(record)), action): actor
            for record, action, actor in rows
            if uuid.UUID(str(record)) in wanted
        }


def _store_batches(db: Database) -> int:
    count: int = db.metrics()["operations"].get("memory.store_batch", {}).get("count", 0)
    return count


def _appended_in_batches(db: Database) -> int:
    appended: int = db.metrics().get("append_coalescer", {}).get("appended", 0)
    return appended


async def test_writes_made_with_a_principal_argument_are_audited_as_it_also_when_batched(
    db: Database,
) -> None:
    """Concurrent stores and appends with `principal=` (written together on PostgreSQL, where the batch writes the
    audit rows of callers with different principals in one statement): each row records its own caller's principal,
    not the context's, nor another caller's in the same batch."""
    users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
    owner = await create_user(users)
    conversation = (await conversations.create_conversation(owner.user_id, "Briefing")).conversation_id
    briefing = Principal.agent("briefing", acting_for=owner.user_id)
    themselves = Principal.for_user(owner.user_id)
    by = [briefing if index % 2 == 0 else themselves for index in range(16)]
    store_batches, appended = _store_batches(db), _appended_in_batches(db)

    async with db.context(principal=Principal.system("request"), purpose="briefing"):
        created = await asyncio.gather(
            *(
                memories.store_memory(
                    owner.user_id, f"k{index}", f"v{index}", "long_term", principal=principal
                )
                for index, principal in enumerate(by)
            )
        )
        updated = await asyncio.gather(
            *(
                memories.store_memory(owner.user_id, f"k{index}", f"w{index}", principal=principal)
                for index, principal in enumerate(reversed(by))
            )
        )
        messages = await asyncio.gather(
            *(
                conversations.add_message(conversation, owner.user_id, f"METAR {index}", principal=principal)
                for index, principal in enumerate(by)
            )
        )
        alone = await memories.store_memory(owner.user_id, "alone", "PT-ABC", principal=briefing)

    assert [entry.value for entry in updated] == [f"w{index}" for index in range(16)]
    memory_actors = await _actors(db, "memory_entries", [entry.memory_id for entry in [*created, alone]])
    assert memory_actors == {
        **{(entry.memory_id, "create"): by[index].actor for index, entry in enumerate(created)},
        **{(entry.memory_id, "update"): by[::-1][index].actor for index, entry in enumerate(updated)},
        (alone.memory_id, "create"): "agent:briefing",
    }
    message_actors = await _actors(db, "messages", [message.message_id for message in messages])
    assert message_actors == {
        (message.message_id, "create"): by[index].actor for index, message in enumerate(messages)
    }
    assert {*memory_actors.values(), *message_actors.values()} == {
        "agent:briefing",
        f"user:{owner.user_id}",
    }
    async with db.transaction(read_only=True) as conn:
        purposes = await conn.execute(
            text("SELECT DISTINCT purpose FROM audit_log WHERE actor <> 'system:system'")
        )
        assert {purpose for (purpose,) in purposes} == {"briefing"}, "the context's other fields still apply"
    if db.backend == "postgresql":
        assert _store_batches(db) - store_batches >= 2, "the stores were written in batches"
        assert _appended_in_batches(db) - appended == 16, "the appends were written in batches"


async def test_the_argument_overrides_the_context_for_that_call_only(db: Database) -> None:
    users, memories, audit = UserManager(db), MemoryManager(db), AuditManager(db)
    owner, other = await create_user(users), await create_user(users)
    briefing = Principal.agent("briefing", acting_for=owner.user_id)
    intruder = Principal.for_user(other.user_id)

    async with db.context(principal=intruder, trace_id="req-42"):
        # The context's principal may not; the argument's may, and is the one audited.
        stored = await memories.store_memory(owner.user_id, "aeronave", "PT-ABC", principal=briefing)
        # The next call without the argument is the context's again.
        with pytest.raises(PermissionDeniedError, match=r"a user principal may not memory\.get"):
            await memories.get_memory(owner.user_id, "aeronave")
    async with db.context(principal=Principal.system("job")):
        # A narrower argument narrows too: the system context does not lend its rights to the call.
        with pytest.raises(PermissionDeniedError, match=r"a user principal may not memory\.delete"):
            await memories.delete_memory(owner.user_id, "aeronave", principal=intruder)
        trail = [
            event for event in (await audit.query(user_id=owner.user_id)).items if event.table_name != "users"
        ]

    assert await memories.get_memory(owner.user_id, "aeronave") is not None, (
        "the refused delete wrote nothing"
    )
    assert [(event.action, event.table_name, event.actor) for event in trail] == [
        ("deny", "access_control", f"user:{other.user_id}"),
        ("deny", "access_control", f"user:{other.user_id}"),
        ("create", "memory_entries", "agent:briefing"),
    ]
    assert [event.new_values["operation"] for event in trail[:2]] == ["memory.delete", "memory.get"]
    assert trail[2].record_id == stored.memory_id
    assert [event.trace_id == "req-42" for event in trail] == [False, True, True], (
        "the context's trace id stays"
    )


async def test_the_argument_is_a_principal_when_no_context_names_one(db: Database) -> None:
    users = UserManager(db)
    user = await create_user(users)
    refusing = Database(db.settings.model_copy(update={"STRATUS_ANONYMOUS_CALLS": "refuse"}))
    try:
        found = await UserManager(refusing).get_user(user.user_id, principal=Principal.for_user(user.user_id))
        assert found is not None
        assert found.user_id == user.user_id
        with pytest.raises(PermissionDeniedError, match="needs a principal"):
            await UserManager(refusing).get_user(user.user_id)
    finally:
        await refusing.close()


@pytest.mark.parametrize(
    "given",
    [
        {"kind": "system", "id": "job"},
        "system:job",
        PrincipalKind.system,
        uuid.UUID(int=1),
    ],
)
async def test_a_principal_argument_that_is_not_a_principal_is_refused(db: Database, given: object) -> None:
    users, memories = UserManager(db), MemoryManager(db)
    user = await create_user(users)
    before, audited, failed = await _counts(db), await count_rows(db, "audit_log"), _validation_errors(db)
    with pytest.raises(ValidationError, match=r"^principal must be a Principal"):
        await memories.store_memory(user.user_id, "k", "v", principal=given)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"^principal must be a Principal"):
        await users.list_users(principal=given)  # type: ignore[arg-type]
    assert await _counts(db) == before
    assert await count_rows(db, "audit_log") == audited, "nothing written, not even a refusal"
    assert _validation_errors(db) == failed + 1, (
        "measured as the call's failure, as other malformed arguments are"
    )


def _validation_errors(db: Database) -> int:
    store: dict[str, Any] = db.metrics()["operations"].get("memory.store", {})
    count: int = store.get("errors_by_type", {}).get("ValidationError", 0)
    return count


async def test_inside_a_call_a_context_that_names_a_principal_wins_and_one_that_does_not_keeps_the_call_s(
    db: Database,
) -> None:
    """Code run inside a call (a host's summarizer, say) that opens a context: the innermost statement of who acts
    wins, as for nested contexts."""
    users, memories = UserManager(db), MemoryManager(db)
    owner = await create_user(users)
    briefing = Principal.agent("briefing", acting_for=owner.user_id)
    themselves = Principal.for_user(owner.user_id)
    async with db.context(principal=Principal.system("request")):
        async with db.operation("memory.list", principal=briefing):
            assert current_principal() == briefing
            async with db.context(principal=themselves):
                assert current_principal() == themselves
                by_themselves = await memories.store_memory(owner.user_id, "a", 1)
            async with db.context(purpose="resumo"):
                assert current_principal() == briefing
                by_briefing = await memories.store_memory(owner.user_id, "b", 2)
        assert current_principal() == Principal.system("request")
    assert current_principal() is None
    actors = await _actors(db, "memory_entries", [by_themselves.memory_id, by_briefing.memory_id])
    assert actors == {
        (by_themselves.memory_id, "create"): f"user:{owner.user_id}",
        (by_briefing.memory_id, "create"): "agent:briefing",
    }


async def test_a_refusal_inside_the_callers_transaction_is_prompt_and_audited(db: Database) -> None:
    """A refused call made with `tx=`: on SQLite the caller's transaction holds the only write lock, and the refusal
    row used to wait the whole statement timeout for it, then fail unaudited (a logged warning). Now it is written
    once the caller's transaction ends — here rolled back by the refusal itself."""
    users = UserManager(db)
    owner, stranger = await create_user(users), await create_user(users)
    before = await count_rows(db, "audit_log")

    async def rename_both() -> None:
        async with db.transaction() as tx:
            await users.update_user(owner.user_id, name="Renomeado", tx=tx)  # takes the write lock on SQLite
            await users.update_user(
                stranger.user_id, name="Intruso", tx=tx, principal=Principal.for_user(owner.user_id)
            )

    with pytest.raises(PermissionDeniedError, match="another user"):
        await rename_both()

    for _ in range(100):  # the row is written by a task started when the transaction ended
        if await count_rows(db, "audit_log") > before:
            break
        await asyncio.sleep(0.05)
    refusals = (await AuditManager(db).query(action="deny")).items
    assert [(e.actor, e.new_values["operation"]) for e in refusals] == [
        (f"user:{owner.user_id}", "user.update")
    ]
    assert await count_rows(db, "audit_log") == before + 1, "the rolled-back rename left nothing"
    assert (await users.get_user(owner.user_id)).name == owner.name  # type: ignore[union-attr]
