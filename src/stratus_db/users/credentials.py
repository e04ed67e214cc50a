"""The ANAC credentials catalogue: licences, ratings and medical certificates, as data and pure functions.

Everything a regulator may change lives in the two tuples ``CREDENTIALS`` and ``MEDICAL_VALIDITY_RULES``; the
functions only read them. ``docs/users.md`` lists the catalogue, cites the regulation for every entry and says what
was verified against which source and what was not.

No database, no I/O: every function is pure and raises only :class:`stratus_db.errors.ValidationError`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from stratus_db.errors import ValidationError

__all__ = [
    "AMBIGUOUS_CODES",
    "CREDENTIALS",
    "MEDICAL_VALIDITY_RULES",
    "TYPE_RATING_PREFIX",
    "Credential",
    "CredentialKind",
    "MedicalCondition",
    "MedicalValidityRule",
    "age_on",
    "canonical_code",
    "credential",
    "credential_kind",
    "licence_codes",
    "medical_class",
    "medical_validity",
    "valid_codes",
    "validate_canac",
    "validity_months",
]


class CredentialKind(StrEnum):
    """What a credential is: a licence, a rating endorsed on a licence, or a medical certificate (CMA)."""

    licence = "licence"
    rating = "rating"
    medical = "medical"


@dataclass(frozen=True, slots=True)
class Credential:
    """One entry of the catalogue."""

    code: str
    """The canonical code, upper case (``PPR``, ``MNTE``, ``CMA1``)."""
    aliases: tuple[str, ...]
    """Other spellings accepted for it (upper case, no spaces); each resolves to ``code``."""
    kind: CredentialKind
    name_pt: str
    """The Portuguese name the regulation uses."""
    meaning: str
    """What it is, in English."""
    regulation: str
    """``RBAC 61``, ``RBAC 63``, ``RBAC 65`` or ``RBAC 67``."""
    section: str
    """The section that establishes it, e.g. ``61.5``; see docs/users.md for what was verified."""


_L = CredentialKind.licence
_R = CredentialKind.rating
_M = CredentialKind.medical

CREDENTIALS: tuple[Credential, ...] = (
    # RBAC 61: pilot licences.
    Credential(
        "PPR", ("PP", "PPA"), _L, "Piloto privado – avião", "Private pilot, aeroplane", "RBAC 61", "61.5"
    ),
    Credential("PPH", (), _L, "Piloto privado – helicóptero", "Private pilot, helicopter", "RBAC 61", "61.5"),
    Credential(
        "PCM", ("PC", "PCA"), _L, "Piloto comercial – avião", "Commercial pilot, aeroplane", "RBAC 61", "61.5"
    ),
    Credential(
        "PCH", (), _L, "Piloto comercial – helicóptero", "Commercial pilot, helicopter", "RBAC 61", "61.5"
    ),
    Credential(
        "PLA",
        (),
        _L,
        "Piloto de linha aérea – avião",
        "Airline transport pilot, aeroplane",
        "RBAC 61",
        "61.5",
    ),
    Credential(
        "PLH",
        (),
        _L,
        "Piloto de linha aérea – helicóptero",
        "Airline transport pilot, helicopter",
        "RBAC 61",
        "61.5",
    ),
    # RBAC 61: class ratings (aeroplanes).
    Credential(
        "MNTE",
        (),
        _R,
        "Avião monomotor terrestre",
        "Class rating: single-engine land aeroplane",
        "RBAC 61",
        "61.5",
    ),
    Credential(
        "MLTE",
        (),
        _R,
        "Avião multimotor terrestre",
        "Class rating: multi-engine land aeroplane",
        "RBAC 61",
        "61.5",
    ),
    Credential(
        "MNAF",
        (),
        _R,
        "Hidroavião ou anfíbio monomotor",
        "Class rating: single-engine seaplane or amphibian",
        "RBAC 61",
        "61.5",
    ),
    Credential(
        "MLAF",
        (),
        _R,
        "Hidroavião ou anfíbio multimotor",
        "Class rating: multi-engine seaplane or amphibian",
        "RBAC 61",
        "61.5",
    ),
    # RBAC 61: operation ratings.
    Credential(
        "IFRA",
        (),
        _R,
        "Voo por instrumentos – avião",
        "Instrument flight rating, aeroplane",
        "RBAC 61",
        "61.5",
    ),
    Credential(
        "IFRH",
        (),
        _R,
        "Voo por instrumentos – helicóptero",
        "Instrument flight rating, helicopter",
        "RBAC 61",
        "61.5",
    ),
    Credential(
        "INVA", (), _R, "Instrutor de voo – avião", "Flight instructor rating, aeroplane", "RBAC 61", "61.5"
    ),
    Credential(
        "INVH",
        (),
        _R,
        "Instrutor de voo – helicóptero",
        "Flight instructor rating, helicopter",
        "RBAC 61",
        "61.5",
    ),
    # RBAC 63: cabin crew.
    Credential("CMS", (), _L, "Comissário de voo", "Flight attendant", "RBAC 63", "63.5"),
    # RBAC 65: dispatcher and maintenance technician, with the technician's three qualifications.
    Credential(
        "DOV",
        (),
        _L,
        "Despachante operacional de voo",
        "Flight operations officer (dispatcher)",
        "RBAC 65",
        "Subpart C",
    ),
    Credential(
        "MMA",
        (),
        _L,
        "Mecânico de manutenção aeronáutica",
        "Aircraft maintenance technician",
        "RBAC 65",
        "Subpart D",
    ),
    Credential(
        "CEL", (), _R, "Célula", "Maintenance technician qualification: airframe", "RBAC 65", "Subpart D"
    ),
    Credential(
        "GMP",
        (),
        _R,
        "Grupo motopropulsor",
        "Maintenance technician qualification: powerplant",
        "RBAC 65",
        "Subpart D",
    ),
    Credential(
        "AVI", (), _R, "Aviônicos", "Maintenance technician qualification: avionics", "RBAC 65", "Subpart D"
    ),
    # RBAC 67: medical certificates (Certificado Médico Aeronáutico).
    Credential(
        "CMA1", ("CMA-1",), _M, "CMA de 1ª classe", "Medical certificate, 1st class", "RBAC 67", "67.13"
    ),
    Credential(
        "CMA2", ("CMA-2",), _M, "CMA de 2ª classe", "Medical certificate, 2nd class", "RBAC 67", "67.13"
    ),
    Credential(
        "CMA4", ("CMA-4",), _M, "CMA de 4ª classe", "Medical certificate, 4th class", "RBAC 67", "67.13"
    ),
    Credential(
        "CMA5", ("CMA-5",), _M, "CMA de 5ª classe", "Medical certificate, 5th class", "RBAC 67", "67.13"
    ),
)
"""The catalogue. Type ratings are not listed: they are the pattern ``TIPO:<designator>`` (see canonical_code)."""

AMBIGUOUS_CODES: dict[str, tuple[str, ...]] = {
    "IFR": ("IFRA", "IFRH"),
    "INV": ("INVA", "INVH"),
    "PL": ("PLA", "PLH"),
    "CMA": ("CMA1", "CMA2", "CMA4", "CMA5"),
}
"""Spellings that name more than one credential: rejected with the candidates instead of guessed."""

TYPE_RATING_PREFIX = "TIPO:"
"""Type ratings are written ``TIPO:<designator>``, e.g. ``TIPO:A320``; the designator is free."""

_TYPE_RATING = re.compile(r"TIPO\s*[:\s]\s*([A-Z0-9][A-Z0-9-]{0,9})")
_DESIGNATOR = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*")
CANAC = re.compile(r"[0-9]{6}")
_MAX_SHOWN = 200


def _build_index() -> dict[str, Credential]:
    index: dict[str, Credential] = {}
    for entry in CREDENTIALS:
        for spelling in (entry.code, *entry.aliases):
            if spelling in index or spelling in AMBIGUOUS_CODES:
                raise RuntimeError(f"credential code {spelling!r} is listed twice")  # a broken catalogue
            index[spelling] = entry
    return index


_INDEX = _build_index()


def valid_codes() -> tuple[str, ...]:
    """Every canonical code of the catalogue, in catalogue order (type ratings are a pattern, not listed)."""
    return tuple(entry.code for entry in CREDENTIALS)


def _accepted() -> str:
    codes = ", ".join(valid_codes())
    aliases = ", ".join(f"{alias}→{entry.code}" for entry in CREDENTIALS for alias in entry.aliases)
    return f"accepted: {codes}; aliases {aliases}; or a type rating {TYPE_RATING_PREFIX}<designator> (e.g. TIPO:A320)"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"


def _normalise(code: object, argument: str) -> str:
    if not isinstance(code, str):
        raise ValidationError(f"{argument} must be text, got {type(code).__name__}; {_accepted()}")
    text = code.strip().upper()
    if not text:
        raise ValidationError(f"{argument} must not be empty; {_accepted()}")
    return text


def _resolve(code: object, argument: str) -> tuple[str, Credential | None]:
    """The canonical code, and its catalogue entry (None for a type rating)."""
    text = _normalise(code, argument)
    typed = _TYPE_RATING.fullmatch(text)
    if typed is not None:
        designator = typed.group(1)
        if _DESIGNATOR.fullmatch(designator) is None or not any(ch.isalpha() for ch in designator):
            raise ValidationError(
                f"{argument}: type rating designator {designator!r} must be 1 to 10 letters, digits or inner "
                "hyphens with at least one letter (e.g. TIPO:A320, TIPO:EMB-120)"
            )
        return TYPE_RATING_PREFIX + designator, None
    compact = re.sub(r"\s+", "", text)
    entry = _INDEX.get(compact)
    if entry is not None:
        return entry.code, entry
    candidates = AMBIGUOUS_CODES.get(compact)
    if candidates is not None:
        raise ValidationError(
            f"{argument} {_shown(code)} is ambiguous: it may mean {' or '.join(candidates)}; name one of them"
        )
    if compact.startswith("TIPO"):
        raise ValidationError(
            f"{argument} {_shown(code)} is not a type rating: write {TYPE_RATING_PREFIX}<designator>, "
            "with a designator of 1 to 10 letters, digits or inner hyphens (e.g. TIPO:A320)"
        )
    raise ValidationError(f"{argument} {_shown(code)} is not an ANAC credential code; {_accepted()}")


def canonical_code(code: str) -> str:
    """The canonical code for ``code``.

    Case and surrounding or inner whitespace are ignored; aliases resolve (``pp`` → ``PPR``); a type rating is
    ``TIPO:<designator>`` (``tipo: a320`` and ``TIPO A320`` → ``TIPO:A320``). An unknown, empty, ambiguous (``IFR``)
    or non-text code raises ValidationError naming the argument and listing the valid codes.
    """
    return _resolve(code, "code")[0]


def credential(code: str) -> Credential:
    """The catalogue entry for ``code`` (aliases resolved); a type rating has no entry and raises ValidationError."""
    canonical, entry = _resolve(code, "code")
    if entry is None:
        raise ValidationError(
            f"code {canonical!r} is a type rating: it has no catalogue entry (credential_kind gives its kind)"
        )
    return entry


def credential_kind(code: str) -> CredentialKind:
    """Whether ``code`` is a licence, a rating (type ratings included) or a medical certificate."""
    entry = _resolve(code, "code")[1]
    return CredentialKind.rating if entry is None else entry.kind


# --- Medical certificates: validity from the holder's age ------------------------------------------------------


class MedicalCondition(StrEnum):
    """An operating condition that shortens a CMA's validity."""

    single_pilot_commercial_passenger = "single_pilot_commercial_passenger"
    """Commercial air transport of passengers by a single pilot."""


