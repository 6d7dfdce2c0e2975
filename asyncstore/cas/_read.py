"""Verified reads of blobs: a stream checked against the digest in the blob's key.

`BlobStream` and the two whole reads built on it, `read_blob` (into memory)
and `fetch_blob` (to a file, atomically), which `ContentStore`, the
directory trees and the artifacts share.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from types import TracebackType

import anyio
import anyio.to_thread

from .._errors import (
    DigestMismatchError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionFailedError,
)
from .._stream._download import ObjectStream
from .._stream._files import AtomicFile
from ._blobs import Blobs
from ._digest import Digest, Hasher
from ._types import DEFAULT_MEDIA_TYPE, Descriptor

__all__ = ["Before", "BlobStream", "fetch_blob", "read_blob"]

#: An async callable awaited before a blob is read (and before each re-read).
Before = Callable[[], Awaitable[None]]


class BlobStream:
    """The bytes of a blob, in order, verified against its digest.

    Use it like `ObjectStream`: ``async with cas.stream(digest) as body: async
    for chunk in body`` reads ranges in parallel; a bare ``async for`` reads
    one range at a time. Chunks are handed over as they arrive, so the digest
    can only be checked after the last one: a blob whose bytes do not hash to
    its digest raises `DigestMismatchError` from the iteration, after the last
    chunk. Consumers that must not act on unverified bytes should use
    `ContentStore.get` or `ContentStore.fetch_to_file` instead.

    Two checks run: the store's own (the bytes against the sha256 recorded at
    upload, when there is one) and this layer's (the bytes against the digest
    the blob is stored under), so a blob written by someone else under the
    wrong name is caught too.

    Made by `ContentStore.stream` (and `RegistryStorage.stream_blob`); not
    constructed directly.

    Attributes:
        digest: The blob's digest.
        descriptor: Its descriptor, once the first read is made (else None).
    """

    def __init__(
        self,
        blobs: Blobs,
        digest: Digest,
        *,
        before: Before | None = None,
    ) -> None:
        self.digest = digest
        self.descriptor: Descriptor | None = None
        self._blobs = blobs
        self._key = blobs.blob_key(digest)
        self._before = before
        self._inner: ObjectStream | None = None
        self._hasher = Hasher((digest.algorithm,)) if digest.algorithm != "sha256" else None
        self._done = False
        self._size = 0

    async def _open(self, *, enter: bool) -> ObjectStream:
        if self._inner is None:
            if self._before is not None:
                await self._before()
            inner = self._blobs.store.stream(self._key)
            if enter:
                try:
                    if await self._parallel(inner):
                        await inner.__aenter__()
                except NotFoundError as exc:
                    await inner.aclose()
                    raise NotFoundError(f"blob {self.digest} not found", key=self._key) from exc
                except BaseException:
                    await inner.aclose()
                    raise
            self._inner = inner
            self._describe()
        return self._inner

    async def _parallel(self, inner: ObjectStream) -> bool:
        """Whether reading ranges in parallel pays: only for blobs of more than one range.

        The first range is read here (it tells the size); a blob that fits in it is
        then iterated in place, without the parallel reader's task and buffers.
        """
        peek = getattr(inner, "_open", None)
        if peek is None:  # pragma: no cover - an ObjectStream without the first-read hook
            return True
        await peek()
        return inner.info is None or inner.info.size > self._blobs.store.chunk_size

    def _describe(self) -> None:
        info = self._inner.info if self._inner is not None else None
        if self.descriptor is None and info is not None:
            self.descriptor = Descriptor(
                self.digest, info.size, info.content_type or DEFAULT_MEDIA_TYPE
            )

    async def __aenter__(self) -> BlobStream:
        await self._open(enter=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and release every connection; safe to call more than once."""
        if self._inner is not None:
            await self._inner.aclose()

    def __aiter__(self) -> BlobStream:
        return self

    def _mismatch(self, actual: str) -> DigestMismatchError:
        self._blobs.count(digest_mismatches=1)
        return DigestMismatchError(
            f"blob {self.digest} is corrupt: its bytes hash to {actual} (key {self._key!r})",
            expected=str(self.digest),
            actual=actual,
            key=self._key,
        )

    def _actual(self, inner: ObjectStream, fallback: str | None = None) -> str:
        if self._hasher is not None:
            return str(self._hasher.digest(self.digest.algorithm))
        return inner.sha256 or fallback or ""

    async def __anext__(self) -> bytes:
        inner = await self._open(enter=False)
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await inner.__anext__()
        except StopAsyncIteration:
            self._done = True
            self._describe()
            actual = self._actual(inner)
            if actual != self.digest:
                raise self._mismatch(actual) from None
            self._blobs.count(blobs_read=1, bytes_read=self._size)
            raise
        except DigestMismatchError as exc:
            # The store's check (against the recorded sha256) failed after the last chunk.
            self._done = True
            raise self._mismatch(self._actual(inner, exc.actual)) from exc
        except NotFoundError as exc:
            raise NotFoundError(f"blob {self.digest} not found", key=self._key) from exc
        self._describe()
        if self._hasher is not None:
            await self._hasher.update(chunk)
        self._size += len(chunk)
        return chunk


async def read_blob(blobs: Blobs, digest: Digest, before: Before | None = None) -> bytes:
    """Read a whole blob into memory, verified (see `ContentStore.get`)."""
    for attempt in (1, 2):
        try:
            pieces: list[bytes] = []
            async with BlobStream(blobs, digest, before=before) as body:
                async for chunk in body:
                    pieces.append(chunk)
        except PreconditionFailedError:
            # The blob was rewritten during the read. Its bytes are the same by
            # construction (or verification catches it), so reading again is safe.
            if attempt == 2:
                raise
            continue
        if len(pieces) == 1:
            return pieces[0]
        return await anyio.to_thread.run_sync(b"".join, pieces)
    raise AssertionError("unreachable")  # pragma: no cover


def _set_mtime(path: str, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


async def fetch_blob(
    blobs: Blobs,
    digest: Digest,
    path: str | os.PathLike[str],
    *,
    mtime_ns: int | None = None,
    mode: int | None = None,
    before: Before | None = None,
) -> Descriptor:
    """Download a blob to ``path``, atomically and verified (see `ContentStore.fetch_to_file`).

    Args:
        blobs: The blobs.
        digest: The blob's digest.
        path: Where the file goes.
        mtime_ns: The modification time to give the file, if any.
        mode: The permission bits to give the file, if any.
        before: Awaited before each read of the blob.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"path for blob {digest} must be a str or os.PathLike, not {type(path).__name__}",
            key=str(digest),
        )
    for attempt in (1, 2):
        target = AtomicFile(path, key=blobs.blob_key(digest))
        try:
            await target.open()
            size = 0
            async with BlobStream(blobs, digest, before=before) as body:
                async for chunk in body:
                    await target.write_at(size, memoryview(chunk))
                    size += len(chunk)
                descriptor = body.descriptor
            await target.commit(size, mode=mode)
        except BaseException as exc:
            await target.discard()
            if isinstance(exc, PreconditionFailedError) and attempt == 1:
                continue
            raise
        if mtime_ns is not None:
            await anyio.to_thread.run_sync(_set_mtime, target.path, mtime_ns)
        assert descriptor is not None
        return descriptor
    raise AssertionError("unreachable")  # pragma: no cover
