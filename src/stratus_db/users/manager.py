"""UserManager: profiles of pilots, instructors, mechanics… with their licences and preferences."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager, changed_fields
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.validation import (
    InputModel,
    SafeJsonObject,
    Timestamp,
    parse_enum,
    parse_uuid,
    validate_input,
)
from stratus_db.models import UserRole
from stratus_db.users.activity import (
    MAX_PERIODS,
    ActivityCount,
    Granularity,
    count_active,
    periods_between,
)
from stratus_db.users.profile import (
    ExperienceLevel,
    changed_keys,
    derive_experience_level,
    merge_patch,
    parse_experience_level,
)
from stratus_db.users.repository import UserRepository
from stratus_db.users.schemas import EmailLookup, Preferences, UserCreate, UserRead, UserUpdate

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

TABLE = "users"


class _PreferencesPatch(InputModel):
    patch: SafeJsonObject


class _CheckedPreferences(InputModel):
    preferences: Preferences


class _Instant(InputModel):
    value: Timestamp


class _ActivityWindow(InputModel):
    since: Timestamp
    until: Timestamp


class UserManager:
    """Create, read, update and list users. Every change writes its audit row in the same transaction."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)

    async def create_user(
        self,
        name: str,
        email: str,
        role: UserRole | str,
        licenses: list[str] | None = None,
        experience_level: str | None = None,
        preferences: dict[str, Any] | None = None,
        *,
        tx: AsyncConnection | None = None,
    ) -> UserRead:
        """Register a user.

        Args:
            name: display name (1–200 characters).
            email: unique, case-insensitively; stored lower-cased.
            role: one of UserRole (pilot, instructor, mechanic, student, dispatcher, flight_attendant,
                air_traffic_controller, other).
            licenses: ANAC licence and rating codes, e.g. ["PP", "PC", "IFR"]; upper-cased, duplicates dropped.
            experience_level: one of ExperienceLevel (student, private, commercial, airline, instructor,
                maintenance, dispatch, cabin, other). Left out, it is derived from `licenses` (docs/users.md:
                airline > instructor > commercial > private > dispatch > maintenance > cabin; `student` for the
                student role; else None).
            preferences: a JSON object; the known keys (language, units, home_aerodrome, aircraft, notifications)
                must follow their schema (docs/users.md), other keys are free within the JSON limits.
            tx: a transaction from `db.transaction()` to join.

        Returns:
            The stored user.

        Raises:
            ValidationError: a field is malformed; nothing is written.
            ConflictError: the e-mail is already registered.
        """
        async with self._db.operation("user.create") as op:
            data = validate_input(
                UserCreate,
                {
                    "name": name,
                    "email": email,
                    "role": role,
                    "licenses": [] if licenses is None else licenses,
                    "experience_level": experience_level,
                    "preferences": {} if preferences is None else preferences,
                },
            )
            await op.authorize(None)
            if data.experience_level is None:
                derived = derive_experience_level(data.licenses, student=data.role is UserRole.student)
                data = data.model_copy(update={"experience_level": derived})
            now = self._db.clock()
            new_user = UserRead(
                **data.model_dump(), user_id=new_id(), created_at=now, updated_at=now, last_active=now
            )

            async def work(conn: AsyncConnection) -> UserRead:
                user = await UserRepository(conn).insert(new_user)
                await self._audit.record(
                    conn,
                    action=AuditAction.create,
                    table_name=TABLE,
                    record_id=user.user_id,
                    user_id=user.user_id,
                    new_values=user.model_dump(mode="json"),
                )
                return user

            return await op.run(work, tx=tx)

    async def get_user(
        self, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None
    ) -> UserRead | None:
        """The user with this id, or None.

        Raises:
            ValidationError: `user_id` is not a UUID.
        """
        async with self._db.operation("user.get", read_only=True) as op:
            key = parse_uuid(user_id, "user_id")
            await op.authorize(key)

            async def work(conn: AsyncConnection) -> UserRead | None:
                return await UserRepository(conn).get(key)

            return await op.run(work, tx=tx)

    async def get_user_by_email(self, email: str, *, tx: AsyncConnection | None = None) -> UserRead | None:
        """The user with this e-mail (any case), or None.

        Raises:
            ValidationError: `email` is not an e-mail address.
        """
        async with self._db.operation("user.get_by_email", read_only=True) as op:
            address = validate_input(EmailLookup, {"email": email}).email

            async def work(conn: AsyncConnection) -> UserRead | None:
                return await UserRepository(conn).get_by_email(address)

            found = await op.run(work, tx=tx)
            # Whose profile it is shows only once read: a miss is nobody's, which only those who manage users may see.
            await op.authorize(None if found is None else found.user_id)
            return found

    async def update_user(
        self, user_id: uuid.UUID | str, *, tx: AsyncConnection | None = None, **changes: Any
    ) -> UserRead:
        """Change some fields of a user: `update_user(uid, name=..., licenses=[...])`.

        Accepted fields: name, email, role, licenses, experience_level, preferences. A field left out keeps its
        value; the audit row keeps the old and new values of the fields that changed.

        Raises:
            ValidationError: `user_id` is not a UUID, a field is unknown or malformed, or no field is given.
            NotFoundError: no such user.
            ConflictError: the new e-mail belongs to another user.
        """
        async with self._db.operation("user.update") as op:
            key = parse_uuid(user_id, "user_id")
            data = validate_input(UserUpdate, changes)
            values = data.model_dump(exclude_unset=True)
            if not values:
                raise ValidationError(
                    f"update_user needs at least one field to change; accepted: {', '.join(UserUpdate.model_fields)}"
                )
            await op.authorize(key)
            if "role" in values:
                await op.authorize(key, operation="user.change_role")

            async def work(conn: AsyncConnection) -> UserRead:
                repository = UserRepository(conn)
                previous = await repository.get(key, for_update=True)
                if previous is None:
                    raise NotFoundError(f"user {key} does not exist")
                old_values, new_values = changed_fields(previous, values)

                if not new_values:
                    return previous  # nothing changes, so nothing is written or audited
                after = await repository.update(key, data, self._db.clock())
                await self._audit.record(
                    conn,
                    action=AuditAction.update,
                    table_name=TABLE,
                    record_id=key,
                    user_id=key,
                    old_values=old_values,
                    new_values=new_values,
                )
                return after

            return await op.run(work, tx=tx)

    async def list_users(
        self,
        *,
        role: UserRole | str | None = None,
        experience_level: ExperienceLevel | str | None = None,
        active_since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
    ) -> Page[UserRead]:
        """Users in creation order, optionally of one role, of one experience level, and active (`last_active`) at
        or after `active_since`. A cross-user query: for administrators and reports.

        Raises:
            ValidationError: an unknown role or experience level, an `active_since` that is not a time-zone-aware
                datetime, a limit outside 1–500, or a cursor not issued here.
        """
        async with self._db.operation("user.list", read_only=True) as op:
            role_filter = None if role is None else parse_enum(UserRole, role, "role")
            level = None if experience_level is None else parse_experience_level(experience_level)
            since = None if active_since is None else _instant(active_since, "active_since")
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (uuid.UUID,))[0]
            await op.authorize(None)

            async def work(conn: AsyncConnection) -> Page[UserRead]:
                users = await UserRepository(conn).page(
                    role=role_filter,
                    experience_level=level,
                    active_since=since,
                    after=after,
                    limit=limit + 1,
                )
                return make_page(users, limit, lambda user: encode_cursor(user.user_id))

            return await op.run(work, tx=tx)

    async def update_preferences(
        self, user_id: uuid.UUID | str, patch: dict[str, Any], *, tx: AsyncConnection | None = None
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
        async with self._db.operation("user.update_preferences") as op:
            key = parse_uuid(user_id, "user_id")
            if not isinstance(patch, dict):
                raise ValidationError(f"patch must be a JSON object (a dict), got {type(patch).__name__}")
            checked = validate_input(_PreferencesPatch, {"patch": patch}).patch
            # What the patch sets, checked before anything is read: a known key of the wrong type fails here.
            validate_input(_CheckedPreferences, {"preferences": merge_patch({}, checked)})
            await op.authorize(key)

            async def work(conn: AsyncConnection) -> UserRead:
                repository = UserRepository(conn)
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

    async def active_users(
        self,
        since: datetime,
        *,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
    ) -> Page[UserRead]:
        """Users whose `last_active` is at or after `since`, in creation order (a stable order: `last_active` moves
        while one pages). `last_active` is written at most once a minute per user and process (docs/users.md), so
        it may lag the latest activity by that much. For administrators and reports.

        Raises:
            ValidationError: `since` is not a time-zone-aware datetime, a limit outside 1–500, or a foreign cursor.
        """
        async with self._db.operation("user.active_users", read_only=True) as op:
            instant = _instant(since, "since")
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (uuid.UUID,))[0]
            await op.authorize(None)

            async def work(conn: AsyncConnection) -> Page[UserRead]:
                users = await UserRepository(conn).page(active_since=instant, after=after, limit=limit + 1)
                return make_page(users, limit, lambda user: encode_cursor(user.user_id))

            return await op.run(work, tx=tx)

    async def activity_counts(
        self,
        since: datetime,
        until: datetime,
        *,
        granularity: Granularity = "day",
        tx: AsyncConnection | None = None,
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
        async with self._db.operation("user.activity_counts", read_only=True) as op:
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
            await op.authorize(None)

            async def work(conn: AsyncConnection) -> dict[Any, int]:
                return await count_active(conn, window.since, window.until, granularity)

            counts = await op.run(work, tx=tx)
            return [ActivityCount(period=period, active_users=counts.get(period, 0)) for period in periods]


def _instant(value: object, name: str) -> datetime:
    """A time-zone-aware datetime, in UTC; anything else is a ValidationError naming the argument."""
    try:
        return _Instant.model_validate({"value": value}).value
    except PydanticValidationError:
        raise ValidationError(
            f"{name} must be a time-zone-aware datetime (e.g. datetime.now(UTC)), got {type(value).__name__}"
        ) from None
