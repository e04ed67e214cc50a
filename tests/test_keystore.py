"""Where keys come from (security/keystore.py, config.py): settings, the embedded database's key file, production's
refusal, and `stratus-db generate-key`. No database is opened: these are the keys a handle will be given."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError
from typer.testing import CliRunner

from stratus_db import ConfigurationError, Database, Settings, ValidationError, load_settings
from stratus_db.cli import app
from stratus_db.config import SECRET_MASK, Environment, effective_settings
from stratus_db.logging import LOGGER_NAME
from stratus_db.security.crypto import BlindIndex, Cell, Keyring, new_key_entry, new_secret
from stratus_db.security.keystore import KEY_FILE_SUFFIX, key_file_path, load_encryption
from tests.fixtures.databases import settings_for, sqlite_url

POSTGRES_URL = "postgresql+asyncpg://app:pw@db.internal/stratus"
CELL = Cell("users", "email", uuid.UUID("0190f0e4-7b8a-7cc1-9a4e-2f9d3c1b5a01"))
MATERIAL = base64.b64encode(bytes(range(32))).decode()


def embedded(data_dir: Path, **overrides: object) -> Settings:
    """Settings of the embedded database in `data_dir`, from arguments only (no environment)."""
    return Settings(STRATUS_DATA_DIR=data_dir, ENVIRONMENT="test", **overrides)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_key_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test session's keys (tests/conftest.py) are not these tests' environment: each sets what it needs."""
    monkeypatch.delenv("STRATUS_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("STRATUS_BLIND_INDEX_KEY", raising=False)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: the key file must be 0600 whatever the process's umask."""
    previous = os.umask(0)
    yield
    os.umask(previous)


# -- the variables -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STRATUS_ENCRYPTION_KEYS", f"k1:{MATERIAL[:20]}"),
        ("STRATUS_ENCRYPTION_KEYS", MATERIAL),
        ("STRATUS_ENCRYPTION_KEYS", f"k1:{MATERIAL},k1:{MATERIAL}"),
        ("STRATUS_BLIND_INDEX_KEY", f"k1:{MATERIAL}"),
    ],
)
def test_a_malformed_key_variable_is_named_and_never_quoted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable) as caught:
        load_settings()
    assert MATERIAL[:12] not in caught.value.message
    # Pydantic's own error (Settings made directly) does not quote the input either.
    with pytest.raises(PydanticValidationError) as raw:
        Settings()
    assert MATERIAL[:12] not in str(raw.value)
    assert MATERIAL[:12] not in repr(raw.value)


def test_blank_key_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRATUS_ENCRYPTION_KEYS", "  ")
    monkeypatch.setenv("STRATUS_BLIND_INDEX_KEY", "")
    settings = load_settings()
    assert (settings.STRATUS_ENCRYPTION_KEYS, settings.STRATUS_BLIND_INDEX_KEY) == (None, None)


def test_the_keys_are_masked_in_effective_settings_and_reprs() -> None:
    keys = f"{new_key_entry('k2')},k1:{MATERIAL}"
    settings = Settings(STRATUS_ENCRYPTION_KEYS=keys, STRATUS_BLIND_INDEX_KEY=MATERIAL)  # type: ignore[arg-type]
    shown = effective_settings(settings)
    assert (shown["STRATUS_ENCRYPTION_KEYS"], shown["STRATUS_BLIND_INDEX_KEY"]) == (SECRET_MASK, SECRET_MASK)
    for text in (repr(settings), str(settings), repr(load_encryption(settings))):
        assert MATERIAL not in text
        assert keys.split(":")[1][:12] not in text


# -- production and PostgreSQL -----------------------------------------------------------------------------------


def test_production_refuses_to_start_without_keys(
    monkeypatch: pytest.MonkeyPatch, no_key_variables: None
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", POSTGRES_URL)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "STRATUS_ENCRYPTION_KEYS and STRATUS_BLIND_INDEX_KEY are required when ENVIRONMENT=production" in (
        caught.value.message
    )
    assert "stratus-db generate-key" in caught.value.message

    monkeypatch.setenv("STRATUS_ENCRYPTION_KEYS", new_key_entry())
    with pytest.raises(
        ConfigurationError, match=r"^invalid configuration: STRATUS_BLIND_INDEX_KEY is required"
    ):
        load_settings()

    monkeypatch.setenv("STRATUS_BLIND_INDEX_KEY", new_secret())
    encryption = load_encryption(load_settings())
    assert encryption.key_file is None


