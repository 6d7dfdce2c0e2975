"""Tests of the local-filesystem backend, under asyncio and trio."""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from asyncstore import Store, open_store_async
from asyncstore._backend import CompletedPart, MiB, WriteAttributes
from asyncstore._errors import (
    AlreadyExistsError,
    ConfigurationError,
    DigestMismatchError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRangeError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    UploadNotFoundError,
)
from asyncstore._types import CommonPrefix, ObjectInfo
from asyncstore.backends.local import LocalBackend, from_url
from asyncstore.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def backend(root: Path) -> LocalBackend:
    return LocalBackend(root)


async def put(
    backend: LocalBackend | MemoryBackend,
    key: str,
    data: bytes,
    *,
    content_type: str | None = None,
    metadata: dict[str, str] | None = None,
    if_none_match: bool = False,
    if_match: str | None = None,
) -> str:
    attrs = WriteAttributes(content_type, metadata or {}, if_none_match, if_match)
    result = await backend.put(key, memoryview(data), attrs, {})
    return result.etag


async def read_all(
    backend: LocalBackend, key: str, start: int = 0, end: int | None = None
) -> bytes:
    async with await backend.read(key, start, end) as stream:
        return b"".join([chunk async for chunk in stream])


async def listing(
    backend: LocalBackend | MemoryBackend, prefix: str = "", delimiter: str | None = None
) -> list[str]:
    out = []
    async for item in backend.list(prefix, delimiter=delimiter):
        out.append(item.key if isinstance(item, ObjectInfo) else f"P:{item.prefix}")
    return out


def temp_files(root: Path) -> list[Path]:
    return list(root.rglob(".asyncstore-*.part"))


# --------------------------------------------------------------------------- URLs


def test_from_url_absolute(tmp_path: Path) -> None:
    backend = from_url(urlsplit(f"file://{tmp_path}/store"))
    assert backend.root == str(tmp_path / "store")
    assert backend.describe() == f"local directory {tmp_path / 'store'}"
    assert from_url(urlsplit(f"file://localhost{tmp_path}/x")).root == str(tmp_path / "x")
    assert from_url(urlsplit(f"file://{tmp_path}/my%20dir")).root == str(tmp_path / "my dir")


def test_from_url_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert from_url(urlsplit("file://~/x/y")).root == str(tmp_path / "home" / "x" / "y")


