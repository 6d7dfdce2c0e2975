"""The Store: the user API over any backend, driving the streaming-chunk core."""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import pathlib
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from types import TracebackType

import anyio

from ._backend import Backend, Capabilities, CompletedPart, MiB, WriteAttributes
from ._errors import (
    ConfigurationError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    TimeoutError,
    TransportError,
)
from ._keys import validate_key, validate_prefix
from ._meta import MODE, MTIME, SHA256, check_user_metadata, is_sha256_digest, public_info
from ._opening import Opening
from ._stream._download import Download, ObjectStream, check_range, open_download, read_all
from ._stream._files import AtomicFile
from ._stream._hashing import Sha256, part_checksums_async
from ._stream._retry import RetryPolicy, call_with_retry, exhausted
from ._stream._source import open_source
from ._stream._tasks import Slots
from ._stream._upload import ProgressReporter, plan_part_size, upload
from ._types import CommonPrefix, ObjectInfo, Progress, PutMode, PutResult, TransferInfo

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_MAX_CONCURRENCY", "Store"]

#: Default part / range size: large enough that per-request overhead is small,
#: small enough that ``chunk_size * (max_concurrency + 2)`` stays modest.
DEFAULT_CHUNK_SIZE = 8 * MiB
#: Default number of parts or ranges in flight for one transfer.
DEFAULT_MAX_CONCURRENCY = 8


