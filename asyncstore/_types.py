"""Plain value types shared by the Store, the core and the backends."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, TypeAlias

__all__ = [
    "CommonPrefix",
    "LentBuffer",
    "ObjectInfo",
    "Progress",
    "PutMode",
    "PutResult",
    "TransferInfo",
]

#: How a put treats an existing object: ``"overwrite"`` (the default),
#: ``"create"`` (fail with AlreadyExistsError if the key exists) or
#: ``{"if_match": etag}`` (fail with PreconditionFailedError unless the
#: current ETag is ``etag``).
PutMode: TypeAlias = "Literal['overwrite', 'create'] | Mapping[str, str]"

#: A progress callback: called (or awaited, if it returns an awaitable) with
#: ``(bytes_done, bytes_total)``; ``bytes_total`` is None when the size is
#: not known in advance.
Progress: TypeAlias = "Callable[[int, int | None], Awaitable[None] | None]"


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object.

    Attributes:
        key: The key, relative to the store's root.
        size: Size in bytes.
        etag: An opaque version token; changes whenever the content is replaced.
        last_modified: When the object was last written (UTC), if known.
        content_type: The MIME type recorded at upload, if any.
        metadata: User metadata recorded at upload (asyncstore's own entries removed).
        sha256: ``sha256:<hex>`` of the content as computed at upload, when recorded.
        mtime: Modification time of the source file, for objects written by ``upload_file``.
        mode: Permission bits of the source file, for objects written by ``upload_file``.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime.datetime | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sha256: str | None = None
    mtime: float | None = None
    mode: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CommonPrefix:
    """A "directory" in a delimited listing: every key below it shares ``prefix``."""

    prefix: str


@dataclasses.dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of a put.

    Attributes:
        key: The key written.
        size: Bytes written.
        etag: The new object's ETag.
        sha256: ``sha256:<hex>`` of the bytes, computed while they streamed.
        part_count: Requests used for the body (1 for a single put).
    """

    key: str
    size: int
    etag: str
    sha256: str
    part_count: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class LentBuffer:
    """A chunk of a streamed `Store.put` that the store may keep without copying it.

    A chunk that is not ``bytes`` is copied before the next one is asked for,
    since the iterable may refill its buffer. A ``LentBuffer`` is lent instead:
    its bytes go out as they are (each whole part of them is a part of the
    upload, hashed and sent from this memory), and the lender gets the buffer
    back through ``release``, so that a producer with its own buffers (a
    file's write blocks) costs no copy per byte, and no fresh part buffers.

    Attributes:
        data: The bytes; not to be changed until ``release`` is called.
        release: Called once, with no argument, when the store no longer needs
            the bytes: once its parts are stored, or when the put ends
            (returned, failed or cancelled). It runs on the event loop.
    """

    data: memoryview | bytearray | bytes
    release: Callable[[], object]


@dataclasses.dataclass(frozen=True, slots=True)
class TransferInfo:
    """A report on one transfer (upload_file / download_file).

    Attributes:
        key: The object key.
        bytes_transferred: Bytes moved.
        duration: Seconds from start to the final commit / rename.
        mb_per_s: ``bytes_transferred / duration`` in MB/s (10**6 bytes).
        part_count: Parts (upload) or ranges (download) used.
        concurrency: The most parts or ranges in flight at once.
        request_id: The backend's id for the final request, when it gives one.
        sha256: ``sha256:<hex>`` of the bytes, computed while they streamed.
        peak_buffered: The most body bytes the engine held in memory at once.
    """

    key: str
    bytes_transferred: int
    duration: float
    mb_per_s: float
    part_count: int
    concurrency: int
    request_id: str | None
    sha256: str
    peak_buffered: int = 0
