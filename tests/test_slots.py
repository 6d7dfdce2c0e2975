"""`Slots`: the request path's bound on calls in flight (FIFO, borrower-checked, cancellable)."""

from __future__ import annotations

import anyio
import pytest

from asyncstore._stream._tasks import Slots

pytestmark = pytest.mark.anyio


async def test_a_free_slot_is_taken_and_given_back() -> None:
    slots = Slots(2)
    a, b = object(), object()
    await slots.acquire_on_behalf_of(a)
    await slots.acquire_on_behalf_of(b)
    assert slots.borrowed_tokens == 2
    slots.release_on_behalf_of(a)
    slots.release_on_behalf_of(b)
    assert slots.borrowed_tokens == 0


async def test_a_borrower_holds_one_slot_and_releases_only_its_own() -> None:
    slots = Slots(2)
    a = object()
    await slots.acquire_on_behalf_of(a)
    with pytest.raises(RuntimeError, match="holds one of these slots already"):
        await slots.acquire_on_behalf_of(a)
    with pytest.raises(RuntimeError, match="holds none of these slots"):
        slots.release_on_behalf_of(object())
    slots.release_on_behalf_of(a)
    with pytest.raises(RuntimeError, match="holds none"):
        slots.release_on_behalf_of(a)


@pytest.mark.parametrize("total", [0, -1, 1.5, None])
def test_the_total_must_be_a_positive_int(total: object) -> None:
    with pytest.raises(ValueError, match="total_tokens"):
        Slots(total)  # type: ignore[arg-type]


async def test_waiters_are_served_in_the_order_they_came() -> None:
    slots = Slots(1)
    first = object()
    await slots.acquire_on_behalf_of(first)
    served: list[int] = []

    async def wait(index: int) -> None:
        await slots.acquire_on_behalf_of(index)
        served.append(index)
        slots.release_on_behalf_of(index)

    async with anyio.create_task_group() as tg:
        for index in range(5):
            tg.start_soon(wait, index)
            await wait_until(lambda index=index: len(slots._waiters) == index + 1)
        slots.release_on_behalf_of(first)
    assert served == [0, 1, 2, 3, 4]
    assert slots.borrowed_tokens == 0


async def test_a_newcomer_does_not_jump_the_queue() -> None:
    slots = Slots(1)
    first = object()
    await slots.acquire_on_behalf_of(first)
    order: list[str] = []

    async def take(name: str) -> None:
        await slots.acquire_on_behalf_of(name)
        order.append(name)
        slots.release_on_behalf_of(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "waiting")
        await wait_until(lambda: len(slots._waiters) == 1)
        slots.release_on_behalf_of(first)  # handed to "waiting", which has not run yet
        assert slots.borrowed_tokens == 1
        await take("newcomer")
    assert order == ["waiting", "newcomer"]


async def test_a_waiter_cancelled_leaves_the_queue() -> None:
    slots = Slots(1)
    holder = object()
    await slots.acquire_on_behalf_of(holder)
    with anyio.CancelScope() as scope:
        scope.deadline = anyio.current_time()  # already past: cancelled at the wait
        await slots.acquire_on_behalf_of("cancelled")
    assert scope.cancelled_caught
    assert not slots._waiters
    slots.release_on_behalf_of(holder)
    assert slots.borrowed_tokens == 0
    await slots.acquire_on_behalf_of("next")  # the slot is free again
    assert slots.borrowed_tokens == 1


async def test_a_waiter_cancelled_after_it_is_handed_the_slot_loses_nothing() -> None:
    """Cancelled once its slot is handed over: it holds it until its ``finally`` gives it back."""
    slots = Slots(1)
    holder = object()
    await slots.acquire_on_behalf_of(holder)
    got: list[str] = []

    async def take(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            await slots.acquire_on_behalf_of(name)
            try:
                got.append(name)
                if scope is not None:
                    await anyio.sleep_forever()
            finally:
                slots.release_on_behalf_of(name)

    async with anyio.create_task_group() as tg:
        doomed = anyio.CancelScope()
        tg.start_soon(take, "first", doomed)
        await wait_until(lambda: len(slots._waiters) == 1)
        tg.start_soon(take, "second")
        await wait_until(lambda: len(slots._waiters) == 2)
        slots.release_on_behalf_of(holder)
        doomed.cancel()
    assert got == ["first", "second"]
    assert slots.borrowed_tokens == 0
    assert not slots._waiters


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    """asyncio's own ``Task.cancel()`` can land between the hand-over and the waiter's turn."""
    import asyncio

    slots = Slots(1)
    await slots.acquire_on_behalf_of("holder")
    first = asyncio.ensure_future(slots.acquire_on_behalf_of("first"))
    await wait_until(lambda: len(slots._waiters) == 1)
    second = asyncio.ensure_future(slots.acquire_on_behalf_of("second"))
    await wait_until(lambda: len(slots._waiters) == 2)
    slots.release_on_behalf_of("holder")  # handed to "first", which has not run yet
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await wait_until(second.done)  # the slot was passed on, not kept by "first" nor lost
    assert slots._borrowers == {"second"}
    assert not slots._waiters


async def test_the_async_context_manager_takes_a_slot_for_the_task() -> None:
    slots = Slots(1)
    async with slots:
        assert slots.borrowed_tokens == 1
    assert slots.borrowed_tokens == 0


async def wait_until(condition: object) -> None:
    """Let other tasks run until ``condition()`` holds (bounded in steps, not in time)."""
    for _ in range(1000):
        if condition():  # type: ignore[operator]
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("condition never held")


async def test_a_release_without_a_slot_taken_is_refused() -> None:
    slots = Slots(1)
    with pytest.raises(RuntimeError, match="released more often than acquired"):
        slots.release()
    await slots.acquire()
    slots.release()
    assert slots.borrowed_tokens == 0


async def test_counted_and_borrowed_slots_share_one_bound() -> None:
    slots = Slots(2)
    async with slots:
        await slots.acquire_on_behalf_of("b")
        assert slots.borrowed_tokens == 2
        with anyio.move_on_after(0) as waited:  # no slot free: the third waits
            await slots.acquire()
        assert waited.cancelled_caught
        assert not slots._waiters  # and leaves the queue when cancelled
        slots.release_on_behalf_of("b")
    assert slots.borrowed_tokens == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_waiter_cancelled_and_skipped_by_a_release_leaves_quietly() -> None:
    """Cancelled, then passed over by a release before it runs: CancelledError, nothing else."""
    import asyncio

    slots = Slots(1)
    await slots.acquire_on_behalf_of("holder")
    waiter = asyncio.ensure_future(slots.acquire())
    await wait_until(lambda: len(slots._waiters) == 1)
    waiter.cancel()  # its future is cancelled at once; the task has not run yet
    slots.release_on_behalf_of("holder")  # skips the cancelled future, frees the slot
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.borrowed_tokens == 0
    assert not slots._waiters
