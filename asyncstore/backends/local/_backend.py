"""The local-filesystem backend: objects are plain files under a root directory.

Layout under the root (``file:///srv/data`` or ``LocalBackend("/srv/data")``):

    <root>/<key>                                  the object's bytes, as a plain file
    <root>/<dir>/.asyncstore-<32 hex>.part        a write (or multipart upload) in progress
    <root>/.asyncstore/meta/<dir>.d/<name>.json   the object's sidecar (metadata)

* **Data files** live at ``<root>/<key>``, so a user can look at them; the
  ``/`` of a key is a directory separator. A key may therefore not be both an
  object and a "directory" (``a`` and ``a/b``): such a write raises
  `InvalidKeyError`. Path segments starting with
  ``.asyncstore`` are reserved, and no key may resolve outside the root, not
  even through a symbolic link. The ``.asyncstore`` tree is the backend's own:
  a sidecar reached through a symbolic link planted there is neither written
  nor deleted (`InvalidKeyError`) nor believed.
* **Temp files** are created *beside* their target (same directory, so the
  final rename is atomic) and are named ``.asyncstore-<uuid hex>.part``. A
  multipart upload is such a temp file, written with ``pwrite`` at each part's
  offset; its name is the upload id, so any process on the same root can
  resume it. Temp files never appear in listings.
* **Sidecars** hold what a file cannot: the content type, the metadata
  (asyncstore's reserved ``asyncstore-*`` entries included), the size, the
  commit time, a version counter, and the data file's inode number, size and
  mtime. They live in a mirror tree under ``<root>/.asyncstore/meta``, whose
  directories carry a ``.d`` suffix and whose files a ``.json`` suffix (so the
  sidecar of key ``x`` can never collide with the directory of key
  ``x.json/y``). A sidecar is written atomically (temp file, fsync, rename).

Commit order of a write: the bytes go to a temp file (write, fsync); then,
under a per-key lock of the backend instance, the sidecar is written and the
temp file is renamed over the target (``os.replace``), and the directory is
fsynced. A create-if-absent write commits with ``os.link`` instead (atomic
and race-free even between processes), and writes its sidecar only once the
link has won, so a losing writer never touches the winner's sidecar.

The inode check: a sidecar is only believed when the inode it records is that
of the data file (for a read, of the file actually opened). When it differs
(another writer is between its two renames, a crash happened there, or another
program replaced the file with a new one) the backend retries briefly and then
reports the object without metadata rather than with someone else's. A file
changed in place (same inode, new bytes, mtime or size) keeps its sidecar and
its recorded sha256, so a whole read of it raises DigestMismatchError.

The ETag is ``<inode>-<mtime ns>-<size>`` in hex, from the data file's stat:
a replaced file is a new inode, so the ETag changes with every write. Every
file-system call runs in a worker thread (``anyio.to_thread.run_sync``); the
event loop never blocks on the disk.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime
import errno
import itertools
import json
import os
import re
import stat
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from urllib.parse import SplitResult, unquote

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    IteratorReadStream,
    MiB,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from ..._errors import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRangeError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    StoreError,
    UploadNotFoundError,
    redact_url,
)
from ..._keys import MAX_KEY_BYTES, validate_key, validate_prefix
from ..._stream._files import fsync_dir, pwrite_all
from ..._types import CommonPrefix, ObjectInfo
from .._url import boolean, merge_options

__all__ = ["LocalBackend", "from_url"]

#: Bytes per read chunk (one worker-thread call each).
_READ_CHUNK = 1 * MiB
#: Bytes written or copied per worker-thread call, so a big write stays cancellable.
_WRITE_SLICE = 16 * MiB
#: Path segments starting with this are reserved for the backend's own files.
_RESERVED = ".asyncstore"
_META = (".asyncstore", "meta")
_UPLOAD_ID = re.compile(r"\A\.asyncstore-[0-9a-f]{32}\.part\Z")
#: Longest key segment: the file system's 255 bytes, less the sidecar's ".json".
_MAX_SEGMENT = 250
_SIDECAR_FORMAT = 1
#: Attempts at a consistent data file + sidecar pair before giving up on the metadata.
_META_ATTEMPTS = 5
#: A data file or sidecar changed this recently (seconds) may be mid-commit.
_FRESH = 2.0
#: How often a missing parent directory is re-created when a concurrent delete removes it.
_MKDIR_ATTEMPTS = 10

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_COPY_FALLBACK_ERRNOS = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.EBADF}
)

_run = anyio.to_thread.run_sync
_Record = dict[str, object]


# --------------------------------------------------------------------------- paths


@dataclasses.dataclass(frozen=True, slots=True)
class _Paths:
    """Where one key lives under a (real) root."""

    key: str
    root: str  # realpath of the backend's root
    parent: str  # lexical directory of the data file
    name: str  # last key segment
    meta: str  # sidecar path

    @property
    def data(self) -> str:
        return os.path.join(self.parent, self.name)

    @property
    def meta_root(self) -> str:
        return os.path.join(self.root, *_META)


def _segments(key: str) -> builtins.list[str]:
    validate_key(key)
    segments = key.split("/")
    for segment in segments:
        if segment.startswith(_RESERVED):
            raise InvalidKeyError(
                f"key {key!r} has the path segment {segment!r}; names starting with "
                f"{_RESERVED!r} are reserved by the local backend",
                key=key,
            )
        if len(segment.encode("utf-8")) > _MAX_SEGMENT:
            raise InvalidKeyError(
                f"key {key!r} has a path segment longer than {_MAX_SEGMENT} bytes, "
                "which the local backend cannot store",
                key=key,
            )
        if os.sep != "/" and os.sep in segment:
            raise InvalidKeyError(f"key {key!r} contains {os.sep!r}", key=key)
    return segments


def _make_paths(key: str, root: str, segments: Sequence[str]) -> _Paths:
    parent = os.path.join(root, *segments[:-1])
    meta_dirs = [segment + ".d" for segment in segments[:-1]]
    meta = os.path.join(root, *_META, *meta_dirs, segments[-1] + ".json")
    return _Paths(key=key, root=root, parent=parent, name=segments[-1], meta=meta)


def _inside(root: str, path: str) -> bool:
    base = root if root.endswith(os.sep) else root + os.sep
    return path == root or path.startswith(base)


def _real_parent(p: _Paths) -> str:
    real = os.path.realpath(p.parent)
    if not _inside(p.root, real):
        raise InvalidKeyError(
            f"key {p.key!r} resolves outside the store's root directory {p.root!r} "
            "(through a symbolic link)",
            key=p.key,
        )
    return real


def _real_object(p: _Paths) -> str:
    real = os.path.realpath(p.data)
    if not _inside(p.root, real):
        raise InvalidKeyError(
            f"key {p.key!r} resolves outside the store's root directory {p.root!r} "
            "(through a symbolic link)",
            key=p.key,
        )
    return real


def _meta_dir(p: _Paths) -> str:
    """The directory of the sidecar of ``p``, if it is reached through no symbolic link.

    The metadata tree is the backend's own: a symbolic link planted in it (or
    as ``.asyncstore`` itself) would make sidecar writes and deletes land
    wherever it points, outside the root included, so none is followed.

    Raises:
        InvalidKeyError: a directory on the way to the sidecar is a symbolic link.
    """
    directory = os.path.dirname(p.meta)
    if os.path.realpath(directory) != directory:
        raise InvalidKeyError(
            f"the metadata of key {p.key!r} would be reached through a symbolic link under "
            f"{os.path.join(p.root, _RESERVED)!r}, which the local backend never follows",
            key=p.key,
        )
    return directory


def _collision(p: _Paths) -> InvalidKeyError:
    """The error for a key whose parent path runs into an existing object."""
    segments = p.key.split("/")
    for count in range(1, len(segments)):
        path = os.path.join(p.root, *segments[:count])
        try:
            st = os.stat(path)
        except OSError:
            break
        if not stat.S_ISDIR(st.st_mode):
            used = "/".join(segments[:count])
            return InvalidKeyError(
                f"key {p.key!r} cannot be stored: {used!r} is an object, not a directory",
                key=p.key,
            )
    return InvalidKeyError(
        f"key {p.key!r} cannot be stored: one of its parent paths is not a directory",
        key=p.key,
    )


def _directory_conflict(key: str) -> InvalidKeyError:
    return InvalidKeyError(
        f"key {key!r} cannot be stored: {key + '/'!r} is a directory holding other keys",
        key=key,
    )


def _new_temp_name() -> str:
    return f"{_RESERVED}-{uuid.uuid4().hex}.part"


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _fresh(timestamp: float) -> bool:
    return abs(time.time() - timestamp) < _FRESH


def _info(key: str, st: os.stat_result, record: _Record | None) -> ObjectInfo:
    content_type: str | None = None
    metadata: dict[str, str] = {}
    if record is not None:
        value = record.get("content_type")
        content_type = value if isinstance(value, str) else None
        raw = record.get("metadata")
        if isinstance(raw, dict):
            metadata = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=_etag(st),
        last_modified=datetime.datetime.fromtimestamp(
            st.st_mtime_ns / 1e9, tz=datetime.timezone.utc
        ),
        content_type=content_type,
        metadata=metadata,
    )


@contextlib.contextmanager
def _os_errors(
    key: str,
    action: str,
    *,
    missing: type[StoreError] = NotFoundError,
    missing_message: str | None = None,
    not_a_directory: type[StoreError] = InvalidKeyError,
) -> Iterator[None]:
    """Translate OSErrors raised while working on ``key`` into the asyncstore tree."""
    try:
        yield
    except StoreError:
        raise
    except FileNotFoundError as exc:
        raise missing(missing_message or f"no object at key {key!r}", key=key) from exc
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"permission denied to {action} key {key!r}: {exc.strerror}", key=key
        ) from exc
    except (IsADirectoryError, NotADirectoryError) as exc:
        if not_a_directory is InvalidKeyError:
            message = f"key {key!r} collides with a directory or an object ({exc.strerror})"
        else:
            message = missing_message or f"no object at key {key!r}"
        raise not_a_directory(message, key=key) from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidKeyError(
                f"key {key!r} is too long for the local file system", key=key
            ) from exc
        raise StoreError(f"cannot {action} key {key!r}: {exc}", key=key) from exc


# --------------------------------------------------------------------------- file helpers
# Plain functions run in worker threads; each does several syscalls at once.


def _prepare_root(root: str, create: bool) -> tuple[str | None, str]:
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


def _byte_view(data: memoryview) -> memoryview:
    if data.format == "B" and data.ndim == 1:
        return data
    return data.cast("B")


def _prune_dirs(path: str, stop: str) -> None:
    """Remove empty directories from ``path`` up to (not including) ``stop``."""
    while path != stop and _inside(stop, path):
        try:
            os.rmdir(path)
        except OSError:  # not empty, gone, busy: another writer is there
            return
        path = os.path.dirname(path)


def _file_in_the_way(directory: str) -> bool:
    """Whether ``directory`` or one of its parents exists as something other than a directory."""
    path = directory
    while path and path != os.path.dirname(path):
        if os.path.lexists(path) and not os.path.isdir(path):
            return True
        path = os.path.dirname(path)
    return False


def _create_exclusive(
    directory: str, path: str, flags: int, on_collision: Callable[[], StoreError]
) -> int:
    """Create ``path`` with O_EXCL, making ``directory`` first (again, if a delete pruned it)."""
    for attempt in itertools.count(1):
        try:
            # makedirs races with a concurrent delete's pruning too: a parent it just
            # made can vanish before it makes the child (FileNotFoundError). Retry both.
            os.makedirs(directory, exist_ok=True)
            return os.open(path, flags | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
        except (FileExistsError, NotADirectoryError) as exc:
            # A file where a directory should be is a key collision; anything else
            # (makedirs saw EEXIST, then a prune removed the directory) is the race.
            if _file_in_the_way(directory) or attempt >= _MKDIR_ATTEMPTS:
                raise on_collision() from exc
        except FileNotFoundError:
            if attempt >= _MKDIR_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


@dataclasses.dataclass(slots=True)
class _Temp:
    """A temp data file being written: cleaned up unless it was committed."""

    path: str | None = None
    fd: int | None = None


def _open_temp(p: _Paths, temp: _Temp) -> None:
    parent = _real_parent(p)
    if os.path.isdir(os.path.join(parent, p.name)):
        raise _directory_conflict(p.key)
    path = os.path.join(parent, _new_temp_name())
    fd = _create_exclusive(parent, path, os.O_WRONLY, lambda: _collision(p))
    temp.path, temp.fd = path, fd


def _finish_temp(temp: _Temp) -> os.stat_result:
    fd = temp.fd
    assert fd is not None
    temp.fd = None
    try:
        os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _write_temp(p: _Paths, temp: _Temp, data: memoryview) -> os.stat_result:
    _open_temp(p, temp)
    assert temp.fd is not None
    pwrite_all(temp.fd, data, 0)
    return _finish_temp(temp)


def _discard_temp(temp: _Temp, root: str) -> None:
    """Close and remove an uncommitted temp file and the directories it leaves empty."""
    if temp.fd is not None:
        with contextlib.suppress(OSError):
            os.close(temp.fd)
        temp.fd = None
    if temp.path is not None:
        with contextlib.suppress(OSError):
            os.unlink(temp.path)
        _prune_dirs(os.path.dirname(temp.path), root)
        temp.path = None


def _read_record(path: str) -> tuple[_Record | None, os.stat_result | None]:
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            raw = file.read()
    except OSError:
        return None, None
    try:
        record = json.loads(raw)
    except ValueError:
        return None, st
    return (record if isinstance(record, dict) else None), st


def _load_sidecar(p: _Paths, st: os.stat_result) -> tuple[_Record | None, bool]:
    """The sidecar of ``p`` if it describes the data file ``st``; and whether to retry."""
    try:
        _meta_dir(p)
    except InvalidKeyError:
        return None, False  # a planted symbolic link: the object is shown without metadata
    record, meta_st = _read_record(p.meta)
    # The sidecar belongs to the inode it records, whatever happened to the bytes since:
    # a file changed in place (same inode, new mtime or size) keeps its recorded
    # sha256, so that a whole read reports the corruption (DigestMismatchError).
    if record is not None and record.get("inode") == st.st_ino:
        return record, False
    # No (matching) sidecar: a writer may be between its two renames. Only then is
    # a retry worth it; an old mismatch (crash, file placed by hand) is final.
    retry = _fresh(st.st_ctime) or (meta_st is not None and _fresh(meta_st.st_mtime))
    return None, retry


def _write_sidecar(p: _Paths, st: os.stat_result, attrs: WriteAttributes) -> None:
    directory = _meta_dir(p)
    previous, _ = _read_record(p.meta)
    version = previous.get("version") if previous is not None else 0
    record: _Record = {
        "format": _SIDECAR_FORMAT,
        "key": p.key,
        "version": (version if isinstance(version, int) else 0) + 1,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "size": st.st_size,
        "inode": st.st_ino,
        "mtime_ns": st.st_mtime_ns,
        "content_type": attrs.content_type,
        "metadata": dict(attrs.metadata),
    }
    payload = json.dumps(record, sort_keys=True).encode("utf-8")
    tmp = os.path.join(directory, _new_temp_name())
    fd = _create_exclusive(
        directory,
        tmp,
        os.O_WRONLY,
        lambda: StoreError(
            f"cannot write the metadata of key {p.key!r}: {directory!r} is not a directory",
            key=p.key,
        ),
    )
    try:
        try:
            pwrite_all(fd, memoryview(payload), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p.meta)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _commit_files(p: _Paths, temp: _Temp, st: os.stat_result, attrs: WriteAttributes) -> None:
    """Move the finished temp file to the key, honouring the write's condition."""
    assert temp.path is not None
    parent = os.path.dirname(temp.path)
    target = os.path.join(parent, p.name)
    if os.path.isdir(target):
        raise _directory_conflict(p.key)
    if attrs.if_match is not None:
        try:
            current = os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            raise PreconditionFailedError(
                f"key {p.key!r} does not exist, so it does not have ETag {attrs.if_match!r}",
                key=p.key,
            ) from None
        if not stat.S_ISREG(current.st_mode) or _etag(current) != attrs.if_match:
            raise PreconditionFailedError(
                f"key {p.key!r} does not have ETag {attrs.if_match!r} "
                f"(its ETag is {_etag(current)!r})",
                key=p.key,
            )
    if attrs.if_none_match:
        try:
            os.link(temp.path, target)
        except FileExistsError:
            if os.path.isdir(target):
                raise _directory_conflict(p.key) from None
            raise AlreadyExistsError(f"key {p.key!r} already exists", key=p.key) from None
        os.unlink(temp.path)
        temp.path = None
        try:
            _write_sidecar(p, st, attrs)
        except BaseException:
            # Roll back our own link: the caller is told the write failed.
            with contextlib.suppress(OSError):
                if os.stat(target).st_ino == st.st_ino:
                    os.unlink(target)
            raise
    else:
        _write_sidecar(p, st, attrs)
        try:
            os.replace(temp.path, target)
        except IsADirectoryError:
            raise _directory_conflict(p.key) from None
        temp.path = None
    fsync_dir(parent)


