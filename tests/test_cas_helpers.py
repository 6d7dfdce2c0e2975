"""Shared fixtures of the cas and oci tests: stores over memory, local, and an S3-like memory.

Imported by the ``test_cas_*`` and ``test_oci_*`` modules. The store fixture
runs every test on three stores, each with 64 KiB parts so that multipart
and staging paths are exercised with small data:

* ``memory``: `MemoryBackend` (parts of any size);
* ``local``: `LocalBackend` under ``tmp_path`` (a key cannot also be a folder);
* ``minpart``: a memory backend that enforces S3's rule, scaled down: every
  part but the last must be at least 64 KiB (so upload sessions keep tails).

Every backend is wrapped in `CountingBackend`, which counts the writes that
reached each key.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from asyncstore import (
    Backend,
    Capabilities,
    CommonPrefix,
    CompletedPart,
    InvalidArgumentError,
    MemoryBackend,
    ObjectInfo,
    ReadStream,
    Store,
    WriteAttributes,
    WriteResult,
)
from asyncstore.cas import ContentStore

KiB = 1024
PART = 64 * KiB
STORE_KINDS = ("memory", "local", "minpart")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


class MinPartBackend(MemoryBackend):
    """A memory backend that, like S3, refuses to complete an upload with a small inner part."""

    capabilities = Capabilities(min_part_size=PART)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        for part in parts[:-1]:
            if part.size < PART:
                raise InvalidArgumentError(
                    f"EntityTooSmall: part {part.number} of {key!r} is {part.size} bytes", key=key
                )
        return await super().complete_upload(key, upload_id, parts, attrs)


class CountingBackend(Backend):
    """Delegates to another backend and counts, per key, the writes that succeeded."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.writes: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.log: list[str] = []  # keys in the order their writes committed

    def writes_under(self, prefix: str) -> int:
        return sum(n for key, n in self.writes.items() if key.startswith(prefix))

    async def head(self, key: str) -> ObjectInfo:
        return await self.inner.head(key)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        return await self.inner.read(key, start, end, if_match=if_match)

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        self.attempts[key] += 1
        result = await self.inner.put(key, data, attrs, checksums)
        self.writes[key] += 1
        self.log.append(key)
        return result

    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        return await self.inner.create_upload(key, attrs)

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        return await self.inner.upload_part(key, upload_id, number, offset, data, checksums)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        self.attempts[key] += 1
        result = await self.inner.complete_upload(key, upload_id, parts, attrs)
        self.writes[key] += 1
        self.log.append(key)
        return result

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self.inner.abort_upload(key, upload_id)

    def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        return self.inner.list(prefix, delimiter=delimiter)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_many(self, keys: Iterable[str]) -> None:
        await self.inner.delete_many(keys)

    async def copy(self, src: str, dst: str) -> WriteResult:
        self.attempts[dst] += 1
        result = await self.inner.copy(src, dst)
        self.writes[dst] += 1
        self.log.append(dst)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_backend(kind: str, root: Path) -> Backend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "local":
        from asyncstore.backends.local import LocalBackend

        return LocalBackend(root)
    return MinPartBackend()


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = CountingBackend(make_backend(request.param, tmp_path / "root"))
    async with Store(backend, chunk_size=PART) as store:
        yield store


@pytest.fixture
def cas(store: Store) -> ContentStore:
    return ContentStore(store)


def counts(store: Store) -> CountingBackend:
    assert isinstance(store.backend, CountingBackend)
    return store.backend


async def keys(store: Store, prefix: str = "") -> list[str]:
    return [e.key async for e in store.list(prefix) if isinstance(e, ObjectInfo)]


def files_in(directory: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, name), directory)
        for d, _, names in os.walk(directory)
        for name in names
    )


def another_process(store: Store) -> Store:
    """A new Store over the same data, as another process would open it."""
    inner = counts(store).inner
    from asyncstore.backends.local import LocalBackend

    if isinstance(inner, LocalBackend):
        inner = LocalBackend(inner.root)
    return Store(CountingBackend(inner), chunk_size=store.chunk_size)
