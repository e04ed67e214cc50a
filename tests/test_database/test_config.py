from __future__ import annotations

from pathlib import Path

import pytest

from stratus_db import ConfigurationError, load_settings
from stratus_db.config import normalize_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql+asyncpg://u:p@db:5432/stratus", "postgresql+asyncpg://u:p@db:5432/stratus"),
        ("postgresql://u:p@db/stratus", "postgresql+asyncpg://u:p@db/stratus"),
        ("postgres://u@db/stratus", "postgresql+asyncpg://u@db/stratus"),
        (
            "postgresql+asyncpg://u:p@/stratus?host=/cloudsql/proj:us-central1:inst",
            "postgresql+asyncpg://u:p@/stratus?host=%2Fcloudsql%2Fproj%3Aus-central1%3Ainst",
        ),
        ("sqlite:///data/stratus.db", "sqlite+aiosqlite:///data/stratus.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_are_normalized_to_async_drivers(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("not a url", "DATABASE_URL is not a database URL"),
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("postgresql://u@host", "names no database"),
        ("sqlite://", "must name a SQLite file"),
        ("sqlite:///:memory:", "must name a SQLite file"),
    ],
)
def test_a_malformed_url_is_one_clear_error_naming_the_variable(given: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        normalize_database_url(given)
    assert "DATABASE_URL" in caught.value.message


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:secret@db.internal/stratus")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("STRATUS_POOL_SIZE", "25")
    settings = load_settings()
    assert (
        settings.database_url.render_as_string(hide_password=False)
        == "postgresql+asyncpg://app:secret@db.internal/stratus"
    )
    assert (settings.LOG_LEVEL, settings.ENVIRONMENT, settings.STRATUS_POOL_SIZE) == (
        "DEBUG",
        "production",
        25,
    )
    assert "secret" not in repr(settings), "the URL holds a password: it must not show in reprs"
    assert not settings.is_embedded


def test_without_database_url_the_embedded_file_lives_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.is_embedded
    assert settings.database_url.database == str(tmp_path / "stratus.db")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "ftp://x/y"),
        ("STRATUS_POOL_SIZE", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("ENVIRONMENT", "moon"),
    ],
)
def test_a_bad_variable_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings()
