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

The pages of a fresh mapping are not free either: the kernel provides and
zeroes each one at its first touch, 0.4-0.8 CPU s/GiB on this machine (a VM),
as much as the sha256 of the same bytes. So the buffers a transfer gave back
are kept for the next transfer of the same part size (`set_buffer_cache`, 64
MiB by default) rather than unmapped: ten downloads of a 24 MiB object to a
file faulted in every page of their buffers every time (256 faults per MiB).
"""

from __future__ import annotations

import ctypes
import mmap
import threading

import anyio.to_thread

__all__ = ["ALIGNMENT", "BufferPool", "aligned_buffer", "is_aligned", "set_buffer_cache"]

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


class _Spares:
    """Free buffers kept between transfers, up to ``limit`` bytes; oldest dropped first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: list[memoryview] = []
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> memoryview | None:
        with self._lock:
            for index in range(len(self._kept) - 1, -1, -1):
                if len(self._kept[index]) == size:
                    self._bytes -= size
                    return self._kept.pop(index)
        return None

    def keep(self, views: list[memoryview]) -> list[memoryview]:
        """Keep ``views`` (buffers no one else refers to) within the limit; return
        those dropped, for the caller to free where it suits (off the event loop)."""
        with self._lock:
            self._kept += views
            self._bytes += sum(len(view) for view in views)
            return self._trim()

    def _trim(self) -> list[memoryview]:
        dropped = []
        while self._bytes > self.limit:
            dropped.append(self._kept.pop(0))
            self._bytes -= len(dropped[-1])
        return dropped

    def set_limit(self, limit: int) -> list[memoryview]:
        with self._lock:
            self.limit = limit
            return self._trim()


_SPARES = _Spares(64 * 2**20)


def set_buffer_cache(limit: int) -> None:
    """Set how many bytes of free part and range buffers are kept between transfers.

    A transfer's buffers are kept for the next transfer of the same part size
    (default: up to 64 MiB in all), so that it does not pay the kernel again
    for fresh pages (0.4-0.8 CPU s/GiB here); 0 unmaps every buffer once its
    transfer ends. Lowering the limit frees what is over it at once.

    Args:
        limit: Bytes, at least 0.

    Raises:
        ValueError: a negative limit.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"the buffer cache limit must be an int of at least 0, not {limit!r}")
    _SPARES.set_limit(limit).clear()


def _drop(owned: dict[int, memoryview], dropped: list[memoryview]) -> None:
    """Let go of buffers (in a worker thread): those no one else holds are unmapped."""
    owned.clear()
    dropped.clear()


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
            view = _SPARES.take(self.size) or aligned_buffer(self.size)
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
        """Keep the free buffers for later transfers (`set_buffer_cache`); drop the rest.

        Freeing a mapping whose pages were touched returns them to the kernel:
        5 ms for eight 8 MiB buffers here, a stall of the event loop if it ran
        there (at the end of every large transfer), so buffers over the cache's
        limit are unmapped in a worker thread. A buffer not given back (still
        referenced elsewhere) is never kept, and is freed when that reference goes.
        """
        owned, free, self._owned, self._free = self._owned, self._free, {}, []
        dropped = _SPARES.keep(free)
        del free
        if owned:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_drop, owned, dropped)

    @property
    def allocated(self) -> int:
        """How many buffers the pool has allocated in all."""
        return len(self._owned)
