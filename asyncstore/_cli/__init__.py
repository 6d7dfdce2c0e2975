"""The ``asyncstore`` command: copy, list, inspect and verify objects from a shell.

``asyncstore [-s URL] [--async-backend {asyncio,trio}] COMMAND ...`` opens the
store at ``URL`` (default: ``$ASYNCSTORE_URL``) and runs one command in a fresh
event loop. Remote keys are written with a leading colon (``:path/to/key``);
anything else is a local path. Every :class:`~asyncstore.StoreError` ends the
command with ``asyncstore: error: <message>`` on stderr and exit status 1;
argument errors exit with status 2.

The command line needs the ``cli`` extra (``rich``, for progress bars and
tables); it is imported only when the command runs.

While a command runs, the cyclic garbage collector's youngest generation is
collected every `GC_THRESHOLD` allocations rather than Python's 700: start-up
(imports, the SDK's service models, a listing of thousands of objects) makes
only objects that live until the process ends, and with the default the
collector walked them again and again, a tenth of a no-op ``sync``'s CPU.
Garbage in reference cycles is still collected, in larger batches.

The ``asyncstore`` executable (and ``python -m asyncstore``) is `program`:
`main`, then the end of the process without Python's teardown.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

__all__ = ["GC_THRESHOLD", "main", "program"]

INSTALL_HINT = "pip install 'asyncstore[cli]'"

#: The exit status when the reader of stdout went away (as if killed by SIGPIPE).
EXIT_BROKEN_PIPE = 128 + 13

#: Allocations (net of frees) between two collections of the youngest generation while a
#: command runs (Python's default: 700). The older generations keep their thresholds.
GC_THRESHOLD = 100_000


@contextlib.contextmanager
def _few_collections() -> Iterator[None]:
    """Collect the youngest generation every `GC_THRESHOLD` allocations, then as before."""
    before = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asyncstore`` command line.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the store (or a local file)
        reported an error, 2 for a usage error, 130 when interrupted.
    """
    try:
        import rich  # noqa: F401
    except ImportError:
        print(
            f"asyncstore: the command line needs rich, which is not installed: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    with _few_collections():
        from ._main import run

        return run(argv)


#: glibc's ``mallopt`` parameter for the most malloc arenas (``M_ARENA_MAX``).
M_ARENA_MAX = -8
#: The malloc arenas the executable allows itself (glibc's default: 8 per CPU).
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Let glibc's malloc keep at most `MALLOC_ARENAS` arenas (as ``MALLOC_ARENA_MAX=2``).

    Part buffers are filled and hashed in worker threads; with an arena per
    thread, each kept the buffers freed in it for reuse, and a ``sync`` whose
    buffers stay within ``--memory`` (256 MiB) still reached 600-660 MiB of
    RSS; with two arenas, 284 MiB, for the same CPU time (bench/cli.py). Only
    where the C library has ``mallopt`` (glibc); returns whether it was set.
    Must run before the threads start.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, ImportError):  # no ctypes, or a libc without it
        return False
    return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS))


def program() -> NoReturn:
    """The ``asyncstore`` executable: `main` on ``sys.argv``, then end the process at once.

    Before it, malloc's arenas are limited (`limit_malloc_arenas`). Once the
    command is done, the logging handlers, stdout and stderr are
    flushed and the process ends with ``os._exit``. Python's own teardown (a
    last garbage collection, then freeing every module and object the SDKs
    made) took a fifth of a no-op ``sync``'s CPU, and the command needs none
    of it: its files are closed and its stores closed by then. A reader of
    stdout that went away meanwhile makes the status 141, as `main` does.
    """
    limit_malloc_arenas()
    status = main()
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = EXIT_BROKEN_PIPE
    except (OSError, ValueError) as exc:  # a full disk, a closed stdout
        print(f"asyncstore: error: cannot write to stdout: {exc}", file=sys.stderr)
        status = status or 1
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)
