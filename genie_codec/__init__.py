"""Private by default: payload encryption for Temporal history.

- ``EncryptionCodec``: AES-256-GCM per payload, key id in the metadata; the first
  configured key encrypts, all of them decrypt (rotation without breaking histories);
  zlib before encryption for large payloads.
- ``build_data_converter``: the pydantic data converter with (or, without keys, without)
  the codec; ``genie_config.connect_temporal`` uses it, so the worker, ``geniectl``, the
  Python API and the inbox all do.
- ``genie_codec.server``: the codec server the Temporal Web UI and CLI call
  (``/encode``, ``/decode``), served by ``geniectl codec`` and ``geniectl dev``.
- ``genie_codec.audit``: the decision trail of a conversation, from its histories
  (``geniectl audit``), and the worker's one-JSON-line-per-entry audit log.

This module imports only what the codec needs, so ``genie_config`` can import it.
"""

from __future__ import annotations

from genie_codec._codec import (
    DEFAULT_COMPRESS_MIN_BYTES,
    ENCODING,
    KEY_ID_KEY,
    EncryptionCodec,
    PayloadDecryptError,
    key_id_of,
    missing_keys_error,
    payload_key_ids,
    payloads_in,
)
from genie_codec._converter import build_data_converter, genie_data_converter
from genie_codec._devkeys import (
    dev_key_file_for,
    ensure_dev_key,
    register_dev_stack,
    unregister_dev_stack,
)
from genie_codec._keys import PayloadKeyConfigError, PayloadKeys, load_keys, new_key, parse_keys

__all__ = [
    "DEFAULT_COMPRESS_MIN_BYTES",
    "ENCODING",
    "KEY_ID_KEY",
    "EncryptionCodec",
    "PayloadDecryptError",
    "PayloadKeyConfigError",
    "PayloadKeys",
    "build_data_converter",
    "dev_key_file_for",
    "ensure_dev_key",
    "genie_data_converter",
    "key_id_of",
    "load_keys",
    "missing_keys_error",
    "new_key",
    "parse_keys",
    "payload_key_ids",
    "payloads_in",
    "register_dev_stack",
    "unregister_dev_stack",
]
