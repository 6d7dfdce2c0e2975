"""The download engine: ranged reads pinned to one ETag, reassembled in order.

The first ranged read (``[start, start + chunk_size)``) also tells the
object's size and ETag, so a small object costs one request. The rest of the
object is read as ranges of ``chunk_size``, every one with ``if_match`` set
to that first ETag, so an object replaced mid-download fails with
PreconditionFailedError instead of mixing versions. A range that fails with a
TransportError resumes from the last byte received.

Ranges run in a bounded window: range ``i + window`` does not start before
range ``i`` has been consumed in order, so at most ``window`` ranges are held
(``chunk_size * window`` bytes) however slow the oldest one is. The sha256 is
fed in order as ranges are consumed, and checked against the digest recorded
at upload when the whole object was read.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._backend import Backend, ReadStream
from .._errors import (
    ConnectionError,
    DigestMismatchError,
    IntegrityError,
    InvalidRangeError,
    PreconditionFailedError,
    TransportError,
)
from .._meta import public_info
from .._types import ObjectInfo
from ._buffers import BufferPool, aligned_buffer
from ._hashing import Sha256
from ._retry import RetryPolicy, call_with_retry, exhausted
from ._tasks import task_group

__all__ = ["Download", "ObjectStream", "check_range", "open_download"]

Sink = Callable[[int, memoryview], Awaitable[None]]


def check_range(key: str, start: int | None, end: int | None, suffix: int | None) -> None:
    """Reject range arguments that no object could satisfy.

    Raises:
        InvalidRangeError: naming the key and the bad bound.
    """
    for name, value in (("start", start), ("end", end), ("suffix", suffix)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRangeError(
                f"{name} for key {key!r} must be an int, not {type(value).__name__}", key=key
            )
        if value < 0:
            raise InvalidRangeError(f"{name}={value} for key {key!r} is negative", key=key)
    if suffix is not None and (start is not None or end is not None):
        raise InvalidRangeError(
            f"suffix for key {key!r} cannot be combined with start or end", key=key
        )
    if start is not None and end is not None and end < start:
        raise InvalidRangeError(f"end={end} < start={start} for key {key!r}", key=key)


@dataclasses.dataclass(slots=True)
class Download:
    """An opened download: the first range's stream and the plan for the rest."""

    backend: Backend
    key: str
    info: ObjectInfo
    start: int
    stop: int
    chunk_size: int
    retry: RetryPolicy
    first: ReadStream | None

    @property
    def whole(self) -> bool:
        """Whether the download covers the whole object (so its sha256 can be verified)."""
        return self.start == 0 and self.stop == self.info.size

    @property
    def size(self) -> int:
        return self.stop - self.start

    def ranges(self) -> list[tuple[int, int]]:
        """The ``[start, end)`` ranges, the first one being the opened stream's."""
        return [
            (pos, min(pos + self.chunk_size, self.stop))
            for pos in range(self.start, self.stop, self.chunk_size)
        ]

    async def close_first(self) -> None:
        if self.first is not None:
            first, self.first = self.first, None
            with anyio.CancelScope(shield=True):
                await first.aclose()

    def verify(self, hasher: Sha256) -> str:
        """Check the hash of the bytes read against the recorded sha256; return the digest.

        Raises:
            DigestMismatchError: the whole object was read and its digest differs.
        """
        actual = hasher.digest_string()
        expected = self.info.sha256
        if self.whole and expected is not None and expected != actual:
            raise DigestMismatchError(
                f"key {self.key!r} is corrupt: its bytes hash to {actual}, "
                f"but {expected} was recorded at upload",
                expected=expected,
                actual=actual,
                key=self.key,
            )
        return actual

    async def chunks(self, start: int, end: int) -> AsyncGenerator[memoryview, None]:
        """The bytes ``[start, end)`` as they arrive, resuming after transport errors."""
        stream: ReadStream | None = None
        if start == self.start:  # the first range's stream is already open; take it
            stream, self.first = self.first, None
        pos, attempt = start, 1
        while pos < end:
            try:
                if stream is None:
                    stream = await self.backend.read(self.key, pos, end, if_match=self.info.etag)
                async with stream:
                    async for chunk in stream:
                        n = len(chunk)
                        if pos + n > end:
                            raise self._too_long(start, end, pos + n)
                        if n:
                            yield memoryview(chunk)
                            pos += n
                stream = None
                if pos < end:
                    raise self._ended_short(pos, end)
            except TransportError as exc:
                stream = None
                attempt = await self._back_off(exc, pos, end, attempt)
            except PreconditionFailedError as exc:
                raise self._replaced() from exc

    async def read_one(self, hasher: Sha256) -> list[bytes]:
        """The whole download (one range at most), hashed as it arrives.

        The opened stream is read directly; a break (a TransportError, or a body
        that ends early) goes on through `chunks`, which resumes from the byte
        reached with the retry policy.
        """
        pieces: list[bytes] = []
        pos = self.start
        stream, self.first = self.first, None
        if stream is not None and pos < self.stop:
            try:
                async with stream:
                    async for chunk in stream:
                        if pos + len(chunk) > self.stop:
                            raise self._too_long(self.start, self.stop, pos + len(chunk))
                        await hasher.update(chunk)
                        pieces.append(bytes(chunk))
                        pos += len(chunk)
            except TransportError:
                pass
        elif stream is not None:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        if pos < self.stop:
            async with contextlib.aclosing(self.chunks(pos, self.stop)) as rest:
                async for piece in rest:
                    await hasher.update(piece)
                    pieces.append(bytes(piece))
        return pieces

    def _ended_short(self, pos: int, end: int) -> ConnectionError:
        return ConnectionError(
            f"the body of key {self.key!r} ended at byte {pos} of {end}", key=self.key
        )

    async def _back_off(self, exc: TransportError, pos: int, end: int, attempt: int) -> int:
        """After a broken read: wait the policy's delay and return the next attempt's number.

        Raises:
            TransportError: ``attempt`` was the policy's last (`exhausted`).
        """
        if attempt >= self.retry.attempts:
            raise exhausted(exc, f"read of bytes {pos}-{end}", self.key, attempt) from exc
        await anyio.sleep(self.retry.delay(attempt))
        return attempt + 1

    def _too_long(self, start: int, end: int, reached: int) -> IntegrityError:
        return IntegrityError(
            f"key {self.key!r}: the backend sent {reached - end} bytes "
            f"more than the range [{start}, {end}) asked for",
            key=self.key,
        )

    async def read_range(self, start: int, end: int, into: memoryview | None = None) -> memoryview:
        """Read ``[start, end)`` fully, into ``into`` if given, else a new buffer.

        The stream's `ReadStream.readinto` fills the buffer (straight from the
        socket where the backend can); a break resumes from the byte reached,
        as in `chunks`.
        """
        buf = into if into is not None else memoryview(bytearray(end - start))
        stream: ReadStream | None = None
        if start == self.start:  # the first range's stream is already open; take it
            stream, self.first = self.first, None
        pos, attempt = start, 1
        while pos < end:
            try:
                if stream is None:
                    stream = await self.backend.read(self.key, pos, end, if_match=self.info.etag)
                async with stream:
                    while pos < end and (n := await stream.readinto(buf[pos - start :])):
                        pos += n
                    if pos == end and await stream.readinto(memoryview(bytearray(1))):
                        raise self._too_long(start, end, end + 1)
                stream = None
                if pos < end:
                    raise self._ended_short(pos, end)
            except TransportError as exc:
                stream = None
                attempt = await self._back_off(exc, pos, end, attempt)
            except PreconditionFailedError as exc:
                raise self._replaced() from exc
        return buf

    def _replaced(self) -> PreconditionFailedError:
        return PreconditionFailedError(
            f"key {self.key!r} was replaced during the download "
            f"(ETag {self.info.etag!r} no longer matches)",
            key=self.key,
        )

    async def fetch(
        self,
        *,
        window: int,
        on_ordered: Sink,
        on_ready: Sink | None = None,
        into: memoryview | None = None,
        fresh: bool = False,
    ) -> int:
        """Read every range, at most ``window`` at once, and hand them over in order.

        ``on_ready(offset, data)`` is awaited inside the range's own task as
        soon as it is complete (e.g. a positional file write); ``on_ordered``
        is awaited in order of offset. A range's buffer is dropped after both.
        With ``into`` (a buffer of ``self.size``), ranges are read in place.
        With ``fresh``, each range is read into a new ``bytes`` (`_new_bytes`)
        that ``on_ordered`` receives and may keep (a view where that trick is not
        available): no pooled buffer to copy it out of.

        Returns:
            The most ranges that were in flight at once.
        """
        ranges = self.ranges()
        if not ranges:
            await self.close_first()
            return 0
        slots = anyio.Semaphore(window)
        pool = BufferPool(self.chunk_size)
        ready = [anyio.Event() for _ in ranges]
        results: dict[int, memoryview] = {}
        in_flight = peak = 0

        async def fetch_one(index: int, start: int, end: int) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            made: bytes | None = None
            if into is not None:
                target = into[start - self.start : end - self.start]
            elif fresh:
                made, target = _new_bytes(end - start)
            else:
                target = memoryview(await pool.take_async())[: end - start]
            data: Any = await self.read_range(start, end, target)
            if on_ready is not None:
                await on_ready(start, data)
            in_flight -= 1
            if made is not None:
                del data, target  # the bytes are filled: only the object is handed on
                data = made
            results[index] = data
            ready[index].set()

        async def dispatch(tg: anyio.abc.TaskGroup) -> None:
            for index, (start, end) in enumerate(ranges):
                await slots.acquire()
                tg.start_soon(fetch_one, index, start, end)

        try:
            async with task_group() as tg:
                tg.start_soon(dispatch, tg)
                for index, (start, _) in enumerate(ranges):
                    await ready[index].wait()
                    data = results.pop(index)
                    await on_ordered(start, data)
                    pool.give(data)  # a no-op for buffers the pool did not make
                    del data
                    slots.release()
        finally:
            await self.close_first()
            await pool.aclose()
        return peak


