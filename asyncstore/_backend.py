"""The backend contract: the few primitives a storage service really has.

A backend implements `Backend`. It never chunks, hashes, retries or
reports progress: the `Store` and its streaming core do
that once for every backend. A backend only moves bytes and classifies its
errors into the asyncstore tree (a retryable failure is a
`TransportError`).

Keys given to a backend have already been validated by the Store
(`validate_key`) and are relative to the backend's
root (bucket + prefix, directory, ...).

A backend over a network service makes its SDK client lazily, in the event
loop of its first call, with `LoopBound`: one way, for every cloud backend,
to make the client once, refuse a second event loop and close once.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import dataclasses
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Generic, TypeVar

import anyio

from ._errors import ConfigurationError, StoreError
from ._types import CommonPrefix, ObjectInfo

__all__ = [
    "Backend",
    "Capabilities",
    "CompletedPart",
    "IteratorReadStream",
    "LoopBound",
    "ReadStream",
    "WriteAttributes",
    "WriteResult",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend's multipart mechanism allows; the core plans parts by it.

    Attributes:
        parallel_parts: Whether parts of one upload may be sent concurrently.
        min_part_size: Smallest allowed part, except the last one.
        max_part_size: Largest allowed part.
        max_parts: Most parts in one upload.
        max_single_put: Largest body one ``put`` request may carry.
        part_checksums: Per-part checksums the backend wants the core to compute
            (any of ``"md5"``, ``"sha256"``, ``"crc32c"``), given to
            ``upload_part``/``put`` as raw digest bytes.
        part_writers: The most parts of one upload worth sending at once, whatever
            ``max_concurrency`` asks (None: no cap). A local file system gains
            nothing from concurrent writes into one file: they queue on its lock.
        streamed_upload: Whether `Backend.upload_stream` sends a whole upload (made by
            `Backend.create_stream_upload`) in one request, fed part by part as it goes
            (a GCS resumable session). The core then streams a file of more than one
            part that way: its bytes can be read again from any offset, so a broken
            request resumes where the service stands.
    """

    parallel_parts: bool = True
    min_part_size: int = 1
    max_part_size: int = 5 * GiB
    max_parts: int = 10_000
    max_single_put: int = 5 * GiB
    part_checksums: frozenset[str] = frozenset()
    part_writers: int | None = None
    streamed_upload: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class WriteAttributes:
    """What is recorded with an object, and the condition its write is under.

    Attributes:
        content_type: MIME type, or None.
        metadata: User metadata plus asyncstore's reserved ``asyncstore-*``
            entries (sha256, source mtime/mode). For a multipart upload, the
            attributes given to ``create_upload`` lack the sha256 (not known
            yet); ``complete_upload`` receives the final set.
        if_none_match: Create only if the key is absent (AlreadyExistsError otherwise).
        if_match: Write only if the current ETag equals this (PreconditionFailedError
            otherwise; NotFoundError-free: a missing object also fails the precondition).
    """

    content_type: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    if_none_match: bool = False
    if_match: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WriteResult:
    """A backend's answer to a committed write."""

    etag: str
    request_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CompletedPart:
    """One uploaded part, as ``complete_upload`` needs it.

    Attributes:
        number: 1-based part number.
        offset: Byte offset of the part in the object.
        size: Bytes in the part.
        etag: The backend's token for the part.
        checksums: The per-part checksums that were sent with it.
    """

    number: int
    offset: int
    size: int
    etag: str
    checksums: Mapping[str, bytes] = dataclasses.field(default_factory=dict)


