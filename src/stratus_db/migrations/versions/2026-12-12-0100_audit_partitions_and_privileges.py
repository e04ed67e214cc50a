"""audit partitions and privileges: audit_log by month, the functions that rewrite it, table and action indexes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-12 01:00:00

Both backends: `audit_log` gains `on_behalf_of`, the user an agent principal acted for (its actor, `agent:<name>`, does
not say), with a partial index over agents' rows (erasure finds them by it), and two partial indexes, for AuditManager.query(table=..., action=...) and
(action=...), over every row but message appends (most of the trail, and its hot path).

PostgreSQL (docs/audit.md, "Append-only" and "Retention"):

- `audit_log` becomes a table partitioned by month of `timestamp` (UTC): one partition `audit_log_YYYY_MM` per month,
  and `audit_log_default` for a row in a month without one. The primary key becomes (audit_id, timestamp), as a
  partitioned table's must hold the partition key; audit ids stay unique (random UUIDs, made by the library). The
  rows are copied over, the indexes rebuilt, revision 0012's append-only triggers recreated on the new table.
  Partitions are made for every month that has rows and for this month and the next two; the sealer makes the
  months ahead as time goes by (`stratus_audit_add_partition`).
- Three SECURITY DEFINER functions, owned by whoever runs the migrations, through which a role that may not
  UPDATE or DELETE `audit_log` (`stratus-db db grant-app-role`) still does the three things that rewrite it:
  `stratus_audit_add_partition(moment)` makes the month's partition; `stratus_audit_erase(subject, pseudonym,
  rows, redactions)` pseudonymises the rows about an erased person (and only when that person's user row is gone or
  a tombstone, only their identifiers, to the pseudonym) and records the redactions; `stratus_audit_purge(
  checkpoint, purged_at)` removes every sealed row up to a checkpoint from the start of the chain, dropping the
  month partitions all of whose rows go, and marks the checkpoints purged. EXECUTE on them is revoked from PUBLIC.

The downgrade puts the rows back into a plain table (primary key audit_id) and drops the functions and the indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_audit_log_user_id_timestamp_audit_id": 'user_id, "timestamp", audit_id',
    "ix_audit_log_record_id_timestamp_audit_id": 'record_id, "timestamp", audit_id',
    "ix_audit_log_timestamp_audit_id": '"timestamp", audit_id',
    "ix_audit_log_actor_timestamp_audit_id": 'actor, "timestamp", audit_id',
    "ix_audit_log_trace_id": "trace_id",
}
"""audit_log's indexes before this revision, rebuilt on the partitioned table."""
APART_FROM_APPENDS = "(table_name <> 'messages' OR action <> 'create')"
ACTING_FOR_SOMEONE = "on_behalf_of IS NOT NULL"
"""The new indexes leave message appends out (models/audit.py says why); written here, as a revision must not
depend on the models."""
NEW_INDEXES = {
    "ix_audit_log_table_name_timestamp_audit_id": ["table_name", "timestamp", "audit_id"],
    "ix_audit_log_action_timestamp_audit_id": ["action", "timestamp", "audit_id"],
}
APPEND_ONLY = (
    "CREATE TRIGGER audit_log_append_only_{event} BEFORE {EVENT} ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION stratus_audit_append_only()"
)

ADD_PARTITION = """
CREATE FUNCTION stratus_audit_add_partition(moment timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    low CONSTANT timestamptz := date_trunc('month', moment AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    high CONSTANT timestamptz := low + interval '1 month';
    name CONSTANT text := 'audit_log_' || to_char(low AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Rows of that month already in the default partition keep it from being made (PostgreSQL would refuse): they
    -- stay where they are, and retention deletes them row by row.
    IF EXISTS (SELECT 1 FROM audit_log_default WHERE "timestamp" >= low AND "timestamp" < high) THEN
        RETURN false;
    END IF;
    -- Making a partition locks audit_log against writers: never wait long for them.
    SET LOCAL lock_timeout = '2s';
    EXECUTE format('CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)', name, low, high);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;
END
$$
"""

