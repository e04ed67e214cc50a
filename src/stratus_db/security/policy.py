"""Who may call which operation on whose data: the one place access is decided.

Every public call names its operation (`db.operation("memory.store")`) and, once its arguments are valid, asks
`Operation.authorize(subject)` with the user whose data it touches (None: no single user's, e.g. listing users). The
rule of the operation decides: the data's owner (the user themselves, or an agent bound to them) and the principal
kinds allowed on anyone's data. Repositories still apply ownership in SQL (every statement carries the owner's
filter), so a rule can only narrow what a call reaches, never widen it.

A principal kind not named by a rule is refused; an operation without a rule is refused too (a new method must be
given one: tests/test_database/test_access.py checks that every public method has one).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from stratus_db.security.principal import Principal, PrincipalKind

SYSTEM_ONLY = frozenset({PrincipalKind.system})
MANAGERS = frozenset({PrincipalKind.system, PrincipalKind.admin})
AUDITORS = frozenset({PrincipalKind.system, PrincipalKind.auditor})
OPERATORS = MANAGERS | AUDITORS


@dataclass(frozen=True)
class Rule:
    """Who may call an operation: its owner (when `owner`: the user, and an agent bound to them unless not
    `agents`) and any principal of `anyone`."""

    anyone: frozenset[PrincipalKind]
    owner: bool = False
    agents: bool = True


OWN_DATA = Rule(anyone=SYSTEM_ONLY, owner=True)
"""Memories and conversations: their user, an agent bound to them, trusted code. No admin, no auditor: content."""
OWN_PROFILE = Rule(anyone=MANAGERS, owner=True)
"""A user's profile: the user, their agent, and those who manage users."""
CONSENT_RECORD = Rule(
    anyone=frozenset({PrincipalKind.system, PrincipalKind.admin, PrincipalKind.auditor}), owner=True
)
"""Where a user stands on consent: the user, their agent, those who manage users (support answers "what did I agree
to?"), and auditors (proof of consent is accountability evidence, LGPD Art. 8 §2). Choices, not content."""

