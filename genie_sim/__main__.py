"""``python -m genie_sim``: the command line (see ``docs/simulator.md``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._config import DEFAULT_API_KEY, SimConfig


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _oauth_token(text: str) -> tuple[str, str]:
    token, sep, user = text.partition("=")
    if not sep or not token or not user:
        raise argparse.ArgumentTypeError("expected TOKEN=USER_ID")
    return token, user


def parse_args(argv: Sequence[str] | None = None) -> SimConfig:
    """Parse the command line into a :class:`SimConfig`."""
    parser = argparse.ArgumentParser(
        prog="genie-sim", description="A protocol-faithful local Workato genie Headless API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("GENIE_SIM_API_KEY") or DEFAULT_API_KEY,
        help="accepted Bearer API key (default: $GENIE_SIM_API_KEY, else sim-dev-key)",
    )
    parser.add_argument("--envelope", choices=["bare", "result"], default="bare")
    parser.add_argument("--ping-interval", type=_positive_float, default=15.0, metavar="SECONDS")
    parser.add_argument("--states", choices=["sdk", "production"], default="sdk")
    parser.add_argument("--no-auth-success", action="store_true")
    parser.add_argument("--hide-resumed-output", action="store_true")
    parser.add_argument("--max-stream-seconds", type=_positive_float, metavar="SECONDS")
    parser.add_argument(
        "--oauth-token",
        type=_oauth_token,
        action="append",
        default=[],
        metavar="TOKEN=USER_ID",
        help="also accept Bearer TOKEN as the OAuth access token of USER_ID (repeatable)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        metavar="PATH",
        help="save the whole state here on shutdown and load it on start (default: none)",
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        default="warning",
    )
    args = parser.parse_args(argv)
    return SimConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        envelope=args.envelope,
        ping_interval=args.ping_interval,
        states=args.states,
        no_auth_success=args.no_auth_success,
        hide_resumed_output=args.hide_resumed_output,
        max_stream_seconds=args.max_stream_seconds,
        oauth_tokens=dict(args.oauth_token),
        log_level=args.log_level,
        state_file=args.state_file,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``genie-sim``)."""
    from ._persist import StateFileError  # imported late so ``--help`` stays fast
    from ._server import serve

    try:
        serve(parse_args(argv))
    except StateFileError as e:
        print(f"genie-sim: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
