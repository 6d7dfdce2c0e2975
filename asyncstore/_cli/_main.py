"""Running one command: parse, pick the event loop, map errors to exit statuses."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .._errors import StoreError
from ._parser import UsageError, build_parser
from ._ui import UI

__all__ = ["run"]

Command = Callable[[argparse.Namespace, UI], Awaitable[int]]


def _command(name: str) -> Command:
    if name == "demo":
        from ._demo import demo

        return demo
    from . import _commands

    command: Command = getattr(_commands, name)
    return command


def _first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (or ``exc`` itself)."""
    while True:
        inner = getattr(exc, "exceptions", None)  # an ExceptionGroup
        if not inner or not isinstance(inner[0], BaseException):
            return exc
        exc = inner[0]


def _describe_os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename!r}"
    return str(exc)


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command on the chosen anyio backend, return the exit status."""
    ui = UI()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    command = _command(args.command)
    if args.async_backend == "trio" and importlib.util.find_spec("trio") is None:
        ui.error_nowait("--async-backend trio needs trio, which is not installed: pip install trio")
        return 2
    try:
        return anyio.run(functools.partial(command, args, ui), backend=args.async_backend)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        ui.error_nowait(str(exc))
        return 2
    except KeyboardInterrupt:
        ui.error_nowait("interrupted")
        return 130
    except Exception as exc:
        error = _first_error(exc)
        if isinstance(error, StoreError):
            ui.error_nowait(str(error))
            return 1
        if isinstance(error, OSError):
            ui.error_nowait(_describe_os_error(error))
            return 1
        raise
