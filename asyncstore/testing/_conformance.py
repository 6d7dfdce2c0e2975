"""`StoreConformance`: the behaviour every backend must show, as pytest tests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest

from .._backend import MiB, WriteAttributes
from .._errors import (
    AlreadyExistsError,
    DigestMismatchError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRangeError,
    NotFoundError,
    PreconditionFailedError,
)
from .._meta import SHA256
from .._store import Store
from .._types import CommonPrefix, ObjectInfo
from ._data import pattern, pattern_chunks, sha256_of

__all__ = ["BAD_KEYS", "StoreConformance"]

#: Keys every backend must reject with InvalidKeyError.
BAD_KEYS: tuple[Any, ...] = (
    "",
    "/abs",
    "trailing/",
    "a//b",
    "a/../b",
    "../escape",
    "./here",
    "a/./b",
    "nul\x00byte",
    "tab\there",
    "newline\n",
    "del\x7f",
    "x" * 1025,
    "\ud800lone-surrogate",
    b"bytes-key",
    None,
    42,
)


async def _listdir(path: Any) -> list[str]:
    return sorted(await anyio.to_thread.run_sync(os.listdir, path))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _collect(store: Store, prefix: str = "", delimiter: str | None = None) -> list[Any]:
    return [entry async for entry in store.list(prefix, delimiter=delimiter)]


def _keys(entries: list[Any]) -> list[str]:
    return [e.key if isinstance(e, ObjectInfo) else e.prefix for e in entries]


class StoreConformance:
    """The behaviour every backend must show, as pytest tests over a ``store`` fixture.

    Attributes:
        part_size: chunk_size used where a test needs a multipart upload
            (5 MiB: the smallest part S3 allows).
        large_size: Size of the streamed round trip (1 GiB).
        concurrent_read_size: Size of the object read by 10 concurrent readers (64 MiB).
        skip: Test name -> reason, for behaviours a backend (or its emulator) cannot show.
    """

    pytestmark = pytest.mark.anyio

    part_size: ClassVar[int] = 5 * MiB
    large_size: ClassVar[int] = 1024 * MiB
    concurrent_read_size: ClassVar[int] = 64 * MiB
    skip: ClassVar[Mapping[str, str]] = {}

    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        """Yield a fresh, empty Store over the backend under test."""
        raise NotImplementedError("subclasses provide a `store` fixture")
        yield  # pragma: no cover

    async def leftovers(self, store: Store) -> list[str]:
        """Names of incomplete multipart uploads, staged blocks or temp files left behind."""
        raise NotImplementedError("subclasses say how to find what an aborted upload leaves")

    @pytest.fixture
    def workdir(self, tmp_path_factory: pytest.TempPathFactory) -> Any:
        """A private, empty local folder for files a test writes."""
        return tmp_path_factory.mktemp("conformance")

    @pytest.fixture(autouse=True)
    def _skip_known_gaps(self, request: pytest.FixtureRequest) -> None:
        name = getattr(request.node, "originalname", request.node.name)
        if name in self.skip:
            pytest.skip(self.skip[name])

    # -- missing keys --------------------------------------------------------------------------

    async def test_get_missing_key_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError) as info:
            await store.get("missing/key")
        assert "missing/key" in str(info.value)
        assert info.value.key == "missing/key"

    async def test_head_missing_key_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError, match="missing"):
            await store.head("missing")

    async def test_stream_missing_key_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            async for _ in store.stream("missing"):
                pass
        with pytest.raises(NotFoundError):
            async with store.stream("missing"):
                pass

    async def test_exists_reflects_presence(self, store: Store) -> None:
        assert not await store.exists("k")
        await store.put("k", b"v")
        assert await store.exists("k")

    async def test_delete_of_missing_key_is_not_an_error(self, store: Store) -> None:
        await store.delete("never/written")
        assert not await store.exists("never/written")

    async def test_download_file_of_missing_key_leaves_no_file(
        self, store: Store, workdir: Any
    ) -> None:
        target = workdir / "out.bin"
        with pytest.raises(NotFoundError):
            await store.download_file("missing", target)
        assert await _listdir(workdir) == []

    # -- content -------------------------------------------------------------------------------

    async def test_put_get_round_trip_records_metadata_and_sha256(self, store: Store) -> None:
        data = pattern(1000)
        result = await store.put(
            "dir/obj.bin", data, content_type="application/x-test", metadata={"owner": "qa"}
        )
        assert result.size == 1000
        assert result.sha256 == _digest(data)
        assert await store.get("dir/obj.bin") == data
        info = await store.head("dir/obj.bin")
        assert info.key == "dir/obj.bin"
        assert info.size == 1000
        assert info.etag == result.etag
        assert info.content_type == "application/x-test"
        assert dict(info.metadata) == {"owner": "qa"}
        assert info.sha256 == _digest(data)

    async def test_empty_object(self, store: Store) -> None:
        result = await store.put("empty", b"")
        assert result.size == 0
        assert result.sha256 == _digest(b"")
        assert await store.get("empty") == b""
        assert [c async for c in store.stream("empty")] == []
        assert (await store.head("empty")).size == 0

    async def test_overwrite_with_smaller_content_truncates(self, store: Store) -> None:
        await store.put("k", pattern(3 * self.part_size), chunk_size=self.part_size)
        await store.put("k", b"short")
        assert await store.get("k") == b"short"
        assert (await store.head("k")).size == 5

    async def test_binary_and_non_utf8_content_round_trips(self, store: Store) -> None:
        data = bytes(range(256)) * 4 + b"\xff\xfe\x00\x80"
        await store.put("bin", data)
        assert await store.get("bin") == data

    async def test_multipart_round_trip_with_every_source_kind(
        self, store: Store, workdir: Any
    ) -> None:
        data = pattern(2 * self.part_size + 12345, seed=7)
        path = workdir / "src.bin"
        await anyio.Path(path).write_bytes(data)

        async def agen() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 100_000):
                yield data[i : i + 100_000]

        sources: list[Any] = [
            data,
            bytearray(data),
            memoryview(data),
            path,
            anyio.Path(path),
            [data[: self.part_size], data[self.part_size :]],
            (data[i : i + 333_333] for i in range(0, len(data), 333_333)),
            agen(),
        ]
        for index, source in enumerate(sources):
            key = f"src/{index}"
            result = await store.put(key, source, chunk_size=self.part_size)
            assert result.size == len(data), f"source #{index}"
            assert result.sha256 == _digest(data), f"source #{index}"
            assert result.part_count == 3, f"source #{index}"
            assert await store.get(key) == data, f"source #{index}"

    # -- ranges --------------------------------------------------------------------------------

    async def test_ranged_reads(self, store: Store) -> None:
        data = pattern(10_000)
        await store.put("r", data)
        assert await store.get("r", start=100) == data[100:]
        assert await store.get("r", end=50) == data[:50]
        assert await store.get("r", start=100, end=200) == data[100:200]
        assert await store.get("r", suffix=10) == data[-10:]
        assert await store.get("r", start=10_000) == b""
        chunks = [c async for c in store.stream("r", start=5, end=9_000, chunk_size=1000)]
        assert b"".join(chunks) == data[5:9_000]

    async def test_get_if_match_reads_only_that_version(self, store: Store) -> None:
        data = pattern(3 * MiB, seed=4)
        await store.put("pinned", data)
        etag = (await store.head("pinned")).etag
        assert await store.get("pinned", start=7, end=MiB + 7, if_match=etag) == data[7 : MiB + 7]
        assert await store.get("pinned", if_match=etag, chunk_size=MiB) == data
        assert await store.get("pinned", suffix=5, if_match=etag) == data[-5:]
        await store.put("pinned", data[::-1])
        with pytest.raises(PreconditionFailedError, match="pinned") as info:
            await store.get("pinned", start=7, end=MiB + 7, if_match=etag)
        assert info.value.key == "pinned"
        with pytest.raises(PreconditionFailedError):
            await store.get("pinned", if_match=etag, chunk_size=MiB)
        with pytest.raises(InvalidArgumentError, match="if_match"):
            await store.get("pinned", if_match=1)  # type: ignore[arg-type]

    async def test_range_end_past_the_end_is_clamped(self, store: Store) -> None:
        await store.put("r", b"0123456789")
        assert await store.get("r", start=5, end=1000) == b"56789"
        assert await store.get("r", suffix=1000) == b"0123456789"

    async def test_range_start_past_the_end_raises_invalid_range(self, store: Store) -> None:
        await store.put("r", b"0123456789")
        with pytest.raises(InvalidRangeError) as info:
            await store.get("r", start=11)
        assert "r" in str(info.value)

    @pytest.mark.parametrize(
        "bounds",
        [
            {"start": -1},
            {"end": -5},
            {"suffix": -1},
            {"start": 5, "end": 2},
            {"suffix": 1, "start": 0},
        ],
    )
    async def test_bad_ranges_raise_invalid_range(
        self, store: Store, bounds: dict[str, Any]
    ) -> None:
        await store.put("r", b"0123456789")
        with pytest.raises(InvalidRangeError):
            await store.get("r", **bounds)

    async def test_parallel_ranged_download_in_order(self, store: Store) -> None:
        data = pattern(3 * self.part_size + 17, seed=3)
        await store.put("big", data, chunk_size=self.part_size)
        async with store.stream("big", chunk_size=MiB, max_concurrency=4) as body:
            received = b"".join([chunk async for chunk in body])
        assert received == data
        assert await store.get("big", chunk_size=MiB, max_concurrency=4) == data

    # -- listing -------------------------------------------------------------------------------

    async def test_list_without_delimiter_is_recursive_and_sorted(self, store: Store) -> None:
        keys = ["b", "a/2", "a/1", "a-c", "a/sub/x", "c/d/e"]
        for key in keys:
            await store.put(key, key.encode())
        entries = await _collect(store)
        assert all(isinstance(e, ObjectInfo) for e in entries)
        assert _keys(entries) == sorted(keys)
        sizes = {e.key: e.size for e in entries}
        assert sizes == {key: len(key) for key in keys}

    async def test_list_with_delimiter_rolls_up_common_prefixes(self, store: Store) -> None:
        for key in ["a/1", "a/2", "a/sub/x", "a/sub/y", "b", "c/d/e"]:
            await store.put(key, b"x")
        top = await _collect(store, delimiter="/")
        assert [e.prefix for e in top if isinstance(e, CommonPrefix)] == ["a/", "c/"]
        assert [e.key for e in top if isinstance(e, ObjectInfo)] == ["b"]
        under_a = await _collect(store, "a/", delimiter="/")
        assert _keys(under_a) == ["a/1", "a/2", "a/sub/"]

    async def test_list_prefix_keeps_a_and_ab_apart(self, store: Store) -> None:
        for key in ["a/x", "ab/y", "abc", "a-b"]:
            await store.put(key, b"x")
        assert _keys(await _collect(store, "a/")) == ["a/x"]
        assert _keys(await _collect(store, "ab")) == ["ab/y", "abc"]
        assert _keys(await _collect(store, "a")) == ["a-b", "a/x", "ab/y", "abc"]
        assert _keys(await _collect(store, "zzz")) == []

    async def test_a_key_can_also_be_a_prefix(self, store: Store) -> None:
        await store.put("a", b"object")
        await store.put("a/b", b"below")
        assert _keys(await _collect(store, "a")) == ["a", "a/b"]
        await store.delete("a")
        assert await store.get("a/b") == b"below"

    async def test_list_paginates_past_1000_keys(self, store: Store) -> None:
        keys = [f"many/{i:05d}" for i in range(1100)]
        limiter = anyio.CapacityLimiter(32)

        async def put(key: str) -> None:
            async with limiter:
                await store.put(key, b"")

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(put, key)
        listed = _keys(await _collect(store, "many/"))
        assert listed == keys

    async def test_list_hides_asyncstore_metadata(self, store: Store) -> None:
        await store.put("k", b"data", metadata={"user": "yes"})
        (info,) = await _collect(store)
        assert isinstance(info, ObjectInfo)
        assert not any(name.startswith("asyncstore-") for name in info.metadata)

    async def test_invalid_prefix_rejected(self, store: Store) -> None:
        with pytest.raises(InvalidKeyError):
            store.list("/abs")
        with pytest.raises(InvalidKeyError):
            store.list("a/../b/")

    # -- delete and copy -----------------------------------------------------------------------

    async def test_delete_leaves_prefix_sharing_siblings(self, store: Store) -> None:
        for key in ["a", "ab", "abc/d", "a-b"]:
            await store.put(key, key.encode())
        await store.delete("a")
        assert not await store.exists("a")
        for key in ["ab", "abc/d", "a-b"]:
            assert await store.get(key) == key.encode()

    async def test_delete_many(self, store: Store) -> None:
        for i in range(5):
            await store.put(f"d/{i}", b"x")
        await store.delete_many([f"d/{i}" for i in range(3)] + ["d/missing"])
        assert _keys(await _collect(store, "d/")) == ["d/3", "d/4"]

    async def test_delete_many_validates_every_key_before_deleting(self, store: Store) -> None:
        await store.put("keep", b"x")
        with pytest.raises(InvalidKeyError):
            await store.delete_many(["keep", "bad//key"])
        assert await store.exists("keep")

    async def test_copy_keeps_bytes_and_metadata(self, store: Store) -> None:
        data = pattern(5000)
        await store.put("src", data, content_type="text/x", metadata={"m": "1"})
        await store.copy("src", "dst/copy")
        assert await store.get("dst/copy") == data
        info = await store.head("dst/copy")
        assert info.content_type == "text/x"
        assert dict(info.metadata) == {"m": "1"}
        assert info.sha256 == _digest(data)
        assert await store.get("src") == data

    async def test_copy_of_missing_key_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            await store.copy("missing", "dst")
        assert not await store.exists("dst")

    # -- conditional writes --------------------------------------------------------------------

    async def test_create_if_absent_race_has_exactly_one_winner(self, store: Store) -> None:
        outcomes: dict[int, str] = {}

        async def writer(i: int) -> None:
            try:
                await store.put("race", f"writer {i}".encode(), mode="create")
            except AlreadyExistsError:
                outcomes[i] = "lost"
            else:
                outcomes[i] = "won"

        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(writer, i)
        winners = [i for i, outcome in outcomes.items() if outcome == "won"]
        assert len(outcomes) == 16
        assert len(winners) == 1
        assert await store.get("race") == f"writer {winners[0]}".encode()

    async def test_create_mode_on_existing_key_keeps_it_for_multipart_too(
        self, store: Store
    ) -> None:
        await store.put("k", b"original")
        big = pattern(2 * self.part_size + 1)
        with pytest.raises(AlreadyExistsError):
            await store.put("k", big, mode="create", chunk_size=self.part_size)
        with pytest.raises(AlreadyExistsError):
            await store.put("k", b"small", mode="create")
        assert await store.get("k") == b"original"
        assert await self.leftovers(store) == []

    async def test_if_match_write(self, store: Store) -> None:
        first = await store.put("k", b"one")
        second = await store.put("k", b"two", mode={"if_match": first.etag})
        assert await store.get("k") == b"two"
        with pytest.raises(PreconditionFailedError):
            await store.put("k", b"three", mode={"if_match": first.etag})
        with pytest.raises(PreconditionFailedError):
            await store.put("nope", b"x", mode={"if_match": second.etag})
        assert await store.get("k") == b"two"
        assert not await store.exists("nope")

    # -- concurrency ---------------------------------------------------------------------------

    async def test_32_concurrent_writers_to_different_keys(self, store: Store) -> None:
        async def writer(i: int) -> None:
            await store.put(f"w/{i:02d}", pattern(50_000 + i, seed=i))

        async with anyio.create_task_group() as tg:
            for i in range(32):
                tg.start_soon(writer, i)
        for i in range(32):
            assert await store.get(f"w/{i:02d}") == pattern(50_000 + i, seed=i)

    async def test_10_concurrent_ranged_readers_of_one_object(self, store: Store) -> None:
        size = self.concurrent_read_size
        expected, _ = await sha256_of(pattern_chunks(size, seed=5))
        await store.put("shared", pattern_chunks(size, seed=5), chunk_size=self.part_size)
        results: dict[int, str] = {}

        async def reader(i: int) -> None:
            async with store.stream("shared", chunk_size=2 * MiB, max_concurrency=4) as body:
                results[i], _ = await sha256_of(body)

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(reader, i)
        assert results == dict.fromkeys(range(10), expected)

    @pytest.mark.slow
    async def test_large_streamed_round_trip(self, store: Store) -> None:
        size = self.large_size
        result = await store.put(
            "large.bin", pattern_chunks(size, seed=9), chunk_size=8 * MiB, max_concurrency=4
        )
        expected, _ = await sha256_of(pattern_chunks(size, seed=9))
        assert result.size == size
        assert result.sha256 == expected
        async with store.stream("large.bin", chunk_size=8 * MiB, max_concurrency=4) as body:
            actual, n = await sha256_of(body)
        assert (actual, n) == (expected, size)

    async def test_upload_memory_is_bounded_by_the_window(self, store: Store, workdir: Any) -> None:
        path = workdir / "src.bin"
        await anyio.Path(path).write_bytes(pattern(8 * self.part_size + 3))
        info = await store.upload_file(
            path, "bounded", chunk_size=self.part_size, max_concurrency=2
        )
        assert info.part_count == 9
        assert 0 < info.peak_buffered <= self.part_size * (2 + 2)  # one read ahead, one hashed
        assert 1 <= info.concurrency <= 2

    # -- files ---------------------------------------------------------------------------------

    async def test_upload_and_download_file_restore_bytes_mode_and_mtime(
        self, store: Store, workdir: Any
    ) -> None:
        src = workdir / "src.bin"
        data = pattern(2 * self.part_size + 99)
        await anyio.Path(src).write_bytes(data)
        await anyio.to_thread.run_sync(os.chmod, src, 0o640)
        await anyio.to_thread.run_sync(os.utime, src, (1_600_000_000.5, 1_600_000_000.5))
        up = await store.upload_file(src, "files/src.bin", chunk_size=self.part_size)
        assert up.bytes_transferred == len(data)
        assert up.sha256 == _digest(data)
        assert up.part_count == 3
        info = await store.head("files/src.bin")
        assert info.mode == 0o640
        assert info.mtime == pytest.approx(1_600_000_000.5)
        dst = workdir / "out" / "dst.bin"
        down = await store.download_file("files/src.bin", dst, chunk_size=MiB)
        assert down.sha256 == up.sha256
        assert down.bytes_transferred == len(data)
        assert await anyio.Path(dst).read_bytes() == data
        st = await anyio.Path(dst).stat()
        assert st.st_mode & 0o7777 == 0o640
        assert st.st_mtime == pytest.approx(1_600_000_000.5)
        assert sorted(await _listdir(dst.parent)) == ["dst.bin"]

    async def test_progress_is_reported_up_to_the_total(self, store: Store) -> None:
        seen: list[tuple[int, int | None]] = []

        async def progress(done: int, total: int | None) -> None:
            seen.append((done, total))

        data = pattern(3 * self.part_size)
        await store.put("p", data, chunk_size=self.part_size, progress=progress)
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)
        assert seen[-1] == (len(data), len(data))

    # -- integrity -----------------------------------------------------------------------------

    async def _plant_corrupt(self, store: Store, key: str, data: bytes) -> None:
        """Write ``data`` with a sha256 recorded for other bytes, through the backend itself."""
        wrong = _digest(data + b"!")
        attrs = WriteAttributes(metadata={SHA256: wrong})
        await store.backend.put(key, memoryview(data), attrs, {})

    async def test_corrupt_object_fails_verification_on_every_read_path(
        self, store: Store, workdir: Any
    ) -> None:
        data = pattern(3 * MiB)
        await self._plant_corrupt(store, "bad", data)
        with pytest.raises(DigestMismatchError) as info:
            await store.get("bad", chunk_size=MiB)
        assert info.value.actual == _digest(data)
        assert info.value.expected == _digest(data + b"!")
        with pytest.raises(DigestMismatchError):
            async with store.stream("bad", chunk_size=MiB) as body:
                async for _ in body:
                    pass
        with pytest.raises(DigestMismatchError):
            async for _ in store.stream("bad", chunk_size=MiB):
                pass
        assert await store.get("bad", verify=False) == data
        assert await store.get("bad", start=1) == data[1:]  # partial reads cannot be verified

    async def test_corrupt_download_leaves_no_file(self, store: Store, workdir: Any) -> None:
        await self._plant_corrupt(store, "bad", pattern(3 * MiB))
        target = workdir / "out.bin"
        with pytest.raises(DigestMismatchError):
            await store.download_file("bad", target, chunk_size=MiB)
        assert await _listdir(workdir) == []
        await anyio.Path(target).write_bytes(b"previous")
        with pytest.raises(DigestMismatchError):
            await store.download_file("bad", target, chunk_size=MiB)
        assert await anyio.Path(target).read_bytes() == b"previous"
        assert await _listdir(workdir) == ["out.bin"]

    async def test_object_replaced_mid_download_fails_clearly(self, store: Store) -> None:
        await store.put("moving", pattern(4 * MiB, seed=1))
        body = store.stream("moving", chunk_size=MiB)
        first = await body.__anext__()
        assert first == pattern(4 * MiB, seed=1)[: len(first)]
        await store.put("moving", pattern(4 * MiB, seed=2))
        with pytest.raises(PreconditionFailedError, match="replaced during the download"):
            async for _ in body:
                pass
        await body.aclose()

    # -- cancellation --------------------------------------------------------------------------

    async def test_cancel_mid_upload_leaves_nothing(self, store: Store) -> None:
        part_done = anyio.Event()

        async def endless() -> AsyncIterator[bytes]:
            yield pattern(self.part_size, seed=1)
            yield pattern(self.part_size, seed=2)
            yield pattern(self.part_size, seed=3)
            await anyio.sleep_forever()
            yield b""  # pragma: no cover

        async def progress(done: int, total: int | None) -> None:
            part_done.set()

        async with anyio.create_task_group() as tg:

            async def upload() -> None:
                await store.put(
                    "cancelled", endless(), chunk_size=self.part_size, progress=progress
                )

            tg.start_soon(upload)
            await part_done.wait()
            tg.cancel_scope.cancel()
        assert not await store.exists("cancelled")
        assert await self.leftovers(store) == []
        assert _keys(await _collect(store)) == []

    async def test_cancel_mid_download_leaves_no_file(self, store: Store, workdir: Any) -> None:
        await store.put("obj", pattern(6 * MiB))
        started = anyio.Event()

        async def progress(done: int, total: int | None) -> None:
            started.set()
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:

            async def download() -> None:
                await store.download_file(
                    "obj", workdir / "out.bin", chunk_size=MiB, progress=progress
                )

            tg.start_soon(download)
            await started.wait()
            tg.cancel_scope.cancel()
        assert await _listdir(workdir) == []

    async def test_breaking_out_of_a_stream_releases_it(self, store: Store) -> None:
        await store.put("obj", pattern(6 * MiB))
        async with store.stream("obj", chunk_size=MiB, max_concurrency=3) as body:
            async for chunk in body:
                assert len(chunk) == MiB
                break
        assert await store.get("obj") == pattern(6 * MiB)

    # -- caller-driven multipart uploads ---------------------------------------------------------

    async def test_caller_driven_multipart_upload(self, store: Store) -> None:
        size = max(self.part_size, store.capabilities.min_part_size)
        pieces = [pattern(size, seed=1), pattern(size, seed=2), pattern(1234, seed=3)]
        data = b"".join(pieces)
        upload_id = await store.create_upload("mp", content_type="x/y", metadata={"a": "1"})
        assert isinstance(upload_id, str)
        assert not await store.exists("mp")
        offsets = [0, size, 2 * size]
        parts = [
            await store.upload_part(
                "mp", upload_id, number, pieces[number - 1], offset=offsets[number - 1]
            )
            for number in (3, 1, 2)
        ]
        result = await store.complete_upload(
            "mp", upload_id, parts, sha256=_digest(data), content_type="x/y", metadata={"a": "1"}
        )
        assert (result.size, result.part_count, result.sha256) == (len(data), 3, _digest(data))
        assert await store.get("mp") == data
        info = await store.head("mp")
        assert (info.sha256, info.content_type, dict(info.metadata)) == (
            _digest(data),
            "x/y",
            {"a": "1"},
        )
        assert await self.leftovers(store) == []

    async def test_caller_driven_upload_abort_and_bad_input(self, store: Store) -> None:
        upload_id = await store.create_upload("mp")
        part = await store.upload_part("mp", upload_id, 1, b"only part", offset=0)
        with pytest.raises(InvalidArgumentError, match="without gaps"):
            await store.complete_upload("mp", upload_id, [part, part], sha256=_digest(b""))
        with pytest.raises(InvalidArgumentError, match="sha256"):
            await store.complete_upload("mp", upload_id, [part], sha256="md5:abc")
        with pytest.raises(InvalidArgumentError, match="bytes-like"):
            await store.upload_part("mp", upload_id, 2, "text", offset=9)
        with pytest.raises(InvalidArgumentError, match="offset"):
            await store.upload_part("mp", upload_id, 2, b"x", offset=-1)
        await store.abort_upload("mp", upload_id)
        await store.abort_upload("mp", upload_id)
        assert not await store.exists("mp")
        assert await self.leftovers(store) == []

    async def test_caller_driven_upload_respects_create_mode(self, store: Store) -> None:
        await store.put("taken", b"first")
        upload_id = await store.create_upload("taken", mode="create")
        part = await store.upload_part("taken", upload_id, 1, b"second", offset=0)
        with pytest.raises(AlreadyExistsError):
            await store.complete_upload(
                "taken", upload_id, [part], sha256=_digest(b"second"), mode="create"
            )
        await store.abort_upload("taken", upload_id)
        assert await store.get("taken") == b"first"
        assert await self.leftovers(store) == []

    # -- bad input -----------------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
    async def test_invalid_keys_rejected_on_every_operation(self, store: Store, key: Any) -> None:
        for call in (
            lambda: store.put(key, b"x"),
            lambda: store.get(key),
            lambda: store.head(key),
            lambda: store.delete(key),
            lambda: store.copy(key, "ok"),
            lambda: store.copy("ok", key),
        ):
            with pytest.raises(InvalidKeyError):
                await call()
        with pytest.raises(InvalidKeyError):
            store.stream(key)
        assert _keys(await _collect(store)) == []
