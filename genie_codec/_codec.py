"""The payload codec: AES-256-GCM per payload, the key id in its metadata.

An encoded payload is::

    metadata: encoding = "binary/encrypted", encryption-key-id = <id>,
              encryption-format = "genie-aesgcm-v1"
    data:     nonce (12 bytes) || AES-256-GCM(key, nonce, plain, aad) (ciphertext + tag)
    plain:    flag (1 byte: 0 as is, 1 zlib) || the original Payload, serialized

The associated data binds the format and the key id, so a payload whose key id was
edited fails to open instead of being tried under another key. Compression happens
before encryption (ciphertext does not compress), only for payloads of at least
``compress_min_bytes`` and only when it saves space.

Decoding leaves payloads that are not ``binary/encrypted`` as they are: histories
recorded before encryption was switched on, and inputs sent by clients without the codec
(the ``temporal`` CLI), stay readable. A payload that cannot be decrypted raises
``PayloadDecryptError``: one line naming the key id. It is deliberately not a Temporal
``ApplicationError``: in a worker, that would fail the workflow for good, while any
other error fails only the workflow *task*, which Temporal retries, so the conversation
waits, intact, until a worker with the key picks it up.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError, Message
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from genie_codec._keys import KEY_ID, PayloadKeys

ENCODING = b"binary/encrypted"
KEY_ID_KEY = "encryption-key-id"
FORMAT_KEY = "encryption-format"
FORMAT = b"genie-aesgcm-v1"
NONCE_BYTES = 12
TAG_BYTES = 16
RAW, ZLIB = 0, 1
DEFAULT_COMPRESS_MIN_BYTES = 4096
"""Payloads from this size on are zlib-compressed before encryption (0: never)."""
MAX_INFLATED_BYTES = 64 * 1024 * 1024
"""A compressed payload may not inflate beyond this (Temporal's limit is 2 MB by
default; this only stops a decompression bomb)."""


class PayloadDecryptError(Exception):
    """A payload could not be decrypted; ``str(e)`` names its key id, never a key."""

    def __init__(self, message: str, key_id: str | None) -> None:
        super().__init__(message)
        self.key_id = key_id


class PayloadTooLargeError(PayloadDecryptError):
    """A compressed payload inflates beyond the bound it was decrypted with."""


class EncryptionCodec(PayloadCodec):
    """Encrypts with ``keys.encrypting``; decrypts with whichever key a payload names."""

    def __init__(
        self, keys: PayloadKeys, *, compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES
    ) -> None:
        self.keys = keys
        self.compress_min_bytes = compress_min_bytes
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    # Synchronous halves, for the codec server and for tests.

    def encrypt(self, payload: Payload) -> Payload:
        kid = self.keys.encrypting
        plain = payload.SerializeToString()
        flag = RAW
        if self.compress_min_bytes and len(plain) >= self.compress_min_bytes:
            packed = zlib.compress(plain, 6)
            if len(packed) < len(plain):
                plain, flag = packed, ZLIB
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[kid].encrypt(nonce, bytes([flag]) + plain, _aad(kid))
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_KEY: kid.encode(), FORMAT_KEY: FORMAT},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload, *, max_bytes: int = MAX_INFLATED_BYTES) -> Payload:
        """The payload ``payload`` seals (as it is when not encrypted). ``max_bytes``
        bounds what a compressed payload may inflate to (at least 1: zlib takes 0 for
        no bound at all)."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        kid = payload.metadata.get(KEY_ID_KEY, b"").decode(errors="replace")
        cipher = self._ciphers.get(kid)
        shown = shown_key_id(kid)
        if cipher is None:
            raise PayloadDecryptError(
                f"cannot decrypt a payload encrypted with key {shown}: that key "
                f"is not configured here (configured: {', '.join(self.keys.ids)}); add it to "
                "GENIE_PAYLOAD_KEYS or GENIE_PAYLOAD_KEY_FILE, after the encrypting key",
                kid or None,
            )
        if payload.metadata.get(FORMAT_KEY, FORMAT) != FORMAT:
            raise PayloadDecryptError(
                f"cannot decrypt a payload encrypted with key {shown}: unknown format "
                f"{payload.metadata[FORMAT_KEY][:40].decode(errors='replace')!r}",
                kid,
            )
        data = payload.data
        try:
            opened = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(kid))
        except (InvalidTag, ValueError):
            raise PayloadDecryptError(
                f"cannot decrypt a payload encrypted with key {shown}: the configured key "
                f"{shown} does not open it (a different key under the same id, or the "
                "payload was altered)",
                kid,
            ) from None
        # From here on the payload is authentic, so a fault is a writer's bug (or a key
        # holder's forgery): still one PayloadDecryptError, never a stray exception.
        flag, body = (opened[0], opened[1:]) if opened else (None, b"")
        if flag == ZLIB:
            inflater = zlib.decompressobj()
            try:
                body = inflater.decompress(body, max(max_bytes, 1))
            except zlib.error:
                raise PayloadDecryptError(
                    f"a payload encrypted with key {shown} is not valid zlib", kid
                ) from None
            if inflater.unconsumed_tail:
                raise PayloadTooLargeError(
                    f"a payload encrypted with key {shown} inflates beyond {max_bytes} bytes",
                    kid,
                )
        elif flag != RAW:
            raise PayloadDecryptError(
                f"a payload encrypted with key {shown} has an unknown flag {flag}", kid
            )
        inner = Payload()
        try:
            inner.ParseFromString(body)
        except DecodeError:
            raise PayloadDecryptError(
                f"a payload encrypted with key {shown} does not hold a payload", kid
            ) from None
        return inner


