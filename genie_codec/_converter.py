"""The data converter every genie-worker client and worker uses, with or without the codec."""

from __future__ import annotations

import dataclasses

from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadConverter,
)

from genie_codec._codec import DEFAULT_COMPRESS_MIN_BYTES, EncryptionCodec, PayloadDecryptError
from genie_codec._keys import PayloadKeys


class FailureConverter(DefaultFailureConverterWithEncodedAttributes):
    """Failure messages and stack traces go into an encoded (so encrypted) payload, as
    with the SDK's ``DefaultFailureConverterWithEncodedAttributes``, except the codec's
    own ``PayloadDecryptError``: it names only a key id, and has to be readable by
    whoever lacks that key (a worker's failed task, in the Web UI without the codec)."""

    def to_failure(
        self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        super().to_failure(exception, payload_converter, failure)
        if isinstance(exception, PayloadDecryptError):
            failure.ClearField("encoded_attributes")
            failure.message = str(exception)


def build_data_converter(
    keys: PayloadKeys | None, *, compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES
) -> DataConverter:
    """``pydantic_data_converter`` as is without keys; with keys, the same converter with
    ``EncryptionCodec`` and failures whose message and stack trace are payloads too (so a
    refusal naming an approver, or an API error quoting a message, is encrypted)."""
    if keys is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys, compress_min_bytes=compress_min_bytes),
        failure_converter_class=FailureConverter,
    )
