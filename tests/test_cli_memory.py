"""The command line's bound on part buffers across all the files in flight (``--memory``)."""

from __future__ import annotations

import functools
import os
import pathlib
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from asyncstore import MemoryBackend, _registry
from asyncstore._backend import CompletedPart, WriteAttributes, WriteResult
from asyncstore._cli import main
from asyncstore._cli._transfer import DEFAULT_MEMORY, MemoryBudget, _parts_plan

KiB = 1024
MiB = 1024 * KiB

# -- the budget --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reservations_are_granted_first_come_first_served() -> None:
    budget = MemoryBudget(10)
    order: list[str] = []
    release_a = anyio.Event()

    async def hold(name: str, amount: int, until: anyio.Event | None = None) -> None:
        async with budget.reserve(amount):
            order.append(name)
            if until is not None:
                await until.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "a", 6, release_a)
            await wait_until(lambda: order == ["a"])
            tg.start_soon(hold, "b", 6)
            await wait_until(lambda: len(budget._waiting) == 1)
            tg.start_soon(hold, "c", 2)  # it would fit, but b came first
            await wait_until(lambda: len(budget._waiting) == 2)
            assert order == ["a"]
            release_a.set()
    # Both granted on a's release (in which order they then run is the scheduler's).
    assert order[0] == "a"
    assert sorted(order[1:]) == ["b", "c"]
    assert budget.free == 10
    assert budget.peak == 8  # b and c together


@pytest.mark.anyio
async def test_a_transfer_that_holds_no_parts_never_waits() -> None:
    budget = MemoryBudget(10)
    got: list[str] = []
    release = anyio.Event()

    async def take(name: str, amount: int) -> None:
        async with budget.reserve(amount):
            got.append(name)
            if name == "a":
                await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take, "a", 8)
            await wait_until(lambda: got == ["a"])
            tg.start_soon(take, "b", 5)
            await wait_until(lambda: len(budget._waiting) == 1)
            tg.start_soon(take, "server-side copy", 0)
            await wait_until(lambda: "server-side copy" in got)
            release.set()
    assert sorted(got) == ["a", "b", "server-side copy"]


@pytest.mark.anyio
async def test_a_reservation_larger_than_the_budget_takes_all_of_it() -> None:
    budget = MemoryBudget(10)
    async with budget.reserve(25):
        assert budget.free == 0
    assert budget.free == 10


@pytest.mark.anyio
async def test_a_cancelled_waiter_lets_the_ones_behind_it_in() -> None:
    budget = MemoryBudget(10)
    got: list[str] = []
    done = anyio.Event()
    scopes: list[anyio.CancelScope] = []

    async def take(name: str, amount: int, *, cancellable: bool = False) -> None:
        with anyio.CancelScope() as scope:
            if cancellable:
                scopes.append(scope)
            async with budget.reserve(amount):
                got.append(name)
                if name == "a":
                    await done.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take, "a", 8)
            await wait_until(lambda: got == ["a"])
            tg.start_soon(functools.partial(take, "b", 5, cancellable=True))
            await wait_until(lambda: len(budget._waiting) == 1)
            tg.start_soon(take, "c", 2)  # fits, but waits behind b
            await wait_until(lambda: len(budget._waiting) == 2)
            assert got == ["a"]
            scopes[0].cancel()
            await wait_until(lambda: got == ["a", "c"])
            assert not budget._waiting
            done.set()
    assert got == ["a", "c"]
    assert budget.free == 10


async def wait_until(condition: Any) -> None:
    while not condition():
        await anyio.lowlevel.checkpoint()


# -- planning one transfer ---------------------------------------------------------------------


def test_a_file_within_the_budget_keeps_its_parts_in_flight() -> None:
    assert _parts_plan(100 * MiB, 8 * MiB, 8, DEFAULT_MEMORY) == (72 * MiB, 8)


def test_a_file_with_few_parts_reserves_only_those() -> None:
    assert _parts_plan(20 * MiB, 8 * MiB, 8, DEFAULT_MEMORY) == (24 * MiB, 8)