def shown_key_id(kid: str) -> str:
    """A payload's key id as messages quote it: it comes from the payload, so one that
    is not a key id (a megabyte of text, a newline) is described, not repeated."""
    if not kid:
        return "'(none)'"
    if KEY_ID.fullmatch(kid):
        return repr(kid)
    return f"(not a key id: {len(kid)} characters)"


def _aad(kid: str) -> bytes:
    return FORMAT + b"|" + kid.encode()


def key_id_of(payload: Payload) -> str | None:
    """The key id an encrypted payload names; None for a plain payload."""
    if payload.metadata.get("encoding") != ENCODING:
        return None
    return payload.metadata.get(KEY_ID_KEY, b"").decode(errors="replace")


def payloads_in(messages: Iterable[Message]) -> Iterator[Payload]:
    """Every payload inside ``messages`` (history events, say), depth first. Search
    attributes are skipped: they are never encoded."""

    def walk(m: Message) -> Iterator[Payload]:
        if isinstance(m, Payload):
            yield m
            return
        for fd, value in m.ListFields():
            if fd.message_type is None or fd.name == "search_attributes":
                continue
            if isinstance(value, Message):
                yield from walk(value)
                continue
            items = value.values() if hasattr(value, "values") else value  # map or list
            for item in items:
                if isinstance(item, Message):
                    yield from walk(item)

    for m in messages:
        yield from walk(m)


def payload_key_ids(messages: Iterable[Message]) -> set[str | None]:
    """The key ids of every payload inside ``messages``; ``None`` for a plain payload."""
    return {key_id_of(p) for p in payloads_in(messages)}


def missing_keys_error(codec: object, used: Iterable[str | None]) -> PayloadDecryptError | None:
    """Why payloads encrypted with the key ids ``used`` cannot all be read with ``codec``
    (an ``EncryptionCodec``, or anything else for none), or None if they can."""
    configured = set(codec.keys.ids) if isinstance(codec, EncryptionCodec) else set()
    missing = sorted({k for k in used if k is not None} - configured)
    if not missing:
        return None
    names = ", ".join(shown_key_id(k) for k in missing[:5]) + (
        f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    )
    if not configured:
        return PayloadDecryptError(
            f"payloads are encrypted (key {names}) and no payload keys are configured here: "
            "set GENIE_PAYLOAD_KEYS or GENIE_PAYLOAD_KEY_FILE (as the worker has them)",
            missing[0],
        )
    assert isinstance(codec, EncryptionCodec)
    return PayloadDecryptError(
        f"cannot decrypt payloads encrypted with key {names}: not configured here "
        f"(configured: {', '.join(codec.keys.ids)}); add it to GENIE_PAYLOAD_KEYS or "
        "GENIE_PAYLOAD_KEY_FILE, after the encrypting key",
        missing[0],
    )
