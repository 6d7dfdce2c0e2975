"""Concurrency helpers: a task group that raises the error users expect, and slots.

`task_group`: a task group that raises the error users expect, not an ExceptionGroup.

anyio wraps every failure of a child task in an ExceptionGroup. Inside the
engine the children are parts and ranges of one transfer, and the error that
matters is the first real one (a NotFoundError, a TransportError after its
retries, ...): that is what ``except NotFoundError`` in user code must see.
The other leaves, if any, are kept as notes on it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Slots", "task_group"]


class Slots:
    """At most ``total_tokens`` holders at once, served in FIFO order: the request path's limit.

    ``async with slots:`` (or `acquire` / `release`) counts a slot; the borrower form
    (``acquire_on_behalf_of``, ``release_on_behalf_of``) also checks that a borrower
    holds one slot at most and releases only its own, as ``anyio.CapacityLimiter``
    does. Built for a path taken once per request, where anyio's limiter costs more
    than the request's own work:

    - a free slot is taken with no await at all: anyio's yields to the loop twice (the
      caller reaches a checkpoint soon after anyway: it is about to do I/O);
    - a wait is one bare future (asyncio) or ``trio.Event``, with no exception raised
      on the way and no object per waiter besides it: under asyncio, anyio's wait path
      costs about 15 µs per call, a cost every call of a gathered batch pays in one
      turn of the event loop.

    A holder cancelled while waiting leaves the queue; one cancelled just as its slot
    was handed over passes the slot on. Use one instance in one event loop.
    """

    __slots__ = ("_borrowers", "_taken", "_trio", "_waiters", "total_tokens")

    def __init__(self, total_tokens: int) -> None:
        if not isinstance(total_tokens, int) or total_tokens < 1:
            raise ValueError(f"total_tokens must be an int >= 1, not {total_tokens!r}")
        self.total_tokens = total_tokens
        self._taken = 0
        self._borrowers: set[object] = set()
        self._waiters: collections.deque[Any] = collections.deque()
        self._trio: bool | None = None

    @property
    def borrowed_tokens(self) -> int:
        """The slots taken now."""
        return self._taken

    def _new_waiter(self) -> Any:
        if self._trio is None:  # asyncio has a running loop; trio, the other loop, has none
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self._trio = True
            else:
                self._trio = False
        if self._trio:
            import trio

            return trio.Event()
        return asyncio.get_running_loop().create_future()

    def _woken(self, waiter: Any) -> bool:
        if self._trio:
            return bool(waiter.is_set())
        return bool(waiter.done() and not waiter.cancelled())

    async def acquire(self) -> None:
        """Take a slot, waiting in line if none is free."""
        if not self._waiters and self._taken < self.total_tokens:
            self._taken += 1
            return
        waiter = self._new_waiter()
        self._waiters.append(waiter)
        try:
            await (waiter.wait() if self._trio else waiter)
        except BaseException:
            if self._woken(waiter):  # handed a slot as it was cancelled: pass it on
                self.release()
            elif waiter in self._waiters:  # a release may have passed over it already
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot to the first holder waiting, or free it.

        Raises:
            RuntimeError: no slot is taken.
        """
        if self._taken <= 0:
            raise RuntimeError("no slot is taken: released more often than acquired")
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if self._trio:
                waiter.set()
            elif waiter.done():  # cancelled, and not yet out of the queue
                continue
            else:
                waiter.set_result(None)
            return  # the slot passes to the waiter: still taken
        self._taken -= 1

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a slot for ``borrower``, waiting in line if none is free.

        Raises:
            RuntimeError: ``borrower`` holds a slot already.
        """
        if borrower in self._borrowers:
            raise RuntimeError("this borrower holds one of these slots already")
        await self.acquire()
        self._borrowers.add(borrower)

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give ``borrower``'s slot to the first holder waiting, or free it.

        Raises:
            RuntimeError: ``borrower`` holds no slot.
        """
        try:
            self._borrowers.remove(borrower)
        except KeyError:
            raise RuntimeError("this borrower holds none of these slots") from None
        self.release()

    def __aenter__(self) -> Coroutine[Any, Any, None]:
        return self.acquire()  # no coroutine of its own per call

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[anyio.abc.TaskGroup]:
    """``anyio.create_task_group()`` that re-raises the first non-cancellation error itself."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        cancelled = anyio.get_cancelled_exc_class()
        leaves = _leaves(group)
        real = [exc for exc in leaves if not isinstance(exc, cancelled)]
        if not real:
            raise
        first = real[0]
        add_note = getattr(first, "add_note", None)  # Python >= 3.11
        for other in real[1:]:
            if add_note is not None:
                add_note(f"also failed: {type(other).__name__}: {other}")
        raise first from first.__cause__
