"""One Store per event loop (and per bucket), made lazily, dropped after a fork.

fsspec and zarr drive their async code from their own IO thread and loop for the
synchronous API, and from the caller's loop when ``asynchronous=True``; a
Store's HTTP clients belong to the loop that first used them. So the
adapters (asyncstore.fsspec, asyncstore.zarr) keep a Store per (loop, root)
and make it on first use there. Only the adapters import this module.

After ``os.fork()`` the child has the parent's Store objects but not the
threads and loops that served them: their connections must not be touched
(closing them could disturb the parent's), so they are set aside, never
used and never closed, and new Stores are made on the child's loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable

import anyio.to_thread

from . import Store
from ._backend import current_loop

__all__ = ["LoopStores", "current_loop"]

# Stores inherited from a parent process: kept referenced so that garbage
# collection never runs their clients' finalizers in the child.
_inherited: list[Store] = []


class LoopStores:
    """Stores keyed by (event loop, root), made by ``opener(root)`` on first use."""

    def __init__(self, opener: Callable[[str], Store]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._stores: dict[tuple[object, str], Store] = {}

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():
            _inherited.extend(self._stores.values())
            self._stores = {}
            self._pid = os.getpid()

    async def get(self, root: str) -> Store:
        """The Store for ``root`` on the running loop, made now if there is none yet.

        It is made in a worker thread: opening a URL may scan entry points and
        import a backend's SDK the first time.
        """
        loop = current_loop()
        with self._lock:
            self._forget_after_fork()
            store = self._stores.get((loop, root))
        if store is not None:
            return store
        made = await anyio.to_thread.run_sync(self._opener, root)
        with self._lock:
            self._drop_closed_loops()
            store = self._stores.setdefault((loop, root), made)
        if store is not made:  # another task of this loop made one meanwhile
            await made.aclose()
        return store

    def _drop_closed_loops(self) -> None:
        for key in [k for k in self._stores if _is_closed(k[0])]:
            # Its loop is gone, so its clients can no longer be closed; keep it referenced
            # for the same reason as the inherited ones.
            _inherited.append(self._stores.pop(key))

    def take_for(self, loop: object) -> list[Store]:
        """Remove and return the Stores made on ``loop``."""
        with self._lock:
            self._forget_after_fork()
            keys = [k for k in self._stores if k[0] is loop]
            return [self._stores.pop(k) for k in keys]

    def take_all(self) -> dict[object, list[Store]]:
        """Remove and return every Store, grouped by loop."""
        with self._lock:
            self._forget_after_fork()
            grouped: dict[object, list[Store]] = {}
            for (loop, _), store in self._stores.items():
                grouped.setdefault(loop, []).append(store)
            self._stores = {}
            return grouped

    def reset_after_fork(self) -> None:
        """Set the parent's Stores aside if this is a forked child."""
        with self._lock:
            self._forget_after_fork()


def _is_closed(loop: object) -> bool:
    return isinstance(loop, asyncio.AbstractEventLoop) and loop.is_closed()


def close_on_loops(grouped: dict[object, list[Store]], *, timeout: float = 5.0) -> None:
    """Close Stores from outside their loops: those on a running asyncio loop in another thread.

    Stores on loops that are closed, not running, or trio's, are left as they are
    (their clients are released with the loop); this runs from finalizers and
    ``close()``, where nothing better is possible.
    """
    for loop, stores in grouped.items():
        if not isinstance(loop, asyncio.AbstractEventLoop):
            continue
        if loop.is_closed() or not loop.is_running():
            _inherited.extend(stores)
            continue
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # cannot wait for the loop we run on: use `await fs.aclose()`
            _inherited.extend(stores)
            continue

        async def close_all(stores: list[Store] = stores) -> None:
            for store in stores:
                with contextlib.suppress(Exception):  # closing is best effort here
                    await store.aclose()

        future = asyncio.run_coroutine_threadsafe(close_all(), loop)
        try:
            future.result(timeout)
        except Exception:
            future.cancel()
