"""The argument parser of the ``asyncstore`` command."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from ._globs import Rule

__all__ = ["ENV_URL", "UsageError", "build_parser", "parse_size"]

#: The environment variable holding the default store URL.
ENV_URL = "ASYNCSTORE_URL"

_EPILOG = """\
Where things are:
  s3://bucket/key, gs://bucket/key, az://container/key, memory://name/key
                a key in a store named by its URL (the query string holds its options)
  :key          a key in the store of -s/--store URL (or $ASYNCSTORE_URL)
  name:key      a key in a named store of ~/.config/asyncstore/stores.toml
  -             stdin or stdout
  anything else is a local path (file:///root is a local store's root).

Exit status: 0 success, 1 something failed (each failure is one line on stderr),
2 usage error, 130 interrupted (Ctrl-C: no partial objects or files are left).

examples:
  asyncstore cp report.pdf s3://bucket/docs/
  asyncstore sync ./photos gs://bucket/photos --delete --exclude '*.tmp'
  asyncstore ls -lh s3://bucket/logs/2024-*/
  asyncstore -s file:///srv/store cat :docs/report.pdf | less
  asyncstore demo --dir demo
"""


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit status 2)."""


_SIZE = re.compile(r"(?i)\s*(\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*")
_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"8M"``, ``"8MiB"``, ``"8MB"`` (all 8 MiB), ``"65536"``: a size of at least 1 byte."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (write bytes, or a number with K, M, G or T: 8M, 64MiB)"
        )
    value = int(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, not {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> int:
    value = _positive_int(text)
    if value > 7 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"at most 604800 s (7 days), not {value}")
    return value


def _metadata_item(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


class _RuleAction(argparse.Action):
    """``--include``/``--exclude``: appended to one list, in command-line order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        rules = list(getattr(namespace, self.dest, None) or [])
        rules.append(Rule(include=option_string == "--include", pattern=str(values)))
        setattr(namespace, self.dest, rules)


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The subcommands repeat the global options with SUPPRESS defaults, so they
    # may be given before or after the command without one hiding the other.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument(
        "-s",
        "--store",
        metavar="URL",
        default=default(None),
        help=f"the store of :key arguments: a URL or a named store (default: ${ENV_URL})",
    )
    parser.add_argument(
        "--async-backend",
        choices=("asyncio", "trio"),
        default=default("asyncio"),
        help="the event loop anyio runs the command on (default: asyncio)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="results as JSON, one object per line (ls, stat, du, cp, mv, sync, rm, ...)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="no progress, notes or per-file lines; errors and requested data only",
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (rsync rules: first match wins)")
    for flag, what in (("--include", "keep"), ("--exclude", "skip")):
        group.add_argument(
            flag,
            dest="rules",
            action=_RuleAction,
            default=[],
            metavar="GLOB",
            help=f"{what} paths matching GLOB (relative to the tree; repeatable)",
        )


def _add_transfer_options(parser: argparse.ArgumentParser, *, uploads: bool = True) -> None:
    group = parser.add_argument_group("transfers")
    group.add_argument(
        "-j",
        "--jobs",
        type=_positive_int,
        default=16,
        metavar="N",
        help="files transferred at once (default: 16)",
    )
    group.add_argument(
        "--part-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="part / range size, e.g. 16M (default: the store's, 8 MiB)",
    )
    group.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        metavar="N",
        help="parts / ranges in flight per file (default: the store's, 8)",
    )
    group.add_argument(
        "--memory",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="part buffers held at once by all the files in flight, e.g. 1G "
        "(default: 256M); a file whose parts would not fit gets fewer parts in flight",
    )
    group.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the sha256 recorded at upload when reading",
    )
    if uploads:
        group.add_argument(
            "--content-type",
            default=None,
            metavar="TYPE",
            help="content type of what is written (default: guessed from the file name, "
            "or the source object's)",
        )
        group.add_argument(
            "--metadata",
            type=_metadata_item,
            action="append",
            default=None,
            metavar="NAME=VALUE",
            help="user metadata of what is written (repeatable; default: none, "
            "or the source object's)",
        )


def _add_help(parser: argparse.ArgumentParser, *, short: bool) -> None:
    flags = ("-h", "--help") if short else ("--help",)
    parser.add_argument(*flags, action="help", help="show this help and exit")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``asyncstore [global options] COMMAND ...``.

    Each subcommand sets ``command`` (its name) in the parsed namespace.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="asyncstore",
        description="Copy, sync, list, inspect and verify objects in S3, GCS, Azure "
        "and local stores, with sha256 checked end to end.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asyncstore {__version__}")
    _add_global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, *, short_help: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, add_help=False)
        _add_help(sub, short=short_help)
        _add_global_options(sub, top=False)
        return sub

    for name, help_text in (
        ("cp", "Copy files, objects and trees (-r) between local paths, stores and stdio."),
        ("mv", "Move files, objects and trees: copy, then delete each source copied."),
    ):
        sub = command(name, help_text)
        sub.add_argument("src", nargs="+", metavar="SRC", help="a path, URL, :key, name:key or -")
        sub.add_argument(
            "dst",
            metavar="DST",
            help="a path, URL, :key, name:key or -; a key ending in '/' (or a folder) "
            "receives the source's base name",
        )
        sub.add_argument(
            "-r", "--recursive", action="store_true", help="copy the contents of trees"
        )
        sub.add_argument(
            "-n", "--dry-run", action="store_true", help="print what would be done, do nothing"
        )
        _add_filters(sub)
        _add_transfer_options(sub)

    sync = command(
        "sync",
        "Make DST hold what SRC holds: transfer what is new or changed (sha256 when both "
        "sides know it, else size and modification time).",
    )
    sync.add_argument("src", metavar="SRC", help="a local folder, or a prefix in a store")
    sync.add_argument("dst", metavar="DST", help="a local folder, or a prefix in a store")
    sync.add_argument(
        "--delete", action="store_true", help="delete what DST holds and SRC does not"
    )
    sync.add_argument(
        "-n", "--dry-run", action="store_true", help="print what would be done, do nothing"
    )
    sync.add_argument(
        "-c",
        "--checksum",
        action="store_true",
        help="compare by sha256, hashing local files (and objects with none recorded)",
    )
    _add_filters(sync)
    _add_transfer_options(sync)

    ls = command(
        "ls", "List objects (globs allowed): keys, or with -l size, date and key.", short_help=False
    )
    ls.add_argument(
        "locations", nargs="*", metavar="LOCATION", help="URLs, :keys or key prefixes, globs"
    )
    ls.add_argument("-r", "--recursive", action="store_true", help="list every key below")
    ls.add_argument("-l", "--long", action="store_true", help="size, last modified (UTC), key")
    ls.add_argument("-h", "--human", action="store_true", help="sizes in KiB, MiB, GiB")

    du = command("du", "Total size and object count below prefixes.", short_help=False)
    du.add_argument("locations", nargs="*", metavar="LOCATION", help="URLs, :prefixes, globs")
    du.add_argument("-h", "--human", action="store_true", help="sizes in KiB, MiB, GiB")
    du.add_argument(
        "--summarize", action="store_true", help="one total per LOCATION, no subfolders"
    )

    stat = command("stat", "Show what the store knows about objects.")
    stat.add_argument("locations", nargs="+", metavar="KEY", help="URLs or :keys")

    cat = command("cat", "Write objects' bytes to stdout (sha256 verified).")
    cat.add_argument("locations", nargs="+", metavar="KEY", help="URLs or :keys")
    cat.add_argument("--no-verify", action="store_true", help="do not check the sha256")

    rm = command("rm", "Delete objects; with -r, everything below prefixes.")
    rm.add_argument("locations", nargs="+", metavar="KEY", help="URLs, :keys, prefixes, globs")
    rm.add_argument("-r", "--recursive", action="store_true", help="delete every key below")
    rm.add_argument(
        "-n", "--dry-run", action="store_true", help="print what would be deleted, do nothing"
    )
    _add_filters(rm)

    presign = command("presign", "Print a URL that grants GET (or PUT) of one key for a while.")
    presign.add_argument("location", metavar="KEY", help="a URL or :key")
    presign.add_argument(
        "--expires",
        type=_seconds,
        default=3600,
        metavar="SECONDS",
        help="how long the URL works (default: 3600, at most 7 days)",
    )
    presign.add_argument(
        "--method", choices=("GET", "PUT"), default="GET", help="what it allows (default: GET)"
    )

    digest = command(
        "digest",
        "Print the sha256 of files and objects (objects are read back and checked against "
        "the sha256 recorded at upload).",
    )
    digest.add_argument("locations", nargs="+", metavar="PATH_OR_KEY", help="paths, URLs, :keys")
    digest.add_argument("-r", "--recursive", action="store_true", help="every file of trees")
    _add_filters(digest)

    verify = command(
        "verify",
        "Check that two trees (a local folder, a prefix in a store) hold the same bytes, "
        "by sha256; exit 1 if anything differs or is missing.",
    )
    verify.add_argument("src", metavar="SRC", help="a local folder or a prefix in a store")
    verify.add_argument("dst", metavar="DST", help="a local folder or a prefix in a store")
    verify.add_argument(
        "--recorded",
        action="store_true",
        help="trust the sha256 recorded at upload instead of reading objects back",
    )
    verify.add_argument(
        "-j", "--jobs", type=_positive_int, default=8, metavar="N", help="files hashed at once"
    )
    _add_filters(verify)

    command("stores", "List the named stores of the config file.")

    demo = command(
        "demo",
        "Upload a folder of sample files (one of 256 MiB) to a store (-s, else a local one "
        "in DIR/store), list it, download everything back and verify every sha256.",
    )
    demo.add_argument(
        "--dir",
        required=True,
        metavar="DIR",
        help="working folder: DIR/source (generated if missing), DIR/store, DIR/restored",
    )
    demo.add_argument("--big-mib", type=_positive_int, default=256, help=argparse.SUPPRESS)

    registry = command("registry", "Serve an OCI registry over a store (the 'registry' extra).")
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="run the registry server",
        description="Run the OCI registry server; its options come with the 'registry' extra.",
        add_help=False,
        prefix_chars="\0",  # every argument goes to the registry's own parser
    )
    serve.add_argument("registry_args", nargs=argparse.REMAINDER)
    return parser
