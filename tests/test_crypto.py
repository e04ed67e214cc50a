"""Field encryption (security/crypto.py): the cipher, its token format, data keys, rotation and the blind index.
Pure: no database (the tables that will hold the tokens come with the wiring)."""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from stratus_db import DecryptionError, StoredDataError, StratusError
from stratus_db.errors import ConfigurationError, ValidationError
from stratus_db.security.crypto import (
    MAX_PLAINTEXT_BYTES,
    BlindIndex,
    Cell,
    DataKey,
    FieldCipher,
    KeyKind,
    Keyring,
    new_key_entry,
    new_secret,
)

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
ROW = uuid.UUID("0190f0e4-7b8a-7cc1-9a4e-2f9d3c1b5a01")
OTHER_ROW = uuid.UUID("0190f0e4-7b8a-7cc1-9a4e-2f9d3c1b5a02")
USER = uuid.UUID("0190f0e4-0000-7000-8000-000000000001")
OTHER_USER = uuid.UUID("0190f0e4-0000-7000-8000-000000000002")
EMAIL = Cell("users", "email", ROW)
NAME = "João da Silva"


def entry(key_id: str, material: bytes) -> str:
    return f"{key_id}:{base64.b64encode(material).decode()}"


@pytest.fixture
def cipher() -> FieldCipher:
    """k2 active, k1 still readable: the state between a rotation and the end of its re-encryption."""
    return FieldCipher(Keyring([("k2", K2), ("k1", K1)]))


def payload(token: str) -> bytes:
    encoded = token.rsplit(":", 1)[1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def with_payload(token: str, raw: bytes) -> str:
    return token.rsplit(":", 1)[0] + ":" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- round trips -------------------------------------------------------------------------------------------------


def test_text_round_trip_under_the_active_key(cipher: FieldCipher) -> None:
    token = cipher.encrypt(NAME, EMAIL)

    assert token.startswith("v1:k:k2:")
    assert re.fullmatch(r"v1:k:k2:[A-Za-z0-9_-]+", token), "only URL-safe ASCII: fits TEXT and JSON alike"
    assert NAME not in token
    assert "Silva" not in base64.b64decode(token.rsplit(":", 1)[1] + "==", altchars=b"-_").decode("latin-1")
    assert cipher.decrypt(token, EMAIL) == NAME
    # 12 nonce + 1 type byte + UTF-8 plaintext + 16 tag, as base64url without padding
    assert len(payload(token)) == 12 + 1 + len(NAME.encode()) + 16


def test_each_encryption_draws_a_fresh_nonce(cipher: FieldCipher) -> None:
    tokens = {cipher.encrypt(NAME, EMAIL) for _ in range(50)}
    assert len(tokens) == 50, "equal plaintexts must not give equal tokens (no deterministic encryption)"
    assert len({payload(token)[:12] for token in tokens}) == 50


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.text(),
        st.lists(st.sampled_from(["\x00", "😀", "👩‍✈️", "ç", "\u200b", "a", "\n", "\ufeff"])).map("".join),
        # huge values, cheaply: a short text repeated up to ~2 MB
        st.builds(
            lambda part, times: part * times, st.text(min_size=1, max_size=20), st.integers(1, 100_000)
        ),
    )
)
def test_any_text_round_trips(value: str) -> None:
    cipher = FieldCipher(Keyring([("k1", K1)]))
    token = cipher.encrypt(value, EMAIL)
    assert cipher.decrypt(token, EMAIL) == value


def test_a_huge_value_with_nul_and_emoji_round_trips(cipher: FieldCipher) -> None:
    value = ("\x00 piloto 👩‍✈️ ção " * 500_000)[:8_000_000]
    token = cipher.encrypt(value, EMAIL)
    assert cipher.decrypt(token, EMAIL) == value


_json_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _json_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_json_text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(value=_json_values)
def test_any_json_value_round_trips(value: JsonValue) -> None:
    cipher = FieldCipher(Keyring([("k1", K1)]))
    assert cipher.decrypt_json(cipher.encrypt_json(value, EMAIL), EMAIL) == value


def test_dates_and_datetimes_round_trip_as_documented(cipher: FieldCipher) -> None:
    cell = Cell("user_credentials", "valid_until", ROW)
    assert cipher.decrypt_date(cipher.encrypt_date(date(2027, 3, 1), cell), cell) == date(2027, 3, 1)

    brasilia = timezone(timedelta(hours=-3))
    instant = datetime(2026, 12, 8, 9, 30, 15, 123456, tzinfo=brasilia)
    read = cipher.decrypt_datetime(cipher.encrypt_datetime(instant, cell), cell)
    assert read == instant
    assert read.tzinfo == UTC, "instants come back in UTC"


