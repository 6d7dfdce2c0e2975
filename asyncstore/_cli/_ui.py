"""Terminal output: results on stdout, progress and errors on stderr.

Results (listings, transfer lines, JSON records) never go through rich: rich
would turn ``:name:`` into emoji and ``[tags]`` into styles, and wrap or pad
lines. They are written as UTF-8, byte-exact, in batches from worker threads.
Rich draws only the progress view and the demo's tables, on stderr.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

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
from rich.text import Text

from .. import Progress as ProgressCallback
from .. import TransferInfo

__all__ = ["UI", "Bars", "human_bytes", "silence_stdout", "transfer_line", "write_stdout"]

#: The width of tables written to a pipe or a file.
WIDE = 132
#: Buffered result lines are written at least this often (seconds) ...
FLUSH_EVERY = 0.2
#: ... or when this many bytes are waiting.
FLUSH_BYTES = 64 * 1024


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


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests)
        pass


def _is_tty(stream: Any) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):  # replaced by a test, or closed
        return False


class UI:
    """Where a command writes: results on stdout, notes, errors and progress on stderr.

    Args:
        json: Results as JSON records, one object per line.
        quiet: No progress, no notes and no per-file lines of transfer commands.

    Inside the event loop, write through the async methods: a terminal (or a
    pipe) can be slow to take output, so the writes happen in worker threads.
    Result lines are batched and written at least every 0.2 s; `flush` writes
    what is waiting (the command runner calls it at the end, even when cancelled).
    """

    def __init__(self, *, json: bool = False, quiet: bool = False) -> None:
        self.json = json
        self.quiet = quiet
        #: The reader of stdout went away (``| head``): results are dropped from then on.
        self.stdout_closed = False
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        #: A progress view drawing on the terminal: results go above it.
        self.live_console: Console | None = None

    @functools.cached_property
    def out(self) -> Console:
        """A rich console on stdout, for tables (the demo): never emoji or wrapping."""
        console = Console(highlight=False, soft_wrap=True, emoji=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            # Rich assumes 80 columns for a pipe or a file; tables need more.
            console.width = WIDE
        return console

    @functools.cached_property
    def err(self) -> Console:
        """Progress views, on stderr."""
        return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

    @functools.cached_property
    def stdout_is_tty(self) -> bool:
        """Whether stdout is a terminal (really: environment overrides aside)."""
        return _is_tty(sys.stdout)

    # -- results -------------------------------------------------------------------------------

    async def emit(self, renderable: RenderableType, *, markup: bool = False) -> None:
        """Print a result on stdout: plain text byte-exact (markup only if asked), or a table."""
        if isinstance(renderable, str) and not markup:
            await self.line(renderable)
            return
        await self.flush()
        await anyio.to_thread.run_sync(functools.partial(self.out.print, renderable))

    async def line(self, text: str) -> None:
        """Queue one result line for stdout (written byte-exact, in batches)."""
        self._pending.append(text + "\n")
        self._pending_bytes += len(text) + 1
        now = time.monotonic()
        if self._pending_bytes >= FLUSH_BYTES or now - self._last_flush >= FLUSH_EVERY:
            await self.flush()

    async def record(self, record: Mapping[str, Any]) -> None:
        """Queue one JSON record (one object per line) for stdout."""
        await self.line(json.dumps(record, ensure_ascii=False, separators=(",", ":")))

    async def result(self, text: str | None, record: Mapping[str, Any]) -> None:
        """One result in the format asked for: ``record`` with ``--json``, else ``text``."""
        if self.json:
            await self.record(record)
        elif text is not None:
            await self.line(text)

    async def flush(self) -> None:
        """Write the queued result lines.

        Raises:
            BrokenPipeError: the reader of stdout went away (the first time only:
                stdout is then silenced and later results are dropped).
        """
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._last_flush = time.monotonic()
        if self.stdout_closed:
            return
        live = self.live_console
        if live is not None and self.stdout_is_tty:
            # stdout is the terminal the view is drawn on: print above the view.
            await anyio.to_thread.run_sync(
                functools.partial(live.print, Text(text.rstrip("\n")), soft_wrap=True)
            )
        else:
            try:
                await anyio.to_thread.run_sync(write_stdout, text)
            except BrokenPipeError:
                self.stdout_closed = True
                await anyio.to_thread.run_sync(silence_stdout)
                raise

    def flush_nowait(self) -> None:
        """:meth:`flush` on the calling thread (after the event loop has ended)."""
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if text and not self.stdout_closed:
            try:
                write_stdout(text)
            except BrokenPipeError:
                self.stdout_closed = True
                silence_stdout()

    # -- notes and errors ----------------------------------------------------------------------

    async def note(self, message: str) -> None:
        """Print an informational line on stderr (not with ``-q``)."""
        if not self.quiet:
            await anyio.to_thread.run_sync(self._stderr_line, message)

    async def error(self, message: str) -> None:
        """Print ``asyncstore: error: <message>`` on stderr."""
        await anyio.to_thread.run_sync(self.error_nowait, message)

    def error_nowait(self, message: str) -> None:
        """:meth:`error`, on the calling thread (outside the event loop)."""
        self._stderr_line(f"asyncstore: error: {message}")

    def _stderr_line(self, text: str) -> None:
        live = self.live_console
        if live is not None:
            live.print(Text(text), soft_wrap=True)
            return
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    # -- progress ------------------------------------------------------------------------------

    @property
    def shows_progress(self) -> bool:
        """Whether progress is drawn: stderr is a terminal and ``-q`` is not given."""
        return not self.quiet and self.err.is_terminal

    def bars(self, *, overall: int | None = None, label: str = "total") -> Bars:
        """Progress bars on stderr; with ``overall``, also a bar for the sum of all transfers."""
        return Bars(self, overall=overall, label=label)


class Bars:
    """Rich progress bars driven by asyncstore progress callbacks (one bar per transfer).

    Use as ``async with ui.bars() as bars``; :meth:`track` adds a bar and
    returns the ``(bytes_done, bytes_total)`` callback to give to a transfer.
    The callbacks only update memory; rich's own thread draws the bars. When
    the block fails, the bars are erased so that only the error remains. When
    stderr is not a terminal (or with ``-q``), nothing is drawn.
    """

    def __init__(self, ui: UI, *, overall: int | None, label: str) -> None:
        self._ui = ui
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=ui.err,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._overall: TaskID | None = None
        if overall is not None:
            self._overall = self._progress.add_task(label, total=overall)

    async def __aenter__(self) -> Bars:
        if self._ui.shows_progress:
            await self._ui.flush()
            await anyio.to_thread.run_sync(self._progress.start)
            self._ui.live_console = self._progress.console
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
            await self._ui.flush()
            self._ui.live_console = None
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
