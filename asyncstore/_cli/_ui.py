"""Terminal output: results on stdout, progress bars and errors on stderr."""

from __future__ import annotations

import functools
import os
import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .._types import Progress as ProgressCallback
from .._types import TransferInfo

__all__ = ["UI", "Bars", "human_bytes", "transfer_line"]

#: The width of tables written to a pipe or a file.
WIDE = 132


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units: ``"512 B"``, ``"1.5 KiB"``, ``"256.0 MiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def transfer_line(verb: str, src: str, dst: str, info: TransferInfo) -> str:
    """One line describing a finished transfer, e.g. for ``cp``."""
    parts = "part" if info.part_count == 1 else "parts"
    return (
        f"{verb} {src} -> {dst}: {info.bytes_transferred} bytes "
        f"({human_bytes(info.bytes_transferred)}) in {info.duration:.3f} s, "
        f"{info.mb_per_s:.1f} MB/s, {info.part_count} {parts}, "
        f"concurrency {info.concurrency}, {info.sha256}"
    )


class UI:
    """Where a command writes: ``out`` for results, ``err`` for progress and errors.

    The consoles are made on first use, so they write to whatever ``sys.stdout``
    and ``sys.stderr`` are then (tests replace them).
    """

    @functools.cached_property
    def out(self) -> Console:
        """Results: plain text when stdout is not a terminal, never wrapped."""
        console = Console(highlight=False, soft_wrap=True)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            # Rich assumes 80 columns for a pipe or a file; tables need more.
            console.width = WIDE
        return console

    @functools.cached_property
    def err(self) -> Console:
        """Progress bars and notes."""
        return Console(stderr=True, highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        """Print ``asyncstore: error: <message>`` on stderr."""
        print(f"asyncstore: error: {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """Print an informational line on stderr (no markup)."""
        self.err.print(message, markup=False)

    def bars(self, *, overall: int | None = None, label: str = "total") -> Bars:
        """Progress bars on stderr; with ``overall``, also a bar for the sum of all transfers."""
        return Bars(self.err, overall=overall, label=label)


class Bars:
    """Rich progress bars driven by asyncstore progress callbacks.

    Use as a context manager; :meth:`track` adds a bar and returns the
    ``(bytes_done, bytes_total)`` callback to give to a transfer.
    """

    def __init__(self, console: Console, *, overall: int | None, label: str) -> None:
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self._overall: TaskID | None = None
        if overall is not None:
            self._overall = self._progress.add_task(label, total=overall)

    def __enter__(self) -> Bars:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def track(self, label: str, total: int | None = None) -> ProgressCallback:
        """Add a bar for one transfer and return its progress callback."""
        task = self._progress.add_task(label, total=total)
        last = 0

        def update(done: int, total: int | None) -> None:
            nonlocal last
            self._progress.update(task, completed=done, total=total)
            if self._overall is not None:
                self._progress.advance(self._overall, done - last)
            last = done

        return update

    def advance_overall(self, n: int) -> None:
        """Count ``n`` bytes on the overall bar that no tracked transfer reported."""
        if self._overall is not None:
            self._progress.advance(self._overall, n)
