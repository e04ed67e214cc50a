"""The audit row, written once: the typed entry every write plan carries (`AuditEntry`), which of audit_log's columns
come from the request context, and the SQL with which a domain's data-modifying statement (PostgreSQL) inserts the
audit rows of what it changed.

Adding a context column to the audit trail is a change to this file (and to the model and a migration): entries take
it from `audit_context()`, the Core path writes `AuditEntry.row()`, and the batch statements of the other domains take
it through `AUDIT_INPUT`, `AuditEntry.batch_input()` and `insert_audit_rows`.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime
from types import FrameType
from typing import Any, NamedTuple

from stratus_db.audit.schemas import AuditAction
from stratus_db.context import current_context, current_principal, current_trace_id
from stratus_db.kit.sql import BatchColumns
from stratus_db.security.principal import SYSTEM, PrincipalKind


class AuditContext(NamedTuple):
    """The columns of an audit row that come from the request context: who acted (and, for an agent, the user it
    acted for), from where, under which trace and why."""

    ip_address: str | None
    user_agent: str | None
    actor: str
    trace_id: str
    purpose: str | None
    on_behalf_of: uuid.UUID | None


CONTEXT_COLUMNS: tuple[str, ...] = AuditContext._fields
"""audit_log's columns that come from the request context, in the order statements take them."""
CONTEXT_TYPES: dict[str, str] = dict.fromkeys(CONTEXT_COLUMNS, "text") | {"on_behalf_of": "uuid"}
"""Their PostgreSQL types, for the batch statements' arrays."""


def audit_context() -> AuditContext:
    """The request context's audit columns, taken now: inside the operation (its trace id and its principal, the
    call's `principal=` argument if it was given one), by code that writes the row later, in a batch.

    An agent's row names the user it acted for (`on_behalf_of`): its actor, `agent:<name>`, does not. A call made
    with no principal at all is recorded as `system:system`, and, unless the context gave a user agent,
    with the code that made it in `user_agent` (`calling_code()`): whoever reads the trail can find which job wrote
    the row."""
    context = current_context()
    principal = current_principal()
    if principal is None:
        return AuditContext(
            context.ip_address,
            context.user_agent or calling_code(),
            SYSTEM.actor,
            current_trace_id(),
            context.purpose,
            None,
        )
    return AuditContext(
        context.ip_address,
        context.user_agent,
        principal.actor,
        current_trace_id(),
        context.purpose,
        principal.user_id if principal.kind is PrincipalKind.agent else None,
    )


_MACHINERY = ("stratus_db.", "asyncio.", "contextlib", "functools", "concurrent.")
"""Modules whose frames are the library or the event loop, not the code that called the library. The library's own
command line and demo are callers (and name their principal anyway)."""
_CALLERS = ("stratus_db.cli", "stratus_db.demo")
CODE_PREFIX = "code: "
"""How `user_agent` starts when it names the calling code rather than a client."""


def calling_code() -> str:
    """`code: <module>:<line> in <function>` of the nearest frame outside the library (and the event loop): what
    called it. Work the library runs in a task of its own (a background compression) has no such frame: then the
    outermost library frame, the task's own code. About a microsecond: taken only for a call without a principal."""
    frame: FrameType | None = sys._getframe(1)
    last = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_MACHINERY) or module.startswith(_CALLERS):
            break
        if module.startswith("stratus_db."):
            last = frame
        frame = frame.f_back
    found = last if frame is None else frame
    module = found.f_globals.get("__name__", "?")
    return f"{CODE_PREFIX}{module}:{found.f_lineno} in {found.f_code.co_qualname}"[:500]


class AuditEntry(NamedTuple):
    """One audit row to write: the change (action, table, record, its subject, the old and new values, when) and the
    request context it was made in (`audit_context()`, taken in the caller's operation). Built in pure code by a
    domain's write plan; written by the Core path (`row()`) or inside a batch statement (`batch_input()`).

    A NamedTuple, as the plans are: one is built per write, and a frozen dataclass costs four times as much to make.
    """

    action: AuditAction
    table_name: str
    record_id: uuid.UUID | None
    user_id: uuid.UUID | None
    timestamp: datetime
    old_values: Any
    new_values: Any
    context: AuditContext
    audit_id: uuid.UUID

    def row(self) -> dict[str, Any]:
        """audit_log's columns, for an INSERT through Core."""
        return {
            "audit_id": self.audit_id,
            "timestamp": self.timestamp,
            "user_id": self.user_id,
            "action": self.action.value,
            "table_name": self.table_name,
            "record_id": self.record_id,
            "old_values": self.old_values,
            "new_values": self.new_values,
        } | self.context._asdict()

    def batch_input(self) -> dict[str, Any]:
        """`AUDIT_INPUT`'s columns: what a batch statement's row carries for its audit row (values as JSON text; an
        absent one is NULL, not JSON null)."""
        return {
            "audit_id": self.audit_id,
            "audited_at": self.timestamp,
            "old_values": None if self.old_values is None else json.dumps(self.old_values),
            "new_values": None if self.new_values is None else json.dumps(self.new_values),
        } | self.context._asdict()


AUDIT_INPUT = BatchColumns(
    (
        ("audit_id", "uuid"),
        ("audited_at", "timestamptz"),
        ("old_values", "text"),
        ("new_values", "text"),
        *CONTEXT_TYPES.items(),
    )
)
"""What each row of a batch statement carries for its audit row, beside the domain's own columns (`AuditEntry.
batch_input()`): the audit row's id (made by the plan, so that it is known before the statement), its time, its old
and new values as JSON text, and its context columns."""


def insert_audit_rows(
    *,
    source: str,
    action: AuditAction,
    table_name: str,
    user_id: str,
    record_id: str,
    new_values: str | None = None,
    input_of: str = "",
    parameters: BatchColumns | None = None,
) -> str:
    """`INSERT INTO audit_log … SELECT … FROM source`: the audit rows of a data-modifying statement, one per row of
    `source` (a FROM clause); `user_id` and `record_id` are SQL expressions over it.

    Everything else is what `AUDIT_INPUT` brought in: the columns of `source` (prefixed with `input_of`, e.g. "c."),
    or, for a statement that writes one row, its parameters in `parameters`' order. `new_values`, when given, is an
    SQL expression of the new values instead (e.g. to add what only the statement knows).
    """

    def given(name: str) -> str:
        return parameters.parameter(name) if parameters is not None else f"{input_of}{name}"

    new_values_sql = f"{given('new_values')}::jsonb" if new_values is None else new_values
    context_sql = ", ".join(given(name) for name in CONTEXT_COLUMNS)
    return (
        "INSERT INTO audit_log (audit_id, user_id, action, table_name, record_id, old_values, new_values, timestamp, "
        f"{', '.join(CONTEXT_COLUMNS)})\n"
        f"    SELECT {given('audit_id')}, {user_id}, '{action.value}', '{table_name}', {record_id},\n"
        f"           {given('old_values')}::jsonb, {new_values_sql}, {given('audited_at')}, {context_sql}\n"
        f"    FROM {source}"
    )