def test_a_small_file_reserves_its_size() -> None:
    assert _parts_plan(5 * KiB, 8 * MiB, 8, DEFAULT_MEMORY) == (5 * KiB, 8)


def test_a_file_over_the_budget_gets_fewer_parts_in_flight() -> None:
    assert _parts_plan(1024 * MiB, 8 * MiB, 8, 32 * MiB) == (32 * MiB, 3)


def test_a_copy_through_this_process_reserves_both_sides() -> None:
    assert _parts_plan(100 * MiB, 8 * MiB, 8, DEFAULT_MEMORY, streams=2) == (144 * MiB, 8)
    assert _parts_plan(100 * MiB, 8 * MiB, 8, 64 * MiB, streams=2) == (64 * MiB, 3)


def test_a_part_larger_than_the_budget_still_sends_one_at_a_time() -> None:
    assert _parts_plan(64 * MiB, 16 * MiB, 8, 8 * MiB) == (32 * MiB, 1)


# -- the command line --------------------------------------------------------------------------


class _CountingBackend(MemoryBackend):
    """A memory store that records the most bytes of parts it was sent at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.peak = 0

    async def _hold(self, size: int) -> None:
        self.in_flight += size
        self.peak = max(self.peak, self.in_flight)
        try:
            for _ in range(5):  # let the other transfers' parts start meanwhile
                await anyio.lowlevel.checkpoint()
        finally:
            self.in_flight -= size

    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        await self._hold(len(data))
        return await super().put(key, data, attrs, checksums)

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        await self._hold(len(data))
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> tuple[str, _CountingBackend]:
    backend = _CountingBackend()
    scheme = "counted" + uuid.uuid4().hex[:8]
    monkeypatch.setitem(_registry._registered, scheme, lambda url, **options: backend)
    return f"{scheme}://x", backend


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(6):
        (root / f"f{i}.bin").write_bytes(os.urandom(MiB + i))
    return root


def test_parts_of_all_files_stay_within_the_memory_bound(
    counted: tuple[str, _CountingBackend], tree: pathlib.Path
) -> None:
    url, backend = counted
    argv = ["-q", "sync", str(tree), f"{url}/t", "--part-size", "64K", "--memory", "256K"]
    assert main(argv) == 0
    assert 0 < backend.peak <= 256 * KiB
    assert len(backend._objects) == 6
    for i in range(6):
        assert backend._objects[f"t/f{i}.bin"].info.size == MiB + i


def test_without_a_tight_bound_files_go_in_parallel(
    counted: tuple[str, _CountingBackend], tree: pathlib.Path
) -> None:
    """The control of the test above: the same sync with the default bound sends more at once."""
    url, backend = counted
    assert main(["-q", "sync", str(tree), f"{url}/t", "--part-size", "64K"]) == 0
    assert backend.peak > 256 * KiB


def test_a_bad_memory_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-s", "memory://m", "sync", ".", ":x", "--memory", "lots"]) == 2
    assert "--memory" in capsys.readouterr().err


def test_a_file_sent_in_one_request_reserves_its_size(
    counted: tuple[str, _CountingBackend],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files above the part size (8 MiB) go in one request each in a sync of several; each
    reserves its one buffer (its checksums are computed from it with no copy), and the
    budget holds."""
    root = tmp_path / "big"
    root.mkdir()
    sizes = [9 * MiB + i for i in range(3)]
    for i, size in enumerate(sizes):
        (root / f"f{i}.bin").write_bytes(os.urandom(size))
    (root / "small.txt").write_bytes(b"small")
    reserved: list[int] = []
    reserve = MemoryBudget.reserve

    def spy(self: MemoryBudget, amount: int) -> Any:
        reserved.append(amount)
        return reserve(self, amount)

    monkeypatch.setattr(MemoryBudget, "reserve", spy)
    url, backend = counted
    assert main(["-q", "sync", str(root), f"{url}/t", "--memory", "40M"]) == 0
    assert sorted(reserved) == [5, *sizes]
    assert 9 * MiB <= backend.peak <= 40 * MiB  # whole files in one request each
    assert [backend._objects[f"t/f{i}.bin"].info.size for i in range(3)] == sizes
