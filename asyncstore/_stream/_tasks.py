"""Concurrency helpers: a task group that raises the error users expect, and slots.

`task_group`: a task group that raises the error users expect, not an ExceptionGroup.

anyio wraps every failure of a child task in an ExceptionGroup. Inside the
engine the children are parts and ranges of one transfer, and the error that
matters is the first real one (a NotFoundError, a TransportError after its
retries, ...): that is what ``except NotFoundError`` in user code must see.
The other leaves, if any, are kept as notes on it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

import anyio
import anyio.abc

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["acquire", "task_group"]


async def acquire(limiter: anyio.CapacityLimiter, borrower: object) -> None:
    """Take one of ``limiter``'s tokens for ``borrower``, waiting only if none is free.

    ``CapacityLimiter.acquire_on_behalf_of`` yields to the event loop twice even
    when a token is free; on a path taken once per request, those round trips
    cost more than the request's own work. The caller reaches a checkpoint soon
    after anyway (it is about to do I/O).
    """
    try:
        limiter.acquire_on_behalf_of_nowait(borrower)
    except anyio.WouldBlock:
        await limiter.acquire_on_behalf_of(borrower)


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
