"""UserManager: profiles of pilots, instructors, mechanics… with their licences and preferences."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager, changed_fields
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.validation import parse_enum, parse_uuid, validate_input
from stratus_db.models import UserRole
from stratus_db.users.repository import UserRepository
from stratus_db.users.schemas import EmailLookup, UserCreate, UserRead, UserUpdate

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

TABLE = "users"


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
            experience_level: free text up to 50 characters, e.g. "student", "300h".
            preferences: a JSON object.
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
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
    ) -> Page[UserRead]:
        """Users in creation order, optionally of one role. A cross-user query: for administrators and reports.

        Raises:
            ValidationError: an unknown role, a limit outside 1–500, or a cursor not issued here.
        """
        async with self._db.operation("user.list", read_only=True) as op:
            role_filter = None if role is None else parse_enum(UserRole, role, "role")
            limit = check_limit(limit)
            after = None if cursor is None else decode_cursor(cursor, (uuid.UUID,))[0]
            await op.authorize(None)

            async def work(conn: AsyncConnection) -> Page[UserRead]:
                users = await UserRepository(conn).page(role=role_filter, after=after, limit=limit + 1)
                return make_page(users, limit, lambda user: encode_cursor(user.user_id))

            return await op.run(work, tx=tx)