ERASE = """
CREATE FUNCTION stratus_audit_erase(subject uuid, pseudonym uuid, rewritten jsonb, redactions jsonb)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    actor_before CONSTANT text := 'user:' || subject;
    permit CONSTANT uuid := gen_random_uuid();
    changed integer;
BEGIN
    IF EXISTS (SELECT 1 FROM users WHERE user_id = subject AND coalesce(email_index, '') NOT LIKE 'erased:%') THEN
        RAISE EXCEPTION 'the audit trail of user % is rewritten only by their erasure', subject
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO audit_rewrite_permits (permit_id, reason) VALUES (permit, 'erasure');
    -- Only rows about the person or made by them, and only their identifiers, to the pseudonym: address and user
    -- agent go; the values are the caller's redaction (the seals check it through the redactions recorded).
    UPDATE audit_log AS a
    SET user_id = r.user_id, record_id = r.record_id, old_values = r.old_values, new_values = r.new_values,
        ip_address = NULL, user_agent = NULL, actor = r.actor, on_behalf_of = r.on_behalf_of
    FROM jsonb_to_recordset(rewritten)
        AS r(audit_id uuid, user_id uuid, record_id uuid, old_values jsonb, new_values jsonb, actor text,
             on_behalf_of uuid)
    WHERE a.audit_id = r.audit_id
      AND (a.user_id = subject OR a.actor = actor_before OR a.on_behalf_of = subject)
      AND r.user_id IS NOT DISTINCT FROM (CASE WHEN a.user_id = subject THEN pseudonym ELSE a.user_id END)
      AND r.record_id IS NOT DISTINCT FROM (CASE WHEN a.record_id = subject THEN pseudonym ELSE a.record_id END)
      AND r.actor = (CASE WHEN a.actor = actor_before THEN 'user:' || pseudonym ELSE a.actor END)
      AND r.on_behalf_of IS NOT DISTINCT FROM
          (CASE WHEN a.on_behalf_of = subject THEN pseudonym ELSE a.on_behalf_of END);
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed <> jsonb_array_length(rewritten) THEN
        RAISE EXCEPTION 'an erasure may rewrite only the rows about the person, their identifiers to the pseudonym'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO audit_redactions (audit_id, field, original_hash, redacted_hash, erased_at)
    SELECT * FROM jsonb_to_recordset(redactions)
        AS d(audit_id uuid, field text, original_hash text, redacted_hash text, erased_at timestamptz)
    ON CONFLICT DO NOTHING;
    DELETE FROM audit_rewrite_permits WHERE permit_id = permit;
    RETURN changed;
END
$$
"""

PURGE = """
CREATE FUNCTION stratus_audit_purge(through_checkpoint bigint, purged_at timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    permit CONSTANT uuid := gen_random_uuid();
    through_position bigint;
    partition regclass;
    whole boolean;
    held bigint;
    removed bigint := 0;
    deleted bigint;
BEGIN
    SELECT last_position INTO through_position FROM audit_checkpoints
    WHERE checkpoint_id = through_checkpoint AND audit_checkpoints.purged_at IS NULL;
    IF through_position IS NULL THEN
        RAISE EXCEPTION 'checkpoint % is not a sealed checkpoint still holding rows', through_checkpoint
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO audit_rewrite_permits (permit_id, reason) VALUES (permit, 'retention');
    DELETE FROM audit_redactions
    WHERE audit_id IN (SELECT audit_id FROM audit_chain WHERE position <= through_position);
    -- A month all of whose rows go is dropped whole, not deleted row by row.
    FOR partition IN
        SELECT inhrelid::regclass FROM pg_inherits
        WHERE inhparent = 'audit_log'::regclass AND inhrelid <> 'audit_log_default'::regclass
    LOOP
        EXECUTE format(
            'SELECT count(*), bool_and(c.position IS NOT NULL AND c.position <= %s) '
            'FROM %s AS a LEFT JOIN audit_chain AS c ON c.audit_id = a.audit_id',
            through_position, partition
        ) INTO held, whole;
        IF held > 0 AND whole THEN
            EXECUTE format('DROP TABLE %s', partition);
            removed := removed + held;
        END IF;
    END LOOP;
    -- The rest: the rows of a month only partly past, and of the default partition.
    DELETE FROM audit_log AS a USING audit_chain AS c WHERE c.audit_id = a.audit_id AND c.position <= through_position;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    DELETE FROM audit_chain WHERE position <= through_position;
    UPDATE audit_checkpoints SET purged_at = stratus_audit_purge.purged_at
    WHERE checkpoint_id <= through_checkpoint AND audit_checkpoints.purged_at IS NULL;
    DELETE FROM audit_rewrite_permits WHERE permit_id = permit;
    RETURN removed + deleted;
END
$$
"""

