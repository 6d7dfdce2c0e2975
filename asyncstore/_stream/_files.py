"""Atomic file writes: a temp file beside the destination, pwrite, fsync, rename.

A destination is either fully written and verified, or untouched: the bytes
go to ``.<name>.asyncstore-<random>.tmp`` in the destination's folder (same
file system, so the final rename is atomic), and any failure or cancellation
removes the temp file in a shielded scope.
"""

from __future__ import annotations

import contextlib
import os
import secrets

import anyio
import anyio.to_thread

from .._errors import InvalidArgumentError, PermissionDeniedError

__all__ = ["AtomicFile", "fsync_dir", "pwrite_all"]


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    while data.nbytes:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


def fsync_dir(path: str) -> None:
    """fsync a directory, so a rename in it is durable.

    A durability hint only: the rename is already visible, so a failure here is not an error.
    """
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicFile:
    """A file that appears at ``path`` only when `commit` succeeds."""

    def __init__(self, path: str | os.PathLike[str], *, key: str) -> None:
        self.path = os.fspath(path)
        self._key = key
        self._dir = self.temp_path = ""
        self._fd: int | None = None
        # One write at a time: writes into one file queue on its inode lock, and
        # spin for it in the kernel, burning the CPU the hashing needs.
        self._writing = anyio.Lock()

    def _open(self) -> int:
        # abspath may call getcwd(): a syscall, so it runs here, in the worker thread.
        self.path = os.path.abspath(self.path)
        directory, name = os.path.split(self.path)
        self._dir = directory
        self.temp_path = os.path.join(directory, f".{name}.asyncstore-{secrets.token_hex(6)}.tmp")
        if os.path.isdir(self.path):
            raise InvalidArgumentError(
                f"cannot download key {self._key!r} to {self.path!r}: it is a directory",
                key=self._key,
            )
        try:
            os.makedirs(self._dir, exist_ok=True)
            # 0o666 lets the umask decide the final permissions, as for any new file.
            return os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except PermissionError as exc:
            raise PermissionDeniedError(
                f"cannot download key {self._key!r} to {self.path!r}: {exc.strerror}",
                key=self._key,
            ) from exc
        except OSError as exc:
            raise InvalidArgumentError(
                f"cannot download key {self._key!r} to {self.path!r}: {exc.strerror}",
                key=self._key,
            ) from exc

    async def open(self) -> None:
        """Create the temp file."""
        self._fd = await anyio.to_thread.run_sync(self._open)

    async def write_at(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset`` (in a worker thread, one write at a time)."""
        assert self._fd is not None
        async with self._writing:
            await anyio.to_thread.run_sync(pwrite_all, self._fd, data, offset)

    def _commit(self, size: int, mtime: float | None, mode: int | None) -> None:
        assert self._fd is not None
        fd = self._fd
        os.ftruncate(fd, size)
        if mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        if mtime is not None:
            os.utime(self.temp_path, (mtime, mtime))
        os.replace(self.temp_path, self.path)
        fsync_dir(self._dir)

    async def commit(
        self, size: int, *, mtime: float | None = None, mode: int | None = None
    ) -> None:
        """fsync, set mode and mtime, and rename into place."""
        await anyio.to_thread.run_sync(self._commit, size, mtime, mode)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.temp_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp_path)

    async def discard(self) -> None:
        """Close and remove the temp file; safe to call after commit and under cancellation."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._discard)
