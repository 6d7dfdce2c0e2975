"""Incremental hashing while bytes stream, off the event loop for large updates.

hashlib releases the GIL for updates above a couple of KiB, so a worker thread
hashing one part overlaps with the event loop moving the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import cast

import anyio.to_thread

__all__ = ["INLINE_CHECKSUMS", "THREAD_THRESHOLD", "Sha256", "part_checksums_async"]

#: Updates at least this large run in a worker thread; smaller ones inline
#: (hashing 256 KiB takes ~0.2 ms, less than a thread hop is worth).
THREAD_THRESHOLD = 256 * 1024


#: Part checksums cheap enough to compute in the in-order pass, beside the object's
#: sha256 (hardware CRCs: a few % of sha256's cost, and each block read from cache).
#: The others (MD5: 1.4 CPU s/GiB, more than sha256's 0.6) are computed by each part's
#: own worker, parts in parallel, so that the one in-order pass is sha256 alone.
#: Digests are bytes in network order (a backend re-orders them if its header asks).
#: These are the CRCs `_digest_part` computes itself; every other name is hashlib's.
INLINE_CHECKSUMS = frozenset({"crc32c", "crc64nvme"})

#: A part's digests are computed a block at a time, every digest over one block
#: before the next, so each block is read from memory once and from cache after.
#: (Each hashlib call releases and retakes the GIL: blocks not much smaller.)
_BLOCK = 1024 * 1024


def _crc32c() -> Callable[[int, bytes], int]:
    """google-crc32c's ``extend(crc, chunk)``: hardware CRC32C, from ``bytes`` only."""
    try:
        import google_crc32c  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - only with the gcs extra
        raise ImportError(
            "crc32c part checksums need google-crc32c: pip install 'asyncstore[gcs]'"
        ) from exc
    return cast("Callable[[int, bytes], int]", google_crc32c.extend)


def _crc64nvme() -> Callable[[bytes | memoryview, int], int]:
    """awscrt's ``crc64nvme(chunk, crc)``: hardware CRC-64/NVME (0.02 CPU s/GiB here), from
    any buffer. Azure's ``x-ms-content-crc64`` is this CRC (little-endian on the wire)."""
    try:
        from awscrt import checksums  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # pragma: no cover - only with the azure extra
        raise ImportError(
            "crc64nvme part checksums need awscrt: pip install 'asyncstore[azure]'"
        ) from exc
    return cast("Callable[[bytes | memoryview, int], int]", checksums.crc64nvme)


def _digest_part(
    data: memoryview, names: Iterable[str], whole: hashlib._Hash | None = None
) -> dict[str, bytes]:
    """The digests named in ``names`` of ``data`` (``whole`` fed too, if given), in one pass.

    google-crc32c reads only ``bytes``: where a crc32c is asked, each block is
    copied once (1 MiB, into cache) rather than the whole part (a fresh 8 MiB
    allocation per part); every digest then reads the block from cache.
    """
    names = tuple(names)
    if not names:  # the whole-object hash alone: one call
        if whole is not None:
            whole.update(data)
        return {}
    hashes = [hashlib.new(name) for name in names if name not in INLINE_CHECKSUMS]
    feeds = [h.update for h in hashes] + ([whole.update] if whole is not None else [])
    crc = _crc32c() if "crc32c" in names else None
    crc64 = _crc64nvme() if "crc64nvme" in names else None
    value = value64 = 0
    for start in range(0, max(data.nbytes, 1), _BLOCK):
        block: bytes | memoryview = data[start : start + _BLOCK]
        if crc64 is not None:
            value64 = crc64(block, value64)
        if crc is not None:
            block = bytes(block)
            value = crc(value, block)
        for feed in feeds:
            feed(block)
    out = {h.name: h.digest() for h in hashes}
    if crc is not None:
        out["crc32c"] = value.to_bytes(4, "big")
    if crc64 is not None:
        out["crc64nvme"] = value64.to_bytes(8, "big")
    return {name: out[name] for name in names}


class Sha256:
    """The sha256 of a stream, fed in stream order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update_nowait(self, data: bytes | memoryview) -> None:
        """Feed ``data`` on the calling thread."""
        self._hash.update(data)
        self.size += len(data)

    async def update(
        self, data: bytes | memoryview, *, part: Iterable[str] = ()
    ) -> dict[str, bytes]:
        """Feed ``data`` (in a thread if large); return the per-part digests named in ``part``.

        The whole-object hash and the per-part checksums are computed in the
        same thread call, a block at a time: one pass over the bytes.
        """
        if not part and len(data) < THREAD_THRESHOLD:  # the common small update
            self._hash.update(data)
            self.size += len(data)
            return {}
        names = tuple(part)
        view = memoryview(data)
        if len(view) < THREAD_THRESHOLD:
            result = _digest_part(view, names, self._hash)
        else:
            result = await anyio.to_thread.run_sync(_digest_part, view, names, self._hash)
        self.size += len(view)
        return result

    async def update_and_copy(self, data: memoryview) -> bytes:
        """Feed ``data`` and return a copy of it as ``bytes``, in one thread call if large.

        For a reader that hands bytes on and reuses its buffer: the copy, like the
        hash, then never holds the event loop.
        """
        if len(data) < THREAD_THRESHOLD:
            self.update_nowait(data)
            return bytes(data)

        def work() -> bytes:
            self._hash.update(data)
            return bytes(data)

        copy = await anyio.to_thread.run_sync(work)
        self.size += len(data)
        return copy

    def hexdigest(self) -> str:
        """The hex digest of everything fed so far."""
        return self._hash.hexdigest()

    def digest_string(self) -> str:
        """``sha256:<hex>``, the OCI digest form."""
        return "sha256:" + self._hash.hexdigest()


async def part_checksums_async(data: memoryview, names: Iterable[str]) -> dict[str, bytes]:
    """Per-part checksums alone, in a worker thread if the part is large."""
    names = tuple(names)
    if not names:
        return {}
    if data.nbytes < THREAD_THRESHOLD:
        return _digest_part(data, names)
    return await anyio.to_thread.run_sync(_digest_part, data, names)