def test_production_settings_that_skipped_validation_are_refused_by_the_handle_and_the_loader(
    tmp_path: Path,
) -> None:
    """model_copy(update=...) does not validate: the database handle and load_encryption check again."""
    settings = settings_for(POSTGRES_URL).model_copy(
        update={"ENVIRONMENT": Environment.production, "STRATUS_DATA_DIR": tmp_path}
    )
    with pytest.raises(
        ConfigurationError, match="STRATUS_ENCRYPTION_KEYS and STRATUS_BLIND_INDEX_KEY are required"
    ):
        load_encryption(settings)
    with pytest.raises(ConfigurationError, match="STRATUS_ENCRYPTION_KEYS"):
        Database(settings)
    assert list(tmp_path.iterdir()) == [], "no key file, no database file"


def test_postgresql_without_keys_is_refused_outside_production_too(tmp_path: Path) -> None:
    settings = settings_for(POSTGRES_URL).model_copy(update={"STRATUS_DATA_DIR": tmp_path})
    with pytest.raises(ConfigurationError, match="must be set for a PostgreSQL database"):
        load_encryption(settings)
    with pytest.raises(ConfigurationError, match="only the embedded SQLite database has a key file"):
        key_file_path(settings)
    assert list(tmp_path.iterdir()) == []


def test_configured_keys_are_used_and_no_file_is_written(tmp_path: Path) -> None:
    keys = f"k2:{MATERIAL},{new_key_entry('k1')}"
    encryption = load_encryption(
        embedded(tmp_path, STRATUS_ENCRYPTION_KEYS=keys, STRATUS_BLIND_INDEX_KEY=MATERIAL)
    )
    assert encryption.fields.keyring.key_ids == ("k2", "k1")
    assert encryption.blind_index.email("a@b.c") == BlindIndex.parse(MATERIAL).email("a@b.c")
    assert encryption.key_file is None
    assert list(tmp_path.iterdir()) == []


# -- the embedded database's key file ----------------------------------------------------------------------------