def test_each_type_is_read_by_its_own_method(cipher: FieldCipher) -> None:
    token = cipher.encrypt_json({"medical_class": 1}, EMAIL)
    with pytest.raises(DecryptionError, match="holds a JSON value, not text: read it with decrypt_json"):
        cipher.decrypt(token, EMAIL)
    with pytest.raises(DecryptionError, match="holds text, not a date: read it with decrypt"):
        cipher.decrypt_date(cipher.encrypt("2027-03-01", EMAIL), EMAIL)


# -- integrity and binding ---------------------------------------------------------------------------------------


def test_flipping_any_byte_of_the_payload_is_detected(cipher: FieldCipher) -> None:
    token = cipher.encrypt("ana@example.com", EMAIL)
    raw = payload(token)
    for position in range(len(raw)):  # nonce, ciphertext and tag alike
        altered = bytearray(raw)
        altered[position] ^= 0x01
        with pytest.raises(DecryptionError, match="was altered, or was encrypted for another"):
            cipher.decrypt(with_payload(token, bytes(altered)), EMAIL)
    with pytest.raises(DecryptionError):
        cipher.decrypt(with_payload(token, raw[:-1]), EMAIL)  # a truncated tag


@pytest.mark.parametrize(
    "elsewhere",
    [
        Cell("users", "email", OTHER_ROW),  # another row
        Cell("users", "name", ROW),  # another column
        Cell("audit_log", "email", ROW),  # another table
    ],
    ids=["other-row", "other-column", "other-table"],
)
def test_a_token_moved_to_another_cell_does_not_decrypt(cipher: FieldCipher, elsewhere: Cell) -> None:
    token = cipher.encrypt("ana@example.com", EMAIL)
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(token, elsewhere)
    assert str(elsewhere) in caught.value.message
    assert "ana@example.com" not in caught.value.message
    assert isinstance(caught.value, StoredDataError)
    assert isinstance(caught.value, StratusError)
    assert caught.value.status_code == 500
    assert cipher.decrypt(token, EMAIL) == "ana@example.com", "where it belongs, it still reads"


def test_the_key_id_and_kind_are_bound_too(cipher: FieldCipher) -> None:
    token = cipher.encrypt(NAME, EMAIL)  # under k2
    relabelled = token.replace("v1:k:k2:", "v1:k:k1:")
    with pytest.raises(DecryptionError, match="does not decrypt with key 'k1'"):
        cipher.decrypt(relabelled, EMAIL)

    # Both keys equal: only the key id in the associated data tells the two tokens apart.
    same_material = FieldCipher(Keyring([("k2", K1), ("k1", K1)]))
    token = same_material.encrypt(NAME, EMAIL)
    with pytest.raises(DecryptionError):
        same_material.decrypt(token.replace("v1:k:k2:", "v1:k:k1:"), EMAIL)


@pytest.mark.parametrize(
    ("token", "complaint"),
    [
        (NAME, "not a token of this version of stratus_db \\(format unknown"),
        ("v2:k:k1:AAAA", "format v2"),
        ("v1:x:k1:" + "A" * 40, "malformed token"),
        ("v1:k:K1:" + "A" * 40, "malformed token"),
        ("v1:k:k1:not base64!", "malformed token"),
        ("v1:k:k1:AAAA", "too short"),
        ("v1:k:k1", "malformed token"),
        ("", "format unknown"),
    ],
)
def test_what_is_not_a_token_is_refused_without_being_quoted(
    cipher: FieldCipher, token: str, complaint: str
) -> None:
    with pytest.raises(DecryptionError, match=complaint) as caught:
        cipher.decrypt(token, EMAIL)
    if token:
        assert token not in caught.value.message


def test_a_token_under_a_key_the_keyring_lacks_names_the_key_and_what_is_held() -> None:
    old = FieldCipher(Keyring([("k1", K1)]))
    token = old.encrypt(NAME, EMAIL)
    current = FieldCipher(Keyring([("k3", K2)]))
    with pytest.raises(DecryptionError) as caught:
        current.decrypt(token, EMAIL)
    message = caught.value.message
    assert "key 'k1'" in message
    assert "STRATUS_ENCRYPTION_KEYS does not hold" in message
    assert "k3" in message
    assert base64.b64encode(K1).decode() not in message
    assert base64.b64encode(K2).decode() not in message


# -- rotation of the keyring -------------------------------------------------------------------------------------


