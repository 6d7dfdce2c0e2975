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
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Slots", "task_group"]


class Slots:
    """At most ``total_tokens`` borrowers at once, served in FIFO order: the request path's limit.

    The subset of ``anyio.CapacityLimiter`` that asyncstore uses (``acquire_on_behalf_of``,
    ``release_on_behalf_of``, ``borrowed_tokens``, ``total_tokens``), built for a path taken
    once per request, where anyio's costs more than the request's own work:

    - a free slot is taken with no await at all: anyio's yields to the loop twice (the
      caller reaches a checkpoint soon after anyway: it is about to do I/O);
    - a wait is one bare future (asyncio) or ``trio.Event``, with no exception raised
      on the way: under asyncio, anyio's wait path costs about 15 µs per call, a cost
      every call of a gathered batch pays in one turn of the event loop.

    A borrower cancelled while waiting leaves the queue; one cancelled just as its slot
    was handed over passes the slot on. Use one instance in one event loop.
    """

    __slots__ = ("_borrowers", "_trio", "_waiters", "total_tokens")

    def __init__(self, total_tokens: int) -> None:
        if not isinstance(total_tokens, int) or total_tokens < 1:
            raise ValueError(f"total_tokens must be an int >= 1, not {total_tokens!r}")
        self.total_tokens = total_tokens
        self._borrowers: set[object] = set()
        self._waiters: collections.deque[tuple[object, Any]] = collections.deque()
        self._trio: bool | None = None

    @property
    def borrowed_tokens(self) -> int:
        """The slots taken now."""
        return len(self._borrowers)

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

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a slot for ``borrower``, waiting in line if none is free.

        Raises:
            RuntimeError: ``borrower`` holds a slot already.
        """
        if borrower in self._borrowers:
            raise RuntimeError("this borrower holds one of these slots already")
        if not self._waiters and len(self._borrowers) < self.total_tokens:
            self._borrowers.add(borrower)
            return
        waiter = self._new_waiter()
        entry = (borrower, waiter)
        self._waiters.append(entry)
        try:
            await (waiter.wait() if self._trio else waiter)
        except BaseException:
            if self._woken(waiter):  # handed a slot as it was cancelled: pass it on
                self.release_on_behalf_of(borrower)
            else:
                self._waiters.remove(entry)
            raise

    async def __aenter__(self) -> None:
        await self.acquire_on_behalf_of(_current_task())

    async def __aexit__(self, *exc_info: object) -> None:
        self.release_on_behalf_of(_current_task())

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give ``borrower``'s slot to the first borrower waiting, or free it.

        Raises:
            RuntimeError: ``borrower`` holds no slot.
        """
        try:
            self._borrowers.remove(borrower)
        except KeyError:
            raise RuntimeError("this borrower holds none of these slots") from None
        waiters = self._waiters
        while waiters:
            next_borrower, waiter = waiters.popleft()
            if self._trio:
                waiter.set()
            elif waiter.done():  # cancelled, and not yet out of the queue
                continue
            else:
                waiter.set_result(None)
            self._borrowers.add(next_borrower)
            return


def _current_task() -> object:
    return anyio.get_current_task().id


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