FUNCTIONS = {
    "stratus_audit_add_partition(timestamptz)": ADD_PARTITION,
    "stratus_audit_erase(uuid, uuid, jsonb, jsonb)": ERASE,
    "stratus_audit_purge(bigint, timestamptz)": PURGE,
}


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("on_behalf_of", sa.Uuid(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _partition()
    op.create_index(
        "ix_audit_log_on_behalf_of",
        "audit_log",
        ["on_behalf_of"],
        postgresql_where=sa.text(ACTING_FOR_SOMEONE),
        sqlite_where=sa.text(ACTING_FOR_SOMEONE),
    )
    for name, columns in NEW_INDEXES.items():
        op.create_index(
            name,
            "audit_log",
            columns,
            postgresql_where=sa.text(APART_FROM_APPENDS),
            sqlite_where=sa.text(APART_FROM_APPENDS),
        )


def _partition() -> None:
    """audit_log as a table partitioned by month, a partition for each month its rows are in and for this month and
    the next two, the rows copied, indexes and triggers rebuilt; then the functions."""
    op.execute("ALTER TABLE audit_log RENAME TO audit_log_unpartitioned")
    op.execute("ALTER TABLE audit_log_unpartitioned DROP CONSTRAINT pk_audit_log")
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute(
        'CREATE TABLE audit_log (LIKE audit_log_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp")'
    )
    op.execute("CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT")
    for signature, body in FUNCTIONS.items():
        op.execute(body)
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
    op.execute(
        "SELECT stratus_audit_add_partition(moment) FROM ("
        "SELECT DISTINCT date_trunc('month', \"timestamp\" AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS moment FROM audit_log_unpartitioned "
        "UNION SELECT now() + interval '1 month' * ahead FROM generate_series(0, 2) AS ahead) AS months"
    )
    op.execute("INSERT INTO audit_log SELECT * FROM audit_log_unpartitioned")
    op.execute("DROP TABLE audit_log_unpartitioned")  # and its triggers
    op.execute('ALTER TABLE audit_log ADD CONSTRAINT pk_audit_log PRIMARY KEY (audit_id, "timestamp")')
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON audit_log ({columns})")
    for event in ("update", "delete"):
        op.execute(APPEND_ONLY.format(event=event, EVENT=event.upper()))


def downgrade() -> None:
    for name in (*NEW_INDEXES, "ix_audit_log_on_behalf_of"):
        op.drop_index(name, table_name="audit_log")
    # In place on both (SQLite 3.35+): a batch rebuild of audit_log would drop its append-only triggers.
    op.execute("ALTER TABLE audit_log DROP COLUMN on_behalf_of")
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("ALTER TABLE audit_log RENAME TO audit_log_partitioned")
    op.execute("ALTER TABLE audit_log_partitioned DROP CONSTRAINT pk_audit_log")
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute("CREATE TABLE audit_log (LIKE audit_log_partitioned INCLUDING DEFAULTS)")
    op.execute("INSERT INTO audit_log SELECT * FROM audit_log_partitioned")
    op.execute("DROP TABLE audit_log_partitioned")  # its partitions with it
    op.execute("ALTER TABLE audit_log ADD CONSTRAINT pk_audit_log PRIMARY KEY (audit_id)")
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON audit_log ({columns})")
    for event in ("update", "delete"):
        op.execute(APPEND_ONLY.format(event=event, EVENT=event.upper()))
