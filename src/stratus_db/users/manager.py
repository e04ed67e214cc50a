"""UserManager: profiles of pilots, instructors, mechanics… with their licences and preferences."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import StringConstraints
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager, changed_fields
from stratus_db.audit.rows import AuditEntry
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.validation import (
    InputModel,
    NonEmptyStr,
    SafeJsonObject,
    Timestamp,
    parse_enum,
    parse_int,
    parse_uuid,
    shown,
    validate_input,
)
from stratus_db.models import ExpiryBasis, UserRole
from stratus_db.security.personal import PersonalData
from stratus_db.security.principal import Principal
from stratus_db.users.activity import (
    MAX_PERIODS,
    ActivityCount,
    Granularity,
    count_active,
    periods_between,
)
from stratus_db.users.credential_repository import CredentialRepository
from stratus_db.users.credentials import CredentialKind, canonical_code
from stratus_db.users.medical import (
    check_issued_after_birth,
    computed_reason,
    expiry,
    no_expiry_reason,
)
from stratus_db.users.profile import (
    ExperienceLevel,
    changed_keys,
    derive_experience_level,
    merge_patch,
    parse_experience_level,
)
from stratus_db.users.repository import UserRepository
from stratus_db.users.schemas import (
    CredentialAdd,
    CredentialRead,
    CredentialState,
    CredentialStatus,
    CredentialUpdate,
    EmailLookup,
    Preferences,
    UserCreate,
    UserRead,
    UserUpdate,
)

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

TABLE = "users"
CREDENTIALS_TABLE = "user_credentials"


class _PreferencesPatch(InputModel):
    patch: SafeJsonObject


class _CheckedPreferences(InputModel):
    preferences: Preferences


class _Instant(InputModel):
    value: Timestamp


class _ActivityWindow(InputModel):
    since: Timestamp
    until: Timestamp


MAX_REASON_CHARS = 500


class _Deactivation(InputModel):
    reason: Annotated[NonEmptyStr, StringConstraints(max_length=MAX_REASON_CHARS)]


class UserManager:
    """Create, read, update and list users. Every change writes its audit row in the same transaction.

    Every public method takes a keyword-only `principal`: who makes that call. Given, it is the call's principal,
    over the context's (`db.context(principal=...)`) if that names another: security/policy.py decides the call for
    it, and its audit rows record it as the actor. Omitted, the context's principal applies, and without one the
    STRATUS_ANONYMOUS_CALLS setting. A call refused raises PermissionDeniedError and writes only the refusal's audit
    row; a `principal` that is not a Principal raises ValidationError. docs/users.md, "Access control", has the rules.
    """

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)

    @property
    def _personal(self) -> PersonalData:
        # Looked up on use: the keys are loaded by the first call that needs them, not by building a manager.
        return PersonalData.of(self._db)

    async def create_user(
        self,
        name: str,
        email: str,
        role: UserRole | str,
        licenses: list[str] | None = None,
        experience_level: str | None = None,
        preferences: dict[str, Any] | None = None,
        *,
        birth_date: date | None = None,
        canac: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> UserRead:
        """Register a user.

        Args:
            name: display name (1–200 characters).
            email: unique, case-insensitively; stored lower-cased.
            role: one of UserRole (pilot, instructor, mechanic, student, dispatcher, flight_attendant,
                air_traffic_controller, other).
            licenses: ANAC credential codes, e.g. ["PP", "PC", "IFR"]: read by the catalogue (users/credentials.py
                licence_codes), stored canonical (["PPR", "PCM", "IFRA"]) without duplicates; each becomes a
                credential of the user's (add_credential gives it a number, dates and restrictions), recorded by
                the user's audit row.
            experience_level: one of ExperienceLevel (student, private, commercial, airline, instructor,
                maintenance, dispatch, cabin, other). Left out, it is derived from `licenses` (docs/users.md:
                airline > instructor > commercial > private > dispatch > maintenance > cabin; `student` for the
                student role; else None).
            preferences: a JSON object; the known keys (language, units, home_aerodrome, aircraft, notifications)
                must follow their schema (docs/users.md), other keys are free within the JSON limits.
            birth_date: a `datetime.date` (not a datetime) from 1900-01-01 to today (Brasília time); with it, the
                expiry of a medical certificate without a recorded one is computed (docs/users.md).
            canac: the person's ANAC code (CANAC): 6 digits as text, e.g. "123456"; unique among users.
            tx: a transaction from `db.transaction()` to join.
            principal: who makes this call, instead of the context's principal (see the class docstring).

        Returns:
            The stored user.

        Raises:
            ValidationError: a field is malformed; nothing is written.
            ConflictError: the e-mail, or the CANAC, is already registered (the message names which).
        """
        async with self._db.operation("user.create", principal=principal) as op:
            data = validate_input(
                UserCreate,
                {
                    "name": name,
                    "email": email,
                    "role": role,
                    "licenses": [] if licenses is None else licenses,
                    "experience_level": experience_level,
                    "preferences": {} if preferences is None else preferences,
                    "birth_date": birth_date,
                    "canac": canac,
                },
            )
            self._check_birth_date(data.birth_date)
            await op.authorize(None, tx=tx)
            if data.experience_level is None:
                derived = derive_experience_level(data.licenses, student=data.role is UserRole.student)
                data = data.model_copy(update={"experience_level": derived})
            now = self._db.clock()
            new_user = UserRead(
                **data.model_dump(),
                user_id=new_id(),
                created_at=now,
                updated_at=now,
                last_active=now,
                deactivated_at=None,
            )

            async def work(conn: AsyncConnection) -> UserRead:
                repository = UserRepository(conn, self._personal)
                user = await repository.insert(new_user)
                await self._audit.record(
                    conn,
                    action=AuditAction.create,
                    table_name=TABLE,
                    record_id=user.user_id,
                    user_id=user.user_id,
                    new_values=user.model_dump(mode="json"),
                    data_key=await repository.data_key(user.user_id),
                )
                await self._sync_credentials(conn, user.user_id, user.licenses)
                return user

            return await op.run(work, tx=tx)

    async def get_user(
        self,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> UserRead | None:
        """The user with this id, or None.

        Raises:
            ValidationError: `user_id` is not a UUID.
        """
        async with self._db.operation("user.get", read_only=True, principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> UserRead | None:
                return await UserRepository(conn, self._personal).get(key)

            return await op.run(work, tx=tx)

    async def get_user_by_email(
        self, email: str, *, tx: AsyncConnection | None = None, principal: Principal | None = None
    ) -> UserRead | None:
        """The user with this e-mail (any case), or None.

        Raises:
            ValidationError: `email` is not an e-mail address.
        """
        async with self._db.operation("user.get_by_email", read_only=True, principal=principal) as op:
            address = validate_input(EmailLookup, {"email": email}).email

            async def work(conn: AsyncConnection) -> UserRead | None:
                return await UserRepository(conn, self._personal).get_by_email(address)

            found = await op.run(work, tx=tx)
            # Whose profile it is shows only once read: a miss is nobody's, which only those who manage users may see.
            await op.authorize(None if found is None else found.user_id, tx=tx)
            return found

    async def update_user(
        self,
        user_id: uuid.UUID | str,
        /,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
        **changes: Any,
    ) -> UserRead:
        """Change some fields of a user: `update_user(uid, name=..., licenses=[...])`.

        Accepted fields: name, email, role, licenses, experience_level, preferences, birth_date, canac (the last
        three may be set to None to clear them); `user_id` (positional only) and the record's own fields
        (created_at, updated_at, last_active, deactivated_at) cannot be changed. A field left out keeps its value; the
        audit row keeps the old and new values of the fields that changed. New `licenses` make the user's
        credentials those codes: a credential already held keeps its details, a new code is added bare, a code left
        out is removed (the audit row's `licenses` records it). A new birth date recomputes the computed expiries of
        the user's medical certificates (none recorded by a caller is touched; without a birth date they are
        cleared), each audited on `user_credentials`.

        Raises:
            ValidationError: `user_id` is not a UUID, a field is unknown or malformed, no field is given, a birth
                date is in the future or before 1900, or after the issue of one of the user's credentials.
            NotFoundError: no such user.
            ConflictError: the new e-mail, or the new CANAC, belongs to another user (the message names which).
        """
        async with self._db.operation("user.update", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            data = validate_input(UserUpdate, changes)
            values = data.model_dump(exclude_unset=True)
            if not values:
                raise ValidationError(
                    f"update_user needs at least one field to change; accepted: {', '.join(UserUpdate.model_fields)}"
                )
            self._check_birth_date(data.birth_date)
            await op.authorize(key, tx=tx)
            if "role" in values:
                await op.authorize(key, operation="user.change_role", tx=tx)

            async def work(conn: AsyncConnection) -> UserRead:
                repository = UserRepository(conn, self._personal)
                previous = await repository.get(key, for_update=True)
                if previous is None:
                    raise NotFoundError(f"user {key} does not exist")
                old_values, new_values = changed_fields(previous, values)

                if not new_values:
                    return previous  # nothing changes, so nothing is written or audited
                # Checked before anything is written: the new birth date against every credential's issue date.
                expiries = (
                    await self._expiry_changes(conn, key, values["birth_date"])
                    if "birth_date" in new_values
                    else []
                )
                after = await repository.update(key, data, self._db.clock())
                if "licenses" in new_values:
                    await self._sync_credentials(conn, key, after.licenses)
                    # A credential the new licences dropped is gone; one they added is bare (no issue date).
                    expiries = [change for change in expiries if change[0].code in after.licenses]
                await self._apply_expiry_changes(conn, expiries)
                await self._audit.record(
                    conn,
                    action=AuditAction.update,
                    table_name=TABLE,
                    record_id=key,
                    user_id=key,
                    old_values=old_values,
                    new_values=new_values,
                    data_key=await repository.data_key(key),
                )
                return after

            return await op.run(work, tx=tx)

    async def list_users(
        self,
        *,
        role: UserRole | str | None = None,
        experience_level: ExperienceLevel | str | None = None,
        active_since: datetime | None = None,
        credential_code: str | None = None,
        include_deactivated: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[UserRead]:
        """Users in creation order, optionally of one role, of one experience level, active (`last_active`) at or
        after `active_since`, and holding credential `credential_code` (any spelling the catalogue reads: "pp" is
        PPR, "tipo a320" is TIPO:A320). Deactivated users are left out unless `include_deactivated`. A cross-user
        query: for administrators and reports.

        Raises:
            ValidationError: an unknown role, experience level or credential code (the message lists the valid
                codes), an `active_since` that is not a time-zone-aware datetime, `include_deactivated` not a bool,
                a limit outside 1–500, or a cursor not issued here.
        """
        async with self._db.operation("user.list", read_only=True, principal=principal) as op:
            role_filter = None if role is None else parse_enum(UserRole, role, "role")
            level = None if experience_level is None else parse_experience_level(experience_level)
            since = None if active_since is None else _instant(active_since, "active_since")
            code = None if credential_code is None else _credential_code(credential_code)
            _flag(include_deactivated, "include_deactivated")
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (uuid.UUID,))[0]
            await op.authorize(None, tx=tx)

            async def work(conn: AsyncConnection) -> Page[UserRead]:
                users = await UserRepository(conn, self._personal).page(
                    role=role_filter,
                    experience_level=level,
                    active_since=since,
                    credential_code=code,
                    include_deactivated=include_deactivated,
                    after=after,
                    limit=limit + 1,
                )
                return make_page(users, limit, lambda user: encode_cursor(user.user_id))

            return await op.run(work, tx=tx)

    async def update_preferences(
        self,
        user_id: uuid.UUID | str,
        patch: dict[str, Any],
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> UserRead:
        """Change the user's preferences with a JSON merge patch (RFC 7396): an object merges into the stored one
        key by key (recursively), `None` removes a key, any other value replaces it.
        `update_preferences(uid, {"units": "aviation", "notifications": {"email": False}, "theme": None})`.

        The result must follow the preferences schema (docs/users.md) and the JSON limits; the audit row keeps the
        old and new values of the top-level keys that changed (None: absent).

        Raises:
            ValidationError: `user_id` is not a UUID, `patch` is not a JSON object, a known key gets a value of the
                wrong type, or the result is over the JSON limits; the message names the key; nothing is written.
            NotFoundError: no such user.
        """
        async with self._db.operation("user.update_preferences", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            if not isinstance(patch, dict):
                raise ValidationError(f"patch must be a JSON object (a dict), got {type(patch).__name__}")
            checked = validate_input(_PreferencesPatch, {"patch": patch}).patch
            # What the patch sets, checked before anything is read: a known key of the wrong type fails here.
            validate_input(_CheckedPreferences, {"preferences": merge_patch({}, checked)})
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> UserRead:
                repository = UserRepository(conn, self._personal)
                previous = await repository.get(key, for_update=True)
                if previous is None:
                    raise NotFoundError(f"user {key} does not exist")
                merged = validate_input(
                    _CheckedPreferences, {"preferences": merge_patch(previous.preferences, checked)}
                ).preferences
                old_values, new_values = changed_keys(previous.preferences, merged)
                if not new_values:
                    return previous
                after = await repository.update(
                    key, UserUpdate.model_validate({"preferences": merged}), self._db.clock()
                )
                await self._audit.record(
                    conn,
                    action=AuditAction.update,
                    table_name=TABLE,
                    record_id=key,
                    user_id=key,
                    old_values={"preferences": old_values},
                    new_values={"preferences": new_values},
                )
                return after

            return await op.run(work, tx=tx)

    # --- Structured credentials (user_credentials; docs/users.md) -------------------------------------------------

    async def _sync_credentials(self, conn: AsyncConnection, user_id: uuid.UUID, licenses: list[str]) -> None:
        """Make the user's credentials the codes of `licenses` (canonical): keep those held, add the others bare,
        remove those left out. The caller's audit row on `users` records the change (its `licenses` field)."""
        repository = CredentialRepository(conn, self._personal)
        held = await repository.of_user(user_id)
        await repository.delete(
            user_id, [credential.credential_id for credential in held if credential.code not in licenses]
        )
        codes = {credential.code for credential in held}
        now = self._db.clock()
        for code in licenses:
            if code not in codes:
                await repository.insert(user_id, code, now)

    async def _audit_credential(
        self,
        conn: AsyncConnection,
        action: AuditAction,
        credential: CredentialRead,
        *,
        old: Any = None,
        new: Any = None,
    ) -> None:
        await self._audit.record(
            conn,
            action=action,
            table_name=CREDENTIALS_TABLE,
            record_id=credential.credential_id,
            user_id=credential.user_id,
            old_values=old.model_dump(mode="json") if isinstance(old, CredentialRead) else old,
            new_values=new.model_dump(mode="json") if isinstance(new, CredentialRead) else new,
            data_key=await self._personal.key_for_writing(conn, credential.user_id),
        )

    async def _locked_user(self, conn: AsyncConnection, user_id: uuid.UUID) -> UserRead:
        user = await UserRepository(conn, self._personal).get(user_id, for_update=True)
        if user is None:
            raise NotFoundError(f"user {user_id} does not exist")
        return user

    async def add_credential(
        self,
        user_id: uuid.UUID | str,
        code: str,
        *,
        number: str | None = None,
        issued_at: date | None = None,
        expires_at: date | None = None,
        restrictions: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> CredentialRead:
        """Record that the user holds credential `code` (any spelling the catalogue reads: "pp", "CMA-1",
        "TIPO:A320"), stored under its canonical code and kind. The code joins `licenses` on the user.

        Args:
            number: the licence or certificate number, up to 50 characters.
            issued_at, expires_at: `datetime.date`s (not datetimes); the expiry may not be before the issue, nor
                the issue before the holder's birth date. A given expiry is stored as `recorded`. Without one, a
                1st or 2nd class medical certificate with `issued_at` (taken as the exam date) whose holder's birth
                date is known gets the expiry credentials.medical_validity computes, stored as `computed`.
            restrictions: free text up to 1,000 characters (e.g. "VFR only", "must wear corrective lenses").
            principal: who makes this call, instead of the context's principal (see the class docstring).

        Raises:
            ValidationError: a malformed argument, an unknown or ambiguous code, or an issue before the holder's
                birth; nothing is written.
            NotFoundError: no such user.
            ConflictError: the user already holds that code (change it with update_credential).
        """
        async with self._db.operation("user.add_credential", principal=principal) as op:
            data = validate_input(
                CredentialAdd,
                {
                    "user_id": user_id,
                    "code": code,
                    "number": number,
                    "issued_at": issued_at,
                    "expires_at": expires_at,
                    "restrictions": restrictions,
                },
            )
            await op.authorize(data.user_id, tx=tx)

            async def work(conn: AsyncConnection) -> CredentialRead:
                user = await self._locked_user(conn, data.user_id)
                check_issued_after_birth(data.code, data.issued_at, user.birth_date, "issued_at")
                repository = CredentialRepository(conn, self._personal)
                details = data.model_dump(include={"number", "issued_at", "restrictions"})
                details |= expiry(data.code, data.issued_at, data.expires_at, user.birth_date)
                added = await repository.insert(data.user_id, data.code, self._db.clock(), **details)
                await self._audit_credential(conn, AuditAction.create, added, new=added)
                await repository.set_licenses(data.user_id, user.licenses)
                return added

            return await op.run(work, tx=tx)

    async def update_credential(
        self,
        user_id: uuid.UUID | str,
        credential_id: uuid.UUID | str,
        /,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
        **changes: Any,
    ) -> CredentialRead:
        """Change some details of one of the user's credentials: number, issued_at, expires_at, restrictions. A
        field left out keeps its value; None clears it. The code cannot change (remove it and add the other one).

        A given `expires_at` is stored as `recorded` and never recomputed. A computed expiry (a medical
        certificate's) follows a new `issued_at`; `expires_at=None` removes a recorded expiry, and the computed one
        takes its place where it can be computed (see add_credential).

        Raises:
            ValidationError: a malformed id or field, an unknown field, no field, an expiry before the issue (with
                the stored dates too), or an issue before the holder's birth; nothing is written.
            NotFoundError: the user holds no such credential.
        """
        async with self._db.operation("user.update_credential", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            credential_key = parse_uuid(credential_id, "credential_id")
            values = validate_input(CredentialUpdate, changes).model_dump(exclude_unset=True)
            if not values:
                raise ValidationError(
                    "update_credential needs at least one field to change; accepted: "
                    f"{', '.join(CredentialUpdate.model_fields)}"
                )
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> CredentialRead:
                user = await self._locked_user(conn, key)
                repository = CredentialRepository(conn, self._personal)
                previous = await repository.get(key, credential_key)
                if previous is None:
                    raise NotFoundError(f"user {key} holds no credential {credential_key}")
                issued = values.get("issued_at", previous.issued_at)
                # Only a recorded expiry is the caller's to keep: a computed one is recomputed below.
                kept = previous.expires_at if previous.expiry_basis is ExpiryBasis.recorded else None
                recorded = values.get("expires_at", kept)
                if issued is not None and recorded is not None and recorded < issued:
                    raise ValidationError(
                        f"expires_at {recorded.isoformat()} is before issued_at {issued.isoformat()} "
                        f"(credential {previous.code})"
                    )
                check_issued_after_birth(previous.code, issued, user.birth_date, "issued_at")
                values.update(expiry(previous.code, issued, recorded, user.birth_date))
                old_values, new_values = changed_fields(previous, values)
                if not new_values:
                    return previous
                after = await repository.update(key, credential_key, values, self._db.clock())
                await self._audit_credential(conn, AuditAction.update, after, old=old_values, new=new_values)
                return after

            return await op.run(work, tx=tx)

    async def active_users(
        self,
        since: datetime,
        *,
        include_deactivated: bool = False,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[UserRead]:
        """Users whose `last_active` is at or after `since`, in creation order (a stable order: `last_active` moves
        while one pages). `last_active` is written at most once a minute per user and process (docs/users.md), so
        it may lag the latest activity by that much. Deactivated users are left out unless `include_deactivated`.
        For administrators and reports.

        Raises:
            ValidationError: `since` is not a time-zone-aware datetime, `include_deactivated` not a bool, a limit
                outside 1–500, or a foreign cursor.
        """
        async with self._db.operation("user.active_users", read_only=True, principal=principal) as op:
            instant = _instant(since, "since")
            _flag(include_deactivated, "include_deactivated")
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (uuid.UUID,))[0]
            await op.authorize(None, tx=tx)

            async def work(conn: AsyncConnection) -> Page[UserRead]:
                users = await UserRepository(conn, self._personal).page(
                    active_since=instant,
                    include_deactivated=include_deactivated,
                    after=after,
                    limit=limit + 1,
                )
                return make_page(users, limit, lambda user: encode_cursor(user.user_id))

            return await op.run(work, tx=tx)

    async def activity_counts(
        self,
        since: datetime,
        until: datetime,
        *,
        granularity: Granularity = "day",
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[ActivityCount]:
        """Daily or monthly active users from `since` (inclusive) to `until` (exclusive): for each UTC day (or month)
        the periods of the range fall in, the number of distinct users who wrote at least one message in it.

        Counted in SQL from the messages' `created_at` (messages of type `user_input`), not from `last_active`,
        which keeps only each user's latest activity. Messages of purged conversations are gone and not counted.
        Every period of the range is listed, those without activity with 0. For administrators and reports.

        Raises:
            ValidationError: `since`/`until` are not time-zone-aware datetimes, `until` is not after `since`, the
                granularity is not "day" or "month", or the range has more than 3660 periods.
        """
        async with self._db.operation("user.activity_counts", read_only=True, principal=principal) as op:
            window = validate_input(_ActivityWindow, {"since": since, "until": until})
            if window.until <= window.since:
                raise ValidationError("until must be after since")
            if granularity not in ("day", "month"):
                raise ValidationError(f"granularity must be 'day' or 'month', got {granularity!r}")
            if (window.until - window.since).days + 1 > MAX_PERIODS * (1 if granularity == "day" else 31):
                raise ValidationError(
                    f"the range from since to until must hold at most {MAX_PERIODS} periods"
                )
            periods = periods_between(window.since, window.until, granularity)
            if len(periods) > MAX_PERIODS:
                raise ValidationError(
                    f"the range from since to until must hold at most {MAX_PERIODS} periods"
                )
            await op.authorize(None, tx=tx)

            async def work(conn: AsyncConnection) -> dict[Any, int]:
                return await count_active(conn, window.since, window.until, granularity)

            counts = await op.run(work, tx=tx)
            return [ActivityCount(period=period, active_users=counts.get(period, 0)) for period in periods]

    async def remove_credential(
        self,
        user_id: uuid.UUID | str,
        credential_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> CredentialRead:
        """Remove one of the user's credentials; its code leaves `licenses`. Returns what was removed.

        Raises:
            ValidationError: a malformed id.
            NotFoundError: the user holds no such credential.
        """
        async with self._db.operation("user.remove_credential", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            credential_key = parse_uuid(credential_id, "credential_id")
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> CredentialRead:
                user = await self._locked_user(conn, key)
                repository = CredentialRepository(conn, self._personal)
                previous = await repository.get(key, credential_key)
                if previous is None:
                    raise NotFoundError(f"user {key} holds no credential {credential_key}")
                await repository.delete(key, [credential_key])
                await self._audit_credential(conn, AuditAction.delete, previous, old=previous)
                await repository.set_licenses(key, user.licenses)
                return previous

            return await op.run(work, tx=tx)

    def _medical_reads(self, operation: str, credentials: Sequence[CredentialRead]) -> list[AuditEntry]:
        """The audit entries of a read of medical-certificate data (health data, LGPD Art. 11): one per holder, with
        the operation and the ids of the certificates read, never their contents."""
        by_holder: dict[uuid.UUID, list[str]] = {}
        for credential in credentials:
            if credential.kind is CredentialKind.medical:
                by_holder.setdefault(credential.user_id, []).append(str(credential.credential_id))
        return [
            self._audit.entry(
                action=AuditAction.read,
                table_name=CREDENTIALS_TABLE,
                record_id=None,
                user_id=holder,
                new_values={"operation": operation, "credential_ids": ids},
            )
            for holder, ids in by_holder.items()
        ]

    def _today(self) -> date:
        return self._db.clock().astimezone(BRASILIA).date()

    def _check_birth_date(self, birth_date: date | None) -> None:
        """A birth date is not in the future (today in Brasília time, as credential dates are read)."""
        today = self._today()
        if birth_date is not None and birth_date > today:
            raise ValidationError(
                f"birth_date {birth_date.isoformat()} is in the future (today is {today.isoformat()} in Brasília)"
            )

    async def _expiry_changes(
        self, conn: AsyncConnection, user_id: uuid.UUID, birth_date: date | None
    ) -> list[tuple[CredentialRead, dict[str, Any]]]:
        """The credentials whose expiry a new birth date changes, with their new `expires_at` and `expiry_basis`:
        computed ones recomputed (cleared without a birth date), medical ones without an expiry computed; recorded
        ones never. Raises ValidationError, naming birth_date, if a credential was issued before it."""
        changes = []
        for credential in await CredentialRepository(conn, self._personal).of_user(user_id):
            check_issued_after_birth(credential.code, credential.issued_at, birth_date, "birth_date")
            if credential.expiry_basis is ExpiryBasis.recorded:
                continue
            target = expiry(credential.code, credential.issued_at, None, birth_date)
            if (target["expires_at"], target["expiry_basis"]) != (
                credential.expires_at,
                credential.expiry_basis,
            ):
                changes.append((credential, target))
        return changes

    async def _apply_expiry_changes(
        self, conn: AsyncConnection, changes: list[tuple[CredentialRead, dict[str, Any]]]
    ) -> None:
        """Write what _expiry_changes found, each credential with its own audit row on user_credentials."""
        repository = CredentialRepository(conn, self._personal)
        now = self._db.clock()
        for credential, target in changes:
            after = await repository.update(credential.user_id, credential.credential_id, target, now)
            old_values, new_values = changed_fields(credential, target)
            await self._audit_credential(conn, AuditAction.update, after, old=old_values, new=new_values)

    async def deactivate_user(
        self,
        user_id: uuid.UUID | str,
        reason: str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> UserRead:
        """Deactivate a user: `deactivated_at` is set to now, and list_users and active_users leave the user out
        (unless asked to include them). Nothing else changes: the profile, credentials, memories and conversations
        stay, get_user still finds the user, and the library does not refuse the user's own calls (a service in
        front of it decides what a deactivated account may do). The user may deactivate themselves (not through an
        agent); admin and system anyone.

        Args:
            reason: why, 1–500 characters; kept in the audit row (action `update`, new values `deactivated_at` and
                `reason`).

        Returns:
            The user. An already deactivated user is returned unchanged, and nothing is written or audited (the
            first deactivation's time and reason stand).

        Raises:
            ValidationError: `user_id` is not a UUID or `reason` is not 1–500 characters of text.
            NotFoundError: no such user.
        """
        async with self._db.operation("user.deactivate", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            why = validate_input(_Deactivation, {"reason": reason}).reason
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> UserRead:
                previous = await self._locked_user(conn, key)
                if previous.deactivated_at is not None:
                    return previous
                now = self._db.clock()
                after = await UserRepository(conn, self._personal).set_deactivated(key, now, now)
                await self._audit.record(
                    conn,
                    action=AuditAction.update,
                    table_name=TABLE,
                    record_id=key,
                    user_id=key,
                    old_values={"deactivated_at": None},
                    new_values={
                        "deactivated_at": after.model_dump(mode="json")["deactivated_at"],
                        "reason": why,
                    },
                )
                return after

            return await op.run(work, tx=tx)

    async def reactivate_user(
        self,
        user_id: uuid.UUID | str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> UserRead:
        """Reactivate a deactivated user: `deactivated_at` is cleared, audited (action `update`). For admin and
        system only: a deactivation is undone by those who manage users. An active user is returned unchanged, and
        nothing is written or audited.

        Raises:
            ValidationError: `user_id` is not a UUID.
            NotFoundError: no such user.
        """
        async with self._db.operation("user.reactivate", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> UserRead:
                previous = await self._locked_user(conn, key)
                if previous.deactivated_at is None:
                    return previous
                after = await UserRepository(conn, self._personal).set_deactivated(
                    key, None, self._db.clock()
                )
                await self._audit.record(
                    conn,
                    action=AuditAction.update,
                    table_name=TABLE,
                    record_id=key,
                    user_id=key,
                    old_values={"deactivated_at": previous.model_dump(mode="json")["deactivated_at"]},
                    new_values={"deactivated_at": None},
                )
                return after

            return await op.run(work, tx=tx)

    async def credential_status(
        self,
        user_id: uuid.UUID | str,
        *,
        on: date | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[CredentialStatus]:
        """Each of the user's credentials and its state on `on` (default: today in Brasília time), with the reason:

        - `expired`: `on` is after `expires_at` (a credential is valid through its expiry date);
        - `expiring`: it expires within EXPIRING_WINDOW_DAYS (30) days of `on`, that day included;
        - `valid`: it expires later;
        - `no expiry`: no `expires_at` is recorded or computed (the reason says why none was computed for a
          medical certificate: no birth date, no issue date, or a class without a catalogued rule).

        A computed expiry (`expiry_basis` `computed`) says so in the reason: "computed from the birth date under
        RBAC 67.15(a): CMA class 1, holder aged 45 on its issue date …, 12 months".

        Ordered licences, ratings, medical certificates, each by code. Reading medical certificates (health data) is
        audited: one row, action `read`, with the certificates' ids, never their contents.

        Raises:
            ValidationError: `user_id` is not a UUID or `on` is not a `datetime.date`.
            NotFoundError: no such user.
        """
        async with self._db.operation("user.credential_status", principal=principal) as op:
            key = parse_uuid(user_id, "user_id")
            day = self._today() if on is None else _plain_date(on, "on")
            await op.authorize(key, tx=tx)

            async def work(conn: AsyncConnection) -> list[CredentialStatus]:
                user = await UserRepository(conn, self._personal).get(key)
                if user is None:
                    raise NotFoundError(f"user {key} does not exist")
                held = await CredentialRepository(conn, self._personal).of_user(key)
                await self._audit.append(conn, self._medical_reads("credential_status", held))
                return [status_on(credential, day, user.birth_date) for credential in held]

            statuses = await op.run(work, tx=tx)
            order = list(CredentialKind)
            return sorted(statuses, key=lambda s: (order.index(s.credential.kind), s.credential.code))

    async def expiring_credentials(
        self,
        within_days: int,
        *,
        limit: int = 50,
        cursor: str | None = None,
        on: date | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[CredentialRead]:
        """Every user's credentials that expire from `on` (default: today in Brasília time) to `within_days` days
        later, both included, soonest first (by expiry, then id). A cross-user query: for administrators and jobs.
        The medical certificates of a page are audited as read: one row per holder (action `read`, the ids).

        Raises:
            ValidationError: `within_days` outside 0–3650, a limit outside 1–500, `on` not a `datetime.date`, or a
                cursor not issued here.
        """
        async with self._db.operation("user.expiring_credentials", principal=principal) as op:
            days = parse_int(within_days, "within_days", minimum=0, maximum=MAX_WINDOW_DAYS)
            limit = check_limit(limit)
            first = self._today() if on is None else _plain_date(on, "on")
            after = None if cursor is None else decode_cursor(cursor, (date.fromisoformat, uuid.UUID))
            await op.authorize(None, tx=tx)
            try:
                last = first + timedelta(days=days)
            except OverflowError:
                last = date.max

            async def work(conn: AsyncConnection) -> Page[CredentialRead]:
                found = await CredentialRepository(conn, self._personal).expiring(
                    first, last, None if after is None else (after[0], after[1]), limit + 1
                )
                page = make_page(found, limit, lambda c: encode_cursor(c.expires_at, c.credential_id))
                await self._audit.append(conn, self._medical_reads("expiring_credentials", page.items))
                return page

            return await op.run(work, tx=tx)


def _instant(value: object, name: str) -> datetime:
    """A time-zone-aware datetime, in UTC; anything else is a ValidationError naming the argument."""
    try:
        return _Instant.model_validate({"value": value}).value
    except PydanticValidationError:
        raise ValidationError(
            f"{name} must be a time-zone-aware datetime (e.g. datetime.now(UTC)), got {type(value).__name__}"
        ) from None


EXPIRING_WINDOW_DAYS = 30
"""credential_status calls a credential `expiring` when it expires within this many days."""
MAX_WINDOW_DAYS = 3650
BRASILIA = timezone(timedelta(hours=-3), "BRT")
"""Brasília time: "today" for credentials (ANAC dates are Brazilian dates; Brazil has kept no summer time since 2019)."""


def _plain_date(value: object, argument: str) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValidationError(
            f"{argument} must be a datetime.date (not a datetime), got {type(value).__name__}"
        )
    return value


def status_on(credential: CredentialRead, day: date, birth_date: date | None = None) -> CredentialStatus:
    """The state of `credential` on `day` (see UserManager.credential_status); `birth_date` is its holder's."""
    expires = credential.expires_at
    if expires is None:
        reason = no_expiry_reason(credential.code, credential.issued_at, birth_date)
        return CredentialStatus(
            credential=credential, status=CredentialState.no_expiry, reason=reason, days_left=None
        )
    left = (expires - day).days
    if left < 0:
        state, reason = (
            CredentialState.expired,
            f"expired on {expires.isoformat()}, {-left} day(s) before {day}",
        )
    elif left <= EXPIRING_WINDOW_DAYS:
        state = CredentialState.expiring
        reason = f"expires on {expires.isoformat()}, in {left} day(s): within {EXPIRING_WINDOW_DAYS} days"
    else:
        state, reason = CredentialState.valid, f"valid until {expires.isoformat()} ({left} days)"
    if credential.expiry_basis is ExpiryBasis.computed:
        reason += "; " + computed_reason(credential.code, credential.issued_at, birth_date)
    return CredentialStatus(credential=credential, status=state, reason=reason, days_left=left)


def _credential_code(value: object) -> str:
    """The canonical code of a list_users filter; anything the catalogue refuses names the argument."""
    try:
        return canonical_code(value)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ValidationError(f"credential_code {exc.message.removeprefix('code ')}") from None


def _flag(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be True or False, got {shown(value)}")
