"""Data files: the root, temp files, the commit, reads, deletes and copies.

Plain functions, run in worker threads (``anyio.to_thread.run_sync``); each
does several system calls at once. A write goes to a temp file beside its
target (same directory, so the final rename is atomic), is fsynced, and is
committed under the backend's per-key lock by `commit_files`: the sidecar,
then the rename (or ``os.link`` for a create-if-absent write), then an fsync
of the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import stat
import weakref

import anyio
import anyio.to_thread

from ..._backend import MiB, ReadStream, WriteAttributes
from ..._errors import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidRangeError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
)
from ..._stream._files import fsync_dir, pwrite_all
from ..._types import ObjectInfo
from ._paths import (
    O_CLOEXEC,
    O_NONBLOCK,
    Paths,
    collision,
    create_exclusive,
    directory_conflict,
    meta_dir,
    new_temp_name,
    prune_dirs,
    real_object,
    real_parent,
)
from ._sidecar import Record, etag, load_sidecar, write_sidecar
from ._translate import os_errors

__all__ = [
    "SMALL_WRITE",
    "WRITE_SLICE",
    "FileHandle",
    "LocalReadStream",
    "Temp",
    "byte_view",
    "commit_files",
    "copy_range",
    "delete_files",
    "discard_temp",
    "finish_temp",
    "link_temp",
    "open_object",
    "open_temp",
    "prepare_root",
    "stat_object",
    "write_small",
    "write_temp",
]

#: Bytes per read chunk (one worker-thread call each).
_READ_CHUNK = 1 * MiB
#: The most one `LocalReadStream.readinto` reads in one worker-thread call.
_READ_INTO_MAX = 16 * MiB
#: Bytes written or copied per worker-thread call, so a big write stays cancellable.
WRITE_SLICE = 16 * MiB
_COPY_FALLBACK_ERRNOS = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}
)

_run = anyio.to_thread.run_sync


def prepare_root(root: str, create: bool) -> tuple[str | None, str]:
    """(The real root, or None if it does not exist and is not to be made; the absolute root)."""
    root = os.path.abspath(root)
    try:
        if create:
            os.makedirs(root, exist_ok=True)
        real = os.path.realpath(root)
        if not os.path.lexists(real):
            return None, root
        if not os.path.isdir(real):
            raise ConfigurationError(f"local store root {root!r} is not a directory", key=root)
    except FileExistsError as exc:
        raise ConfigurationError(
            f"local store root {root!r} exists and is not a directory", key=root
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use local store root {root!r}: {exc.strerror or exc}", key=root
        ) from exc
    return real, root


def byte_view(data: memoryview) -> memoryview:
    if data.format == "B" and data.ndim == 1:
        return data
    return data.cast("B")


@dataclasses.dataclass(slots=True)
class Temp:
    """A temp data file being written: cleaned up unless it was committed."""

    path: str | None = None
    fd: int | None = None


def open_temp(p: Paths, temp: Temp) -> None:
    parent = real_parent(p)
    if os.path.isdir(os.path.join(parent, p.name)):
        raise directory_conflict(p.key)
    path = os.path.join(parent, new_temp_name())
    fd = create_exclusive(parent, path, os.O_WRONLY, lambda: collision(p))
    temp.path, temp.fd = path, fd


#: Why a hard link may not be made, where copying the bytes still works.
_LINK_FALLBACK_ERRNOS = frozenset(
    {
        errno.EXDEV,  # another file system
        errno.EPERM,  # no hard links here, or protected_hardlinks
        errno.EACCES,
        errno.EMLINK,  # too many links to the source
        errno.ENOENT,  # no /proc, or the source was deleted meanwhile
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        errno.EINVAL,
    }
)


def link_temp(p: Paths, temp: Temp, src: int) -> os.stat_result | None:
    """Make the temp file for ``p`` a second name of the open object ``src``; None if not here.

    An object's data file is never written in place (every write is a new file
    renamed over the key), so two keys may share one: a copy then costs no bytes
    and no fsync of them. The link is made from the descriptor (``/proc/self/fd``),
    so it names exactly the file that was opened and checked, even if the source
    key was replaced since. Where no link can be made, the temp file stays empty
    and open for the bytes to be copied into it.
    """
    open_temp(p, temp)
    assert temp.path is not None
    assert temp.fd is not None
    directory = os.path.dirname(temp.path)
    second = os.path.join(directory, new_temp_name())
    try:
        # A directory descriptor makes os.link call linkat(AT_SYMLINK_FOLLOW), which
        # follows /proc's link to the open file; plain link(2) would not.
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.link(f"/proc/self/fd/{src}", os.path.basename(second), dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        if exc.errno in _LINK_FALLBACK_ERRNOS:
            return None
        raise
    try:
        os.replace(second, temp.path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(second)
        raise
    os.close(temp.fd)
    temp.fd = None
    return os.fstat(src)


def finish_temp(temp: Temp) -> os.stat_result:
    fd = temp.fd
    assert fd is not None
    temp.fd = None
    try:
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def write_temp(p: Paths, temp: Temp, data: memoryview) -> os.stat_result:
    open_temp(p, temp)
    assert temp.fd is not None
    pwrite_all(temp.fd, data, 0)
    return finish_temp(temp)


#: A put this small is written and committed in one worker-thread call, under the
#: key's lock: the bytes, their fsync, the sidecar and the rename, one hand-off.
SMALL_WRITE = 1 * MiB


def write_small(p: Paths, temp: Temp, data: memoryview, attrs: WriteAttributes) -> os.stat_result:
    """`write_temp` then `commit_files`, in one call (see `SMALL_WRITE`)."""
    st = write_temp(p, temp, data)
    commit_files(p, temp, st, attrs)
    return st


def discard_temp(temp: Temp, root: str) -> None:
    """Close and remove an uncommitted temp file and the directories it leaves empty."""
    if temp.fd is not None:
        with contextlib.suppress(OSError):
            os.close(temp.fd)
        temp.fd = None
    if temp.path is not None:
        with contextlib.suppress(OSError):
            os.unlink(temp.path)
        prune_dirs(os.path.dirname(temp.path), root)
        temp.path = None


def commit_files(p: Paths, temp: Temp, st: os.stat_result, attrs: WriteAttributes) -> None:
    """Move the finished temp file to the key, honouring the write's condition."""
    assert temp.path is not None
    parent = os.path.dirname(temp.path)
    target = os.path.join(parent, p.name)
    if os.path.isdir(target):
        raise directory_conflict(p.key)
    if attrs.if_match is not None:
        try:
            current = os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            raise PreconditionFailedError(
                f"key {p.key!r} does not exist, so it does not have ETag {attrs.if_match!r}",
                key=p.key,
            ) from None
        if not stat.S_ISREG(current.st_mode) or etag(current) != attrs.if_match:
            raise PreconditionFailedError(
                f"key {p.key!r} does not have ETag {attrs.if_match!r} "
                f"(its ETag is {etag(current)!r})",
                key=p.key,
            )
    if attrs.if_none_match:
        try:
            os.link(temp.path, target)
        except FileExistsError:
            if os.path.isdir(target):
                raise directory_conflict(p.key) from None
            raise AlreadyExistsError(f"key {p.key!r} already exists", key=p.key) from None
        os.unlink(temp.path)
        temp.path = None
        try:
            write_sidecar(p, st, attrs)
        except BaseException:
            # Roll back our own link: the caller is told the write failed.
            with contextlib.suppress(OSError):
                if os.stat(target).st_ino == st.st_ino:
                    os.unlink(target)
            raise
    else:
        write_sidecar(p, st, attrs)
        try:
            os.replace(temp.path, target)
        except IsADirectoryError:
            raise directory_conflict(p.key) from None
        if st.st_nlink > 1:
            # A linked copy onto a key that already names the same file: rename does
            # nothing then, and leaves the temp name behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp.path)
        temp.path = None
    fsync_dir(parent)


