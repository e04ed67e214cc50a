"""Input validation shared by every domain: Pydantic types plus one translation into our ValidationError."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    JsonValue,
    Strict,
    StrictStr,
    StringConstraints,
)
from pydantic import ValidationError as PydanticValidationError

from stratus_db.errors import ValidationError

MAX_JSON_BYTES = 256 * 1024
"""Largest JSON document accepted in one field (licences, preferences, memory values, metadata)."""
MAX_JSON_DEPTH = 32
INT32_MAX = 2**31 - 1
"""Largest value of an `integer` column (int4 on PostgreSQL): sequence numbers and per-message token counts."""

_InputModel = TypeVar("_InputModel", bound=BaseModel)
_Enum = TypeVar("_Enum", bound=StrEnum)


def storable_text(value: str) -> str:
    """Text both databases can store: no NUL (PostgreSQL refuses it) and valid Unicode (no lone surrogates)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\x00)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it contains a lone surrogate)") from None
    return value


def in_utc(value: datetime) -> datetime:
    """An aware datetime as both databases store it, in UTC; a ValueError when UTC takes it past years 1–9999
    (9999-12-31 23:00 at -12:00 is in the year 10000 in UTC, which Python's datetime, and so both drivers, cannot
    represent)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall within the years 1 to 9999 once converted to UTC") from None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only whitespace")
    return value


def _check_json(value: object, depth: int = 0) -> None:
    # Runs on the value as given, before Pydantic converts it (which would decode a bytes key into text silently);
    # what is not JSON at all is left to Pydantic to refuse.
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        storable_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or infinite numbers (JSON has none)")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"must have text (str) keys, got a {type(key).__name__} key")
            storable_text(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _json_as_given(value: object) -> object:
    _check_json(value)
    return value


def _bounded_json(value: JsonValue) -> JsonValue:
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_JSON_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_JSON_BYTES} are accepted")
    return value


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"must be text (str), got {type(value).__name__}")
    return value


# Text arguments are StrictStr: in its lax mode Pydantic decodes bytes as UTF-8, and text is the caller's to decode.
SafeStr = Annotated[StrictStr, AfterValidator(storable_text)]
"""Any text both databases can store, kept exactly as given."""
NonEmptyStr = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(storable_text)
]
TextContent = Annotated[StrictStr, AfterValidator(storable_text), AfterValidator(_not_blank)]
"""Text kept exactly as given (spaces included) that must say something."""
TextEnum = Annotated[_Enum, BeforeValidator(_text_only)]
"""A member of a StrEnum, or its value as text (a strict enum would refuse the text, a lax one decodes bytes)."""
SafeJson = Annotated[JsonValue, BeforeValidator(_json_as_given), AfterValidator(_bounded_json)]
"""A JSON document: text keys, storable text only, no NaN/Infinity, bounded depth and size."""
SafeJsonObject = Annotated[
    dict[str, JsonValue], BeforeValidator(_json_as_given), AfterValidator(_bounded_json)
]
Timestamp = Annotated[AwareDatetime, Strict(), AfterValidator(in_utc)]
"""A time-zone-aware datetime (not text, not a number of seconds), converted to UTC: an instant both databases store."""


class InputModel(BaseModel):
    """Base of the validated arguments of public functions: unknown fields are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
    fixed_fields: ClassVar[Mapping[str, str]] = {}
    """Fields of the stored record that no call may change, each with why: naming one is refused with the reason,
    not as an unknown argument."""


def _describe(error: Mapping[str, Any], fixed: Mapping[str, str]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "value"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        why = fixed.get(location)
        return f"{location}: unknown argument" if why is None else f"{location}: cannot be changed ({why})"
    return f"{location}: {message}"


def validate_input(model: type[_InputModel], data: Mapping[str, Any]) -> _InputModel:
    """Build `model` from `data`, or raise one ValidationError listing every problem."""
    try:
        return model.model_validate(dict(data))
    except PydanticValidationError as exc:
        fixed: Mapping[str, str] = getattr(model, "fixed_fields", {})
        problems = "; ".join(_describe(error, fixed) for error in exc.errors())
        accepted = ", ".join(model.model_fields)
        raise ValidationError(
            f"invalid {model.__name__}: {problems} (accepted arguments: {accepted})"
        ) from None


def shown(value: object) -> str:
    """A bounded repr for error messages: a 10 MB argument must not become a 10 MB message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_uuid(value: object, name: str) -> uuid.UUID:
    """Accept a UUID or its text form; anything else is a ValidationError naming the argument."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(f"{name} must be a UUID (e.g. 3f2b8c4e-...), got {shown(value)}")


def parse_int(value: object, name: str, *, minimum: int, maximum: int) -> int:
    """Accept an int (not a bool) from `minimum` to `maximum`; anything else is a ValidationError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationError(f"{name} must be an integer from {minimum} to {maximum}, got {shown(value)}")
    return value


def parse_enum(enum: type[_Enum], value: object, name: str) -> _Enum:
    """Accept a member or its value; anything else is a ValidationError listing the accepted values."""
    if isinstance(value, str) and value in set(enum):
        return enum(value)
    accepted = ", ".join(member.value for member in enum)
    raise ValidationError(f"{name} must be one of {accepted}; got {shown(value)}")


def check_callback(value: object, name: str) -> None:
    """Accept None or a callable (a function the caller passes to be called back); anything else is a
    ValidationError naming the argument."""
    if value is not None and not callable(value):
        raise ValidationError(f"{name} must be a function (or None), got {shown(value)}")
