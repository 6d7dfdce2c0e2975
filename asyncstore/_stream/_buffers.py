"""A pool of part buffers, recycled within one transfer.

Allocating a fresh 8 MiB ``bytearray`` per part looks harmless, but glibc's
malloc raises its mmap threshold after the first large free, so later parts
come from the heap and freed ones stay resident: peak RSS grows far past the
window's ``chunk_size * (max_concurrency + 2)``. Reusing the few buffers a
window needs keeps RSS at the formula. Only buffers the pool allocated are
ever recycled (never a caller's own buffer).
"""

from __future__ import annotations

import anyio.to_thread

__all__ = ["BufferPool"]


class BufferPool:
    """Buffers of one size: ``take`` one, ``give`` it back when its bytes are no longer needed.

    ``take`` may run in a worker thread and ``give`` on the event loop: list
    append/pop are atomic under the GIL.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []
        self._owned: set[int] = set()

    def take(self) -> bytearray:
        """A buffer of ``size`` bytes (contents undefined)."""
        try:
            return self._free.pop()
        except IndexError:
            buf = bytearray(self.size)
            self._owned.add(id(buf))
            return buf

    async def take_async(self) -> bytearray:
        """Like `take`, but a new buffer is allocated in a worker thread.

        Zero-filling a fresh 16 MiB buffer takes 10-15 ms: too long for the event loop.
        """
        if self._free:
            return self._free.pop()
        return await anyio.to_thread.run_sync(self.take)

    async def reserve(self) -> None:
        """Make sure one free buffer is ready, allocating it in a worker thread if needed."""
        if not self._free:
            self._free.append(await anyio.to_thread.run_sync(self.take))

    def give(self, view: memoryview | bytearray) -> None:
        """Return the buffer behind ``view`` to the pool, if the pool allocated it."""
        buf = view.obj if isinstance(view, memoryview) else view
        if isinstance(buf, bytearray) and id(buf) in self._owned:
            self._free.append(buf)

    @property
    def allocated(self) -> int:
        """How many buffers the pool has allocated in all."""
        return len(self._owned)