@dataclass(frozen=True, slots=True)
class MedicalValidityRule:
    """How long a CMA of one class is valid for a holder whose age on the exam date falls in ``[min_age, max_age)``."""

    cma_class: int
    min_age: int
    max_age: int | None
    """Exclusive upper bound; None = no upper bound."""
    months: int
    condition: MedicalCondition | None
    """The rule applies only under this condition; None = always."""
    section: str


MEDICAL_VALIDITY_RULES: tuple[MedicalValidityRule, ...] = (
    MedicalValidityRule(1, 0, None, 12, None, "RBAC 67.15(a)"),
    MedicalValidityRule(1, 60, None, 6, None, "RBAC 67.15(a)"),
    MedicalValidityRule(1, 40, None, 6, MedicalCondition.single_pilot_commercial_passenger, "RBAC 67.15(a)"),
    MedicalValidityRule(2, 0, 40, 60, None, "RBAC 67.15(a)"),
    MedicalValidityRule(2, 40, 50, 24, None, "RBAC 67.15(a)"),
    MedicalValidityRule(2, 50, None, 12, None, "RBAC 67.15(a)"),
)
"""Where several rules match, the shortest validity wins. Classes 4 and 5 have no rule here (see docs/users.md)."""

_MEDICAL_CLASSES = {"CMA1": 1, "CMA2": 2, "CMA4": 4, "CMA5": 5}


