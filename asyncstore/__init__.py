"""asyncstore: an anyio-native object-storage SDK.

How it fits together. A `Store` is the user API (put, get, stream,
list, upload_file, ...); it is opened from a URL with `open_store` or
built over a `Backend`, the narrow set of primitives a storage service
really has (head, ranged read, put, multipart upload, list, delete, copy).
Between the two sits the streaming-chunk core (``asyncstore._stream``): it
cuts any source into parts, hashes them in order while they stream (off the
event loop), sends them through a sliding window of bounded concurrency, reads
downloads as ranges pinned to one ETag and reassembles them in a bounded
window, retries transport errors with backoff, and verifies sha256 digests.
Backends never chunk, hash or retry; the core never imports a vendor SDK.
Everything runs under asyncio and trio alike, and every background task lives
in a task group owned by the call (or the ``async with``) that started it.
Errors form one tree rooted at `StoreError`. On top of any Store,
`asyncstore.cas` keeps content-addressed blobs (digest while streaming,
dedupe, verified reads, resumable upload sessions, artifacts) and
`asyncstore.oci` stores an OCI registry's blobs, manifests and tags over it.
"""

from ._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    IteratorReadStream,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from ._errors import (
    AlreadyExistsError,
    BlobNotFoundError,
    ConfigurationError,
    ConnectionError,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    InvalidDigestError,
    InvalidKeyError,
    InvalidOffsetError,
    InvalidRangeError,
    ManifestNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RepositoryNotFoundError,
    StoreError,
    TagNotFoundError,
    TimeoutError,
    TransportError,
    UploadNotFoundError,
)
from ._opening import Opening
from ._registry import known_schemes, open_store, open_store_async, register_backend
from ._store import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY, Store
from ._stream._buffers import set_buffer_cache
from ._stream._download import ObjectStream
from ._stream._retry import RetryPolicy
from ._types import CommonPrefix, LentBuffer, ObjectInfo, Progress, PutMode, PutResult, TransferInfo
from .backends.memory import MemoryBackend
from .cas import ContentStore, Descriptor, Digest
from .oci import RegistryStorage

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "AlreadyExistsError",
    "Backend",
    "BlobNotFoundError",
    "Capabilities",
    "CommonPrefix",
    "CompletedPart",
    "ContentStore",
    "ConfigurationError",
    "ConnectionError",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidDigestError",
    "InvalidKeyError",
    "InvalidOffsetError",
    "InvalidRangeError",
    "IteratorReadStream",
    "LentBuffer",
    "ManifestNotFoundError",
    "MemoryBackend",
    "NotFoundError",
    "ObjectInfo",
    "ObjectStream",
    "Opening",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "Progress",
    "PutMode",
    "PutResult",
    "ReadStream",
    "RegistryStorage",
    "RepositoryNotFoundError",
    "RetryPolicy",
    "Store",
    "StoreError",
    "TagNotFoundError",
    "TimeoutError",
    "TransferInfo",
    "TransportError",
    "UploadNotFoundError",
    "WriteAttributes",
    "WriteResult",
    "known_schemes",
    "open_store",
    "open_store_async",
    "register_backend",
    "set_buffer_cache",
]