class ReadStream(abc.ABC):
    """The body of a (ranged) read, with what the service said about the object.

    Use as ``async with stream: async for chunk in stream``; ``aclose`` releases
    the connection early.

    Attributes:
        info: The whole object's info (``info.size`` is the full size, not the range's).
    """

    info: ObjectInfo

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> bytes: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the connection; safe to call more than once."""

    async def readinto(self, view: memoryview) -> int:
        """Read the next bytes into ``view``; return how many (0 at the end of the body).

        The core reads large ranges this way, into the buffers it then hashes and
        writes out. This default copies from the chunks `__anext__` yields (keeping
        what does not fit for the next call); a backend that can receive straight
        into ``view`` overrides it, so that each byte crosses memory once. Mixing
        it with iteration on one stream is not supported.
        """
        rest: memoryview | None = getattr(self, "_readinto_rest", None)
        if not rest:
            try:
                rest = memoryview(await self.__anext__())
            except StopAsyncIteration:
                return 0
        n = min(len(view), len(rest))
        view[:n] = rest[:n]
        self._readinto_rest = rest[n:]
        return n

    async def __aenter__(self) -> ReadStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class IteratorReadStream(ReadStream):
    """A ReadStream over an async iterator of chunks (for backend implementations)."""

    def __init__(
        self,
        info: ObjectInfo,
        chunks: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.info = info
        self._chunks = chunks
        self._close = close
        self._closed = False

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._close is not None:
            await self._close()


class Backend(abc.ABC):
    """A storage service's primitives. Subclass this to add a backend.

    Attributes:
        capabilities: The multipart limits the core plans parts by.
        default_chunk_size: The part / range size a Store over this backend uses
            unless told otherwise (None: the Store's own default). Backends set it
            from URL options such as S3's ``part_size_mb``.
        default_max_concurrency: Likewise for parts / ranges in flight.
        default_max_connections: The most calls a Store over this backend runs at
            once unless told otherwise (the size of the backend's connection pool;
            None: no bound, for backends without connections).
    """

    capabilities: Capabilities = Capabilities()
    default_chunk_size: int | None = None
    default_max_connections: int | None = None
    default_max_concurrency: int | None = None

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Return the object's info with its raw metadata (reserved entries included).

        Raises:
            NotFoundError: The key does not exist.
        """

    @abc.abstractmethod
    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        """Open the bytes ``[start, end)`` of an object (``end`` None: to the end).

        ``end`` past the object's size is clamped; ``start == size`` gives an
        empty body (also for an empty object at ``start=0``).

        Raises:
            NotFoundError: The key does not exist.
            InvalidRangeError: ``start`` is past the end of the object.
            PreconditionFailedError: ``if_match`` is given and the ETag differs.
        """

    @abc.abstractmethod
    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        """Write a whole object in one request.

        Raises:
            AlreadyExistsError: ``attrs.if_none_match`` and the key exists.
            PreconditionFailedError: ``attrs.if_match`` does not match.
        """

    @abc.abstractmethod
    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        """Start a multipart upload and return its id."""

    @abc.abstractmethod
    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        """Upload part ``number`` (1-based) holding the bytes at ``offset``.

        Raises:
            UploadNotFoundError: The upload does not exist.
        """

    async def create_stream_upload(self, key: str, attrs: WriteAttributes) -> str:
        """Start an upload for `upload_stream` and return its id (default: `create_upload`).

        For a backend whose streamed uploads take another mechanism than its parts.
        """
        return await self.create_upload(key, attrs)

    async def upload_stream(
        self,
        key: str,
        upload_id: str,
        size: int,
        chunks: Callable[[int], AsyncGenerator[memoryview, None]],
    ) -> None:
        """Send all ``size`` bytes of an upload in one request (`Capabilities.streamed_upload`).

        ``chunks(offset)`` yields the object's bytes from ``offset`` to its end, read
        (and hashed, the first time) by the core as the request sends them; the caller
        closes it. A new upload starts at 0; a call after a failed one starts where the
        service says the upload stands (bytes it persisted are not sent again). On
        success the upload holds every byte, ready for `complete_upload`.

        Raises:
            UploadNotFoundError: The upload does not exist.
            TransportError: The request broke (the core calls again, to resume).
        """
        raise NotImplementedError(f"{type(self).__name__} has no streamed uploads")

    @abc.abstractmethod
    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        """Commit the parts, in order, as the object at ``key``, applying ``attrs``.

        Raises:
            AlreadyExistsError / PreconditionFailedError: as for `put`;
                the upload is then left for `abort_upload`.
        """

    @abc.abstractmethod
    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts; idempotent."""

    @abc.abstractmethod
    def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """Yield the objects whose key starts with ``prefix``, in key order.

        With a delimiter, keys that have it after the prefix are rolled up into
        one `CommonPrefix` each (``prefix`` + text up to and including
        the delimiter).
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key is not an error."""

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several objects (the service's batch call where it has one)."""
        for key in keys:
            await self.delete(key)

    @abc.abstractmethod
    async def copy(self, src: str, dst: str) -> WriteResult:
        """Copy an object with its metadata, server-side where the service can.

        Raises:
            NotFoundError: ``src`` does not exist.
        """

    async def pending_uploads(self, prefix: str = "") -> builtins.list[tuple[str, str]]:
        """``(key, upload id)`` of the uploads under ``prefix`` neither completed nor aborted.

        What an interrupted or failed upload would leave behind (parts, staged
        blocks, temporary objects), in key order; the test suites check that an
        aborted upload leaves nothing. A backend that cannot list them raises
        NotImplementedError (this default).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its pending uploads")

    async def aclose(self) -> None:  # noqa: B027 - most backends hold nothing to close
        """Release connections and other resources."""

    def describe(self) -> str:
        """A short description of where the backend stores (for reprs and errors)."""
        return type(self).__name__


def current_loop() -> object:
    """The running event loop (asyncio) or trio run (its token): what a client belongs to."""
    loop = asyncio._get_running_loop()  # None, not an exception, under trio: per-call cost
    if loop is not None:
        return loop
    import trio  # imported already when a trio run is active

    return trio.lowlevel.current_trio_token()


def _library(loop: object) -> str:
    return "asyncio" if isinstance(loop, asyncio.AbstractEventLoop) else "trio"


class LoopBound(Generic[T]):
    """A backend's client, made once, on first use, in the event loop that uses it.

    Every cloud backend holds its SDK client (and what comes with it: HTTP
    sessions, connection pools, credentials) in one of these:

    * `get` makes it on the first call, once (concurrent first calls wait for
      the same one, under a lock), by awaiting ``open(stack)`` in the running
      event loop. ``open`` does its blocking set-up (config files, imports,
      ``platform`` probes) in a worker thread, and pushes what must be closed
      onto ``stack``.
    * It belongs to that event loop: a call from another loop (another thread's,
      or a later ``anyio.run``) is a `ConfigurationError` naming the service and
      the store, never a hang or an error deep inside an HTTP library.
    * `aclose` unwinds the stack once (shielded from cancellation); closing
      again, or closing a client never made, does nothing. After it, `get`
      raises StoreError ("... is closed"), or with ``reopen=True`` makes a new
      client, in whichever loop then calls.

    Args:
        service: The service, for messages (``"S3"``, ``"GCS"``, ``"Azure"``).
        where: The store (its URL), for messages and the errors' ``key``.
        open: Makes the client, given the exit stack that `aclose` unwinds.
        reopen: Whether a closed client is made anew on the next call.
    """

    def __init__(
        self,
        service: str,
        where: str,
        open: Callable[[contextlib.AsyncExitStack], Awaitable[T]],
        *,
        reopen: bool = False,
    ) -> None:
        self.service = service
        self.where = where
        self._open = open
        self._reopen = reopen
        self._value: T | None = None
        self._loop: object | None = None
        self._lock: anyio.Lock | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._closed = False
        self._epoch = 0  # counts closes: a client made across one is closed at once

    @property
    def value(self) -> T | None:
        """The client if it is made and open (no check of the event loop), else None."""
        return self._value

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called (and, with ``reopen``, no client made since)."""
        return self._closed

    def _check_loop(self, loop: object) -> None:
        if self._loop is not None and self._loop is not loop:
            raise ConfigurationError(
                f"the {self.service} store {self.where} was opened in another event loop "
                f"({_library(self._loop)}); a store serves the event loop that first used "
                "it: open one per loop",
                key=self.where,
            )

    async def get(self) -> T:
        """The client, made now in the running event loop if it is not made yet.

        Raises:
            ConfigurationError: The client belongs to another event loop.
            StoreError: The client was closed (and ``reopen`` is off).
        """
        loop = current_loop()
        value = self._value
        if value is not None and self._loop is loop:
            return value
        self._check_loop(loop)
        if self._closed and not self._reopen:
            raise StoreError(f"the {self.service} store {self.where} is closed", key=self.where)
        if self._lock is None:
            self._loop, self._lock = loop, anyio.Lock()
        async with self._lock:
            self._check_loop(loop)  # closed and reopened by another loop meanwhile
            if self._value is not None:
                return self._value
            if self._closed and not self._reopen:
                raise StoreError(f"the {self.service} store {self.where} is closed", key=self.where)
            epoch = self._epoch
            stack = contextlib.AsyncExitStack()
            try:
                value = await self._open(stack)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
                raise
            if epoch != self._epoch:  # closed while it was being made
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
                raise StoreError(f"the {self.service} store {self.where} is closed", key=self.where)
            self._value, self._stack, self._closed = value, stack, False
            return value

    async def aclose(self) -> None:
        """Close the client (once; later calls, and a client never made, do nothing)."""
        if not self._closed:
            self._closed = True
            self._epoch += 1
        stack, self._stack = self._stack, None
        self._value = None
        self._loop = self._lock = None  # an anyio.Lock belongs to its event loop
        if stack is not None:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