def medical_class(cma_class: int | str) -> int:
    """The CMA class as an int (1, 2, 4 or 5), from an int or a medical code (``CMA1``, ``cma-2``)."""
    accepted = "accepted: 1, 2, 4 or 5, or CMA1, CMA2, CMA4, CMA5 (aliases CMA-1, CMA-2, CMA-4, CMA-5)"
    if isinstance(cma_class, bool):
        raise ValidationError(f"cma_class must be a CMA class, got a bool; {accepted}")
    if isinstance(cma_class, int):
        if cma_class in _MEDICAL_CLASSES.values():
            return cma_class
        raise ValidationError(
            f"cma_class {cma_class} is not a CMA class (RBAC 67.13 has no class 3); {accepted}"
        )
    if isinstance(cma_class, str):
        text = re.sub(r"\s+", "", cma_class.strip().upper())
        entry = _INDEX.get(text)
        if entry is not None and entry.kind is CredentialKind.medical:
            return _MEDICAL_CLASSES[entry.code]
        raise ValidationError(f"cma_class {_shown(cma_class)} is not a medical certificate code; {accepted}")
    raise ValidationError(f"cma_class must be an int or text, got {type(cma_class).__name__}; {accepted}")


def _plain_date(value: object, argument: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValidationError(
            f"{argument} must be a datetime.date (not a datetime), got {type(value).__name__}"
        )
    return value


def age_on(birth_date: date, day: date) -> int:
    """Completed years of age on ``day``. Someone born on 29 February turns a year older on 1 March in common years."""
    born = _plain_date(birth_date, "birth_date")
    on = _plain_date(day, "day")
    if on < born:
        raise ValidationError(f"day {on.isoformat()} is before birth_date {born.isoformat()}")
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def _add_months(start: date, months: int) -> date:
    """``start`` plus ``months`` calendar months, on the same day of the month, or the month's last day if shorter."""
    year, month_index = divmod(start.month - 1 + months, 12)
    year += start.year
    if year > date.max.year:
        raise ValidationError(
            f"examined_on {start.isoformat()} plus {months} months is past year {date.max.year}"
        )
    last_day = calendar.monthrange(year, month_index + 1)[1]
    return date(year, month_index + 1, min(start.day, last_day))


def _validity_months(cma_class: int, age: int, single_pilot_commercial_passenger: bool) -> int:
    rules = [rule for rule in MEDICAL_VALIDITY_RULES if rule.cma_class == cma_class]
    if not rules:
        with_rules = sorted({rule.cma_class for rule in MEDICAL_VALIDITY_RULES})
        raise ValidationError(
            f"cma_class {cma_class}: no age-based validity rule is catalogued for this class (its validity was not "
            f"verified against RBAC 67.15); classes with rules: {', '.join(map(str, with_rules))}"
        )
    if single_pilot_commercial_passenger and not any(
        rule.condition is MedicalCondition.single_pilot_commercial_passenger for rule in rules
    ):
        raise ValidationError(
            f"single_pilot_commercial_passenger applies only to CMA class 1 (RBAC 67.15(a)), not class {cma_class}"
        )
    matching = [
        rule.months
        for rule in rules
        if rule.min_age <= age
        and (rule.max_age is None or age < rule.max_age)
        and (
            rule.condition is None
            or (
                rule.condition is MedicalCondition.single_pilot_commercial_passenger
                and single_pilot_commercial_passenger
            )
        )
    ]
    if not matching:  # the rules data leaves a gap in the age bands
        raise ValidationError(f"cma_class {cma_class}: no validity rule covers age {age}")
    return min(matching)


def validity_months(
    cma_class: int | str, age: int, *, single_pilot_commercial_passenger: bool = False
) -> int:
    """The months of validity ``MEDICAL_VALIDITY_RULES`` give a CMA of this class whose holder is ``age`` (completed
    years) on the exam date: what ``medical_validity`` adds to the exam date. Raises ValidationError as it does."""
    klass = medical_class(cma_class)
    if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 200:
        raise ValidationError(f"age must be an integer from 0 to 200, got {_shown(age)}")
    if not isinstance(single_pilot_commercial_passenger, bool):
        raise ValidationError(
            "single_pilot_commercial_passenger must be True or False, "
            f"got {type(single_pilot_commercial_passenger).__name__}"
        )
    return _validity_months(klass, age, single_pilot_commercial_passenger)


def medical_validity(
    cma_class: int | str,
    birth_date: date,
    examined_on: date,
    *,
    single_pilot_commercial_passenger: bool = False,
) -> date:
    """The date a CMA expires: the exam date plus the months ``MEDICAL_VALIDITY_RULES`` give for the holder's age.

    The age is the holder's completed years on ``examined_on``. The validity ends on the same day of the month as the
    exam, or on the last day of the month when that month is shorter (31 January + 1 month = 28 or 29 February).
    ``single_pilot_commercial_passenger`` (class 1 only) applies the 6-month rule from age 40. Classes 4 and 5 have
    no catalogued rule and raise ValidationError, as do a datetime instead of a date and an exam before birth.
    """
    klass = medical_class(cma_class)
    born = _plain_date(birth_date, "birth_date")
    exam = _plain_date(examined_on, "examined_on")
    if not isinstance(single_pilot_commercial_passenger, bool):
        raise ValidationError(
            "single_pilot_commercial_passenger must be True or False, "
            f"got {type(single_pilot_commercial_passenger).__name__}"
        )
    if exam < born:
        raise ValidationError(f"examined_on {exam.isoformat()} is before birth_date {born.isoformat()}")
    months = _validity_months(klass, age_on(born, exam), single_pilot_commercial_passenger)
    return _add_months(exam, months)


# --- CANAC ---------------------------------------------------------------------------------------------------------


def validate_canac(canac: str) -> str:
    """A CANAC (código ANAC, the person's ANAC code), stripped of surrounding whitespace: exactly 6 ASCII digits.

    The 6-digit format is a conservative pattern, not confirmed against an ANAC specification (docs/users.md). Only
    text is accepted, so leading zeros survive.
    """
    accepted = "accepted: exactly 6 digits as text, e.g. '123456'"
    if not isinstance(canac, str):
        raise ValidationError(f"canac must be text, got {type(canac).__name__}; {accepted}")
    text = canac.strip()
    if CANAC.fullmatch(text) is None:
        raise ValidationError(f"canac {_shown(canac)} is not a CANAC; {accepted}")
    return text


# --- The legacy ``licenses`` list --------------------------------------------------------------------------------

_AEROPLANE = frozenset({"PPR", "PCM", "PLA", "MNTE", "MLTE", "MNAF", "MLAF", "IFRA", "INVA"})
_HELICOPTER = frozenset({"PPH", "PCH", "PLH", "IFRH", "INVH"})
_BY_CATEGORY = {"IFR": ("IFRA", "IFRH"), "INV": ("INVA", "INVH"), "PL": ("PLA", "PLH")}
"""Ambiguous spellings that differ only by aircraft category: (aeroplane, helicopter)."""


def licence_codes(codes: list[str], argument: str = "licenses") -> list[str]:
    """The canonical codes of a ``licenses`` list (``create_user(licenses=["PP", "PC", "IFR"])``), duplicates dropped,
    in order.

    Each code is read as ``canonical_code`` reads it, with one addition for this list only: an ambiguous spelling that
    differs only by aircraft category (``IFR``, ``INV``, ``PL``) resolves to the aeroplane or helicopter credential when
    the list's other codes are all of that one category (``["PP", "PC", "IFR"]`` → ``PPR, PCM, IFRA``). Otherwise
    (``["IFR"]`` alone, a list holding both categories, ``CMA``) it is refused with the candidates, as everywhere.
    Raises ValidationError naming ``argument[index]``.
    """
    resolved: list[str | None] = []
    pending: dict[int, str] = {}
    for index, code in enumerate(codes):
        compact = re.sub(r"\s+", "", code.strip().upper()) if isinstance(code, str) else None
        if compact in _BY_CATEGORY:
            pending[index] = compact
            resolved.append(None)
        else:
            resolved.append(_resolve(code, f"{argument}[{index}]")[0])
    known = {code for code in resolved if code is not None}
    aeroplane, helicopter = bool(known & _AEROPLANE), bool(known & _HELICOPTER)
    for index, compact in pending.items():
        if aeroplane == helicopter:
            candidates = " or ".join(_BY_CATEGORY[compact])
            why = (
                "both aeroplane and helicopter credentials"
                if aeroplane
                else "no aeroplane or helicopter credential"
            )
            raise ValidationError(
                f"{argument}[{index}] {_shown(codes[index])} is ambiguous: it may mean {candidates}, and the list holds "
                f"{why} to tell which; name one of them"
            )
        resolved[index] = _BY_CATEGORY[compact][0 if aeroplane else 1]
    return list(dict.fromkeys(code for code in resolved if code is not None))
