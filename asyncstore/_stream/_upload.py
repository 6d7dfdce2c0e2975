"""The upload engine: parts through a sliding window, hashed in order, aborted on failure.

A reader task cuts the source into parts and hands them, one at a time, to
the calling task, which hashes each one in stream order (in a worker thread
when large) and hands it to one of ``concurrency`` worker tasks; both hand-overs
are unbuffered memory object streams. So the next part is read while this one
is hashed, and when every worker is busy the hashing waits, and then the
reading: that wait is the backpressure, and it bounds the memory held to
``part_size * (concurrency + 2)`` whatever the object's size. Any failure or
cancellation aborts the multipart upload in a shielded scope, so nothing is
left half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectSendStream

from .._backend import Backend, CompletedPart, MiB, WriteAttributes, WriteResult
from .._errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    PreconditionFailedError,
    StoreError,
    TransportError,
    UploadNotFoundError,
)
from .._meta import SHA256, public_info
from ._hashing import INLINE_CHECKSUMS, Sha256, part_checksums_async
from ._retry import RetryPolicy, call_with_retry
from ._source import PartReader
from ._tasks import task_group

__all__ = ["ProgressReporter", "UploadOutcome", "abort_quietly", "plan_part_size", "upload"]

#: How long an abort may take after a failure or cancellation before it is given up.
ABORT_TIMEOUT = 30.0


class ProgressReporter:
    """Calls (or awaits) a user progress callback with ``(bytes_done, bytes_total)``."""

    def __init__(
        self,
        callback: Callable[[int, int | None], Awaitable[None] | None] | None,
        total: int | None,
    ) -> None:
        self._callback = callback
        self.total = total
        self.done = 0

    async def advance(self, n: int) -> None:
        self.done += n
        if self._callback is not None:
            result = self._callback(self.done, self.total)
            if isinstance(result, Awaitable):
                await result


@dataclasses.dataclass(slots=True)
class _Window:
    """Accounting for the bytes and requests the engine holds at once."""

    held: int = 0
    peak_held: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

    def take(self, n: int) -> None:
        self.held += n
        self.peak_held = max(self.peak_held, self.held)

    def start(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)


@dataclasses.dataclass(frozen=True, slots=True)
class UploadOutcome:
    """What the engine did, for PutResult and TransferInfo."""

    size: int
    etag: str
    sha256: str
    part_count: int
    concurrency: int
    peak_buffered: int
    request_id: str | None


def plan_part_size(backend: Backend, requested: int, size: int | None, *, key: str) -> int:
    """The part size to use: the requested one, raised to fit the backend's limits.

    Raises:
        InvalidArgumentError: the object cannot fit the backend's part limits.
    """
    caps = backend.capabilities
    part_size = max(requested, caps.min_part_size)
    if size is not None and math.ceil(size / part_size) > caps.max_parts:
        part_size = math.ceil(size / caps.max_parts / MiB) * MiB
    if part_size > caps.max_part_size:
        raise InvalidArgumentError(
            f"key {key!r}: part size {part_size} exceeds the backend's limit of "
            f"{caps.max_part_size} bytes (object of {size} bytes)",
            key=key,
        )
    return part_size


def _too_many_parts(key: str, max_parts: int, part_size: int) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"key {key!r}: more than {max_parts} parts of {part_size} bytes; "
        "pass a larger chunk_size for this stream",
        key=key,
    )


def _with_sha(attrs: WriteAttributes, sha: str) -> WriteAttributes:
    return dataclasses.replace(attrs, metadata={**attrs.metadata, SHA256: sha})


async def _commit(
    backend: Backend,
    key: str,
    what: str,
    write: Callable[[], Awaitable[WriteResult]],
    attrs: WriteAttributes,
    size: int,
    retry: RetryPolicy,
) -> WriteResult:
    """Retry the write that makes the object visible, never blindly when it is conditional.

    An attempt that failed with a TransportError may still have landed, its
    answer lost. Retrying a plain put is harmless, but a conditional one
    (create-if-absent, if-match) then meets its own object and fails the
    condition, and a retried complete finds its upload gone. So when a retry
    after such a loss fails that way, the object is read back: if it holds
    this write's sha256 and size, the lost attempt landed and the write
    succeeded; otherwise the error is real and raised.
    """
    uncertain = False

    async def attempt() -> WriteResult:
        nonlocal uncertain
        try:
            return await write()
        except TransportError:
            uncertain = True
            raise

    try:
        return await call_with_retry(retry, what, key, attempt)
    except (AlreadyExistsError, PreconditionFailedError, UploadNotFoundError) as exc:
        conditional = attrs.if_none_match or attrs.if_match is not None
        if not uncertain or not (conditional or isinstance(exc, UploadNotFoundError)):
            raise
        info = public_info(await call_with_retry(retry, "head", key, lambda: backend.head(key)))
        if info.sha256 is None or info.sha256 != attrs.metadata.get(SHA256) or info.size != size:
            raise
        return WriteResult(info.etag)


async def abort_quietly(backend: Backend, key: str, upload_id: str, retry: RetryPolicy) -> None:
    """Abort a multipart upload after a failure, as well as it can; never raises."""
    # Retried like any request (S3 says an abort racing in-flight parts may need
    # repeating), shielded from the cancellation that may have caused it, bounded in
    # time; the error that caused the abort matters more than a failed abort, so the
    # latter is suppressed.
    with (
        anyio.CancelScope(shield=True),
        anyio.move_on_after(ABORT_TIMEOUT),
        contextlib.suppress(Exception),
    ):
        await call_with_retry(
            retry, "abort upload", key, lambda: backend.abort_upload(key, upload_id)
        )


async def upload(
    backend: Backend,
    key: str,
    reader: PartReader,
    attrs: WriteAttributes,
    *,
    part_size: int,
    concurrency: int,
    retry: RetryPolicy,
    progress: ProgressReporter,
) -> UploadOutcome:
    """Stream ``reader`` to ``key``: one put if it fits in one part, else a multipart upload."""
    caps = backend.capabilities
    checks = caps.part_checksums
    inline = checks & INLINE_CHECKSUMS  # in the in-order pass; the others by each part's worker
    apart = tuple(checks - INLINE_CHECKSUMS)
    if (
        caps.streamed_upload
        and not apart
        and reader.size is not None
        and reader.size > part_size
        and reader.seek(0)
    ):
        return await _upload_streamed(
            backend, key, reader, attrs, reader.size, retry=retry, progress=progress
        )
    hasher = Sha256()
    window = _Window()
    first = await reader.read_part()
    first = first if first is not None else memoryview(b"")
    window.take(len(first))
    second = None
    if len(first) == part_size and (reader.size is None or reader.size > part_size):
        second = await reader.read_part()
    if second is None:
        sums = await hasher.update(first, part=checks)
        sha = hasher.digest_string()
        final = _with_sha(attrs, sha)
        window.start()

        async def put_once() -> WriteResult:
            return await backend.put(key, first, final, sums)

        result = await _commit(backend, key, "put", put_once, final, len(first), retry)
        await progress.advance(len(first))
        return UploadOutcome(
            len(first), result.etag, sha, 1, 1, window.peak_held, result.request_id
        )

    window.take(len(second))
    next_part: memoryview = second
    writers = concurrency
    if not caps.parallel_parts:
        writers = 1
    elif caps.part_writers is not None:
        writers = min(concurrency, caps.part_writers)
    # A backend with fewer writers than the window (the local one's two): up to as many
    # parts as there are writers, hashed while the writers are busy, wait for them here
    # (within the window), so the hashing and the writing absorb each other's hiccups.
    queued = min(concurrency - writers, writers)

    async def create() -> str:
        return await backend.create_upload(key, attrs)

    upload_id = await call_with_retry(retry, "create upload", key, create)
    parts: list[CompletedPart] = []
    try:
        send, receive = anyio.create_memory_object_stream[tuple[int, int, memoryview, Any]](queued)
        read_send, read_receive = anyio.create_memory_object_stream[memoryview](0)

        async def send_one(number: int, offset: int, data: memoryview, sums: Any) -> None:
            window.start()
            if apart:
                sums = {**sums, **await part_checksums_async(data, apart)}

            async def attempt() -> CompletedPart:
                return await backend.upload_part(key, upload_id, number, offset, data, sums)

            part = await call_with_retry(retry, f"upload part {number}", key, attempt)
            parts.append(part)
            window.in_flight -= 1
            window.held -= len(data)
            reader.release(data)
            await progress.advance(part.size)

        async def worker() -> None:
            # Workers share the one receive stream; it is closed below, after the task
            # group, so that it is closed even if a worker is cancelled before it starts.
            async for item in receive:
                await send_one(*item)
                del item  # drop the part now, not when the next one arrives

        async def read_ahead() -> None:
            # The next part is read while this one is hashed: reading and hashing are
            # the two serial stages of an upload, and each runs in its own worker thread.
            with read_send:
                await read_send.send(next_part)
                while (part_data := await reader.read_part()) is not None:
                    window.take(len(part_data))
                    await read_send.send(part_data)
                    del part_data

        with send, receive, read_receive:
            async with task_group() as tg:
                tg.start_soon(read_ahead)
                workers = 0  # started as parts come, so a small upload starts few
                number, offset = 1, 0
                part_data = first
                while True:
                    if number > caps.max_parts:
                        raise _too_many_parts(key, caps.max_parts, part_size)
                    sums = await hasher.update(part_data, part=inline)
                    if workers < writers:
                        tg.start_soon(worker)
                        workers += 1
                    await send.send((number, offset, part_data, sums))
                    number += 1
                    offset += len(part_data)
                    del part_data
                    try:
                        part_data = await read_receive.receive()
                    except anyio.EndOfStream:
                        break
                send.close()  # no more parts: the workers finish what they hold and stop
        sha = hasher.digest_string()
        ordered = sorted(parts, key=lambda p: p.number)

        final = _with_sha(attrs, sha)

        async def complete() -> WriteResult:
            return await backend.complete_upload(key, upload_id, ordered, final)

        result = await _commit(backend, key, "complete upload", complete, final, hasher.size, retry)
    except BaseException:
        await abort_quietly(backend, key, upload_id, retry)
        raise
    return UploadOutcome(
        hasher.size,
        result.etag,
        sha,
        len(ordered),
        window.peak_in_flight,
        window.peak_held,
        result.request_id,
    )


#: A part for a streamed request: (its buffer, the bytes to send, how many are new).
_Piece = tuple[memoryview, memoryview, int]


class _Feed:
    """The body of a streamed upload: the source read a part ahead, in a task of its own.

    ``chunks(offset)`` (the backend's, one per attempt) starts a reader task at
    ``offset`` and yields what it reads, so that the next part is read and hashed
    while this one is sent. The reader hashes each byte the first time it reads
    it (sha256 and the in-order part checksums, recorded as the upload's parts),
    and stops when its attempt's generator is closed; a new attempt waits for the
    last reader to stop first, so one reader at a time touches the source and the
    hash, and a hash is never interrupted half-way.
    """

    def __init__(
        self,
        tg: anyio.abc.TaskGroup,
        reader: PartReader,
        key: str,
        size: int,
        inline: frozenset[str],
        progress: ProgressReporter,
    ) -> None:
        self._tg = tg
        self._reader = reader
        self._key = key
        self._size = size
        self._inline = inline
        self._progress = progress
        self.hasher = Sha256()
        self.parts: list[CompletedPart] = []
        self.window = _Window()
        self._stopped: anyio.Event | None = None

    async def _read(self, offset: int, send: MemoryObjectSendStream[_Piece]) -> None:
        reader, hasher, size, key = self._reader, self.hasher, self._size, self._key
        with send:
            reader.seek(offset)
            position = offset
            while position < size:
                data = await reader.read_part()
                if data is None:
                    raise InvalidArgumentError(
                        f"key {key!r}: the file ended at byte {position} of {size} while it "
                        "was being uploaded",
                        key=key,
                    )
                self.window.take(len(data))
                body = data[: size - position]  # a file that grew since its stat: its size
                fresh = position + len(body) - max(position, hasher.size)
                if fresh > 0:  # read for the first time: hashed before it is sent
                    sums = await hasher.update(body[len(body) - fresh :], part=self._inline)
                    number = len(self.parts) + 1
                    start = hasher.size - fresh
                    self.parts.append(CompletedPart(number, start, fresh, str(number), sums))
                position += len(body)
                try:
                    await send.send((data, body, max(fresh, 0)))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._release(data)  # the attempt ended: this part goes back unsent
                    return

    def _release(self, data: memoryview) -> None:
        self.window.held -= len(data)
        self._reader.release(data)

    async def _run(
        self, offset: int, send: MemoryObjectSendStream[_Piece], stopped: anyio.Event
    ) -> None:
        try:
            await self._read(offset, send)
        finally:
            stopped.set()

    async def chunks(self, offset: int) -> AsyncGenerator[memoryview, None]:
        """The object's bytes from ``offset`` to its end, a part at a time."""
        if self._stopped is not None:
            await self._stopped.wait()  # the last attempt's reader has let go
        if not 0 <= offset <= self.hasher.size:
            raise StoreError(
                f"key {self._key!r}: the upload stands at byte {offset}, but only "
                f"{self.hasher.size} were sent",
                key=self._key,
            )
        send, receive = anyio.create_memory_object_stream[_Piece](1)
        stopped = self._stopped = anyio.Event()
        self._tg.start_soon(self._run, offset, send, stopped)
        try:
            async for data, body, fresh in receive:
                try:
                    self.window.start()
                    yield body
                    self.window.in_flight -= 1
                    if fresh:
                        await self._progress.advance(fresh)
                finally:
                    self._release(data)
        finally:  # what the reader holds goes back, and it stops at its next part
            while True:
                try:
                    data, _, _ = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                self._release(data)
            receive.close()


async def _upload_streamed(
    backend: Backend,
    key: str,
    reader: PartReader,
    attrs: WriteAttributes,
    size: int,
    *,
    retry: RetryPolicy,
    progress: ProgressReporter,
) -> UploadOutcome:
    """Send ``size`` bytes of a seekable source as one request (`Capabilities.streamed_upload`).

    The request's body is the source read a part at a time (a part sent, the
    next one read and hashed meanwhile: `_Feed`). A broken request is retried like
    any part: the backend asks the service where the upload stands, and the source
    is read again from there (bytes hashed already are not hashed twice). The parts
    read are reported to `Backend.complete_upload` as the upload's parts, with
    their checksums.
    """
    inline = backend.capabilities.part_checksums & INLINE_CHECKSUMS

    async def create() -> str:
        return await backend.create_stream_upload(key, attrs)

    upload_id = await call_with_retry(retry, "create upload", key, create)
    try:
        async with task_group() as tg:
            feed = _Feed(tg, reader, key, size, frozenset(inline), progress)

            async def send() -> None:
                await backend.upload_stream(key, upload_id, size, feed.chunks)

            await call_with_retry(retry, "upload", key, send)
        sha = feed.hasher.digest_string()
        final = _with_sha(attrs, sha)

        async def complete() -> WriteResult:
            return await backend.complete_upload(key, upload_id, feed.parts, final)

        result = await _commit(backend, key, "complete upload", complete, final, size, retry)
    except BaseException:
        await abort_quietly(backend, key, upload_id, retry)
        raise
    window = feed.window
    return UploadOutcome(
        size, result.etag, sha, len(feed.parts), 1, window.peak_held, result.request_id
    )