class _FileHandle:
    """An fd opened in a worker thread; closed by `aclose`, or at garbage collection."""

    __slots__ = ("__weakref__", "_fd", "_finalizer")

    def __init__(self) -> None:
        self._fd = -1
        self._finalizer: weakref.finalize[[int], _FileHandle] | None = None

    def attach(self, fd: int) -> None:
        self._fd = fd
        self._finalizer = weakref.finalize(self, _close_quietly, fd)

    def fileno(self) -> int:
        if self._finalizer is None or not self._finalizer.alive:
            raise StoreError("read from a closed local file")
        return self._fd

    async def aclose(self) -> None:
        if self._finalizer is None or self._finalizer.detach() is None:
            return
        with anyio.CancelScope(shield=True):
            await _run(_close_quietly, self._fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _open_object(
    p: _Paths, handle: _FileHandle, start: int, if_match: str | None
) -> tuple[os.stat_result, _Record | None, bool]:
    """Open the object for reading; check the precondition and range on that very file."""
    real = _real_object(p)
    handle.attach(os.open(real, os.O_RDONLY | _O_CLOEXEC | _O_NONBLOCK))
    st = os.fstat(handle.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise NotFoundError(f"no object at key {p.key!r} (it is a directory)", key=p.key)
    if if_match is not None and _etag(st) != if_match:
        raise PreconditionFailedError(
            f"key {p.key!r} changed: ETag is {_etag(st)!r}, not {if_match!r}", key=p.key
        )
    if start > st.st_size:
        raise InvalidRangeError(
            f"range start {start} is past the end of key {p.key!r} ({st.st_size} bytes)",
            key=p.key,
        )
    record, retry = _load_sidecar(p, st)
    return st, record, retry


def _stat_object(p: _Paths) -> tuple[os.stat_result, _Record | None, bool]:
    st = os.stat(_real_object(p))
    if not stat.S_ISREG(st.st_mode):
        raise NotFoundError(f"no object at key {p.key!r} (it is a directory)", key=p.key)
    record, retry = _load_sidecar(p, st)
    return st, record, retry


def _open_upload(p: _Paths, upload_id: str, flags: int) -> tuple[str, int]:
    path = os.path.join(_real_parent(p), upload_id)
    try:
        fd = os.open(path, flags | _O_CLOEXEC | _O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        raise _no_upload(p.key, upload_id) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _no_upload(p.key, upload_id) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _no_upload(p.key, upload_id)
    return path, fd


def _no_upload(key: str, upload_id: str) -> UploadNotFoundError:
    return UploadNotFoundError(f"no upload {upload_id!r} for key {key!r}", key=key)


def _create_upload(p: _Paths, temp: _Temp) -> None:
    _open_temp(p, temp)
    assert temp.fd is not None
    fd, temp.fd = temp.fd, None
    os.close(fd)


def _write_part(p: _Paths, upload_id: str, offset: int, data: memoryview) -> None:
    _, fd = _open_upload(p, upload_id, os.O_WRONLY)
    try:
        pwrite_all(fd, data, offset)
    finally:
        os.close(fd)


def _finish_upload(p: _Paths, upload_id: str, size: int, temp: _Temp) -> os.stat_result:
    path, fd = _open_upload(p, upload_id, os.O_RDWR)
    try:
        have = os.fstat(fd).st_size
        if have < size:
            raise UploadNotFoundError(
                f"upload {upload_id!r} for key {p.key!r} holds {have} bytes, but its parts "
                f"add up to {size}: a part is missing",
                key=p.key,
            )
        os.ftruncate(fd, size)
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    temp.path = path
    return st


def _abort_upload(p: _Paths, upload_id: str) -> None:
    parent = _real_parent(p)
    try:
        os.unlink(os.path.join(parent, upload_id))
    except (FileNotFoundError, NotADirectoryError):
        return
    _prune_dirs(parent, p.root)


def _delete(p: _Paths) -> None:
    parent = _real_parent(p)
    _meta_dir(p)  # before anything is removed
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
    _prune_dirs(parent, p.root)
    _prune_dirs(os.path.dirname(p.meta), p.meta_root)


def _copy_range(src: int, dst: int, offset: int, count: int, key: str) -> None:
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


# --------------------------------------------------------------------------- the backend


@dataclasses.dataclass(slots=True)
class _KeyLock:
    lock: anyio.Lock
    users: int = 0


class LocalBackend(Backend):
    """Objects as plain files under a directory (see the module documentation for the layout).

    Args:
        root: The directory holding the objects.
        create: True (the default): the first write (`put`, `create_upload`, the
            destination of `copy`) creates ``root``, with its parents, if it does
            not exist; until then the store is empty: `head`, `read` and the
            source of `copy` raise `NotFoundError` naming the key and the missing
            root, `list` yields nothing and deleting does nothing. No read ever
            creates the root. False: ``root`` must exist; any operation on a
            missing root raises `ConfigurationError` naming it (what a read-only
            program wants for a clear error).

    The directory is looked up lazily, in a worker thread, by the first
    operation, so constructing a backend never touches the disk.

    Raises:
        ConfigurationError: ``root`` is not a str (or ``os.PathLike`` of str), is
            empty, or holds a NUL or text the file system cannot encode; or
            ``create`` is not a bool.
    """

    capabilities = Capabilities(parallel_parts=True)

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        path = os.fspath(root) if isinstance(root, (str, os.PathLike)) else root
        if not isinstance(path, str):
            raise ConfigurationError(
                f"the local store root must be a str or os.PathLike of str, not {root!r:.80}",
                key="root",
            )
        if not path:
            raise ConfigurationError("the local store root must not be empty", key=path)
        try:
            os.fsencode(path)
        except UnicodeEncodeError:
            raise ConfigurationError(
                f"the local store root {path!r} is not valid file-system text", key=path
            ) from None
        if "\x00" in path:
            raise ConfigurationError(
                f"the local store root {path!r} contains a NUL character", key=path
            )
        if not isinstance(create, bool):
            raise ConfigurationError(
                f"option 'create' of the local store {path!r} must be True or False, "
                f"not {create!r:.80}",
                key="create",
            )
        # Pure string work here (os.path.abspath would ask the OS for the working
        # directory); a relative root is made absolute by the first operation.
        self._root = os.path.normpath(path)
        self._create = create
        self._real_root: str | None = None
        self._missing_root = self._root  # made absolute by the lookup that finds it missing
        self._locks: dict[str, _KeyLock] = {}

    @property
    def root(self) -> str:
        """The root directory, as given (normalized)."""
        return self._root

    def describe(self) -> str:
        return f"local directory {self._root}"

    # ---- helpers

    async def _ready(self, *, write: bool = False) -> str | None:
        """The real root; None if it does not exist (yet) and this operation may not make it.

        Raises:
            ConfigurationError: the root is not a directory, or ``create`` is off
                and the root does not exist.
        """
        if self._real_root is None:
            real, absolute = await _run(_prepare_root, self._root, self._create and write)
            if real is None:
                if not self._create:
                    raise ConfigurationError(
                        f"local store root {absolute!r} does not exist (and the store was "
                        "opened with create=False)",
                        key=absolute,
                    )
                self._missing_root = absolute
                return None
            self._real_root = real
        return self._real_root

    def _no_root(self, key: str, what: str = "object") -> NotFoundError:
        return NotFoundError(
            f"no {what} at key {key!r}: the local store root {self._missing_root!r} does not "
            "exist (the first write creates it)",
            key=key,
        )

    async def _paths(self, key: str, *, write: bool = False) -> _Paths:
        segments = _segments(key)
        root = await self._ready(write=write)
        if root is None:
            raise self._no_root(key)
        return _make_paths(key, root, segments)

    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _KeyLock(anyio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._locks.get(key) is entry:
                del self._locks[key]

    async def _settle(self, key: str, attempt: int) -> None:
        """Wait for an in-progress commit of ``key`` (ours: the lock; others': a short sleep)."""
        entry = self._locks.get(key)
        if entry is not None:
            async with entry.lock:
                pass
        await anyio.sleep(0.005 * 2**attempt)

    async def _commit(
        self, p: _Paths, temp: _Temp, st: os.stat_result, attrs: WriteAttributes
    ) -> WriteResult:
        async with self._locked(p.key):
            with _os_errors(p.key, "write"):
                await _run(_commit_files, p, temp, st, attrs)
        return WriteResult(etag=_etag(st))

    async def _discard(self, temp: _Temp, root: str) -> None:
        with anyio.CancelScope(shield=True):
            await _run(_discard_temp, temp, root)

    # ---- reads

    async def head(self, key: str) -> ObjectInfo:
        """Return the object's info with its raw metadata (reserved entries included).

        Raises:
            NotFoundError: The key does not exist (or is a directory).
            InvalidKeyError: The key is reserved or resolves outside the root.
        """
        p = await self._paths(key)
        for attempt in range(_META_ATTEMPTS):
            with _os_errors(key, "stat", not_a_directory=NotFoundError):
                st, record, retry = await _run(_stat_object, p)
            if not retry or attempt == _META_ATTEMPTS - 1:
                return _info(key, st, record)
            await self._settle(key, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        """Open the bytes ``[start, end)`` of an object (``end`` None: to the end).

        The file is opened once; the ETag check, the range check and every
        chunk (at most 1 MiB, one worker-thread call each) are about that
        file, even if the key is replaced meanwhile.

        Raises:
            NotFoundError: The key does not exist (or is a directory).
            InvalidRangeError: ``start`` is negative or past the end of the object.
            PreconditionFailedError: ``if_match`` is given and the ETag differs.
        """
        if start < 0:
            raise InvalidRangeError(f"range start {start} for key {key!r} is negative", key=key)
        p = await self._paths(key)
        for attempt in range(_META_ATTEMPTS):
            handle = _FileHandle()
            try:
                with _os_errors(key, "read", not_a_directory=NotFoundError):
                    st, record, retry = await _run(_open_object, p, handle, start, if_match)
                if retry and attempt < _META_ATTEMPTS - 1:
                    await handle.aclose()
                    await self._settle(key, attempt)
                    continue
            except BaseException:
                await handle.aclose()
                raise
            size = st.st_size
            stop = size if end is None else max(start, min(end, size))
            chunks = _read_chunks(handle, key, start, stop)
            return IteratorReadStream(_info(key, st, record), chunks, handle.aclose)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- writes

    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        """Write a whole object: temp file beside the target, fsync, sidecar, rename.

        Raises:
            AlreadyExistsError: ``attrs.if_none_match`` and the key exists.
            PreconditionFailedError: ``attrs.if_match`` does not match (or the key is missing).
            InvalidKeyError: The key collides with a directory or an object.
        """
        p = await self._paths(key, write=True)
        view = _byte_view(data)
        temp = _Temp()
        try:
            with _os_errors(key, "write"):
                if view.nbytes <= _WRITE_SLICE:
                    st = await _run(_write_temp, p, temp, view)
                else:
                    await _run(_open_temp, p, temp)
                    for offset in range(0, view.nbytes, _WRITE_SLICE):
                        assert temp.fd is not None
                        piece = view[offset : offset + _WRITE_SLICE]
                        await _run(pwrite_all, temp.fd, piece, offset)
                    st = await _run(_finish_temp, temp)
            return await self._commit(p, temp, st, attrs)
        except BaseException:
            await self._discard(temp, p.root)
            raise

    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        """Create the (empty) temp file beside the target; its name is the upload id.

        The id stays valid for any `LocalBackend` on the same root (another
        process may resume the upload). ``attrs`` are applied by `complete_upload`.
        """
        p = await self._paths(key, write=True)
        temp = _Temp()
        try:
            with _os_errors(key, "write"):
                await _run(_create_upload, p, temp)
        except BaseException:
            await self._discard(temp, p.root)
            raise
        assert temp.path is not None
        return os.path.basename(temp.path)

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        """Write part ``number`` at ``offset`` of the upload's temp file (``pwrite``).

        Parts may be written concurrently and in any order.

        Raises:
            UploadNotFoundError: The upload does not exist.
        """
        if number < 1 or offset < 0:
            raise InvalidArgumentError(
                f"part {number} at offset {offset} of upload {upload_id!r} for key {key!r}: "
                "part numbers start at 1 and offsets at 0",
                key=key,
            )
        p = await self._upload_paths(key, upload_id)
        view = _byte_view(data)
        missing = f"no upload {upload_id!r} for key {key!r}"
        with _os_errors(key, "write", missing=UploadNotFoundError, missing_message=missing):
            for start in range(0, max(view.nbytes, 1), _WRITE_SLICE):
                piece = view[start : start + _WRITE_SLICE]
                await _run(_write_part, p, upload_id, offset + start, piece)
        return CompletedPart(number, offset, view.nbytes, etag=str(number), checksums=checksums)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        """Commit the upload's temp file as the object, like `put` does.

        Raises:
            InvalidArgumentError: The parts are not contiguous from offset 0.
            UploadNotFoundError: The upload does not exist, or a part is missing.
            AlreadyExistsError / PreconditionFailedError: as for `put`;
                the upload is then left for `abort_upload`.
        """
        expected = 0
        for part in parts:
            if part.offset != expected or part.size < 0:
                raise InvalidArgumentError(
                    f"parts of upload {upload_id!r} for key {key!r} are not contiguous: "
                    f"part {part.number} starts at {part.offset}, expected {expected}",
                    key=key,
                )
            expected += part.size
        p = await self._upload_paths(key, upload_id)
        temp = _Temp()
        missing = f"no upload {upload_id!r} for key {key!r}"
        with _os_errors(key, "write", missing=UploadNotFoundError, missing_message=missing):
            st = await _run(_finish_upload, p, upload_id, expected, temp)
        return await self._commit(p, temp, st, attrs)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Remove the upload's temp file; idempotent.

        Raises:
            InvalidKeyError: The key breaks the local backend's rules (whatever the id).
        """
        segments = _segments(key)
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            return
        root = await self._ready()
        if root is None:
            return  # no root, so no upload
        p = _make_paths(key, root, segments)
        with _os_errors(key, "abort the upload of"):
            await _run(_abort_upload, p, upload_id)

    async def _upload_paths(self, key: str, upload_id: str) -> _Paths:
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            raise _no_upload(key, upload_id)
        segments = _segments(key)
        root = await self._ready()
        if root is None:
            raise UploadNotFoundError(
                f"no upload {upload_id!r} for key {key!r}: the local store root "
                f"{self._missing_root!r} does not exist",
                key=key,
            )
        return _make_paths(key, root, segments)

    async def delete(self, key: str) -> None:
        """Delete the file and its sidecar, then the directories left empty.

        Deleting a missing key (or a "directory") is not an error.
        """
        segments = _segments(key)
        root = await self._ready()
        if root is None:
            return  # nothing was ever written
        p = _make_paths(key, root, segments)
        async with self._locked(key):
            with _os_errors(key, "delete"):
                await _run(_delete, p)

    async def copy(self, src: str, dst: str) -> WriteResult:
        """Copy the bytes (``copy_file_range`` where possible) and the metadata.

        Raises:
            NotFoundError: ``src`` does not exist.
        """
        ps = await self._paths(src)
        pd = await self._paths(dst, write=True)
        handle = _FileHandle()
        temp = _Temp()
        try:
            for attempt in range(_META_ATTEMPTS):
                with _os_errors(src, "copy", not_a_directory=NotFoundError):
                    st, record, retry = await _run(_open_object, ps, handle, 0, None)
                if not retry or attempt == _META_ATTEMPTS - 1:
                    break
                await handle.aclose()
                handle = _FileHandle()
                await self._settle(src, attempt)
            info = _info(src, st, record)
            with _os_errors(dst, "write"):
                await _run(_open_temp, pd, temp)
                position = 0
                while position < st.st_size:
                    assert temp.fd is not None
                    count = min(_WRITE_SLICE, st.st_size - position)
                    await _run(_copy_range, handle.fileno(), temp.fd, position, count, src)
                    position += count
                new_st = await _run(_finish_temp, temp)
            await handle.aclose()
            attrs = WriteAttributes(content_type=info.content_type, metadata=info.metadata)
            return await self._commit(pd, temp, new_st, attrs)
        except BaseException:
            await handle.aclose()
            await self._discard(temp, pd.root)
            raise

    # ---- listing (last: the method name shadows the builtin in the class body)

    async def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """Yield the objects whose key starts with ``prefix``, in key order (UTF-8, like S3).

        The walk starts at the deepest directory the prefix names, reads one
        directory per worker-thread call, and orders each directory's entries
        so that the whole walk is in key order. Temp files, the ``.asyncstore``
        directory and symbolic links leading outside the root are skipped.
        Entries carry no content type or metadata (use `head`).
        """
        validate_prefix(prefix)
        cut = prefix.rfind("/")
        base, name_filter = prefix[: cut + 1], prefix[cut + 1 :]
        dir_segments = prefix[:cut].split("/") if cut >= 0 else []
        for segment in dir_segments:
            if segment.startswith(_RESERVED):
                raise InvalidKeyError(
                    f"prefix {prefix!r} has the path segment {segment!r}; names starting "
                    f"with {_RESERVED!r} are reserved by the local backend",
                    key=prefix,
                )
        root = await self._ready()
        if root is None:
            return  # nothing written yet: an empty store (and the root stays uncreated)
        with _os_errors(prefix, "list"):
            start_real, entries = await _run(
                _scan_start, root, os.path.join(root, *dir_segments), base, name_filter
            )
        if start_real is None:
            return
        stack: builtins.list[Iterator[_Entry]] = [iter(entries)]
        ancestors: builtins.list[str] = [start_real]
        last_common: str | None = None
        yielded = 0
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                ancestors.pop()
                continue
            if entry.st is None:  # a directory
                if delimiter:
                    below = entry.key + "/"
                    found = below.find(delimiter, len(prefix))
                    if found >= 0:
                        common = below[: found + len(delimiter)]
                        if common != last_common and await _run(_has_object, entry.real, root):
                            last_common = common
                            yield CommonPrefix(common)
                        continue
                if entry.real in ancestors:  # a symbolic link loop
                    continue
                with _os_errors(prefix, "list"):
                    children = await _run(_scan, entry.real, entry.key + "/", "", root)
                stack.append(iter(children))
                ancestors.append(entry.real)
                continue
            if delimiter:
                found = entry.key.find(delimiter, len(prefix))
                if found >= 0:
                    common = entry.key[: found + len(delimiter)]
                    if common != last_common:
                        last_common = common
                        yield CommonPrefix(common)
                    continue
            yielded += 1
            if yielded % 1000 == 0:
                await anyio.lowlevel.checkpoint()
            yield _info(entry.key, entry.st, None)


async def _read_chunks(
    handle: _FileHandle, key: str, position: int, stop: int
) -> AsyncIterator[bytes]:
    while position < stop:
        count = min(_READ_CHUNK, stop - position)
        with _os_errors(key, "read"):
            chunk = await _run(os.pread, handle.fileno(), count, position)
        if not chunk:
            raise PreconditionFailedError(f"key {key!r} was truncated while being read", key=key)
        position += len(chunk)
        yield chunk
    await handle.aclose()


# --------------------------------------------------------------------------- listing helpers


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    order: str  # the name, with "/" appended for a directory: sorts like the full keys
    key: str
    real: str
    st: os.stat_result | None  # None for a directory


def _listable(name: str) -> bool:
    if name.startswith(_RESERVED):
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # not UTF-8 on disk (surrogate escapes)
        return False
    return True


def _scan(directory: str, base: str, name_filter: str, root: str) -> builtins.list[_Entry]:
    """One directory's entries under ``base``, with stats, sorted in key order."""
    out: builtins.list[_Entry] = []
    try:
        scanner = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return out
    with scanner:
        for item in scanner:
            name = item.name
            if not name.startswith(name_filter) or not _listable(name):
                continue
            key = base + name
            try:
                if item.is_symlink():
                    real = os.path.realpath(item.path)
                    if not _inside(root, real):
                        continue
                else:
                    real = os.path.join(directory, name)
                if item.is_dir():
                    out.append(_Entry(name + "/", key, real, None))
                elif item.is_file():
                    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
                        continue
                    st = item.stat()
                    if stat.S_ISREG(st.st_mode):
                        out.append(_Entry(name, key, real, st))
            except OSError:  # vanished meanwhile
                continue
    out.sort(key=lambda entry: entry.order)
    return out


def _scan_start(
    root: str, directory: str, base: str, name_filter: str
) -> tuple[str | None, builtins.list[_Entry]]:
    real = os.path.realpath(directory)
    if not _inside(root, real) or not os.path.isdir(real):
        return None, []
    return real, _scan(real, base, name_filter, root)


def _has_object(directory: str, root: str) -> bool:
    """Whether a listing would find any object below ``directory``."""
    pending = [directory]
    seen = {directory}
    while pending:
        try:
            scanner = os.scandir(pending.pop())
        except OSError:
            continue
        with scanner:
            for item in scanner:
                if not _listable(item.name):
                    continue
                try:
                    real = item.path
                    if item.is_symlink():
                        real = os.path.realpath(item.path)
                        if not _inside(root, real):
                            continue
                    if item.is_file():
                        return True
                    if item.is_dir() and real not in seen:
                        seen.add(real)
                        pending.append(real)
                except OSError:
                    continue
    return False


# --------------------------------------------------------------------------- URLs


def from_url(url: SplitResult, **options: object) -> LocalBackend:
    """Open ``file:///absolute/path`` or ``file://~/path`` (below the user's home).

    ``localhost`` is accepted as the host. The only option is ``create``
    (``?create=false`` in the URL, or ``create=False`` as a keyword; default
    true): whether writes create the directory when it does not exist (see
    `LocalBackend`; reads never create it).

    Raises:
        ConfigurationError: The URL has a fragment, another host, or a path that
            is empty, relative or the file-system root; or an option is unknown,
            given twice or not true/false.
    """
    text = redact_url(url.geturl())
    given = merge_options(text, url.query, options, ("create",), "local")
    create = boolean("create", given.get("create", True), f"the local store {text!r}")
    if url.fragment:
        raise ConfigurationError(f"local store URL {text!r} takes no fragment", key=text)
    path = unquote(url.path)
    if url.netloc == "~":
        if not path.startswith("/"):
            raise ConfigurationError(
                f"local store URL {text!r} needs a path below the home directory: file://~/dir",
                key=text,
            )
        path = os.path.expanduser("~") + path
    elif url.netloc not in ("", "localhost"):
        raise ConfigurationError(
            f"local store URL {text!r} names the host {url.netloc.rpartition('@')[2]!r}; "
            "use file:///abs/path or file://~/path",
            key=text,
        )
    if not path or not os.path.isabs(path):
        raise ConfigurationError(
            f"local store URL {text!r} needs an absolute directory: file:///abs/path",
            key=text,
        )
    path = os.path.normpath(path)
    if os.path.dirname(path) == path:
        raise ConfigurationError(
            f"local store URL {text!r} names the file-system root; give a directory below it",
            key=text,
        )
    return LocalBackend(path, create=create)
