"""The backend contract: the few primitives a storage service really has.

A backend implements `Backend`. It never chunks, hashes, retries or
reports progress: the `Store` and its streaming core do
that once for every backend. A backend only moves bytes and classifies its
errors into the asyncstore tree (a retryable failure is a
`TransportError`).

Keys given to a backend have already been validated by the Store
(`validate_key`) and are relative to the backend's
root (bucket + prefix, directory, ...).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType

from ._types import CommonPrefix, ObjectInfo

__all__ = [
    "Backend",
    "Capabilities",
    "CompletedPart",
    "IteratorReadStream",
    "ReadStream",
    "WriteAttributes",
    "WriteResult",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


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
    """

    parallel_parts: bool = True
    min_part_size: int = 1
    max_part_size: int = 5 * GiB
    max_parts: int = 10_000
    max_single_put: int = 5 * GiB
    part_checksums: frozenset[str] = frozenset()


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

    async def aclose(self) -> None:  # noqa: B027 - most backends hold nothing to close
        """Release connections and other resources."""

    def describe(self) -> str:
        """A short description of where the backend stores (for reprs and errors)."""
        return type(self).__name__
