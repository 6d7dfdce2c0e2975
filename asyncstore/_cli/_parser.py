"""The argument parser of the ``asyncstore`` command."""

from __future__ import annotations

import argparse

__all__ = ["ENV_URL", "UsageError", "build_parser"]

#: The environment variable holding the default store URL.
ENV_URL = "ASYNCSTORE_URL"

_EPILOG = """\
Remote keys are written with a leading colon (:path/to/key); anything else is a
local path. The store is -s/--store URL, or $ASYNCSTORE_URL when -s is not given.

examples:
  asyncstore -s file:///srv/store cp report.pdf :docs/report.pdf
  asyncstore -s file:///srv/store cp :docs/report.pdf ./copy.pdf
  asyncstore -s file:///srv/store ls :docs/
  asyncstore demo --dir demo
"""


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit status 2)."""


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The subcommands repeat the global options with SUPPRESS defaults, so they
    # may be given before or after the command without one hiding the other.
    parser.add_argument(
        "-s",
        "--store",
        metavar="URL",
        default=None if top else argparse.SUPPRESS,
        help=f"the store URL, e.g. file:///srv/store or memory://name (default: ${ENV_URL})",
    )
    parser.add_argument(
        "--async-backend",
        choices=("asyncio", "trio"),
        default="asyncio" if top else argparse.SUPPRESS,
        help="the event loop anyio runs the command on (default: asyncio)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``asyncstore [global options] COMMAND ...``.

    Each subcommand sets ``command`` (its name) in the parsed namespace.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="asyncstore",
        description="Copy, list, inspect and verify objects in an asyncstore store.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncstore {__version__}")
    _add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sub, top=False)
        return sub

    cp = command("cp", "Copy a file to the store, an object to a file, or an object to a key.")
    cp.add_argument("src", metavar="SRC", help="a local path or :key")
    cp.add_argument(
        "dst",
        metavar="DST",
        help="a local path or :key; a key ending in '/' (or a local directory) "
        "gets the source's base name appended",
    )

    ls = command("ls", "List objects: size, last modified (UTC) and key.")
    ls.add_argument(
        "prefix", metavar="PREFIX", nargs="?", default="", help="a key prefix (':' optional)"
    )
    ls.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="list every key under PREFIX instead of rolling up '/' folders",
    )

    stat = command("stat", "Show what the store knows about one object.")
    stat.add_argument("key", metavar="KEY", help="the object's key (':' optional)")

    cat = command("cat", "Write an object's bytes to stdout (verified against its sha256).")
    cat.add_argument("key", metavar="KEY", help="the object's key (':' optional)")

    rm = command("rm", "Delete objects (a key that does not exist is not an error).")
    rm.add_argument("keys", metavar="KEY", nargs="+", help="keys to delete (':' optional)")

    digest = command(
        "digest",
        "Print the sha256 of a local file, or of an object as read back "
        "(checked against the sha256 recorded at upload).",
    )
    digest.add_argument("target", metavar="PATH_OR_KEY", help="a local path or :key")

    demo = command(
        "demo",
        "Upload a folder of sample files (one of 256 MiB) to a local store, list it, "
        "download everything back and verify every sha256.",
    )
    demo.add_argument(
        "--dir",
        required=True,
        metavar="DIR",
        help="working folder: DIR/source (generated if missing), DIR/store, DIR/restored",
    )
    demo.add_argument("--big-mib", type=_positive_int, default=256, help=argparse.SUPPRESS)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value
