"""Letting a write that has left finish, even when its caller is cancelled.

A request whose body has been sent in full will be carried out by the service
whether or not the client waits for the answer. If a cancelled upload did not
wait, its abort could run before such a block lands, and the block would
outlive the abort. `settled` runs a write in a shielded child task: when the
caller is cancelled, the write is dropped at once if its body is known not to
be out yet, and otherwise given up to ``grace`` seconds to finish; only then
does the cancellation go on. Either way the caller's cancellation is what it
sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ..._stream._tasks import task_group

__all__ = ["SETTLE_TIMEOUT", "settled"]

T = TypeVar("T")

#: Seconds a write may take to finish after its caller was cancelled.
SETTLE_TIMEOUT = 10.0


async def settled(
    work: Callable[[], Awaitable[T]],
    *,
    sent: Callable[[], bool] | None = None,
    abandon: Callable[[T], Awaitable[None]] | None = None,
    grace: float = SETTLE_TIMEOUT,
) -> T:
    """Await ``work()``; if cancelled meanwhile, let it finish first (see the module doc).

    Args:
        work: The write.
        sent: Whether the write's body is all out (None: unknown, so wait for it).
        abandon: Cleans up a result that arrives after the caller was cancelled
            (closes a response, ...).
        grace: The most seconds to wait for the write after a cancellation.
    """
    outcome: list[T | Exception] = []
    scope = anyio.CancelScope(shield=True)
    abandoned = False

    async def run(host: anyio.CancelScope) -> None:
        with scope:
            try:
                result = await work()
            except Exception as exc:  # handed to the caller below
                outcome.append(exc)
            else:
                if abandoned:
                    if abandon is not None:
                        await abandon(result)
                else:
                    outcome.append(result)
        host.cancel()

    async with task_group() as tg:
        tg.start_soon(run, tg.cancel_scope)
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            if not tg.cancel_scope.cancel_called:  # cancelled from outside, not by run()
                abandoned = True
                if sent is not None and not sent():
                    scope.cancel()
                else:
                    scope.deadline = anyio.current_time() + grace
            raise
    if not outcome:  # pragma: no cover - only if the write itself was cancelled
        raise RuntimeError("the write was cancelled")
    result = outcome[0]
    if isinstance(result, Exception):
        raise result
    return result
