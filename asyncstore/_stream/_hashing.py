"""Incremental hashing while bytes stream, off the event loop for large updates.

hashlib releases the GIL for updates above a couple of KiB, so a worker thread
hashing one part overlaps with the event loop moving the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import anyio.to_thread

__all__ = ["THREAD_THRESHOLD", "Sha256", "part_checksums_async"]

#: Updates at least this large run in a worker thread; smaller ones inline
#: (hashing 256 KiB takes ~0.2 ms, less than a thread hop is worth).
THREAD_THRESHOLD = 256 * 1024


def _crc32c() -> Callable[[bytes | memoryview], bytes]:
    try:
        import google_crc32c  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - only with the gcs extra
        raise ImportError(
            "crc32c part checksums need google-crc32c: pip install 'asyncstore[gcs]'"
        ) from exc

    def crc(data: bytes | memoryview) -> bytes:
        value: int = google_crc32c.value(bytes(data))
        return value.to_bytes(4, "big")

    return crc


def _digest_part(data: memoryview, names: Iterable[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name in names:
        if name == "crc32c":
            out[name] = _crc32c()(data)
        else:
            out[name] = hashlib.new(name, data).digest()
    return out


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
        same thread call, from the same memory: one pass over the bytes.
        """
        if not part and len(data) < THREAD_THRESHOLD:  # the common small update
            self._hash.update(data)
            self.size += len(data)
            return {}
        names = tuple(part)
        view = memoryview(data)
        if len(view) < THREAD_THRESHOLD:
            self.update_nowait(view)
            return _digest_part(view, names)

        def work() -> dict[str, bytes]:
            self._hash.update(view)
            return _digest_part(view, names)

        result = await anyio.to_thread.run_sync(work)
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
