"""The pieces the routers' request models share: their JSON Schema says what the library accepts, from the library's
own types and limits, so that the OpenAPI document promises no more than the server takes. What JSON Schema cannot
say (the licence catalogue, a birth date not after today, an expiry not before the issue, a cursor this API issued)
is left to the library, which answers 422 as well."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import Field, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from typing_extensions import TypeAliasType

from stratus_db.kit.schemas import MAX_CURSOR_CHARS, MAX_PAGE_SIZE

STORABLE = r"^[^\x00]*$"
"""Text both databases store: no NUL (kit/validation.py storable_text)."""
NOT_BLANK = r"^\s*[^\s\x00][^\x00]*$"
"""Storable text with something in it besides blanks: the library refuses a name, a title, a reason of blanks.
(Written so that a backtracking engine, a client's, checks a long text in linear time.)"""


def pattern(regex: str) -> Any:
    """A pattern for the JSON Schema of a library type whose validators already hold to it (a Field(pattern=...)
    beside them would not reach the schema)."""
    return Field(json_schema_extra={"pattern": regex})


StorableKeys = Field(json_schema_extra={"propertyNames": {"pattern": STORABLE}})
StoredJson = TypeAliasType(
    "StoredJson",
    "bool | int | float | Annotated[str, pattern(STORABLE)] | list[StoredJson]"
    " | Annotated[dict[str, StoredJson], StorableKeys] | None",
)
"""A JSON value the library stores (kit/validation.py SafeJson): storable text at every depth. Its depth and size
limits are left to the library."""
StoredJsonObject = Annotated[dict[str, StoredJson], StorableKeys]


class DescribedAs:
    """Annotated metadata: the JSON Schema of `shape` for a value the library's own type validates (the library's
    JSON types check in code what only a recursive schema says)."""

    def __init__(self, shape: Any) -> None:
        self._shape = TypeAdapter(shape).core_schema

    def __get_pydantic_json_schema__(
        self, _schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(self._shape)


def _null_not_offered(schema: dict[str, Any]) -> None:
    schema.update(next(branch for branch in schema.pop("anyOf") if branch != {"type": "null"}))


NotNull = Field(json_schema_extra=_null_not_offered)
"""On an optional field of a body of changes whose null the library refuses (a user keeps a name) or reads as left
out: the schema does not offer null, which still reaches the library as before."""


def changes_schema(schema: dict[str, Any]) -> None:
    """The JSON Schema of a body of changes: at least one field (the library refuses a change of nothing), and no
    `default`: a field left out keeps its value rather than taking one."""
    schema["minProperties"] = 1
    for field in schema["properties"].values():
        field.pop("default", None)


def integral(value: object) -> object:
    """An integral float as the int it is: JSON Schema's `integer` takes 12.0 as well as 12 (JSON has one kind of
    number), the library's counts only a Python int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR_CHARS)]
