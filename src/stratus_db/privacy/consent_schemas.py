"""The consent ledger's inputs and return types."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, StrictStr, StringConstraints

from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import InputModel, TextEnum, storable_text
from stratus_db.models.consent import ConsentAction, ConsentPurpose

CHANNEL = re.compile(r"[a-z][a-z0-9_-]*")


def _channel_name(value: str) -> str:
    name = value.lower()
    if not CHANNEL.fullmatch(name):
        raise ValueError(
            "must be a short name of lower-case letters, digits, '_' and '-', starting with a letter "
            "(e.g. app, web, api, support)"
        )
    return name


TextVersion = Annotated[
    StrictStr,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(storable_text),
]
"""The version of the consent text shown ("2026-12", "v3", "termos-2026-12-01"): 1–50 characters, trimmed."""
Channel = Annotated[
    StrictStr,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(storable_text),
    AfterValidator(_channel_name),
]
"""Where the user expressed it: a short name such as app, web, api, support, whatsapp (1–50 characters: lower-case
letters, digits, `_` and `-`, starting with a letter; trimmed and lower-cased). A name rather than a fixed list: a
host adds a channel without a migration, and the pattern keeps `Web ` and `web` one channel."""


class ConsentGrant(InputModel):
    user_id: uuid.UUID
    purpose: TextEnum[ConsentPurpose]
    text_version: TextVersion
    channel: Channel


class ConsentRevocation(InputModel):
    user_id: uuid.UUID
    purpose: TextEnum[ConsentPurpose]
    channel: Channel
    text_version: TextVersion | None = None


class ConsentEvent(FrozenModel):
    """One event of the ledger: a grant or a revocation, as recorded (never changed afterwards)."""

    consent_id: uuid.UUID
    user_id: uuid.UUID
    purpose: ConsentPurpose
    action: ConsentAction
    text_version: str | None
    """The version of the consent text shown; always set on a grant, optional on a revocation."""
    channel: str
    occurred_at: datetime


class ConsentState(FrozenModel):
    """Where one purpose stands for a user: the latest event decides."""

    purpose: ConsentPurpose
    granted: bool
    """True when the latest event is a grant; False after a revocation, or when the user was never asked."""
    latest: ConsentEvent | None
    """That latest event; None when there is none."""