@pytest.mark.parametrize(
    "url",
    ["file:", "file://", "file:///", "file:///a/..", "file:.", "file://.", "file:relative/x"],
)
def test_from_url_rejects_bad_paths(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        from_url(urlsplit(url))
    assert url in str(info.value) or urlsplit(url).geturl() in str(info.value)


def test_from_url_rejects_query_host_and_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'sync'"):
        from_url(urlsplit(f"file://{tmp_path}?sync=1"))
    with pytest.raises(ConfigurationError, match="fragment"):
        from_url(urlsplit(f"file://{tmp_path}#frag"))
    with pytest.raises(ConfigurationError, match="otherhost"):
        from_url(urlsplit(f"file://otherhost{tmp_path}"))
    with pytest.raises(ConfigurationError, match="'colour'"):
        from_url(urlsplit(f"file://{tmp_path}"), colour="blue")
    with pytest.raises(ConfigurationError, match="'create'"):
        from_url(urlsplit(f"file://{tmp_path}"), create="yes")


async def test_root_created_lazily_or_required(tmp_path: Path) -> None:
    created = from_url(urlsplit(f"file://{tmp_path}/new/dir"))
    assert not (tmp_path / "new").exists()  # constructing touches nothing
    await put(created, "k", b"v")
    assert (tmp_path / "new" / "dir" / "k").read_bytes() == b"v"

    missing = from_url(urlsplit(f"file://{tmp_path}/absent"), create=False)
    with pytest.raises(ConfigurationError, match="absent"):
        await missing.head("k")
    assert not (tmp_path / "absent").exists()


def test_from_url_create_option(tmp_path: Path) -> None:
    assert from_url(urlsplit(f"file://{tmp_path}"))._create is True
    assert from_url(urlsplit(f"file://{tmp_path}?create=false"))._create is False
    assert from_url(urlsplit(f"file://{tmp_path}?create=True"))._create is True
    assert from_url(urlsplit(f"file://{tmp_path}"), create=False)._create is False
    with pytest.raises(ConfigurationError, match=r"'create'.*true or false"):
        from_url(urlsplit(f"file://{tmp_path}?create=maybe"))
    with pytest.raises(ConfigurationError, match="'create' is given both"):
        from_url(urlsplit(f"file://{tmp_path}?create=false"), create=True)
    with pytest.raises(ConfigurationError, match="'create' is given twice"):
        from_url(urlsplit(f"file://{tmp_path}?create=false&create=true"))


async def test_reads_never_create_the_root(tmp_path: Path) -> None:
    """Opening a store to read leaves the disk alone: a missing root is NotFoundError."""
    root = tmp_path / "never-made"
    async with open_store_async(f"file://{root}") as store:
        for read in (
            lambda: store.head("k"),
            lambda: store.get("k"),
            lambda: store.download_file("k", tmp_path / "out"),
            lambda: store.copy("k", "k2"),
        ):
            with pytest.raises(NotFoundError, match=f"root '{root}' does not exist") as raised:
                await read()
            assert raised.value.key == "k"
        assert [item async for item in store.list()] == []  # an empty store, not yet made
        with pytest.raises(NotFoundError, match=f"root '{root}' does not exist"):
            async for _ in store.stream("k"):
                pass
        upload_id = ".asyncstore-" + "0" * 32 + ".part"
        with pytest.raises(UploadNotFoundError, match=f"root '{root}' does not exist"):
            await store.upload_part("k", upload_id, 1, b"x", offset=0)
        await store.delete("k")  # a missing key is not an error, and creates nothing
        await store.delete_many(["k", "j"])
        await store.abort_upload("k", upload_id)
        assert not root.exists()
        await store.put("k", b"v")  # the first write creates it
        assert (root / "k").read_bytes() == b"v"
        assert [info.key async for info in store.list()] == ["k"]


async def test_create_false_requires_the_root(tmp_path: Path) -> None:
    root = tmp_path / "absent"
    for url, options in (
        (f"file://{root}?create=false", {}),
        (f"file://{root}", {"create": False}),
    ):
        async with open_store_async(url, **options) as store:
            with pytest.raises(ConfigurationError, match=f"root '{root}' does not exist") as raised:
                await store.put("k", b"v")
            assert raised.value.key == str(root)
            with pytest.raises(ConfigurationError, match=f"root '{root}' does not exist"):
                await store.head("k")
            with pytest.raises(ConfigurationError, match=f"root '{root}' does not exist"):
                await store.create_upload("k")
            with pytest.raises(ConfigurationError, match=f"root '{root}' does not exist"):
                [item async for item in store.list()]
        assert not root.exists()
    root.mkdir()
    async with open_store_async(f"file://{root}?create=false") as store:
        await store.put("k", b"v")
        assert await store.get("k") == b"v"


async def test_a_root_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    async with open_store_async(f"file://{tmp_path}/file") as store:
        for call in (lambda: store.head("k"), lambda: store.put("k", b"v")):
            with pytest.raises(ConfigurationError, match="not a directory"):
                await call()


# --------------------------------------------------------------------------- reads and writes


async def test_round_trip(backend: LocalBackend, root: Path) -> None:
    meta = {"colour": "blue", "asyncstore-sha256": "sha256:" + "0" * 64}
    etag = await put(
        backend, "dir/sub/obj.txt", b"hello world", content_type="text/plain", metadata=meta
    )
    assert (root / "dir" / "sub" / "obj.txt").read_bytes() == b"hello world"
    st = os.stat(root / "dir" / "sub" / "obj.txt")
    assert etag == f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"

    info = await backend.head("dir/sub/obj.txt")
    assert (info.key, info.size, info.etag) == ("dir/sub/obj.txt", 11, etag)
    assert info.content_type == "text/plain"
    assert info.metadata == meta
    assert info.last_modified is not None
    assert info.last_modified.utcoffset() is not None
    assert await read_all(backend, "dir/sub/obj.txt") == b"hello world"
    async with await backend.read("dir/sub/obj.txt") as stream:
        assert stream.info == info

    sidecar = json.loads((root / ".asyncstore/meta/dir.d/sub.d/obj.txt.json").read_text())
    assert sidecar["metadata"] == meta
    assert sidecar["inode"] == st.st_ino
    assert sidecar["size"] == 11

    new_etag = await put(backend, "dir/sub/obj.txt", b"bye")
    assert new_etag != etag
    info = await backend.head("dir/sub/obj.txt")
    assert (info.size, info.content_type, info.metadata) == (3, None, {})
    assert (
        json.loads((root / ".asyncstore/meta/dir.d/sub.d/obj.txt.json").read_text())["version"] == 2
    )
    assert temp_files(root) == []


async def test_ranged_reads(backend: LocalBackend) -> None:
    data = bytes(range(256)) * 10
    await put(backend, "r", data)
    assert await read_all(backend, "r", 2, 5) == data[2:5]
    assert await read_all(backend, "r", 100) == data[100:]
    assert await read_all(backend, "r", 2500, 99_999) == data[2500:]
    assert await read_all(backend, "r", len(data)) == b""
    with pytest.raises(InvalidRangeError, match="'r'"):
        await backend.read("r", len(data) + 1)
    await put(backend, "empty", b"")
    assert await read_all(backend, "empty") == b""


async def test_large_read_chunks_and_close(backend: LocalBackend) -> None:
    data = random.randbytes(3 * MiB + 5)
    await put(backend, "big", data)
    async with await backend.read("big") as stream:
        chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= MiB
    assert len(chunks) == 4


async def test_readinto_fills_a_whole_range_in_one_call(backend: LocalBackend) -> None:
    # The core reads ranges with readinto: straight into its buffer, not in 1 MiB copies.
    data = random.randbytes(9 * MiB + 7)
    await put(backend, "big", data)
    buf = memoryview(bytearray(9 * MiB))
    async with await backend.read("big", 5, 9 * MiB + 5) as stream:
        assert await stream.readinto(buf) == 9 * MiB
        assert await stream.readinto(memoryview(bytearray(1))) == 0  # the range's end
    assert bytes(buf) == data[5 : 9 * MiB + 5]


async def test_readinto_of_a_file_truncated_under_it_raises(
    backend: LocalBackend, root: Path
) -> None:
    await put(backend, "t", bytes(2 * MiB))
    async with await backend.read("t") as stream:
        (path,) = [p for p in root.rglob("t") if p.is_file()]
        os.truncate(path, MiB)
        buf = memoryview(bytearray(2 * MiB))
        assert await stream.readinto(buf) == MiB
        with pytest.raises(PreconditionFailedError, match="'t' was truncated"):
            await stream.readinto(buf[MiB:])


async def test_upload_file_writes_two_parts_at_a_time(root: Path, tmp_path: Path) -> None:
    # More concurrent writes into one file only queue (and spin) on its inode lock.
    src = tmp_path / "src.bin"
    src.write_bytes(random.randbytes(6 * MiB))
    in_flight = peak = 0
    second = anyio.Event()

    class Watched(LocalBackend):
        async def upload_part(self, *args: Any, **kwargs: Any) -> CompletedPart:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 2:
                second.set()
            try:
                with anyio.fail_after(30):  # the first part is written once a second is sent
                    await second.wait()
                return await super().upload_part(*args, **kwargs)
            finally:
                in_flight -= 1

    store = Store(Watched(root), chunk_size=MiB, max_concurrency=8)
    info = await store.upload_file(src, "up")
    assert info.part_count == 6
    assert peak == info.concurrency == 2
    assert await store.get("up") == src.read_bytes()


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the local backend hands to worker threads, in order."""
    from asyncstore.backends.local import _backend, _files

    called: list[str] = []
    run = _backend._run

    async def counting(func: Any, *args: Any) -> Any:
        called.append(getattr(func, "__name__", repr(func)))
        return await run(func, *args)

    monkeypatch.setattr(_backend, "_run", counting)
    monkeypatch.setattr(_files, "_run", counting)
    return called


async def test_a_small_put_is_one_worker_thread_call(
    backend: LocalBackend, thread_calls: list[str]
) -> None:
    # The bytes, their fsync, the sidecar and the rename: one hand-off, not two.
    await put(backend, "warm", b"x")  # the root is checked on first use
    called = thread_calls
    called.clear()
    etag = await put(backend, "k", b"small", metadata={"a": "b"})
    assert called == ["write_small"]
    info = await backend.head("k")
    assert info.etag == etag
    assert info.metadata["a"] == "b"
    with pytest.raises(PreconditionFailedError, match="'k'"):  # conditions hold as before
        await put(backend, "k", b"other", if_match="nope")
    with pytest.raises(AlreadyExistsError, match="'k'"):
        await put(backend, "k", b"other", if_none_match=True)
    async with await backend.read("k") as stream:
        assert b"".join([c async for c in stream]) == b"small"
    assert [
        name for name in os.listdir(backend.root) if "asyncstore" in name and name.endswith(".part")
    ] == []


async def test_a_small_read_is_one_worker_thread_call(
    backend: LocalBackend, thread_calls: list[str]
) -> None:
    # Open, read and close: one hand-off for a range of at most 256 KiB.
    data = random.randbytes(200_000)
    etag = await put(backend, "k", data)
    await put(backend, "big", bytes(2 * MiB))
    called = thread_calls
    called.clear()
    async with await backend.read("k", if_match=etag) as stream:
        assert b"".join([c async for c in stream]) == data
    assert called == ["open_object"]
    stream = await backend.read("k", 1000, 5000)
    view = memoryview(bytearray(10_000))
    assert await stream.readinto(view) == 4000
    assert view[:4000] == data[1000:5000]
    assert await stream.readinto(view) == 0
    await stream.aclose()
    assert called == ["open_object", "open_object"]
    async with await backend.read("big") as stream:  # larger ranges: read as they go
        assert sum([len(c) async for c in stream]) == 2 * MiB
    assert called.count("_pread") == 2


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_read_closes_file(backend: LocalBackend) -> None:
    await put(backend, "big", bytes(3 * MiB))
    before = len(os.listdir("/proc/self/fd"))
    stream = await backend.read("big")
    assert len(os.listdir("/proc/self/fd")) == before + 1
    assert len(await stream.__anext__()) == MiB
    await stream.aclose()
    await stream.aclose()
    assert len(os.listdir("/proc/self/fd")) == before
    async with await backend.read("big") as stream:
        assert sum([len(c) async for c in stream]) == 3 * MiB
    assert len(os.listdir("/proc/self/fd")) == before


async def test_read_if_match(backend: LocalBackend) -> None:
    etag = await put(backend, "k", b"one")
    async with await backend.read("k", if_match=etag) as stream:
        assert b"".join([c async for c in stream]) == b"one"
    await put(backend, "k", b"two")
    with pytest.raises(PreconditionFailedError, match="'k'"):
        await backend.read("k", if_match=etag)


async def test_missing_and_directories(backend: LocalBackend) -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        await backend.head("nope")
    with pytest.raises(NotFoundError, match="'nope'"):
        await backend.read("nope")
    await put(backend, "d/x", b"1")
    with pytest.raises(NotFoundError, match="'d'"):
        await backend.head("d")
    with pytest.raises(NotFoundError, match="'d'"):
        await backend.read("d")
    with pytest.raises(NotFoundError, match="'d/x/y'"):
        await backend.head("d/x/y")


async def test_key_collisions(backend: LocalBackend, root: Path) -> None:
    await put(backend, "a", b"file")
    with pytest.raises(InvalidKeyError, match="'a' is an object"):
        await put(backend, "a/b", b"x")
    await put(backend, "d/e", b"x")
    with pytest.raises(InvalidKeyError, match="'d/' is a directory"):
        await put(backend, "d", b"x")
    with pytest.raises(InvalidKeyError, match="'d/' is a directory"):
        await put(backend, "d", b"x", if_none_match=True)
    with pytest.raises(InvalidKeyError):
        await backend.create_upload("a/b/c", WriteAttributes())
    assert temp_files(root) == []
    assert await read_all(backend, "a") == b"file"


async def test_create_if_absent_race(backend: LocalBackend) -> None:
    outcomes: list[int | str] = []

    async def writer(i: int) -> None:
        try:
            body = f"writer {i}".encode() * 1000
            await put(backend, "once", body, if_none_match=True, metadata={"writer": str(i)})
        except AlreadyExistsError:
            outcomes.append("lost")
        else:
            outcomes.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(writer, i)
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1
    assert outcomes.count("lost") == 15
    info = await backend.head("once")
    assert info.metadata == {"writer": str(winners[0])}
    assert await read_all(backend, "once") == f"writer {winners[0]}".encode() * 1000
    with pytest.raises(AlreadyExistsError, match="'once'"):
        await put(backend, "once", b"again", if_none_match=True)


async def test_if_match_write(backend: LocalBackend, root: Path) -> None:
    with pytest.raises(PreconditionFailedError, match="'k'"):
        await put(backend, "k", b"x", if_match="1-2-3")
    etag = await put(backend, "k", b"v1", metadata={"v": "1"})
    etag2 = await put(backend, "k", b"v2", if_match=etag, metadata={"v": "2"})
    assert etag2 != etag
    with pytest.raises(PreconditionFailedError, match="'k'"):
        await put(backend, "k", b"v3", if_match=etag)
    assert await read_all(backend, "k") == b"v2"
    assert (await backend.head("k")).metadata == {"v": "2"}
    assert temp_files(root) == []


async def test_big_put_round_trip(backend: LocalBackend) -> None:
    data = random.randbytes(17 * MiB + 3)
    await put(backend, "big", data)
    assert await read_all(backend, "big") == data


async def test_cancelled_put_leaves_no_temp_file(backend: LocalBackend, root: Path) -> None:
    scope = anyio.CancelScope()

    async def writer() -> None:
        with scope:
            await put(backend, "big/obj", bytes(96 * MiB))

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        while not temp_files(root):
            await anyio.sleep(0)
        scope.cancel()
    assert scope.cancelled_caught
    assert temp_files(root) == []
    assert not (root / "big").exists()
    with pytest.raises(NotFoundError):
        await backend.head("big/obj")


# --------------------------------------------------------------------------- multipart


async def test_multipart_out_of_order(backend: LocalBackend, root: Path) -> None:
    data = random.randbytes(10 * 100_000 + 123)
    size = 100_000
    upload_id = await backend.create_upload("mp/obj", WriteAttributes(content_type="x/early"))
    assert (root / "mp" / upload_id).is_file()
    assert [p.name for p in temp_files(root)] == [upload_id]
    completed: list[CompletedPart] = []

    async def send(number: int) -> None:
        await anyio.sleep(random.random() / 100)
        offset = (number - 1) * size
        part = await backend.upload_part(
            "mp/obj", upload_id, number, offset, memoryview(data)[offset : offset + size], {}
        )
        completed.append(part)

    async with anyio.create_task_group() as tg:
        for number in reversed(range(1, 12)):
            tg.start_soon(send, number)
    parts = sorted(completed, key=lambda p: p.number)
    assert [p.etag for p in parts] == [str(n) for n in range(1, 12)]
    assert parts[-1].size == 123
    attrs = WriteAttributes(content_type="x/final", metadata={"asyncstore-sha256": "s"})
    result = await backend.complete_upload("mp/obj", upload_id, parts, attrs)
    assert await read_all(backend, "mp/obj") == data
    info = await backend.head("mp/obj")
    assert (info.etag, info.content_type, info.metadata) == (
        result.etag,
        "x/final",
        {"asyncstore-sha256": "s"},
    )
    assert temp_files(root) == []
    with pytest.raises(UploadNotFoundError, match=upload_id):
        await backend.upload_part("mp/obj", upload_id, 1, 0, memoryview(b"x"), {})


async def test_upload_resumable_from_another_instance(backend: LocalBackend, root: Path) -> None:
    upload_id = await backend.create_upload("r/obj", WriteAttributes())
    first = await backend.upload_part("r/obj", upload_id, 1, 0, memoryview(b"abc"), {})
    other = LocalBackend(root)
    second = await other.upload_part("r/obj", upload_id, 2, 3, memoryview(b"def"), {})
    await other.complete_upload("r/obj", upload_id, [first, second], WriteAttributes())
    assert await read_all(backend, "r/obj") == b"abcdef"


async def test_upload_ids_are_checked(backend: LocalBackend) -> None:
    upload_id = await backend.create_upload("u/obj", WriteAttributes())
    for bad in ["nope", "../x", ".asyncstore-" + "0" * 32 + ".part", upload_id + "x"]:
        with pytest.raises(UploadNotFoundError):
            await backend.upload_part("u/obj", bad, 1, 0, memoryview(b"x"), {})
    with pytest.raises(UploadNotFoundError):  # right id, wrong directory
        await backend.upload_part("other/obj", upload_id, 1, 0, memoryview(b"x"), {})


async def test_complete_checks_parts(backend: LocalBackend) -> None:
    upload_id = await backend.create_upload("c/obj", WriteAttributes())
    p1 = await backend.upload_part("c/obj", upload_id, 1, 0, memoryview(b"abc"), {})
    p3 = CompletedPart(3, 6, 3, "3")
    with pytest.raises(InvalidArgumentError, match="not contiguous"):
        await backend.complete_upload("c/obj", upload_id, [p1, p3], WriteAttributes())
    p2 = CompletedPart(2, 3, 3, "2")  # claimed, never written
    with pytest.raises(UploadNotFoundError, match="missing"):
        await backend.complete_upload("c/obj", upload_id, [p1, p2], WriteAttributes())
    # A failed conditional commit leaves the upload for abort.
    await put(backend, "c/obj", b"taken")
    with pytest.raises(AlreadyExistsError):
        await backend.complete_upload("c/obj", upload_id, [p1], WriteAttributes(if_none_match=True))
    await backend.upload_part("c/obj", upload_id, 2, 3, memoryview(b"def"), {})
    await backend.complete_upload("c/obj", upload_id, [p1], WriteAttributes())
    assert await read_all(backend, "c/obj") == b"abc"  # truncated to the parts given


async def test_abort_removes_temp_file(backend: LocalBackend, root: Path) -> None:
    upload_id = await backend.create_upload("ab/c/obj", WriteAttributes())
    await backend.upload_part("ab/c/obj", upload_id, 1, 0, memoryview(b"x" * 100), {})
    assert temp_files(root)
    await backend.abort_upload("ab/c/obj", upload_id)
    assert temp_files(root) == []
    assert not (root / "ab").exists()
    await backend.abort_upload("ab/c/obj", upload_id)  # idempotent
    await backend.abort_upload("ab/c/obj", "garbage")
    with pytest.raises(UploadNotFoundError):
        await backend.upload_part("ab/c/obj", upload_id, 1, 0, memoryview(b"x"), {})


# --------------------------------------------------------------------------- listing


async def test_list_order(backend: LocalBackend) -> None:
    keys = ["a/b", "a-c", "a0", "ab", "a/c/d", "b", "a.b/x", "é", "z~"]
    for key in keys:
        await put(backend, key, key.encode())
    assert await listing(backend) == sorted(keys)
    assert sorted(keys).index("a-c") < sorted(keys).index("a/b")
    items = [item async for item in backend.list("a/")]
    assert [i.key for i in items if isinstance(i, ObjectInfo)] == ["a/b", "a/c/d"]
    info = items[0]
    assert isinstance(info, ObjectInfo)
    assert info.size == 3
    assert info.etag == (await backend.head("a/b")).etag


async def test_list_prefixes_kept_apart(backend: LocalBackend) -> None:
    for key in ["logs/a/x", "logs/ab", "logs/abc", "logs-b", "a", "ab"]:
        await put(backend, key, b"x")
    assert await listing(backend, "logs/a/") == ["logs/a/x"]
    assert await listing(backend, "logs/ab") == ["logs/ab", "logs/abc"]
    assert await listing(backend, "logs/a") == ["logs/a/x", "logs/ab", "logs/abc"]
    assert await listing(backend, "a") == ["a", "ab"]
    assert await listing(backend, "ab") == ["ab"]
    assert await listing(backend, "nothing/") == []
    assert await listing(backend, "a/") == []  # 'a' is a file


async def test_list_delimiter(backend: LocalBackend) -> None:
    for key in ["a/b/c", "a/d", "a-x", "e", "x-1", "x-2"]:
        await put(backend, key, b"x")
    assert await listing(backend, "", "/") == ["a-x", "P:a/", "e", "x-1", "x-2"]
    assert await listing(backend, "a/", "/") == ["P:a/b/", "a/d"]
    assert await listing(backend, "a", "/") == ["a-x", "P:a/"]
    assert await listing(backend, "", "-") == ["P:a-", "a/b/c", "a/d", "e", "P:x-"]


async def test_list_matches_memory_backend(backend: LocalBackend) -> None:
    memory = MemoryBackend()
    keys = ["a", "a-c", "a0", "ab", "abc/x", "b/c/d", "b/c-e", "b/cd", "b-/x", "é/x", "z"]
    for key in keys:
        await put(backend, key, b"x")
        await put(memory, key, b"x")
    for prefix in ["", "a", "ab", "abc/", "b", "b/", "b/c", "b/c/", "b-", "é", "z", "no"]:
        for delimiter in [None, "/", "-", "c/", "/c"]:
            assert await listing(backend, prefix, delimiter) == await listing(
                memory, prefix, delimiter
            ), (prefix, delimiter)


async def test_list_hides_own_files(backend: LocalBackend, root: Path) -> None:
    await put(backend, "k", b"x", metadata={"a": "b"})
    await backend.create_upload("k2", WriteAttributes())
    await backend.create_upload("only-temp/obj", WriteAttributes())
    (root / "only-empty").mkdir()
    assert (root / ".asyncstore").is_dir()
    assert await listing(backend) == ["k"]
    assert await listing(backend, "", "/") == ["k"]
    assert await listing(backend, ".async") == []
    (listed,) = [item async for item in backend.list()]
    assert isinstance(listed, ObjectInfo)
    head = await backend.head("k")
    assert (listed.size, listed.etag, listed.last_modified) == (1, head.etag, head.last_modified)
    assert (listed.content_type, listed.metadata) == (None, {})  # list skips the sidecars


async def test_list_returns_common_prefix_type(backend: LocalBackend) -> None:
    await put(backend, "p/q", b"x")
    assert [item async for item in backend.list("", delimiter="/")] == [CommonPrefix("p/")]


# --------------------------------------------------------------------------- delete and copy


async def test_delete_prunes_empty_directories(backend: LocalBackend, root: Path) -> None:
    for key in ["a/b/c", "a/b/d", "a/e"]:
        await put(backend, key, b"x", metadata={"m": "1"})
    await backend.delete("a/b/c")
    assert (root / "a" / "b" / "d").exists()
    assert not (root / ".asyncstore/meta/a.d/b.d/c.json").exists()
    await backend.delete("a/b/d")
    assert not (root / "a" / "b").exists()
    assert not (root / ".asyncstore/meta/a.d/b.d").exists()
    assert (root / "a" / "e").exists()
    await backend.delete("a/e")
    assert not (root / "a").exists()
    assert root.is_dir()
    await backend.delete("a/e")  # missing: not an error
    await backend.delete("never/was")
    assert await listing(backend) == []
    with pytest.raises(NotFoundError):
        await backend.head("a/e")


async def test_copy_keeps_metadata(backend: LocalBackend, root: Path) -> None:
    data = random.randbytes(100_000)
    await put(backend, "src", data, content_type="image/png", metadata={"k": "v"})
    result = await backend.copy("src", "dst/copy")
    info = await backend.head("dst/copy")
    assert info.etag == result.etag
    assert (info.content_type, info.metadata, info.size) == ("image/png", {"k": "v"}, 100_000)
    assert await read_all(backend, "dst/copy") == data
    with pytest.raises(NotFoundError, match="'missing'"):
        await backend.copy("missing", "dst/other")
    assert temp_files(root) == []
    assert not (root / "dst" / "other").exists()


def _record_part_writes(
    monkeypatch: pytest.MonkeyPatch, *, refuse_direct: bool = False
) -> tuple[list[int], list[int]]:
    """Record the opens of an upload's temp file for a part, and the writes switched to
    O_DIRECT (``fcntl``, optionally refused as tmpfs does): (opens, direct writes)."""
    import fcntl

    opens: list[int] = []
    direct: list[int] = []
    real_open, real_fcntl = os.open, fcntl.fcntl

    def recording_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        fd = real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]
        if str(path).endswith(".part") and flags & os.O_WRONLY and not flags & os.O_CREAT:
            opens.append(fd)
        return fd

    def recording_fcntl(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT and fd in opens:
            direct.append(fd)
            if refuse_direct:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(fcntl, "fcntl", recording_fcntl)
    return opens, direct


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="needs O_DIRECT")
@pytest.mark.parametrize("refuse_direct", [False, True])
async def test_large_aligned_parts_are_written_straight_to_disk(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuse_direct: bool
) -> None:
    # The core's part buffers are page-aligned: such a part skips the page-cache copy
    # (O_DIRECT). A file system that refuses it (tmpfs) gets the same bytes buffered.
    src = tmp_path / "src.bin"
    data = random.randbytes(3 * MiB + 5)
    src.write_bytes(data)
    store = Store(LocalBackend(root), chunk_size=MiB)
    opens, direct = _record_part_writes(monkeypatch, refuse_direct=refuse_direct)
    await store.upload_file(src, "up")
    monkeypatch.undo()
    assert len(direct) == 3  # the three whole MiB parts; the 5-byte tail is not aligned
    assert len(opens) == 4  # a refused part is written buffered on the same descriptor
    assert await store.get("up") == data
    assert temp_files(root) == []


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="needs O_DIRECT")
async def test_parts_of_a_callers_own_buffer_go_through_the_page_cache(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.randbytes(3 * MiB)  # bytes: read-only memory, wherever it starts
    store = Store(LocalBackend(root), chunk_size=MiB)
    opens, direct = _record_part_writes(monkeypatch)
    await store.put("up", data)
    monkeypatch.undo()
    assert len(opens) == 3
    assert direct == []
    assert await store.get("up") == data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="links through /proc")
async def test_a_copy_shares_the_file_and_outlives_changes_to_its_source(
    backend: LocalBackend, root: Path
) -> None:
    # An object's file is never written in place, so a copy is a second name for it:
    # no bytes copied, no fsync of them.
    data = random.randbytes(3 * MiB)
    await put(backend, "src", data, metadata={"k": "v"})
    await backend.copy("src", "dst/copy")
    assert (root / "src").stat().st_ino == (root / "dst" / "copy").stat().st_ino
    await put(backend, "src", b"replaced")
    assert await read_all(backend, "dst/copy") == data
    assert (await backend.head("dst/copy")).metadata == {"k": "v"}
    await backend.delete("src")
    assert await read_all(backend, "dst/copy") == data
    await backend.copy("dst/copy", "dst/copy")  # onto itself: a no-op that leaves nothing
    assert await read_all(backend, "dst/copy") == data
    assert temp_files(root) == []
    assert sorted(p.name for p in (root / "dst").iterdir()) == ["copy"]


@pytest.mark.parametrize("errno_name", ["EXDEV", "EPERM", "EMLINK"])
async def test_a_copy_copies_the_bytes_where_no_link_can_be_made(
    backend: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch, errno_name: str
) -> None:
    import errno

    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(getattr(errno, errno_name), "no link here")

    data = random.randbytes(MiB + 3)
    await put(backend, "src", data, content_type="text/plain")
    monkeypatch.setattr(os, "link", no_link)
    await backend.copy("src", "dst")
    monkeypatch.undo()
    assert (root / "src").stat().st_ino != (root / "dst").stat().st_ino
    assert await read_all(backend, "dst") == data
    assert (await backend.head("dst")).content_type == "text/plain"
    assert temp_files(root) == []


async def test_a_link_that_fails_otherwise_fails_the_copy_and_leaves_nothing(
    backend: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    await put(backend, "src", b"abc")
    monkeypatch.setattr(os, "link", full)
    with pytest.raises(StoreError, match="'dst'"):
        await backend.copy("src", "dst")
    monkeypatch.undo()
    assert not (root / "dst").exists()
    assert temp_files(root) == []
    assert await read_all(backend, "src") == b"abc"


# --------------------------------------------------------------------------- key defences


async def test_symlink_escapes_are_rejected(
    backend: LocalBackend, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    await put(backend, "inside", b"x")
    (root / "link").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "secret")
    with pytest.raises(InvalidKeyError, match="outside"):
        await backend.head("link/secret")
    with pytest.raises(InvalidKeyError, match="outside"):
        await backend.read("link/secret")
    with pytest.raises(InvalidKeyError, match="outside"):
        await backend.head("file-link")
    with pytest.raises(InvalidKeyError, match="outside"):
        await put(backend, "link/new", b"x")
    with pytest.raises(InvalidKeyError, match="outside"):
        await backend.create_upload("link/new", WriteAttributes())
    with pytest.raises(InvalidKeyError, match="outside"):
        await backend.delete("link/secret")
    with pytest.raises(InvalidKeyError, match="outside"):
        await backend.copy("inside", "link/new")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert await listing(backend) == ["inside"]
    assert await listing(backend, "link/") == []


async def test_symlink_inside_root_is_followed_without_loops(
    backend: LocalBackend, root: Path
) -> None:
    await put(backend, "real/x", b"x")
    (root / "real" / "loop").symlink_to(root / "real")
    (root / "alias").symlink_to(root / "real")
    assert await listing(backend) == ["alias/x", "real/x"]
    assert await read_all(backend, "alias/x") == b"x"


@pytest.mark.parametrize(
    "key", [".asyncstore/meta/x.json", "a/.asyncstore-0123.part", ".asyncstore", "a/.asyncstorex"]
)
async def test_reserved_segments_are_rejected(backend: LocalBackend, key: str) -> None:
    with pytest.raises(InvalidKeyError, match="reserved"):
        await put(backend, key, b"x")
    with pytest.raises(InvalidKeyError, match="reserved"):
        await backend.head(key)
    with pytest.raises(InvalidKeyError, match="reserved"):
        await backend.read(key)
    with pytest.raises(InvalidKeyError, match="reserved"):
        await backend.delete(key)


async def test_invalid_keys_and_prefixes(backend: LocalBackend) -> None:
    for key in ["", "/abs", "a/../b", "a//b", "a/"]:
        with pytest.raises(InvalidKeyError):
            await backend.head(key)
    with pytest.raises(InvalidKeyError):
        await listing(backend, ".asyncstore/meta/")
    with pytest.raises(InvalidKeyError):
        await listing(backend, "../")


# --------------------------------------------------------------------------- the sidecar check


async def test_replaced_data_file_drops_stale_metadata(backend: LocalBackend, root: Path) -> None:
    await put(backend, "k", b"original", content_type="text/plain", metadata={"v": "1"})
    old = await backend.head("k")
    (root / "intruder").write_bytes(b"original")  # same size, new inode
    os.replace(root / "intruder", root / "k")
    info = await backend.head("k")
    assert info.etag != old.etag
    assert (info.content_type, info.metadata) == (None, {})
    async with await backend.read("k") as stream:
        assert stream.info.metadata == {}
        assert b"".join([c async for c in stream]) == b"original"


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """What another program does to a file it opens for writing: same inode, new bytes."""
    before = path.stat()
    with open(path, "r+b") as file:
        file.seek(0)
        file.write(data)
        file.truncate()
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    after = path.stat()
    assert after.st_ino == before.st_ino
    assert after.st_mtime_ns != before.st_mtime_ns


@pytest.mark.parametrize("change", ["flipped bytes", "truncated", "appended"])
async def test_a_file_rewritten_in_place_is_reported_corrupt(
    change: str, root: Path, tmp_path: Path
) -> None:
    original = bytes(range(256)) * 64
    changed = {
        "flipped bytes": bytes(b ^ 0xFF for b in original[:10]) + original[10:],
        "truncated": original[:-100],
        "appended": original + b"more",
    }[change]
    async with Store(LocalBackend(root), chunk_size=4096) as store:
        put = await store.put("k", original, content_type="x/y", metadata={"m": "1"})
        _rewrite_in_place(root / "k", changed)
        info = await store.head("k")
        assert (info.sha256, info.content_type, dict(info.metadata)) == (
            put.sha256,
            "x/y",
            {"m": "1"},
        )
        with pytest.raises(DigestMismatchError) as raised:
            await store.get("k")
        assert raised.value.key == "k"
        assert raised.value.expected == put.sha256
        with pytest.raises(DigestMismatchError):
            async with store.stream("k") as body:
                async for _ in body:
                    pass
        with pytest.raises(DigestMismatchError):
            await store.download_file("k", tmp_path / "out")
        assert not (tmp_path / "out").exists()
        assert await store.get("k", verify=False) == changed


async def test_a_file_replaced_by_a_new_one_is_a_new_object(root: Path) -> None:
    async with Store(LocalBackend(root)) as store:
        await store.put("k", b"original", content_type="x/y")
        (root / "new").write_bytes(b"replaced")  # written elsewhere, renamed over the key
        os.replace(root / "new", root / "k")
        info = await store.head("k")
        assert (info.sha256, info.content_type) == (None, None)
        assert await store.get("k") == b"replaced"


async def test_metadata_always_describes_the_bytes_read(backend: LocalBackend) -> None:
    await put(backend, "hot", b"0", metadata={"n": "0"})
    done = anyio.Event()
    seen_metadata = 0

    async def writer() -> None:
        for n in range(1, 60):
            await put(backend, "hot", str(n).encode() * n, metadata={"n": str(n)})
        done.set()

    async def reader() -> None:
        nonlocal seen_metadata
        while not done.is_set():
            async with await backend.read("hot") as stream:
                body = b"".join([c async for c in stream])
                if stream.info.metadata:
                    n = int(stream.info.metadata["n"])
                    assert body == (str(n).encode() * n if n else b"0")
                    seen_metadata += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        tg.start_soon(reader)
        tg.start_soon(reader)
    assert seen_metadata > 0
    assert (await backend.head("hot")).metadata == {"n": "59"}


async def test_concurrent_puts_and_deletes_in_one_directory(
    backend: LocalBackend, root: Path
) -> None:
    async def churn(i: int) -> None:
        for _ in range(10):
            await put(backend, f"shared/sub/{i}", b"x", metadata={"i": str(i)})
            await backend.delete(f"shared/sub/{i}")

    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(churn, i)
    assert await listing(backend) == []
    assert not (root / "shared").exists()
    assert not (root / ".asyncstore" / "meta" / "shared.d").exists()
    assert temp_files(root) == []


async def test_file_placed_by_hand_is_an_object(backend: LocalBackend, root: Path) -> None:
    await put(backend, "seed", b"x")
    (root / "dir").mkdir()
    (root / "dir" / "hand").write_bytes(b"by hand")
    info = await backend.head("dir/hand")
    assert (info.size, info.metadata, info.content_type) == (7, {}, None)
    assert await listing(backend) == ["dir/hand", "seed"]


def test_capabilities() -> None:
    assert LocalBackend.capabilities.parallel_parts is True
    with pytest.raises(ConfigurationError):
        LocalBackend("")
