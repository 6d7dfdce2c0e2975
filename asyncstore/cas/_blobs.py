"""The shared blob operations: keys, counters and writing a blob once, by its digest.

`Blobs` is the one object the content-addressed layer's features share:
`ContentStore` (the public facade), the upload sessions, the directory
trees, the artifacts and the verified reads (`_read.py`) each take it,
rather than the ContentStore, so none of them imports the module above it
(the layers are listed in docs/design.md and checked by tests/test_layers.py).
It holds the store, the key prefix, the put options and the statistics
counters, and writes blobs: straight to their key when the bytes are in
memory (or small), through a staging key when they stream, never twice, and
never with bytes that do not match the digest.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio

from .._errors import (
    AlreadyExistsError,
    DigestMismatchError,
    InvalidArgumentError,
    InvalidDigestError,
    NotFoundError,
)
from .._store import Store
from .._stream._source import PartReader, open_source
from ._digest import ALGORITHMS, Digest, Hasher, hash_bytes
from ._layout import blob_key
from ._types import DEFAULT_MEDIA_TYPE, ContentStoreStatistics, Descriptor, check_media_type

__all__ = ["HEAD_THRESHOLD", "Blobs"]

#: Blobs at least this large are looked up (HEAD) before being sent, so an
#: existing blob costs one small request instead of an upload.
HEAD_THRESHOLD = 256 * 1024


def _as_view(data: object) -> memoryview | None:
    if isinstance(data, str):
        return None
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        return None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class Blobs:
    """The blobs of one ContentStore: where they live, how they are written, what was counted.

    Args:
        store: Where the blobs go.
        prefix: The checked key prefix (``""`` or ending with ``/``).
        inline_limit: Sources up to this size are hashed first and written
            straight to their blob key; larger streamed ones go through a staging key.
    """

    def __init__(self, store: Store, prefix: str, inline_limit: int) -> None:
        self.store = store
        self.prefix = prefix
        self.inline_limit = inline_limit
        self._stats: dict[str, int] = dict.fromkeys(ContentStoreStatistics._fields, 0)

    # -- bookkeeping --------------------------------------------------------------------------

    def statistics(self) -> ContentStoreStatistics:
        """A snapshot of the counters."""
        return ContentStoreStatistics(**self._stats)

    def count(self, **deltas: int) -> None:
        """Add to the named counters (the fields of `ContentStoreStatistics`)."""
        for name, delta in deltas.items():
            self._stats[name] += delta

    def blob_key(self, digest: Digest | str) -> str:
        """The store key of the blob with ``digest``."""
        return blob_key(self.prefix, Digest(digest))

    # -- writing ------------------------------------------------------------------------------

    async def put(
        self,
        data: object,
        *,
        expected: Digest | str | None = None,
        media_type: str | None = None,
        algorithm: str | None = None,
    ) -> Descriptor:
        """Store a blob from any source of bytes (see `ContentStore.put`)."""
        want = Digest(expected) if expected is not None else None
        alg = self._algorithm(algorithm, want)
        ctype = check_media_type(media_type) if media_type is not None else None
        view = _as_view(data)
        if view is not None:
            return await self._put_buffer(view, alg, want, ctype)
        reader, _ = await open_source(
            data, lambda size: self.inline_limit, key=f"{self.prefix}blobs/"
        )
        try:
            first = await reader.read_part()
            second = await reader.read_part() if first is not None else None
            if second is None:
                whole = first if first is not None else memoryview(b"")
                return await self._put_buffer(whole, alg, want, ctype)
            return await self._put_streamed(reader, [first, second], alg, want, ctype)  # type: ignore[list-item]
        finally:
            await reader.aclose()

    @staticmethod
    def _algorithm(algorithm: str | None, want: Digest | None) -> str:
        if algorithm is None:
            return want.algorithm if want is not None else "sha256"
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise InvalidDigestError(
                f"algorithm {algorithm!r:.80} is not supported "
                f"(supported: {', '.join(ALGORITHMS)})",
                key=str(algorithm)[:80],
            )
        if want is not None and want.algorithm != algorithm:
            raise InvalidArgumentError(
                f"algorithm {algorithm!r} differs from that of the expected digest {want}",
                key=str(want),
            )
        return algorithm

    def _mismatch(self, want: Digest, actual: Digest, what: str) -> DigestMismatchError:
        self.count(digest_mismatches=1)
        return DigestMismatchError(
            f"{what} hashes to {actual}, not to the expected {want}; nothing was stored",
            expected=str(want),
            actual=str(actual),
            key=self.blob_key(want),
        )

    async def usable(self, digest: Digest, size: int | None) -> bool:
        """Whether a sound blob is stored under ``digest`` (its size and sha256 agree)."""
        try:
            info = await self.store.head(self.blob_key(digest))
        except NotFoundError:
            return False
        if size is not None and info.size != size:
            return False
        return not (digest.algorithm == "sha256" and info.sha256 not in (None, digest))

    def stored(self, digest: Digest, size: int, ctype: str | None, *, written: bool) -> Descriptor:
        """Count a blob as written or deduplicated and return its descriptor."""
        if written:
            self.count(blobs_written=1, bytes_written=size)
        else:
            self.count(blobs_deduplicated=1, bytes_deduplicated=size)
        return Descriptor(digest, size, ctype or DEFAULT_MEDIA_TYPE)

    async def _put_buffer(
        self, view: memoryview, alg: str, want: Digest | None, ctype: str | None
    ) -> Descriptor:
        actual = await hash_bytes(view, alg)
        if want is not None and actual != want:
            raise self._mismatch(want, actual, "the data")
        return await self.write_known(view, actual, ctype)

    async def write_known(self, view: memoryview, digest: Digest, ctype: str | None) -> Descriptor:
        """Write bytes whose digest is known (and checked) to their blob key, once."""
        key = self.blob_key(digest)
        size = view.nbytes
        if size >= HEAD_THRESHOLD and await self.usable(digest, size):
            return self.stored(digest, size, ctype, written=False)
        try:
            await self.store.put(key, view, content_type=ctype, mode="create")
        except AlreadyExistsError:
            if await self.usable(digest, size):
                return self.stored(digest, size, ctype, written=False)
            await self.store.put(key, view, content_type=ctype)  # repair a corrupt blob
        return self.stored(digest, size, ctype, written=True)

    async def _put_streamed(
        self,
        reader: PartReader,
        first: list[memoryview],
        alg: str,
        want: Digest | None,
        ctype: str | None,
    ) -> Descriptor:
        async def chunks(hasher: Hasher | None) -> AsyncIterator[memoryview]:
            for head in first:
                if hasher is not None:
                    await hasher.update(head)
                yield head
            while (part := await reader.read_part()) is not None:
                if hasher is not None:
                    await hasher.update(part)
                yield part
                reader.release(part)  # the consumer copied it before asking for more

        if want is not None and await self.usable(want, None):
            # Already stored: hash the source to check the claim, but send nothing.
            check = Hasher((alg,))
            async for _ in chunks(check):
                pass
            actual = check.digest(alg)
            if actual != want:
                raise self._mismatch(want, actual, "the data")
            return self.stored(want, check.size, ctype, written=False)

        hasher = Hasher((alg,)) if alg != "sha256" else None
        staging = f"{self.prefix}staging/{uuid.uuid4().hex}"
        try:
            result = await self.store.put(staging, chunks(hasher), content_type=ctype)
            actual = Digest(result.sha256) if hasher is None else hasher.digest(alg)
            if want is not None and actual != want:
                raise self._mismatch(want, actual, "the data")
            written = await self.promote(staging, actual, result.size)
            return self.stored(actual, result.size, ctype, written=written)
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.delete(staging)

    async def promote(self, source_key: str, digest: Digest, size: int) -> bool:
        """Copy a verified object to the blob key of ``digest`` unless a sound blob is there.

        The caller vouches that the object at ``source_key`` hashes to ``digest``.
        Two writers promoting the same digest at once may both copy (the same
        bytes): `Store.copy` has no create-if-absent mode.

        Returns:
            True if the bytes were copied, False if the blob was already stored.
        """
        if await self.usable(digest, size):
            return False
        await self.store.copy(source_key, self.blob_key(digest))
        return True
