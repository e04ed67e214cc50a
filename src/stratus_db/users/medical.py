"""A credential's expiry, recorded or computed: a medical certificate (CMA) without a recorded expiry gets one from
its issue date and the holder's birth date (credentials.medical_validity), which UserManager stores with the basis
`computed` so that expiring_credentials reads it from the same indexed column as recorded ones.

Pure functions, no I/O; docs/users.md ("Medical validity from the birth date") states the rules.
"""

from __future__ import annotations

from datetime import date

from stratus_db.errors import ValidationError
from stratus_db.models.credential import ExpiryBasis
from stratus_db.users.credentials import (
    MEDICAL_VALIDITY_RULES,
    CredentialKind,
    MedicalCondition,
    age_on,
    credential_kind,
    medical_class,
    medical_validity,
    validity_months,
)

RULED_CLASSES = frozenset(rule.cma_class for rule in MEDICAL_VALIDITY_RULES)
"""The CMA classes whose validity the catalogue knows (1 and 2): 4th and 5th class expiries are never computed."""


def check_issued_after_birth(
    code: str, issued_at: date | None, birth_date: date | None, argument: str
) -> None:
    """A credential is not issued before its holder is born: a ValidationError naming `argument` if it were."""
    if issued_at is not None and birth_date is not None and issued_at < birth_date:
        raise ValidationError(
            f"{argument}: credential {code} was issued on {issued_at.isoformat()}, before the holder's birth_date "
            f"{birth_date.isoformat()}"
        )


def computed_expiry(code: str, issued_at: date | None, birth_date: date | None) -> date | None:
    """The expiry of a medical certificate of a catalogued class (1, 2) from its issue date (taken as the exam date)
    and the holder's birth date; None when any of these is missing or the credential is not a medical one. The
    single-pilot commercial passenger condition is not known, so its shorter rule is never applied."""
    if credential_kind(code) is not CredentialKind.medical or issued_at is None or birth_date is None:
        return None
    cma_class = medical_class(code)
    if cma_class not in RULED_CLASSES:
        return None
    check_issued_after_birth(code, issued_at, birth_date, "issued_at")
    return medical_validity(cma_class, birth_date, issued_at)


def expiry(
    code: str, issued_at: date | None, recorded: date | None, birth_date: date | None
) -> dict[str, object]:
    """The `expires_at` and `expiry_basis` to store for credential `code`: the recorded expiry if there is one (never
    overwritten), else the computed one, else none."""
    if recorded is not None:
        return {"expires_at": recorded, "expiry_basis": ExpiryBasis.recorded}
    computed = computed_expiry(code, issued_at, birth_date)
    return {"expires_at": computed, "expiry_basis": None if computed is None else ExpiryBasis.computed}


def computed_reason(code: str, issued_at: date | None, birth_date: date | None) -> str:
    """How a computed expiry was computed, for credential_status: the rule, the class, the age and the months."""
    if birth_date is None or issued_at is None:  # a stored computed expiry has both; said plainly if not
        return "computed from the birth date under RBAC 67"
    cma_class = medical_class(code)
    age = age_on(birth_date, issued_at)
    months = validity_months(cma_class, age)
    sections = sorted({rule.section for rule in MEDICAL_VALIDITY_RULES if rule.cma_class == cma_class})
    reason = (
        f"computed from the birth date under {', '.join(sections)}: CMA class {cma_class}, holder aged {age} on "
        f"its issue date {issued_at.isoformat()}, {months} months"
    )
    shorter = [
        rule
        for rule in MEDICAL_VALIDITY_RULES
        if rule.cma_class == cma_class
        and rule.condition is MedicalCondition.single_pilot_commercial_passenger
        and rule.min_age <= age
        and (rule.max_age is None or age < rule.max_age)
        and rule.months < months
    ]
    if shorter:
        reason += (
            f" ({shorter[0].months} months in single-pilot commercial passenger operations, which are not recorded: "
            "record the expiry if they apply)"
        )
    return reason


def no_expiry_reason(code: str, issued_at: date | None, birth_date: date | None) -> str:
    """Why credential `code` has no expiry, for credential_status."""
    if credential_kind(code) is not CredentialKind.medical:
        return "no expiry date recorded"
    cma_class = medical_class(code)
    why = "a medical certificate's validity depends on the holder's age (RBAC 67.15)"
    if cma_class not in RULED_CLASSES:
        return f"no expiry date recorded; no validity rule is catalogued for CMA class {cma_class}, so none is computed"
    if birth_date is None:
        return f"no expiry date recorded; {why}, and no birth date is stored to compute it"
    if issued_at is None:
        return f"no expiry date recorded; {why}, and no issued_at is recorded to compute it from"
    # Stored before the catalogue had a rule for it: the next write of the credential or the birth date computes it.
    return f"no expiry date recorded or computed yet; {why}: a change of the credential or the birth date computes it"
