"""Verified reads of blobs: a stream checked against the digest in the blob's key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .._errors import DigestMismatchError, NotFoundError
from .._stream._download import ObjectStream
from ._digest import Digest, Hasher
from ._types import DEFAULT_MEDIA_TYPE, Descriptor

if TYPE_CHECKING:
    from ._store import ContentStore

__all__ = ["BlobStream"]


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

    Attributes:
        digest: The blob's digest.
        descriptor: Its descriptor, once the first read is made (else None).
    """

    def __init__(
        self,
        cas: ContentStore,
        digest: Digest,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.digest = digest
        self.descriptor: Descriptor | None = None
        self._cas = cas
        self._key = cas.blob_key(digest)
        self._before = before
        self._inner: ObjectStream | None = None
        self._hasher = Hasher((digest.algorithm,)) if digest.algorithm != "sha256" else None
        self._done = False
        self._size = 0

    async def _open(self, *, enter: bool) -> ObjectStream:
        if self._inner is None:
            if self._before is not None:
                await self._before()
            inner = self._cas.store.stream(self._key)
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
        return inner.info is None or inner.info.size > self._cas.store.chunk_size

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
        self._cas._count(digest_mismatches=1)
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
            self._cas._count(blobs_read=1, bytes_read=self._size)
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
