from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from stratus_db import ConfigurationError, Database, Settings, ValidationError, load_settings
from stratus_db.cli import app
from stratus_db.config import (
    ENV_FILE_VARIABLE,
    SECRET_MASK,
    Environment,
    effective_settings,
    normalize_database_url,
)
from stratus_db.models.memory import MemoryType
from stratus_db.security.crypto import new_key_entry, new_secret
from tests.fixtures.databases import settings_for, sqlite_url


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
    monkeypatch.setenv("STRATUS_ENCRYPTION_KEYS", new_key_entry("k1"))
    monkeypatch.setenv("STRATUS_BLIND_INDEX_KEY", new_secret())
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


# -- production refuses the embedded database ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_session_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test session's keys (tests/conftest.py) are not part of the configurations these tests read."""
    monkeypatch.delenv("STRATUS_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("STRATUS_BLIND_INDEX_KEY", raising=False)
    monkeypatch.delenv("STRATUS_API_JWT_SECRET", raising=False)


@pytest.fixture
def production_without_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """ENVIRONMENT=production, no DATABASE_URL, run from an empty directory; returns that directory."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("STRATUS_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_production_without_database_url_is_refused_naming_the_variable(production_without_url: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.message
    assert "DATABASE_URL" in message
    assert "ENVIRONMENT=production" in message
    assert "postgresql+asyncpg://" in message, "the error says what is accepted"


def test_production_refuses_a_sqlite_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'prod.db'}")
    with pytest.raises(ConfigurationError, match="DATABASE_URL names a SQLite file") as caught:
        load_settings()
    assert "postgresql" in caught.value.message
    assert not (tmp_path / "prod.db").exists()


@pytest.mark.parametrize("environment", ["development", "test", "staging"])
def test_other_environments_may_use_the_embedded_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, environment: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("STRATUS_DATA_DIR", str(tmp_path))
    assert load_settings().is_embedded


def test_a_production_handle_without_database_url_creates_no_file(production_without_url: Path) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        Database()
    assert list(production_without_url.iterdir()) == []


@pytest.mark.parametrize(
    "update",
    [
        {"DATABASE_URL": None},
        {},  # keeps settings_for's SQLite URL
    ],
)
def test_a_handle_refuses_production_settings_that_skipped_validation(
    tmp_path: Path, update: dict[str, object]
) -> None:
    """model_copy(update=...) does not validate: the handle checks again before it creates anything."""
    data_dir = tmp_path / "data"
    settings = settings_for(sqlite_url(data_dir / "prod.db")).model_copy(
        update={"ENVIRONMENT": Environment.production, "STRATUS_DATA_DIR": data_dir, **update}
    )
    with pytest.raises(ConfigurationError, match="ENVIRONMENT=production"):
        Database(settings)
    assert not data_dir.exists()


def test_the_cli_in_production_without_database_url_fails_instead_of_reporting_healthy(
    production_without_url: Path,
) -> None:
    result = CliRunner().invoke(app, ["health"])
    assert result.exit_code == 1
    assert "DATABASE_URL" in result.stderr
    assert list(production_without_url.iterdir()) == [], "no stratus.db appeared"


# -- .env --------------------------------------------------------------------------------------------------------


@pytest.fixture
def dotenv_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty working directory, no STRATUS_ENV_FILE (so ./.env is the file), none of the variables below set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_FILE_VARIABLE)
    for variable in ("DATABASE_URL", "STRATUS_POOL_SIZE", "LOG_LEVEL", "ENVIRONMENT", "STRATUS_DATA_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def test_the_test_suite_reads_no_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tests/conftest.py sets STRATUS_ENV_FILE to the empty string: a developer's .env cannot leak into a test."""
    assert os.environ[ENV_FILE_VARIABLE] == ""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRATUS_POOL_SIZE", raising=False)
    (tmp_path / ".env").write_text("STRATUS_POOL_SIZE=7\n")
    assert load_settings().STRATUS_POOL_SIZE == 10


def test_a_dotenv_file_in_the_working_directory_is_read(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("STRATUS_POOL_SIZE=7\nLOG_LEVEL=DEBUG\nSOMETHING_ELSE=ignored\n")
    settings = load_settings()
    assert (settings.STRATUS_POOL_SIZE, settings.LOG_LEVEL) == (7, "DEBUG")


def test_environment_variables_win_over_the_dotenv_file(
    dotenv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (dotenv_dir / ".env").write_text("STRATUS_POOL_SIZE=7\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("STRATUS_POOL_SIZE", "9")
    settings = load_settings()
    assert (settings.STRATUS_POOL_SIZE, settings.LOG_LEVEL) == (9, "DEBUG")


def test_without_a_dotenv_file_the_defaults_apply(dotenv_dir: Path) -> None:
    assert load_settings().STRATUS_POOL_SIZE == 10


def test_stratus_env_file_names_another_file(dotenv_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (dotenv_dir / ".env").write_text("STRATUS_POOL_SIZE=7\n")
    (dotenv_dir / "prod.env").write_text("STRATUS_POOL_SIZE=40\n")
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(dotenv_dir / "prod.env"))
    assert load_settings().STRATUS_POOL_SIZE == 40
    monkeypatch.setenv(ENV_FILE_VARIABLE, "")
    assert load_settings().STRATUS_POOL_SIZE == 10, "empty: no file at all"


def test_a_missing_file_named_by_stratus_env_file_is_an_error(
    dotenv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(dotenv_dir / "typo.env"))
    with pytest.raises(ConfigurationError, match="STRATUS_ENV_FILE") as caught:
        load_settings()
    assert "typo.env" in caught.value.message


def test_a_bad_value_in_the_dotenv_file_is_named(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("STRATUS_POOL_SIZE=0\n")
    with pytest.raises(ConfigurationError, match="STRATUS_POOL_SIZE"):
        load_settings()


def test_production_from_the_dotenv_file_still_needs_database_url(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("ENVIRONMENT=production\n")
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        load_settings()
    (dotenv_dir / ".env").write_text(
        "ENVIRONMENT=production\nDATABASE_URL=postgresql://app:pw@db.internal/stratus\n"
    )
    with pytest.raises(
        ConfigurationError, match="STRATUS_ENCRYPTION_KEYS and STRATUS_BLIND_INDEX_KEY are required"
    ):
        load_settings()
    with (dotenv_dir / ".env").open("a") as dotenv:
        dotenv.write(f"STRATUS_ENCRYPTION_KEYS={new_key_entry()}\nSTRATUS_BLIND_INDEX_KEY={new_secret()}\n")
    assert load_settings().database_url.host == "db.internal"


# -- effective_settings ------------------------------------------------------------------------------------------


def test_effective_settings_show_every_setting_as_text_with_secrets_masked() -> None:
    settings = Settings(
        DATABASE_URL="postgresql://app:s3cret@db.internal:6543/stratus",  # type: ignore[arg-type]
        OPENAI_API_KEY="sk-live-abc123",  # type: ignore[arg-type]
        OPENAI_BASE_URL="https://proxy:pr0xypass@llm.internal/v1",
        STRATUS_MEMORY_SLIDING_TIERS=frozenset({MemoryType.short_term}),
    )
    shown = effective_settings(settings)
    assert set(shown) == set(Settings.model_fields)
    assert all(isinstance(value, str) for value in shown.values())
    assert shown["DATABASE_URL"] == f"postgresql+asyncpg://app:{SECRET_MASK}@db.internal:6543/stratus"
    assert shown["OPENAI_API_KEY"] == SECRET_MASK
    assert shown["OPENAI_BASE_URL"] == f"https://proxy:{SECRET_MASK}@llm.internal/v1"
    assert not any(secret in value for value in shown.values() for secret in ("s3cret", "sk-live", "pr0xy"))
    assert shown["STRATUS_SUMMARY_THRESHOLD_TOKENS"] == "8000", "a count of tokens is not a secret token"
    assert (shown["ENVIRONMENT"], shown["LOG_LEVEL"]) == ("development", "INFO")
    assert shown["STRATUS_MEMORY_SLIDING_TIERS"] == '["short_term"]'
    assert shown["STRATUS_PACK_ARCHIVED_MESSAGES"] == "true"


def test_effective_settings_mask_a_password_given_as_a_url_parameter() -> None:
    settings = Settings(
        DATABASE_URL="postgresql://app@/stratus?host=/cloudsql/p:r:i&password=hunter2",  # type: ignore[arg-type]
    )
    shown = effective_settings(settings)["DATABASE_URL"]
    assert "hunter2" not in shown
    assert f"password={SECRET_MASK}" in shown
    assert "cloudsql" in shown


def test_effective_settings_show_the_embedded_file_and_unset_secrets_as_empty(tmp_path: Path) -> None:
    shown = effective_settings(Settings(STRATUS_DATA_DIR=tmp_path))
    assert shown["DATABASE_URL"] == f"sqlite+aiosqlite:///{(tmp_path / 'stratus.db').resolve()}"
    assert shown["STRATUS_DATA_DIR"] == str(tmp_path.resolve())
    assert (shown["OPENAI_API_KEY"], shown["OPENAI_BASE_URL"]) == ("", "")


def test_effective_settings_mask_secret_looking_names_whatever_their_type() -> None:
    class HostSettings(Settings):
        SERVICE_API_KEY: str = "key-material"
        WEBHOOK_TOKEN: str = "token-material"
        SMTP_PASSWORD: str = "password-material"
        SIGNING_SECRET: SecretStr = SecretStr("secret-material")

    shown = effective_settings(HostSettings())
    for name in ("SERVICE_API_KEY", "WEBHOOK_TOKEN", "SMTP_PASSWORD", "SIGNING_SECRET"):
        assert shown[name] == SECRET_MASK, name
    assert not any("material" in value for value in shown.values())


def test_effective_settings_read_back_as_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every value not masked is what the variable would be set to: setting them all gives the same settings."""
    original = Settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",  # type: ignore[arg-type]
        STRATUS_DATA_DIR=tmp_path.resolve(),
        STRATUS_MEMORY_SLIDING_TIERS=frozenset({MemoryType.short_term, MemoryType.medium_term}),
        STRATUS_PACK_ARCHIVED_MESSAGES=False,
        STRATUS_POOL_TIMEOUT_S=2.5,
        STRATUS_AUDIT_RETENTION_RULES={"messages": 365, "*:read": 0},
        STRATUS_API_TRUSTED_PROXIES=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("2001:db8::1/128"),
        ),
    )
    for name, value in effective_settings(original).items():
        if value:
            monkeypatch.setenv(name, value)
        else:  # unset
            monkeypatch.delenv(name, raising=False)
    assert load_settings() == original


@pytest.mark.parametrize("given", [None, {"DATABASE_URL": "postgresql://u:p@h/d"}, "Settings"])
def test_effective_settings_take_settings_only(given: object) -> None:
    with pytest.raises(ValidationError, match="settings"):
        effective_settings(given)  # type: ignore[arg-type]
