"""asyncstore.fsspec beyond fsspec's own suite: ranges, writes, integrity, loops, fork, pickling.

fsspec's abstract suite runs in test_fsspec_abstract.py; these tests cover
what it does not: suffix reads, streamed multipart writes and their abort,
digest verification, clients per event loop, fork safety, pickling without
secrets, `register`, and every error path.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import fsspec
import pytest
from _servers import BUCKET, Azurite, Emulator, S3Server
from fsspec.callbacks import Callback
from fsspec.registry import _registry as fsspec_registry

from asyncstore import (
    AlreadyExistsError,
    ConfigurationError,
    DigestMismatchError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionFailedError,
    open_store,
)
from asyncstore.fsspec import (
    AsyncStoreAzureFileSystem,
    AsyncStoreFileSystem,
    AsyncStoreGCSFileSystem,
    AsyncStoreMemoryFileSystem,
    AsyncStoreS3FileSystem,
    register,
)
from asyncstore.fsspec._file import _StreamingPut
from asyncstore.testing import FaultProxy

MiB = 2**20

pytestmark = pytest.mark.filterwarnings(
    # aiobotocore >= 3.10 deprecates its httpx session (used under trio) in favour of
    # httpx2; a matter of the S3 backend's dependencies, not of this adapter.
    "ignore:aiobotocore's httpx backend:DeprecationWarning"
)


@pytest.fixture
def fs() -> Iterator[AsyncStoreFileSystem]:
    fs = AsyncStoreFileSystem(f"memory://fsspec-{uuid.uuid4().hex[:8]}")
    yield fs
    fs.close()


@pytest.fixture
def s3fs(s3: S3Server) -> Iterator[AsyncStoreS3FileSystem]:
    fs = AsyncStoreS3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True)
    yield fs
    fs.close()


def _prefix() -> str:
    return f"fsspec-{uuid.uuid4().hex[:8]}"


def _pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


# --------------------------------------------------------------------------- names, options


def test_entry_points_register_the_protocols() -> None:
    assert fsspec.get_filesystem_class("asyncstore") is AsyncStoreFileSystem
    assert fsspec.get_filesystem_class("asyncstore+s3") is AsyncStoreS3FileSystem
    assert fsspec.get_filesystem_class("asyncstore+gs") is AsyncStoreGCSFileSystem
    assert fsspec.get_filesystem_class("asyncstore+az") is AsyncStoreAzureFileSystem
    assert fsspec.get_filesystem_class("asyncstore+memory") is AsyncStoreMemoryFileSystem


def test_urls_of_the_per_bucket_protocols_name_bucket_and_key() -> None:
    fs, path = fsspec.url_to_fs("asyncstore+memory://m-names/a/b.txt")
    assert isinstance(fs, AsyncStoreMemoryFileSystem)
    assert path == "m-names/a/b.txt"
    fs.pipe_file(path, b"x")
    assert fs.ls("m-names/a", detail=False) == ["m-names/a/b.txt"]
    with fsspec.open("asyncstore+memory://m-names/a/b.txt", "rb") as f:
        assert f.read() == b"x"


@pytest.fixture
def saved_registry() -> Iterator[None]:
    saved = dict(fsspec_registry)
    yield
    fsspec_registry.clear()
    fsspec_registry.update(saved)


@pytest.mark.usefixtures("saved_registry")
def test_register_serves_the_plain_protocols(s3: S3Server) -> None:
    register(("s3", "memory"))
    assert fsspec.get_filesystem_class("s3") is AsyncStoreS3FileSystem
    fs, path = fsspec.url_to_fs(
        f"s3://{BUCKET}/{_prefix()}/k", client_kwargs={"endpoint_url": s3.endpoint}
    )
    assert isinstance(fs, AsyncStoreS3FileSystem)
    fs.pipe_file(path, b"via s3://")
    assert fs.cat_file(path) == b"via s3://"
    assert s3.boto.get_object(Bucket=BUCKET, Key=path.partition("/")[2])["Body"].read() == (
        b"via s3://"
    )
    fs.close()


@pytest.mark.usefixtures("saved_registry")
def test_register_rejects_a_protocol_it_cannot_serve() -> None:
    with pytest.raises(ConfigurationError, match="'ftp'"):
        register(("s3", "ftp"))
    assert fsspec_registry.get("s3") is not AsyncStoreS3FileSystem  # nothing changed


def test_a_root_is_needed_on_the_generic_class() -> None:
    with pytest.raises(ConfigurationError, match="needs a root"):
        AsyncStoreFileSystem(skip_instance_cache=True)
    with pytest.raises(ConfigurationError, match="store URL"):
        AsyncStoreFileSystem("no-scheme/here", skip_instance_cache=True)
    with pytest.raises(ConfigurationError, match="not int"):
        AsyncStoreFileSystem(3, skip_instance_cache=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="block_size"):
        AsyncStoreFileSystem("memory://", block_size=-1, skip_instance_cache=True)


def test_s3_credentials_are_not_options(s3: S3Server) -> None:
    with pytest.raises(ConfigurationError, match=r"'key'.*AWS chain"):
        AsyncStoreS3FileSystem(key="AKIA", secret="hidden", skip_instance_cache=True)


def test_a_bad_backend_option_is_named_when_first_used(s3: S3Server) -> None:
    fs = AsyncStoreS3FileSystem(no_such_option=1, skip_instance_cache=True)
    with pytest.raises(ConfigurationError, match="no_such_option"):
        fs.cat_file(f"{BUCKET}/k")


def test_a_path_without_a_bucket_is_an_error() -> None:
    fs = AsyncStoreMemoryFileSystem(skip_instance_cache=True)
    with pytest.raises(InvalidArgumentError, match="starts with a bucket"):
        fs.cat_file("")


def test_filesystems_over_different_store_instances_are_never_shared() -> None:
    one, two = open_store("memory://"), open_store("memory://")
    assert repr(one) == repr(two)  # what fsspec's instance cache would key on
    fs_one, fs_two = AsyncStoreFileSystem(one), AsyncStoreFileSystem(two)
    assert fs_one is not fs_two
    fs_one.pipe_file("k", b"1")
    assert not fs_two.exists("k")


# --------------------------------------------------------------------------- reading


def test_cat_file_ranges_and_suffixes(fs: AsyncStoreFileSystem) -> None:
    fs.pipe_file("k", b"0123456789")
    assert fs.cat_file("k", start=-3) == b"789"  # zarr's suffix read
    assert fs.cat_file("k", start=2, end=5) == b"234"
    assert fs.cat_file("k", start=1, end=-1) == b"12345678"
    assert fs.cat_file("k", start=-4, end=-2) == b"67"
    assert fs.cat_file("k", start=-30) == b"0123456789"
    assert fs.cat_file("k", start=8, end=100) == b"89"
    assert fs.cat_file("k", start=10) == b""
    assert fs.cat_file("k", start=50) == b""
    assert fs.cat_file("k", start=5, end=3) == b""
    with pytest.raises(FileNotFoundError):
        fs.cat_file("missing", start=5, end=3)
    with pytest.raises(InvalidArgumentError, match="start"):
        fs.cat_file("k", start=1.5)  # type: ignore[arg-type]


def test_cat_ranges_reads_every_range_and_returns_errors_in_place(
    fs: AsyncStoreFileSystem,
) -> None:
    fs.pipe({"a": b"aaaa-bbbb", "b": b"0123456789"})
    out = fs.cat_ranges(["a", "b", "missing", "b"], [0, -3, 0, 2], [4, None, 1, 4])
    assert out[:2] == [b"aaaa", b"789"]
    assert isinstance(out[2], NotFoundError)
    assert out[3] == b"23"
    with pytest.raises(FileNotFoundError):
        fs.cat_ranges(["missing"], [0], [1], on_error="raise")


def test_info_ls_and_find_see_prefixes_as_directories(fs: AsyncStoreFileSystem) -> None:
    fs.pipe({"d/a": b"1", "d/e/b": b"22", "top": b"333"})
    info = fs.info("d/e/b")
    assert info["type"] == "file"
    assert info["size"] == 2
    assert info["sha256"].startswith("sha256:")
    assert fs.info("d")["type"] == "directory"
    assert fs.ls("d", detail=False) == ["d/a", "d/e"]
    assert fs.ls("top", detail=False) == ["top"]
    assert fs.find("d", withdirs=True) == ["d", "d/a", "d/e", "d/e/b"]
    assert fs.find("d", maxdepth=1) == ["d/a"]
    assert fs.find("top") == ["top"]
    with pytest.raises(FileNotFoundError, match="'nothing'"):
        fs.info("nothing")
    with pytest.raises(FileNotFoundError):
        fs.ls("nothing")
    assert not fs.exists("nothing")
    assert not fs.exists("bad//key")


def test_checksum_and_ukey_come_from_the_recorded_sha256(fs: AsyncStoreFileSystem) -> None:
    fs.pipe_file("k", b"content")
    sha = fs.info("k")["sha256"].partition(":")[2]
    assert fs.ukey("k") == sha
    assert fs.checksum("k") == int(sha, 16)
    fs.pipe_file("k", b"other")
    assert fs.ukey("k") != sha


def test_open_for_reading_serves_small_and_large_files(fs: AsyncStoreFileSystem) -> None:
    data = _pattern(3 * MiB + 5)
    fs.pipe_file("big", data)
    fs.full_read_threshold = MiB  # ranged reads with readahead
    with fs.open("big", "rb", block_size=MiB) as f:
        f.seek(2 * MiB)
        assert f.read(10) == data[2 * MiB : 2 * MiB + 10]
        f.seek(0)
        assert f.read() == data
    fs.full_read_threshold = 16 * MiB  # read whole on first access
    with fs.open("big", "rb") as f:
        assert f.read(7) == data[:7]
        f.seek(-4, 2)
        assert f.read() == data[-4:]
    fs.pipe_file("dir/x", b"1")
    with pytest.raises(IsADirectoryError):
        fs.open("dir", "rb")


def test_a_large_file_is_read_in_spans_that_never_overlap(fs: AsyncStoreFileSystem) -> None:
    # A sequential reader's spans double and the next one is read ahead while it
    # reads the last (few, large requests: s3fs's plan, and moto reads a whole
    # object per ranged GET); a random read fetches one block.
    data = _pattern(10 * MiB + 3)
    fs.pipe_file("big", data)
    fetched: list[tuple[int, int]] = []
    read_range = fs._read_range

    async def traced(path: str, start: int, end: int, etag: str | None) -> bytes:
        fetched.append((start, end))
        return await read_range(path, start, end, etag)

    fs2 = AsyncStoreFileSystem(fs._fixed, chunk_size=256 * 1024, full_read_threshold=MiB)
    fs2._read_range = traced  # type: ignore[method-assign]
    with fs2.open("big", "rb", block_size=MiB) as f:
        assert f.read(3 * MiB) == data[: 3 * MiB]  # from the start: twice the read
        assert f.read(3 * MiB) == data[3 * MiB : 6 * MiB]
        assert f.read(10) == data[6 * MiB : 6 * MiB + 10]  # the next span, read ahead
        assert f.read(MiB) == data[6 * MiB + 10 : 7 * MiB + 10]
        f.seek(100_000)
        assert f.read(200_000) == data[100_000:300_000]  # before the held span: a block
        f.seek(5 * MiB)
        assert f.read(2 * MiB) == data[5 * MiB : 7 * MiB]  # not in order: at least a block
    assert fetched == [
        (0, 6 * MiB),
        (6 * MiB, len(data)),
        (100_000, 100_000 + MiB),
        (5 * MiB, 7 * MiB),
    ]
    fetched.clear()
    with fs2.open("big", "rb", block_size=MiB) as f:  # small reads in order (a CSV reader)
        while f.read(64 * 1024):
            pass
    assert fetched == [(0, 2 * MiB), (2 * MiB, 6 * MiB), (6 * MiB, len(data))]
    fs2.close()


def test_spans_are_hashed_in_order_off_the_readers_thread(fs: AsyncStoreFileSystem) -> None:
    import hashlib
    import threading

    data = _pattern(10 * MiB + 3)
    fs.pipe_file("big", data)
    fs.full_read_threshold = MiB
    threads: list[str] = []

    class Recording:
        def __init__(self) -> None:
            self.inner = hashlib.sha256()

        def update(self, piece: Any) -> None:
            threads.append(threading.current_thread().name)
            self.inner.update(piece)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    with fs.open("big", "rb", block_size=MiB) as f:
        f._hasher = Recording()
        read = b""
        while piece := f.read(MiB):
            read += piece
    assert read == data  # and verified: no error
    assert len(threads) == 3  # the spans (0, 2), (2, 6), (6, 10+) MiB
    assert all(name.startswith("asyncstore-fsspec-sha256") for name in threads)


def test_a_span_is_read_in_one_request_pinned_to_the_opened_version(
    fs: AsyncStoreFileSystem,
) -> None:
    data = _pattern(3 * MiB)
    fs.pipe_file("big", data)
    store = fs._fixed
    assert store is not None
    calls: list[dict[str, Any]] = []
    get = store.get

    async def traced(key: str, **kwargs: Any) -> bytes:
        calls.append(kwargs)
        return await get(key, **kwargs)

    store.get = traced  # type: ignore[method-assign]
    etag = fs.info("big")["etag"]
    try:
        assert fs.cat_file("big", 0, 10) == data[:10]  # not an open file: not pinned
        span = fsspec.asyn.sync(fs.loop, fs._read_range, "big", 5, 2 * MiB + 5, etag)
        assert span == data[5 : 2 * MiB + 5]
        fs.pipe_file("big", data[::-1])
        with pytest.raises(PreconditionFailedError, match="replaced"):
            fsspec.asyn.sync(fs.loop, fs._read_range, "big", 5, 2 * MiB + 5, etag)
    finally:
        store.get = get  # type: ignore[method-assign]
    assert calls[0] == {"start": 0, "end": 10}
    assert calls[1]["if_match"] == etag
    assert calls[1]["chunk_size"] >= 2 * MiB  # one ranged read


def test_read_buffer_serves_pyarrow_views_of_the_held_span(fs: AsyncStoreFileSystem) -> None:
    import pyarrow as pa

    data = _pattern(3 * MiB + 5)
    fs.pipe_file("big", data)
    fs.full_read_threshold = MiB
    with fs.open("big", "rb", block_size=MiB) as f:
        view = f.read_buffer(MiB)
        assert isinstance(view, memoryview)
        assert view == data[:MiB]
        assert f.tell() == MiB
        assert bytes(f.read_buffer()) == data[MiB:]
        assert f.read_buffer(10) == b""
        served = []
        read_buffer = f.read_buffer

        def traced(length: int = -1) -> Any:
            served.append(length)
            return read_buffer(length)

        f.read_buffer = traced  # type: ignore[method-assign]
        handle = pa.PythonFile(f, mode="r")
        handle.seek(7)
        assert handle.read_buffer(100).to_pybytes() == data[7 : 7 + 100]
        assert served == [100]  # pyarrow used it: no copy into bytes
    fs.full_read_threshold = 16 * MiB
    with fs.open("big", "rb") as f:  # read whole: views of it
        assert isinstance(f.read_buffer(5), memoryview)
        assert bytes(f.read_buffer(5)) == data[5:10]


def test_a_file_replaced_while_open_for_reading_is_an_error(fs: AsyncStoreFileSystem) -> None:
    fs.pipe_file("big", _pattern(3 * MiB))
    fs.full_read_threshold = MiB
    with fs.open("big", "rb", block_size=MiB) as f:
        f.seek(MiB)
        assert f.read(10) == _pattern(MiB + 10)[MiB:]  # not in order: one block, no readahead
        fs.pipe_file("big", _pattern(3 * MiB)[::-1])
        assert f.read(100) == _pattern(MiB + 110)[MiB + 10 :]  # held: the opened version
        f.seek(0)
        with pytest.raises(PreconditionFailedError, match="replaced") as info:
            f.read(10)
    assert info.value.key == "big"


def test_a_reader_that_skips_the_first_bytes_and_reads_the_end_first_is_verified(
    tmp_path: Path,
) -> None:
    # Parquet's pattern: the footer first, then every column chunk from offset 4 (after
    # the magic) to the footer. Those reads cover the file: its sha256 is checked.
    fs = AsyncStoreFileSystem(f"file://{tmp_path}", skip_instance_cache=True)
    fs.full_read_threshold = MiB
    size = 5 * MiB
    fs.pipe_file("t.parquet", _pattern(size))

    def read_like_parquet() -> None:
        with fs.open("t.parquet", "rb", block_size=MiB) as f:
            f.seek(size - 64 * 1024)
            assert f.read(64 * 1024) == _pattern(size)[-64 * 1024 :]
            f.seek(4)
            assert f.read(2 * MiB) == _pattern(size)[4 : 2 * MiB + 4]
            at = f.tell()
            assert (
                f.read(size - 64 * 1024 + 100 - at) == _pattern(size)[at : size - 64 * 1024 + 100]
            )

    read_like_parquet()  # intact: no error
    _corrupt_in_place(tmp_path / "t.parquet")
    with pytest.raises(DigestMismatchError) as info:
        read_like_parquet()
    assert info.value.key == "t.parquet"
    fs.close()


def test_open_modes_that_object_stores_cannot_do_are_errors(fs: AsyncStoreFileSystem) -> None:
    with pytest.raises(InvalidArgumentError, match="'ab'"):
        fs.open("k", "ab")
    with pytest.raises(FileNotFoundError):
        fs.open("missing", "rb")
    with pytest.raises(InvalidArgumentError, match="transactions"), fs.transaction:
        fs.open("k", "wb")


# --------------------------------------------------------------------------- integrity


def _corrupt_in_place(path: Path) -> None:
    """Flip a byte of a local store's data file, keeping its inode, size and mtime (bit rot)."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("size", [1000, 3 * MiB])
