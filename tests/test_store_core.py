"""The Store and the streaming core, on the memory backend and a fault-injecting subclass."""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread
import pytest

import asyncstore
from asyncstore import (
    CommonPrefix,
    CompletedPart,
    InvalidArgumentError,
    MemoryBackend,
    ObjectInfo,
    PermissionDeniedError,
    ReadStream,
    RetryPolicy,
    Store,
    TransportError,
    WriteAttributes,
    WriteResult,
)
from asyncstore._backend import IteratorReadStream, MiB
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.001, backoff_cap=0.002)


class FlakyBackend(MemoryBackend):
    """A memory backend that fails on demand, to exercise the core's retries."""

    def __init__(self) -> None:
        super().__init__()
        self.part_failures: dict[int, int] = {}  # part number -> failures left
        self.part_error: type[Exception] = TransportError
        self.put_failures = 0
        self.read_cut_after: int | None = None  # bytes a read yields before the connection drops
        self.read_cuts_left = 0
        self.reads: list[tuple[int, int | None, str | None]] = []
        self.aborted: list[str] = []

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        if self.part_failures.get(number, 0) > 0:
            self.part_failures[number] -= 1
            raise self.part_error(f"injected failure of part {number}", key=key)
        return await super().upload_part(key, upload_id, number, offset, data, checksums)

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        if self.put_failures > 0:
            self.put_failures -= 1
            raise asyncstore.ConnectionError("injected reset", key=key)
        return await super().put(key, data, attrs, checksums)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        self.aborted.append(upload_id)
        await super().abort_upload(key, upload_id)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        self.reads.append((start, end, if_match))
        stream = await super().read(key, start, end, if_match=if_match)
        if self.read_cut_after is None or self.read_cuts_left <= 0:
            return stream
        self.read_cuts_left -= 1
        limit = self.read_cut_after

        async def cut() -> AsyncIterator[bytes]:
            sent = 0
            async for chunk in stream:
                room = limit - sent
                if room <= 0:
                    break
                yield chunk[:room]
                sent += min(room, len(chunk))
            raise asyncstore.ConnectionError("injected: connection reset mid-body", key=key)

        return IteratorReadStream(stream.info, cut(), stream.aclose)


@pytest.fixture
def flaky() -> FlakyBackend:
    return FlakyBackend()


# -- retries ---------------------------------------------------------------------------------


async def test_failed_parts_are_retried_and_the_upload_completes(flaky: FlakyBackend) -> None:
    flaky.part_failures = {2: 2, 3: 1}
    store = Store(flaky, retry=FAST_RETRY)
    data = pattern(4 * MiB)
    result = await store.put("k", data, chunk_size=MiB)
    assert result.part_count == 4
    assert await store.get("k") == data
    assert flaky.aborted == []


async def test_exhausted_retries_name_key_and_attempts_and_abort_the_upload(
    flaky: FlakyBackend,
) -> None:
    flaky.part_failures = {2: 10}
    store = Store(flaky, retry=FAST_RETRY)
    with pytest.raises(TransportError) as info:
        await store.put("the/key", pattern(4 * MiB), chunk_size=MiB)
    assert info.value.attempts == 3
    assert "'the/key'" in str(info.value)
    assert "3 attempt" in str(info.value)
    assert type(info.value) is TransportError
    assert len(flaky.aborted) == 1
    assert await flaky.pending_uploads() == []
    assert not await store.exists("the/key")


async def test_non_transport_errors_are_not_retried_and_surface_unwrapped(
    flaky: FlakyBackend,
) -> None:
    flaky.part_failures = {3: 1}
    flaky.part_error = PermissionDeniedError
    store = Store(flaky, retry=FAST_RETRY)
    with pytest.raises(PermissionDeniedError, match="part 3"):
        await store.put("k", pattern(4 * MiB), chunk_size=MiB)
    assert flaky.part_failures[3] == 0
    assert await flaky.pending_uploads() == []


async def test_single_put_is_retried(flaky: FlakyBackend) -> None:
    flaky.put_failures = 2
    store = Store(flaky, retry=FAST_RETRY)
    await store.put("k", b"small")
    assert await store.get("k") == b"small"


async def test_download_resumes_from_the_last_byte_pinned_to_the_etag(flaky: FlakyBackend) -> None:
    store = Store(flaky, retry=FAST_RETRY)
    data = pattern(3 * MiB)
    etag = (await store.put("k", data)).etag
    flaky.read_cut_after = 300_000
    flaky.read_cuts_left = 2
    flaky.reads.clear()
    assert await store.get("k", chunk_size=MiB, max_concurrency=1) == data
    # two cuts of 300000 bytes each: the first range resumes twice, then the rest go whole
    assert flaky.reads == [
        (0, MiB, None),
        (300_000, MiB, etag),
        (600_000, MiB, etag),
        (MiB, 2 * MiB, etag),
        (2 * MiB, 3 * MiB, etag),
    ]


