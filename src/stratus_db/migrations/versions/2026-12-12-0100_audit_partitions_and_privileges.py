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
- Three SECURITY DEFINER functions, owned by whoever runs the migrations, search path pinned to the schema with
  pg_temp last, through which a role that may not UPDATE or DELETE `audit_log` (`stratus-db db grant-app-role`)
  still does the three things that rewrite it: `stratus_audit_add_partition(moment)` makes the month's partition;
  `stratus_audit_erase(subject, pseudonym, audit_ids, redactions)` pseudonymises the named rows about an erased
  person, computing their new values itself, and records the redactions (`audit_erasures` keeps the pseudonyms, so
  that none is reused and no erased trail rewritten again); `stratus_audit_purge(checkpoint, purged_at, audit_row)`
  removes every sealed row up to a checkpoint from the start of the chain, dropping the past month partitions all of
  whose rows go, marks the checkpoints purged and writes the purge's audit row. EXECUTE on them is revoked from
  PUBLIC. docs/audit.md, "Append-only", has what each checks.

The downgrade puts the rows back into a plain table (primary key audit_id) and drops the functions, audit_erasures,
the indexes and `on_behalf_of` (an agent's row sealed with it set then fails verification: downgrade before sealing
such rows, or not at all).
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

SECURE = "SECURITY DEFINER"
"""How each function runs: as its owner. Its search path is then set to the migration's schema and pg_temp, last
(`SEARCH_PATH`), so that a temporary table of the caller's can never stand in for one of ours."""
SEARCH_PATH = """
DO $$ BEGIN
    EXECUTE format('ALTER FUNCTION {signature} SET search_path = %I, pg_temp', current_schema());
END $$
"""
"""Run by the server (so `migrate --sql` writes it too): the schema is the one the tables are created in."""

ADD_PARTITION = """
CREATE FUNCTION stratus_audit_add_partition(moment timestamptz) RETURNS boolean
LANGUAGE plpgsql {secure} SET lock_timeout = '2s' AS $$
DECLARE
    -- Months of UTC, whatever the session's time zone (a month added to a timestamptz is added in that zone).
    low CONSTANT timestamptz := date_trunc('month', moment AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    high CONSTANT timestamptz := (date_trunc('month', moment AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
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
    -- Making a partition locks audit_log against writers: never wait long for them (lock_timeout, above).
    EXECUTE format('CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)', name, low, high);
    RETURN true;
EXCEPTION
    -- Writers held on, another sealer made it first, or a row of that month reached the default partition meanwhile:
    -- the month goes on in the default partition until the next run.
    WHEN lock_not_available OR duplicate_table OR check_violation THEN
        RETURN false;
END
$$
"""

