"""``python -m genie_codec [--host H] [--port P]``: the codec server (``geniectl codec``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from genie_config import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genie_codec", description=__doc__)
    parser.add_argument("--host", help="listen address (GENIE_CODEC_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (GENIE_CODEC_PORT, 8235)")
    args = parser.parse_args(argv)
    from genie_codec.server import load_codec_config, serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        config = load_codec_config(**overrides)
    except ConfigError as e:
        print(f"genie codec server: configuration error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
