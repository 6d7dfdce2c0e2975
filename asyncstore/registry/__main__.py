"""``python -m asyncstore.registry serve STORE_URL [options]``: run the registry."""

from __future__ import annotations

import argparse
import sys

from ._cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (``serve STORE_URL ...``) and run the registry; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m asyncstore.registry",
        description="An OCI registry (distribution spec v1.1) over any asyncstore store.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve the registry until SIGINT or SIGTERM", description=run.__doc__
    )
    add_arguments(serve)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
