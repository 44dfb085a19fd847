"""The codec and its keys, without a server: encryption, rotation, compression, errors."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from genie_codec import (
    ENCODING,
    KEY_ID_KEY,
    EncryptionCodec,
    PayloadDecryptError,
    PayloadKeyConfigError,
    build_data_converter,
    dev_key_file_for,
    ensure_dev_key,
    load_keys,
    parse_keys,
    register_dev_stack,
    unregister_dev_stack,
)
from genie_config import ConfigError, load_settings
from genie_config._settings import data_converter
from tests.codec.conftest import K1, K2
from workflows import SendMessage

SECRET = "the user's secret message 4c1d"


def _payload(text: str = SECRET, n: int = 1) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode() * n)


def test_the_newest_key_encrypts_and_names_itself_in_the_metadata() -> None:
    codec = EncryptionCodec(parse_keys(f"{K2},{K1}"))
    sealed = codec.encrypt(_payload())
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_KEY] == b"k2"
    assert SECRET.encode() not in sealed.SerializeToString()
    assert codec.decrypt(sealed) == _payload()
    # Fresh nonce per payload: the same plaintext never gives the same ciphertext.
    assert codec.encrypt(_payload()).data != sealed.data


def test_rotation_old_payloads_still_decrypt_new_ones_use_the_new_key() -> None:
    old = EncryptionCodec(parse_keys(K1)).encrypt(_payload())
    rotated = EncryptionCodec(parse_keys(f"{K2}\n{K1}  # k1 only decrypts now"))
    assert rotated.decrypt(old) == _payload()
    assert rotated.encrypt(_payload()).metadata[KEY_ID_KEY] == b"k2"


def test_a_missing_key_is_one_line_naming_its_id() -> None:
    sealed = EncryptionCodec(parse_keys(K1)).encrypt(_payload())
    with pytest.raises(PayloadDecryptError) as e:
        EncryptionCodec(parse_keys(K2)).decrypt(sealed)
    assert e.value.key_id == "k1"
    msg = str(e.value)
    assert "'k1'" in msg and "configured: k2" in msg and "\n" not in msg
    # Not an ApplicationError: in a worker it fails the task (retried), not the workflow.
    assert not isinstance(e.value, ApplicationError)


def test_a_wrong_key_under_the_same_id_and_a_tampered_payload_are_refused() -> None:
    sealed = EncryptionCodec(parse_keys(K1)).encrypt(_payload())
    impostor = "k1:" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(PayloadDecryptError, match="'k1' does not open it"):
        EncryptionCodec(parse_keys(impostor)).decrypt(sealed)
    flipped = Payload()
    flipped.CopyFrom(sealed)
    flipped.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadDecryptError):
        EncryptionCodec(parse_keys(K1)).decrypt(flipped)
    # The key id is authenticated: relabelling a payload does not make another key try it.
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID_KEY] = b"k2"
    with pytest.raises(PayloadDecryptError, match="'k2'"):
        EncryptionCodec(parse_keys(f"{K2},{K1}")).decrypt(relabelled)


def _sealed_raw(plain: bytes, kid: str = "k1") -> Payload:
    """A payload sealed under K1 whose opened bytes are ``plain`` (flag byte included):
    what only a buggy writer or a key holder could produce."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from genie_codec._codec import FORMAT, FORMAT_KEY

    key = base64.b64decode(K1.partition(":")[2])
    nonce = os.urandom(12)
    data = nonce + AESGCM(key).encrypt(nonce, plain, FORMAT + b"|" + kid.encode())
    return Payload(
        metadata={"encoding": ENCODING, KEY_ID_KEY: kid.encode(), FORMAT_KEY: FORMAT},
        data=data,
    )


@pytest.mark.parametrize(
    ("plain", "error"),
    [
        (b"", "unknown flag"),
        (b"\x07" + b"x", "unknown flag 7"),
        (b"\x01" + b"not zlib at all", "not valid zlib"),
        (b"\x00" + b"\xff\xff\xff", "does not hold a payload"),
    ],
)
def test_an_authentic_but_malformed_payload_is_a_decrypt_error(plain: bytes, error: str) -> None:
    """Not an IndexError or a protobuf DecodeError escaping: one line naming the key id,
    which the codec server and the worker handle like any other undecryptable payload."""
    with pytest.raises(PayloadDecryptError, match=error) as e:
        EncryptionCodec(parse_keys(K1)).decrypt(_sealed_raw(plain))
    assert e.value.key_id == "k1"