def test_a_corrupted_object_fails_every_whole_read(tmp_path: Path, size: int) -> None:
    fs = AsyncStoreFileSystem(f"file://{tmp_path}", skip_instance_cache=True)
    fs.full_read_threshold = MiB  # 1000 bytes: read whole; 3 MiB: ranges, verified in order
    fs.pipe_file("data.bin", _pattern(size))
    _corrupt_in_place(tmp_path / "data.bin")
    with pytest.raises(DigestMismatchError) as info:
        fs.cat_file("data.bin")
    assert info.value.key == "data.bin"
    with pytest.raises(DigestMismatchError), fs.open("data.bin", "rb", block_size=MiB) as f:
        while f.read(256 * 1024):
            pass
    with pytest.raises(DigestMismatchError):
        fs.get_file("data.bin", str(tmp_path / "copy.bin"))
    assert not (tmp_path / "copy.bin").exists()
    assert fs.cat_file("data.bin", start=0, end=10) == _pattern(10)  # a range is not verified
    fs.close()


# --------------------------------------------------------------------------- writing


def test_pipe_create_and_open_xb_never_overwrite(fs: AsyncStoreFileSystem) -> None:
    fs.pipe_file("k", b"first", mode="create")
    with pytest.raises(AlreadyExistsError):
        fs.pipe_file("k", b"second", mode="create")
    with pytest.raises(FileExistsError):
        fs.open("k", "xb")
    with fs.open("new", "xb") as f:
        f.write(b"made")
    assert fs.cat_file("k") == b"first"
    assert fs.cat_file("new") == b"made"
    with pytest.raises(InvalidArgumentError, match="mode"):
        fs.pipe_file("k", b"x", mode="append")


