"""The request context: who acts, the trace id, the client's address and user agent, the purpose.

Set it with `async with db.context(...)`; every manager call reads it for its audit rows and logs.
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
    """None: no principal was given (STRATUS_ANONYMOUS_CALLS decides what such a call may do)."""
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


@contextmanager
def use_context(context: RequestContext) -> Iterator[RequestContext]:
    """Make `context` current for the enclosed code (and the tasks it starts)."""
    token = _current.set(context)
    try:
        yield context
    finally:
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
