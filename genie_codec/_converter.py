"""The data converter every genie-worker client and worker uses, with or without the codec."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import (
    PydanticJSONPlainPayloadConverter,
    PydanticPayloadConverter,
    pydantic_data_converter,
)
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadConverter,
)
from temporalio.exceptions import ApplicationError

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


INVALID_INPUT: Final = "InvalidInput"
"""The error type of input whose JSON cannot be read at all: the same type as
``workflows.errors.INVALID_INPUT`` (a test pins them; this package must not import the
workflows)."""


class _ReadableJson(PydanticJSONPlainPayloadConverter):
    """pydantic's JSON converter, except that JSON it cannot parse (nested deeper than
    pydantic's parser goes, about 200 levels, or not JSON at all) is refused as typed
    invalid input. A plain ``ValidationError`` there comes before any validator of ours
    and fails the workflow task that decodes it, forever for a start input; an
    ``ApplicationError`` fails that start or rejects that update, as any bad field does."""

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        try:
            return super().from_payload(payload, type_hint)
        except ValidationError as e:
            problems = e.errors(include_url=False, include_input=False)
            if not problems or any(p["type"] != "json_invalid" for p in problems):
                raise
            raise ApplicationError(
                f"input: JSON that cannot be read ({problems[0]['msg']})",
                type=INVALID_INPUT,
                non_retryable=True,
            ) from None


class _PayloadConverter(CompositePayloadConverter):
    """``PydanticPayloadConverter`` with ``_ReadableJson`` for its JSON."""

    def __init__(self) -> None:
        super().__init__(
            *(
                _ReadableJson() if isinstance(c, PydanticJSONPlainPayloadConverter) else c
                for c in PydanticPayloadConverter().converters.values()
            )
        )


genie_data_converter = dataclasses.replace(
    pydantic_data_converter, payload_converter_class=_PayloadConverter
)
"""The data converter without keys: ``build_data_converter(None)``."""


def build_data_converter(
    keys: PayloadKeys | None, *, compress_min_bytes: int = DEFAULT_COMPRESS_MIN_BYTES
) -> DataConverter:
    """``genie_data_converter`` (pydantic's, refusing JSON it cannot read as typed
    invalid input) without keys; with keys, the same converter with
    ``EncryptionCodec`` and failures whose message and stack trace are payloads too (so a
    refusal naming an approver, or an API error quoting a message, is encrypted)."""
    if keys is None:
        return genie_data_converter
    return dataclasses.replace(
        genie_data_converter,
        payload_codec=EncryptionCodec(keys, compress_min_bytes=compress_min_bytes),
        failure_converter_class=FailureConverter,
    )
