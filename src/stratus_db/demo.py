"""The spec's complete demonstration: create a user, remember something, talk, read it all back, refuse another's
agent, consent, export and erase (LGPD), show the audit."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta

from sqlalchemy import select

from stratus_db.audit.manager import AuditManager
from stratus_db.conversations.manager import ConversationManager
from stratus_db.database import StratusPostgreSQLIntegration
from stratus_db.errors import PermissionDeniedError
from stratus_db.memory.manager import MemoryManager
from stratus_db.models import UserRow
from stratus_db.privacy.consent import ConsentManager
from stratus_db.privacy.manager import PrivacyManager
from stratus_db.security.principal import Principal
from stratus_db.users.manager import UserManager

DEMO_EMAIL = "joao@aviacao.com"
DEMO_BIRTH_DATE = date(1985, 4, 12)
OTHER_EMAIL = "maria@aviacao.com"


async def run_demo(db: StratusPostgreSQLIntegration) -> None:
    """Print each step; safe to run again on the same database (the user is reused)."""
    memory_mgr = MemoryManager(db)
    conv_mgr = ConversationManager(db)
    user_mgr = UserManager(db)
    audit_mgr = AuditManager(db)
    print(f"Stratus.IA database demo on {db.backend} ({db.settings.database_url.render_as_string()})\n")

    async with db.context(principal=Principal.system("demo"), purpose="demonstration"):
        user = await user_mgr.get_user_by_email(DEMO_EMAIL)
        if user is None:
            user = await user_mgr.create_user(
                name="João Silva",
                email=DEMO_EMAIL,
                role="pilot",
                licenses=["PP", "PC", "IFR"],
                birth_date=DEMO_BIRTH_DATE,
            )
            print(
                f"1. Created user      user_id={user.user_id}  {user.name} <{user.email}>  role={user.role}"
            )
        else:
            print(
                f"1. Reusing user      user_id={user.user_id}  {user.name} <{user.email}>  role={user.role}"
            )
        if user.birth_date is None:  # a user an older demo created
            user = await user_mgr.update_user(user.user_id, birth_date=DEMO_BIRTH_DATE)
        print(f"   licences: {', '.join(user.licenses)}; born {user.birth_date}")
        held = {status.credential.code for status in await user_mgr.credential_status(user.user_id)}
        if "CMA1" not in held:
            # No expiry given: computed from the birth date (12 months for a 1st class certificate at this age).
            await user_mgr.add_credential(
                user.user_id, "CMA-1", issued_at=db.clock().date() - timedelta(days=350)
            )
        for status in await user_mgr.credential_status(user.user_id):
            print(
                f"   {status.credential.code:<5} {status.credential.kind:<8} {status.status:<10} {status.reason}"
            )

        memory = await memory_mgr.store_memory(
            user_id=user.user_id,
            key="preferred_aircraft",
            value="Cessna 172",
            memory_type="long_term",
            importance_score=0.8,
        )
        print(
            f"2. Stored memory     memory_id={memory.memory_id}  {memory.key} = {memory.value!r} ({memory.memory_type})"
        )

        conv = await conv_mgr.create_conversation(user_id=user.user_id, title="Consulta meteorológica")
        print(f"3. New conversation  conversation_id={conv.conversation_id}  {conv.title!r}")

        question = await conv_mgr.add_message(
            conversation_id=conv.conversation_id,
            user_id=user.user_id,
            content="Qual o METAR de SBGR?",
            message_type="user_input",
        )
        answer = await conv_mgr.add_message(
            conversation_id=conv.conversation_id,
            user_id=user.user_id,
            content="METAR SBGR 251200Z 33008KT 9999 FEW035 27/17 Q1016= — vento de 330° a 8 kt, visibilidade acima de 10 km.",
            message_type="agent_response",
            agent_name="meteorologia",
            response_time=1.42,
        )
        print(f"4. Added messages    seq {question.seq} and {answer.seq} (message_id={question.message_id})")

        print("\nRead back:")
        remembered = await memory_mgr.get_memory(user.user_id, "preferred_aircraft")
        assert remembered is not None
        print(f"   memory {remembered.key!r} = {remembered.value!r}, read {remembered.access_count} time(s)")
        current = await conv_mgr.get_conversation(conv.conversation_id, user.user_id)
        assert current is not None
        print(f"   conversation: {current.message_count} messages, {current.total_tokens} tokens")
        for message in await conv_mgr.get_messages(conv.conversation_id, user.user_id):
            speaker = message.agent_name or message.message_type.value
            print(f"   [{message.seq}] {speaker}: {message.content}")

        print("\nConversation tools:")
        budget = 50  # the answer fits, and the question before it no longer does
        window = await conv_mgr.get_context(conv.conversation_id, user.user_id, max_tokens=budget)
        print(
            f"   context within {budget} tokens: {len(window.messages)} message(s), {window.total_tokens} tokens, "
            f"{window.omitted_messages} left out"
        )
        hits = await conv_mgr.search_messages(user.user_id, "meteorológico visibilidade")
        print(f"   search 'meteorológico visibilidade': {len(hits)} hit(s), best seq {hits[0].message.seq}")
        folded = await conv_mgr.compress_history(conv.conversation_id, user.user_id, keep_last=1)
        summarized = await conv_mgr.get_conversation(conv.conversation_id, user.user_id)
        assert summarized is not None
        print(
            f"   compress_history(keep_last=1): folded {folded.folded_messages}, summary {summarized.summary!r}"
        )
        usage = await conv_mgr.get_usage_stats(user.user_id)
        agents = ", ".join(f"{agent.agent_name or 'users'}: {agent.messages}" for agent in usage.per_agent)
        print(f"   usage: {usage.conversations} conversation(s), {usage.messages} messages ({agents})")

        print("\nAccess control:")
        other = await user_mgr.get_user_by_email(OTHER_EMAIL) or await user_mgr.create_user(
            name="Maria Souza", email=OTHER_EMAIL, role="instructor"
        )
        async with db.context(principal=Principal.agent("meteorologia", acting_for=other.user_id)):
            try:
                await memory_mgr.get_memory(user.user_id, "preferred_aircraft")
            except PermissionDeniedError as refused:
                print(f"   Maria's agent reading João's memory: refused ({refused.message})")
        async with db.context(principal=Principal.for_user(user.user_id)):
            own = await memory_mgr.get_memory(user.user_id, "preferred_aircraft")
            print(f"   João reading his own memory: {own.value if own else None!r}")

        print("\nPrivacy (LGPD):")
        condition = await memory_mgr.store_memory(
            user.user_id, "saude", "CMA com restrição: lentes corretivas", "long_term", sensitive=True
        )
        async with db.transaction(read_only=True) as conn:
            stored_name = await conn.scalar(select(UserRow.name).where(UserRow.user_id == user.user_id))
        print(f"   name as the table holds it: {str(stored_name)[:28]}… (the API returns {user.name!r})")
        print(f"   sensitive memory {condition.key!r}: encrypted at rest, never found by search_memories")
        consents = ConsentManager(db)
        await consents.grant_consent(user.user_id, "memory_personalisation", "2026-12", "app")
        print(
            f"   consent to memory personalisation: {await consents.has_consent(user.user_id, 'memory_personalisation')}"
        )
        document = json.loads(
            b"".join([chunk async for chunk in await PrivacyManager(db).export_user_data(user.user_id)])
        )
        sections = ", ".join(
            f"{len(document[key])} {key}" for key in ("credentials", "consents", "memories", "conversations")
        )
        print(
            f"   export ({document['format']} v{document['version']}): {sections}, {len(document['audit_events'])} audit events"
        )
        visitor = await user_mgr.create_user(
            name="Visitante", email=f"visitante-{uuid.uuid4().hex[:8]}@aviacao.com", role="student"
        )
        await memory_mgr.store_memory(visitor.user_id, "curso", "PPA em Jundiaí")
        erased = await PrivacyManager(db).erase_user(visitor.user_id, "pedido do titular (demonstração)")
        deleted = ", ".join(f"{count} {table}" for table, count in erased.deleted.items() if count)
        print(
            f"   erase_user(a visitor): deleted {deleted}; {erased.audit_rows_pseudonymised} audit rows "
            f"pseudonymised as {erased.pseudonym}"
        )

        print("\nAudit trail of this user (newest first):")
        for event in (await audit_mgr.query(user_id=user.user_id, limit=10)).items:
            print(
                f"   {event.timestamp:%Y-%m-%d %H:%M:%S} {event.action:<7} {event.table_name:<15} by {event.actor} ({event.purpose})"
            )
        sealed = await audit_mgr.seal()
        verified = await audit_mgr.verify()
        print(
            f"   sealed {sealed.rows_sealed} new audit rows into the hash chain; verify: "
            f"{'the trail matches its seals' if verified.ok else verified.problems[0].detail} "
            f"({verified.rows_checked} rows checked)"
        )

        health = await db.health_check()
        print(
            f"\nHealth: {'ok' if health.healthy else health.error}, latency {health.latency_ms:.1f} ms, schema {health.schema_revision}"
        )
