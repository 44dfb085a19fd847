"""``python -m genie_sim``: the command line (see ``docs/simulator.md``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._config import DEFAULT_API_KEY, MAX_PARALLEL_SKILLS, PRODUCTION_DEFAULTS, SimConfig

PROFILES = ("default", "production")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _parallel(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PARALLEL_SKILLS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_PARALLEL_SKILLS}")
    return value


def _profile(argv: Sequence[str] | None) -> str:
    """``--profile`` (else ``$GENIE_SIM_PROFILE``, else ``default``), read first: it sets
    the defaults of the other flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--profile", choices=PROFILES, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.profile is not None:
        return str(known.profile)
    env = os.environ.get("GENIE_SIM_PROFILE", "").strip() or "default"
    if env not in PROFILES:
        pre.error(f"GENIE_SIM_PROFILE must be one of {', '.join(PROFILES)}, not {env!r}")
    return env


def _oauth_token(text: str) -> tuple[str, str]:
    token, sep, user = text.partition("=")
    if not sep or not token or not user:
        raise argparse.ArgumentTypeError("expected TOKEN=USER_ID")
    return token, user


def parse_args(argv: Sequence[str] | None = None) -> SimConfig:
    """Parse the command line into a :class:`SimConfig`."""
    profile = _profile(argv)
    parser = argparse.ArgumentParser(
        prog="genie-sim", description="A protocol-faithful local Workato genie Headless API."
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=profile,
        help="production: every behaviour reported from the live API at once (each is its "
        "own flag below, and an explicit flag wins); default: $GENIE_SIM_PROFILE, else default",
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
    parser.add_argument(
        "--auth-success",
        dest="no_auth_success",
        action="store_false",
        help="emit runtime_connection.auth_success (undoes --no-auth-success)",
    )
    parser.add_argument("--hide-resumed-output", action=argparse.BooleanOptionalAction)
    parser.add_argument("--max-stream-seconds", type=_positive_float, metavar="SECONDS")
    parser.add_argument(
        "--auth-settle-seconds",
        type=_non_negative_float,
        metavar="SECONDS",
        help="refuse the API key with a transient 403 access_denied / 401 auth_failed for "
        "this long after start or a key rotation (POST /_sim/rotate_key); 0: off "
        "(default: $GENIE_SIM_AUTH_SETTLE_SECONDS, else 0, production 60)",
    )
    parser.add_argument(
        "--idle-while-parked",
        action=argparse.BooleanOptionalAction,
        help="E3 reads idle while a run waits on a confirmation or a connection",
    )
    parser.add_argument(
        "--omit-conversation-id",
        action=argparse.BooleanOptionalAction,
        help="E3 leaves conversation_id out of its body",
    )
    parser.add_argument(
        "--auth-link-404",
        action=argparse.BooleanOptionalAction,
        help="E11 (runtime_connection/{id}/link) answers 404 not_found",
    )
    parser.add_argument(
        "--parallel-skills",
        type=_parallel,
        metavar="N",
        help="every skill runs as N parallel skills: one skill.running, N completions",
    )
    parser.add_argument(
        "--skill-stopped",
        action=argparse.BooleanOptionalAction,
        help="the last end event of every skill is skill.stopped, not skill.completed",
    )
    parser.add_argument(
        "--events-paging",
        action=argparse.BooleanOptionalAction,
        help="E9 sets next_since_created_at when another page exists (--no-events-paging: never)",
    )
    parser.add_argument(
        "--repeat-decision",
        choices=["documented", "409", "400", "200"],
        help="a second E10 for a decided call: documented = 409 skill_call_already_resolved; "
        "409 = an undocumented code; 400; 200 = empty, nothing applied",
    )
    parser.add_argument(
        "--gzip",
        action="store_true",
        help="compress every answer, streams included, for clients that accept gzip",
    )
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
    defaults: dict[str, object] = {
        "hide_resumed_output": False,
        "auth_settle_seconds": _env_settle(parser),
        "idle_while_parked": False,
        "omit_conversation_id": False,
        "auth_link_404": False,
        "parallel_skills": 1,
        "skill_stopped": False,
        "events_paging": True,
        "repeat_decision": "documented",
    }
    if profile == "production":
        defaults.update(PRODUCTION_DEFAULTS)
        if "GENIE_SIM_AUTH_SETTLE_SECONDS" in os.environ:
            defaults["auth_settle_seconds"] = _env_settle(parser)
    parser.set_defaults(**defaults)
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
        profile=args.profile,
        auth_settle_seconds=args.auth_settle_seconds,
        idle_while_parked=args.idle_while_parked,
        omit_conversation_id=args.omit_conversation_id,
        auth_link_404=args.auth_link_404,
        parallel_skills=args.parallel_skills,
        skill_stopped=args.skill_stopped,
        events_paging=args.events_paging,
        repeat_decision=args.repeat_decision,
        gzip=args.gzip,
    )


def _env_settle(parser: argparse.ArgumentParser) -> float:
    raw = os.environ.get("GENIE_SIM_AUTH_SETTLE_SECONDS", "").strip()
    if not raw:
        return 0.0
    try:
        return _non_negative_float(raw)
    except (ValueError, argparse.ArgumentTypeError):
        parser.error(f"GENIE_SIM_AUTH_SETTLE_SECONDS must be a number >= 0, not {raw!r}")


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
