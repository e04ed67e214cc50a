"""audit of writes made outside the library (PostgreSQL): a trigger on every table of personal data

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-11 02:00:00

PostgreSQL only (docs/audit.md, "Writes made outside the library"). The library writes its own audit rows, with the
whole request context, on every path; a write that arrives another way (psql, another service, a hand-written
migration) would leave none. An AFTER ROW trigger on `users`, `user_credentials`, `user_consents`, `memory_entries`,
`conversations` and `messages` writes one for it: action `create` / `update` / `delete`, the table and the row's key,
the changed columns only (old and new, as stored: encrypted columns stay ciphertext; the search columns, packed
message bytes, the user's wrapped data key and the blind indexes are left out: a copy of the key in the trail would
outlive the erasure that destroys it), the time, the client's address, the application name as user agent, and `db:<login>` as
actor. The trigger's WHEN clause skips the library's own connections (application_name `stratus_db`, set by the
engine), so the library's writes pay one comparison per row and are never audited twice. SQLite, an embedded file
only the library opens, has no such trigger. The downgrade drops the triggers and the function.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = {
    "users": "user_id",
    "user_credentials": "credential_id",
    "user_consents": "consent_id",
    "memory_entries": "memory_id",
    "conversations": "conversation_id",
    "messages": "message_id",
}
"""Each audited table and its primary key (the audit row's record_id)."""

FUNCTION = """
CREATE FUNCTION stratus_audit_outside_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    left_out CONSTANT text[] := ARRAY['search_vector', 'search_text', 'packed_content', 'data_key', 'email_index',
                                      'canac_index'];
    before jsonb;
    after jsonb;
    subject jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        before := to_jsonb(OLD) - left_out;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        after := to_jsonb(NEW) - left_out;
    END IF;
    subject := coalesce(after, before);
    IF TG_OP = 'UPDATE' THEN
        -- The changed columns only, as the library records them.
        SELECT jsonb_object_agg(b.key, b.value), jsonb_object_agg(b.key, after -> b.key)
        INTO before, after
        FROM jsonb_each(before) AS b
        WHERE after -> b.key IS DISTINCT FROM b.value;
        IF after IS NULL THEN
            RETURN NULL;  -- nothing stored changed
        END IF;
    END IF;
    INSERT INTO audit_log (audit_id, user_id, action, table_name, record_id, old_values, new_values, "timestamp",
                           ip_address, user_agent, actor, trace_id, purpose)
    VALUES (gen_random_uuid(), (subject ->> 'user_id')::uuid,
            CASE TG_OP WHEN 'INSERT' THEN 'create' WHEN 'UPDATE' THEN 'update' ELSE 'delete' END,
            TG_TABLE_NAME, (subject ->> TG_ARGV[0])::uuid, before, after, clock_timestamp(),
            host(inet_client_addr()), left(current_setting('application_name'), 500),
            left('db:' || session_user, 210), NULL, NULL);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(FUNCTION)
    for table, key in KEYS.items():
        op.execute(
            f"CREATE TRIGGER audit_outside_write AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
            f"WHEN (current_setting('application_name') IS DISTINCT FROM 'stratus_db') "
            f"EXECUTE FUNCTION stratus_audit_outside_write('{key}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in KEYS:
        op.execute(f"DROP TRIGGER audit_outside_write ON {table}")
    op.execute("DROP FUNCTION stratus_audit_outside_write()")
