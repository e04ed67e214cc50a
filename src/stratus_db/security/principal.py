"""The principal: who performs an operation. Access rules (security/policy.py), audit rows and logs use it."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from stratus_db.kit.validation import SafeStr


class PrincipalKind(StrEnum):
    system = "system"
    """Trusted in-process code (the spec's example, the CLI, scheduled jobs): may do everything."""
    user = "user"
    """An end user, on their own data only (`user_id`)."""
    agent = "agent"
    """An agent of the assistant acting for exactly one user (`user_id`), on that user's data only."""
    admin = "admin"
    """Manages users (create, update, roles, list) and runs maintenance; reads no memory or conversation content."""
    auditor = "auditor"
    """The data-protection officer: reads the audit trail; no memory or conversation content."""


_BOUND = frozenset({PrincipalKind.user, PrincipalKind.agent})


class Principal(BaseModel):
    """Who is acting. `id` is what the audit trail records as the actor (`kind:id`); `user_id` is whose data a user or
    an agent may touch (required for them, refused for the others)."""

    model_config = ConfigDict(frozen=True)

    kind: PrincipalKind
    id: Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)]
    user_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _bound_to_one_user(self) -> Principal:
        if self.kind in _BOUND and self.user_id is None:
            raise ValueError(f"a {self.kind.value} principal needs the user_id of the user it is or acts for")
        if self.kind not in _BOUND and self.user_id is not None:
            raise ValueError(f"a {self.kind.value} principal acts for no single user: drop user_id")
        if self.kind is PrincipalKind.user and self.id != str(self.user_id):
            # The audit trail names a user by their id (`user:<id>`): another name would escape erasure's
            # pseudonymisation, and could name someone else.
            raise ValueError("a user principal's id is its user_id (Principal.for_user(user_id) builds it)")
        return self

    @classmethod
    def system(cls, name: str = "system") -> Principal:
        return cls(kind=PrincipalKind.system, id=name)

    @classmethod
    def for_user(cls, user_id: uuid.UUID) -> Principal:
        """The user `user_id` acting for themselves."""
        return cls(kind=PrincipalKind.user, id=str(user_id), user_id=user_id)

    @classmethod
    def agent(cls, name: str, acting_for: uuid.UUID) -> Principal:
        """The agent `name` acting for the user `acting_for`."""
        return cls(kind=PrincipalKind.agent, id=name, user_id=acting_for)

    @property
    def actor(self) -> str:
        """`kind:id`, the form stored in `audit_log.actor`."""
        return f"{self.kind.value}:{self.id}"


SYSTEM = Principal.system()
"""The principal of a call whose context names none, when STRATUS_ANONYMOUS_CALLS=system (the default)."""
