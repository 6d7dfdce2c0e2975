"""Terminal output: results on stdout, progress bars and errors on stderr."""

from __future__ import annotations

import functools
import os
import sys
from types import TracebackType

import anyio.to_thread
from rich.console import Console, RenderableType
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

__all__ = ["UI", "Bars", "human_bytes", "transfer_line", "write_stdout"]

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


def write_stdout(text: str) -> None:
    """Write ``text`` to stdout as UTF-8, byte-exact (blocking: call in a worker thread).

    Text that came from the file system with undecodable bytes (surrogate
    escapes) is written back as those bytes.
    """
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(text.encode("utf-8", "surrogateescape"))
    out.flush()


class UI:
    """Where a command writes: ``out`` for results, ``err`` for progress and errors.

    The consoles are made on first use, so they write to whatever ``sys.stdout``
    and ``sys.stderr`` are then (tests replace them). Inside the event loop,
    write through the async methods: a terminal (or a pipe) can be slow to take
    output, so the writes happen in a worker thread.
    """

    @functools.cached_property
    def out(self) -> Console:
        """Results: plain text when stdout is not a terminal, never wrapped."""
        console = Console(highlight=False, soft_wrap=True, emoji=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            # Rich assumes 80 columns for a pipe or a file; tables need more.
            console.width = WIDE
        return console

    @functools.cached_property
    def err(self) -> Console:
        """Progress bars and notes."""
        return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

    async def emit(self, renderable: RenderableType, *, markup: bool = False) -> None:
        """Print a result on stdout: plain text byte-exact (markup only if asked), or a table.

        Plain text never goes through rich, which would turn ``:name:`` into
        emoji, ``[tags]`` into styles and wrap or pad the line: keys must
        reach stdout exactly as they are, piped or on a terminal.
        """
        if isinstance(renderable, str) and not markup:
            await anyio.to_thread.run_sync(write_stdout, renderable + "\n")
            return
        await anyio.to_thread.run_sync(functools.partial(self.out.print, renderable))

    async def note(self, message: str) -> None:
        """Print an informational line on stderr (no markup)."""
        await anyio.to_thread.run_sync(functools.partial(self.err.print, message, markup=False))

    async def error(self, message: str) -> None:
        """Print ``asyncstore: error: <message>`` on stderr."""
        await anyio.to_thread.run_sync(self.error_nowait, message)

    def error_nowait(self, message: str) -> None:
        """:meth:`error`, on the calling thread (outside the event loop)."""
        print(f"asyncstore: error: {message}", file=sys.stderr, flush=True)

    def bars(self, *, overall: int | None = None, label: str = "total") -> Bars:
        """Progress bars on stderr; with ``overall``, also a bar for the sum of all transfers."""
        return Bars(self.err, overall=overall, label=label)


class Bars:
    """Rich progress bars driven by asyncstore progress callbacks.

    Use as ``async with ui.bars() as bars``; :meth:`track` adds a bar and
    returns the ``(bytes_done, bytes_total)`` callback to give to a transfer.
    The callbacks only update memory; rich's own thread draws the bars. When
    the block fails, the bars are erased so that only the error remains. When
    stderr is not a terminal, nothing is drawn.
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

    async def __aenter__(self) -> Bars:
        if self._progress.console.is_terminal:
            await anyio.to_thread.run_sync(self._progress.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._progress.live.is_started:
            return
        if exc is not None:
            self._progress.live.transient = True
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._progress.stop)

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