class FileHandle:
    """An fd opened in a worker thread; closed by `aclose`, or at garbage collection."""

    __slots__ = ("__weakref__", "_fd", "_finalizer")

    def __init__(self) -> None:
        self._fd = -1
        self._finalizer: weakref.finalize[[int], FileHandle] | None = None

    def attach(self, fd: int) -> None:
        self._fd = fd
        self._finalizer = weakref.finalize(self, _close_quietly, fd)

    def fileno(self) -> int:
        if self._finalizer is None or not self._finalizer.alive:
            raise StoreError("read from a closed local file")
        return self._fd

    def close_now(self) -> None:
        """Close the fd on this thread (a worker's: `aclose` then has nothing to do)."""
        if self._finalizer is not None and self._finalizer.detach() is not None:
            _close_quietly(self._fd)

    async def aclose(self) -> None:
        if self._finalizer is None or self._finalizer.detach() is None:
            return
        with anyio.CancelScope(shield=True):
            await _run(_close_quietly, self._fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


#: A range this small is read by the call that opens the file, which then closes it:
#: one worker-thread call for a small read instead of three (open, read, close).
SMALL_READ = 256 * 1024


def open_object(
    p: Paths,
    handle: FileHandle,
    start: int,
    end: int | None,
    if_match: str | None,
    read_small: bool = True,
) -> tuple[os.stat_result, Record | None, bool, bytes | None]:
    """Open the object for reading; check the precondition and range on that very file.

    Returns its stat, sidecar record, whether to retry (the sidecar is being
    replaced), and, with ``read_small``, the bytes ``[start, end)`` read then if
    at most `SMALL_READ` (the file is then closed).
    """
    real = real_object(p)
    handle.attach(os.open(real, os.O_RDONLY | O_CLOEXEC | O_NONBLOCK))
    st = os.fstat(handle.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise NotFoundError(f"no object at key {p.key!r} (it is a directory)", key=p.key)
    if if_match is not None and etag(st) != if_match:
        raise PreconditionFailedError(
            f"key {p.key!r} changed: ETag is {etag(st)!r}, not {if_match!r}", key=p.key
        )
    if start > st.st_size:
        raise InvalidRangeError(
            f"range start {start} is past the end of key {p.key!r} ({st.st_size} bytes)",
            key=p.key,
        )
    record, retry = load_sidecar(p, st)
    stop = st.st_size if end is None else max(start, min(end, st.st_size))
    if retry or not read_small or stop - start > SMALL_READ:
        return st, record, retry, None
    data = os.pread(handle.fileno(), stop - start, start)
    handle.close_now()
    return st, record, retry, data


def stat_object(p: Paths) -> tuple[os.stat_result, Record | None, bool]:
    st = os.stat(real_object(p))
    if not stat.S_ISREG(st.st_mode):
        raise NotFoundError(f"no object at key {p.key!r} (it is a directory)", key=p.key)
    record, retry = load_sidecar(p, st)
    return st, record, retry


def delete_files(p: Paths) -> None:
    parent = real_parent(p)
    meta_dir(p)  # before anything is removed
    target = os.path.join(parent, p.name)
    try:
        st = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.unlink(p.meta)
    prune_dirs(parent, p.root)
    prune_dirs(os.path.dirname(p.meta), p.meta_root)


def copy_range(src: int, dst: int, offset: int, count: int, key: str) -> None:
    """Copy ``count`` bytes at ``offset`` of the object ``key`` (open as ``src``)."""
    copy_file_range = getattr(os, "copy_file_range", None)
    done = 0
    while done < count:
        position = offset + done
        copied: int
        if copy_file_range is not None:
            try:
                copied = copy_file_range(src, dst, count - done, position, position)
            except OSError as exc:
                if exc.errno not in _COPY_FALLBACK_ERRNOS:
                    raise
                copy_file_range = None
                continue
        else:
            chunk = os.pread(src, min(count - done, _READ_CHUNK * 4), position)
            pwrite_all(dst, memoryview(chunk), position)
            copied = len(chunk)
        if copied == 0:
            raise PreconditionFailedError(f"key {key!r} was truncated while being copied", key=key)
        done += copied


class LocalReadStream(ReadStream):
    """The bytes ``[position, stop)`` of an open file.

    Iterated, it yields chunks of at most 1 MiB (one worker-thread call each);
    `readinto` reads straight into the caller's buffer with one ``preadv`` per
    call, so a range the core reads crosses memory once.
    """

    def __init__(
        self,
        info: ObjectInfo,
        handle: FileHandle,
        key: str,
        position: int,
        stop: int,
        data: bytes | None = None,
    ) -> None:
        self.info = info
        self._handle = handle
        self._key = key
        self._position = position
        self._stop = stop
        #: The whole range, read when the file was opened (`SMALL_READ`), else None.
        self._data = data
        self._start = position

    def _truncated(self) -> PreconditionFailedError:
        return PreconditionFailedError(
            f"key {self._key!r} was truncated while being read", key=self._key
        )

    def _read(self, view: memoryview) -> int:
        n = os.preadv(self._handle.fileno(), [view], self._position)
        if not n:
            raise self._truncated()
        return n

    def _pread(self, count: int) -> bytes:
        chunk = os.pread(self._handle.fileno(), count, self._position)
        if not chunk:
            raise self._truncated()
        return chunk

    def _take(self, most: int) -> bytes:
        """Up to ``most`` bytes of the range read at open (`SMALL_READ`)."""
        assert self._data is not None
        offset = self._position - self._start
        chunk = self._data[offset : offset + most]
        if not chunk:
            raise self._truncated()  # the file was shorter than its stat when read
        self._position += len(chunk)
        return chunk

    async def readinto(self, view: memoryview) -> int:
        count = min(len(view), self._stop - self._position, _READ_INTO_MAX)
        if count <= 0:
            return 0
        if self._data is not None:
            chunk = self._take(count)
            view[: len(chunk)] = chunk
            return len(chunk)
        with os_errors(self._key, "read"):
            n = await _run(self._read, view[:count])
        self._position += n
        return n

    async def __anext__(self) -> bytes:
        count = min(_READ_CHUNK, self._stop - self._position)
        if count <= 0:
            await self.aclose()  # at the end, as soon as it is reached
            raise StopAsyncIteration
        if self._data is not None:
            data = self._data
            if self._position == self._start and len(data) == count:  # the whole range
                self._position += count
                return data
            return self._take(count)
        with os_errors(self._key, "read"):
            chunk = await _run(self._pread, count)  # one copy, into the bytes it returns
        self._position += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._handle.aclose()
