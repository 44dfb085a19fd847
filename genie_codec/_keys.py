"""Payload keys: ``id:base64`` pairs, the first one encrypts, every one decrypts.

``GENIE_PAYLOAD_KEYS="k2:…,k1:…"`` or a file (``GENIE_PAYLOAD_KEY_FILE``) holding the
same pairs, comma- or newline-separated, ``#`` starting a comment. Each key is 32 random
bytes (AES-256) in standard or URL-safe base64. Errors name the setting and the key id,
never a key's value.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

KEY_BYTES = 32
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a key id may be: it travels in every payload's metadata, so it stays short and
plain (letters, digits, ``.``, ``_``, ``-``; at most 64)."""
SHOWN_ID_MAX = 40
"""Errors quote a key id only when shorter than this: a 32-byte key is at least 43
characters in base64 (64 in hex), so a key written where the id goes is never quoted."""


class PayloadKeyConfigError(ValueError):
    """The payload keys are misconfigured; ``str(e)`` is one line naming the setting."""


@dataclass(frozen=True)
class PayloadKeys:
    """An ordered set of keys: ``encrypting`` (the first) encrypts, all of them decrypt."""

    keys: Mapping[str, bytes]
    """Key id -> 32-byte key, newest (the encrypting one) first."""

    def __post_init__(self) -> None:
        if not self.keys:
            raise PayloadKeyConfigError("no payload keys given")

    @property
    def encrypting(self) -> str:
        """The id of the key new payloads are encrypted with."""
        return next(iter(self.keys))

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys)

    def __repr__(self) -> str:  # never the key bytes
        return f"PayloadKeys(ids={self.ids!r})"


def parse_keys(text: str, *, source: str = "GENIE_PAYLOAD_KEYS") -> PayloadKeys:
    """``id:base64`` pairs (comma- or newline-separated, ``#`` comments) -> keys.

    Raises:
        PayloadKeyConfigError: Naming ``source`` and the offending key id (never a key).
    """
    keys: dict[str, bytes] = {}
    n = 0
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            item = item.strip()
            if not item:
                continue
            n += 1
            kid, sep, value = item.partition(":")
            kid = kid.strip()
            if not sep or not KEY_ID.fullmatch(kid):
                # Nothing of the entry is quoted: without a colon it may be a bare key.
                raise PayloadKeyConfigError(
                    f"{source}: entry {n} is not id:base64 with a plain key id (letters, "
                    "digits, '.', '_', '-'; at most 64)"
                )
            raw = _b64(value.strip())
            if raw is None or len(raw) != KEY_BYTES:
                raise PayloadKeyConfigError(
                    f"{source}: key {_named(kid, n)} is not base64 of {KEY_BYTES} bytes "
                    "(make one with `geniectl payload-key`)"
                )
            if kid in keys:
                raise PayloadKeyConfigError(f"{source}: key id {_named(kid, n)} is given twice")
            keys[kid] = raw
    if not keys:
        raise PayloadKeyConfigError(f"{source}: no keys in it")
    return PayloadKeys(keys)


def _named(kid: str, n: int) -> str:
    """How an error names entry ``n``'s key id: quoted, unless it could be a key (one
    pasted before the colon, ``<key>:<id>``, makes a valid id too)."""
    if len(kid) < SHOWN_ID_MAX:
        return repr(kid)
    return f"of entry {n} (not shown, it is as long as a key: is the key before the colon?)"


def _b64(text: str) -> bytes | None:
    padded = (text + "=" * (-len(text) % 4)).encode()
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(padded, altchars=altchars, validate=True)
        except (ValueError, binascii.Error):
            continue
    return None


def load_keys(keys: str | None, key_file: Path | None) -> PayloadKeys | None:
    """The configured keys (``GENIE_PAYLOAD_KEYS`` or ``GENIE_PAYLOAD_KEY_FILE``), or None
    when neither is set: payloads then stay plain (no codec at all)."""
    keys = keys if keys and keys.strip() else None
    if keys is not None and key_file is not None:
        raise PayloadKeyConfigError(
            "GENIE_PAYLOAD_KEYS and GENIE_PAYLOAD_KEY_FILE are both set; set one"
        )
    if keys is not None:
        return parse_keys(keys)
    if key_file is not None:
        try:
            text = key_file.read_text()
        except OSError as e:
            raise PayloadKeyConfigError(
                f"GENIE_PAYLOAD_KEY_FILE: cannot read {key_file} ({e.strerror})"
            ) from None
        return parse_keys(text, source=f"GENIE_PAYLOAD_KEY_FILE ({key_file})")
    return None


def new_key(key_id: str) -> str:
    """A fresh ``id:base64`` line (32 bytes from the OS's CSPRNG)."""
    if not KEY_ID.fullmatch(key_id):
        raise PayloadKeyConfigError(
            f"key id {key_id[:70]!r}: letters, digits, '.', '_', '-' (at most 64)"
        )
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
