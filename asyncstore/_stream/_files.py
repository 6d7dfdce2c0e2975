"""Atomic file writes: a temp file beside the destination, pwrite, fsync, rename.

A destination is either fully written and verified, or untouched: the bytes
go to ``.<name>.asyncstore-<random>.tmp`` in the destination's folder (same
file system, so the final rename is atomic), and any failure or cancellation
removes the temp file in a shielded scope.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import sys
from collections.abc import Callable
from typing import cast

import anyio
import anyio.to_thread

from .._errors import InvalidArgumentError, PermissionDeniedError
from ._buffers import ALIGNMENT, is_aligned

__all__ = [
    "DIRECT_MIN",
    "NO_DIRECT_ERRNOS",
    "O_DIRECT",
    "AtomicFile",
    "direct_range",
    "fsync_dir",
    "pwrite_all",
    "pwrite_direct",
    "start_writeback",
]


def _find_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a libc without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


_sync_file_range = _find_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``[offset, offset + length)`` of ``fd`` to disk, without waiting.

    Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)``: the pages a transfer has
    just written go to the disk while it writes the next ones, so the fsync that
    commits the file waits for the last part only, not for the whole file. A hint:
    elsewhere, or on a file that does not support it, it does nothing.
    """
    if _sync_file_range is not None:
        # Its errors (a pipe, a file system without it) only mean no head start.
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


#: ``os.O_DIRECT`` where the platform has it (Linux), else 0.
O_DIRECT: int = getattr(os, "O_DIRECT", 0)
#: Writes at least this large, page-aligned in memory, offset and length, may skip
#: the page cache (`direct_range`).
DIRECT_MIN = 1 << 20
#: How a file system says it does not do ``O_DIRECT`` (tmpfs: EINVAL).
NO_DIRECT_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


def direct_range(offset: int, data: memoryview) -> bool:
    """Whether writing ``data`` at ``offset`` may skip the page cache (``O_DIRECT``).

    A write the commit fsyncs anyway gains nothing from the page cache but a copy
    into it (0.4 to 2 CPU s per GiB on this VM, whose host must fault freed memory
    back in; 0.27-0.30 direct). It needs page-aligned memory, offset and length.
    """
    return (
        O_DIRECT != 0
        and data.nbytes >= DIRECT_MIN
        and offset % ALIGNMENT == 0
        and data.nbytes % ALIGNMENT == 0
        and is_aligned(data)
    )


def pwrite_direct(fd: int, data: memoryview, offset: int) -> bool:
    """Write all of ``data`` at ``offset`` with ``O_DIRECT`` set for this one write.

    For a `direct_range`. Returns False, having written nothing, where the file
    system refuses ``O_DIRECT`` (`NO_DIRECT_ERRNOS`): write it through the page
    cache then.
    """
    import fcntl  # POSIX only, like O_DIRECT itself

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | O_DIRECT)
        pwrite_all(fd, data, offset)
    except OSError as exc:
        if exc.errno not in NO_DIRECT_ERRNOS:
            raise
        return False
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return True


def pwrite_all(fd: int, data: memoryview, offset: int, *, write_behind: bool = False) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked).

    With ``write_behind``, the range written then starts its way to disk (`start_writeback`).
    """
    start, length = offset, data.nbytes
    while data.nbytes:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
    if write_behind:
        start_writeback(fd, start, length)


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
        self._direct = O_DIRECT != 0

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

    def _write(self, data: memoryview, offset: int) -> None:
        assert self._fd is not None
        if self._direct and direct_range(offset, data) and self._write_direct(data, offset):
            return
        pwrite_all(self._fd, data, offset, write_behind=True)

    def _write_direct(self, data: memoryview, offset: int) -> bool:
        """`pwrite_direct`; refused once, never tried again for this file."""
        assert self._fd is not None
        self._direct = pwrite_direct(self._fd, data, offset)
        return self._direct

    async def write_at(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset`` (in a worker thread, one write at a time)."""
        assert self._fd is not None
        async with self._writing:
            await anyio.to_thread.run_sync(self._write, data, offset)

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
