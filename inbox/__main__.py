"""``python -m inbox [--host H] [--port P]``: the same as ``geniectl inbox``."""

from __future__ import annotations

import typer

from inbox._cli import inbox


def main() -> None:
    typer.run(inbox)


if __name__ == "__main__":
    main()