def test_a_forged_key_id_is_described_not_repeated() -> None:
    forged = Payload(
        metadata={"encoding": ENCODING, KEY_ID_KEY: b"k\n" + b"x" * 50_000}, data=b"0" * 40
    )
    with pytest.raises(PayloadDecryptError) as e:
        EncryptionCodec(parse_keys(K1)).decrypt(forged)
    assert "(not a key id: 50002 characters)" in str(e.value) and len(str(e.value)) < 400


def test_inflation_is_bounded_by_the_caller() -> None:
    codec = EncryptionCodec(parse_keys(K1), compress_min_bytes=1024)
    sealed = codec.encrypt(_payload(n=2000))  # ~70 KB, compresses well
    assert codec.decrypt(sealed, max_bytes=1_000_000) == _payload(n=2000)
    for bound in (10_000, 0):  # 0 is not zlib's "no bound"
        with pytest.raises(PayloadDecryptError, match="inflates beyond"):
            codec.decrypt(sealed, max_bytes=bound)


def test_large_payloads_are_compressed_before_encryption_small_ones_are_not() -> None:
    codec = EncryptionCodec(parse_keys(K1), compress_min_bytes=1024)
    big = _payload(n=200)  # ~7 KB of repetitive JSON
    sealed = codec.encrypt(big)
    assert len(sealed.data) < len(big.data) // 4
    assert codec.decrypt(sealed) == big
    small = codec.encrypt(_payload())
    assert len(small.data) > len(_payload().SerializeToString())  # nonce + tag, no zlib
    never = EncryptionCodec(parse_keys(K1), compress_min_bytes=0).encrypt(big)
    assert len(never.data) > len(big.data)


def test_plain_payloads_pass_through_decoding() -> None:
    """Histories from before encryption, and inputs from clients without the codec."""
    assert EncryptionCodec(parse_keys(K1)).decrypt(_payload()) == _payload()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("k1:not-base64!", "key 'k1' is not base64 of 32 bytes"),
        ("k1:" + base64.b64encode(b"short").decode(), "key 'k1' is not base64 of 32 bytes"),
        (f"{K1},{K1}", "key id 'k1' is given twice"),
        ("just-a-key", "not id:base64"),
        ("bad id:" + base64.b64encode(bytes(32)).decode(), "not id:base64"),
        (" , # nothing", "no keys"),
    ],
)
def test_bad_keys_are_named_and_never_echoed(text: str, error: str) -> None:
    with pytest.raises(PayloadKeyConfigError) as e:
        parse_keys(text)
    assert error in str(e.value)
    value = text.partition(":")[2]
    if len(value) > 8:
        assert value not in str(e.value)


def _url_safe_key() -> str:
    """A key whose base64 holds only key-id characters (URL-safe, unpadded), as about
    half of all keys do in standard base64 too."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


@pytest.mark.parametrize(
    "slip",
    [
        "{key}",  # pasted without its id
        "k1-{key}",  # a dash instead of the colon
        "{key}:k1",  # the key before the id
        "k1:{key}\n{key}:k2",  # on the second line of a key file
    ],
)
def test_a_key_in_the_wrong_place_is_not_quoted(slip: str) -> None:
    """A misplaced key is a key id's characters; the error must still quote none of it."""
    key = _url_safe_key()
    with pytest.raises(PayloadKeyConfigError) as e:
        parse_keys(slip.format(key=key))
    message = str(e.value)
    assert "entry" in message and "\n" not in message
    assert not any(key[i : i + 8] in message for i in range(len(key) - 7)), message


