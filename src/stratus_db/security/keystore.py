"""Where the encryption keys come from: the settings (STRATUS_ENCRYPTION_KEYS, STRATUS_BLIND_INDEX_KEY), or, for the
embedded SQLite database only, a key file generated beside it on first use. Production never generates keys.
docs/security.md tells the operator's side.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stratus_db.config import Environment, Settings, check_environment
from stratus_db.errors import ConfigurationError, ValidationError
from stratus_db.logging import get_logger
from stratus_db.security.crypto import (
    BLIND_INDEX_VARIABLE,
    KEYS_VARIABLE,
    BlindIndex,
    FieldCipher,
    Keyring,
    new_key_entry,
    new_secret,
)

KEY_FILE_SUFFIX = ".keys"
"""The embedded database's key file is its file with this suffix instead of its own: `stratus.db` → `stratus.keys`
(not `stratus.db.keys`, which a copy of `stratus.db*` would take along with the database)."""
_VARIABLES = (KEYS_VARIABLE, BLIND_INDEX_VARIABLE)


@dataclass(frozen=True, slots=True)
class Encryption:
    """What a database handle encrypts with: the field cipher (keyring and data keys) and the blind index."""

    fields: FieldCipher
    blind_index: BlindIndex
    key_file: Path | None
    """The key file the keys were read from (the embedded default), or None when they all came from settings."""


def key_file_path(settings: Settings) -> Path:
    """Where the embedded database's key file is, generated or not: beside the SQLite file (KEY_FILE_SUFFIX).

    Raises:
        ValidationError: `settings` is not a Settings. ConfigurationError: the database is not the embedded file.
    """
    _check_settings(settings)
    if not settings.is_embedded:
        raise ConfigurationError(
            "only the embedded SQLite database has a key file; PostgreSQL takes keys from settings"
        )
    database = settings.database_url.database
    assert database is not None  # normalize_database_url refuses a SQLite URL without a file
    return Path(database).with_suffix(KEY_FILE_SUFFIX)


def load_encryption(settings: Settings) -> Encryption:
    """The keyring and blind index `settings` configure.

    A variable that is set wins. On the embedded SQLite database, the unset ones come from the key file beside it
    (key_file_path), which is generated on first use (32 random bytes each, mode 0600, a WARNING on the `stratus_db`
    logger) and read on every later start; a broken key file is an error, never replaced, since a new key could not
    read what the old one encrypted.

    Raises:
        ValidationError: `settings` is not a Settings.
        ConfigurationError: production without both variables (whatever the database); PostgreSQL without them
            (keys are generated for the embedded file only); a malformed variable; an unreadable or malformed key
            file. Messages name the variable or the file, never a key.
    """
    _check_settings(settings)
    # Settings made with model_copy or model_construct skipped validation: check production again here.
    check_environment(settings)
    configured = {
        name: secret.get_secret_value()
        for name in _VARIABLES
        if (secret := getattr(settings, name)) is not None and secret.get_secret_value().strip()
    }
    missing = [name for name in _VARIABLES if name not in configured]
    key_file: Path | None = None
    if missing:
        if Environment.production == settings.ENVIRONMENT or not settings.is_embedded:
            raise ConfigurationError(
                f"{' and '.join(missing)} must be set for a PostgreSQL database (keys are generated only for the "
                f"embedded SQLite file): set {KEYS_VARIABLE} to `stratus-db generate-key`'s line and "
                f"{BLIND_INDEX_VARIABLE} to `stratus-db generate-key --blind-index`'s (docs/security.md)"
            )
        key_file = key_file_path(settings)
        from_file = _read_or_create_key_file(key_file)
        configured |= {name: from_file[name] for name in missing}
    return Encryption(
        fields=FieldCipher(Keyring.parse(configured[KEYS_VARIABLE])),
        blind_index=BlindIndex.parse(configured[BLIND_INDEX_VARIABLE]),
        key_file=key_file,
    )


def _check_settings(settings: object) -> None:
    if not isinstance(settings, Settings):
        raise ValidationError(
            f"settings must be a stratus_db Settings (from load_settings() or Settings(...)), "
            f"got {type(settings).__name__}"
        )


def _read_or_create_key_file(path: Path) -> dict[str, str]:
    try:
        return _read_key_file(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # no key file yet: make one (if the directory cannot be made either, that is the error reported)
    _create_key_file(path)
    return _read_key_file(path)


def _read_key_file(path: Path) -> dict[str, str]:
    """The variables of a key file; FileNotFoundError or NotADirectoryError when there is none."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"the key file {path} cannot be read ({type(exc).__name__}): restore it, or set {KEYS_VARIABLE} and "
            f"{BLIND_INDEX_VARIABLE}"
        ) from None
    if stat.S_IMODE(mode) & 0o077:
        get_logger().warning(
            "the encryption key file is readable by other users: chmod 600 it",
            key_file=str(path),
            mode=oct(stat.S_IMODE(mode)),
        )
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or name not in _VARIABLES:
            # The line is not quoted: it may hold a key.
            raise ConfigurationError(
                f"the key file {path} has a malformed line {number}: expected {KEYS_VARIABLE}=… or "
                f"{BLIND_INDEX_VARIABLE}=… (restore the file from its backup)"
            )
        found[name] = value.strip()
    absent = [name for name in _VARIABLES if name not in found]
    if absent:
        raise ConfigurationError(
            f"the key file {path} lacks {' and '.join(absent)}: restore it from its backup (a new key could not "
            "read what the lost one encrypted)"
        )
    try:
        Keyring.parse(found[KEYS_VARIABLE])
        BlindIndex.parse(found[BLIND_INDEX_VARIABLE])
    except ConfigurationError as exc:
        raise ConfigurationError(f"the key file {path}: {exc.message}") from None
    return found


def _create_key_file(path: Path) -> None:
    """Write a new key file at `path`, atomically and only if there is none: two processes starting at once end up
    reading the same keys."""
    now = datetime.now(UTC)
    content = (
        f"# stratus_db encryption keys of the embedded database beside this file, generated {now:%Y-%m-%d %H:%M} UTC.\n"
        "# Keep it secret (mode 0600) and back it up apart from the database: without it the encrypted values in\n"
        "# the database cannot be read. To use these keys elsewhere, set the two variables below in the environment\n"
        "# (docs/security.md); a variable set in the environment wins over this file.\n"
        f"{KEYS_VARIABLE}={new_key_entry()}\n"
        f"{BLIND_INDEX_VARIABLE}={new_secret()}\n"
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600 whatever the umask, so no key is ever readable by others.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the key file {path} ({exc.strerror or type(exc).__name__}): make its directory "
            f"writable, or set {KEYS_VARIABLE} and {BLIND_INDEX_VARIABLE}"
        ) from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # link() never replaces: if another process created the file first, its keys are the ones to use.
            os.link(temporary, path)
        except FileExistsError:
            return
        _sync_directory(path.parent)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the key file {path} ({exc.strerror or type(exc).__name__}): make its directory "
            f"writable, or set {KEYS_VARIABLE} and {BLIND_INDEX_VARIABLE}"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    get_logger().warning(
        "encryption keys generated for the embedded database: back up the key file apart from the database, "
        "or set the keys in the environment (docs/security.md)",
        key_file=str(path),
    )


def _sync_directory(directory: Path) -> None:
    # The new name must survive a crash as well as the file's content; not every platform can open a directory.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