def test_the_embedded_database_gets_a_private_key_file_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, umask_zero: None
) -> None:
    data_dir = tmp_path / "data"  # not there yet: created as the database's would be
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        encryption = load_encryption(embedded(data_dir))

    path = data_dir / "stratus.keys"
    assert encryption.key_file == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == ["stratus.keys"], "no temporary file left behind"
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert [line.split("=", 1)[0] for line in lines] == ["STRATUS_ENCRYPTION_KEYS", "STRATUS_BLIND_INDEX_KEY"]
    keyring = Keyring.parse(lines[0].split("=", 1)[1])
    assert encryption.fields.keyring.key_ids == keyring.key_ids
    warnings = [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "encryption keys generated" in warnings[0].getMessage()
    assert warnings[0].key_file == str(path)  # type: ignore[attr-defined]
    for record in caplog.records:
        assert lines[0].split(":", 1)[1][:12] not in record.getMessage()


def test_the_key_file_is_reused_on_the_next_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = load_encryption(embedded(tmp_path))
    content = (tmp_path / "stratus.keys").read_text()
    token = first.fields.encrypt("ana@example.com", CELL)
    index = first.blind_index.email("ana@example.com")

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        second = load_encryption(embedded(tmp_path))

    assert (tmp_path / "stratus.keys").read_text() == content, "the file is not rewritten"
    assert second.fields.decrypt(token, CELL) == "ana@example.com"
    assert second.blind_index.email("ana@example.com") == index
    assert [r for r in caplog.records if r.name == LOGGER_NAME] == [], "a reused file is no news"


def test_concurrent_first_starts_agree_on_one_key_file(tmp_path: Path) -> None:
    settings = embedded(tmp_path)
    start = threading.Barrier(8)
    indexes: list[str] = []

    def first_start() -> None:
        start.wait()
        indexes.append(load_encryption(settings).blind_index.email("ana@example.com"))

    threads = [threading.Thread(target=first_start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(indexes) == 8
    assert len(set(indexes)) == 1, "every process uses the keys of the one file that was created"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stratus.keys"]


def test_a_variable_that_is_set_wins_over_the_key_file(tmp_path: Path) -> None:
    load_encryption(embedded(tmp_path))  # the file exists, with its own keys
    keys = f"k-env:{MATERIAL}"
    encryption = load_encryption(embedded(tmp_path, STRATUS_ENCRYPTION_KEYS=keys))
    assert encryption.fields.keyring.key_ids == ("k-env",)
    from_file = load_encryption(embedded(tmp_path))
    assert encryption.blind_index.email("a@b.c") == from_file.blind_index.email("a@b.c"), (
        "the unset blind-index key still comes from the file"
    )


def test_the_key_file_lies_beside_a_sqlite_file_named_by_database_url(tmp_path: Path) -> None:
    settings = settings_for(sqlite_url(tmp_path / "elsewhere" / "pilots.db"))
    encryption = load_encryption(settings)
    assert encryption.key_file == tmp_path / "elsewhere" / f"pilots{KEY_FILE_SUFFIX}"
    assert encryption.key_file.exists()


def test_a_broken_key_file_is_an_error_and_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stratus.keys"
    for content, complaint in [
        (f"STRATUS_ENCRYPTION_KEYS=k1:{MATERIAL}\n", "lacks STRATUS_BLIND_INDEX_KEY"),
        (f"k1:{MATERIAL}\n", "malformed line 1"),
        (
            f"STRATUS_ENCRYPTION_KEYS=k1:{MATERIAL[:30]}\nSTRATUS_BLIND_INDEX_KEY={MATERIAL}\n",
            "exactly 32 bytes",
        ),
    ]:
        path.write_text(content)
        path.chmod(0o600)
        with pytest.raises(ConfigurationError, match=complaint) as caught:
            load_encryption(embedded(tmp_path))
        assert str(path) in caught.value.message
        assert MATERIAL[:12] not in caught.value.message
        assert path.read_text() == content, "a broken key file is left for the operator to restore"


def test_a_key_file_readable_by_others_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    load_encryption(embedded(tmp_path))
    (tmp_path / "stratus.keys").chmod(0o644)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        load_encryption(embedded(tmp_path))
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME] == [
        "the encryption key file is readable by other users: chmod 600 it"
    ]


def test_an_unwritable_data_directory_is_a_configuration_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes anywhere: a regular file where the directory should be fails for everyone
        blocker = tmp_path / "data"
        blocker.write_text("not a directory")
        data_dir = blocker / "inner"
    else:
        tmp_path.chmod(0o500)
        data_dir = tmp_path / "data"
    try:
        with pytest.raises(ConfigurationError, match="cannot create the key file"):
            load_encryption(embedded(data_dir))
    finally:
        tmp_path.chmod(0o700)


def test_load_encryption_validates_its_argument() -> None:
    with pytest.raises(ValidationError, match="settings must be a stratus_db Settings"):
        load_encryption({"STRATUS_ENCRYPTION_KEYS": "k1:..."})  # type: ignore[arg-type]


# -- stratus-db generate-key -------------------------------------------------------------------------------------

runner = CliRunner()


def test_generate_key_prints_a_keyring_entry() -> None:
    result = runner.invoke(app, ["generate-key"])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert Keyring.parse(line).active_id == line.split(":")[0]
    assert "put this line first in STRATUS_ENCRYPTION_KEYS" in result.stderr
    again = runner.invoke(app, ["generate-key"]).stdout.strip()
    assert again.split(":")[1] != line.split(":")[1], "a new random key each time"


def test_generate_key_with_an_id_and_for_the_blind_index() -> None:
    result = runner.invoke(app, ["generate-key", "--id", "k2027"])
    assert result.exit_code == 0, result.output
    assert Keyring.parse(result.stdout.strip()).key_ids == ("k2027",)

    blind = runner.invoke(app, ["generate-key", "--blind-index"])
    assert blind.exit_code == 0, blind.output
    BlindIndex.parse(blind.stdout.strip())


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--id", "Bad Id"], "error: --id must be 1 to 16 characters"),
        (["--id", "k1", "--blind-index"], "error: --id names a keyring entry"),
    ],
)
def test_generate_key_refuses_bad_arguments(args: list[str], complaint: str) -> None:
    result = runner.invoke(app, ["generate-key", *args])
    assert result.exit_code == 1
    assert result.stderr.startswith(complaint)
    assert result.stdout == ""
