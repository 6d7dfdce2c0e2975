"""ContentStore blobs: put (one pass, dedupe, expected), verified reads, stat/exists/delete/list."""

# ruff: noqa: F811 - the fixtures imported from test_cas_helpers are test parameters here

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from test_cas_helpers import (  # noqa: F401 - cas and store are fixtures
    PART,
    cas,
    counts,
    files_in,
    keys,
    sha256,
    sha512,
    store,
)

from asyncstore import (
    DigestMismatchError,
    InvalidArgumentError,
    InvalidDigestError,
    InvalidKeyError,
    MemoryBackend,
    NotFoundError,
    Store,
    WriteAttributes,
)
from asyncstore.cas import BlobStream, ContentStore, Digest, digest_of
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# -- put ----------------------------------------------------------------------------------------


async def test_put_bytes_stores_the_blob_under_its_digest(cas: ContentStore) -> None:
    desc = await cas.put(b"hello", media_type="text/plain")
    assert desc.digest == sha256(b"hello")
    assert isinstance(desc.digest, Digest)
    assert (desc.size, desc.media_type) == (5, "text/plain")
    hexd = desc.digest.encoded
    assert await keys(cas.store) == [f"blobs/sha256/{hexd[:2]}/{hexd}"]
    assert await cas.get(desc.digest) == b"hello"
    assert (await cas.stat(desc.digest)).media_type == "text/plain"


async def test_the_empty_blob_and_the_empty_json_blob(cas: ContentStore) -> None:
    empty = await cas.put(b"")
    assert (empty.digest, empty.size) == (EMPTY, 0)
    assert await cas.get(EMPTY) == b""
    braces = await cas.put(b"{}")
    assert braces.digest == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
    assert await cas.get(braces.digest) == b"{}"


async def test_a_prefix_puts_everything_below_it(store: Store) -> None:
    cas = ContentStore(store, "team/cas/")
    desc = await cas.put(b"x")
    assert await keys(store) == [
        f"team/cas/blobs/sha256/{desc.digest.encoded[:2]}/{desc.digest.encoded}"
    ]
    assert [d async for d in cas.list_digests()] == [desc.digest]
    assert [d async for d in ContentStore(store).list_digests()] == []


@pytest.mark.parametrize("prefix", ["no-slash", "/abs/", "a//b/", "a/../b/", 5])
async def test_a_bad_prefix_is_rejected(store: Store, prefix: object) -> None:
    with pytest.raises(InvalidKeyError):
        ContentStore(store, prefix)  # type: ignore[arg-type]


async def test_bad_options_are_rejected(store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="store must be"):
        ContentStore("memory://")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="inline_limit"):
        ContentStore(store, inline_limit=0)
    with pytest.raises(InvalidArgumentError, match="session_lease"):
        ContentStore(store, session_lease=-1)
    with pytest.raises(InvalidArgumentError, match="max_concurrency"):
        ContentStore(store, max_concurrency=True)


async def test_put_of_a_large_stream_goes_through_staging_and_leaves_nothing_else(
    cas: ContentStore,
) -> None:
    data = pattern(5 * PART + 123)
    desc = await cas.put(chunks_of(data))
    assert (desc.digest, desc.size) == (sha256(data), len(data))
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]
    assert counts(cas.store).writes_under("staging/") == 1
    assert await cas.get(desc.digest) == data


