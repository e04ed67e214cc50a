"""The principal: who performs an operation. Audit rows and logs record it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from stratus_db.kit.validation import SafeStr


class PrincipalKind(StrEnum):
    system = "system"
    """Trusted in-process code (the spec's example, the CLI, scheduled jobs)."""
    user = "user"
    """An end user acting on their own data."""
    service = "service"
    """Another service calling over HTTP with its own credentials."""


class Principal(BaseModel):
    """Who is acting. `id` is what the audit trail records as the actor."""

    model_config = ConfigDict(frozen=True)

    kind: PrincipalKind
    id: Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)]

    @classmethod
    def system(cls, name: str = "system") -> Principal:
        return cls(kind=PrincipalKind.system, id=name)

    @property
    def actor(self) -> str:
        """`kind:id`, the form stored in `audit_log.actor`."""
        return f"{self.kind.value}:{self.id}"


SYSTEM = Principal.system()
"""The default principal when no context is set."""