RULES: Mapping[str, Rule] = {
    "user.create": Rule(anyone=MANAGERS),
    "user.get": OWN_PROFILE,
    "user.get_by_email": OWN_PROFILE,
    "user.list": Rule(anyone=MANAGERS),
    "user.update": OWN_PROFILE,
    "user.change_role": Rule(anyone=MANAGERS),
    "user.update_preferences": OWN_PROFILE,
    # A user may close their own account, not an agent (an act of the person, undone only by an admin); reopening it
    # is for those who manage users, so that a deactivation by an admin cannot be undone by the user.
    "user.deactivate": Rule(anyone=MANAGERS, owner=True, agents=False),
    "user.reactivate": Rule(anyone=MANAGERS),
    # Who was active when: a cross-user report.
    "user.active_users": Rule(anyone=MANAGERS),
    "user.activity_counts": Rule(anyone=MANAGERS),
    "user.add_credential": OWN_PROFILE,
    "user.update_credential": OWN_PROFILE,
    "user.remove_credential": OWN_PROFILE,
    "user.credential_status": OWN_PROFILE,
    "user.expiring_credentials": Rule(anyone=MANAGERS),
    "memory.store": OWN_DATA,
    "memory.get": OWN_DATA,
    "memory.list": OWN_DATA,
    "memory.delete": OWN_DATA,
    "memory.search": OWN_DATA,
    "memory.purge_expired": Rule(anyone=MANAGERS),
    "conversation.create": OWN_DATA,
    "conversation.get": OWN_DATA,
    "conversation.list": OWN_DATA,
    "conversation.update": OWN_DATA,
    "conversation.archive": OWN_DATA,
    "conversation.delete": OWN_DATA,
    "conversation.restore": OWN_DATA,
    "conversation.purge": OWN_DATA,
    "conversation.add_message": OWN_DATA,
    "conversation.add_messages": OWN_DATA,
    "conversation.import_messages": OWN_DATA,
    "conversation.get_messages": OWN_DATA,
    "conversation.get_context": OWN_DATA,
    "conversation.search_messages": OWN_DATA,
    "conversation.compress_history": OWN_DATA,
    # Counts and sizes, no content: a user's own, or anyone's for those who manage users.
    "conversation.usage_stats": OWN_PROFILE,
    "conversation.conversation_stats": OWN_PROFILE,
    "audit.query": Rule(anyone=AUDITORS, owner=True),
    # The tamper evidence of the whole trail: sealing is an operator's job; verifying and the checkpoints, an
    # auditor's (neither reads a value of the trail).
    "audit.seal": Rule(anyone=MANAGERS),
    "audit.purge": Rule(anyone=MANAGERS),
    "audit.verify": Rule(anyone=AUDITORS),
    "audit.checkpoints": Rule(anyone=AUDITORS),
    # Counts over everyone's trail: an auditor's (the DPO's) or trusted code's.
    "audit.report": Rule(anyone=AUDITORS),
    # A key may stand for a principal of any kind, `system` included: only trusted code (the operator's command
    # line) makes one, or an administrator could make themselves more than an administrator. Revoking takes power
    # away: administrators may.
    # Figures about every user, none about one (docs/metrics.md): for those who run the service and those who check it.
    "analytics.report": Rule(anyone=OPERATORS),
    "analytics.current": Rule(anyone=OPERATORS),
    "analytics.rollup": Rule(anyone=MANAGERS),
    "api_key.create": Rule(anyone=SYSTEM_ONLY),
    "api_key.revoke": Rule(anyone=MANAGERS),
    "api_key.list": Rule(anyone=MANAGERS),
    # Everything about a person, content included, in one document: the person, and trusted code acting on their
    # request; not an agent (it acts in conversations, not on the person's rights), not an admin or auditor.
    "privacy.export": Rule(anyone=SYSTEM_ONLY, owner=True, agents=False),
    # The person's own request, or those who handle requests and manage users; never an agent.
    "privacy.erase": Rule(anyone=MANAGERS, owner=True, agents=False),
    # Consent is the person's own act (LGPD Art. 8): only they, or trusted code relaying it, may grant it; not their
    # agent (the assistant would unlock purposes for itself), and an admin may not manufacture it. Revoking only narrows processing, so support (admin) may record a revocation asked for
    # by telephone or e-mail.
    "consent.grant": Rule(anyone=SYSTEM_ONLY, owner=True, agents=False),
    "consent.revoke": OWN_PROFILE,
    "consent.has": CONSENT_RECORD,
    "consent.list": CONSENT_RECORD,
    "consent.history": CONSENT_RECORD,
    # Deletes across users by the configured rules, reading no content: those who manage users and trusted code
    # (the scheduled `stratus-db apply-retention`). Each erasure it makes is checked as privacy.erase too.
    "privacy.apply_retention": Rule(anyone=MANAGERS),
    # Rewrapping every data key under the active key (`stratus-db rotate-keys`): an operator's job.
    "keys.rotate": Rule(anyone=MANAGERS),
}
"""Every public operation's rule. Internal operations (a batch of other callers' writes, the access-count flush, the
`last_active` write of users/activity.py) have none: they carry out calls that were authorized when they were made."""


def refusal(principal: Principal, operation: str, subject: uuid.UUID | None) -> str | None:
    """Why `principal` may not run `operation` on the data of `subject` (None: of no single user); None if it may."""
    rule = RULES.get(operation)
    if rule is None:
        return f"{operation} has no access rule"
    if principal.kind in rule.anyone:
        return None
    # The reason names the kind of principal, not who: it is kept in the audit trail (whose actor column names them)
    # and in exports of the other person's data, where one person's identity must not reach another.
    who = f"a {principal.kind.value} principal"
    owner = rule.owner and (rule.agents or principal.kind is not PrincipalKind.agent)
    if owner and subject is not None and principal.user_id == subject:
        return None
    if owner and subject is not None:
        return f"{who} may not {operation} for another user"
    return f"{who} may not {operation}"
