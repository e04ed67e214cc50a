"""The request context: who acts, the trace id, the client's address and user agent, the purpose.

Set it with `async with db.context(...)`; every manager call reads it for its audit rows and logs. A call given its own
principal (`principal=`) runs in this context with that principal instead: `current_principal()` is the one place the
principal of the call under way is read.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr, StringConstraints

from stratus_db.kit.validation import SafeStr
from stratus_db.security.principal import Principal


def _valid_ip(value: str | None) -> str | None:
    if value is None:
        return None
    return str(ipaddress.ip_address(value))


_Text = Annotated[SafeStr, StringConstraints(min_length=1, max_length=500)]


class RequestContext(BaseModel):
    model_config = ConfigDict(frozen=True)

    principal: Principal | None = None
    """Who makes the calls in this context that are not given a `principal=` of their own. None: no principal was
    given (STRATUS_ANONYMOUS_CALLS decides what such a call may do)."""
    trace_id: (
        Annotated[StrictStr, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
        | None
    ) = None
    ip_address: Annotated[StrictStr | None, AfterValidator(_valid_ip)] = None
    user_agent: _Text | None = None
    purpose: Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)] | None = None


_current: ContextVar[RequestContext] = ContextVar("stratus_request_context", default=RequestContext())  # noqa: B039 - frozen, never mutated


def current_context() -> RequestContext:
    return _current.get()


def new_trace_id() -> str:
    return str(uuid.uuid4())


_call_principal: ContextVar[Principal | None] = ContextVar("stratus_call_principal", default=None)
"""The `principal=` argument of the call under way (None: it was given none), which wins over the context's.

A variable of its own rather than a copy of the context with another principal: setting it costs a call 0.2–0.4 µs, a
copy of the frozen context 4 µs (bench/principal_overhead.py)."""


def current_principal() -> Principal | None:
    """Who makes the call under way: its `principal=` argument, else the context's principal, else None (then
    STRATUS_ANONYMOUS_CALLS decides). Access checks and audit rows read it here, and only here."""
    given = _call_principal.get()
    return _current.get().principal if given is None else given


def use_principal(principal: Principal | None) -> Token[Principal | None]:
    """Make `principal` the call's principal (None: the context's again) until `reset_principal(token)`.

    Entered by one call's operation (database.py): its access check, its audit rows (taken inside it, even those a
    batch writes later) and the background work it starts (a history compression) all see this principal.
    """
    return _call_principal.set(principal)


def reset_principal(token: Token[Principal | None]) -> None:
    _call_principal.reset(token)


@contextmanager
def use_context(context: RequestContext, *, names_principal: bool = False) -> Iterator[RequestContext]:
    """Make `context` current for the enclosed code (and the tasks it starts). `names_principal`: the context was
    given a principal of its own, which wins, inside it, over the argument of a call under way."""
    token = _current.set(context)
    given = _call_principal.set(None) if names_principal else None
    try:
        yield context
    finally:
        if given is not None:
            _call_principal.reset(given)
        _current.reset(token)


class _OperationTrace:
    """The trace id of one operation, made only when something (an audit row, a log line) first needs it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: str | None = None


_operation_trace: ContextVar[_OperationTrace | None] = ContextVar("stratus_operation_trace", default=None)


def current_trace_id() -> str:
    """The caller's trace id; else the current operation's (made on first use); else a fresh one."""
    explicit = _current.get().trace_id
    if explicit is not None:
        return explicit
    holder = _operation_trace.get()
    if holder is None:
        return new_trace_id()
    if holder.value is None:
        holder.value = new_trace_id()
    return holder.value


def begin_operation_trace() -> Token[_OperationTrace | None]:
    """From now on, the logs and audit rows of one operation share a trace id when the caller set none.

    Pass the token to `end_operation_trace` when the operation ends (database.py's `Operation` does both).
    """
    return _operation_trace.set(_OperationTrace())


def end_operation_trace(token: Token[_OperationTrace | None]) -> None:
    _operation_trace.reset(token)