async def open_download(
    backend: Backend,
    key: str,
    *,
    start: int | None,
    end: int | None,
    suffix: int | None,
    chunk_size: int,
    retry: RetryPolicy,
) -> Download:
    """Make the first ranged read of ``key`` and plan the rest.

    Raises:
        NotFoundError: the key does not exist.
        InvalidRangeError: a bad range, or ``start`` past the end of the object.
    """
    check_range(key, start, end, suffix)
    if_match = None
    if suffix is not None:
        info = public_info(await call_with_retry(retry, "head", key, lambda: backend.head(key)))
        start, end, if_match = max(0, info.size - suffix), info.size, info.etag
    first_start = start or 0
    first_end = first_start + chunk_size if end is None else min(end, first_start + chunk_size)

    async def first_read() -> ReadStream:
        return await backend.read(key, first_start, first_end, if_match=if_match)

    stream = await call_with_retry(retry, "read", key, first_read)
    info = public_info(stream.info)
    stop = info.size if end is None else min(end, info.size)
    if first_start > info.size:  # a backend should have said so; never trust a range blindly
        await stream.aclose()
        raise InvalidRangeError(
            f"start={first_start} is past the end of key {key!r} ({info.size} bytes)", key=key
        )
    return Download(
        backend, key, info, first_start, max(stop, first_start), chunk_size, retry, stream
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class ObjectStream:
    """The bytes of an object (or a range of it), as an async iterator.

    Two ways to use it:

        async with store.stream("big.bin") as body:   # parallel ranged reads
            async for chunk in body:
                ...

        async for chunk in store.stream("big.bin"):   # one range at a time
            ...

    Inside ``async with``, up to ``max_concurrency`` ranges are read in
    parallel by tasks that the context owns; iterated bare, ranges are read one
    after another (no background tasks can outlive a bare ``async for``). In
    both, chunks come in order, memory stays bounded, and when the whole object
    is read its sha256 is verified: a mismatch raises DigestMismatchError from
    the iteration, after the last chunk.

    Attributes:
        info: The object's info, once the first read is made (else None).
        sha256: ``sha256:<hex>`` of the bytes streamed, once the last chunk is read
            (else None).
    """

    def __init__(
        self, opener: Callable[[], Awaitable[Download]], *, window: int, verify: bool
    ) -> None:
        self._opener = opener
        self._window = window
        self._verify = verify
        self._download: Download | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._tg_cm: contextlib.AbstractAsyncContextManager[anyio.abc.TaskGroup] | None = None
        self._inbox: MemoryObjectReceiveStream[Any] | None = None
        self._send: MemoryObjectSendStream[Any] | None = None
        self._sequential: AsyncGenerator[memoryview, None] | None = None
        self.info: ObjectInfo | None = None
        self.sha256: str | None = None

    async def _open(self) -> Download:
        if self._download is None:
            self._download = await self._opener()
            self.info = self._download.info
        return self._download

    async def __aenter__(self) -> ObjectStream:
        download = await self._open()
        if len(download.ranges()) <= 1:
            return self  # one range: nothing to parallelise, iterate it directly
        send, self._inbox = anyio.create_memory_object_stream[Any](0)
        self._send = send  # closed by aclose too, in case the producer never starts
        self._tg_cm = task_group()
        self._tg = await self._tg_cm.__aenter__()
        self._tg.start_soon(self._produce, download, send)
        return self

    async def _produce(self, download: Download, send: anyio.abc.ObjectSendStream[Any]) -> None:
        hasher = Sha256()

        async def deliver(offset: int, data: bytes | memoryview) -> None:
            if isinstance(data, bytes):  # read into its own bytes: hashed, not copied
                await hasher.update(data)
                await send.send(data)
            else:
                await send.send(await hasher.update_and_copy(data))

        async with send:
            try:
                await download.fetch(window=self._window, on_ordered=deliver, fresh=True)
                self.sha256 = download.verify(hasher) if self._verify else hasher.digest_string()
            except Exception as exc:  # handed to the consumer, raised from __anext__
                await send.send(_Failure(exc))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Stop reading and release every connection; safe to call more than once."""
        try:
            if self._tg_cm is not None and self._tg is not None:
                cm, self._tg_cm = self._tg_cm, None
                self._tg.cancel_scope.cancel()
                await cm.__aexit__(None, None, None)
        finally:  # even if leaving the task group raised (an outer cancellation, ...)
            if self._inbox is not None:
                self._inbox.close()
            if self._send is not None:
                self._send.close()
        if self._sequential is not None:
            await self._sequential.aclose()
        if self._download is not None:
            await self._download.close_first()

    def __aiter__(self) -> ObjectStream:
        return self

    async def __anext__(self) -> bytes:
        if self._inbox is not None:
            try:
                item = await self._inbox.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise StopAsyncIteration from None
            if isinstance(item, _Failure):
                raise item.error
            return item  # type: ignore[no-any-return]
        if self._sequential is None:
            self._sequential = self._iterate_sequentially()
        return bytes(await self._sequential.__anext__())

    async def _iterate_sequentially(self) -> AsyncGenerator[memoryview, None]:
        download = await self._open()
        hasher = Sha256()
        for start, end in download.ranges():
            async with contextlib.aclosing(download.chunks(start, end)) as chunks:
                async for chunk in chunks:
                    await hasher.update(chunk)
                    yield chunk
        await download.close_first()
        self.sha256 = download.verify(hasher) if self._verify else hasher.digest_string()


async def read_all(
    download: Download, *, window: int, verify: bool
) -> tuple[bytes, str | None, int]:
    """Read a download into memory; return (bytes, sha256, peak ranges in flight).

    The bytes are hashed only when the download covers the whole object, the one
    case their digest can be checked against the recorded sha256 (``verify``);
    the sha256 returned for a range is None. A large read lands in place, range by
    range, in the ``bytes`` object returned (`_new_bytes`): no buffer to copy out of.
    """
    whole = download.whole
    if download.size <= download.chunk_size and (whole or download.size < _SMALL_RANGE):
        hasher = Sha256()  # one small read: hashed as it arrives, cheaper than a buffer
        pieces = await download.read_one(hasher)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if not whole:
            return data, None, 1
        return data, download.verify(hasher) if verify else hasher.digest_string(), 1
    made, buffer = _new_bytes(download.size)
    hasher = Sha256()

    async def consume(offset: int, piece: memoryview) -> None:
        if whole:
            await hasher.update(piece)

    peak = await download.fetch(window=window, on_ordered=consume, into=buffer)
    # Not CPython: the bytes are copied out of the buffer, in a thread.
    data = made if made is not None else await anyio.to_thread.run_sync(bytes, buffer)
    del buffer
    if not whole:
        return data, None, peak
    return data, download.verify(hasher) if verify else hasher.digest_string(), peak


#: A range smaller than this is read as before (one read, hashed inline: cheaper
#: than a buffer and a thread hop); a larger one goes into one buffer, unhashed.
_SMALL_RANGE = 256 * 1024


def _new_bytes(size: int) -> tuple[bytes | None, memoryview]:
    """A new ``bytes`` of ``size`` (uninitialised) and a writable view of its contents.

    CPython's ``PyBytes_FromStringAndSize(NULL, size)`` makes a bytes object whose
    contents its maker fills before handing it on; the reads fill it through the
    view (which does not keep them alive: the caller holds the bytes while it is
    used, and drops it before handing them on). That saves copying
    a large read out of a buffer (under the GIL: ``bytes(buffer)`` holds it while it
    copies, and touches every page twice). Elsewhere: (None, a page-mapped buffer).
    """
    if _PY_BYTES is None or size == 0:
        return None, aligned_buffer(size) if size else memoryview(bytearray(0))
    data: bytes = _PY_BYTES(None, size)
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert address is not None
    return data, memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def _bytes_maker() -> Any:
    if sys.implementation.name != "cpython":  # pragma: no cover - CPython only in CI
        return None
    make = ctypes.pythonapi.PyBytes_FromStringAndSize
    make.restype = ctypes.py_object
    make.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return make


_PY_BYTES = _bytes_maker()
