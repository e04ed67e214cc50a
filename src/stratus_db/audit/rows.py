"""The audit row, written once: which of audit_log's columns come from the request context, and the SQL with which
a domain's data-modifying statement (PostgreSQL) inserts the audit rows of what it changed.

Adding a context column to the audit trail is a change to this file (and to the model and a migration): the rows
`AuditManager` writes take it from `context_columns()`, and the batch statements of the other domains take it
through `AUDIT_INPUT` and `insert_audit_rows`.
"""

from __future__ import annotations

from typing import Any

from stratus_db.audit.schemas import AuditAction
from stratus_db.context import current_context, current_trace_id
from stratus_db.kit.sql import BatchColumns

CONTEXT_COLUMNS = ("ip_address", "user_agent", "actor", "trace_id", "purpose")
"""audit_log's columns that come from the request context (all text), in the order statements take them."""

AUDIT_INPUT = BatchColumns((("audit_id", "uuid"), *((name, "text") for name in CONTEXT_COLUMNS)))
"""What each row of a batch statement carries for its audit row, beside the domain's own columns: the audit row's
id (made by the caller, so that it is known before the statement) and its context columns."""


def context_columns() -> dict[str, Any]:
    """The columns of an audit row that come from the request context: who acted, from where, under which trace and
    why. Taken inside the operation (its trace id) by code that writes the row later, in a batch."""
    context = current_context()
    columns = {
        "ip_address": context.ip_address,
        "user_agent": context.user_agent,
        "actor": context.principal.actor,
        "trace_id": current_trace_id(),
        "purpose": context.purpose,
    }
    assert tuple(columns) == CONTEXT_COLUMNS, "CONTEXT_COLUMNS lists the context columns in this order"
    return columns


def insert_audit_rows(
    *,
    source: str,
    action: AuditAction,
    table_name: str,
    user_id: str,
    record_id: str,
    old_values: str,
    new_values: str,
    timestamp: str,
    input_of: str = "",
    parameters: BatchColumns | None = None,
) -> str:
    """`INSERT INTO audit_log … SELECT … FROM source`: the audit rows of a data-modifying statement, one per row of
    `source` (a FROM clause), each value an SQL expression over it.

    The audit row's id and context columns are those `AUDIT_INPUT` brought in: the columns of `source` (prefixed
    with `input_of`, e.g. "c."), or, for a statement that writes one row, its parameters in `parameters`' order.
    """
    inputs = [name for name, _type in AUDIT_INPUT.columns]
    if parameters is not None:
        audit_id, *context = (parameters.parameter(name) for name in inputs)
    else:
        audit_id, *context = (f"{input_of}{name}" for name in inputs)
    context_sql = ", ".join(context)
    return (
        "INSERT INTO audit_log (audit_id, user_id, action, table_name, record_id, old_values, new_values, timestamp, "
        f"{', '.join(CONTEXT_COLUMNS)})\n"
        f"    SELECT {audit_id}, {user_id}, '{action.value}', '{table_name}', {record_id}, {old_values},\n"
        f"           {new_values}, {timestamp}, {context_sql}\n"
        f"    FROM {source}"
    )
