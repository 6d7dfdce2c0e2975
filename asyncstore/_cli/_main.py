"""Running one command: parse, pick the event loop, handle Ctrl-C, map errors to exit statuses.

Exit statuses: 0 success; 1 something failed (the store, a local file, a
digest; each failure is one line ``asyncstore: error: ...`` on stderr); 2
usage error; 130 interrupted. Ctrl-C (SIGINT) cancels the command's tasks:
each transfer cleans up after itself (uploads are aborted, temp files
removed) before the command exits with 130. A second Ctrl-C during that
clean-up stops at once.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.abc

from .. import StoreError
from .._stream._tasks import task_group
from ._globs import Filter
from ._locations import Resolver
from ._parser import UsageError, build_parser
from ._transfer import describe_error
from ._ui import UI, silence_stdout

__all__ = ["EXIT_INTERRUPTED", "run"]

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13

Command = Callable[[argparse.Namespace, UI], Awaitable[int]]

#: Where each command lives (imported only when it runs).
_COMMANDS = {
    "cp": ("_copy", "cp"),
    "mv": ("_copy", "mv"),
    "sync": ("_sync", "sync"),
    "ls": ("_inspect", "ls"),
    "du": ("_inspect", "du"),
    "stat": ("_inspect", "stat"),
    "cat": ("_inspect", "cat"),
    "rm": ("_remove", "rm"),
    "presign": ("_inspect", "presign"),
    "digest": ("_verify", "digest"),
    "verify": ("_verify", "verify"),
    "stores": ("_inspect", "stores"),
    "demo": ("_demo", "demo"),
}


def _command(name: str) -> Command:
    module_name, attribute = _COMMANDS[name]
    module = importlib.import_module(f"{__package__}.{module_name}")
    command: Command = getattr(module, attribute)
    return command


def _first_error(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (or ``exc`` itself)."""
    while True:
        inner = getattr(exc, "exceptions", None)  # an ExceptionGroup
        if not inner or not isinstance(inner[0], BaseException):
            return exc
        exc = inner[0]


class _Interrupt:
    """Turns SIGINT into the cancellation of the command (then exit status 130)."""

    def __init__(self, ui: UI) -> None:
        self.ui = ui
        self.received = False

    async def watch(
        self,
        scope: anyio.CancelScope,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            receiver = anyio.open_signal_receiver(signal.SIGINT)
            signals = receiver.__enter__()
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            task_status.started()
            return
        try:
            task_status.started()
            async for _ in signals:
                if self.received:
                    raise KeyboardInterrupt  # a second Ctrl-C: stop now
                self.received = True
                scope.cancel()
        finally:
            receiver.__exit__(None, None, None)


async def _entry(command: Command, args: argparse.Namespace, ui: UI, interrupt: _Interrupt) -> int:
    status = EXIT_INTERRUPTED
    try:
        with anyio.CancelScope() as work:
            async with task_group() as tg:
                await tg.start(interrupt.watch, work)
                try:
                    status = await command(args, ui)
                finally:
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await ui.flush()
    return EXIT_INTERRUPTED if interrupt.received else status


def _run_registry(args: argparse.Namespace, ui: UI) -> int:
    """``asyncstore registry serve ...``: hand over to the registry's own command line."""
    try:
        module = importlib.import_module("asyncstore.registry._cli")
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "asyncstore.registry"
        ui.error_nowait(
            f"registry serve needs the 'registry' extra ({missing} is not installed): "
            "pip install 'asyncstore[registry]'"
        )
        return 2
    parser = argparse.ArgumentParser(
        prog="asyncstore registry serve", description="Run the OCI registry server."
    )
    module.add_arguments(parser)
    try:
        served = parser.parse_args(args.registry_args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    for name in ("store", "async_backend", "json", "quiet"):
        if not hasattr(served, name):
            setattr(served, name, getattr(args, name))
    status: int = module.run(served)
    return status


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command on the chosen anyio backend, return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    ui = UI(json=args.json, quiet=args.quiet)
    if args.command == "registry":
        return _run_registry(args, ui)
    if args.async_backend == "trio" and importlib.util.find_spec("trio") is None:
        ui.error_nowait("--async-backend trio needs trio, which is not installed: pip install trio")
        return 2
    args.resolver = Resolver(args.store)
    args.filter = Filter(getattr(args, "rules", None) or [])
    command = _command(args.command)
    interrupt = _Interrupt(ui)
    try:
        return anyio.run(
            functools.partial(_entry, command, args, ui, interrupt), backend=args.async_backend
        )
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        ui.error_nowait(str(exc))
        return 2
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): stop quietly, as a process
        # killed by SIGPIPE would.
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        ui.flush_nowait()
        if not interrupt.received:  # else the finally clause says it
            ui.error_nowait("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = _first_error(exc)
        if isinstance(error, BrokenPipeError):
            silence_stdout()
            return EXIT_BROKEN_PIPE
        if isinstance(error, UsageError):
            parser.print_usage(sys.stderr)
            ui.error_nowait(str(error))
            return 2
        if isinstance(error, (StoreError, OSError)):
            ui.error_nowait(describe_error(error))
            return 1
        raise
    finally:
        if interrupt.received:
            ui.error_nowait("interrupted")
