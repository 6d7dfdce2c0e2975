"""A pool of part buffers, recycled within one transfer, aligned to a page.

Allocating a fresh 8 MiB ``bytearray`` per part looks harmless, but glibc's
malloc raises its mmap threshold after the first large free, so later parts
come from the heap and freed ones stay resident: peak RSS grows far past the
window's ``chunk_size * (max_concurrency + 2)``. Reusing the few buffers a
window needs keeps RSS at the formula. Only buffers the pool allocated are
ever recycled (never a caller's own buffer).

Each buffer starts on a page boundary, and is a private anonymous ``mmap``
where the platform has one:

- A large ``bytearray`` starts 16 bytes past a page (malloc's header), and the
  kernel's copies out of such a buffer (``pwrite`` into the page cache,
  ``send`` into a socket) cost more than out of an aligned one: reading and
  writing 1 GiB through an 8 MiB buffer took 0.58 CPU s at that offset and
  0.40 aligned (medians of 10, on this machine's AMD EPYC).
- ``bytearray(n)`` zero-fills its ``n`` bytes while it holds the GIL: up to
  12 ms for 8 MiB, a stall of the event loop even from a worker thread. A
  fresh mapping costs microseconds; its pages are zeroed by the kernel as the
  first read fills them, in a system call that has released the GIL.

Elsewhere a buffer is a page-aligned ``memoryview`` into a slightly larger
``bytearray``.
"""

from __future__ import annotations

import ctypes
import mmap

import anyio.to_thread

__all__ = ["ALIGNMENT", "BufferPool", "aligned_buffer", "is_aligned"]

#: Where every pooled buffer starts: a multiple of this address (a page).
ALIGNMENT = 4096


def aligned_buffer(size: int) -> memoryview:
    """A writable ``memoryview`` of ``size`` bytes starting at an `ALIGNMENT` boundary."""
    if _MAP_PRIVATE is not None and size > 0:
        return memoryview(mmap.mmap(-1, size, flags=_MAP_PRIVATE))
    raw = bytearray(size + ALIGNMENT - 1)
    address = ctypes.addressof(ctypes.c_char.from_buffer(raw))
    start = -address % ALIGNMENT
    return memoryview(raw)[start : start + size]


_MAP_PRIVATE: int | None = getattr(mmap, "MAP_PRIVATE", None)


def is_aligned(view: memoryview) -> bool:
    """Whether ``view`` is writable memory that starts at an `ALIGNMENT` boundary.

    Read-only memory (a ``bytes`` source) says False: its address is not needed
    where it cannot be written, and ctypes only reads addresses of writable buffers.
    """
    if view.readonly or not view.c_contiguous or view.nbytes == 0:
        return False
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGNMENT == 0


class BufferPool:
    """Buffers of one size: ``take`` one, ``give`` it back when its bytes are no longer needed.

    ``take`` may run in a worker thread and ``give`` on the event loop: list
    append/pop are atomic under the GIL.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[memoryview] = []
        self._owned: dict[int, memoryview] = {}  # id of the memory -> its aligned view

    def take(self) -> memoryview:
        """A buffer of ``size`` bytes (contents undefined)."""
        try:
            return self._free.pop()
        except IndexError:
            view = aligned_buffer(self.size)
            self._owned[id(view.obj)] = view
            return view

    async def take_async(self) -> memoryview:
        """Like `take`, but a new ``bytearray`` buffer is allocated in a worker thread.

        Zero-filling a fresh 16 MiB ``bytearray`` takes 10-15 ms: too long for the event
        loop (a fresh mapping, where there is ``mmap``, takes microseconds).
        """
        if self._free or _MAP_PRIVATE is not None:
            return self.take()
        return await anyio.to_thread.run_sync(self.take)

    async def reserve(self) -> None:
        """Make sure `take` will not zero-fill a ``bytearray`` on the event loop.

        Without ``mmap``, one free buffer is made ready (in a worker thread); with it,
        nothing is needed, and nothing is allocated before it is taken.
        """
        if not self._free and _MAP_PRIVATE is None:
            self._free.append(await anyio.to_thread.run_sync(self.take))

    def give(self, view: memoryview | bytearray) -> None:
        """Return the buffer behind ``view`` to the pool, if the pool allocated it."""
        buf = view.obj if isinstance(view, memoryview) else view
        whole = self._owned.get(id(buf))
        if whole is not None and whole.obj is buf:
            self._free.append(whole)

    async def aclose(self) -> None:
        """Drop the pool's buffers, unmapping them in a worker thread.

        Freeing a mapping whose pages were touched returns them to the kernel:
        5 ms for eight 8 MiB buffers here, a stall of the event loop if it ran
        there (at the end of every large transfer). A buffer still referenced
        elsewhere is freed when that reference goes.
        """
        owned, self._owned, self._free = self._owned, {}, []
        if owned:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(owned.clear)

    @property
    def allocated(self) -> int:
        """How many buffers the pool has allocated in all."""
        return len(self._owned)
