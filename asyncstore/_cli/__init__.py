"""The ``asyncstore`` command: copy, list, inspect and verify objects from a shell.

``asyncstore [-s URL] [--async-backend {asyncio,trio}] COMMAND ...`` opens the
store at ``URL`` (default: ``$ASYNCSTORE_URL``) and runs one command in a fresh
event loop. Remote keys are written with a leading colon (``:path/to/key``);
anything else is a local path. Every :class:`~asyncstore.StoreError` ends the
command with ``asyncstore: error: <message>`` on stderr and exit status 1;
argument errors exit with status 2.

The command line needs the ``cli`` extra (``rich``, for progress bars and
tables); it is imported only when the command runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

INSTALL_HINT = "pip install 'asyncstore[cli]'"


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
    from ._main import run

    return run(argv)