def test_rotation_old_values_still_read_and_reencrypt_moves_them_to_the_active_key() -> None:
    before = FieldCipher(Keyring([("k1", K1)]))
    token = before.encrypt(NAME, EMAIL)
    assert not before.needs_rotation(token)

    rotated = FieldCipher(Keyring.parse(f"{entry('k2', K2)},{entry('k1', K1)}"))
    assert rotated.decrypt(token, EMAIL) == NAME, "values under the old key still read"
    assert rotated.needs_rotation(token)

    moved = rotated.reencrypt(token, EMAIL)
    assert rotated.inspect(moved).key_id == "k2"
    assert not rotated.needs_rotation(moved)
    assert rotated.reencrypt(moved, EMAIL) == moved, "a second run changes nothing"
    with pytest.raises(DecryptionError):
        rotated.reencrypt(token, Cell("users", "name", ROW))  # re-encryption checks the binding as well

    after = FieldCipher(Keyring([("k2", K2)]))  # the old key retired
    assert after.decrypt(moved, EMAIL) == NAME
    with pytest.raises(DecryptionError, match="key 'k1'"):
        after.decrypt(token, EMAIL)


def test_reencrypt_keeps_the_type_of_the_value() -> None:
    before = FieldCipher(Keyring([("k1", K1)]))
    token = before.encrypt_date(date(2027, 3, 1), EMAIL)
    rotated = FieldCipher(Keyring([("k2", K2), ("k1", K1)]))
    assert rotated.decrypt_date(rotated.reencrypt(token, EMAIL), EMAIL) == date(2027, 3, 1)


# -- per-user data keys and crypto-shredding ---------------------------------------------------------------------


def test_data_key_wrap_unwrap_and_values_under_it(cipher: FieldCipher) -> None:
    data_key, wrapped = cipher.new_data_key(USER)
    info = cipher.inspect(wrapped)
    assert (info.kind, info.key_id) == (KeyKind.wrapped, "k2"), "wrapped by the active keyring key"

    token = cipher.encrypt(NAME, EMAIL, data_key=data_key)
    assert cipher.inspect(token) == type(info)("v1", KeyKind.data, data_key.key_id)
    assert not cipher.needs_rotation(token), "a keyring rotation rewraps the data key, not the values"

    unwrapped = cipher.unwrap_data_key(wrapped, USER)
    assert (unwrapped.user_id, unwrapped.key_id) == (USER, data_key.key_id)
    assert cipher.decrypt(token, EMAIL, data_key=unwrapped) == NAME
    assert cipher.decrypt_json(
        cipher.encrypt_json([1, "a"], EMAIL, data_key=unwrapped), EMAIL, data_key=data_key
    ) == [
        1,
        "a",
    ]


def test_a_wrapped_data_key_unwraps_only_for_its_user(cipher: FieldCipher) -> None:
    _, wrapped = cipher.new_data_key(USER)
    with pytest.raises(DecryptionError, match=f"data key of user {OTHER_USER}"):
        cipher.unwrap_data_key(wrapped, OTHER_USER)
    altered = bytearray(payload(wrapped))
    altered[20] ^= 0x80
    with pytest.raises(DecryptionError):
        cipher.unwrap_data_key(with_payload(wrapped, bytes(altered)), USER)
    with pytest.raises(DecryptionError, match="not a wrapped data key"):
        cipher.unwrap_data_key(cipher.encrypt(NAME, EMAIL), USER)


def test_a_value_under_one_users_key_does_not_read_with_anothers(cipher: FieldCipher) -> None:
    mine, _ = cipher.new_data_key(USER)
    theirs, _ = cipher.new_data_key(OTHER_USER)
    token = cipher.encrypt(NAME, EMAIL, data_key=mine)
    with pytest.raises(DecryptionError, match="encrypted under data key"):
        cipher.decrypt(token, EMAIL, data_key=theirs)
    with pytest.raises(DecryptionError, match="pass data_key"):
        cipher.decrypt(token, EMAIL)


def test_destroying_the_wrapped_data_key_shreds_the_values(cipher: FieldCipher) -> None:
    data_key, wrapped = cipher.new_data_key(USER)
    stored = {"name": cipher.encrypt(NAME, Cell("users", "name", USER), data_key=data_key)}

    del data_key, wrapped  # erasure: the wrapped key is deleted, and no process keeps the unwrapped one

    with pytest.raises(DecryptionError, match="none exists any more if the user was erased"):
        cipher.decrypt(stored["name"], Cell("users", "name", USER))
    fresh, _ = cipher.new_data_key(USER)  # the same user's new key reads nothing of the old
    # Not even a key that carries the shredded key's id: the material differs, so the tag fails.
    impostor = DataKey(USER, cipher.inspect(stored["name"]).key_id, secrets.token_bytes(32))
    for attempt in (fresh, impostor):
        with pytest.raises(DecryptionError):
            cipher.decrypt(stored["name"], Cell("users", "name", USER), data_key=attempt)