async def test_put_of_a_small_stream_is_written_straight_to_its_blob_key(cas: ContentStore) -> None:
    data = pattern(PART // 2)
    desc = await cas.put(chunks_of(data, 1000))
    assert desc.digest == sha256(data)
    assert counts(cas.store).writes_under("staging/") == 0
    assert counts(cas.store).writes[cas.blob_key(desc.digest)] == 1


async def test_put_accepts_paths_files_and_iterables(cas: ContentStore, tmp_path: Path) -> None:
    data = pattern(3 * PART + 7)
    path = tmp_path / "src.bin"
    await anyio.Path(path).write_bytes(data)
    expected = sha256(data)
    assert (await cas.put(path)).digest == expected
    assert (await cas.put(anyio.Path(path))).digest == expected
    assert (await cas.put(io.BytesIO(data))).digest == expected
    assert (await cas.put([data[:10], data[10:]])).digest == expected
    assert (await cas.put(bytearray(data))).digest == expected
    assert (await cas.put(memoryview(data))).digest == expected
    assert cas.statistics().blobs_written == 1
    assert cas.statistics().blobs_deduplicated == 5


async def test_put_rejects_what_is_not_bytes(cas: ContentStore) -> None:
    with pytest.raises(InvalidArgumentError, match="is a str"):
        await cas.put("text")
    with pytest.raises(InvalidArgumentError, match="cannot upload a int"):
        await cas.put(5)
    with pytest.raises(InvalidArgumentError, match="type/subtype"):
        await cas.put(b"x", media_type="nonsense")
    with pytest.raises(InvalidDigestError, match="'md5' is not supported"):
        await cas.put(b"x", algorithm="md5")
    with pytest.raises(InvalidArgumentError, match="differs from that of the expected digest"):
        await cas.put(b"x", expected=sha256(b"x"), algorithm="sha512")
    assert await keys(cas.store) == []


async def test_a_second_put_of_the_same_bytes_is_skipped(cas: ContentStore) -> None:
    first = await cas.put(b"same")
    again = await cas.put(b"same")
    assert first == again
    assert counts(cas.store).writes[cas.blob_key(first.digest)] == 1
    stats = cas.statistics()
    assert (stats.blobs_written, stats.blobs_deduplicated, stats.bytes_deduplicated) == (1, 1, 4)


async def test_a_large_existing_blob_is_found_by_head_and_not_sent_again(cas: ContentStore) -> None:
    data = pattern(300 * 1024)
    desc = await cas.put(data)
    await cas.put(data)
    await cas.put(chunks_of(data), expected=desc.digest)
    assert counts(cas.store).attempts[cas.blob_key(desc.digest)] == 1
    assert counts(cas.store).writes_under("staging/") == 0
    assert cas.statistics().blobs_deduplicated == 2


@pytest.mark.parametrize("size", [10, 5 * PART])
async def test_put_with_a_wrong_expected_digest_stores_nothing(
    cas: ContentStore, size: int
) -> None:
    data = pattern(size)
    wrong = sha256(b"something else")
    with pytest.raises(DigestMismatchError) as info:
        await cas.put(chunks_of(data), expected=wrong)
    assert (info.value.expected, info.value.actual) == (wrong, sha256(data))
    assert wrong in str(info.value)
    assert await keys(cas.store) == []
    with pytest.raises(DigestMismatchError):
        await cas.put(data, expected=wrong)
    assert await keys(cas.store) == []
    assert cas.statistics().digest_mismatches == 2


async def test_a_wrong_claim_on_a_stored_blob_is_caught_without_uploading(
    cas: ContentStore,
) -> None:
    secret = await cas.put(pattern(5 * PART, seed=1))
    with pytest.raises(DigestMismatchError):
        await cas.put(chunks_of(pattern(5 * PART, seed=2)), expected=secret.digest)
    assert counts(cas.store).writes_under("staging/") == 0


async def test_put_with_the_right_expected_digest_succeeds(cas: ContentStore) -> None:
    data = pattern(5 * PART)
    desc = await cas.put(chunks_of(data), expected=sha256(data))
    assert desc.digest == sha256(data)


async def test_sha512_blobs_are_stored_and_verified(cas: ContentStore) -> None:
    small = await cas.put(b"abc", algorithm="sha512")
    assert small.digest == sha512(b"abc")
    data = pattern(5 * PART)
    large = await cas.put(chunks_of(data), expected=sha512(data))
    assert large.digest == sha512(data)
    assert cas.blob_key(large.digest).startswith("blobs/sha512/")
    assert await cas.get(large.digest) == data
    assert [d.algorithm async for d in cas.list_digests()] == ["sha512", "sha512"]
    with pytest.raises(DigestMismatchError):
        await cas.put(chunks_of(data), expected=sha512(b"other"))


async def test_a_corrupt_blob_at_its_key_is_replaced_by_a_put(cas: ContentStore) -> None:
    good = pattern(300 * 1024)
    key = cas.blob_key(sha256(good))
    await cas.store.put(key, b"rotten")
    desc = await cas.put(good)
    assert await cas.get(desc.digest) == good
    await cas.store.put(key, b"rotten")
    await cas.put(b"tiny")  # unrelated
    small = b"s" * 10
    await cas.store.put(cas.blob_key(sha256(small)), b"rotten!!!!")
    assert await cas.get((await cas.put(small)).digest) == small


async def test_sixteen_concurrent_puts_of_one_blob_store_it_once(cas: ContentStore) -> None:
    data = pattern(300 * 1024)
    results = []

    async def push() -> None:
        results.append(await cas.put(data))

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(push)
    assert len(results) == 16
    assert {r.digest for r in results} == {sha256(data)}
    assert counts(cas.store).writes[cas.blob_key(sha256(data))] == 1
    assert await cas.get(sha256(data)) == data


async def test_sixteen_concurrent_streamed_puts_of_one_blob_all_succeed(cas: ContentStore) -> None:
    data = pattern(4 * PART)
    results = []

    async def push() -> None:
        results.append(await cas.put(chunks_of(data)))

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(push)
    assert {r.digest for r in results} == {sha256(data)}
    assert await keys(cas.store) == [cas.blob_key(sha256(data))]
    assert await cas.get(sha256(data)) == data


# -- reads --------------------------------------------------------------------------------------


async def plant_wrong_name(cas: ContentStore, claimed: bytes, actual: bytes) -> str:
    """A blob written by someone else under the wrong name (its recorded sha256 is honest)."""
    digest = sha256(claimed)
    await cas.store.put(cas.blob_key(digest), actual)
    return digest


async def plant_bit_rot(cas: ContentStore, good: bytes, bad: bytes) -> str:
    """A blob whose bytes changed after upload (its recorded sha256 is the good one)."""
    digest = sha256(good)
    attrs = WriteAttributes(metadata={"asyncstore-sha256": digest})
    await cas.store.backend.put(cas.blob_key(digest), memoryview(bad), attrs, {})
    return digest


Plant = Callable[[ContentStore, bytes, bytes], Awaitable[str]]


@pytest.mark.parametrize("plant", [plant_wrong_name, plant_bit_rot])
async def test_get_of_a_corrupt_blob_raises_and_returns_nothing(
    cas: ContentStore, plant: Plant
) -> None:
    digest = await plant(cas, b"good", b"evil")
    with pytest.raises(DigestMismatchError) as info:
        await cas.get(digest)
    assert info.value.expected == digest
    assert info.value.actual == sha256(b"evil")
    assert digest in str(info.value)
    assert cas.statistics().digest_mismatches == 1


@pytest.mark.parametrize("plant", [plant_wrong_name, plant_bit_rot])
async def test_stream_of_a_corrupt_blob_raises_after_the_last_chunk(
    cas: ContentStore, plant: Plant
) -> None:
    good, bad = pattern(3 * PART, seed=1), pattern(3 * PART, seed=2)
    digest = await plant(cas, good, bad)
    seen = bytearray()
    with pytest.raises(DigestMismatchError) as info:
        async with cas.stream(digest) as body:
            async for chunk in body:
                seen += chunk
    assert bytes(seen) == bad
    assert info.value.actual == sha256(bad)
    seen.clear()
    with pytest.raises(DigestMismatchError):
        async for chunk in cas.stream(digest):
            seen += chunk


async def test_a_corrupt_sha512_blob_is_caught(cas: ContentStore) -> None:
    digest = sha512(b"good")
    await cas.store.put(cas.blob_key(digest), b"evil")
    with pytest.raises(DigestMismatchError) as info:
        await cas.get(digest)
    assert info.value.actual == sha512(b"evil")


async def test_stream_yields_the_blob_in_order_and_describes_it(cas: ContentStore) -> None:
    data = pattern(5 * PART + 3)
    desc = await cas.put(data)
    stream = cas.stream(desc.digest)
    assert isinstance(stream, BlobStream)
    async with stream as body:
        got = b"".join([chunk async for chunk in body])
    assert got == data
    assert stream.descriptor is not None
    assert stream.descriptor.size == len(data)
    assert b"".join([c async for c in cas.stream(desc.digest)]) == data
    empty = await cas.put(b"")
    assert [c async for c in cas.stream(empty.digest)] == []
    assert cas.statistics().blobs_read == 3


async def test_reading_a_missing_blob_raises_not_found_naming_it(cas: ContentStore) -> None:
    digest = sha256(b"absent")
    for read in (cas.get, cas.stat):
        with pytest.raises(NotFoundError, match=digest):
            await read(digest)
    with pytest.raises(NotFoundError, match=digest):
        async for _ in cas.stream(digest):
            pass
    with pytest.raises(NotFoundError, match=digest):
        async with cas.stream(digest):
            pass
    assert not await cas.exists(digest)


async def test_every_digest_argument_is_validated(cas: ContentStore, tmp_path: Path) -> None:
    bad = "sha256:nothex"
    for call in (cas.get, cas.stat, cas.exists, cas.delete):
        with pytest.raises(InvalidDigestError, match="sha256:nothex"):
            await call(bad)
    with pytest.raises(InvalidDigestError):
        cas.stream(bad)
    with pytest.raises(InvalidDigestError):
        await cas.fetch_to_file(bad, tmp_path / "x")
    with pytest.raises(InvalidDigestError):
        await cas.put(b"x", expected=bad)
    with pytest.raises(InvalidDigestError):
        cas.blob_key(None)  # type: ignore[arg-type]


async def test_fetch_to_file_writes_the_verified_blob(cas: ContentStore, tmp_path: Path) -> None:
    data = pattern(5 * PART + 1)
    desc = await cas.put(data)
    target = tmp_path / "out" / "blob.bin"
    got = await cas.fetch_to_file(desc.digest, target)
    assert got.size == len(data)
    assert await anyio.Path(target).read_bytes() == data


@pytest.mark.parametrize("plant", [plant_wrong_name, plant_bit_rot])
async def test_fetch_to_file_of_a_corrupt_blob_leaves_no_file(
    cas: ContentStore,
    tmp_path: Path,
    plant: Plant,
) -> None:
    digest = await plant(cas, pattern(3 * PART, seed=1), pattern(3 * PART, seed=2))
    out = tmp_path / "out"
    await anyio.Path(out).mkdir()
    with pytest.raises(DigestMismatchError):
        await cas.fetch_to_file(digest, out / "blob.bin")
    assert await anyio.to_thread.run_sync(files_in, out) == []


async def test_fetch_to_file_of_a_corrupt_blob_keeps_an_existing_file(
    cas: ContentStore, tmp_path: Path
) -> None:
    digest = await plant_wrong_name(cas, b"good", b"evil")
    out = tmp_path / "out"
    await anyio.Path(out).mkdir()
    target = out / "blob.bin"
    await anyio.Path(target).write_bytes(b"previous")
    with pytest.raises(DigestMismatchError):
        await cas.fetch_to_file(digest, target)
    assert await anyio.Path(target).read_bytes() == b"previous"
    assert await anyio.to_thread.run_sync(files_in, out) == ["blob.bin"]


async def test_fetch_to_file_of_a_missing_blob_leaves_no_file(
    cas: ContentStore, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    await anyio.Path(out).mkdir()
    with pytest.raises(NotFoundError):
        await cas.fetch_to_file(sha256(b"absent"), out / "x")
    assert await anyio.to_thread.run_sync(files_in, out) == []
    with pytest.raises(InvalidArgumentError, match=r"must be a str or os\.PathLike"):
        await cas.fetch_to_file(sha256(b"absent"), 5)  # type: ignore[arg-type]


async def test_stat_exists_delete_and_list(cas: ContentStore) -> None:
    a = await cas.put(b"a")
    b = await cas.put(b"b", media_type="application/json")
    assert await cas.exists(a.digest)
    assert await cas.stat(b.digest) == b
    assert [d async for d in cas.list_digests()] == sorted([a.digest, b.digest])
    await cas.delete(a.digest)
    await cas.delete(a.digest)  # idempotent
    assert not await cas.exists(a.digest)
    assert [d async for d in cas.list_digests()] == [b.digest]


async def test_list_digests_ignores_keys_that_are_not_blobs(cas: ContentStore) -> None:
    desc = await cas.put(b"a")
    await cas.store.put("blobs/sha256/zz/notes", b"")
    await cas.store.put("blobs/sha256/ab/" + "cd" * 32, b"")  # wrong fan-out folder
    await cas.store.put("blobs/md5/00/" + "0" * 32, b"")
    assert [d async for d in cas.list_digests()] == [desc.digest]


async def test_a_blob_replaced_during_a_read_is_read_again() -> None:
    """A concurrent duplicate promotion rewrites a blob (same bytes, new ETag): reads retry."""

    class Replacing(MemoryBackend):
        replaced = False

        async def read(self, key, start=0, end=None, *, if_match=None):  # type: ignore[no-untyped-def]
            if if_match is not None and not self.replaced:
                self.replaced = True
                await self.copy(key, key)  # same bytes, new ETag
            return await super().read(key, start, end, if_match=if_match)

    async with Store(Replacing(), chunk_size=PART) as store:
        cas = ContentStore(store)
        data = pattern(3 * PART)
        desc = await cas.put(data)
        assert await cas.get(desc.digest) == data


def test_digest_helpers_agree_with_hashlib() -> None:
    assert digest_of(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
