"""AuditManager.report on both backends, against figures counted by hand from a known history, and its CSV and HTML
renderings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stratus_db import (
    AuditManager,
    Database,
    MemoryManager,
    PermissionDeniedError,
    Principal,
    UserManager,
    ValidationError,
)
from stratus_db.audit.report import as_csv, as_html
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import create_user


def at(day: int) -> datetime:
    return datetime(2026, 3, day, 12, tzinfo=UTC)


async def test_the_report_counts_what_happened_in_the_range(
    db: Database, clock: ManualClock, users: UserManager, audit: AuditManager
) -> None:
    clock.now = at(1)
    async with db.context(principal=Principal.system("teste"), purpose="cadastro"):
        ana = await create_user(users)
        bia = await create_user(users)
    clock.now = at(2)
    await users.update_user(ana.user_id, name="Ana Prado")
    with pytest.raises(PermissionDeniedError):
        await MemoryManager(db).get_memory(bia.user_id, "base", principal=Principal.for_user(ana.user_id))
    await users.add_credential(ana.user_id, "CMA1")
    await users.credential_status(ana.user_id)
    clock.now = at(3)
    await audit.report(at(1), at(4))  # reading the report writes nothing
    clock.now = at(5)
    await create_user(users)  # after the range

    report = await audit.report(at(1), at(4))

    assert report.rows == 6
    assert report.by_action == {"create": 3, "deny": 1, "read": 1, "update": 1}
    assert report.by_table == {"access_control": 1, "user_credentials": 2, "users": 3}
    assert report.by_principal_kind == {"system": 5, "user": 1}
    assert report.by_day == {"2026-03-01": 2, "2026-03-02": 4}
    assert report.denied == {"user": 1}
    assert (report.exports, report.erasures, report.sensitive_reads) == (0, 0, 1)
    assert report.top_users == sorted(
        [(ana.user_id, 4), (bia.user_id, 2)], key=lambda pair: (-pair[1], str(pair[0]))
    )
    assert [(line.purpose, line.rows, line.actions) for line in report.by_purpose] == [
        ("unspecified", 4, {"deny": 1, "read": 1, "create": 1, "update": 1}),
        ("cadastro", 2, {"create": 2}),
    ]

    text = as_csv(report)
    assert text.splitlines()[:3] == ["section,key,count", "total,rows,6", "by_action,create,3"]
    assert "purpose:cadastro,create,2" in text.splitlines()
    page = as_html(report)
    assert page.startswith("<!doctype html>")
    assert "<td>by_day</td><td>2026-03-02</td><td>4</td>" in page


async def test_a_bad_range_is_refused(audit: AuditManager) -> None:
    with pytest.raises(ValidationError, match="until"):
        await audit.report(at(4), at(1))
    with pytest.raises(ValidationError, match="since"):
        await audit.report(datetime(2026, 3, 1), at(4))  # noqa: DTZ001 - a naive datetime is the bad input
