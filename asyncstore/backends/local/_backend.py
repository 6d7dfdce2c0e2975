"""`LocalBackend`: the backend contract over the modules that do the file work.

The class holds the root (looked up lazily, in a worker thread), the per-key
locks that order commits within one instance, and the retries of a read that
met a sidecar mid-commit; each operation hands its file-system work to a
plain function of `_files`, `_uploads` or `_listing`, run in a worker thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial

import anyio
import anyio.to_thread

from ..._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from ..._errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidRangeError,
    NotFoundError,
    UploadNotFoundError,
)
from ..._stream._files import pwrite_all
from ..._types import CommonPrefix, ObjectInfo
from ._files import (
    SMALL_WRITE,
    WRITE_SLICE,
    FileHandle,
    LocalReadStream,
    Temp,
    byte_view,
    commit_files,
    copy_range,
    delete_files,
    discard_temp,
    finish_temp,
    link_temp,
    open_object,
    open_temp,
    prepare_root,
    stat_object,
    write_small,
    write_temp,
)
from ._listing import walk
from ._paths import Paths, key_segments, make_paths
from ._sidecar import META_ATTEMPTS, etag, object_info
from ._translate import os_errors
from ._uploads import (
    UPLOAD_ID,
    finish_upload_file,
    new_upload_file,
    no_upload,
    remove_upload_file,
    write_part,
)

__all__ = ["LocalBackend"]

_run = anyio.to_thread.run_sync


@dataclasses.dataclass(slots=True)
class _KeyLock:
    lock: anyio.Lock
    users: int = 0


class LocalBackend(Backend):
    """Objects as plain files under a directory (see the package documentation for the layout).

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

    # Parts may land in any order, but writes into one file queue on its inode lock
    # (and spin for it, in the kernel): eight writers burn CPU the hashing needs. Two
    # keep the disk busy while the next part is hashed (direct writes: +15-25%).
    capabilities = Capabilities(parallel_parts=True, part_writers=2)

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
            real, absolute = await _run(prepare_root, self._root, self._create and write)
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

    async def _paths(self, key: str, *, write: bool = False) -> Paths:
        segments = key_segments(key)
        root = await self._ready(write=write)
        if root is None:
            raise self._no_root(key)
        return make_paths(key, root, segments)

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
        self, p: Paths, temp: Temp, st: os.stat_result, attrs: WriteAttributes
    ) -> WriteResult:
        async with self._locked(p.key):
            with os_errors(p.key, "write"):
                await _run(commit_files, p, temp, st, attrs)
        return WriteResult(etag=etag(st))

    async def _discard(self, temp: Temp, root: str) -> None:
        with anyio.CancelScope(shield=True):
            await _run(discard_temp, temp, root)

    # ---- reads

    async def head(self, key: str) -> ObjectInfo:
        """Return the object's info with its raw metadata (reserved entries included).

        Raises:
            NotFoundError: The key does not exist (or is a directory).
            InvalidKeyError: The key is reserved or resolves outside the root.
        """
        p = await self._paths(key)
        for attempt in range(META_ATTEMPTS):
            with os_errors(key, "stat", not_a_directory=NotFoundError):
                st, record, retry = await _run(stat_object, p)
            if not retry or attempt == META_ATTEMPTS - 1:
                return object_info(key, st, record)
            await self._settle(key, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        """Open the bytes ``[start, end)`` of an object (``end`` None: to the end).

        The file is opened once; the ETag check, the range check and every
        read (one worker-thread call each: at most 1 MiB iterated, up to 16 MiB
        straight into the core's buffer by ``readinto``) are about that
        file, even if the key is replaced meanwhile. A range of at most 256 KiB
        is read by the call that opens the file, which then closes it.

        Raises:
            NotFoundError: The key does not exist (or is a directory).
            InvalidRangeError: ``start`` is negative or past the end of the object.
            PreconditionFailedError: ``if_match`` is given and the ETag differs.
        """
        if start < 0:
            raise InvalidRangeError(f"range start {start} for key {key!r} is negative", key=key)
        p = await self._paths(key)
        for attempt in range(META_ATTEMPTS):
            handle = FileHandle()
            try:
                with os_errors(key, "read", not_a_directory=NotFoundError):
                    st, record, retry, data = await _run(
                        open_object, p, handle, start, end, if_match
                    )
                if retry and attempt < META_ATTEMPTS - 1:
                    await handle.aclose()
                    await self._settle(key, attempt)
                    continue
            except BaseException:
                await handle.aclose()
                raise
            size = st.st_size
            stop = size if end is None else max(start, min(end, size))
            info = object_info(key, st, record)
            return LocalReadStream(info, handle, key, start, stop, data)
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
        view = byte_view(data)
        temp = Temp()
        try:
            if view.nbytes <= SMALL_WRITE:  # one hand-off, under the key's lock
                async with self._locked(p.key):
                    with os_errors(key, "write"):
                        st = await _run(write_small, p, temp, view, attrs)
                return WriteResult(etag=etag(st))
            with os_errors(key, "write"):
                if view.nbytes <= WRITE_SLICE:
                    st = await _run(write_temp, p, temp, view)
                else:
                    await _run(open_temp, p, temp)
                    for offset in range(0, view.nbytes, WRITE_SLICE):
                        assert temp.fd is not None
                        piece = view[offset : offset + WRITE_SLICE]
                        await _run(partial(pwrite_all, temp.fd, piece, offset, write_behind=True))
                    st = await _run(finish_temp, temp)
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
        temp = Temp()
        try:
            with os_errors(key, "write"):
                await _run(new_upload_file, p, temp)
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
        view = byte_view(data)
        missing = f"no upload {upload_id!r} for key {key!r}"
        with os_errors(key, "write", missing=UploadNotFoundError, missing_message=missing):
            for start in range(0, max(view.nbytes, 1), WRITE_SLICE):
                piece = view[start : start + WRITE_SLICE]
                await _run(write_part, p, upload_id, offset + start, piece)
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
        temp = Temp()
        missing = f"no upload {upload_id!r} for key {key!r}"
        with os_errors(key, "write", missing=UploadNotFoundError, missing_message=missing):
            st = await _run(finish_upload_file, p, upload_id, expected, temp)
        return await self._commit(p, temp, st, attrs)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Remove the upload's temp file; idempotent.

        Raises:
            InvalidKeyError: The key breaks the local backend's rules (whatever the id).
        """
        segments = key_segments(key)
        if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
            return
        root = await self._ready()
        if root is None:
            return  # no root, so no upload
        p = make_paths(key, root, segments)
        with os_errors(key, "abort the upload of"):
            await _run(remove_upload_file, p, upload_id)

    async def _upload_paths(self, key: str, upload_id: str) -> Paths:
        if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
            raise no_upload(key, upload_id)
        segments = key_segments(key)
        root = await self._ready()
        if root is None:
            raise UploadNotFoundError(
                f"no upload {upload_id!r} for key {key!r}: the local store root "
                f"{self._missing_root!r} does not exist",
                key=key,
            )
        return make_paths(key, root, segments)

    async def delete(self, key: str) -> None:
        """Delete the file and its sidecar, then the directories left empty.

        Deleting a missing key (or a "directory") is not an error.
        """
        segments = key_segments(key)
        root = await self._ready()
        if root is None:
            return  # nothing was ever written
        p = make_paths(key, root, segments)
        async with self._locked(key):
            with os_errors(key, "delete"):
                await _run(delete_files, p)

    async def copy(self, src: str, dst: str) -> WriteResult:
        """Copy the object: a hard link to its file where possible, else its bytes.

        An object's file is never written in place, so the copy may share it
        (`link_temp`); where it cannot, the bytes are copied (``copy_file_range``
        where possible). The metadata is copied either way.

        Raises:
            NotFoundError: ``src`` does not exist.
        """
        ps = await self._paths(src)
        pd = await self._paths(dst, write=True)
        handle = FileHandle()
        temp = Temp()
        try:
            for attempt in range(META_ATTEMPTS):
                with os_errors(src, "copy", not_a_directory=NotFoundError):
                    st, record, retry, _ = await _run(open_object, ps, handle, 0, None, None, False)
                if not retry or attempt == META_ATTEMPTS - 1:
                    break
                await handle.aclose()
                handle = FileHandle()
                await self._settle(src, attempt)
            info = object_info(src, st, record)
            with os_errors(dst, "write"):
                linked = await _run(link_temp, pd, temp, handle.fileno())
                position = 0
                while linked is None and position < st.st_size:
                    assert temp.fd is not None
                    count = min(WRITE_SLICE, st.st_size - position)
                    await _run(copy_range, handle.fileno(), temp.fd, position, count, src)
                    position += count
                new_st = linked if linked is not None else await _run(finish_temp, temp)
            await handle.aclose()
            attrs = WriteAttributes(content_type=info.content_type, metadata=info.metadata)
            return await self._commit(pd, temp, new_st, attrs)
        except BaseException:
            await handle.aclose()
            await self._discard(temp, pd.root)
            raise

    # ---- listing

    def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """Yield the objects whose key starts with ``prefix``, in key order (UTF-8, like S3).

        The walk starts at the deepest directory the prefix names, reads one
        directory per worker-thread call, and orders each directory's entries
        so that the whole walk is in key order. Temp files, the ``.asyncstore``
        directory and symbolic links leading outside the root are skipped.
        Entries carry no content type or metadata (use `head`).
        """
        return walk(prefix, delimiter, self._ready)
