"""asyncstore.zarr.ZarrStore: zarr's own StoreTests on memory, local files and S3 (moto).

``zarr.testing.store.StoreTests`` is zarr's conformance suite for stores. It
runs here under asyncio, the event loop zarr itself is written for (its
array code gathers with asyncio); the store's own methods are anyio code and
run under trio too (test_the_store_methods_run_under_trio), but zarr's array
API does not (see docs/datastack.md).
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from _servers import BUCKET, S3Server
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.testing.store import StoreTests

from asyncstore import ConfigurationError, DigestMismatchError, Store, open_store, open_store_async
from asyncstore.zarr import ZarrStore

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Suite(StoreTests[ZarrStore, cpu.Buffer]):  # type: ignore[misc]
    store_cls = ZarrStore
    buffer_cls = cpu.Buffer

    # zarr's fixtures are async, which pytest runs only for async tests; the suite has
    # sync tests too. Opening a ZarrStore does no I/O, so plain fixtures do the same.
    @pytest.fixture
    def store(self, open_kwargs: dict[str, Any]) -> Iterator[ZarrStore]:
        store = ZarrStore(**open_kwargs)
        store._is_open = True
        yield store
        store.close()

    @pytest.fixture
    def store_not_open(self, store_kwargs: dict[str, Any]) -> ZarrStore:
        return ZarrStore(**store_kwargs)

    async def set(self, store: ZarrStore, key: str, value: Any) -> None:
        # Written by a separate asyncstore Store on the same location, not through the
        # store under test.
        async with open_store_async(store._root, **store._options) as direct:  # type: ignore[arg-type]
            await direct.put(key, value.to_bytes())

    async def get(self, store: ZarrStore, key: str) -> Any:
        async with open_store_async(store._root, **store._options) as direct:  # type: ignore[arg-type]
            return self.buffer_cls.from_bytes(await direct.get(key))

    def test_store_supports_writes(self, store: ZarrStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: ZarrStore) -> None:
        assert store.supports_listing


class TestMemoryZarrStore(_Suite):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"root": f"memory://zarr-{uuid.uuid4().hex[:12]}"}

    def test_store_repr(self, store: ZarrStore) -> None:
        assert repr(store).startswith("ZarrStore('memory://zarr-")


class TestLocalZarrStore(_Suite):
    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"root": f"file://{tmp_path}/zarr"}

    def test_store_repr(self, store: ZarrStore) -> None:
        assert repr(store).startswith("ZarrStore('file://")


class TestS3ZarrStore(_Suite):
    @pytest.fixture
    def store_kwargs(self, s3: S3Server) -> dict[str, Any]:
        return {"root": f"s3://{BUCKET}/zarr-{uuid.uuid4().hex[:12]}", "endpoint": s3.endpoint}

    def test_store_repr(self, store: ZarrStore) -> None:
        assert repr(store).startswith(f"ZarrStore('s3://{BUCKET}/zarr-")


# --------------------------------------------------------------------------- beyond the suite


@pytest.fixture
def memory_root() -> str:
    return f"memory://zarr-{uuid.uuid4().hex[:12]}"


async def test_set_if_not_exists_is_an_atomic_create(memory_root: str) -> None:
    store = ZarrStore(memory_root)
    proto = default_buffer_prototype()
    sent: list[str] = []
    direct = open_store(memory_root)
    original = direct.backend.put

    async def spy(key: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(key)
        return await original(key, *args, **kwargs)

    store._fixed = Store(direct.backend)
    direct.backend.put = spy  # type: ignore[method-assign]
    await store.set_if_not_exists("k", cpu.Buffer.from_bytes(b"first"))
    await store.set_if_not_exists("k", cpu.Buffer.from_bytes(b"second"))
    assert (await store.get("k", proto)).to_bytes() == b"first"  # type: ignore[union-attr]
    assert sent == ["k", "k"]  # one conditional put each, no exists-then-set


async def test_byte_requests_map_to_ranges(memory_root: str) -> None:
    store = ZarrStore(memory_root)
    proto = default_buffer_prototype()
    await store.set("c/0", cpu.Buffer.from_bytes(b"0123456789"))
    values = await store.get_partial_values(
        proto,
        [
            ("c/0", RangeByteRequest(2, 5)),
            ("c/0", OffsetByteRequest(7)),
            ("c/0", SuffixByteRequest(3)),
            ("missing", None),
            ("c/0", None),
        ],
    )
    assert [v.to_bytes() if v is not None else None for v in values] == [
        b"234",
        b"789",
        b"789",
        None,
        b"0123456789",
    ]


async def test_a_corrupted_chunk_fails_the_array_read(tmp_path: Path) -> None:
    store = ZarrStore(f"file://{tmp_path}")
    array = await zarr.api.asynchronous.create_array(
        store, shape=(100,), chunks=(10,), dtype="i8", compressors=None
    )
    await array.setitem(slice(None), np.arange(100))
    chunk = tmp_path / "c" / "3"
    st = chunk.stat()
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF
    chunk.write_bytes(bytes(data))
    import os

    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (await array.getitem(slice(0, 30)) == np.arange(30)).all()
    with pytest.raises(DigestMismatchError):
        await array.getitem(slice(30, 40))


def test_zarrs_sync_api_round_trips_an_array_on_s3(s3: S3Server) -> None:
    store = ZarrStore(f"s3://{BUCKET}/zarr-{uuid.uuid4().hex[:12]}", endpoint=s3.endpoint)
    z = zarr.create_array(store, shape=(200, 300), chunks=(50, 100), dtype="f8")
    data = np.random.default_rng(0).random((200, 300))
    z[:] = data
    again = zarr.open_array(pickle.loads(pickle.dumps(store)), mode="r")
    np.testing.assert_array_equal(again[:], data)
    np.testing.assert_array_equal(again[10:60, 250:], data[10:60, 250:])
    store.close()


def test_bad_roots_and_unpicklable_stores_are_errors() -> None:
    with pytest.raises(ConfigurationError, match="store URL"):
        ZarrStore("relative/path")
    with pytest.raises(ConfigurationError, match="Store instance"):
        pickle.dumps(ZarrStore(open_store("memory://")))
    with pytest.raises(ConfigurationError, match="'account_key'"):
        pickle.dumps(ZarrStore("az://c", account="a", account_key="c2VjcmV0"))


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_the_store_methods_run_under_trio(memory_root: str, anyio_backend: str) -> None:
    store = ZarrStore(memory_root)
    proto = default_buffer_prototype()
    await store._set_many(
        [("a/0", cpu.Buffer.from_bytes(b"x")), ("a/1", cpu.Buffer.from_bytes(b"y"))]
    )
    assert sorted([k async for k in store.list_dir("a")]) == ["0", "1"]
    assert (await store.get("a/1", proto, SuffixByteRequest(1))).to_bytes() == b"y"  # type: ignore[union-attr]
    await store.delete_dir("a")
    assert [k async for k in store.list()] == []