def test_rotation_rewraps_a_data_key_and_its_values_need_nothing() -> None:
    before = FieldCipher(Keyring([("k1", K1)]))
    data_key, wrapped = before.new_data_key(USER)
    token = before.encrypt(NAME, EMAIL, data_key=data_key)

    rotated = FieldCipher(Keyring([("k2", K2), ("k1", K1)]))
    assert rotated.needs_rotation(wrapped)
    rewrapped = rotated.rewrap_data_key(wrapped, USER)
    assert rotated.inspect(rewrapped).key_id == "k2"
    assert rotated.rewrap_data_key(rewrapped, USER) == rewrapped, "idempotent"

    after = FieldCipher(Keyring([("k2", K2)]))  # k1 retired: only the one rewrapped key was rewritten
    assert after.decrypt(token, EMAIL, data_key=after.unwrap_data_key(rewrapped, USER)) == NAME
    with pytest.raises(DecryptionError, match="key 'k1'"):
        after.unwrap_data_key(wrapped, USER)
    with pytest.raises(ValidationError, match="rewrap_data_key"):
        after.reencrypt(token, EMAIL)


def test_a_data_key_never_shows_its_material(cipher: FieldCipher) -> None:
    data_key, _ = cipher.new_data_key(USER)
    material = data_key._material
    for shown in (repr(data_key), str(data_key)):
        assert material.hex() not in shown
        assert base64.b64encode(material).decode() not in shown
        assert data_key.key_id in shown


# -- input validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "column", "row_id"),
    [
        (None, "email", ROW),
        ("users", 7, ROW),
        ("", "email", ROW),
        ("users", "e mail", ROW),
        ("users", "x" * 129, ROW),
        ("users", "email", "not-a-uuid"),
    ],
)
def test_a_malformed_cell_is_refused(table: object, column: object, row_id: object) -> None:
    with pytest.raises(ValidationError):
        Cell(table, column, row_id)  # type: ignore[arg-type]


def test_a_cell_accepts_the_text_form_of_a_uuid_and_a_json_path() -> None:
    assert Cell("audit_log", "changes.email", str(ROW)) == Cell("audit_log", "changes.email", ROW)  # type: ignore[arg-type]


