"""ContentStore: blobs stored by digest over any Store, verified on every read.

The public facade of the content-addressed layer: it checks the arguments
and hands each call to the module that does the work (`_blobs` for writes,
`_read` for verified reads, `_sessions`, `_artifacts`, `_tree`), which all
share one `Blobs` and never import this module.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

from .._errors import InvalidArgumentError, NotFoundError
from .._store import Store
from .._types import ObjectInfo
from . import _artifacts, _sessions, _tree
from ._blobs import Blobs
from ._digest import Digest
from ._layout import check_prefix, digest_from_key
from ._read import BlobStream, fetch_blob, read_blob
from ._types import (
    DEFAULT_MEDIA_TYPE,
    ArtifactRecord,
    ContentStoreStatistics,
    Descriptor,
    TreeSyncResult,
    UploadStatus,
    check_media_type,
)

__all__ = ["ContentStore"]


class ContentStore:
    """Content-addressed blobs over any `Store`: the key of a blob is its digest.

    Blobs live at ``<prefix>blobs/<algorithm>/<hex[:2]>/<hex>``. A put
    computes the digest while the bytes stream (one pass, through the core)
    and skips the write when the blob is already there; every read checks the
    bytes against the digest. Resumable upload sessions (the OCI chunked-push
    model), artifacts (a data blob and a manifest blob committed as one pair)
    and directory-tree sync are built on the same blobs. The guide
    "Content-addressed storage" describes the layout and the commit orders.

        async with Store(MemoryBackend()) as store:
            cas = ContentStore(store)
            desc = await cas.put(b"hello")
            assert await cas.get(desc.digest) == b"hello"

    Args:
        store: Where the blobs go (any backend).
        prefix: A key prefix for everything this layer writes: ``""`` or ending with ``/``.
        inline_limit: Sources up to this size (and every in-memory buffer) are
            hashed first and written straight to their blob key; larger
            streamed sources go through a staging key (default: the store's
            ``chunk_size``).
        session_lease: Seconds an append or finish holds an upload session
            before another caller may take it over (the holder renews it after
            every part).
        max_concurrency: Files transferred at once by `upload_tree` and `download_tree`.

    Raises:
        InvalidKeyError: the prefix is not acceptable.
        InvalidArgumentError: a bad option.
    """

    def __init__(
        self,
        store: Store,
        prefix: str = "",
        *,
        inline_limit: int | None = None,
        session_lease: float = 60.0,
        max_concurrency: int = 8,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidArgumentError(
                f"store must be an asyncstore Store, not {type(store).__name__}", key="store"
            )
        prefix = check_prefix(prefix)
        if inline_limit is None:
            inline_limit = store.chunk_size
        for name, value in (("inline_limit", inline_limit), ("max_concurrency", max_concurrency)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(
                    f"{name} must be an integer >= 1, not {value!r}", key=name
                )
        if (
            not isinstance(session_lease, (int, float))
            or isinstance(session_lease, bool)
            or not session_lease > 0
        ):
            raise InvalidArgumentError(
                f"session_lease must be a number of seconds > 0, not {session_lease!r}",
                key="session_lease",
            )
        self.max_concurrency = max_concurrency
        self._blobs = Blobs(store, prefix, inline_limit)
        self._sessions = _sessions.Sessions(self._blobs, float(session_lease))

    @property
    def store(self) -> Store:
        """The store the blobs are in."""
        return self._blobs.store

    @property
    def prefix(self) -> str:
        """The key prefix of everything this layer writes."""
        return self._blobs.prefix

    @property
    def inline_limit(self) -> int:
        """Sources up to this size are hashed first and written straight to their blob key."""
        return self._blobs.inline_limit

    def __repr__(self) -> str:
        return f"<ContentStore prefix={self.prefix!r} over {self.store!r}>"

    # -- bookkeeping --------------------------------------------------------------------------

    def statistics(self) -> ContentStoreStatistics:
        """Counters since this ContentStore was created (writes, dedupe skips, reads, ...)."""
        return self._blobs.statistics()

    def record_mismatch(self) -> None:
        """Count one digest mismatch found by a layer built on this one.

        `asyncstore.oci` checks manifest bodies itself (they are read whole,
        not through `stream`) and counts what it catches here, so that
        ``statistics().digest_mismatches`` covers every mismatch.
        """
        self._blobs.count(digest_mismatches=1)

    def blob_key(self, digest: Digest | str) -> str:
        """The store key of the blob with ``digest``.

        Raises:
            InvalidDigestError: ``digest`` is malformed or of an unsupported algorithm.
        """
        return self._blobs.blob_key(digest)

    # -- writing ------------------------------------------------------------------------------

    async def put(
        self,
        data: object,
        *,
        expected: Digest | str | None = None,
        media_type: str | None = None,
        algorithm: str | None = None,
    ) -> Descriptor:
        """Store a blob from any source of bytes and return its descriptor.

        The digest is computed while the bytes stream. A buffer (``bytes``,
        ``bytearray``, ``memoryview``, ...) or a source of at most
        ``inline_limit`` bytes is hashed first and written straight to its
        blob key with a create-if-absent write; a larger source (a path, a
        file, an iterable) is streamed to a staging key, which the store's
        put hashes on the way, and then copied to its blob key. Either way,
        when the blob already exists nothing is written (for large blobs a
        HEAD is made first, so not even the bytes are sent), and a stored blob
        whose recorded size or sha256 contradicts its name is replaced.

        Args:
            data: bytes or any buffer; a path (``pathlib.Path``, ``anyio.Path``);
                a binary file object (sync or async ``read``); or a sync or async
                iterable of bytes, as for `Store.put`.
            expected: The digest the bytes must have. On a mismatch nothing is
                stored at the blob key. When the blob is already stored, the
                source is still read and hashed (so that a wrong claim is caught)
                but not uploaded.
            media_type: Recorded as the blob's content type when it is written.
            algorithm: ``"sha256"`` (default) or ``"sha512"``; defaults to the
                algorithm of ``expected``.

        Returns:
            The blob's digest, size and media type.

        Raises:
            DigestMismatchError: the bytes do not hash to ``expected``.
            InvalidDigestError: ``expected`` is malformed or unsupported.
            InvalidArgumentError: bad data, media type or algorithm.
        """
        return await self._blobs.put(
            data, expected=expected, media_type=media_type, algorithm=algorithm
        )

    # -- reading ------------------------------------------------------------------------------

    def stream(
        self, digest: Digest | str, *, before: Callable[[], Awaitable[None]] | None = None
    ) -> BlobStream:
        """Stream a blob's bytes, verified against its digest after the last chunk.

        See `BlobStream`. Errors (`NotFoundError`, `DigestMismatchError`) are
        raised from the iteration or from entering ``async with``.

        Args:
            digest: The blob's digest.
            before: An async callable awaited before the blob is read; an
                error it raises is raised in place of the read. A layer
                built on this one checks its own permission there
                (`asyncstore.oci` checks that the repository holds the blob).

        Raises:
            InvalidDigestError: ``digest`` is malformed (raised at once).
        """
        return BlobStream(self._blobs, Digest(digest), before=before)

    async def get(
        self, digest: Digest | str, *, before: Callable[[], Awaitable[None]] | None = None
    ) -> bytes:
        """Read a whole blob into memory, verified: no bytes are returned unless they match.

        Args:
            digest: The blob's digest.
            before: An async callable awaited before the blob is read (and
                before the read is made again, if the blob was rewritten
                during the first); an error it raises is raised in place of
                the read.

        Raises:
            InvalidDigestError: ``digest`` is malformed or unsupported.
            NotFoundError: no blob has this digest.
            DigestMismatchError: the stored bytes do not hash to ``digest``.
        """
        return await read_blob(self._blobs, Digest(digest), before)

    async def fetch_to_file(
        self,
        digest: Digest | str,
        path: str | os.PathLike[str],
        *,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> Descriptor:
        """Download a blob to ``path``, atomically and verified.

        The bytes go to a temp file beside ``path`` while they are hashed; the
        temp file is renamed into place only if they match ``digest``. On any
        failure (a mismatch included) the temp file is removed and nothing is
        left at ``path`` (a file already there is kept as it was).

        Args:
            digest: The blob's digest.
            path: Where the file goes.
            before: An async callable awaited before the blob is read (and
                before each read made again); an error it raises is raised in
                place of the read, and nothing is left at ``path``.

        Returns:
            The blob's descriptor.

        Raises:
            InvalidDigestError: ``digest`` is malformed or unsupported.
            NotFoundError: no blob has this digest.
            DigestMismatchError: the stored bytes do not hash to ``digest``.
        """
        return await fetch_blob(self._blobs, Digest(digest), path, before=before)

    async def stat(self, digest: Digest | str) -> Descriptor:
        """The descriptor of a stored blob (one HEAD; the bytes are not read).

        Raises:
            InvalidDigestError: ``digest`` is malformed or unsupported.
            NotFoundError: no blob has this digest.
        """
        d = Digest(digest)
        key = self.blob_key(d)
        try:
            info = await self.store.head(key)
        except NotFoundError as exc:
            raise NotFoundError(f"blob {d} not found", key=key) from exc
        return Descriptor(d, info.size, info.content_type or DEFAULT_MEDIA_TYPE)

    async def exists(self, digest: Digest | str) -> bool:
        """Whether a blob with this digest is stored.

        Raises:
            InvalidDigestError: ``digest`` is malformed or unsupported.
        """
        return await self.store.exists(self.blob_key(digest))

    async def delete(self, digest: Digest | str) -> None:
        """Delete a blob. Deleting a blob that is not stored is not an error.

        Nothing tracks which artifacts, trees or repositories use a blob:
        delete only blobs you know to be unreferenced.

        Raises:
            InvalidDigestError: ``digest`` is malformed or unsupported.
        """
        await self.store.delete(self.blob_key(digest))

    async def list_digests(self) -> AsyncIterator[Digest]:
        """Yield the digest of every stored blob, in key order (by algorithm, then hex)."""
        async for entry in self.store.list(f"{self.prefix}blobs/"):
            if isinstance(entry, ObjectInfo):
                digest = digest_from_key(self.prefix, entry.key)
                if digest is not None:
                    yield digest

    # -- resumable upload sessions -------------------------------------------------------------

    async def start(self, *, scope: str | None = None) -> str:
        """Start a resumable upload session and return its id.

        The session's state lives in the store (``<prefix>uploads/<id>/``), so
        any process with the same store and prefix can resume it.

        Args:
            scope: A namespace for the session (the OCI driver passes the
                repository): every later call must give the same scope, or the
                session is reported as not found.
        """
        return await self._sessions.start(scope)

    async def append(
        self, session_id: str, offset: int | None, chunk: object, *, scope: str | None = None
    ) -> int:
        """Append ``chunk`` at ``offset``, which must be the session's current size.

        The bytes go into the backend's multipart mechanism (an S3 upload id
        and parts, a local temp file, ...) without re-reading earlier chunks;
        on backends with a minimum part size, a remainder smaller than it is
        kept as a small object in the session until more bytes arrive. While
        the whole session fits ``inline_limit`` and arrives as in-memory
        buffers, it is kept as one such small object instead (two writes per
        append, no lease), and `finish` writes it straight to its blob key.

        Args:
            session_id: The id `start` returned.
            offset: Where the chunk goes: the session's current size; None
                appends at whatever the current size is (a client that sends
                no offset, such as docker's streamed PATCH).
            chunk: bytes or any source `put` accepts.
            scope: The scope given to `start`.

        Returns:
            The session's new size.

        Raises:
            InvalidOffsetError: ``offset`` is not the current size (the session is
                unchanged), or another append or finish holds the session.
            UploadNotFoundError: no such session (in this scope).
        """
        return await self._sessions.append(session_id, offset, chunk, scope)

    async def progress(self, session_id: str, *, scope: str | None = None) -> int:
        """The number of bytes appended so far: the offset of the next append.

        Raises:
            UploadNotFoundError: no such session (in this scope).
        """
        return (await self._sessions.status(session_id, scope)).size

    async def status(self, session_id: str, *, scope: str | None = None) -> UploadStatus:
        """The session's size, scope and timestamps.

        Raises:
            UploadNotFoundError: no such session (in this scope).
        """
        return await self._sessions.status(session_id, scope)

    async def abort(self, session_id: str, *, scope: str | None = None) -> None:
        """Discard a session and everything it holds. Aborting twice is not an error.

        Raises:
            UploadNotFoundError: the session exists but in another scope.
        """
        await self._sessions.abort(session_id, scope)

    async def finish(
        self,
        session_id: str,
        digest: Digest | str,
        *,
        scope: str | None = None,
        media_type: str | None = None,
        verified: Callable[[], Awaitable[object]] | None = None,
    ) -> Descriptor:
        """Verify the session's content against ``digest`` and store it as that blob.

        When this ContentStore made the session's appends, the running hash is
        still in memory and the content is not read again; otherwise (a session
        resumed from another process, or a digest other than sha256) it is
        re-read once from the store to compute the digest.

        Args:
            session_id: The id `start` returned.
            digest: The digest the content must have.
            scope: The scope the session was started in.
            media_type: The blob's media type, for the descriptor.
            verified: Awaited once the content is known to hash to ``digest``,
                while the blob is being stored (never after a mismatch): for
                work that must follow the verification but need not wait for
                the blob's write, such as a registry's link of the blob into a
                repository. If it raises, the finish raises that error and
                keeps the session (the blob may be stored), so it can be retried.

        Returns:
            The blob's descriptor. The session is gone.

        Raises:
            InvalidDigestError: ``digest`` is malformed (the session is kept).
            DigestMismatchError: the content does not hash to ``digest``; the
                session is discarded and nothing is stored.
            InvalidOffsetError: an append holds the session.
            UploadNotFoundError: no such session (in this scope).
        """
        want = Digest(digest)
        ctype = check_media_type(media_type) if media_type is not None else None
        return await self._sessions.finish(session_id, want, scope, ctype, verified)

    async def purge(self, older_than: float) -> int:
        """Remove sessions and staging objects untouched for ``older_than`` seconds.

        For crashed writers: a put killed mid-stream leaves a staging object,
        an abandoned session its state and parts.

        Returns:
            How many sessions and staging objects were removed.
        """
        return await self._sessions.purge(older_than)

    # -- artifacts ----------------------------------------------------------------------------

    async def put_artifact(self, ref: str, data: object, manifest: object) -> ArtifactRecord:
        """Store ``data`` and ``manifest`` as one artifact at ``ref``.

        Commit order: the data blob, then the manifest blob, then the commit
        record at ``<prefix>artifacts/<ref>/@artifact.json`` naming both
        digests (a single small write: the commit point). A reader therefore
        sees the previous pair or the new one, never data without its
        manifest. Putting identical content again is an idempotent overwrite.

        Args:
            ref: A ``/``-separated reference such as ``stacks/t_123/web/42``.
            data: Any source `put` accepts.
            manifest: Any source `put` accepts (usually bytes).

        Raises:
            InvalidArgumentError: a malformed ref.
        """
        return await _artifacts.put_artifact(self._blobs, ref, data, manifest)

    async def get_artifact(self, ref: str) -> tuple[bytes, bytes]:
        """Return ``(data, manifest)`` of the artifact at ``ref``, both verified.

        Raises:
            NotFoundError: no artifact at ``ref``.
            DigestMismatchError: a blob is corrupt.
        """
        return await _artifacts.get_artifact(self._blobs, ref)

    async def stat_artifact(self, ref: str) -> ArtifactRecord:
        """The descriptors of the artifact at ``ref`` (without reading its blobs).

        Raises:
            NotFoundError: no artifact at ``ref``.
        """
        return await _artifacts.read_record(self._blobs, ref)

    async def artifact_exists(self, ref: str) -> bool:
        """Whether an artifact is committed at ``ref``."""
        return await _artifacts.artifact_exists(self._blobs, ref)

    async def delete_artifact(self, ref: str) -> None:
        """Remove the artifact at ``ref`` (its commit record; the blobs stay).

        Raises:
            NotFoundError: no artifact at ``ref``.
        """
        await _artifacts.delete_artifact(self._blobs, ref)

    # -- directory trees ----------------------------------------------------------------------

    async def upload_tree(self, local_dir: str | os.PathLike[str], ref: str) -> TreeSyncResult:
        """Upload every regular file under ``local_dir`` as the tree ``ref``.

        Each file is hashed locally; files whose blob is already stored are
        not sent. The tree's index (path, sha256, size, mtime and mode of
        every file: the sidecar metadata) is written last, as the commit
        point. Symbolic links and special files are skipped.

        Raises:
            InvalidArgumentError: ``local_dir`` is not a directory, or a bad ref.
            DigestMismatchError: a file changed while it was being uploaded.
        """
        return await _tree.upload_tree(
            self._blobs, local_dir, ref, max_concurrency=self.max_concurrency
        )

    async def download_tree(self, ref: str, local_dir: str | os.PathLike[str]) -> TreeSyncResult:
        """Make ``local_dir`` hold the files of the tree ``ref``.

        A local file whose sha256 already matches is not downloaded (only its
        mtime and mode are restored); every other file is fetched atomically
        and verified, then given its recorded mtime and mode. Local files the
        tree does not list are left alone. A file whose download fails
        verification is not left in place, and neither is a stale local file
        at its path: after an error every listed path holds its recorded
        content or nothing.

        Raises:
            NotFoundError: no tree at ``ref``.
            DigestMismatchError: a blob is corrupt.
        """
        return await _tree.download_tree(
            self._blobs, ref, local_dir, max_concurrency=self.max_concurrency
        )