def _positive_int(name: str, value: object, *, key: str | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        where = f" for key {key!r}" if key is not None else ""
        raise InvalidArgumentError(
            f"{name}{where} must be an integer >= 1, not {value!r}", key=key or name
        )
    return value


def _check_upload_id(upload_id: object, key: str) -> str:
    if not isinstance(upload_id, str) or not upload_id:
        raise InvalidArgumentError(
            f"upload_id for key {key!r} must be a non-empty str, not {upload_id!r:.80}", key=key
        )
    return upload_id


def _check_progress(progress: object, key: str) -> None:
    if progress is not None and not callable(progress):
        raise InvalidArgumentError(
            f"progress for key {key!r} must be a callable or None, not {type(progress).__name__}",
            key=key,
        )


def _completed_parts(parts: object, key: str) -> list[CompletedPart]:
    """``parts`` in part-number order, if they are the CompletedParts of parts 1..n."""
    try:
        given = list(parts)  # type: ignore[call-overload]
    except TypeError:
        given = None
    if given is None or not all(isinstance(part, CompletedPart) for part in given):
        raise InvalidArgumentError(
            f"parts of key {key!r} must be an iterable of the CompletedParts that "
            f"upload_part returned, not {type(parts).__name__}",
            key=key,
        )
    ordered = sorted(given, key=lambda part: part.number)
    if [part.number for part in ordered] != list(range(1, len(ordered) + 1)):
        raise InvalidArgumentError(
            f"parts of key {key!r} must be numbered 1..n without gaps; "
            f"got {[part.number for part in ordered]}",
            key=key,
        )
    return ordered


def _write_attributes(
    key: str,
    content_type: str | None,
    metadata: Mapping[str, str] | None,
    mode: PutMode,
    extra: Mapping[str, str] | None = None,
) -> WriteAttributes:
    if content_type is not None and (
        not isinstance(content_type, str)
        or not content_type
        or not all(0x20 <= ord(c) < 0x7F for c in content_type)
    ):
        raise InvalidArgumentError(
            f"content_type for key {key!r} must be a non-empty printable ASCII str, "
            f"not {content_type!r}",
            key=key,
        )
    user = check_user_metadata(metadata, key=key)
    if extra:
        user.update(extra)
    if mode == "overwrite":
        return WriteAttributes(content_type, user)
    if mode == "create":
        return WriteAttributes(content_type, user, if_none_match=True)
    if (
        isinstance(mode, Mapping)
        and set(mode) == {"if_match"}
        and isinstance(mode["if_match"], str)
        and mode["if_match"]
    ):
        return WriteAttributes(content_type, user, if_match=mode["if_match"])
    raise InvalidArgumentError(
        f"mode for key {key!r} must be 'overwrite', 'create' or {{'if_match': etag}}, not {mode!r}",
        key=key,
    )


class _NoSlot:
    """A store without a bound: nothing to wait for."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_SLOT = _NoSlot()


class Store:
    """An object store: the user API over one backend.

    Open one with `open_store` from a URL, or give it a
    backend directly, and use it as an async context manager:

        async with Store(MemoryBackend()) as store:
            await store.put("greeting.txt", b"hello")

    Every transfer goes through the streaming-chunk core: parts of
    ``chunk_size`` bytes, at most ``max_concurrency`` in flight, the sha256
    computed while the bytes stream, TransportErrors retried per ``retry``.
    Peak memory per transfer is about ``chunk_size * (max_concurrency + 2)``.

    Args:
        backend: Where the bytes go.
        chunk_size: Default part size for uploads and range size for downloads
            (default: the backend's ``default_chunk_size``, else 8 MiB).
        max_concurrency: Default number of parts or ranges in flight per transfer
            (default: the backend's ``default_max_concurrency``, else 8).
        retry: How TransportErrors are retried.
        timeout: Seconds that one call (`put`, `get`, `head`, `download_file`, ...)
            may take in all, retries and backoff included; past it the call is
            cancelled, cleaned up (an upload is aborted, a temp file removed) and
            raises asyncstore's `TimeoutError` naming the key. None (the default):
            no overall limit, only the backend's connect and read timeouts. A
            caller's own ``anyio.fail_after``/``move_on_after`` scope works the same
            way around any call, and is how to bound a `stream` or `list`.
        max_connections: The most calls (`get`, `head`, `put`, `delete`, ...) the
            store runs at once; more wait their turn before doing any work, so a
            caller who gathers thousands of calls cannot swamp the event loop.
            Default: the backend's ``default_max_connections``, the size of its
            connection pool (64 on S3, GCS and Azure; no bound in memory or on
            local files). Each call's own parts or ranges still share the pool.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        max_connections: int | None = None,
    ) -> None:
        if not isinstance(backend, Backend):
            raise InvalidArgumentError(
                f"backend must be an asyncstore Backend, not {type(backend).__name__}",
                key="backend",
            )
        self.backend = backend
        if chunk_size is None:
            chunk_size = backend.default_chunk_size or DEFAULT_CHUNK_SIZE
        if max_concurrency is None:
            max_concurrency = backend.default_max_concurrency or DEFAULT_MAX_CONCURRENCY
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.max_concurrency = _positive_int("max_concurrency", max_concurrency)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"retry must be a RetryPolicy or None, not {type(retry).__name__}", key="retry"
            )
        self.retry = retry if retry is not None else RetryPolicy()
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0
            or timeout == math.inf
        ):
            raise ConfigurationError(
                f"timeout must be a positive number of seconds or None, not {timeout!r}",
                key="timeout",
            )
        self.timeout = timeout
        if max_connections is None:
            max_connections = backend.default_max_connections
        #: The most calls in flight at once (None: no bound).
        self.max_connections = (
            None if max_connections is None else _positive_int("max_connections", max_connections)
        )
        self._slots: Slots | None = None

    def _operation(self, what: str, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """One call: within the store's ``timeout``, after waiting for one of its slots.

        Without a timeout (the common case) a small class does it: this wraps every
        call, and a generator context costs more than the rest of a small call's own
        work in the Store.
        """
        slot = self._slots_now() if self.max_connections is not None else _NO_SLOT
        if self.timeout is None:
            return slot
        return self._timed(what, key, slot)

    def _slots_now(self) -> Slots:
        slots = self._slots
        if slots is None:
            assert self.max_connections is not None
            slots = self._slots = Slots(self.max_connections)
        return slots

    @contextlib.asynccontextmanager
    async def _timed(
        self, what: str, key: str, slot: contextlib.AbstractAsyncContextManager[None]
    ) -> AsyncIterator[None]:
        with self._deadline(what, key):
            async with slot:
                yield

    @contextlib.contextmanager
    def _deadline(self, what: str, key: str) -> Iterator[None]:
        """Bound the block by the store's ``timeout``, as asyncstore's TimeoutError."""
        if self.timeout is None:
            yield
            return
        scope = anyio.CancelScope(deadline=anyio.current_time() + self.timeout)
        try:
            with scope:
                yield
            if scope.cancelled_caught:
                raise builtins.TimeoutError
        except builtins.TimeoutError as exc:
            if isinstance(exc, StoreError) or not scope.cancelled_caught:
                raise
            raise TimeoutError(
                f"{what} of key {key!r} did not finish within the store's "
                f"timeout of {self.timeout} s",
                key=key,
            ) from None

    def __repr__(self) -> str:
        return f"<Store {self.backend.describe()}>"

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the backend (its connections, clients, ...)."""
        await self.backend.aclose()

    def _sizes(
        self, chunk_size: int | None, max_concurrency: int | None, key: str
    ) -> tuple[int, int]:
        return (
            self.chunk_size
            if chunk_size is None
            else _positive_int("chunk_size", chunk_size, key=key),
            self.max_concurrency
            if max_concurrency is None
            else _positive_int("max_concurrency", max_concurrency, key=key),
        )

    # -- writing -------------------------------------------------------------------------------

    async def _put(
        self,
        key: str,
        data: object,
        *,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        mode: PutMode,
        chunk_size: int | None,
        max_concurrency: int | None,
        progress: Progress | None,
        record_file: bool,
    ) -> tuple[PutResult, TransferInfo]:
        validate_key(key)
        _check_progress(progress, key)
        async with self._operation("put", key):
            part_size, concurrency = self._sizes(chunk_size, max_concurrency, key)
            attrs = _write_attributes(key, content_type, metadata, mode)
            started = time.perf_counter()
            reader, st = await open_source(
                data, lambda size: plan_part_size(self.backend, part_size, size, key=key), key=key
            )
            try:
                if record_file and st is not None:
                    attrs = _write_attributes(
                        key,
                        content_type,
                        metadata,
                        mode,
                        {MTIME: repr(st.st_mtime), MODE: format(st.st_mode & 0o7777, "o")},
                    )
                reporter = ProgressReporter(progress, reader.size)
                outcome = await upload(
                    self.backend,
                    key,
                    reader,
                    attrs,
                    part_size=reader.part_size,
                    concurrency=concurrency,
                    retry=self.retry,
                    progress=reporter,
                )
            finally:
                await reader.aclose()
            duration = max(time.perf_counter() - started, 1e-9)
            result = PutResult(key, outcome.size, outcome.etag, outcome.sha256, outcome.part_count)
            info = TransferInfo(
                key=key,
                bytes_transferred=outcome.size,
                duration=duration,
                mb_per_s=outcome.size / duration / 1e6,
                part_count=outcome.part_count,
                concurrency=outcome.concurrency,
                request_id=outcome.request_id,
                sha256=outcome.sha256,
                peak_buffered=outcome.peak_buffered,
            )
            return result, info

    async def put(
        self,
        key: str,
        data: object,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        mode: PutMode = "overwrite",
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        progress: Progress | None = None,
    ) -> PutResult:
        """Write an object from any source of bytes, streaming it in parts.

        Args:
            key: Where to write.
            data: bytes or any buffer; a path (``pathlib.Path``, ``anyio.Path``);
                a binary file object (sync or async ``read``); or a sync or async
                iterable of bytes-like chunks. A ``str`` is rejected: encode it first.
                A chunk that is not ``bytes`` (a bytearray, a memoryview) is copied
                before the next one is asked for, so the iterable may refill and
                yield the same buffer again; ``bytes`` chunks are used as they are,
                and so are `LentBuffer` chunks, given back when no longer needed.
            content_type: MIME type to record.
            metadata: User metadata (lowercase ASCII names, printable ASCII values, 2 KiB).
            mode: ``"overwrite"``, ``"create"`` (AlreadyExistsError if the key
                exists) or ``{"if_match": etag}`` (PreconditionFailedError unless
                the current ETag matches).
            chunk_size: Part size for this put (default: the store's).
            max_concurrency: Parts in flight for this put (default: the store's).
            progress: Called (or awaited) with ``(bytes_done, bytes_total)`` as parts finish.

        Returns:
            The size, ETag and sha256 of what was written.

        Raises:
            InvalidKeyError: the key is not acceptable.
            InvalidArgumentError: bad data, metadata, mode or option.
            AlreadyExistsError: ``mode="create"`` and the key exists.
            PreconditionFailedError: ``if_match`` did not match.
            TransportError: the service kept failing after the retries.
        """
        result, _ = await self._put(
            key,
            data,
            content_type=content_type,
            metadata=metadata,
            mode=mode,
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            progress=progress,
            record_file=False,
        )
        return result

    async def upload_file(
        self,
        path: str | os.PathLike[str],
        key: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        mode: PutMode = "overwrite",
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        progress: Progress | None = None,
    ) -> TransferInfo:
        """Upload a local file, recording its mtime and permission bits with the object.

        Takes the same options as `put`.

        Returns:
            A TransferInfo: bytes, duration, MB/s, parts, concurrency, sha256.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgumentError(
                f"path for key {key!r} must be a str or os.PathLike, not {type(path).__name__}",
                key=key,
            )
        _, info = await self._put(
            key,
            _as_path(path),
            content_type=content_type,
            metadata=metadata,
            mode=mode,
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            progress=progress,
            record_file=True,
        )
        return info

    async def copy(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` with its metadata, server-side where the backend can.

        Raises:
            NotFoundError: ``src`` does not exist.
        """
        validate_key(src)
        validate_key(dst)
        async with self._operation("copy", src):
            await call_with_retry(self.retry, "copy", src, lambda: self.backend.copy(src, dst))

    async def delete(self, key: str) -> None:
        """Delete an object. Deleting a key that does not exist is not an error."""
        validate_key(key)
        async with self._operation("delete", key):
            await call_with_retry(self.retry, "delete", key, lambda: self.backend.delete(key))

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several objects (batched where the backend can).

        Every key is validated before anything is deleted.
        """
        if isinstance(keys, str):
            raise InvalidArgumentError(
                f"delete_many takes an iterable of keys, not the str {keys!r}", key=keys
            )
        try:
            given = list(keys)
        except TypeError:
            raise InvalidArgumentError(
                f"delete_many takes an iterable of keys, not {type(keys).__name__}", key="keys"
            ) from None
        checked = [validate_key(k) for k in given]
        if checked:
            async with self._operation("delete_many", checked[0]):
                await call_with_retry(
                    self.retry,
                    "delete_many",
                    checked[0],
                    lambda: self.backend.delete_many(checked),
                )

    # -- resumable multipart uploads -------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """The backend's multipart limits (part sizes, part count, parallel parts)."""
        return self.backend.capabilities

    async def create_upload(
        self,
        key: str,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        mode: PutMode = "overwrite",
    ) -> str:
        """Start a multipart upload driven by the caller; return its id.

        For uploads whose parts arrive over time (resumable sessions, chunked
        pushes): the id is a plain string that any process can resume with
        `upload_part`, and nothing is visible at ``key`` until
        `complete_upload`. For a whole source at once, use `put`.
        """
        validate_key(key)
        async with self._operation("create upload", key):
            attrs = _write_attributes(key, content_type, metadata, mode)
            return await call_with_retry(
                self.retry, "create upload", key, lambda: self.backend.create_upload(key, attrs)
            )

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: object, *, offset: int
    ) -> CompletedPart:
        """Upload part ``number`` (1-based) of an upload, holding the bytes at ``offset``.

        The per-part checksums the backend verifies are computed here. Every
        part but the last must be at least ``capabilities.min_part_size`` bytes.

        Raises:
            InvalidArgumentError: ``upload_id`` is not a str, ``number`` is not from 1
                to ``capabilities.max_parts``, ``offset`` is negative, or the part would
                end past the largest object an upload can make (``max_parts`` parts of
                ``max_part_size``).
            UploadNotFoundError: the upload does not exist (or was completed or aborted).
        """
        validate_key(key)
        _check_upload_id(upload_id, key)
        number = _positive_int("number", number, key=key)
        caps = self.capabilities
        if number > caps.max_parts:
            raise InvalidArgumentError(
                f"part number {number} of key {key!r} is above the backend's limit of "
                f"{caps.max_parts} parts",
                key=key,
            )
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise InvalidArgumentError(
                f"offset for key {key!r} must be an integer >= 0, not {offset!r}", key=key
            )
        try:
            view = memoryview(data).cast("B")  # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentError(
                f"part data for key {key!r} must be bytes-like, not {type(data).__name__}",
                key=key,
            ) from None
        if view.nbytes > self.capabilities.max_part_size:
            raise InvalidArgumentError(
                f"part {number} of key {key!r} is {view.nbytes} bytes; "
                f"the backend's limit is {self.capabilities.max_part_size}",
                key=key,
            )
        if offset + view.nbytes > caps.max_parts * caps.max_part_size:
            raise InvalidArgumentError(
                f"part {number} of key {key!r} at offset {offset} would end past the largest "
                f"object an upload can make ({caps.max_parts * caps.max_part_size} bytes)",
                key=key,
            )
        async with self._operation(f"upload part {number}", key):
            sums = await part_checksums_async(view, self.capabilities.part_checksums)
            return await call_with_retry(
                self.retry,
                f"upload part {number}",
                key,
                lambda: self.backend.upload_part(key, upload_id, number, offset, view, sums),
            )

    async def complete_upload(
        self,
        key: str,
        upload_id: str,
        parts: Iterable[CompletedPart],
        *,
        sha256: str,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        mode: PutMode = "overwrite",
    ) -> PutResult:
        """Commit the parts, in part-number order, as the object at ``key``.

        Args:
            key: The upload's key.
            upload_id: The id `create_upload` returned.
            parts: Every part, as `upload_part` returned them.
            sha256: ``sha256:<hex>`` of the whole object, recorded with it so
                that later reads are verified. The caller vouches for it.
            content_type: As given to `create_upload`.
            metadata: As given to `create_upload`.
            mode: As given to `create_upload`.

        Raises:
            InvalidArgumentError: ``parts`` is not an iterable of CompletedParts
                numbered 1..n without gaps, ``upload_id`` is not a str, or ``sha256``
                is not a sha256 digest.
            AlreadyExistsError / PreconditionFailedError: per ``mode``; the upload
                is then still open (abort it).
        """
        validate_key(key)
        _check_upload_id(upload_id, key)
        ordered = _completed_parts(parts, key)
        if not is_sha256_digest(sha256):
            raise InvalidArgumentError(
                f"sha256 for key {key!r} must be 'sha256:' and 64 lowercase hex digits, "
                f"not {sha256!r}",
                key=key,
            )
        attrs = _write_attributes(key, content_type, metadata, mode, {SHA256: sha256})
        async with self._operation("complete upload", key):
            result = await call_with_retry(
                self.retry,
                "complete upload",
                key,
                lambda: self.backend.complete_upload(key, upload_id, ordered, attrs),
            )
        return PutResult(key, sum(part.size for part in ordered), result.etag, sha256, len(ordered))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts. Aborting twice is not an error."""
        validate_key(key)
        _check_upload_id(upload_id, key)
        async with self._operation("abort upload", key):
            await call_with_retry(
                self.retry, "abort upload", key, lambda: self.backend.abort_upload(key, upload_id)
            )

    # -- reading -------------------------------------------------------------------------------

    async def head(self, key: str) -> ObjectInfo:
        """Return an object's size, ETag, timestamps, content type, metadata and sha256.

        Raises:
            NotFoundError: the key does not exist.
        """
        validate_key(key)
        async with self._operation("head", key):
            info = await call_with_retry(self.retry, "head", key, lambda: self.backend.head(key))
            return public_info(info)

    async def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        try:
            await self.head(key)
        except NotFoundError:
            return False
        return True

    async def _open(
        self,
        key: str,
        start: int | None,
        end: int | None,
        suffix: int | None,
        chunk_size: int,
    ) -> Download:
        return await open_download(
            self.backend,
            key,
            start=start,
            end=end,
            suffix=suffix,
            chunk_size=chunk_size,
            retry=self.retry,
        )

    async def get(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        verify: bool = True,
        if_match: str | None = None,
    ) -> bytes:
        """Read an object (or the range ``[start, end)``, or its last ``suffix`` bytes).

        Large objects are read as parallel ranges pinned to one ETag. When the
        whole object is read and a sha256 was recorded at upload, it is verified
        (a range of an object cannot be checked against the object's digest, and
        is not hashed).

        Args:
            key: The object's key.
            start: First byte of the range (default 0).
            end: End of the range, exclusive (default: the end of the object).
            suffix: Read the last ``suffix`` bytes instead (not with ``start``/``end``).
            chunk_size: Range size of the parallel reads (default: the store's).
            max_concurrency: Ranges in flight (default: the store's).
            verify: Check a whole read against the recorded sha256.
            if_match: Read only the version whose ETag (as in `ObjectInfo.etag`)
                is this: several ranged reads of one object made with the ETag
                of the first are then all of the same version.

        Raises:
            NotFoundError: the key does not exist.
            InvalidRangeError: a negative bound, ``end < start``, or ``start`` past the end.
            InvalidArgumentError: ``if_match`` is not a str.
            DigestMismatchError: the bytes do not match the recorded sha256.
            PreconditionFailedError: the object was replaced during the read, or its
                ETag is not ``if_match``.
        """
        validate_key(key)
        if if_match is not None and not isinstance(if_match, str):
            raise InvalidArgumentError(
                f"if_match for key {key!r} must be an ETag (str) or None, "
                f"not {type(if_match).__name__}",
                key=key,
            )
        async with self._operation("get", key):
            part, window = self._sizes(chunk_size, max_concurrency, key)
            download = await self._open(key, start, end, suffix, part)
            if if_match is not None and download.info.etag != if_match:
                # The first range (already read) is of another version: nothing is returned.
                await download.close_first()
                raise PreconditionFailedError(
                    f"key {key!r} was replaced: its ETag is {download.info.etag!r}, "
                    f"not {if_match!r} (if_match)",
                    key=key,
                )
            data, _, _ = await read_all(download, window=window, verify=verify)
            return data

    def stream(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        verify: bool = True,
    ) -> ObjectStream:
        """Stream an object's bytes in order, never holding more than a window of ranges.

        Use ``async with store.stream(key) as body: async for chunk in body`` for
        parallel ranged reads, or a bare ``async for`` for one range at a time.
        Range arguments are as for `get`; errors are raised when iteration
        starts (or on entering the ``async with``).
        """
        validate_key(key)
        part, window = self._sizes(chunk_size, max_concurrency, key)
        check_range(key, start, end, suffix)
        return ObjectStream(
            lambda: self._open(key, start, end, suffix, part), window=window, verify=verify
        )

    def open(
        self,
        key: str,
        *,
        start: int | None = None,
        end: int | None = None,
        suffix: int | None = None,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        verify: bool = True,
    ) -> Opening[ObjectStream]:
        """Open an object for streaming: the first range is read before any byte is handed on.

        Unlike `stream`, whose errors come at the first iteration, the opening
        makes the first ranged read at once, so a missing key raises
        `NotFoundError` (and a bad range `InvalidRangeError`) here, before a
        caller has committed to anything, such as an HTTP response's headers;
        and ``stream.info`` (size, ETag, content type, metadata) is set.

            async with store.open(key) as stream:    # parallel ranged reads
                print(stream.info.size)
                async for chunk in stream:
                    ...

            stream = await store.open(key)           # one range at a time, closed
            try:                                     # by stream.aclose()
                async for chunk in stream:
                    ...
            finally:
                await stream.aclose()

        The store's ``timeout`` bounds the opening. Arguments are as for `stream`.

        Raises:
            NotFoundError: the key does not exist (when awaited or entered).
            InvalidRangeError: a bad range, or ``start`` past the end of the object.
        """
        stream = self.stream(
            key,
            start=start,
            end=end,
            suffix=suffix,
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            verify=verify,
        )

        async def opening() -> ObjectStream:
            try:
                with self._deadline("open", key):
                    await stream._open()
            except BaseException:
                await stream.aclose()
                raise
            return stream

        return Opening(opening)

    def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """Iterate over the objects whose key starts with ``prefix``, in key order.

        With ``delimiter`` (normally ``"/"``), keys that contain it after the
        prefix are rolled up into one `CommonPrefix` each, like folders.

        A listing cut short by a transport error (a connection reset between two
        pages) is listed again and goes on after the last entry it gave, as the
        store's `RetryPolicy` allows: no entry is given twice or skipped.

        Raises:
            InvalidKeyError: the prefix is not acceptable.
            TransportError: the listing kept failing after the retries.
        """
        validate_prefix(prefix)
        if delimiter is not None and (not isinstance(delimiter, str) or delimiter == ""):
            raise InvalidArgumentError(
                f"delimiter must be a non-empty str or None, not {delimiter!r}", key=prefix
            )
        return self._list(prefix, delimiter)

    async def _list(
        self, prefix: str, delimiter: str | None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """The listing; one cut by a TransportError (a connection reset between two pages)
        is listed again and resumes after the last entry it yielded (listings come in key
        order), as long as the store's retry policy allows failures in a row."""
        last: str | None = None
        failures = 0
        while True:
            entries = self.backend.list(prefix, delimiter=delimiter)
            try:
                async for entry in entries:
                    name = entry.key if isinstance(entry, ObjectInfo) else entry.prefix
                    if last is not None and name <= last:
                        continue  # yielded before the listing was cut
                    failures = 0
                    last = name
                    yield public_info(entry) if isinstance(entry, ObjectInfo) else entry
            except TransportError as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise exhausted(exc, "list", prefix or None, failures) from exc
                await anyio.sleep(self.retry.delay(failures))
            else:
                return
            finally:
                # When the caller stops early, close the backend's listing (and any page
                # request it has open) with this generator, rather than leaving it to GC.
                aclose = getattr(entries, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def download_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        progress: Progress | None = None,
        verify: bool = True,
    ) -> TransferInfo:
        """Download an object to a file, atomically and verified.

        Ranges are written at their offsets into a temp file beside ``path``
        while the sha256 is computed in order; the temp file is fsynced and
        renamed into place only if the digest matches the one recorded at
        upload. The source file's mtime and mode are restored when recorded.

        Raises:
            NotFoundError: the key does not exist.
            DigestMismatchError: the bytes do not match the recorded sha256;
                nothing is left at ``path`` (an existing file there is kept).
        """
        validate_key(key)
        _check_progress(progress, key)
        async with self._operation("download", key):
            if not isinstance(path, (str, os.PathLike)):
                raise InvalidArgumentError(
                    f"path for key {key!r} must be a str or os.PathLike, not {type(path).__name__}",
                    key=key,
                )
            part, window = self._sizes(chunk_size, max_concurrency, key)
            started = time.perf_counter()
            download = await self._open(key, None, None, None, part)
            target = AtomicFile(path, key=key)
            hasher = Sha256()
            reporter = ProgressReporter(progress, download.size)

            async def in_order(offset: int, data: memoryview) -> None:
                await hasher.update(data)
                await reporter.advance(len(data))

            try:
                await target.open()
                await reporter.advance(0)
                peak = await download.fetch(
                    window=window, on_ordered=in_order, on_ready=target.write_at
                )
                sha = download.verify(hasher) if verify else hasher.digest_string()
                await target.commit(
                    download.size, mtime=download.info.mtime, mode=download.info.mode
                )
            except BaseException:
                await download.close_first()
                await target.discard()
                raise
            duration = max(time.perf_counter() - started, 1e-9)
            return TransferInfo(
                key=key,
                bytes_transferred=download.size,
                duration=duration,
                mb_per_s=download.size / duration / 1e6,
                part_count=len(download.ranges()),
                concurrency=peak,
                request_id=None,
                sha256=sha,
                peak_buffered=peak * part,
            )


def _as_path(path: str | os.PathLike[str]) -> os.PathLike[str]:
    return path if isinstance(path, os.PathLike) else pathlib.Path(path)
