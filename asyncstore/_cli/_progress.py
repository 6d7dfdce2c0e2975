"""The progress view of multi-file commands: one line of totals, then the files in flight.

::

    sync  1,204/5,010 files  812.3/1,266.4 MiB  48.2 MB/s  eta 0:00:09  3 failed
      big/blob-07.bin      ━━━━━━━━━━╸━━━━━━━━━  40.0/64.0 MiB  21.4 MB/s
      small/0042.bin       ━━━━━━━━━━━━━━━━━━━━   12.0/12.0 KiB

The totals count bytes as the transfers' progress callbacks report them; the
rate and ETA are rich's (a moving window). A failed transfer's bytes leave
the totals. Files in flight beyond ``MAX_ROWS`` are counted but not drawn.
Nothing is drawn when stderr is not a terminal or with ``-q``; the callbacks
then only count. Callbacks only update memory: rich's own thread draws.
"""

from __future__ import annotations

import dataclasses
from types import TracebackType

import anyio
import anyio.to_thread
from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from .. import Progress as ProgressCallback
from ._ui import UI

__all__ = ["FileProgress", "TransferView"]

#: The most in-flight files drawn under the totals.
MAX_ROWS = 10


class _FilesColumn(ProgressColumn):
    """``1,204/5,010 files  3 failed`` on the totals line; empty on a file's line."""

    def render(self, task: Task) -> RenderableType:
        files = task.fields.get("files")
        if files is None:
            return Text("")
        done, total, failed = files
        text = Text(f"{done:,}/{total:,} files")
        if failed:
            text.append(f"  {failed:,} failed", style="red")
        return text


@dataclasses.dataclass
class FileProgress:
    """One file's share of the view; `callback` is the progress callback of its transfer."""

    view: TransferView
    size: int | None
    task: TaskID | None
    done: int = 0

    def callback(self) -> ProgressCallback:
        """The ``(bytes_done, bytes_total)`` callback to give to the transfer."""

        def update(done: int, total: int | None) -> None:
            self.view._advance(self, done, total)

        return update


class TransferView:
    """Totals and files in flight of one command (``async with TransferView(ui, label)``).

    Args:
        ui: Where to draw (stderr), and whether to (`UI.shows_progress`).
        label: The first word of the totals line (``cp``, ``sync``, ...).
    """

    def __init__(self, ui: UI, label: str) -> None:
        self._ui = ui
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=24),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            _FilesColumn(),
            console=ui.err,
            redirect_stdout=False,
            redirect_stderr=False,
            refresh_per_second=8,
        )
        self._total = self._progress.add_task(label, total=0, files=(0, 0, 0))
        self._files_total = 0
        self._files_done = 0
        self._failed = 0
        self._rows = 0
        self._bytes_total = 0
        self.bytes_done = 0

    async def __aenter__(self) -> TransferView:
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
        with anyio.CancelScope(shield=True):
            await self._ui.flush()
            self._ui.live_console = None
            await anyio.to_thread.run_sync(self._progress.stop)

    def _update_total(self) -> None:
        self._progress.update(
            self._total, files=(self._files_done, self._files_total, self._failed)
        )

    def plan(self, files: int, size: int) -> None:
        """Add ``files`` transfers of ``size`` bytes in all to the totals."""
        self._files_total += files
        self._bytes_total += size
        self._progress.update(self._total, total=self._bytes_total)
        self._update_total()

    def start(self, label: str, size: int | None) -> FileProgress:
        """A file starts: draw its row (if there is room) and return its tracker."""
        task: TaskID | None = None
        if self._rows < MAX_ROWS:
            task = self._progress.add_task("  " + label, total=size)
            self._rows += 1
        return FileProgress(self, size, task)

    def _advance(self, file: FileProgress, done: int, total: int | None) -> None:
        delta = done - file.done
        file.done = done
        self.bytes_done += delta
        self._progress.advance(self._total, delta)
        if file.task is not None:
            self._progress.update(file.task, completed=done, total=total)

    def finish(self, file: FileProgress, *, ok: bool) -> None:
        """A file is done (or failed: its bytes leave the totals)."""
        if file.task is not None:
            self._progress.remove_task(file.task)
            self._rows -= 1
        if ok:
            self._files_done += 1
        else:
            self._failed += 1
            self._files_total -= 1
            self.bytes_done -= file.done
            self._progress.advance(self._total, -file.done)
            if file.size:
                self._bytes_total = max(self._bytes_total - file.size, 0)
                self._progress.update(self._total, total=self._bytes_total)
        self._update_total()
