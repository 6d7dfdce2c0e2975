"""What a push and a pull cost in store operations, through the HTTP API.

The registry's speed on a durable store (file://: every write is fsynced) is
mostly the number of writes before each answer; these tests pin that number
for docker's way of pushing a small layer (POST, one PATCH without
Content-Range, PUT ?digest=) and the reads of a manifest GET by tag.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

import httpx
import pytest
from _registry_app import OCI_MANIFEST, digest, manifest, push_blob, running

from asyncstore import (
    CompletedPart,
    MemoryBackend,
    ObjectInfo,
    ReadStream,
    Store,
    WriteAttributes,
    WriteResult,
)
from asyncstore.cas import ContentStore
from asyncstore.oci import RegistryStorage
from asyncstore.registry import RegistryApp, RegistryConfig
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio


class OperationCountingBackend(MemoryBackend):
    """A memory backend that records every write (put, completed upload, copy) and read."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.reads: collections.Counter[str] = collections.Counter()

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        result = await super().put(key, data, attrs, checksums)
        self.writes.append(key)
        return result

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        result = await super().complete_upload(key, upload_id, parts, attrs)
        self.writes.append(key)
        return result

    async def copy(self, src: str, dst: str) -> WriteResult:
        result = await super().copy(src, dst)
        self.writes.append(dst)
        return result

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        self.reads[key] += 1
        return await super().read(key, start, end, if_match=if_match)

    async def head(self, key: str) -> ObjectInfo:
        self.reads[key] += 1
        return await super().head(key)


@contextlib.asynccontextmanager
async def counted(
    reference_cache: float = 0.0, config: RegistryConfig | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, OperationCountingBackend]]:
    backend = OperationCountingBackend()
    async with Store(backend, chunk_size=64 * 1024) as store:
        registry = RegistryStorage(store, reference_cache=reference_cache)
        async with (
            running(RegistryApp(registry, config)) as url,
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0)) as client,
        ):
            yield client, backend


async def docker_push(client: httpx.AsyncClient, repo: str, data: bytes) -> str:
    """POST, one streamed PATCH without Content-Range, PUT ?digest= (docker's and skopeo's way)."""
    started = await client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["location"]

    async def body() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        yield data[len(data) // 2 :]

    patched = await client.patch(location, content=body())
    assert patched.status_code == 202, patched.text
    assert patched.headers["range"] == f"0-{len(data) - 1}"
    finished = await client.put(patched.headers["location"], params={"digest": digest(data)})
    assert finished.status_code == 201, finished.text
    return location.rsplit("/", 1)[1]


@pytest.mark.parametrize("streamed", [True, False])
async def test_a_small_layer_pushed_docker_s_way_costs_four_writes(streamed: bool) -> None:
    data = pattern(20_000)
    async with counted() as (client, backend):
        if streamed:  # no Content-Length: the session peeks at the stream
            session = await docker_push(client, "app", data)
        else:  # a PATCH with Content-Length (the body is read whole)
            started = await client.post("/v2/app/blobs/uploads/")
            location = started.headers["location"]
            session = location.rsplit("/", 1)[1]
            patched = await client.patch(location, content=data)
            assert patched.status_code == 202
            finished = await client.put(location, params={"digest": digest(data)})
            assert finished.status_code == 201
        state = f"uploads/{session}/state.json"
        kinds = [
            "state" if key == state else key.split("/")[-1].split("-")[0] for key in backend.writes
        ]
        blob = digest(data).split(":")[1]
        # The session's state at POST and after the PATCH (holding the bytes: no tail
        # object), the blob (written once, at its key: no completed upload, no copy)
        # and the repository's link to it.
        assert kinds == ["state", "state", blob, blob]
        # Nothing read the session's state: the PATCH wrote it on the ETag of the
        # POST's write, which this process remembers, and the PUT found the bytes
        # it remembers hash to the digest (no separate progress read either).
        assert backend.reads[state] == 0
        got = await client.get(f"/v2/app/blobs/{digest(data)}")
        assert got.content == data


async def test_a_patch_without_content_range_reads_progress_when_a_limit_needs_it() -> None:
    data = pattern(5_000)
    async with counted(config=RegistryConfig(max_upload_size=4_000)) as (client, _):
        started = await client.post("/v2/app/blobs/uploads/")
        location = started.headers["location"]
        first = await client.patch(location, content=data[:3_000])
        assert first.status_code == 202
        second = await client.patch(location, content=data[3_000:])
        assert second.status_code == 413
        ok = await client.patch(location, content=data[3_000:4_000])
        assert ok.status_code == 202
        assert ok.headers["range"] == "0-3999"


async def test_a_manifest_get_by_tag_reads_nothing_once_the_tag_is_cached() -> None:
    config = b'{"architecture":"amd64"}'
    layer = pattern(3_000)
    async with counted(reference_cache=60) as (client, backend):
        await push_blob(client, "app", config)
        await push_blob(client, "app", layer)
        body = manifest(config, [layer])
        put = await client.put(
            "/v2/app/manifests/v1", content=body, headers={"content-type": OCI_MANIFEST}
        )
        assert put.status_code == 201
        first = await client.get("/v2/app/manifests/v1")
        assert first.content == body
        before = sum(backend.reads.values())
        for method in ("GET", "HEAD", "GET"):
            again = await client.request(method, "/v2/app/manifests/v1")
            assert again.status_code == 200
            assert again.headers["docker-content-digest"] == digest(body)
        assert sum(backend.reads.values()) == before
        # A push through this server is seen at once.
        body2 = manifest(config, [layer], annotations={"n": "2"})
        put = await client.put(
            "/v2/app/manifests/v1", content=body2, headers={"content-type": OCI_MANIFEST}
        )
        assert put.status_code == 201
        assert (await client.get("/v2/app/manifests/v1")).content == body2
        assert (await client.delete("/v2/app/manifests/v1")).status_code == 202
        assert (await client.get("/v2/app/manifests/v1")).status_code == 404


async def test_the_content_store_appends_at_the_current_size_when_no_offset_is_given() -> None:
    async with Store(MemoryBackend(), chunk_size=64 * 1024) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        big = pattern(200_000)
        assert await cas.append(sid, None, b"abc") == 3
        assert await cas.append(sid, None, big) == 3 + len(big)
        assert await cas.append(sid, None, b"def") == 6 + len(big)
        desc = await cas.finish(sid, digest(b"abc" + big + b"def"))
        assert await cas.get(desc.digest) == b"abc" + big + b"def"
