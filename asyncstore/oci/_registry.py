"""RegistryStorage: the storage side of an OCI registry, over a ContentStore."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import anyio

from .._errors import (
    BlobNotFoundError,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    ManifestNotFoundError,
    NotFoundError,
    RepositoryNotFoundError,
    TagNotFoundError,
)
from .._store import Store
from .._stream._download import ObjectStream
from .._stream._tasks import task_group
from .._types import CommonPrefix, ObjectInfo
from ..cas import (
    BlobStream,
    ContentStore,
    Descriptor,
    Digest,
    UploadStatus,
    check_media_type,
    hash_bytes,
)
from ._manifest import inspect_manifest
from ._names import check_repository, check_tag

__all__ = ["RegistryStorage", "TagList"]

_LOOKUP_CONCURRENCY = 16
#: Most entries of the reference cache (resolved tags and revisions, blob links).
_REFERENCE_ENTRIES = 4096

_T = TypeVar("_T")


class _Flight:
    """One store read of a cached reference, which the callers that want it meanwhile share."""

    __slots__ = ("done", "generation", "ok", "value")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.done = anyio.Event()
        self.ok = False
        self.value: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class TagList:
    """One page of a repository's tags.

    Attributes:
        tags: Tags in lexical order.
        next: When more tags remain, the value to pass as ``last`` for the next
            page (the last tag of this one); None on the last page.
    """

    tags: tuple[str, ...]
    next: str | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


class RegistryStorage:
    """A registry storage driver: the OCI distribution spec's blobs, uploads, manifests and tags.

    Blobs and manifest bodies live once in the content-addressed store
    (``<prefix>blobs/...``); each repository holds small link objects under
    ``<prefix>repositories/<name>/``:

        _layers/<alg>/<hex>                        the repository has this blob
        _manifests/revisions/<alg>/<hex>           it has this manifest (media type, subject)
        _manifests/tags/<tag>                      tag -> manifest (one object per tag)
        _referrers/<alg>/<hex>/<alg>/<hex>         subject -> a manifest referring to it

    Repository path components never start with ``_``, so these folders can
    never collide with a nested repository. One object per tag makes
    concurrent tagging race-free. The guide "OCI registry storage" has worked examples.

    Args:
        store: Where everything goes (any backend).
        prefix: A key prefix: ``""`` or ending with ``/``.
        check_references: Refuse a manifest that references blobs (config,
            layers) or manifests (index entries) the repository does not hold.
        content: Use this ContentStore (sharing its blobs and statistics)
            instead of creating one over ``store`` and ``prefix``.
        manifest_cache: Bytes of manifest bodies kept in memory, by digest, once
            verified (0: none). Bodies are content-addressed, so a cached one is
            never stale; whether the repository holds the manifest (and what a
            tag points at) is read from the store unless ``reference_cache`` allows otherwise.
        reference_cache: Seconds a resolved tag or manifest revision, and a
            repository's link to a blob, are trusted without reading the store
            again (0: read them on every call). Writes made through this object
            (manifests, tags, deletes) update the cache at once, so one process
            serving a store sees its own changes exactly; changes made by
            *other* processes writing the same store are seen after at most
            this long. Only what exists is cached: a miss is always read again.
    """

    def __init__(
        self,
        store: Store,
        prefix: str = "",
        *,
        check_references: bool = True,
        content: ContentStore | None = None,
        manifest_cache: int = 16 * 1024 * 1024,
        reference_cache: float = 0.0,
    ) -> None:
        self.cas = content if content is not None else ContentStore(store, prefix)
        self.store = self.cas.store
        self.prefix = self.cas.prefix
        self.check_references = bool(check_references)
        if (
            not isinstance(manifest_cache, int)
            or isinstance(manifest_cache, bool)
            or manifest_cache < 0
        ):
            raise InvalidArgumentError(
                f"manifest_cache must be a number of bytes >= 0, not {manifest_cache!r}",
                key="manifest_cache",
            )
        if (
            not isinstance(reference_cache, int | float)
            or isinstance(reference_cache, bool)
            or not reference_cache >= 0
        ):
            raise InvalidArgumentError(
                f"reference_cache must be a number of seconds >= 0, not {reference_cache!r}",
                key="reference_cache",
            )
        self._ttl = float(reference_cache)
        #: (kind, repo, reference) -> (expiry on the monotonic clock, descriptor or None)
        self._refs: collections.OrderedDict[
            tuple[str, str, str], tuple[float, Descriptor | None]
        ] = collections.OrderedDict()
        #: Bumped by every write that could make a cached entry wrong; a read that
        #: began before a write does not cache what it found.
        self._generation = 0
        self._cache_limit = manifest_cache
        self._cache_bytes = 0
        self._cache: collections.OrderedDict[Digest, bytes] = collections.OrderedDict()
        #: The store reads of cached references under way (see `_shared`).
        self._flights: dict[tuple[str, str, str], _Flight] = {}

    def _remember(self, digest: Digest, body: bytes) -> None:
        if len(body) > self._cache_limit // 4 or digest in self._cache:
            return
        self._cache[digest] = body
        self._cache_bytes += len(body)
        while self._cache_bytes > self._cache_limit:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= len(dropped)

    def _cached_ref(self, kind: str, repo: str, ref: str) -> tuple[float, Descriptor | None] | None:
        if not self._ttl:
            return None
        entry = self._refs.get((kind, repo, ref))
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._refs[(kind, repo, ref)]
            return None
        return entry

    def _cache_ref(
        self, generation: int, kind: str, repo: str, ref: str, value: Descriptor | None
    ) -> None:
        if not self._ttl or generation != self._generation:
            return  # off, or a write happened while this was being read
        self._refs[(kind, repo, ref)] = (time.monotonic() + self._ttl, value)
        self._refs.move_to_end((kind, repo, ref))
        while len(self._refs) > _REFERENCE_ENTRIES:
            self._refs.popitem(last=False)

    async def _shared(
        self, key: tuple[str, str, str], generation: int, read: Callable[[], Awaitable[_T]]
    ) -> _T:
        """``read()``, or the result of the same read already under way.

        When a cached reference expires under load, every request for it missed at
        once and read the store: 1,000 connections asking for one tag made 1,000
        reads a second (each a worker-thread hop on file://). With the cache on,
        the callers that want a reference while a read of it is under way wait for
        that read, if it began after the last write through this object. If it
        fails (a miss is never cached, and an error is its own caller's), each
        reads for itself. Without the cache every call reads the store.
        """
        if not self._ttl:
            return await read()
        flight = self._flights.get(key)
        if flight is not None and flight.generation == generation:
            await flight.done.wait()
            if flight.ok:
                return flight.value  # type: ignore[no-any-return]
            return await read()
        flight = self._flights[key] = _Flight(generation)
        try:
            flight.value = await read()
            flight.ok = True
            return flight.value  # type: ignore[no-any-return]
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def _forget(self, repo: str, kind: str | None = None, ref: str | None = None) -> None:
        """Drop cached references of ``repo`` (all, or one) after a write through this object."""
        self._generation += 1
        if not self._refs:
            return
        if kind is not None and ref is not None:
            self._refs.pop((kind, repo, ref), None)
            return
        for key in [key for key in self._refs if key[1] == repo]:
            del self._refs[key]

    def __repr__(self) -> str:
        return f"<RegistryStorage prefix={self.prefix!r} over {self.store!r}>"

    # -- keys ---------------------------------------------------------------------------------

    def _repo(self, repo: str) -> str:
        return f"{self.prefix}repositories/{check_repository(repo)}/"

    def _layer_key(self, repo: str, digest: Digest) -> str:
        return f"{self._repo(repo)}_layers/{digest.algorithm}/{digest.encoded}"

    def _revision_key(self, repo: str, digest: Digest) -> str:
        return f"{self._repo(repo)}_manifests/revisions/{digest.algorithm}/{digest.encoded}"

    def _tags_prefix(self, repo: str) -> str:
        return f"{self._repo(repo)}_manifests/tags/"

    def _tag_key(self, repo: str, tag: str) -> str:
        return f"{self._tags_prefix(repo)}{check_tag(tag)}"

    def _referrers_prefix(self, repo: str, subject: Digest) -> str:
        return f"{self._repo(repo)}_referrers/{subject.algorithm}/{subject.encoded}/"

    def _referrer_key(self, repo: str, subject: Digest, digest: Digest) -> str:
        return f"{self._referrers_prefix(repo, subject)}{digest.algorithm}/{digest.encoded}"

    # -- blobs --------------------------------------------------------------------------------

    async def _link(self, repo: str, digest: Digest) -> None:
        generation = self._generation
        await self.store.put(self._layer_key(repo, digest), str(digest).encode())
        self._cache_ref(generation, "link", repo, str(digest), None)

    async def _has_link(self, repo: str, digest: Digest) -> bool:
        if self._cached_ref("link", repo, str(digest)) is not None:
            return True
        generation = self._generation
        key = self._layer_key(repo, digest)
        found = await self._shared(
            ("link", repo, str(digest)), generation, lambda: self.store.exists(key)
        )
        if found:
            self._cache_ref(generation, "link", repo, str(digest), None)
        return found

    async def _require_blob(self, repo: str, digest: Digest) -> None:
        if not await self._has_link(repo, digest):
            raise BlobNotFoundError(
                f"blob {digest} is not in repository {repo!r}", key=self._layer_key(repo, digest)
            )

    async def put_blob(
        self, repo: str, data: object, *, expected: Digest | str | None = None
    ) -> Descriptor:
        """Push a blob in one go (the monolithic upload) and link it into ``repo``.

        Args:
            repo: The repository.
            data: Any source `ContentStore.put` accepts.
            expected: The digest the client declared; a mismatch stores and links nothing.

        Raises:
            InvalidArgumentError: a malformed repository name.
            InvalidDigestError: ``expected`` is malformed.
            DigestMismatchError: the bytes do not hash to ``expected``.
        """
        self._repo(repo)
        descriptor = await self.cas.put(data, expected=expected)
        await self._link(repo, descriptor.digest)
        return descriptor

    async def get_blob(self, repo: str, digest: Digest | str) -> bytes:
        """Read a blob of ``repo``, verified against its digest.

        Raises:
            BlobNotFoundError: the repository does not hold the blob.
            DigestMismatchError: the stored bytes are corrupt.
        """
        d = Digest(digest)
        self._repo(repo)
        with self._blob_gone(repo, d):
            return await self.cas.get(d, before=lambda: self._require_blob(repo, d))

    def stream_blob(self, repo: str, digest: Digest | str) -> BlobStream:
        """Stream a blob of ``repo``, verified after the last chunk (see `BlobStream`).

        Raises:
            InvalidDigestError: ``digest`` is malformed (at once).
            BlobNotFoundError: the repository does not hold the blob (on entering
                ``async with`` or on iteration); a plain `NotFoundError` if the link
                is there but the bytes are gone.
        """
        d = Digest(digest)
        self._repo(repo)
        return self.cas.stream(d, before=lambda: self._require_blob(repo, d))

    async def fetch_blob(
        self, repo: str, digest: Digest | str, path: str | os.PathLike[str]
    ) -> Descriptor:
        """Download a blob of ``repo`` to a file, atomically and verified.

        Raises:
            BlobNotFoundError: the repository does not hold the blob.
            DigestMismatchError: the stored bytes are corrupt; nothing is left at ``path``.
        """
        d = Digest(digest)
        self._repo(repo)
        with self._blob_gone(repo, d):
            return await self.cas.fetch_to_file(d, path, before=lambda: self._require_blob(repo, d))

    async def stream_blob_range(
        self, repo: str, digest: Digest | str, start: int, end: int
    ) -> ObjectStream:
        """Stream the bytes ``[start, end)`` of a blob of ``repo`` (an HTTP Range request).

        A part of a blob cannot be checked against the blob's digest, so these
        bytes are not verified; read the whole blob (`stream_blob`) for that.

        Raises:
            BlobNotFoundError: the repository does not hold the blob (before any byte).
            InvalidRangeError: the range is negative, inverted or starts past the end.
        """
        d = Digest(digest)
        await self._require_blob(repo, d)
        return self.store.stream(self.cas.blob_key(d), start=start, end=end, verify=False)

    async def stat_blob(self, repo: str, digest: Digest | str) -> Descriptor:
        """The descriptor of a blob of ``repo`` (no bytes are read).

        Raises:
            BlobNotFoundError: the repository does not hold the blob.
        """
        d = Digest(digest)
        await self._require_blob(repo, d)
        with self._blob_gone(repo, d):
            return await self.cas.stat(d)

    async def blob_exists(self, repo: str, digest: Digest | str) -> bool:
        """Whether ``repo`` holds the blob (and its bytes are stored)."""
        d = Digest(digest)
        return await self._has_link(repo, d) and await self.cas.exists(d)

    async def delete_blob(self, repo: str, digest: Digest | str) -> None:
        """Remove a blob from ``repo`` (its link; the bytes stay for other repositories).

        Raises:
            BlobNotFoundError: the repository does not hold the blob.
        """
        d = Digest(digest)
        await self._require_blob(repo, d)
        try:
            await self.store.delete(self._layer_key(repo, d))
        finally:
            self._forget(repo, "link", str(d))

    async def mount_blob(self, repo: str, digest: Digest | str, from_repo: str) -> Descriptor:
        """Make a blob of ``from_repo`` part of ``repo`` without copying any bytes.

        Raises:
            BlobNotFoundError: ``from_repo`` does not hold the blob (start an upload instead).
        """
        d = Digest(digest)
        self._repo(repo)
        await self._require_blob(from_repo, d)
        with self._blob_gone(from_repo, d):
            descriptor = await self.cas.stat(d)
        await self._link(repo, d)
        return descriptor

    async def mount_stored_blob(self, repo: str, digest: Digest | str) -> Descriptor:
        """Make any blob the content store holds under ``digest`` part of ``repo``.

        The distribution spec's automatic mount (a mount request without
        ``from``): blob bytes are shared by every repository, so no bytes are copied.

        Raises:
            BlobNotFoundError: the content store does not hold the blob (start an upload).
        """
        d = Digest(digest)
        self._repo(repo)
        with self._blob_gone(repo, d):
            descriptor = await self.cas.stat(d)
        await self._link(repo, d)
        return descriptor

    @contextlib.contextmanager
    def _blob_gone(self, repo: str, digest: Digest) -> Iterator[None]:
        """Report a blob whose bytes are missing from the content store as BlobNotFoundError."""
        try:
            yield
        except BlobNotFoundError:
            raise
        except NotFoundError as exc:
            raise BlobNotFoundError(
                f"blob {digest} is not stored (asked for in repository {repo!r})",
                key=self.cas.blob_key(digest),
            ) from exc

    # -- upload sessions ----------------------------------------------------------------------

    async def start_upload(self, repo: str) -> str:
        """Start a chunked upload into ``repo``; return its session id.

        Raises:
            InvalidArgumentError: a malformed repository name.
        """
        self._repo(repo)
        return await self.cas.start(scope=repo)

    async def append_upload(
        self, repo: str, session_id: str, offset: int | None, chunk: object
    ) -> int:
        """Append a chunk at ``offset`` (the current size; None: wherever that is).

        Returns:
            The new size.

        Raises:
            InvalidOffsetError: out-of-order or stale chunk (the session is unchanged).
            UploadNotFoundError: no such session in ``repo``.
        """
        self._repo(repo)
        return await self.cas.append(session_id, offset, chunk, scope=repo)

    async def upload_progress(self, repo: str, session_id: str) -> int:
        """Bytes received so far: the offset of the next chunk.

        Raises:
            UploadNotFoundError: no such session in ``repo``.
        """
        self._repo(repo)
        return await self.cas.progress(session_id, scope=repo)

    async def upload_status(self, repo: str, session_id: str) -> UploadStatus:
        """The session's size and timestamps.

        Raises:
            UploadNotFoundError: no such session in ``repo``.
        """
        self._repo(repo)
        return await self.cas.status(session_id, scope=repo)

    async def abort_upload(self, repo: str, session_id: str) -> None:
        """Cancel an upload; cancelling twice is not an error.

        Raises:
            UploadNotFoundError: the session belongs to another repository.
        """
        self._repo(repo)
        await self.cas.abort(session_id, scope=repo)

    async def finish_upload(
        self,
        repo: str,
        session_id: str,
        digest: Digest | str,
        *,
        chunk: object = None,
        offset: int | None = None,
    ) -> Descriptor:
        """Close an upload: append the optional last chunk, verify, store and link the blob.

        The repository's link is written as soon as the content is verified,
        while the blob itself is stored (two durable writes at once, not one
        after the other). The client has then proved it holds bytes with this
        digest, so the link is sound even if storing the blob fails: the
        finish raises, the session is kept for a retry, and a link to a blob
        that is not stored reads as absent.

        Args:
            repo: The repository.
            session_id: The id `start_upload` returned.
            digest: The digest the client declared for the whole blob.
            chunk: A last chunk to append first (the body of the closing PUT).
            offset: Where ``chunk`` goes (default: the session's current size).

        Raises:
            InvalidDigestError: ``digest`` is malformed (the session is kept).
            DigestMismatchError: the content does not hash to ``digest``; the
                session is discarded and nothing is stored or linked.
            InvalidOffsetError: ``offset`` is not the current size.
            UploadNotFoundError: no such session in ``repo``.
        """
        d = Digest(digest)
        self._repo(repo)
        if chunk is not None:
            await self.cas.append(session_id, offset, chunk, scope=repo)
        return await self.cas.finish(
            session_id, d, scope=repo, verified=lambda: self._link(repo, d)
        )

    # -- manifests ----------------------------------------------------------------------------

    async def _revision(self, repo: str, digest: Digest) -> Descriptor:
        key = self._revision_key(repo, digest)
        try:
            raw = await self.store.get(key)
        except NotFoundError as exc:
            raise ManifestNotFoundError(
                f"manifest {digest} is not in repository {repo!r}", key=key
            ) from exc
        try:
            return Descriptor.from_dict(json.loads(raw))
        except (ValueError, InvalidArgumentError) as exc:
            raise IntegrityError(f"revision link {key!r} is not valid ({exc})", key=key) from exc

    async def _reference(self, repo: str, reference: str) -> Descriptor:
        """A manifest's descriptor from a digest or a tag."""
        if not isinstance(reference, str):
            raise InvalidArgumentError(
                f"a manifest reference must be a digest or a tag str, "
                f"not {type(reference).__name__}",
                key="reference",
            )
        cached = self._cached_ref("ref", repo, reference)
        if cached is not None and cached[1] is not None:
            return cached[1]
        generation = self._generation
        descriptor = await self._shared(
            ("ref", repo, reference), generation, lambda: self._read_reference(repo, reference)
        )
        self._cache_ref(generation, "ref", repo, reference, descriptor)
        return descriptor

    async def _read_reference(self, repo: str, reference: str) -> Descriptor:
        if ":" in reference:
            return await self._revision(repo, Digest(reference))
        tagged = await self.resolve_tag(repo, reference)
        try:
            return await self._revision(repo, tagged.digest)
        except NotFoundError as exc:
            # A tag that raced the deletion of its manifest: it points nowhere.
            raise TagNotFoundError(
                f"tag {reference!r} of repository {repo!r} points at manifest "
                f"{tagged.digest}, which was deleted",
                key=self._tag_key(repo, reference),
            ) from exc

    async def put_manifest(
        self,
        repo: str,
        body: bytes | bytearray | memoryview,
        media_type: str,
        *,
        digest: Digest | str | None = None,
        tags: Iterable[str] = (),
    ) -> Descriptor:
        """Store a manifest byte-exact, by digest, and optionally tag it.

        Commit order: the body as a blob; the revision link (the manifest is
        now in the repository); the referrer entry under its ``subject``, if
        it has one; then each tag.

        Args:
            repo: The repository.
            body: The manifest bytes, stored exactly as given.
            media_type: Its media type (must agree with the body's ``mediaType``).
            digest: The digest the client declared (a PUT by digest); the body
                must hash to it (with its algorithm).
            tags: Tags to point at the manifest once it is stored.

        Returns:
            The manifest's descriptor (with its artifact type and annotations).

        Raises:
            InvalidArgumentError: bad repository, tag, media type or manifest body.
            InvalidDigestError: ``digest`` or a digest inside the body is malformed.
            DigestMismatchError: the body does not hash to ``digest``.
            NotFoundError: ``check_references`` is on and a referenced blob or
                manifest is not in the repository.
        """
        self._repo(repo)
        check_media_type(media_type, what=f"media type of a manifest for {repo!r}")
        try:
            tag_list = [tags] if isinstance(tags, str) else list(tags)
        except TypeError:
            raise InvalidArgumentError(
                f"tags of a manifest for {repo!r} must be a tag or an iterable of tags, "
                f"not {type(tags).__name__}",
                key="tags",
            ) from None
        for tag in tag_list:
            check_tag(tag)
        try:
            view = memoryview(body).cast("B")
        except TypeError:
            raise InvalidArgumentError(
                f"a manifest body for {repo!r} must be bytes, not {type(body).__name__}",
                key=repo,
            ) from None
        declared = Digest(digest) if digest is not None else None
        actual = await hash_bytes(view, declared.algorithm if declared else "sha256")
        if declared is not None and actual != declared:
            self.cas.record_mismatch()
            raise DigestMismatchError(
                f"manifest for {repo!r} hashes to {actual}, not to the declared {declared}; "
                "nothing was stored",
                expected=str(declared),
                actual=str(actual),
                key=self._revision_key(repo, declared),
            )
        raw = view.tobytes()
        info = inspect_manifest(raw, media_type, actual)
        if self.check_references:
            await self._check_references(repo, actual, info.blobs, info.manifests)
        await self.cas.put(raw, expected=actual, media_type=media_type)
        self._remember(actual, raw)
        descriptor = Descriptor(
            actual, len(raw), media_type, info.artifact_type, dict(info.annotations)
        )
        record = descriptor.to_dict()
        if info.subject is not None:
            record["subject"] = info.subject.to_dict()
        try:
            await self.store.put(
                self._revision_key(repo, actual), _json(record), content_type="application/json"
            )
        finally:
            self._forget(repo)
        if info.subject is not None:
            await self.store.put(
                self._referrer_key(repo, info.subject.digest, actual),
                _json(descriptor.to_dict()),
                content_type="application/json",
            )
        for tag in tag_list:
            await self._write_tag(repo, tag, descriptor)
        return descriptor

    async def _check_references(
        self,
        repo: str,
        digest: Digest,
        blobs: Iterable[Descriptor],
        manifests: Iterable[Descriptor],
    ) -> None:
        # Independent lookups: made concurrently (a manifest may list dozens of layers).
        limiter = anyio.CapacityLimiter(_LOOKUP_CONCURRENCY)

        async def check_blob(blob: Descriptor) -> None:
            async with limiter:
                found = await self.blob_exists(repo, blob.digest)
            if not found:
                raise BlobNotFoundError(
                    f"manifest {digest} references blob {blob.digest}, "
                    f"which is not in repository {repo!r}",
                    key=self._layer_key(repo, blob.digest),
                )

        async def check_manifest(manifest: Descriptor) -> None:
            async with limiter:
                found = await self.store.exists(self._revision_key(repo, manifest.digest))
            if not found:
                raise ManifestNotFoundError(
                    f"manifest {digest} references manifest {manifest.digest}, "
                    f"which is not in repository {repo!r}",
                    key=self._revision_key(repo, manifest.digest),
                )

        async with task_group() as tg:
            for blob in blobs:
                tg.start_soon(check_blob, blob)
            for manifest in manifests:
                tg.start_soon(check_manifest, manifest)

    async def get_manifest(self, repo: str, reference: str) -> tuple[bytes, Descriptor]:
        """Return a manifest's exact bytes and its descriptor, by digest or by tag.

        Raises:
            NotFoundError: no such manifest in ``repo``.
            TagNotFoundError: ``reference`` is a tag that does not exist.
            DigestMismatchError: the stored bytes are corrupt.
        """
        descriptor = await self._reference(repo, reference)
        cached = self._cache.get(descriptor.digest)
        if cached is not None:
            self._cache.move_to_end(descriptor.digest)
            return cached, descriptor
        key = self.cas.blob_key(descriptor.digest)
        try:
            # A manifest is small: one read (checked against the sha256 recorded at
            # upload by the store) and one hash against its digest, in place of a
            # blob stream's machinery.
            body = await self.store.get(key)
        except NotFoundError as exc:
            raise ManifestNotFoundError(
                f"manifest {descriptor.digest} of repository {repo!r}: its body is gone", key=key
            ) from exc
        actual = await hash_bytes(body, descriptor.digest.algorithm)
        if actual != descriptor.digest:
            self.cas.record_mismatch()
            raise DigestMismatchError(
                f"manifest {descriptor.digest} of repository {repo!r} is corrupt: "
                f"its bytes hash to {actual}",
                expected=str(descriptor.digest),
                actual=str(actual),
                key=key,
            )
        self._remember(descriptor.digest, body)
        return body, descriptor

    async def stat_manifest(self, repo: str, reference: str) -> Descriptor:
        """A manifest's descriptor, by digest or by tag, without reading its body.

        Raises:
            NotFoundError: no such manifest in ``repo``.
            TagNotFoundError: ``reference`` is a tag that does not exist.
        """
        return await self._reference(repo, reference)

    async def manifest_exists(self, repo: str, reference: str) -> bool:
        """Whether ``repo`` has the manifest (by digest or by tag)."""
        try:
            await self._reference(repo, reference)
        except NotFoundError:  # TagNotFoundError and ManifestNotFoundError too
            return False
        return True

    async def delete_manifest(self, repo: str, digest: Digest | str) -> None:
        """Delete a manifest from ``repo``, with every tag pointing at it.

        Order: the tags, then its entry in its subject's referrers, then the
        revision link. The body stays in the content store (another
        repository may hold the same manifest).

        Raises:
            InvalidDigestError: ``digest`` is not a digest (untag a tag instead).
            NotFoundError: no such manifest in ``repo``.
        """
        d = Digest(digest)
        key = self._revision_key(repo, d)
        try:
            raw = await self.store.get(key)
        except NotFoundError as exc:
            raise ManifestNotFoundError(
                f"manifest {d} is not in repository {repo!r}", key=key
            ) from exc
        try:
            for tag in await self.lookup_tags(repo, d):
                await self.store.delete(self._tag_key(repo, tag))
                self._forget(repo)
            try:
                subject = json.loads(raw).get("subject")
                subject_digest = Digest(subject["digest"]) if subject else None
            except (ValueError, TypeError, KeyError, AttributeError, InvalidArgumentError):
                subject_digest = None
            if subject_digest is not None:
                await self.store.delete(self._referrer_key(repo, subject_digest, d))
            await self.store.delete(key)
        finally:
            self._forget(repo)

    # -- tags ---------------------------------------------------------------------------------

    async def _write_tag(self, repo: str, tag: str, descriptor: Descriptor) -> None:
        record = {
            "digest": str(descriptor.digest),
            "mediaType": descriptor.media_type,
            "size": descriptor.size,
        }
        try:
            await self.store.put(
                self._tag_key(repo, tag), _json(record), content_type="application/json"
            )
        finally:
            self._forget(repo)

    async def _read_tag(self, repo: str, tag: str) -> Descriptor | None:
        key = self._tag_key(repo, tag)
        try:
            raw = await self.store.get(key)
        except NotFoundError:
            return None
        try:
            return Descriptor.from_dict(json.loads(raw))
        except (ValueError, InvalidArgumentError) as exc:
            raise IntegrityError(f"tag {tag!r} of {repo!r}: {key!r} is not valid", key=key) from exc

    async def resolve_tag(self, repo: str, tag: str) -> Descriptor:
        """The descriptor of the manifest ``tag`` points at.

        Raises:
            TagNotFoundError: ``repo`` has no such tag.
        """
        descriptor = await self._read_tag(repo, tag)
        if descriptor is None:
            raise TagNotFoundError(
                f"tag {tag!r} does not exist in repository {repo!r}", key=self._tag_key(repo, tag)
            )
        return descriptor

    async def tag_manifest(self, repo: str, tag: str, digest: Digest | str) -> Descriptor:
        """Point ``tag`` at a manifest of ``repo`` (creating or moving the tag).

        Returns:
            The manifest's descriptor.

        Raises:
            NotFoundError: ``repo`` has no such manifest.
        """
        d = Digest(digest)
        check_tag(tag)
        descriptor = await self._revision(repo, d)
        await self._write_tag(repo, tag, descriptor)
        if not await self.store.exists(self._revision_key(repo, d)):
            # The manifest was deleted while we tagged it: do not leave a dangling tag.
            try:
                await self.store.delete(self._tag_key(repo, tag))
            finally:
                self._forget(repo)
            raise ManifestNotFoundError(
                f"manifest {d} was deleted from repository {repo!r} while being tagged {tag!r}",
                key=self._revision_key(repo, d),
            )
        return descriptor

    async def untag(self, repo: str, tag: str, *, prune: bool = False) -> None:
        """Remove a tag. The manifest stays, unless ``prune`` and no other tag points at it.

        Args:
            repo: The repository.
            tag: The tag to remove.
            prune: Also delete the manifest (as `delete_manifest` does) when no
                other tag of ``repo`` points at it. A manifest another tag still
                uses is never deleted.

        Raises:
            TagNotFoundError: ``repo`` has no such tag.
        """
        descriptor = await self.resolve_tag(repo, tag)
        try:
            await self.store.delete(self._tag_key(repo, tag))
        finally:
            self._forget(repo)
        if prune and not await self.lookup_tags(repo, descriptor.digest):
            with contextlib.suppress(NotFoundError):  # already gone
                await self.delete_manifest(repo, descriptor.digest)

    async def _tag_names(self, repo: str) -> list[str]:
        prefix = self._tags_prefix(repo)
        names = [
            entry.key[len(prefix) :]
            async for entry in self.store.list(prefix)
            if isinstance(entry, ObjectInfo)
        ]
        return sorted(names)

    async def list_tags(
        self, repo: str, *, n: int | None = None, last: str | None = None
    ) -> TagList:
        """A page of ``repo``'s tags, in lexical order.

        Args:
            repo: The repository.
            n: At most this many tags (None: all). ``n=0`` gives an empty page.
            last: Start after this tag (exclusive); any string works as a cursor.

        Returns:
            The tags, and ``next`` (the ``last`` of the next page) when more remain.

        Raises:
            InvalidArgumentError: ``n`` is negative or not an int, or ``last`` is not a str.
            NotFoundError: the repository holds nothing at all.
        """
        self._repo(repo)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise InvalidArgumentError(
                f"n for the tags of {repo!r} must be an integer >= 0 or None, not {n!r}", key=repo
            )
        if last is not None and not isinstance(last, str):
            raise InvalidArgumentError(
                f"last for the tags of {repo!r} must be a str or None, not {last!r}", key=repo
            )
        names = await self._tag_names(repo)
        if not names and not await self.repository_exists(repo):
            raise RepositoryNotFoundError(
                f"repository {repo!r} does not exist", key=self._repo(repo)
            )
        if last is not None:
            names = [name for name in names if name > last]
        if n is None or n >= len(names):
            return TagList(tuple(names))
        page = names[:n]
        return TagList(tuple(page), page[-1] if page else None)

    async def lookup_tags(self, repo: str, digest: Digest | str) -> list[str]:
        """Every tag of ``repo`` that points at ``digest``, in lexical order."""
        d = Digest(digest)
        names = await self._tag_names(repo)
        matching: set[str] = set()
        limiter = anyio.CapacityLimiter(_LOOKUP_CONCURRENCY)

        async def check(name: str) -> None:
            async with limiter:
                try:
                    descriptor = await self._read_tag(repo, name)
                except IntegrityError:
                    return  # an unreadable tag object points nowhere
            if descriptor is not None and descriptor.digest == d:
                matching.add(name)

        async with task_group() as tg:
            for name in names:
                tg.start_soon(check, name)
        return sorted(matching)

    # -- referrers, repositories ----------------------------------------------------------------

    async def list_referrers(
        self, repo: str, digest: Digest | str, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """The manifests of ``repo`` whose ``subject`` is ``digest``.

        The subject itself need not exist. Each descriptor carries the
        referrer's media type, size, artifact type and annotations.

        Args:
            repo: The repository.
            digest: The subject's digest.
            artifact_type: Only referrers of this artifact type.
        """
        d = Digest(digest)
        prefix = self._referrers_prefix(repo, d)
        out: list[Descriptor] = []
        async for entry in self.store.list(prefix):
            if not isinstance(entry, ObjectInfo):
                continue
            try:
                descriptor = Descriptor.from_dict(json.loads(await self.store.get(entry.key)))
            except NotFoundError:
                continue  # deleted since the listing
            except (ValueError, InvalidArgumentError) as exc:
                raise IntegrityError(
                    f"referrer entry {entry.key!r} is not valid", key=entry.key
                ) from exc
            if artifact_type is None or descriptor.artifact_type == artifact_type:
                out.append(descriptor)
        return out

    async def repository_exists(self, repo: str) -> bool:
        """Whether ``repo`` holds any blob, manifest or tag."""
        base = self._repo(repo)
        # One delimited listing of the repository's folder: a handful of entries
        # (its _layers/, _manifests/ and _referrers/ folders, and nested repositories).
        folders = {
            entry.prefix[len(base) :]
            async for entry in self.store.list(base, delimiter="/")
            if isinstance(entry, CommonPrefix)
        }
        return bool(folders & {"_layers/", "_manifests/"})