ERASE = """
CREATE FUNCTION stratus_audit_erase(subject uuid, pseudonym uuid, rewritten uuid[], redactions jsonb)
RETURNS integer LANGUAGE plpgsql {secure} AS $$
DECLARE
    actor_before CONSTANT text := 'user:' || subject;
    permit CONSTANT uuid := gen_random_uuid();
    changed integer;
BEGIN
    IF EXISTS (SELECT 1 FROM users WHERE user_id = subject AND coalesce(email_index, '') NOT LIKE 'erased:%') THEN
        RAISE EXCEPTION 'the audit trail of user % is rewritten only by their erasure', subject
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- One pseudonym per erasure (its batches share the transaction), never anyone's id, never reused; an erased
    -- trail is never rewritten again. The person's id is not kept: that would undo the pseudonymisation.
    IF EXISTS (SELECT 1 FROM audit_erasures AS e WHERE e.pseudonym = stratus_audit_erase.subject)
       OR EXISTS (SELECT 1 FROM audit_erasures AS e WHERE e.pseudonym = stratus_audit_erase.pseudonym
                  AND e.erasure_xid <> pg_current_xact_id()::text::bigint) THEN
        RAISE EXCEPTION 'an erased trail is not rewritten again, nor a pseudonym reused'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM audit_erasures AS e WHERE e.pseudonym = stratus_audit_erase.pseudonym) THEN
        IF EXISTS (SELECT 1 FROM users WHERE user_id = pseudonym)
           OR EXISTS (SELECT 1 FROM audit_log WHERE user_id = pseudonym OR actor = 'user:' || pseudonym
                      OR on_behalf_of = pseudonym) THEN
            RAISE EXCEPTION 'the pseudonym must be a new id' USING ERRCODE = 'insufficient_privilege';
        END IF;
        INSERT INTO audit_erasures (pseudonym, erasure_xid, erased_at)
        VALUES (pseudonym, pg_current_xact_id()::text::bigint, now());
    END IF;
    INSERT INTO audit_rewrite_permits (permit_id, reason) VALUES (permit, 'erasure');
    -- Only the rows named, each about the person, made by them, or by an agent acting for them; every new value is
    -- computed here, as privacy/erasure.py computes it: the caller chooses none.
    UPDATE audit_log AS a
    SET user_id = CASE WHEN a.user_id = subject THEN pseudonym ELSE a.user_id END,
        record_id = CASE WHEN a.record_id = subject THEN pseudonym ELSE a.record_id END,
        old_values = CASE WHEN a.user_id = subject THEN stratus_audit_redacted(a.old_values)
                          ELSE replace(a.old_values::text, subject::text, pseudonym::text)::jsonb END,
        new_values = CASE WHEN a.user_id = subject THEN stratus_audit_redacted(a.new_values)
                          ELSE replace(a.new_values::text, subject::text, pseudonym::text)::jsonb END,
        ip_address = NULL,
        user_agent = NULL,
        actor = CASE WHEN a.actor = actor_before THEN 'user:' || pseudonym ELSE a.actor END,
        on_behalf_of = CASE WHEN a.on_behalf_of = subject THEN pseudonym ELSE a.on_behalf_of END
    WHERE a.audit_id = ANY (rewritten)
      AND (a.user_id = subject OR a.actor = actor_before OR a.on_behalf_of = subject);
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed <> cardinality(rewritten) THEN
        RAISE EXCEPTION 'an erasure rewrites only rows about the person' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The caller's hashes (keyed by a secret the database does not hold), for the rows and fields rewritten here only.
    IF EXISTS (SELECT 1 FROM jsonb_to_recordset(redactions) AS d(audit_id uuid, field text)
               WHERE NOT d.audit_id = ANY (rewritten)
                  OR d.field NOT IN ('user_id', 'record_id', 'old_values', 'new_values', 'ip_address',
                                     'user_agent', 'actor', 'on_behalf_of')) THEN
        RAISE EXCEPTION 'redactions are recorded only for the fields an erasure rewrites'
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

REDACTED = """
CREATE FUNCTION stratus_audit_redacted(original jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    -- privacy/erasure.py `redacted`: an object keeps its keys, each value "[erased]"; anything else "[erased]".
    SELECT CASE
        WHEN original IS NULL THEN NULL
        WHEN jsonb_typeof(original) = 'object' THEN
            coalesce((SELECT jsonb_object_agg(key, '"[erased]"'::jsonb) FROM jsonb_object_keys(original) AS key),
                     '{{}}'::jsonb)
        ELSE '"[erased]"'::jsonb
    END
$$
"""

PURGE = """
CREATE FUNCTION stratus_audit_purge(through_checkpoint bigint, purged_at timestamptz, audit_row jsonb)
RETURNS bigint LANGUAGE plpgsql {secure} SET lock_timeout = '5s' AS $$
DECLARE
    permit CONSTANT uuid := gen_random_uuid();
    minimum CONSTANT interval := nullif(current_setting('stratus.audit_minimum_retention', true), '')::interval;
    month_start CONSTANT timestamptz := date_trunc('month', purged_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    through_position bigint;
    partition regclass;
    doomed regclass[] := '{{}}';
    held bigint;
    whole boolean;
    removed bigint := 0;
    deleted bigint;
BEGIN
    SELECT last_position INTO through_position FROM audit_checkpoints
    WHERE checkpoint_id = through_checkpoint AND audit_checkpoints.purged_at IS NULL;
    IF through_position IS NULL THEN
        RAISE EXCEPTION 'checkpoint % is not a sealed checkpoint still holding rows', through_checkpoint
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The owner's floor under any retention the application asks for (ALTER FUNCTION … SET
    -- stratus.audit_minimum_retention = '5 years'): nothing younger is purged, whatever the caller says.
    IF minimum IS NOT NULL AND EXISTS (
        SELECT 1 FROM audit_chain AS c JOIN audit_log AS a USING (audit_id)
        WHERE c.position <= through_position AND a."timestamp" > now() - minimum
    ) THEN
        RAISE EXCEPTION 'the audit trail keeps every row for at least %', minimum
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO audit_rewrite_permits (permit_id, reason) VALUES (permit, 'retention');
    DELETE FROM audit_redactions
    WHERE audit_id IN (SELECT audit_id FROM audit_chain WHERE position <= through_position);
    -- Months past (never the current one) all of whose rows go are dropped whole, not deleted row by row. Each is
    -- locked against writes first, so no row joins it between the check and the drop.
    FOR partition IN
        SELECT c.oid::regclass FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_log'::regclass AND c.relname ~ '^audit_log_[0-9]{{4}}_[0-9]{{2}}$'
          AND (to_date(substr(c.relname, 11), 'YYYY_MM') + interval '1 month') AT TIME ZONE 'UTC' <= month_start
    LOOP
        EXECUTE format('LOCK TABLE %s IN SHARE MODE', partition);
        EXECUTE format(
            'SELECT count(*), bool_and(c.position IS NOT NULL AND c.position <= %s) '
            'FROM %s AS a LEFT JOIN audit_chain AS c ON c.audit_id = a.audit_id',
            through_position, partition
        ) INTO held, whole;
        IF held > 0 AND whole THEN
            doomed := doomed || partition;
            removed := removed + held;
        END IF;
    END LOOP;
    -- The rest row by row (a month partly kept, the default partition), before the drops: the exclusive lock they
    -- take on audit_log is held only from there to the commit.
    DELETE FROM audit_log AS a USING audit_chain AS c
    WHERE c.audit_id = a.audit_id AND c.position <= through_position AND NOT a.tableoid = ANY (doomed::oid[]);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    DELETE FROM audit_chain WHERE position <= through_position;
    UPDATE audit_checkpoints SET purged_at = stratus_audit_purge.purged_at
    WHERE checkpoint_id <= through_checkpoint AND audit_checkpoints.purged_at IS NULL;
    DELETE FROM audit_rewrite_permits WHERE permit_id = permit;
    -- The purge's own audit row, whoever called: the caller's context (actor, trace, purpose, its retention), and
    -- what was removed, counted here.
    INSERT INTO audit_log (audit_id, user_id, action, table_name, record_id, old_values, new_values, "timestamp",
                           ip_address, user_agent, actor, trace_id, purpose)
    SELECT gen_random_uuid(), NULL, 'purge', 'audit_log', NULL, NULL,
           coalesce(audit_row -> 'new_values', '{{}}'::jsonb)
               || jsonb_build_object('through_checkpoint', through_checkpoint, 'rows', removed + deleted),
           purged_at, audit_row ->> 'ip_address', audit_row ->> 'user_agent',
           coalesce(audit_row ->> 'actor', 'db:' || session_user), audit_row ->> 'trace_id', audit_row ->> 'purpose';
    FOREACH partition IN ARRAY doomed LOOP
        EXECUTE format('DROP TABLE %s', partition);
    END LOOP;
    RETURN removed + deleted;
END
$$
"""

ERASURES = """
CREATE TABLE audit_erasures (
    pseudonym uuid PRIMARY KEY,
    erasure_xid bigint NOT NULL,
    erased_at timestamptz NOT NULL
)
"""
"""PostgreSQL: each erasure's pseudonym and transaction, written by stratus_audit_erase only (the application's role
may not write it): the function refuses to rewrite a pseudonym's trail or to reuse a pseudonym in another
transaction. The person's id is not kept."""

FUNCTIONS = {
    "stratus_audit_redacted(jsonb)": REDACTED,
    "stratus_audit_add_partition(timestamptz)": ADD_PARTITION,
    "stratus_audit_erase(uuid, uuid, uuid[], jsonb)": ERASE,
    "stratus_audit_purge(bigint, timestamptz, jsonb)": PURGE,
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
    op.execute(ERASURES)
    for signature, body in FUNCTIONS.items():
        op.execute(body.format(secure=SECURE))
        op.execute(SEARCH_PATH.format(signature=signature))
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
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("DROP TABLE audit_erasures")
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