def test_a_large_written_file_is_one_multipart_upload(
    s3fs: AsyncStoreS3FileSystem, s3: S3Server
) -> None:
    key = f"{_prefix()}/big.bin"
    data = _pattern(13 * MiB)
    with s3fs.open(f"{BUCKET}/{key}", "wb", block_size=5 * MiB) as f:
        for start in range(0, len(data), MiB):
            f.write(data[start : start + MiB])
        assert s3.keys(key) == []  # nothing visible before close
    head = s3.boto.head_object(Bucket=BUCKET, Key=key, PartNumber=1)
    assert head["PartsCount"] >= 2
    assert s3fs.cat_file(f"{BUCKET}/{key}") == data  # verified against the recorded sha256
    assert s3fs.info(f"{BUCKET}/{key}")["sha256"] is not None


def test_a_written_file_is_sent_in_parts_of_its_block_size() -> None:
    # Few requests: a file smaller than its block is one PUT, a larger one goes in
    # parts of the block size, with no more bytes in flight than the store's window.
    fs = AsyncStoreFileSystem(
        f"memory://fsspec-{uuid.uuid4().hex[:8]}", chunk_size=MiB, skip_instance_cache=True
    )
    assert fs.write_blocksize == 16 * MiB
    assert (
        AsyncStoreFileSystem("memory://", block_size=MiB, skip_instance_cache=True).write_blocksize
        == MiB
    )
    store = fs._fixed
    assert store is not None
    calls: list[dict[str, Any]] = []
    put = store.put

    async def traced(key: str, data: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return await put(key, data, **kwargs)

    store.put = traced  # type: ignore[method-assign]
    with fs.open("small", "wb") as f:
        f.write(_pattern(3 * MiB))
    assert calls == [{"mode": "overwrite", "chunk_size": 3 * MiB}]
    calls.clear()
    with fs.open("big", "wb", block_size=2 * MiB) as f:
        for start in range(0, 7 * MiB, MiB):
            f.write(_pattern(7 * MiB)[start : start + MiB])
    assert calls == [{"mode": "overwrite", "chunk_size": 2 * MiB, "max_concurrency": 4}]
    calls.clear()
    fed: list[int] = []
    feed = _StreamingPut.feed

    async def traced_feed(self: Any, data: Any) -> None:
        fed.append(len(data.getvalue()))
        await feed(self, data)

    _StreamingPut.feed = traced_feed  # type: ignore[method-assign]
    try:
        with fs.open("odd", "wb", block_size=2 * MiB) as f:  # writes that straddle blocks
            for start in range(0, 7 * MiB, 700_000):
                f.write(memoryview(_pattern(7 * MiB)[start : start + 700_000]))
    finally:
        _StreamingPut.feed = feed  # type: ignore[method-assign]
    assert fed == [2 * MiB, 2 * MiB, 2 * MiB, MiB]  # whole parts: none is cut or joined
    store.put = put  # type: ignore[method-assign]
    assert fs.cat_file("odd") == _pattern(7 * MiB)
    assert fs.cat_file("small") == _pattern(3 * MiB)
    assert fs.cat_file("big") == _pattern(7 * MiB)
    fs.close()


def test_a_written_files_block_buffers_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh buffer per block paid its pages anew (0.7 CPU s/GiB with io.BytesIO): the
    # blocks the upload has copied come back, so a file of 12 blocks needs only a few.
    from asyncstore.fsspec import _file

    made: list[int] = []
    real = _file._BlockBuffer.__init__

    def counting(self: Any, size: int) -> None:
        made.append(size)
        real(self, size)

    monkeypatch.setattr(_file._BlockBuffer, "__init__", counting)
    fs = AsyncStoreFileSystem(
        f"memory://fsspec-{uuid.uuid4().hex[:8]}", chunk_size=MiB, skip_instance_cache=True
    )
    data = _pattern(12 * MiB + 5)
    with fs.open("big", "wb", block_size=MiB) as f:
        for start in range(0, len(data), 300_000):
            f.write(data[start : start + 300_000])
    assert fs.cat_file("big") == data
    assert 1 <= len(made) <= 4  # the one being written, one queued, one being copied (+1)
    made.clear()
    with fs.open("small", "wb", block_size=MiB) as f:  # one block: fsspec's own buffer
        f.write(data[: MiB - 1])
    assert fs.cat_file("small") == data[: MiB - 1]
    assert made == []  # (a block-sized buffer per small file cost 20 ms of CPU each)
    fs.close()


def test_a_written_files_blocks_are_sent_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each full block is lent to the put (asyncstore.LentBuffer): its part goes out from
    # the block's own memory, and the block comes back for reuse once it is stored.
    from asyncstore.fsspec import _file

    blocks: list[object] = []
    real = _file._BlockBuffer.__init__

    def recording(self: Any, size: int) -> None:
        real(self, size)
        blocks.append(self._buf.obj)

    monkeypatch.setattr(_file._BlockBuffer, "__init__", recording)
    fs = AsyncStoreFileSystem(
        f"memory://fsspec-{uuid.uuid4().hex[:8]}", chunk_size=MiB, skip_instance_cache=True
    )
    store = fs._fixed
    assert store is not None
    sent: list[object] = []
    upload_part = store.backend.upload_part

    async def recording_part(key: str, upload_id: str, number: int, *args: Any) -> Any:
        sent.append((number, args[1].obj))
        return await upload_part(key, upload_id, number, *args)

    monkeypatch.setattr(store.backend, "upload_part", recording_part)
    data = _pattern(6 * MiB + 5)
    with fs.open("big", "wb", block_size=MiB) as f:
        for start in range(0, len(data), 300_000):
            f.write(data[start : start + 300_000])
    assert fs.cat_file("big") == data
    assert [number for number, _ in sorted(sent)] == list(range(1, 8))
    # Part 1 is fsspec's first buffer (bytes); parts 2-7 are the blocks themselves.
    assert all(any(obj is block for block in blocks) for number, obj in sent if number > 1)
    fs.close()


def test_an_exception_inside_with_aborts_the_write(
    s3fs: AsyncStoreS3FileSystem, s3: S3Server
) -> None:
    prefix = _prefix()
    with (
        pytest.raises(RuntimeError, match="stop"),
        s3fs.open(f"{BUCKET}/{prefix}/k", "wb", block_size=5 * MiB) as f,
    ):
        f.write(_pattern(12 * MiB))  # past the block size: the upload has started
        raise RuntimeError("stop")
    assert s3.keys(prefix) == []
    assert s3.uploads(prefix) == []  # the multipart upload was aborted
    with pytest.raises(RuntimeError, match="stop"), s3fs.open(f"{BUCKET}/{prefix}/s", "wb") as f:
        f.write(b"small")
        raise RuntimeError("stop")
    assert s3.keys(prefix) == []


def test_a_write_to_a_missing_bucket_fails_at_the_block_that_started_it(
    s3fs: AsyncStoreS3FileSystem,
) -> None:
    with pytest.raises(NotFoundError), s3fs.open("no-such-bucket-x/k", "wb") as f:
        for _ in range(4):
            f.write(_pattern(5 * MiB))


class _Recorder(Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int | None] = []
        self.values: list[int] = []

    def set_size(self, size: int | None) -> None:
        self.sizes.append(size)

    def absolute_update(self, value: int) -> None:
        self.values.append(value)


def test_put_and_get_feed_fsspec_callbacks(s3fs: AsyncStoreS3FileSystem, tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(_pattern(20 * MiB))
    remote = f"{BUCKET}/{_prefix()}/f.bin"
    up = _Recorder()
    s3fs.put_file(str(source), remote, callback=up)
    assert up.sizes == [20 * MiB]
    assert up.values[-1] == 20 * MiB
    assert up.values == sorted(up.values)
    down = _Recorder()
    s3fs.get_file(remote, str(tmp_path / "back.bin"), callback=down)
    assert down.sizes == [20 * MiB]
    assert down.values[-1] == 20 * MiB
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_copy_is_server_side_within_a_bucket_and_streamed_across(
    s3fs: AsyncStoreS3FileSystem, s3: S3Server
) -> None:
    prefix = _prefix()
    s3fs.pipe_file(f"{BUCKET}/{prefix}/a", b"payload")
    s3fs.cp_file(f"{BUCKET}/{prefix}/a", f"{BUCKET}/{prefix}/b")
    assert s3fs.cat_file(f"{BUCKET}/{prefix}/b") == b"payload"
    s3.boto.create_bucket(Bucket="asyncstore-fsspec-other")
    s3fs.cp_file(f"{BUCKET}/{prefix}/a", f"asyncstore-fsspec-other/{prefix}/c")
    assert s3fs.cat_file(f"asyncstore-fsspec-other/{prefix}/c") == b"payload"
    s3fs.rm(f"{BUCKET}/{prefix}", recursive=True)
    assert s3.keys(prefix) == []


def test_rm_deletes_files_below_a_directory_only_when_recursive(
    fs: AsyncStoreFileSystem,
) -> None:
    fs.pipe({"d/a": b"1", "d/e/b": b"2", "keep": b"3"})
    fs.rm("d")  # a directory without recursive: nothing to delete
    assert fs.find("") == ["d/a", "d/e/b", "keep"]
    fs.rm("d", recursive=True)
    assert fs.find("") == ["keep"]


# --------------------------------------------------------------------------- loops


@pytest.mark.anyio
async def test_one_filesystem_serves_fsspecs_loop_and_the_callers(
    s3fs: AsyncStoreS3FileSystem,
) -> None:
    path = f"{BUCKET}/{_prefix()}/k"
    await anyio.to_thread.run_sync(s3fs.pipe_file, path, b"from fsspec's loop")
    # The same object, from this test's own loop (asyncio or trio): a client of its own.
    assert await s3fs._cat_file(path) == b"from fsspec's loop"
    await s3fs._pipe_file(path, b"from the caller's loop")
    assert await anyio.to_thread.run_sync(s3fs.cat_file, path) == b"from the caller's loop"
    await s3fs._aclose()


@pytest.mark.anyio
async def test_asynchronous_mode_runs_on_the_callers_loop(s3: S3Server) -> None:
    fs = AsyncStoreS3FileSystem(
        endpoint_url=s3.endpoint, asynchronous=True, skip_instance_cache=True
    )
    path = f"{BUCKET}/{_prefix()}/k"
    await fs._pipe_file(path, b"v")
    assert await fs._cat_file(path, start=-1) == b"v"
    assert (await fs._info(path))["size"] == 1
    assert await fs._cat_ranges([path, path], [0, 0], [1, 1]) == [b"v", b"v"]
    await fs._aclose()


def _child_reads(fs: AsyncStoreFileSystem, path: str) -> None:
    os._exit(0 if fs.cat_file(path) == b"before the fork" else 3)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("backend", ["memory", "s3"])
def test_a_forked_child_reopens_instead_of_hanging(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "s3":
        s3 = request.getfixturevalue("s3")
        fs: AsyncStoreFileSystem = AsyncStoreS3FileSystem(
            endpoint_url=s3.endpoint, skip_instance_cache=True
        )
        path = f"{BUCKET}/{_prefix()}/k"
    else:
        fs = AsyncStoreFileSystem(f"memory://fork-{uuid.uuid4().hex[:8]}")
        path = "k"
    fs.pipe_file(path, b"before the fork")  # clients now live on fsspec's IO thread
    child = multiprocessing.get_context("fork").Process(target=_child_reads, args=(fs, path))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the forked child hung")
    assert child.exitcode == 0
    assert fs.cat_file(path) == b"before the fork"  # the parent's clients still work
    fs.close()


# --------------------------------------------------------------------------- pickling


_UNPICKLE_AND_READ = """
import pickle, sys
fs = pickle.loads(sys.stdin.buffer.read())
sys.stdout.write(fs.cat_file(sys.argv[1]).decode())
"""


def test_a_pickled_filesystem_works_elsewhere_and_holds_no_credentials(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    fs = AsyncStoreS3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True)
    path = f"{BUCKET}/{_prefix()}/k"
    fs.pipe_file(path, b"read by another process")
    data = pickle.dumps(fs)
    assert secret.encode() not in data
    assert os.environ["AWS_ACCESS_KEY_ID"].encode() not in data
    done = subprocess.run(
        [sys.executable, "-c", _UNPICKLE_AND_READ, path],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == b"read by another process"
    fs.close()


def test_a_secret_option_is_never_pickled(azurite: Azurite) -> None:
    fs = AsyncStoreAzureFileSystem(
        connection_string=azurite.connection_string, skip_instance_cache=True
    )
    with pytest.raises(ConfigurationError, match=r"'connection_string'.*environment"):
        pickle.dumps(fs)


def test_from_the_environment_azure_pickles_without_its_key(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    container = f"fsspec-{uuid.uuid4().hex[:8]}"
    azurite.service().create_container(container)
    fs = AsyncStoreAzureFileSystem(skip_instance_cache=True)
    fs.pipe_file(f"{container}/k", b"v")
    data = pickle.dumps(fs)
    assert b"AccountKey" not in data
    assert pickle.loads(data).cat_file(f"{container}/k") == b"v"
    fs.close()
    azurite.service().delete_container(container)


def test_a_filesystem_over_a_store_instance_does_not_pickle() -> None:
    fs = AsyncStoreFileSystem(open_store("memory://"))
    with pytest.raises(ConfigurationError, match="Store instance"):
        pickle.dumps(fs)


# --------------------------------------------------------------------------- emulator gaps


@pytest.mark.anyio
async def test_gcs_create_sends_if_generation_match_0(emulator: Emulator) -> None:
    """What fsspec's test_pipe_exclusive needs from GCS, which the emulator ignores."""
    bucket = await anyio.to_thread.run_sync(emulator.create_bucket)
    port = int(emulator.url.rsplit(":", 1)[1])
    async with FaultProxy.running(port) as proxy:
        fs = AsyncStoreGCSFileSystem(
            endpoint_url=proxy.endpoint, asynchronous=True, skip_instance_cache=True
        )
        await fs._pipe_file(f"{bucket}/k", b"v", mode="create")
        await fs._pipe_file(f"{bucket}/k", b"w", mode="overwrite")
        await fs._aclose()
    uploads = [s for s in proxy.seen if s.method == "POST" and "/upload/" in s.target]
    assert len(uploads) == 2
    assert "ifGenerationMatch=0" in uploads[0].target
    assert "ifGenerationMatch" not in uploads[1].target
