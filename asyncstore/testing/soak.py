"""The soak workload: many concurrent tasks doing mixed puts, gets, lists and deletes.

Shared by ``tests/test_soak.py`` (a moderate run against every backend) and
``bench/soak.py`` (a larger run, with the process's peak RSS checked against
the Store's memory formula), and open to any backend's own tests: it uses only
the public `Store` API.

`soak` runs ``tasks`` tasks at once, each doing ``ops_per_task`` operations
picked by its own seeded ``random.Random``:

* **put** (40%) of one of the task's own keys (``<prefix>/t<NN>/k<M>``, a few
  per task, so puts overwrite and deletes hit existing objects);
* **get** (25%) of one of its keys: the bytes must hash to what the task last
  wrote there, or the get must raise NotFoundError if the key holds nothing;
* **list** (10%) of the task's own folder: exactly the keys the task holds, at
  their sizes;
* **delete** (15%) of one of its keys;
* **shared put / get** (5% each) of a few keys every task writes: only "one of
  the versions written, intact" can be asserted there (or that a get raised
  one of ``replaced_read_errors`` because another put replaced the object
  while it was read, or that a put raised one of ``lost_write_errors``
  because another put of the key won).

Sizes: 70% up to 64 KiB (0 B included), 25% up to 4 MiB, 5% up to ``max_size``
(32 MiB by default), each capped at ``max_size``. Every body is streamed from
a cheap pattern (a shared 256 KiB block with a per-chunk header, so that no two
writes are alike), hashed as it is generated, never held whole; every read is
streamed and hashed (so memory stays within the Store's per-transfer window:
``chunk_size * (max_concurrency + 2)``).

Afterwards `soak` verifies: every object a task reported written is read back
with the right sha256 and size; every key a task deleted (and did not write
again) is gone (``head`` raises NotFoundError); each shared key holds one of
the versions written to it, intact; and listing the prefix gives exactly the
surviving keys. A failure raises `SoakError` naming the key.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import random
import struct
import time
from collections.abc import Iterator
from typing import Any

import anyio

from asyncstore import NotFoundError, ObjectInfo, PreconditionFailedError, Store

__all__ = ["SIZES", "WEIGHTS", "SoakError", "SoakReport", "pick_size", "soak"]

KiB = 1024
MiB = 1024 * KiB
#: (probability, upper bound) of each size class; the last bound is the run's ``max_size``.
SIZES = ((0.70, 64 * KiB), (0.25, 4 * MiB), (0.05, None))
#: Operation weights.
WEIGHTS = {"put": 40, "get": 25, "list": 10, "delete": 15, "shared-put": 5, "shared-get": 5}
#: Keys each task owns, and keys every task writes.
KEYS_PER_TASK = 6
SHARED_KEYS = 4
#: Bodies are generated (and reads hashed) in blocks of this size.
BLOCK = 256 * KiB
_BLOCK = random.Random(0x50A4).randbytes(BLOCK)
#: Objects verified at once after the run.
VERIFY_CONCURRENCY = 8


class SoakError(AssertionError):
    """What the store holds is not what the tasks wrote (or deleted)."""


@dataclasses.dataclass
class SoakReport:
    """What a soak run did, and what its verification found.

    Attributes:
        tasks: Concurrent tasks.
        ops: Operations done, per kind (``put``, ``get``, ``list``, ``delete``,
            ``shared-put``, ``shared-get``).
        bytes_written: Body bytes of every put.
        bytes_read: Body bytes of every get during the run.
        largest: The largest object written.
        seconds: Wall time of the concurrent phase.
        verify_seconds: Wall time of the verification.
        written: Objects the tasks hold at the end (reported written, not deleted since).
        deleted: Keys deleted (and not written again), each checked gone.
        shared: Shared keys written, each checked to hold one intact version.
        peak_stored: The most bytes the tasks' keys held at once (what a memory
            backend keeps in the process).
        replaced_during_read: Shared gets that raised PreconditionFailedError
            because another task replaced the object while it was read.
        lost_writes: Shared puts that lost to another task's put of the key
            (``lost_write_errors``).
    """

    tasks: int
    ops: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    bytes_written: int = 0
    bytes_read: int = 0
    largest: int = 0
    seconds: float = 0.0
    verify_seconds: float = 0.0
    written: int = 0
    deleted: int = 0
    shared: int = 0
    peak_stored: int = 0
    replaced_during_read: int = 0
    lost_writes: int = 0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ops"] = dict(self.ops)
        data["total_ops"] = self.total_ops
        return data


def pick_size(rng: random.Random, max_size: int) -> int:
    """A size from `SIZES`, capped at ``max_size``."""
    roll = rng.random()
    low = 0
    for probability, bound in SIZES:
        high = max_size if bound is None else min(bound, max_size)
        if roll < probability:
            return rng.randint(min(low, high), high)
        roll -= probability
        low = high + 1
    return max_size


def _blocks(tag: int, size: int) -> Iterator[bytes]:
    """The body of write ``tag``: the shared block, each copy headed by (tag, index)."""
    for index, offset in enumerate(range(0, size, BLOCK)):
        n = min(BLOCK, size - offset)
        header = struct.pack(">QQ", tag, index)
        yield (header + _BLOCK[len(header) : n])[:n]


class PatternSource:
    """An async iterable of write ``tag``'s body that hashes it as it is consumed.

    A class rather than an async generator: a put that fails half-way leaves it
    unfinished, which trio reports (as a ResourceWarning) for async generators.
    """

    def __init__(self, tag: int, size: int) -> None:
        self.size = size
        self._blocks = _blocks(tag, size)
        self._hash = hashlib.sha256()
        self._sent = 0

    def __aiter__(self) -> PatternSource:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        block = next(self._blocks, None)
        if block is None:
            raise StopAsyncIteration
        self._hash.update(block)
        self._sent += len(block)
        return block

    def digest(self) -> str:
        if self._sent != self.size:
            raise SoakError(f"the put consumed {self._sent} of {self.size} bytes")
        return "sha256:" + self._hash.hexdigest()


def _digest(tag: int, size: int) -> str:
    digest = hashlib.sha256()
    for block in _blocks(tag, size):
        digest.update(block)
    return "sha256:" + digest.hexdigest()


def _small_body(tag: int, size: int) -> tuple[bytes, str]:
    data = b"".join(_blocks(tag, size))
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


async def _read(store: Store, key: str) -> tuple[str, int]:
    """Stream ``key`` and hash it (sha256 digest, size); NotFoundError if absent."""
    digest = hashlib.sha256()
    size = 0
    async with store.stream(key) as body:
        async for chunk in body:
            if len(chunk) >= BLOCK:
                await anyio.to_thread.run_sync(digest.update, chunk)
            else:
                digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


@dataclasses.dataclass
class _Shared:
    started: set[str] = dataclasses.field(default_factory=set)  # digests of puts begun
    done: int = 0  # puts finished


class _Run:
    def __init__(
        self,
        store: Store,
        prefix: str,
        seed: int,
        tasks: int,
        ops: int,
        max_size: int,
        replaced_read_errors: tuple[type[BaseException], ...],
        lost_write_errors: tuple[type[BaseException], ...],
        shared_reads: bool,
    ) -> None:
        self.shared_reads = shared_reads
        self.replaced_read_errors = replaced_read_errors
        self.lost_write_errors = lost_write_errors
        self.store = store
        self.prefix = prefix
        self.seed = seed
        self.tasks = tasks
        self.ops = ops
        self.max_size = max_size
        self.report = SoakReport(tasks=tasks)
        #: Per task: key -> (sha256, size) of what it holds; keys it deleted.
        self.expected: list[dict[str, tuple[str, int]]] = [{} for _ in range(tasks)]
        self.deleted: list[set[str]] = [set() for _ in range(tasks)]
        self.shared: dict[str, _Shared] = {}
        self.stored = 0
        self._tags = 0

    def tag(self) -> int:
        self._tags += 1
        return self.seed << 32 | self._tags

    def own_key(self, task: int, rng: random.Random) -> str:
        return f"{self.prefix}/t{task:02d}/k{rng.randrange(KEYS_PER_TASK)}"

    def shared_key(self, rng: random.Random) -> str:
        return f"{self.prefix}/shared/s{rng.randrange(SHARED_KEYS)}"

    async def write(self, key: str, rng: random.Random) -> tuple[str, int]:
        size = pick_size(rng, self.max_size)
        tag = self.tag()
        if size <= 64 * KiB:
            data, digest = _small_body(tag, size)
            result = await self.store.put(key, data)
        else:
            source = PatternSource(tag, size)
            result = await self.store.put(key, source)
            digest = source.digest()
        if (result.size, result.sha256) != (size, digest):
            raise SoakError(
                f"put of {key!r} reported {result.size} B {result.sha256}, wrote {size} B {digest}"
            )
        self.report.bytes_written += size
        self.report.largest = max(self.report.largest, size)
        return digest, size

    async def task(self, task: int) -> None:
        rng = random.Random(f"{self.seed}/{task}")
        expected = self.expected[task]
        deleted = self.deleted[task]
        kinds = list(WEIGHTS)
        weights = list(WEIGHTS.values())
        for _ in range(self.ops):
            kind = rng.choices(kinds, weights)[0]
            if kind == "shared-get" and not self.shared_reads:
                kind = "get"
            if kind == "put":
                key = self.own_key(task, rng)
                digest, size = await self.write(key, rng)
                self.stored += size - expected.get(key, ("", 0))[1]
                self.report.peak_stored = max(self.report.peak_stored, self.stored)
                expected[key] = digest, size
                deleted.discard(key)
            elif kind == "get":
                key = self.own_key(task, rng)
                await self.check_own(key, expected.get(key))
            elif kind == "list":
                folder = f"{self.prefix}/t{task:02d}/"
                listed = {
                    entry.key: entry.size
                    async for entry in self.store.list(folder)
                    if isinstance(entry, ObjectInfo)
                }
                held = {key: size for key, (_, size) in expected.items()}
                if listed != held:
                    raise SoakError(f"listing {folder!r} gave {listed}, the task holds {held}")
            elif kind == "delete":
                key = self.own_key(task, rng)
                await self.store.delete(key)
                self.stored -= expected.pop(key, ("", 0))[1]
                deleted.add(key)
            elif kind == "shared-put":
                key = self.shared_key(rng)
                state = self.shared.setdefault(key, _Shared())
                size = pick_size(rng, self.max_size)
                tag = self.tag()
                # Known before the put starts: a concurrent get may see it.
                version = await anyio.to_thread.run_sync(_digest, tag, size)
                state.started.add(version)
                source = PatternSource(tag, size)
                try:
                    result = await self.store.put(key, source)
                except self.lost_write_errors:
                    state.started.discard(version)  # never committed, so never visible
                    self.report.lost_writes += 1
                    self.report.ops[kind] += 1
                    continue
                if result.sha256 != source.digest() or source.digest() not in state.started:
                    raise SoakError(f"put of shared {key!r} reported {result.sha256}")
                state.done += 1
                self.report.bytes_written += size
                self.report.largest = max(self.report.largest, size)
            else:  # shared-get
                key = self.shared_key(rng)
                state = self.shared.setdefault(key, _Shared())
                done_before = state.done
                try:
                    digest, size = await _read(self.store, key)
                except NotFoundError:
                    if done_before:
                        raise SoakError(f"shared {key!r} vanished after a put finished") from None
                except self.replaced_read_errors:
                    # Replaced by another task's put while it was read: the documented
                    # outcome (every range of a read is pinned to the first ETag).
                    self.report.replaced_during_read += 1
                else:
                    self.report.bytes_read += size
                    if digest not in state.started:
                        raise SoakError(f"shared {key!r} holds {digest}, which no task wrote")
            self.report.ops[kind] += 1

    async def check_own(self, key: str, want: tuple[str, int] | None) -> None:
        try:
            digest, size = await _read(self.store, key)
        except NotFoundError:
            if want is not None:
                raise SoakError(f"{key!r} is missing; it was written with {want[0]}") from None
            return
        if want is None:
            raise SoakError(f"{key!r} holds {size} B, but its last write was a delete")
        if (digest, size) != want:
            raise SoakError(f"{key!r} holds {size} B {digest}, not {want[1]} B {want[0]}")
        self.report.bytes_read += size

    async def verify(self) -> None:
        limiter = anyio.CapacityLimiter(VERIFY_CONCURRENCY)
        report = self.report

        async def own(key: str, want: tuple[str, int]) -> None:
            async with limiter:
                await self.check_own(key, want)

        async def gone(key: str) -> None:
            async with limiter:
                try:
                    info = await self.store.head(key)
                except NotFoundError:
                    return
                raise SoakError(f"{key!r} was deleted but holds {info.size} B")

        async def shared(key: str, state: _Shared) -> None:
            async with limiter:
                digest, _ = await _read(self.store, key)  # verified against its recorded sha256
                if digest not in state.started:
                    raise SoakError(f"shared {key!r} holds {digest}, none of the versions written")

        async with anyio.create_task_group() as tg:
            for expected, deleted in zip(self.expected, self.deleted, strict=True):
                for key, want in expected.items():
                    tg.start_soon(own, key, want)
                for key in deleted:
                    tg.start_soon(gone, key)
            for key, state in self.shared.items():
                if state.done:
                    tg.start_soon(shared, key, state)
        surviving = {key for expected in self.expected for key in expected}
        surviving |= {key for key, state in self.shared.items() if state.done}
        listed = {
            entry.key
            async for entry in self.store.list(self.prefix + "/")
            if isinstance(entry, ObjectInfo)
        }
        if listed != surviving:
            raise SoakError(
                f"listing {self.prefix!r}: {len(listed - surviving)} unexpected keys "
                f"{sorted(listed - surviving)[:5]}, {len(surviving - listed)} missing "
                f"{sorted(surviving - listed)[:5]}"
            )
        report.written = sum(len(expected) for expected in self.expected)
        report.deleted = sum(len(deleted) for deleted in self.deleted)
        report.shared = sum(1 for state in self.shared.values() if state.done)


async def soak(
    store: Store,
    prefix: str,
    *,
    seed: int = 0,
    tasks: int = 64,
    ops_per_task: int = 8,
    max_size: int = 32 * MiB,
    replaced_read_errors: tuple[type[BaseException], ...] = (PreconditionFailedError,),
    lost_write_errors: tuple[type[BaseException], ...] = (),
    shared_reads: bool = True,
) -> SoakReport:
    """Run the workload on ``store`` under ``prefix``, verify what it left, and report.

    Args:
        store: The store (its ``chunk_size`` and ``max_concurrency`` apply to every transfer).
        prefix: Key prefix of every key written (it should be empty at the start).
        seed: Seeds every task's choices and every body.
        tasks: Tasks running at once.
        ops_per_task: Operations per task.
        max_size: The largest object written.
        replaced_read_errors: What a read of a shared key may raise when another
            task replaces the object meanwhile (PreconditionFailedError: every
            range of a read is pinned to the first ETag).
        lost_write_errors: What a put of a shared key may raise when another
            task's put of it wins (Azure: whichever staged upload commits first
            discards the others' blocks, and they fail with UploadNotFoundError).
        shared_reads: Whether tasks read the shared keys while others write them
            (if not, those reads are reads of the task's own keys; the shared
            keys are still written concurrently and verified at the end).

    Raises:
        SoakError: what the store holds (or lists, or returned) is not what was written.
    """
    run = _Run(
        store,
        prefix.strip("/"),
        seed,
        tasks,
        ops_per_task,
        max_size,
        replaced_read_errors,
        lost_write_errors,
        shared_reads,
    )
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for task in range(tasks):
            tg.start_soon(run.task, task)
    run.report.seconds = time.perf_counter() - started
    started = time.perf_counter()
    await run.verify()
    run.report.verify_seconds = time.perf_counter() - started
    return run.report