def test_bad_values_are_refused_without_being_quoted(cipher: FieldCipher) -> None:
    with pytest.raises(ValidationError, match="lone surrogate") as caught:
        cipher.encrypt("Jo\ud800o", EMAIL)
    assert "Jo" not in caught.value.message
    with pytest.raises(ValidationError, match="must be text"):
        cipher.encrypt(b"bytes", EMAIL)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="cell must be a Cell"):
        cipher.encrypt(NAME, ("users", "email", ROW))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="data_key must be a DataKey"):
        cipher.encrypt(NAME, EMAIL, data_key="k1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="naive"):
        cipher.encrypt_datetime(datetime(2026, 1, 1), EMAIL)  # noqa: DTZ001
    with pytest.raises(ValidationError, match="encrypt_datetime"):
        cipher.encrypt_date(datetime(2026, 1, 1, tzinfo=UTC), EMAIL)
    with pytest.raises(ValidationError, match="NaN"):
        cipher.encrypt_json({"x": float("nan")}, EMAIL)
    with pytest.raises(ValidationError, match="token must be an encrypted token"):
        cipher.decrypt(None, EMAIL)  # type: ignore[arg-type]


def test_a_value_past_the_limit_is_refused(cipher: FieldCipher) -> None:
    cipher.encrypt("a" * MAX_PLAINTEXT_BYTES, EMAIL)
    with pytest.raises(ValidationError, match="at most 67,108,864"):
        cipher.encrypt("a" * (MAX_PLAINTEXT_BYTES + 1), EMAIL)


# -- the keyring's configuration ---------------------------------------------------------------------------------


def test_the_first_key_is_active_and_both_base64_alphabets_are_read() -> None:
    urlsafe = base64.urlsafe_b64encode(bytes([251] * 32)).decode().rstrip("=")
    keyring = Keyring.parse(f"  {entry('k-2026', K2)} ,\n k1:{urlsafe}\n")
    assert keyring.active_id == "k-2026"
    assert keyring.key_ids == ("k-2026", "k1")
    assert "k1" in keyring


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "is empty"),
        (base64.b64encode(K1).decode(), "entry 1 is not ID:BASE64"),
        (f"{entry('k1', K1)},", "entry 2 is not ID:BASE64"),
        (entry("K1", K1), "key id of entry 1 must be 1 to 16 characters"),
        (entry("k" * 17, K1), "key id of entry 1 must be 1 to 16"),
        (f"{entry('k1', K1)},{entry('k1', K2)}", "key id 'k1' appears twice"),
        (entry("k1", K1[:16]), "key 'k1' \\(entry 1\\) is not the base64 of exactly 32 bytes"),
        (entry("k1", K1 + b"x"), "exactly 32 bytes"),
        ("k1:" + base64.b64encode(K1).decode()[:-4] + "!!!=", "exactly 32 bytes"),
    ],
)
def test_a_malformed_keyring_is_a_configuration_error_that_never_quotes_a_key(
    text: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        Keyring.parse(text)
    message = caught.value.message
    assert message.startswith("STRATUS_ENCRYPTION_KEYS")
    for material in (K1, K2, K1[:16]):
        assert base64.b64encode(material).decode()[:12] not in message


def test_keyring_arguments_are_validated() -> None:
    with pytest.raises(ValidationError, match="non-empty list"):
        Keyring([])
    with pytest.raises(ValidationError, match="exactly 32 bytes"):
        Keyring([("k1", b"short")])
    with pytest.raises(ValidationError, match="given twice"):
        Keyring([("k1", K1), ("k1", K2)])
    with pytest.raises(ValidationError, match="must be a Keyring"):
        FieldCipher("k1:...")  # type: ignore[arg-type]


def test_no_repr_or_str_shows_key_material() -> None:
    keyring = Keyring([("k2", K2), ("k1", K1)])
    cipher = FieldCipher(keyring)
    index = BlindIndex(K1)
    for shown in (repr(keyring), str(keyring), repr(cipher), repr(index), str(index)):
        for material in (K1, K2):
            assert material.hex() not in shown
            assert base64.b64encode(material).decode() not in shown
            assert base64.urlsafe_b64encode(material).decode() not in shown
    assert repr(keyring) == "Keyring(active_id='k2', key_ids=('k2', 'k1'))"


def test_new_key_entries_parse_and_do_not_repeat() -> None:
    first, second = new_key_entry(), new_key_entry("k9")
    assert re.fullmatch(r"k\d{8}-[0-9a-f]{4}:[A-Za-z0-9+/]{43}=", first)
    keyring = Keyring.parse(f"{second},{first}")
    assert keyring.active_id == "k9"
    assert first.split(":")[1] != second.split(":")[1]
    with pytest.raises(ValidationError, match="key_id must be 1 to 16"):
        new_key_entry("Bad Id")
    assert BlindIndex.parse(new_secret()).email("a@b.c") != BlindIndex.parse(new_secret()).email("a@b.c")


# -- blind index -------------------------------------------------------------------------------------------------


def test_the_blind_index_is_deterministic_and_normalises_the_address() -> None:
    index = BlindIndex.parse(base64.b64encode(K1).decode())
    value = index.email("joao.silva@example.com")
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert index.email("  Joao.Silva@EXAMPLE.com\n") == value
    assert BlindIndex(K1).email("joao.silva@example.com") == value, "the same secret, the same index"
    assert index.email("joao.silva@example.org") != value


def test_the_blind_index_key_is_derived_and_separated() -> None:
    address = "joao.silva@example.com"
    value = BlindIndex(K1).email(address)
    assert BlindIndex(K2).email(address) != value, "another secret, another index"
    # Not a plain HMAC under the secret (nor a hash): the key is derived for this purpose (HKDF, info ...email).
    assert hmac.digest(K1, address.encode(), "sha256").hex() != value
    # And a keyring key with the same bytes does not encrypt anything the index could be compared with.
    token = FieldCipher(Keyring([("k1", K1)])).encrypt(address, EMAIL)
    assert value not in token


def test_the_blind_index_refuses_bad_input_without_quoting_it() -> None:
    index = BlindIndex(K1)
    for bad in ("", "   ", "a" * 321 + "@x"):
        with pytest.raises(ValidationError, match="1 to 320 characters") as caught:
            index.email(bad)
        assert bad.strip() == "" or bad not in caught.value.message
    with pytest.raises(ValidationError, match="must be text"):
        index.email(None)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match="STRATUS_BLIND_INDEX_KEY must be the base64 of exactly 32 bytes"
    ):
        BlindIndex.parse(base64.b64encode(K1[:31]).decode())
    with pytest.raises(ValidationError):
        BlindIndex(b"short")
