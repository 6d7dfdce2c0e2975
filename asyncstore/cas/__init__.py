"""Content-addressed storage over any `Store`: blobs by digest, verified on every read.

How it fits together. `ContentStore` keeps blobs at
``<prefix>blobs/<algorithm>/<hex[:2]>/<hex>``, using only the public
`Store` API, so it works on every backend. A put hashes the bytes while
they stream (through the core), deduplicates against what is stored, and
never leaves anything at a blob key whose bytes do not match it. Reads check
the bytes against the digest in the key. On top of the blobs: resumable
upload sessions (the OCI chunked-push model; their state lives in the store,
so any process can resume them), artifacts (a data blob and a manifest blob
committed as one pair), and directory-tree sync with per-file metadata.
`asyncstore.oci` builds a registry storage driver on this layer.
"""

from ._digest import ALGORITHMS, Digest, Hasher, digest_of, hash_bytes
from ._read import BlobStream
from ._store import ContentStore
from ._types import (
    DEFAULT_MEDIA_TYPE,
    ArtifactRecord,
    ContentStoreStatistics,
    Descriptor,
    TreeFile,
    TreeSyncResult,
    UploadStatus,
    check_media_type,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_MEDIA_TYPE",
    "ArtifactRecord",
    "BlobStream",
    "ContentStore",
    "ContentStoreStatistics",
    "Descriptor",
    "Digest",
    "Hasher",
    "TreeFile",
    "TreeSyncResult",
    "UploadStatus",
    "check_media_type",
    "digest_of",
    "hash_bytes",
]
