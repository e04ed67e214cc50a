"""Return types: frozen values, never live rows; and the keyset page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from stratus_db.errors import ValidationError
from stratus_db.kit.validation import in_utc, parse_int, storable_text

T = TypeVar("T")

MAX_PAGE_SIZE = 500
"""Largest `limit` any list accepts."""
MAX_CURSOR_CHARS = 4096
"""Longer than any cursor issued here: the longest holds a 200-character memory key, every character escaped."""


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class Page(FrozenModel, Generic[T]):
    """One page of a keyset-paginated list. Pass `next_cursor` back as `cursor` for the next; None means the end."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(*values: Any) -> str:
    """An opaque cursor holding the sort key of the last item of a page."""
    raw = json.dumps([str(value) for value in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object, parsers: tuple[Callable[[str], Any], ...]) -> tuple[Any, ...]:
    """The sort key inside `cursor`, each part read by its parser; a cursor not issued here is a ValidationError."""
    try:
        if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("not a cursor")
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if (
            not isinstance(values, list)
            or len(values) != len(parsers)
            or not all(isinstance(value, str) for value in values)
        ):
            raise ValueError("not a cursor")
        return tuple(parse(storable_text(value)) for parse, value in zip(parsers, values, strict=True))
    # RecursionError: json.loads recurses once per level of nested brackets, which fit in far fewer characters than
    # the length bound allows.
    except (ValueError, TypeError, UnicodeError, binascii.Error, RecursionError):
        raise ValidationError(
            "cursor is not one this API issued: pass back the next_cursor of a previous page"
        ) from None


def aware_datetime(raw: str) -> datetime:
    """Parse an ISO timestamp that carries its time zone (cursor parts are always written that way), in UTC."""
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        raise ValueError(raw)
    return in_utc(value)


def check_limit(limit: object, maximum: int = MAX_PAGE_SIZE, name: str = "limit") -> int:
    return parse_int(limit, name, minimum=1, maximum=maximum)


def make_page(items: list[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """Turn `limit + 1` fetched items into a page: the extra item only says that another page exists."""
    if len(items) > limit:
        items = items[:limit]
        return Page[T](items=items, next_cursor=cursor_of(items[-1]))
    return Page[T](items=items, next_cursor=None)
