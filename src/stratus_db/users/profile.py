"""A user's profile beyond identity: the experience level (a documented set, derived from licences when not given)
and the preferences document (known keys with a schema, free keys within the JSON limits, JSON merge-patch).

Pure functions, no I/O; docs/users.md ("Profiles") documents the set, the derivation and the schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import JsonValue

from stratus_db.errors import ValidationError
from stratus_db.kit.validation import shown
from stratus_db.users.credentials import canonical_code


class ExperienceLevel(StrEnum):
    """What kind of aviation professional the assistant is talking to: it sets the register of its answers."""

    student = "student"
    """In training, no licence yet (or a student pilot)."""
    private = "private"
    """Private pilot (PPR, PPH)."""
    commercial = "commercial"
    """Commercial pilot (PCM, PCH)."""
    airline = "airline"
    """Airline transport pilot (PLA, PLH)."""
    instructor = "instructor"
    """Flight instructor (INVA, INVH)."""
    maintenance = "maintenance"
    """Aircraft maintenance technician (MMA, CEL, GMP, AVI)."""
    dispatch = "dispatch"
    """Flight dispatcher (DOV)."""
    cabin = "cabin"
    """Flight attendant (CMS)."""
    other = "other"
    """Anyone else (air traffic, enthusiasts, staff): set explicitly, never derived."""


_DERIVATION: tuple[tuple[ExperienceLevel, frozenset[str]], ...] = (
    (ExperienceLevel.airline, frozenset({"PLA", "PLH"})),
    (ExperienceLevel.instructor, frozenset({"INVA", "INVH"})),
    (ExperienceLevel.commercial, frozenset({"PCM", "PCH"})),
    (ExperienceLevel.private, frozenset({"PPR", "PPH"})),
    (ExperienceLevel.dispatch, frozenset({"DOV"})),
    (ExperienceLevel.maintenance, frozenset({"MMA", "CEL", "GMP", "AVI"})),
    (ExperienceLevel.cabin, frozenset({"CMS"})),
)
"""Licence codes → level, highest first: the first level any of the user's codes reaches wins."""


def parse_experience_level(value: object, name: str = "experience_level") -> ExperienceLevel:
    """A member of ExperienceLevel or its value; anything else is a ValidationError listing the set."""
    if isinstance(value, str) and value in set(ExperienceLevel):
        return ExperienceLevel(value)
    accepted = ", ".join(level.value for level in ExperienceLevel)
    raise ValidationError(f"{name} must be one of {accepted}; got {shown(value)}")


def derive_experience_level(licenses: Iterable[str], *, student: bool = False) -> ExperienceLevel | None:
    """The level the licence codes say, highest first (airline > instructor > commercial > private > dispatch >
    maintenance > cabin); codes are read with `canonical_code` (so PP is PPR, PC is PCM), and a code it refuses
    (ambiguous or unknown, e.g. IFR) says nothing. No level found: `student` for a student, else None."""
    canonical: set[str] = set()
    for code in licenses:
        try:
            canonical.add(canonical_code(code))
        except ValidationError:
            continue
    for level, codes in _DERIVATION:
        if canonical & codes:
            return level
    return ExperienceLevel.student if student else None


# -- preferences -------------------------------------------------------------------------------------------------


class Units(StrEnum):
    """Units the assistant answers in."""

    aviation = "aviation"
    """ICAO practice in Brazil: knots, feet, nautical miles, hPa, °C."""
    metric = "metric"
    """km/h, metres, kilometres, hPa, °C."""
    imperial = "imperial"
    """mph, feet, statute miles, inHg, °F."""


ICAO_LOCATION_INDICATOR = re.compile(r"[A-Z]{4}")
"""An ICAO location indicator (Doc 7910): four letters. Brazilian aerodromes start with S (SBGR, SDCO, SNBR…)."""
LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(-[A-Z]{2}|-[A-Za-z0-9]{4,8})?")
"""A BCP 47 language tag, language and optional region or variant: "pt-BR", "en", "es-AR"."""
MAX_AIRCRAFT = 50
MAX_AIRCRAFT_CHARS = 50
MAX_NOTIFICATIONS = 50
PREFERENCE_KEYS = ("language", "units", "home_aerodrome", "aircraft", "notifications")
"""The keys with a schema; any other key is free JSON (within the JSON limits of kit/validation.py)."""


def _language(value: object) -> str:
    if isinstance(value, str) and LANGUAGE_TAG.fullmatch(value):
        return value
    raise ValueError(f"key 'language' must be a language tag such as 'pt-BR' or 'en', got {shown(value)}")


def _units(value: object) -> str:
    if isinstance(value, str) and value in set(Units):
        return value
    accepted = ", ".join(unit.value for unit in Units)
    raise ValueError(f"key 'units' must be one of {accepted}, got {shown(value)}")


def _home_aerodrome(value: object) -> str:
    if isinstance(value, str) and ICAO_LOCATION_INDICATOR.fullmatch(value.strip().upper()):
        return value.strip().upper()
    raise ValueError(
        f"key 'home_aerodrome' must be an ICAO location indicator of 4 letters (e.g. SBGR), got {shown(value)}"
    )


def _aircraft(value: object) -> list[str]:
    if (
        isinstance(value, list)
        and len(value) <= MAX_AIRCRAFT
        and all(isinstance(item, str) and 0 < len(item.strip()) <= MAX_AIRCRAFT_CHARS for item in value)
    ):
        return [item.strip() for item in value]
    raise ValueError(
        f"key 'aircraft' must be a list of at most {MAX_AIRCRAFT} non-empty texts of up to {MAX_AIRCRAFT_CHARS} "
        f"characters (e.g. ['C172', 'A320']), got {shown(value)}"
    )


def _notifications(value: object) -> dict[str, bool]:
    if (
        isinstance(value, dict)
        and len(value) <= MAX_NOTIFICATIONS
        and all(isinstance(item, bool) for item in value.values())
    ):
        return dict(value)
    raise ValueError(
        f"key 'notifications' must be an object of at most {MAX_NOTIFICATIONS} booleans "
        f"(e.g. {{'email': true}}), got {shown(value)}"
    )


_CHECKS = {
    "language": _language,
    "units": _units,
    "home_aerodrome": _home_aerodrome,
    "aircraft": _aircraft,
    "notifications": _notifications,
}


def check_preferences(document: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The preferences document with its known keys checked (and `home_aerodrome` upper-cased, `aircraft` entries
    stripped); a ValueError names the first key of the wrong type. JSON safety and size are checked by the
    `SafeJsonObject` type this runs after."""
    checked: dict[str, JsonValue] = dict(document)
    for key, check in _CHECKS.items():
        if key in document:
            checked[key] = check(document[key])  # type: ignore[assignment]
    return checked


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes a key, any other value replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def changed_keys(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The top-level keys whose value differs, as (old values, new values); a key absent on one side is None there.
    Values are compared as JSON text, so 1 and true (equal in Python) are different preferences."""
    keys = [
        key
        for key in dict.fromkeys([*before, *after])
        if key not in before or key not in after or _as_json(before[key]) != _as_json(after[key])
    ]
    return {key: before.get(key) for key in keys}, {key: after.get(key) for key in keys}


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
