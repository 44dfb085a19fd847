"""docs/privacy.md states the export's schema, columns and settings as the code has them."""

from __future__ import annotations

import json
import re

from genie_codec.audit import CSV_FIELDS, audit_schema
from genie_codec.server import CodecServerSettings
from genie_config import GenieSettings
from tests.services import REPO_ROOT

DOC = REPO_ROOT / "docs" / "privacy.md"


def test_the_documented_schema_is_the_models() -> None:
    text = DOC.read_text()
    (block,) = re.findall(r"```json\n(.*?)\n```", text, re.S)
    assert json.loads(block) == audit_schema(), "regenerate: geniectl audit --schema"
    columns = re.search(r"CSV columns, in this order: (.*?) \(", text, re.S)
    assert columns is not None
    assert re.findall(r"`(\w+)`", columns.group(1)) == CSV_FIELDS
    for field in CSV_FIELDS:
        assert f"`{field}`" in text, field


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    for name in CodecServerSettings.model_fields:
        env = f"GENIE_CODEC_{name.upper()}"
        short = "_" + name.upper()
        assert env in text or f"`{short}`" in text or f"{short}`" in text, env
    for name in ("payload_keys", "payload_key_file", "payload_compress_min_bytes", "audit_log"):
        assert name in GenieSettings.model_fields
        assert f"GENIE_{name.upper()}" in text, name
