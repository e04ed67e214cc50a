"""The credentials catalogue (stratus_db.users.credentials): pure functions, no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus_db.errors import StratusError, ValidationError
from stratus_db.users.credentials import (
    AMBIGUOUS_CODES,
    CREDENTIALS,
    MEDICAL_VALIDITY_RULES,
    CredentialKind,
    age_on,
    canonical_code,
    credential,
    credential_kind,
    medical_class,
    medical_validity,
    valid_codes,
    validate_canac,
    validity_months,
)

EXPECTED = {
    "PPR": CredentialKind.licence,
    "PPH": CredentialKind.licence,
    "PCM": CredentialKind.licence,
    "PCH": CredentialKind.licence,
    "PLA": CredentialKind.licence,
    "PLH": CredentialKind.licence,
    "MNTE": CredentialKind.rating,
    "MLTE": CredentialKind.rating,
    "MNAF": CredentialKind.rating,
    "MLAF": CredentialKind.rating,
    "IFRA": CredentialKind.rating,
    "IFRH": CredentialKind.rating,
    "INVA": CredentialKind.rating,
    "INVH": CredentialKind.rating,
    "CMS": CredentialKind.licence,
    "DOV": CredentialKind.licence,
    "MMA": CredentialKind.licence,
    "CEL": CredentialKind.rating,
    "GMP": CredentialKind.rating,
    "AVI": CredentialKind.rating,
    "CMA1": CredentialKind.medical,
    "CMA2": CredentialKind.medical,
    "CMA4": CredentialKind.medical,
    "CMA5": CredentialKind.medical,
}


# --- The catalogue ---------------------------------------------------------------------------------------------


def test_the_catalogue_holds_exactly_the_expected_codes() -> None:
    assert set(valid_codes()) == set(EXPECTED)
    assert len(valid_codes()) == len(EXPECTED)


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_every_code_resolves_to_itself_with_its_kind(code: str) -> None:
    assert canonical_code(code) == code
    assert credential_kind(code) is EXPECTED[code]
    entry = credential(code)
    assert entry.code == code
    assert entry.regulation in {"RBAC 61", "RBAC 63", "RBAC 65", "RBAC 67"}
    assert entry.section
    assert entry.name_pt
    assert entry.meaning


@pytest.mark.parametrize(("alias", "code"), [(a, e.code) for e in CREDENTIALS for a in e.aliases])
def test_every_alias_resolves(alias: str, code: str) -> None:
    assert canonical_code(alias) == code
    assert canonical_code(alias.lower()) == code
    assert credential_kind(alias) is EXPECTED[code]


def test_the_documented_aliases() -> None:
    assert canonical_code("PP") == "PPR"
    assert canonical_code("PC") == "PCM"
    assert canonical_code("CMA-1") == "CMA1"


def test_regulations_by_family() -> None:
    assert {credential(c).regulation for c in ("PPR", "MNTE", "IFRA", "INVH")} == {"RBAC 61"}
    assert credential("CMS").regulation == "RBAC 63"
    assert {credential(c).regulation for c in ("DOV", "MMA", "CEL", "GMP", "AVI")} == {"RBAC 65"}
    assert {credential(c).regulation for c in ("CMA1", "CMA2", "CMA4", "CMA5")} == {"RBAC 67"}


@pytest.mark.parametrize("spelling", ["ppr", " PPR ", "\tpPr\n", "p p r", "Mnte", "cma 1", " cma-2 "])
def test_case_and_whitespace_are_ignored(spelling: str) -> None:
    assert canonical_code(spelling) in EXPECTED


@pytest.mark.parametrize("unknown", ["XYZ", "PPRR", "PLAX", "CMA3", "A320", "IFRX", "P"])
def test_unknown_codes_are_rejected_with_the_list(unknown: str) -> None:
    with pytest.raises(ValidationError) as caught:
        canonical_code(unknown)
    message = caught.value.message
    assert message.startswith("code ")
    assert repr(unknown) in message
    for code in EXPECTED:
        assert code in message
    assert "PP→PPR" in message
    assert "TIPO:" in message
    assert isinstance(caught.value, StratusError)
    assert caught.value.status_code == 422
    with pytest.raises(ValidationError):
        credential_kind(unknown)


@pytest.mark.parametrize("ambiguous", sorted(AMBIGUOUS_CODES))
def test_ambiguous_codes_name_the_candidates(ambiguous: str) -> None:
    with pytest.raises(ValidationError, match="ambiguous") as caught:
        canonical_code(ambiguous.lower())
    for candidate in AMBIGUOUS_CODES[ambiguous]:
        assert candidate in caught.value.message


@pytest.mark.parametrize("bad", ["", "   ", None, 61, b"PPR", ["PPR"]])
def test_empty_or_non_text_codes_are_rejected(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"^code "):
        canonical_code(bad)  # type: ignore[arg-type]


def test_a_long_unknown_code_is_shortened_in_the_message() -> None:
    with pytest.raises(ValidationError) as caught:
        canonical_code("X" * 10_000)
    assert len(caught.value.message) < 2_000


# --- Type ratings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("TIPO:A320", "TIPO:A320"),
        ("tipo:a320", "TIPO:A320"),
        (" tipo : b738 ", "TIPO:B738"),
        ("TIPO A320", "TIPO:A320"),
        ("TIPO:EMB-120", "TIPO:EMB-120"),
        ("TIPO:R44", "TIPO:R44"),
        ("TIPO:AS50", "TIPO:AS50"),
    ],
)
def test_type_ratings(spelling: str, canonical: str) -> None:
    assert canonical_code(spelling) == canonical
    assert credential_kind(spelling) is CredentialKind.rating


@pytest.mark.parametrize(
    "bad",
    [
        "TIPO:",
        "TIPO",
        "TIPOA320",
        "TIPO:-A320",
        "TIPO:A320-",
        "TIPO:A--320",
        "TIPO:1234",
        "TIPO:A3 20",
        "TIPO:ABCDEFGHIJK",
    ],
)
def test_malformed_type_ratings_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError, match="type rating"):
        canonical_code(bad)


def test_a_type_rating_has_no_catalogue_entry() -> None:
    with pytest.raises(ValidationError, match="type rating"):
        credential("TIPO:A320")


# --- Medical class ---------------------------------------------------------------------------------------------


def test_medical_class_from_int_or_code() -> None:
    assert [medical_class(c) for c in (1, 2, 4, 5)] == [1, 2, 4, 5]
    assert medical_class("cma1") == 1
    assert medical_class(" CMA-2 ") == 2
    assert medical_class("CMA 5") == 5


@pytest.mark.parametrize("bad", [0, 3, 6, -1, True, "PPR", "CMA3", "", 1.0, None])
def test_medical_class_rejects_anything_else(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"^cma_class"):
        medical_class(bad)  # type: ignore[arg-type]


# --- Age -------------------------------------------------------------------------------------------------------


def test_age_on_birthdays_and_leap_days() -> None:
    born = date(1980, 6, 15)
    assert age_on(born, date(2020, 6, 14)) == 39
    assert age_on(born, date(2020, 6, 15)) == 40
    leap = date(2000, 2, 29)
    assert age_on(leap, date(2040, 2, 28)) == 39
    assert age_on(leap, date(2040, 2, 29)) == 40
    assert age_on(leap, date(2041, 2, 28)) == 40
    assert age_on(leap, date(2039, 2, 28)) == 38
    assert age_on(leap, date(2039, 3, 1)) == 39
    with pytest.raises(ValidationError, match="before birth_date"):
        age_on(born, date(1980, 6, 14))


# --- Medical validity ------------------------------------------------------------------------------------------


def _born_years_before(exam: date, years: int, *, days_after_birthday: int = 0) -> date:
    """A birth date such that on ``exam`` the holder is ``years`` old, ``days_after_birthday`` past the birthday."""
    birthday = exam - timedelta(days=days_after_birthday)
    return birthday.replace(year=birthday.year - years)


EXAM = date(2025, 3, 10)


@pytest.mark.parametrize(
    ("cma_class", "age", "single_pilot", "months"),
    [
        (1, 18, False, 12),
        (1, 39, False, 12),
        (1, 39, True, 12),
        (1, 40, False, 12),
        (1, 40, True, 6),
        (1, 59, False, 12),
        (1, 59, True, 6),
        (1, 60, False, 6),
        (1, 60, True, 6),
        (1, 75, False, 6),
        (2, 18, False, 60),
        (2, 39, False, 60),
        (2, 40, False, 24),
        (2, 49, False, 24),
        (2, 50, False, 12),
        (2, 59, False, 12),
        (2, 60, False, 12),
    ],
)
def test_validity_bands(cma_class: int, age: int, single_pilot: bool, months: int) -> None:
    # Examined on the birthday itself: the new age counts.
    born = _born_years_before(EXAM, age)
    assert age_on(born, EXAM) == age
    expiry = medical_validity(cma_class, born, EXAM, single_pilot_commercial_passenger=single_pilot)
    year, month = divmod(EXAM.month - 1 + months, 12)
    assert expiry == date(EXAM.year + year, month + 1, EXAM.day)
    assert validity_months(cma_class, age, single_pilot_commercial_passenger=single_pilot) == months


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ((3, 30), "no class 3"),
        ((4, 30), "no age-based validity rule"),
        ((1, -1), "age must be an integer"),
        ((1, True), "age must be an integer"),
        ((1, "40"), "age must be an integer"),
    ],
)
def test_validity_months_refuses_what_medical_validity_refuses(
    arguments: tuple[object, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        validity_months(*arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cma_class", "age", "months_before", "months_on"), [(2, 40, 60, 24), (2, 50, 24, 12), (1, 60, 12, 6)]
)
def test_the_day_before_the_birthday_keeps_the_longer_validity(
    cma_class: int, age: int, months_before: int, months_on: int
) -> None:
    born = _born_years_before(EXAM, age)
    day_before = EXAM - timedelta(days=1)
    expiry_before = medical_validity(cma_class, born, day_before)
    expiry_on = medical_validity(cma_class, born, EXAM)
    assert expiry_before == date(
        day_before.year + months_before // 12, day_before.month + months_before % 12, day_before.day
    )
    year, month = divmod(EXAM.month - 1 + months_on, 12)
    assert expiry_on == date(EXAM.year + year, month + 1, EXAM.day)


def test_single_pilot_rule_at_the_40th_birthday() -> None:
    born = date(1985, 3, 10)
    assert medical_validity(1, born, date(2025, 3, 9), single_pilot_commercial_passenger=True) == date(
        2026, 3, 9
    )
    assert medical_validity(1, born, date(2025, 3, 10), single_pilot_commercial_passenger=True) == date(
        2025, 9, 10
    )


def test_codes_work_as_the_class() -> None:
    born = date(1990, 1, 1)
    assert medical_validity("CMA1", born, EXAM) == medical_validity(1, born, EXAM)
    assert medical_validity("cma-2", born, EXAM) == medical_validity(2, born, EXAM)


@pytest.mark.parametrize(
    ("born", "exam", "expected"),
    [
        (date(1990, 1, 1), date(2025, 1, 31), date(2026, 1, 31)),  # 12 months: same day
        (date(1950, 1, 1), date(2024, 8, 31), date(2025, 2, 28)),  # 6 months (age 60+) into a common February
        (date(1950, 1, 1), date(2023, 8, 31), date(2024, 2, 29)),  # ... into a leap February
        (date(1950, 1, 1), date(2025, 3, 31), date(2025, 9, 30)),  # into a 30-day month
        (date(1950, 1, 1), date(2024, 2, 29), date(2024, 8, 29)),  # from a leap day, 6 months
        (date(1950, 1, 1), date(2025, 1, 31), date(2025, 7, 31)),
    ],
)
def test_month_ends(born: date, exam: date, expected: date) -> None:
    assert medical_validity(1, born, exam) == expected


def test_leap_day_plus_whole_years() -> None:
    born_young = date(2000, 1, 1)
    assert medical_validity(1, born_young, date(2024, 2, 29)) == date(2025, 2, 28)
    assert medical_validity(2, born_young, date(2024, 2, 29)) == date(2029, 2, 28)
    assert medical_validity(2, date(1980, 1, 1), date(2024, 2, 29)) == date(2026, 2, 28)  # age 44: 24 months
    assert medical_validity(2, date(1970, 1, 1), date(2024, 2, 29)) == date(2025, 2, 28)  # age 54: 12 months


def test_one_month_past_31_january() -> None:
    # No catalogued rule is one month long, so the month arithmetic is checked directly: it clamps to the month's end.
    from stratus_db.users.credentials import _add_months

    assert _add_months(date(2025, 1, 31), 1) == date(2025, 2, 28)
    assert _add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    assert _add_months(date(2025, 1, 31), 13) == date(2026, 2, 28)
    assert _add_months(date(2025, 12, 31), 2) == date(2026, 2, 28)
    assert _add_months(date(2025, 11, 30), 1) == date(2025, 12, 30)


def test_holder_born_on_29_february_examined_in_a_common_year() -> None:
    born = date(1964, 2, 29)
    # 28 February 2025: still 60 (61 only from 1 March); 2nd class, 12 months either way.
    assert medical_validity(2, born, date(2025, 2, 28)) == date(2026, 2, 28)
    born_40 = date(1984, 2, 29)
    assert medical_validity(2, born_40, date(2023, 2, 28)) == date(2028, 2, 28)  # still 38 → 60 months
    assert medical_validity(2, born_40, date(2024, 2, 28)) == date(2029, 2, 28)  # 39 → 60 months
    assert medical_validity(2, born_40, date(2024, 2, 29)) == date(2026, 2, 28)  # 40 → 24 months
    assert medical_validity(2, date(1985, 2, 28), date(2025, 2, 28)) == date(
        2027, 2, 28
    )  # 40 on the day → 24


@pytest.mark.parametrize("cma_class", [4, 5, "CMA4", "CMA5"])
def test_classes_without_a_catalogued_rule_are_refused(cma_class: int | str) -> None:
    with pytest.raises(ValidationError, match="no age-based validity rule"):
        medical_validity(cma_class, date(1990, 1, 1), EXAM)


def test_single_pilot_flag_is_refused_outside_class_1() -> None:
    with pytest.raises(ValidationError, match="only to CMA class 1"):
        medical_validity(2, date(1990, 1, 1), EXAM, single_pilot_commercial_passenger=True)


@pytest.mark.parametrize(
    ("birth", "exam", "fragment"),
    [
        (datetime(1990, 1, 1, tzinfo=UTC), EXAM, "^birth_date"),
        (date(1990, 1, 1), datetime(2025, 1, 1, tzinfo=UTC), "^examined_on"),
        ("1990-01-01", EXAM, "^birth_date"),
        (date(1990, 1, 1), None, "^examined_on"),
        (date(2026, 1, 1), EXAM, "before birth_date"),
        (date(1990, 1, 1), date(9999, 9, 1), "past year 9999"),
    ],
)
def test_bad_dates_are_rejected(birth: object, exam: object, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        medical_validity(1, birth, exam)  # type: ignore[arg-type]


def test_single_pilot_flag_must_be_a_bool() -> None:
    with pytest.raises(ValidationError, match="single_pilot_commercial_passenger must be True or False"):
        medical_validity(1, date(1990, 1, 1), EXAM, single_pilot_commercial_passenger=1)  # type: ignore[arg-type]


def test_rules_data_is_consistent() -> None:
    for cma_class in {rule.cma_class for rule in MEDICAL_VALIDITY_RULES}:
        unconditional = [
            r for r in MEDICAL_VALIDITY_RULES if r.cma_class == cma_class and r.condition is None
        ]
        for age in range(0, 130):  # every age is covered by an unconditional band
            assert any(r.min_age <= age and (r.max_age is None or age < r.max_age) for r in unconditional)
    assert all(rule.section.startswith("RBAC 67.15") for rule in MEDICAL_VALIDITY_RULES)


_LONGEST = {1: 12, 2: 60}


@given(
    cma_class=st.sampled_from([1, 2]),
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2010, 12, 31)),
    offset_days=st.integers(min_value=16 * 365, max_value=100 * 365),
    single_pilot=st.booleans(),
)
def test_expiry_is_after_the_exam_and_within_the_longest_validity(
    cma_class: int, birth: date, offset_days: int, single_pilot: bool
) -> None:
    exam = birth + timedelta(days=offset_days)
    flag = single_pilot and cma_class == 1
    expiry = medical_validity(cma_class, birth, exam, single_pilot_commercial_passenger=flag)
    assert expiry > exam
    longest = _LONGEST[cma_class]
    assert expiry <= exam + timedelta(days=31 * longest)
    assert expiry >= exam + timedelta(days=28 * 6)  # no rule is shorter than 6 months
    # Never longer for an older holder, nor with the single-pilot condition.
    older = medical_validity(cma_class, birth - timedelta(days=3650), exam)
    assert older <= medical_validity(cma_class, birth, exam)
    if cma_class == 1:
        assert medical_validity(1, birth, exam, single_pilot_commercial_passenger=True) <= medical_validity(
            1, birth, exam
        )


@given(st.text(max_size=12))
def test_canonical_code_either_resolves_or_raises_validation_error(text: str) -> None:
    error: ValidationError | None = None
    try:
        code = canonical_code(text)
    except ValidationError as exc:
        error = exc
    if error is not None:
        assert error.message.startswith("code")
    else:
        assert code in EXPECTED or code.startswith("TIPO:")
        assert canonical_code(code) == code  # idempotent


# --- CANAC -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("123456", "123456"), (" 012345 ", "012345"), ("000000", "000000")]
)
def test_canac_accepts_six_digits(value: str, expected: str) -> None:
    assert validate_canac(value) == expected


@pytest.mark.parametrize(
    "bad",
    ["12345", "1234567", "12345a", "12 3456", "", "١٢٣٤٥٦", "+12345", "-12345", 123456, None, b"123456"],
)
def test_canac_rejects_anything_else(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"^canac") as caught:
        validate_canac(bad)  # type: ignore[arg-type]
    assert "6 digits" in caught.value.message
