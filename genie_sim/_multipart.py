"""Minimal ``multipart/form-data`` parsing for E7 (python-multipart is not a dependency)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY_RE = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_NAME_RE = re.compile(r'\bname="([^"]*)"', re.IGNORECASE)
_FILENAME_RE = re.compile(r'\bfilename="([^"]*)"', re.IGNORECASE)
_CTYPE_RE = re.compile(r"^content-type:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FilePart:
    """One form part."""

    name: str
    filename: str
    content_type: str
    content: bytes


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, or ``None``."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY_RE.search(content_type)
    return match.group(1).strip().encode("latin-1") if match else None


def find_part(body: bytes, boundary: bytes, name: str) -> FilePart | None:
    """Return the first part called ``name``.

    Args:
        body: The whole request body.
        boundary: From :func:`boundary_of`.
        name: Form field name.
    """
    delimiter = b"--" + boundary
    for segment in body.split(delimiter)[1:]:
        if segment.startswith(b"--"):
            break  # closing delimiter
        segment = segment.removeprefix(b"\r\n")
        head_end = segment.find(b"\r\n\r\n")
        if head_end < 0:
            continue
        head = segment[:head_end].decode("latin-1")
        name_match = _NAME_RE.search(head)
        if name_match is None or name_match.group(1) != name:
            continue
        filename = _FILENAME_RE.search(head)
        ctype = _CTYPE_RE.search(head)
        return FilePart(
            name=name,
            filename=filename.group(1) if filename else "",
            content_type=ctype.group(1).strip() if ctype else "application/octet-stream",
            content=segment[head_end + 4 :].removesuffix(b"\r\n"),
        )
    return None
