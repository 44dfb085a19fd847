"""``geniectl inbox`` (also ``python -m inbox``) and ``geniectl keygen``."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from genie_config import ConfigError
from genie_telemetry import setup_tracing
from inbox._settings import load_inbox_config


def inbox(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default: GENIE_INBOX_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: GENIE_INBOX_PORT, 8234).")
    ] = None,
) -> None:
    """Serve the approvers' inbox (web pages and JSON API); settings: GENIE_INBOX_*."""
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        config = load_inbox_config(**overrides)
        setup_tracing("genie-inbox")  # OTEL_*: off unless set
    except ConfigError as e:
        print(f"geniectl inbox: configuration: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    from inbox._server import preflight, serve

    problem = preflight()
    if problem is not None:
        print(f"geniectl inbox: {problem}", file=sys.stderr)
        raise typer.Exit(2)
    serve(config)


def keygen(
    key_id: Annotated[
        str, typer.Option(help="The key's id (GENIE_INBOX_SIGNING_KEY_ID).")
    ] = "inbox-1",
    private_key_file: Annotated[
        Path | None,
        typer.Option(help="Write the private key to this new file (mode 0600) instead."),
    ] = None,
) -> None:
    """Make a key pair for signed decisions: the inbox's key and the workers' line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from workflows.signing import public_key_text

    if not key_id or "," in key_id or ":" in key_id or not key_id.isprintable():
        print("geniectl keygen: --key-id must be printable, without ',' or ':'", file=sys.stderr)
        raise typer.Exit(2)
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    private = base64.b64encode(raw).decode()
    print("# the inbox (keep secret):")
    print(f"GENIE_INBOX_SIGNING_KEY_ID={key_id}")
    if private_key_file is not None:
        try:
            fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            print(f"geniectl keygen: {private_key_file}: {e.strerror}", file=sys.stderr)
            raise typer.Exit(2) from None
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        print(f"GENIE_INBOX_SIGNING_KEY_FILE={private_key_file}")
    else:
        print(f"GENIE_INBOX_SIGNING_KEY={private}")
    print("# every worker (public; comma-separate several keys to rotate):")
    print(f"GENIE_DECISION_KEYS={key_id}:{public_key_text(key)}")