async def test_download_gives_up_after_the_retries(flaky: FlakyBackend) -> None:
    store = Store(flaky, retry=FAST_RETRY)
    await store.put("k", pattern(3 * MiB))
    flaky.read_cut_after = 10
    flaky.read_cuts_left = 100
    with pytest.raises(asyncstore.ConnectionError) as info:
        await store.get("k", chunk_size=MiB)
    assert info.value.attempts == 3
    assert "'k'" in str(info.value)


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(asyncstore.ConfigurationError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(asyncstore.ConfigurationError):
        RetryPolicy(backoff_base=-1)


def test_retry_delay_is_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=4.0)
    delays = [policy.delay(10) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100
    assert RetryPolicy(backoff_base=1.0, backoff_cap=4.0, jitter=False).delay(2) == 2.0


# -- backpressure and memory -----------------------------------------------------------------


class GatedPartsBackend(MemoryBackend):
    """Holds each part until ``width`` parts are in flight or the object's last part came.

    So the window fills however busy the machine is, with no sleep: a part is
    released as soon as the core has sent all the parts it may send at once.
    """

    def __init__(self, width: int, total: int) -> None:
        super().__init__()
        self.width = width
        self.total = total
        self.in_flight = 0
        self.peak = 0
        self.last_came = False
        self._arrived = anyio.Event()

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.last_came = self.last_came or offset + len(data) >= self.total
        self._arrived.set()
        self._arrived = anyio.Event()
        with anyio.fail_after(60):  # a window that never fills fails here, not by hanging
            while self.in_flight < self.width and not self.last_came:
                await self._arrived.wait()
        self.in_flight -= 1
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


async def test_window_bounds_parts_in_flight_and_memory_for_an_unsized_stream() -> None:
    backend = GatedPartsBackend(3, 40 * 256 * 1024)
    store = Store(backend)
    pulled = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield pattern(256 * 1024, seed=i)

    result, info = await store._put(
        "k",
        source(),
        content_type=None,
        metadata=None,
        mode="overwrite",
        chunk_size=MiB,
        max_concurrency=3,
        progress=None,
        record_file=False,
    )
    assert result.part_count == 10
    assert backend.peak == 3
    assert info.concurrency == 3
    assert info.peak_buffered <= MiB * (3 + 2)  # the workers' parts, one hashed, one read


class NoParallelBackend(MemoryBackend):
    """Counts parts in flight; each lets everything else run before it finishes."""

    capabilities = asyncstore.Capabilities(parallel_parts=False)

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.peak = 0

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        # Until nothing else can run (no task runnable, no worker thread busy, so the
        # core has sent every part it would send now): a second part would arrive here.
        limiter = anyio.to_thread.current_default_thread_limiter()
        with anyio.fail_after(60):
            await anyio.wait_all_tasks_blocked()
            while limiter.borrowed_tokens:
                await anyio.sleep(0.001)
                await anyio.wait_all_tasks_blocked()
        self.in_flight -= 1
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


async def test_backends_without_parallel_parts_get_one_at_a_time() -> None:
    backend = NoParallelBackend()
    await Store(backend).put("k", pattern(4 * MiB), chunk_size=MiB, max_concurrency=8)
    assert backend.peak == 1


async def test_a_backend_naming_part_writers_gets_no_more_parts_at_once() -> None:
    class TwoWriters(NoParallelBackend):
        capabilities = asyncstore.Capabilities(part_writers=2)

    backend = TwoWriters()
    result = await Store(backend).put("k", pattern(12 * MiB), chunk_size=MiB, max_concurrency=8)
    assert result.part_count == 12
    assert backend.peak == 2


async def test_parts_are_hashed_ahead_while_a_backends_few_writers_are_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A backend with one writer and a window of 4: while the writer holds part 1, the
    # next part waits hashed, and the one after is hashed too. Handed over only when a
    # writer is free, part 3 would not be hashed until part 1 is written (a deadlock here).
    from asyncstore._stream import _hashing

    hashed = 0
    third = anyio.Event()
    update = _hashing.Sha256.update

    async def counting(
        self: _hashing.Sha256, data: bytes | memoryview, *, part: Any = ()
    ) -> dict[str, bytes]:
        nonlocal hashed
        result = await update(self, data, part=part)
        hashed += 1
        if hashed == 3:
            third.set()
        return result

    class OneWriter(MemoryBackend):
        capabilities = asyncstore.Capabilities(part_writers=1)

        async def upload_part(
            self,
            key: str,
            upload_id: str,
            number: int,
            offset: int,
            data: memoryview,
            checksums: Mapping[str, bytes],
        ) -> CompletedPart:
            if number == 1:
                with anyio.fail_after(30):
                    await third.wait()
            return await super().upload_part(key, upload_id, number, offset, data, checksums)

    monkeypatch.setattr(_hashing.Sha256, "update", counting)
    data = pattern(6 * MiB)
    result = await Store(OneWriter()).put("k", data, chunk_size=MiB, max_concurrency=4)
    assert result.part_count == 6
    assert result.sha256 == "sha256:" + hashlib.sha256(data).hexdigest()


async def test_the_next_part_is_read_while_this_one_is_hashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each hash of a part (from the second on) waits until the source has given the
    # part after it: an engine that reads only after hashing never gets there.
    from asyncstore._stream import _hashing

    given: list[int] = []
    advanced = anyio.Event()
    hashed = 0
    update = _hashing.Sha256.update

    async def source() -> AsyncIterator[bytes]:
        nonlocal advanced
        for i in range(6):
            given.append(i)
            advanced.set()
            advanced = anyio.Event()
            yield pattern(MiB, seed=i)

    async def waiting_update(
        self: _hashing.Sha256, data: bytes | memoryview, *, part: Any = ()
    ) -> dict[str, bytes]:
        nonlocal hashed
        hashed += 1
        with anyio.fail_after(30):
            while hashed >= 2 and len(given) < min(hashed + 1, 6):
                await advanced.wait()
        return await update(self, data, part=part)

    monkeypatch.setattr(_hashing.Sha256, "update", waiting_update)
    result = await Store(MemoryBackend()).put("k", source(), chunk_size=MiB, max_concurrency=1)
    assert result.part_count == 6
    assert hashed == 6


class TinyPartLimits(MemoryBackend):
    capabilities = asyncstore.Capabilities(min_part_size=2 * MiB, max_parts=4)

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        self.sizes.append(len(data))
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


async def test_part_size_is_raised_to_fit_backend_limits() -> None:
    backend = TinyPartLimits()
    data = pattern(10 * MiB)
    result = await Store(backend).put("k", data, chunk_size=MiB)
    assert result.part_count <= 4
    assert min(backend.sizes[:-1]) >= 2 * MiB
    assert await Store(backend).get("k") == data


async def test_unsized_stream_past_max_parts_fails_clearly_and_aborts() -> None:
    backend = TinyPartLimits()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield bytes(2 * MiB)

    with pytest.raises(InvalidArgumentError, match="more than 4 parts"):
        await Store(backend).put("k", source(), chunk_size=2 * MiB)
    assert await backend.pending_uploads() == []


def _expected_checksum(name: str, data: memoryview) -> bytes:
    if name == "crc32c":
        google_crc32c = pytest.importorskip("google_crc32c")
        return int(google_crc32c.value(bytes(data))).to_bytes(4, "big")
    return hashlib.new(name, data).digest()


class CheckedPartsBackend(MemoryBackend):
    """Checks every part's checksums (those its capabilities name) against its own."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Mapping[str, bytes]] = []

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        for name in self.capabilities.part_checksums:
            assert checksums[name] == _expected_checksum(name, data)
        self.seen.append(checksums)
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


class PartChecksumBackend(CheckedPartsBackend):
    capabilities = asyncstore.Capabilities(part_checksums=frozenset({"md5", "sha256"}))

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        assert [p.number for p in parts] == list(range(1, len(parts) + 1))
        assert [p.offset for p in parts] == [i * MiB for i in range(len(parts))]
        return await super().complete_upload(key, upload_id, parts, attrs)


async def test_part_checksums_are_computed_for_backends_that_ask() -> None:
    backend = PartChecksumBackend()
    await Store(backend).put("k", pattern(3 * MiB + 5), chunk_size=MiB)
    assert len(backend.seen) == 4


class Crc32cPartBackend(CheckedPartsBackend):
    capabilities = asyncstore.Capabilities(part_checksums=frozenset({"crc32c", "md5"}))


async def test_a_parts_crc32c_is_computed_a_block_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # google-crc32c reads only bytes: the part is copied a cached block at a time,
    # never as a whole (a fresh part-sized allocation per part).
    from asyncstore._stream import _hashing

    real = _hashing._crc32c()
    handed: list[int] = []

    def counting(crc: int, block: bytes) -> int:
        handed.append(len(block))
        return real(crc, block)

    monkeypatch.setattr(_hashing, "_crc32c", lambda: counting)
    backend = Crc32cPartBackend()
    await Store(backend).put("k", pattern(9 * MiB + 5), chunk_size=4 * MiB)
    assert len(backend.seen) == 3
    assert max(handed) == MiB  # parts of 4 MiB, read a block at a time
    assert sum(handed) == 9 * MiB + 5


async def test_an_iterable_may_refill_and_yield_the_same_buffer_again() -> None:
    # The put's documented promise: a chunk that is not bytes is copied before the next
    # is asked for (asyncstore's fsspec files hand their block buffers on this way).
    data = pattern(5 * MiB + 123)
    step = 700_000  # chunks that straddle the parts

    async def refilled() -> AsyncIterator[memoryview]:
        buffer = bytearray(step)
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            buffer[: len(piece)] = piece
            yield memoryview(buffer)[: len(piece)]
            buffer[:] = bytes(step)  # the caller reuses it at once

    def refilled_sync() -> Iterator[bytearray]:
        buffer = bytearray(step)
        for start in range(0, len(data), step):
            buffer[:] = data[start : start + step].ljust(step, b"\0")
            yield buffer if start + step <= len(data) else buffer[: len(data) - start]
            buffer[:] = bytes(step)

    async with Store(MemoryBackend()) as store:
        result = await store.put("async", refilled(), chunk_size=MiB)
        assert result.part_count == 6
        assert await store.get("async") == data
        await store.put("sync", refilled_sync(), chunk_size=MiB)
        assert await store.get("sync") == data


async def test_a_cancelled_upload_closes_the_file_and_the_iterator_it_opened(
    tmp_path: Any,
) -> None:
    """The source is closed in a shielded scope: a cancelled upload's own cancellation
    does not skip it (under trio the file was left to the collector, a ResourceWarning)."""
    path = tmp_path / "big.bin"
    path.write_bytes(pattern(4 * MiB))
    closed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        try:
            for _ in range(4):
                yield bytes(MiB)
        finally:
            closed.append(True)

    async with Store(MemoryBackend()) as store:
        for source in (path, chunks()):
            with anyio.CancelScope() as scope:
                await store.put("k", source, chunk_size=MiB, progress=lambda d, t: scope.cancel())
            assert scope.cancelled_caught
        assert closed == [True]
        assert not await store.exists("k")


class LendingSource:
    """Lends ``data`` to a put in buffers of ``step`` bytes (whole parts or not), each
    one its own mmap, and records what is given back and what the store sent."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.step = step
        self.buffers: list[mmap.mmap] = []
        self.returned: list[int] = []  # indexes of the buffers given back, in order
        self.out: set[int] = set()  # lent, not yet given back

    def _lend(self, index: int) -> asyncstore.LentBuffer:
        piece = self.data[index * self.step : (index + 1) * self.step]
        buffer = mmap.mmap(-1, len(piece))
        buffer[:] = piece
        self.buffers.append(buffer)
        self.out.add(index)
        return asyncstore.LentBuffer(memoryview(buffer), lambda: self._give_back(index))

    def _give_back(self, index: int) -> None:
        assert index in self.out, f"buffer {index} given back twice, or never lent"
        self.out.discard(index)
        self.returned.append(index)
        self.buffers[index][:] = bytes(len(self.buffers[index]))  # the lender reuses it

    def count(self) -> int:
        return -(-len(self.data) // self.step)

    async def chunks(self) -> AsyncIterator[asyncstore.LentBuffer]:
        for index in range(self.count()):
            yield self._lend(index)

    def chunks_sync(self) -> Iterator[asyncstore.LentBuffer]:
        for index in range(self.count()):
            yield self._lend(index)


class PartSourceBackend(MemoryBackend):
    """Records the memory each part and single put was sent from."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_from: list[object] = []
        self.fail_part: int | None = None

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        if number == self.fail_part:
            raise asyncstore.PermissionDeniedError(f"injected refusal of part {number}", key=key)
        self.sent_from.append(data.obj)
        return await super().upload_part(key, upload_id, number, offset, data, checksums)

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        self.sent_from.append(data.obj)
        return await super().put(key, data, attrs, checksums)


@pytest.mark.parametrize("sync", [False, True])
async def test_lent_buffers_of_whole_parts_are_sent_as_they_are_and_given_back(
    sync: bool,
) -> None:
    data = pattern(4 * MiB + 100_000)
    source = LendingSource(data, MiB)  # four whole parts, then a tail that ends the stream
    backend = PartSourceBackend()
    async with Store(backend) as store:
        chunks = source.chunks_sync() if sync else source.chunks()
        result = await store.put("k", chunks, chunk_size=MiB, max_concurrency=2)
        assert result.part_count == 5
        assert await store.get("k") == data  # read back after every buffer was zeroed
    # Every part went out from the lender's own memory: none was copied.
    assert [id(obj) for obj in backend.sent_from] == [id(b) for b in source.buffers]
    assert sorted(source.returned) == list(range(5)) and not source.out


async def test_lent_buffers_that_straddle_parts_are_copied_and_given_back_once() -> None:
    data = pattern(5 * MiB + 321)
    source = LendingSource(data, 700_000)
    backend = PartSourceBackend()
    async with Store(backend) as store:
        result = await store.put("k", source.chunks(), chunk_size=MiB)
        assert result.part_count == 6
        assert await store.get("k") == data
    assert sorted(source.returned) == list(range(source.count())) and not source.out


async def test_a_lent_buffer_of_one_part_is_one_put_from_its_memory() -> None:
    data = pattern(300_000)
    source = LendingSource(data, len(data))
    backend = PartSourceBackend()
    async with Store(backend) as store:
        await store.put("k", source.chunks(), chunk_size=MiB)
        assert await store.get("k") == data
    assert backend.sent_from == [source.buffers[0]]
    assert source.returned == [0]


async def test_a_failed_put_gives_every_lent_buffer_back() -> None:
    source = LendingSource(pattern(6 * MiB), MiB)
    backend = PartSourceBackend()
    backend.fail_part = 3
    store = Store(backend, retry=FAST_RETRY)
    with pytest.raises(asyncstore.PermissionDeniedError, match="part 3"):
        await store.put("k", source.chunks(), chunk_size=MiB, max_concurrency=2)
    assert source.returned and not source.out  # lent ones all back, each once
    assert not await store.exists("k")


async def test_costly_part_checksums_are_computed_apart_from_the_in_order_sha256(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The object's sha256 is one pass in part order; an MD5 per part (Azure's) costs
    # more than that pass, so each part's worker computes its own, parts in parallel,
    # and the in-order pass carries only the cheap CRC beside the sha256.
    from asyncstore._stream import _hashing

    real = _hashing._digest_part
    calls: list[tuple[tuple[str, ...], bool]] = []

    def recording(data: memoryview, names: Any, whole: Any = None) -> dict[str, bytes]:
        names = tuple(names)
        calls.append((tuple(sorted(names)), whole is not None))
        return real(data, names, whole)

    monkeypatch.setattr(_hashing, "_digest_part", recording)
    backend = Crc32cPartBackend()
    data = pattern(9 * MiB + 5)
    result = await Store(backend).put("k", data, chunk_size=4 * MiB)
    assert len(backend.seen) == 3  # each part's crc32c and md5 checked by the backend
    assert result.sha256 == "sha256:" + hashlib.sha256(data).hexdigest()
    in_order = [names for names, whole in calls if whole]
    apart = [names for names, whole in calls if not whole]
    assert in_order == [("crc32c",)] * 3
    assert apart == [("md5",)] * 3


async def test_a_small_file_is_opened_read_and_closed_in_one_thread_call(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A many-file sync sends mostly small files: one worker-thread hop each, not three.
    called: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        called.append(getattr(func, "__name__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    path = tmp_path / "small.bin"
    path.write_bytes(pattern(10_000))
    store = Store(MemoryBackend())
    info = await store.upload_file(path, "k")
    assert called == ["_open_file"]
    assert info.sha256 == "sha256:" + hashlib.sha256(pattern(10_000)).hexdigest()
    assert await store.get("k") == pattern(10_000)
    called.clear()
    path.write_bytes(pattern(3 * MiB))  # larger files are read part by part
    await store.upload_file(path, "big", chunk_size=MiB)
    assert called.count("_read") == 4  # three parts, then the read that finds the end
    assert await store.get("big") == pattern(3 * MiB)


@pytest.fixture
def fresh_buffer_cache() -> Iterator[None]:
    """An empty buffer cache of the default limit, and the default again afterwards."""
    asyncstore.set_buffer_cache(0)
    asyncstore.set_buffer_cache(64 * MiB)
    yield
    asyncstore.set_buffer_cache(64 * MiB)


@pytest.fixture
def made_buffers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every part or range buffer mapped from now on; each appends the thread that
    unmaps it to the list when that happens."""
    import threading
    import weakref

    from asyncstore._stream import _buffers

    freed_in: list[str] = []
    aligned = _buffers.aligned_buffer

    def watched(size: int) -> memoryview:
        view = aligned(size)
        weakref.finalize(view.obj, lambda: freed_in.append(threading.current_thread().name))
        watched.made += 1  # type: ignore[attr-defined]
        return view

    watched.made = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(_buffers, "aligned_buffer", watched)
    return freed_in


def _made() -> int:
    from asyncstore._stream import _buffers

    return int(_buffers.aligned_buffer.made)  # type: ignore[attr-defined]


async def test_part_buffers_are_unmapped_off_the_event_loop(
    tmp_path: Any, fresh_buffer_cache: None, made_buffers: list[str]
) -> None:
    # Unmapping eight touched 8 MiB buffers takes about 5 ms: not on the event loop.
    import threading

    asyncstore.set_buffer_cache(0)  # none kept: every buffer is unmapped at the end
    loop_thread = threading.current_thread().name
    store = Store(MemoryBackend(), chunk_size=MiB, max_concurrency=4)
    src = tmp_path / "src.bin"
    src.write_bytes(pattern(6 * MiB))
    await store.upload_file(src, "k")
    await store.download_file("k", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == pattern(6 * MiB)
    assert len(made_buffers) >= 4  # the upload's buffers and the download's
    assert loop_thread not in made_buffers


async def test_a_transfers_buffers_are_kept_for_the_next_one(
    tmp_path: Any, fresh_buffer_cache: None, made_buffers: list[str]
) -> None:
    # Fresh pages cost the kernel 0.4-0.8 CPU s/GiB: a later transfer of the same part
    # size takes the buffers an earlier one gave back, and maps none of its own.
    store = Store(MemoryBackend(), chunk_size=MiB, max_concurrency=4)
    src = tmp_path / "src.bin"
    src.write_bytes(pattern(6 * MiB))
    await store.upload_file(src, "k")
    await store.download_file("k", tmp_path / "out.bin")
    first = _made()
    assert first >= 2
    await store.upload_file(src, "k2")
    await store.download_file("k2", tmp_path / "out2.bin")
    assert _made() == first  # the second upload and download: none mapped
    assert (tmp_path / "out.bin").read_bytes() == pattern(6 * MiB)
    assert (tmp_path / "out2.bin").read_bytes() == pattern(6 * MiB)
    assert not made_buffers  # and none unmapped: they are kept


async def test_the_buffer_cache_keeps_no_more_than_its_limit(
    tmp_path: Any, fresh_buffer_cache: None, made_buffers: list[str]
) -> None:
    from asyncstore._stream import _buffers

    asyncstore.set_buffer_cache(2 * MiB)
    store = Store(MemoryBackend(), chunk_size=MiB, max_concurrency=4)
    src = tmp_path / "src.bin"
    src.write_bytes(pattern(6 * MiB))
    await store.upload_file(src, "k")
    assert _buffers._SPARES._bytes == 2 * MiB  # two kept, the others unmapped
    made = _made()
    assert len(made_buffers) == made - 2
    await store.upload_file(src, "k2")
    assert _made() == made + (made - 2)  # the two kept are used again
    asyncstore.set_buffer_cache(0)
    assert _buffers._SPARES._bytes == 0
    assert len(made_buffers) == _made()  # lowering the limit unmapped the rest


async def test_a_buffer_not_given_back_is_never_kept(fresh_buffer_cache: None) -> None:
    # A buffer still held elsewhere (a transfer that failed midway) must not be handed
    # to another transfer, which would write into it.
    from asyncstore._stream._buffers import BufferPool

    pool = BufferPool(MiB)
    given, held = pool.take(), pool.take()
    pool.give(given)
    await pool.aclose()
    later = BufferPool(MiB)
    first, second = later.take(), later.take()
    assert first.obj is given.obj
    assert second.obj is not held.obj
    await later.aclose()


@pytest.mark.parametrize("limit", [-1, 1.5, True, "64"])
def test_a_bad_buffer_cache_limit_is_refused(limit: Any) -> None:
    with pytest.raises(ValueError, match="buffer cache limit"):
        asyncstore.set_buffer_cache(limit)


# -- bad input -------------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with Store(MemoryBackend()) as store:
        yield store


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("text", "is a str"),
        (12, "cannot upload a int"),
        (["ok", "str"], "yielded a str"),
        ([b"ok", 3], "yielded a int"),
    ],
)
async def test_bad_data_raises_invalid_argument_naming_the_key(
    store: Store, data: Any, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        await store.put("my/key", data)
    assert "'my/key'" in str(info.value)
    assert not await store.exists("my/key")


class _ReadsText:
    """A file-like object that is not an io.TextIOBase but reads str all the same."""

    def read(self, n: int = -1) -> str:
        return "text"


@pytest.mark.parametrize("opener", ["open()", "anyio.open_file()", "duck-typed"])
async def test_a_text_mode_file_raises_invalid_argument_naming_the_key(
    store: Store, tmp_path: Any, opener: str
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("some text\n" * 1000)
    if opener == "open()":
        file: Any = open(path)  # noqa: SIM115 - closed below
    elif opener == "anyio.open_file()":
        file = await anyio.open_file(path)
    else:
        file = _ReadsText()
    try:
        with pytest.raises(InvalidArgumentError, match=r"text mode.*'rb'") as info:
            await store.put("my/key", file)
        assert info.value.key == "my/key"
        assert "'my/key'" in str(info.value)
    finally:
        close = getattr(file, "aclose", None)
        if close is not None:
            await close()
        elif hasattr(file, "close"):
            file.close()
    assert not await store.exists("my/key")
    with open(path, "rb") as binary:  # the same file in binary mode is fine
        await store.put("my/key", binary)
    assert await store.get("my/key") == path.read_bytes()


async def test_missing_source_file_is_named(store: Store, tmp_path: Any) -> None:
    missing = tmp_path / "nope.bin"
    with pytest.raises(InvalidArgumentError, match="no such file") as info:
        await store.upload_file(missing, "k")
    assert str(missing) in str(info.value)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"Upper": "x"}, "lowercase"),
        ({"has space": "x"}, "lowercase"),
        ({"asyncstore-sha256": "x"}, "reserved"),
        ({"ok": "caf\u00e9"}, "printable ASCII"),
        ({"ok": 1}, "printable ASCII"),
        ({"big": "x" * 3000}, "limit"),
        ("not-a-mapping", "mapping"),
    ],
)
async def test_bad_metadata_is_rejected_before_writing(
    store: Store, metadata: Any, message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        await store.put("k", b"x", metadata=metadata)
    assert not await store.exists("k")


@pytest.mark.parametrize(
    "mode", ["append", {"if_match": ""}, {"if_none_match": "*"}, {"if_match": 3}, None]
)
async def test_bad_mode_is_rejected(store: Store, mode: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="mode for key 'k'"):
        await store.put("k", b"x", mode=mode)


@pytest.mark.parametrize("content_type", ["", "bad\nheader", 5])
async def test_bad_content_type_is_rejected(store: Store, content_type: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="content_type"):
        await store.put("k", b"x", content_type=content_type)


@pytest.mark.parametrize("option", ["chunk_size", "max_concurrency"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8"])
async def test_bad_transfer_options_are_named(store: Store, option: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=option):
        await store.put("k", b"x", **{option: value})
    with pytest.raises(InvalidArgumentError, match=option):
        await store.get("k", **{option: value})
    with pytest.raises(InvalidArgumentError, match=option):
        Store(MemoryBackend(), **{option: value})


async def test_bad_delimiter_and_delete_many_of_a_str(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="delimiter"):
        store.list("", delimiter="")
    with pytest.raises(InvalidArgumentError, match="iterable of keys"):
        await store.delete_many("abc")


def test_store_needs_a_backend() -> None:
    with pytest.raises(InvalidArgumentError, match="Backend"):
        Store("memory://")  # type: ignore[arg-type]


async def test_sync_progress_callbacks_work(store: Store) -> None:
    seen: list[int] = []
    await store.put("k", pattern(3 * MiB), chunk_size=MiB, progress=lambda d, t: seen.append(d))
    assert seen == [MiB, 2 * MiB, 3 * MiB]


async def test_progress_callback_errors_abort_the_upload() -> None:
    backend = MemoryBackend()

    def explode(done: int, total: int | None) -> None:
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        await Store(backend).put("k", pattern(3 * MiB), chunk_size=MiB, progress=explode)
    assert await backend.pending_uploads() == []
    assert not await Store(backend).exists("k")


# -- buffer reuse ----------------------------------------------------------------------------


async def test_part_buffers_are_recycled_within_the_window(tmp_path: Any) -> None:
    from asyncstore._stream._source import open_source
    from asyncstore._stream._upload import ProgressReporter, upload

    path = tmp_path / "src.bin"
    path.write_bytes(pattern(20 * MiB))
    reader, _ = await open_source(path, lambda size: MiB, key="k")
    backend = GatedPartsBackend(2, 20 * MiB)
    outcome = await upload(
        backend,
        "k",
        reader,
        WriteAttributes(),
        part_size=MiB,
        concurrency=2,
        retry=FAST_RETRY,
        progress=ProgressReporter(None, None),
    )
    await reader.aclose()
    assert outcome.part_count == 20
    # two in flight, one being read, one handed over: never one buffer per part
    assert reader._pool.allocated <= 2 + 2  # type: ignore[attr-defined]
    assert await Store(backend).get("k") == pattern(20 * MiB)


async def test_iterable_sources_recycle_their_buffers_too() -> None:
    from asyncstore._stream._source import open_source
    from asyncstore._stream._upload import ProgressReporter, upload

    async def source() -> AsyncIterator[bytearray]:
        for i in range(80):
            yield bytearray(pattern(256 * 1024, seed=i))

    reader, _ = await open_source(source(), lambda size: MiB, key="k")
    backend = GatedPartsBackend(2, 80 * 256 * 1024)
    await upload(
        backend,
        "k",
        reader,
        WriteAttributes(),
        part_size=MiB,
        concurrency=2,
        retry=FAST_RETRY,
        progress=ProgressReporter(None, None),
    )
    assert reader._assembler.pool.allocated <= 2 + 2  # type: ignore[attr-defined]
    expected = b"".join(pattern(256 * 1024, seed=i) for i in range(80))
    assert await Store(backend).get("k") == expected


def _address(data: memoryview) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(data))


async def test_part_buffers_start_on_a_page(tmp_path: Any) -> None:
    # The kernel copies out of a page-aligned buffer (pwrite, send) faster than out of
    # a bytearray's own, which starts 16 bytes past a page.
    class Addresses(MemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            self.offsets: list[int] = []

        async def upload_part(
            self,
            key: str,
            upload_id: str,
            number: int,
            offset: int,
            data: memoryview,
            checksums: Mapping[str, bytes],
        ) -> CompletedPart:
            self.offsets.append(_address(data) % 4096)
            return await super().upload_part(key, upload_id, number, offset, data, checksums)

    backend = Addresses()
    store = Store(backend, chunk_size=MiB)
    path = tmp_path / "src.bin"
    path.write_bytes(pattern(3 * MiB + 5))
    await store.upload_file(path, "file")

    async def chunks() -> AsyncIterator[bytearray]:
        for i in range(10):
            yield bytearray(pattern(300 * 1024, seed=i))

    await store.put("iterable", chunks())
    assert len(backend.offsets) == 4 + 3
    assert set(backend.offsets) == {0}


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MAP_PRIVATE"), reason="needs mmap")
def test_part_buffers_are_mappings_the_kernel_zeroes() -> None:
    # bytearray(n) zero-fills n bytes holding the GIL (up to 12 ms for 8 MiB: a stall
    # of the event loop even from a worker thread); a private mapping is zeroed by the
    # kernel page by page, as a read that released the GIL first fills it.
    import mmap

    from asyncstore._stream._buffers import BufferPool

    pool = BufferPool(8 * MiB)
    view = pool.take()
    assert isinstance(view.obj, mmap.mmap)
    assert len(view) == 8 * MiB and not view.readonly
    pool.give(view[:100])
    assert pool.take() is view  # recycled, whatever slice of it came back


async def test_download_ranges_land_in_buffers_that_start_on_a_page(tmp_path: Any) -> None:
    # (Written to a file with O_DIRECT, which wants aligned buffers. A parallel stream
    # reads each range into the bytes it hands on instead: see
    # test_a_parallel_stream_hands_on_each_range_in_the_bytes_it_was_read_into.)
    from asyncstore._stream import _download

    offsets: list[int] = []
    read_range = _download.Download.read_range

    async def recording(
        self: Any, start: int, end: int, into: memoryview | None = None
    ) -> memoryview:
        if into is not None:
            offsets.append(_address(into) % 4096)
        return await read_range(self, start, end, into)

    store = Store(MemoryBackend(), chunk_size=MiB)
    await store.put("k", pattern(3 * MiB))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_download.Download, "read_range", recording)
        await store.download_file("k", tmp_path / "k")
    assert (tmp_path / "k").read_bytes() == pattern(3 * MiB)
    assert offsets == [0, 0, 0]


async def test_a_ranged_get_is_read_in_place_and_not_hashed() -> None:
    # A range of an object cannot be checked against the object's sha256: hashing it
    # would be wasted work. A whole read is still hashed (and verified).
    from asyncstore._stream import _download

    hashed: list[int] = []
    into: list[bool] = []

    class Counting(_download.Sha256):
        async def update(self, data: Any, *, part: Any = ()) -> dict[str, bytes]:
            hashed.append(len(data))
            return await super().update(data, part=part)

    read_range = _download.Download.read_range

    async def recording(
        self: Any, start: int, end: int, buffer: memoryview | None = None
    ) -> memoryview:
        into.append(buffer is not None)
        return await read_range(self, start, end, buffer)

    store = Store(MemoryBackend(), chunk_size=MiB)
    data = pattern(3 * MiB)
    await store.put("k", data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_download, "Sha256", Counting)
        patch.setattr(_download.Download, "read_range", recording)
        assert await store.get("k", start=5, end=2 * MiB) == data[5 : 2 * MiB]
        assert await store.get("k", start=5, end=MiB // 2) == data[5 : MiB // 2]  # one range
        assert hashed == []
        assert into == [True, True, True]
        assert await store.get("k") == data
        assert sum(hashed) == len(data)


async def test_a_large_get_lands_in_the_bytes_it_returns() -> None:
    # The ranges are read into the returned bytes object itself: no buffer to copy
    # out of (the copy held the GIL and touched every page twice). Without the
    # CPython maker, a page-mapped buffer and one copy.
    from asyncstore._stream import _download

    made: list[bytes | None] = []
    new_bytes = _download._new_bytes

    def recording(size: int) -> tuple[bytes | None, memoryview]:
        data, view = new_bytes(size)
        made.append(data)
        return data, view

    store = Store(MemoryBackend(), chunk_size=MiB)
    data = pattern(3 * MiB + 3)
    await store.put("k", data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_download, "_new_bytes", recording)
        whole = await store.get("k")
        part = await store.get("k", start=5, end=2 * MiB)
        assert whole == data
        assert part == data[5 : 2 * MiB]
        assert made[0] is whole
        assert made[1] is part
        patch.setattr(_download, "_PY_BYTES", None)
        assert await store.get("k", start=5, end=2 * MiB) == data[5 : 2 * MiB]
        assert made[2] is None


async def test_download_progress_starts_at_zero_with_the_total(tmp_path: Any) -> None:
    store = Store(MemoryBackend())
    await store.put("k", pattern(3 * MiB))
    await store.put("empty", b"")
    seen: list[tuple[int, int | None]] = []
    await store.download_file(
        "k", tmp_path / "k", chunk_size=MiB, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(0, 3 * MiB), (MiB, 3 * MiB), (2 * MiB, 3 * MiB), (3 * MiB, 3 * MiB)]
    seen.clear()
    await store.download_file("empty", tmp_path / "e", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 0)]


async def test_object_stream_exposes_the_digest_it_verified() -> None:
    store = Store(MemoryBackend())
    result = await store.put("k", pattern(3 * MiB))
    body = store.stream("k", chunk_size=MiB)
    assert body.sha256 is None
    async for _ in body:
        pass
    assert body.sha256 == result.sha256
    async with store.stream("k", chunk_size=MiB) as parallel:
        async for _ in parallel:
            pass
    assert parallel.sha256 == result.sha256


async def test_a_parallel_stream_hands_on_each_range_in_the_bytes_it_was_read_into(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A range read into a pooled buffer and then copied out cost a serial copy beside
    # the sha256 (the verified stream's one serial stage): each range now lands in its
    # own bytes, which is hashed and handed on as it is.
    from asyncstore._stream import _download

    made: list[bytes] = []
    real = _download._new_bytes

    def recording(size: int) -> tuple[bytes | None, memoryview]:
        data, view = real(size)
        assert data is not None  # CPython
        made.append(data)
        return data, view

    monkeypatch.setattr(_download, "_new_bytes", recording)
    store = Store(MemoryBackend())
    data = pattern(5 * MiB + 7)
    result = await store.put("k", data)
    async with store.stream("k", chunk_size=MiB) as body:
        chunks = [chunk async for chunk in body]
    assert b"".join(chunks) == data
    assert body.sha256 == result.sha256
    assert len(chunks) == 6
    assert all(any(chunk is own for own in made) for chunk in chunks)


class CutListBackend(MemoryBackend):
    """A memory backend whose listings break (a connection reset between two pages)
    after ``cut_after`` entries, ``cuts`` times; ``closed`` tells a listing was closed."""

    def __init__(self, cut_after: int = 0, cuts: int = 0) -> None:
        super().__init__()
        self.cut_after = cut_after
        self.cuts = cuts
        self.listings = 0
        self.closed = False

    async def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        self.listings += 1
        inner = super().list(prefix, delimiter=delimiter)
        count = 0
        try:
            async for entry in inner:
                if count == self.cut_after and self.cuts > 0:
                    self.cuts -= 1
                    raise TransportError("injected reset of a listing", key=prefix or None)
                count += 1
                yield entry
        finally:
            self.closed = True
            await inner.aclose()  # type: ignore[attr-defined]


async def test_stopping_a_listing_early_closes_the_backend_listing() -> None:
    backend = CutListBackend()
    store = Store(backend)
    for i in range(5):
        await store.put(f"k{i}", b"x")
    listing = store.list()
    async for _ in listing:
        break
    await listing.aclose()  # type: ignore[attr-defined]
    assert backend.closed


@pytest.mark.parametrize("delimiter", [None, "/"])
async def test_a_listing_cut_short_resumes_after_the_last_entry_it_gave(
    delimiter: str | None,
) -> None:
    backend = CutListBackend(cut_after=3, cuts=2)
    store = Store(backend, retry=FAST_RETRY)
    keys = [f"a{i}" for i in range(4)] + ["d/x", "d/y"] + [f"z{i}" for i in range(3)]
    for key in keys:
        await store.put(key, b"x")
    names = [
        entry.key if isinstance(entry, ObjectInfo) else entry.prefix
        async for entry in store.list(delimiter=delimiter)
    ]
    whole = sorted(keys) if delimiter is None else [k for k in sorted(keys) if "/" not in k]
    if delimiter is not None:
        whole = sorted([*whole, "d/"])
    assert names == whole  # every entry once, in key order
    assert backend.listings == 3  # two cuts, each listed again


async def test_a_listing_that_keeps_failing_gives_up_after_the_retry_policy() -> None:
    backend = CutListBackend(cut_after=1, cuts=10)
    store = Store(backend, retry=FAST_RETRY)
    for key in ("a", "b", "c"):
        await store.put(key, b"x")
    seen = []
    with pytest.raises(TransportError, match=r"^list failed after 3 attempt\(s\): injected reset"):
        async for entry in store.list():
            assert isinstance(entry, ObjectInfo)
            seen.append(entry.key)
    assert seen == ["a"]  # what came before each cut, once
    assert backend.listings == FAST_RETRY.attempts


async def test_entering_a_stream_of_one_range_starts_no_tasks() -> None:
    store = Store(MemoryBackend())
    await store.put("small", b"tiny object")
    async with store.stream("small") as body:
        assert body._tg is None
        assert b"".join([chunk async for chunk in body]) == b"tiny object"
    assert body.sha256 is not None


class FlakyAbortBackend(FlakyBackend):
    def __init__(self) -> None:
        super().__init__()
        self.abort_failures = 2

    async def abort_upload(self, key: str, upload_id: str) -> None:
        if self.abort_failures > 0:
            self.abort_failures -= 1
            raise asyncstore.ConnectionError("injected: abort lost", key=key)
        await super().abort_upload(key, upload_id)


async def test_abort_after_a_failure_is_retried_until_it_lands() -> None:
    backend = FlakyAbortBackend()
    backend.part_failures = {2: 10}
    with pytest.raises(TransportError):
        await Store(backend, retry=FAST_RETRY).put("k", pattern(4 * MiB), chunk_size=MiB)
    assert backend.abort_failures == 0
    assert await backend.pending_uploads() == []


class TrackingReadsBackend(MemoryBackend):
    """Counts read streams opened and closed."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0
        self.closed = 0

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        stream = await super().read(key, start, end, if_match=if_match)
        self.opened += 1

        async def on_close() -> None:
            self.closed += 1

        return IteratorReadStream(stream.info, stream, on_close)


async def test_every_read_stream_is_closed_whatever_order_the_range_tasks_start_in() -> None:
    backend = TrackingReadsBackend()
    store = Store(backend)
    await store.put("k", pattern(6 * MiB))
    for _ in range(5):  # trio starts tasks in random order: try several times
        assert await store.get("k", chunk_size=MiB, max_concurrency=6) == pattern(6 * MiB)
        async with store.stream("k", chunk_size=MiB, max_concurrency=6) as body:
            async for _ in body:
                pass
    # one request per range, every one closed: the first range's stream is never dropped
    assert backend.opened == 5 * 2 * 6
    assert backend.closed == backend.opened


# -- the overall deadline -----------------------------------------------------------------------


class HangingBackend(MemoryBackend):
    """Part 2 of every upload, and every read after the first, never answer."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        if number == 2:
            await anyio.sleep_forever()
        return await super().upload_part(key, upload_id, number, offset, data, checksums)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> asyncstore.ReadStream:
        self.reads += 1
        if self.reads > 1:
            await anyio.sleep_forever()
        return await super().read(key, start, end, if_match=if_match)


async def test_store_timeout_bounds_an_upload_and_aborts_it() -> None:
    backend = HangingBackend()
    store = Store(backend, chunk_size=MiB, timeout=0.3)
    with pytest.raises(asyncstore.TimeoutError, match=r"put of key 'big'.*0\.3 s") as caught:
        await store.put("big", pattern(4 * MiB))
    assert caught.value.key == "big"
    assert isinstance(caught.value, asyncstore.TransportError)
    assert backend._uploads == {}  # the multipart upload was aborted
    assert not await store.exists("big")


async def test_store_timeout_bounds_a_download_and_leaves_no_file(tmp_path: Any) -> None:
    backend = HangingBackend()
    await Store(backend, chunk_size=8 * MiB).put("big", pattern(4 * MiB))  # one part
    store = Store(backend, chunk_size=MiB, timeout=0.3)
    backend.reads = 0
    with pytest.raises(asyncstore.TimeoutError, match="download of key 'big'"):
        await store.download_file("big", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


async def test_a_callers_cancel_scope_cleans_up_like_the_timeout() -> None:
    backend = HangingBackend()
    store = Store(backend, chunk_size=MiB)
    with anyio.move_on_after(0.3) as scope:
        await store.put("big", pattern(4 * MiB))
    assert scope.cancelled_caught
    assert backend._uploads == {}
    assert not await store.exists("big")


async def test_store_timeout_does_not_touch_calls_that_finish() -> None:
    store = Store(MemoryBackend(), timeout=5)
    await store.put("k", b"x")
    assert await store.get("k") == b"x"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
def test_store_timeout_must_be_positive_seconds(bad: object) -> None:
    with pytest.raises(asyncstore.ConfigurationError, match="timeout") as caught:
        Store(MemoryBackend(), timeout=bad)  # type: ignore[arg-type]
    assert caught.value.key == "timeout"


# -- conditional writes whose answer was lost ---------------------------------------------------


class LostAnswerBackend(MemoryBackend):
    """The next ``lost`` puts and completes land, but their answer is lost on the way back."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        result = await super().put(key, data, attrs, checksums)
        return self._maybe_lose(key, result)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        result = await super().complete_upload(key, upload_id, parts, attrs)
        return self._maybe_lose(key, result)

    def _maybe_lose(self, key: str, result: WriteResult) -> WriteResult:
        if self.lost > 0:
            self.lost -= 1
            raise asyncstore.ConnectionError("injected: answer lost after the write", key=key)
        return result


@pytest.mark.parametrize("size", [100, 3 * MiB], ids=["put", "multipart"])
async def test_a_create_whose_answer_was_lost_is_recognised_on_retry(size: int) -> None:
    backend = LostAnswerBackend()
    store = Store(backend, chunk_size=MiB)
    backend.lost = 1
    data = pattern(size)
    result = await store.put("k", data, mode="create")
    assert result.sha256 == "sha256:" + hashlib.sha256(data).hexdigest()
    assert await store.get("k") == data
    assert backend.lost == 0


async def test_an_if_match_write_whose_answer_was_lost_is_recognised_on_retry() -> None:
    backend = LostAnswerBackend()
    store = Store(backend)
    first = await store.put("k", b"one")
    backend.lost = 1
    await store.put("k", b"two", mode={"if_match": first.etag})
    assert await store.get("k") == b"two"


async def test_a_real_conflict_after_a_lost_answer_is_still_a_conflict() -> None:
    """Someone else's object at the key (other bytes) is not mistaken for ours."""
    flaky = FlakyBackend()
    store = Store(flaky)
    await store.put("k", b"theirs")
    flaky.put_failures = 1  # a transport error, then the retry meets the other object
    with pytest.raises(asyncstore.AlreadyExistsError):
        await store.put("k", b"mine", mode="create")
    assert flaky.put_failures == 0
    assert await store.get("k") == b"theirs"


async def test_a_conflict_with_no_lost_answer_is_not_second_guessed() -> None:
    backend = LostAnswerBackend()
    store = Store(backend)
    await store.put("k", b"same")
    with pytest.raises(asyncstore.AlreadyExistsError):
        await store.put("k", b"same", mode="create")  # same bytes, but no attempt was lost


# -- opening before streaming (Store.open) -------------------------------------------------------


async def test_open_raises_not_found_before_any_byte() -> None:
    async with Store(MemoryBackend()) as store:
        with pytest.raises(asyncstore.NotFoundError) as info:
            async with store.open("missing"):
                pytest.fail("entered the block of a missing key")  # pragma: no cover
        assert info.value.key == "missing"
        opening = store.open("missing")  # nothing is read until it is awaited
        with pytest.raises(asyncstore.NotFoundError):
            await opening


async def test_open_checks_the_range_when_opened() -> None:
    async with Store(MemoryBackend()) as store:
        await store.put("k", b"0123456789")
        with pytest.raises(asyncstore.InvalidRangeError):
            store.open("k", start=5, end=2)  # a range no object could satisfy: at once
        with pytest.raises(asyncstore.InvalidRangeError, match="past the end"):
            await store.open("k", start=20)


async def test_open_exposes_the_info_before_the_first_chunk() -> None:
    backend = CountingReads()
    data = pattern(5 * MiB + 3)
    async with Store(backend, chunk_size=MiB, max_concurrency=3) as store:
        await store.put("k", data, content_type="application/x-test", metadata={"m": "1"})
        head = await store.head("k")
        backend.reads = 0
        async with store.open("k") as stream:
            assert backend.reads == 1  # the first range, no more, before any chunk is taken
            assert stream.info is not None
            assert (stream.info.size, stream.info.etag) == (len(data), head.etag)
            assert (stream.info.content_type, dict(stream.info.metadata)) == (
                "application/x-test",
                {"m": "1"},
            )
            assert b"".join([chunk async for chunk in stream]) == data
            assert stream.sha256 == head.sha256
        assert backend.open_reads == 0


async def test_an_awaited_open_streams_one_range_at_a_time_until_closed() -> None:
    backend = CountingReads()
    data = pattern(3 * MiB + 1)
    async with Store(backend, chunk_size=MiB) as store:
        await store.put("k", data)
        stream = await store.open("k", start=1, end=2 * MiB + 7)
        try:
            assert stream.info is not None and stream.info.size == len(data)
            assert backend.open_reads == 1
            assert b"".join([chunk async for chunk in stream]) == data[1 : 2 * MiB + 7]
        finally:
            await stream.aclose()
        assert backend.open_reads == 0
        stream = await store.open("k")  # closed without being read: releases its read
        await stream.aclose()
        assert backend.open_reads == 0


async def test_open_is_bounded_by_the_store_timeout() -> None:
    class SlowReads(MemoryBackend):
        async def read(
            self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
        ) -> ReadStream:
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover

    async with Store(SlowReads(), timeout=0.05) as store:
        with pytest.raises(asyncstore.TimeoutError, match="open of key 'k'"):
            await store.open("k")


class _Counted(ReadStream):
    def __init__(self, inner: ReadStream, backend: CountingReads) -> None:
        self.info = inner.info
        self._inner = inner
        self._backend: CountingReads | None = backend

    async def __anext__(self) -> bytes:
        return await self._inner.__anext__()

    async def aclose(self) -> None:
        if self._backend is not None:
            self._backend.open_reads -= 1
            self._backend = None
        await self._inner.aclose()


class CountingReads(MemoryBackend):
    """Counts the ranged reads made, and those not yet closed."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.open_reads = 0

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        stream = await super().read(key, start, end, if_match=if_match)
        self.reads += 1
        self.open_reads += 1
        return _Counted(stream, self)


# -- the parallel stream's memory object streams are closed on every way out ----------------------


def _unclosed_streams_collected() -> list[str]:
    """The "Unclosed <MemoryObject...>" warnings that a garbage collection emits now."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if "MemoryObject" in str(w.message)]


@pytest.mark.parametrize(
    "way_out", ["read to the end", "break", "error in the block", "cancelled", "never iterated"]
)
async def test_a_parallel_stream_closes_its_memory_streams_whatever_the_way_out(
    way_out: str,
) -> None:
    async with Store(MemoryBackend(), chunk_size=MiB, max_concurrency=3) as store:
        await store.put("k", pattern(5 * MiB))
        assert _unclosed_streams_collected() == []

        async def read() -> None:
            async with store.stream("k") as body:
                if way_out == "never iterated":
                    return
                async for _ in body:
                    if way_out == "break":
                        break
                    if way_out == "error in the block":
                        raise LookupError("the caller's own error")
                    if way_out == "cancelled":
                        await anyio.sleep_forever()

        if way_out == "error in the block":
            with pytest.raises(LookupError):
                await read()
        elif way_out == "cancelled":
            with anyio.move_on_after(0.05):
                await read()
        else:
            await read()
        assert _unclosed_streams_collected() == []


async def test_a_download_writes_into_its_file_one_write_at_a_time(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Concurrent writes into one file only queue (and spin) on its inode lock: the
    # second write must wait for the first on the event loop, not in a worker thread.
    import threading

    from asyncstore._stream import _files

    entered = threading.Event()
    release = threading.Event()
    pwrite_all = _files.pwrite_all

    def held_pwrite_all(fd: int, data: memoryview, offset: int, **options: Any) -> None:
        entered.set()
        release.wait(30)
        pwrite_all(fd, data, offset, **options)

    monkeypatch.setattr(_files, "pwrite_all", held_pwrite_all)
    target = _files.AtomicFile(tmp_path / "out.bin", key="k")
    await target.open()
    limiter = anyio.to_thread.current_default_thread_limiter()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(target.write_at, 0, memoryview(b"a" * 10))
            tg.start_soon(target.write_at, 10, memoryview(b"b" * 10))
            assert await anyio.to_thread.run_sync(entered.wait, 30)
            await anyio.wait_all_tasks_blocked()
            in_threads = limiter.borrowed_tokens
            release.set()
        assert in_threads == 1
        await target.commit(20)
    finally:
        release.set()
        await target.discard()
    assert (tmp_path / "out.bin").read_bytes() == b"a" * 10 + b"b" * 10


async def test_written_ranges_start_their_way_to_disk_before_the_fsync(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # So the fsync that commits a file waits for its last part, not for all of it.
    from asyncstore._stream import _files

    started: list[tuple[int, int]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> int:
        started.append((offset, length))
        return 0

    monkeypatch.setattr(_files, "_sync_file_range", record)
    from asyncstore.backends.local import LocalBackend

    monkeypatch.setattr(_files, "O_DIRECT", 0)  # through the page cache (as on tmpfs)

    store = Store(LocalBackend(tmp_path / "store"), chunk_size=MiB)
    src = tmp_path / "src.bin"
    await anyio.Path(src).write_bytes(pattern(3 * MiB + 5))
    await store.upload_file(src, "k")
    assert sorted(started) == [(0, MiB), (MiB, MiB), (2 * MiB, MiB), (3 * MiB, 5)]
    started.clear()
    await store.download_file("k", tmp_path / "out.bin")
    assert sorted(started) == [(0, MiB), (MiB, MiB), (2 * MiB, MiB), (3 * MiB, 5)]


def test_start_writeback_ignores_what_cannot_be_written_back() -> None:
    import os

    from asyncstore._stream._files import start_writeback

    read_end, write_end = os.pipe()
    try:
        start_writeback(write_end, 0, 10)  # ESPIPE: no head start, no error
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.skipif(not hasattr(__import__("os"), "O_DIRECT"), reason="needs O_DIRECT")
@pytest.mark.parametrize("refuse_direct", [False, True])
async def test_download_file_writes_aligned_ranges_straight_to_disk(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, refuse_direct: bool
) -> None:
    # The temp file is fsynced before it is renamed anyway: whole aligned ranges in the
    # core's page-aligned buffers skip the page-cache copy (O_DIRECT, set per write).
    # A file system that refuses it (tmpfs) is written through the page cache.
    import errno
    import fcntl
    import os

    from asyncstore._stream import _files

    attempts: list[int] = []
    real_fcntl = fcntl.fcntl

    def recording(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            attempts.append(fd)
            if refuse_direct:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    store = Store(MemoryBackend(), chunk_size=MiB)
    data = pattern(3 * MiB + 5)
    await store.put("k", data)
    monkeypatch.setattr(fcntl, "fcntl", recording)
    await store.download_file("k", tmp_path / "out.bin")
    monkeypatch.undo()
    assert len(attempts) == (1 if refuse_direct else 3)  # refused once, never tried again
    assert (tmp_path / "out.bin").read_bytes() == data
    assert _files.O_DIRECT == os.O_DIRECT