def test_keys_from_a_file_or_the_environment_never_both(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# rotated 2024-05\n{K2}\n{K1}\n")
    keys = load_keys(None, f)
    assert keys is not None and keys.ids == ["k2", "k1"]
    assert "k2" in repr(keys) and K2.partition(":")[2] not in repr(keys)
    assert load_keys(None, None) is None
    with pytest.raises(PayloadKeyConfigError, match="both set"):
        load_keys(K1, f)
    with pytest.raises(PayloadKeyConfigError, match="cannot read"):
        load_keys(None, tmp_path / "missing")


async def test_the_converter_encrypts_values_and_failure_messages() -> None:
    conv = build_data_converter(parse_keys(K1))
    (sealed,) = await conv.encode([SendMessage(text=SECRET)])
    assert sealed.metadata[KEY_ID_KEY] == b"k1" and SECRET.encode() not in sealed.data
    (back,) = await conv.decode([sealed], [SendMessage])
    assert back == SendMessage(text=SECRET)
    # A refusal's message names people: with keys it travels as an encrypted payload.
    failure = Failure()
    await conv.encode_failure(ApplicationError(f"'{SECRET}' may not decide", type="X"), failure)
    assert SECRET.encode() not in failure.SerializeToString()
    err = await conv.decode_failure(failure)
    assert SECRET in str(err)


def test_without_keys_the_converter_is_the_plain_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from genie_codec import genie_data_converter

    for name in ("GENIE_PAYLOAD_KEYS", "GENIE_PAYLOAD_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert data_converter(load_settings(), target_host="127.0.0.1:1") is genie_data_converter
    monkeypatch.setenv("GENIE_PAYLOAD_KEYS", "k1:nope")
    with pytest.raises(ConfigError, match="GENIE_PAYLOAD_KEYS: key 'k1'"):
        data_converter(load_settings())


def test_the_worker_refuses_to_start_with_a_bad_key() -> None:
    env = {
        **os.environ,
        "GENIE_API_KEY": "k" * 40,
        "GENIE_PAYLOAD_KEYS": "k7:" + base64.b64encode(b"sixteen bytes!!!").decode(),
    }
    r = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "genie-worker: configuration error: GENIE_PAYLOAD_KEYS: key 'k7' is not base64 of "
        "32 bytes (make one with `geniectl payload-key`)"
    ]


def test_a_dev_key_is_found_only_for_its_running_stack(tmp_path: Path) -> None:
    path, created = ensure_dev_key(tmp_path)
    assert created and path.stat().st_mode & 0o777 == 0o600
    assert "DEVELOPMENT" in path.read_text()
    assert ensure_dev_key(tmp_path) == (path, False)
    keys = load_keys(None, path)
    assert keys is not None and keys.encrypting.startswith("dev-")
    address = "127.0.0.1:1"  # a port no test server gets
    register_dev_stack(address, path)
    try:
        assert dev_key_file_for("localhost:1") == path
        assert dev_key_file_for("127.0.0.1:2") is None
        assert dev_key_file_for("temporal.example.com:1") is None
    finally:
        unregister_dev_stack(address)
    assert dev_key_file_for(address) is None


def test_geniectl_user_hash_and_payload_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from activities._users import user_search_value
    from geniectl.cli import app

    runner = CliRunner()
    monkeypatch.delenv("GENIE_USER_ID_HASH_KEY", raising=False)
    r = runner.invoke(app, ["user-hash", "user-42"])
    assert r.exit_code == 2 and "GENIE_USER_ID_HASH_KEY is not set" in r.output
    monkeypatch.setenv("GENIE_USER_ID_HASH_KEY", "hash-key-0123456789abcdef")
    r = runner.invoke(app, ["user-hash", "user-42"])
    assert r.exit_code == 0
    assert r.output.strip() == user_search_value(b"hash-key-0123456789abcdef", "user-42")
    assert "user-42" not in r.output
    r = runner.invoke(app, ["payload-key", "k2024-06"])
    assert r.exit_code == 0
    keys = parse_keys(r.output)
    assert keys.ids == ["k2024-06"]
    r = runner.invoke(app, ["payload-key", "bad id"])
    assert r.exit_code == 2


def test_the_dev_registry_is_never_written_through_another_users_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry sits in the shared temporary directory under a guessable name.
    Another local user can create it first (open to them) and plant symlinks where
    ``geniectl dev`` writes: nothing may be written through them."""
    import tempfile

    from genie_codec._devkeys import registry_dir

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    key_file, _ = ensure_dev_key(tmp_path)
    victim = tmp_path / "victim-bashrc"
    victim.write_text("precious\n")
    planted = registry_dir()
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)  # what the other user's directory lets them do
    for name in (f"loopback-1.{os.getpid()}.tmp", "loopback-1.json"):
        (planted / name).symlink_to(victim)
    register_dev_stack("127.0.0.1:1", key_file)
    assert victim.read_text() == "precious\n"
    assert dev_key_file_for("127.0.0.1:1") is None
    unregister_dev_stack("127.0.0.1:1")
    assert victim.read_text() == "precious\n"


def test_the_dev_registry_entry_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from genie_codec._devkeys import registry_dir

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    key_file, _ = ensure_dev_key(tmp_path)
    register_dev_stack("127.0.0.1:1", key_file)
    try:
        assert dev_key_file_for("127.0.0.1:1") == key_file
        assert registry_dir().stat().st_mode & 0o777 == 0o700
        (entry,) = registry_dir().iterdir()
        assert entry.stat().st_mode & 0o077 == 0
    finally:
        unregister_dev_stack("127.0.0.1:1")
    assert list(registry_dir().iterdir()) == []


def test_unreadable_json_is_refused_with_the_workflows_invalid_input_type() -> None:
    """The converter cannot import the workflows (it must stay quick to import), so the
    error type is written in both places; this pins them together."""
    from genie_codec._converter import INVALID_INPUT
    from workflows import errors

    assert INVALID_INPUT == errors.INVALID_INPUT
