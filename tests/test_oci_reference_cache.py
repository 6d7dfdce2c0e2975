"""RegistryStorage's reference cache: resolved tags, revisions and blob links kept for a while."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from asyncstore import (
    BlobNotFoundError,
    InvalidArgumentError,
    ManifestNotFoundError,
    MemoryBackend,
    NotFoundError,
    ObjectInfo,
    PermissionDeniedError,
    ReadStream,
    Store,
    TagNotFoundError,
)
from asyncstore.cas import Descriptor
from asyncstore.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryStorage
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio

REPO = "library/app"


class ReadCountingBackend(MemoryBackend):
    """A memory backend that counts the reads and lookups made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        self.reads += 1
        return await super().read(key, start, end, if_match=if_match)

    async def head(self, key: str) -> ObjectInfo:
        self.reads += 1
        return await super().head(key)


@pytest.fixture
def backend() -> ReadCountingBackend:
    return ReadCountingBackend()


@pytest.fixture
async def store(backend: ReadCountingBackend) -> AsyncIterator[Store]:
    async with Store(backend) as store:
        yield store


async def push_image(registry: RegistryStorage, seed: int, tags: tuple[str, ...]) -> Descriptor:
    config = await registry.put_blob(REPO, b'{"seed": %d}' % seed)
    layer = await registry.put_blob(REPO, pattern(1000 + seed, seed=seed))
    body = (
        b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%d},'
        b'"layers":[{"mediaType":"%s","digest":"%s","size":%d}]}'
        % (
            OCI_MANIFEST.encode(),
            OCI_CONFIG.encode(),
            str(config.digest).encode(),
            config.size,
            OCI_LAYER.encode(),
            str(layer.digest).encode(),
            layer.size,
        )
    )
    return await registry.put_manifest(REPO, body, OCI_MANIFEST, tags=tags)


async def test_a_cached_tag_is_served_without_reading_the_store(
    store: Store, backend: ReadCountingBackend
) -> None:
    registry = RegistryStorage(store, reference_cache=60)
    pushed = await push_image(registry, 1, ("v1",))
    body, first = await registry.get_manifest(REPO, "v1")
    before = backend.reads
    for _ in range(3):
        again, descriptor = await registry.get_manifest(REPO, "v1")
        assert (again, descriptor) == (body, first)
        assert await registry.stat_manifest(REPO, str(pushed.digest)) == first
    assert first.digest == pushed.digest
    # The digest reference was read once (its first use); the tag never again.
    assert backend.reads - before == 1


async def test_without_the_cache_every_lookup_reads_the_store(
    store: Store, backend: ReadCountingBackend
) -> None:
    registry = RegistryStorage(store)
    await push_image(registry, 1, ("v1",))
    await registry.get_manifest(REPO, "v1")
    before = backend.reads
    await registry.get_manifest(REPO, "v1")
    assert backend.reads - before == 2  # the tag and the revision link


async def test_a_cached_blob_link_is_not_looked_up_again(
    store: Store, backend: ReadCountingBackend
) -> None:
    registry = RegistryStorage(store, reference_cache=60)
    blob = await registry.put_blob(REPO, b"layer bytes")
    await registry.stat_blob(REPO, blob.digest)
    before = backend.reads
    await registry.stat_blob(REPO, blob.digest)
    assert backend.reads - before == 1  # the blob itself, not the repository's link
    await registry.delete_blob(REPO, blob.digest)
    with pytest.raises(BlobNotFoundError):
        await registry.stat_blob(REPO, blob.digest)
    with pytest.raises(BlobNotFoundError):
        await registry.get_blob(REPO, blob.digest)


async def test_writes_through_the_registry_are_seen_at_once(store: Store) -> None:
    registry = RegistryStorage(store, reference_cache=3600)
    one = await push_image(registry, 1, ("latest",))
    assert (await registry.stat_manifest(REPO, "latest")).digest == one.digest
    two = await push_image(registry, 2, ("latest",))  # the tag moves
    assert (await registry.stat_manifest(REPO, "latest")).digest == two.digest
    await registry.tag_manifest(REPO, "latest", one.digest)  # and back
    assert (await registry.stat_manifest(REPO, "latest")).digest == one.digest
    await registry.untag(REPO, "latest")
    with pytest.raises(TagNotFoundError):
        await registry.stat_manifest(REPO, "latest")
    await registry.tag_manifest(REPO, "stable", two.digest)
    assert (await registry.stat_manifest(REPO, str(two.digest))).digest == two.digest
    assert (await registry.stat_manifest(REPO, "stable")).digest == two.digest
    await registry.delete_manifest(REPO, two.digest)  # its tags go with it
    with pytest.raises(ManifestNotFoundError):
        await registry.stat_manifest(REPO, str(two.digest))
    with pytest.raises(NotFoundError):
        await registry.get_manifest(REPO, "stable")
    assert not await registry.manifest_exists(REPO, "stable")


async def test_another_process_is_seen_once_the_entries_expire(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncstore.oci import _registry

    now = [1000.0]
    monkeypatch.setattr(_registry, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    mine = RegistryStorage(store, reference_cache=5)
    other = RegistryStorage(store)  # another server over the same store
    one = await push_image(other, 1, ("latest",))
    assert (await mine.stat_manifest(REPO, "latest")).digest == one.digest
    two = await push_image(other, 2, ("latest",))
    now[0] += 4.9
    assert (await mine.stat_manifest(REPO, "latest")).digest == one.digest  # still trusted
    now[0] += 0.2
    assert (await mine.stat_manifest(REPO, "latest")).digest == two.digest
    await other.untag(REPO, "latest")
    now[0] += 5.1
    with pytest.raises(TagNotFoundError):
        await mine.stat_manifest(REPO, "latest")


async def test_a_missing_tag_is_never_cached(store: Store) -> None:
    mine = RegistryStorage(store, reference_cache=3600)
    other = RegistryStorage(store)
    with pytest.raises(TagNotFoundError):
        await mine.stat_manifest(REPO, "later")
    one = await push_image(other, 1, ("later",))
    assert (await mine.stat_manifest(REPO, "later")).digest == one.digest


@pytest.mark.parametrize("value", [-1, "5", True, float("nan")])
def test_the_reference_cache_must_be_seconds(value: object) -> None:
    store = Store(MemoryBackend())
    with pytest.raises(InvalidArgumentError, match="reference_cache"):
        RegistryStorage(store, reference_cache=value)  # type: ignore[arg-type]


async def test_a_blob_pushed_here_is_served_without_looking_up_its_link(
    store: Store, backend: ReadCountingBackend
) -> None:
    registry = RegistryStorage(store, reference_cache=60)
    blob = await registry.put_blob(REPO, b"layer bytes")
    before = backend.reads
    assert await registry.get_blob(REPO, blob.digest) == b"layer bytes"
    assert backend.reads - before == 1  # the blob's bytes only


class GatedBackend(ReadCountingBackend):
    """Reads of keys under ``gated_prefix`` count, wait for ``gate``, and the first ``fail``
    of them raise PermissionDeniedError (never retried) once it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gated_prefix = "\0"  # nothing, until a test says
        self.gate = anyio.Event()
        self.gated = 0
        self.fail = 0

    async def _wait(self, key: str) -> None:
        if key.startswith(self.gated_prefix):
            self.gated += 1
            await self.gate.wait()
            if self.fail:
                self.fail -= 1
                raise PermissionDeniedError("injected refusal of a gated read", key=key)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        await self._wait(key)
        return await super().read(key, start, end, if_match=if_match)

    async def head(self, key: str) -> ObjectInfo:
        await self._wait(key)
        return await super().head(key)


async def _at_once(count: int, call: Callable[[], Awaitable[Any]], gate: anyio.Event) -> list[Any]:
    """``count`` calls started together; the gate opens once they all wait. Each one's
    result, or the exception it raised."""
    results: list[Any] = [None] * count

    async def one(index: int) -> None:
        try:
            results[index] = await call()
        except Exception as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(one, index)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    return results


async def _gated_registry(backend: GatedBackend, store: Store, ttl: float) -> RegistryStorage:
    registry = RegistryStorage(store, reference_cache=ttl)  # nothing cached yet
    backend.gated_prefix = f"{registry.prefix}repositories/"
    return registry


@pytest.mark.parametrize("what", ["tag", "blob link"])
async def test_concurrent_misses_of_one_reference_share_one_store_read(what: str) -> None:
    # A cached tag expiring under load: every request missed at once and read the store
    # (1,000 connections asking for one tag under wrk: 1,000 reads a second).
    backend = GatedBackend()
    async with Store(backend) as store:
        pushed = await push_image(RegistryStorage(store), 1, ("v1",))
        layer = await RegistryStorage(store).put_blob(REPO, b"a layer of its own")
        registry = await _gated_registry(backend, store, 60)
        if what == "tag":
            found = await _at_once(50, lambda: registry.stat_manifest(REPO, "v1"), backend.gate)
            assert [d.digest for d in found] == [pushed.digest] * 50
            assert backend.gated == 2  # the tag, then its revision link: once for all fifty
        else:
            found = await _at_once(
                50, lambda: registry.blob_exists(REPO, layer.digest), backend.gate
            )
            assert found == [True] * 50
            assert backend.gated == 1  # the repository's link to the blob


async def test_without_the_cache_concurrent_lookups_each_read_the_store() -> None:
    backend = GatedBackend()
    async with Store(backend) as store:
        pushed = await push_image(RegistryStorage(store), 1, ("v1",))
        registry = await _gated_registry(backend, store, 0)
        found = await _at_once(10, lambda: registry.stat_manifest(REPO, "v1"), backend.gate)
        assert [d.digest for d in found] == [pushed.digest] * 10
        assert backend.gated == 20  # every call read the tag and the revision link


async def test_when_the_shared_read_fails_the_others_read_for_themselves() -> None:
    backend = GatedBackend()
    async with Store(backend) as store:
        pushed = await push_image(RegistryStorage(store), 1, ("v1",))
        registry = await _gated_registry(backend, store, 60)
        backend.fail = 1  # the first read (the one shared) is refused
        found = await _at_once(10, lambda: registry.stat_manifest(REPO, "v1"), backend.gate)
        refused = [r for r in found if isinstance(r, PermissionDeniedError)]
        assert len(refused) == 1  # only its own caller sees its error
        assert [d.digest for d in found if d not in refused] == [pushed.digest] * 9


async def test_a_read_begun_before_a_write_is_not_shared_after_it() -> None:
    backend = GatedBackend()
    async with Store(backend) as store:
        writer = RegistryStorage(store)
        one = await push_image(writer, 1, ("latest",))
        registry = await _gated_registry(backend, store, 60)
        results: list[Descriptor] = []

        async def look() -> None:
            results.append(await registry.stat_manifest(REPO, "latest"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(look)  # its read starts, and waits at the gate
            await anyio.wait_all_tasks_blocked()
            backend.gated_prefix = "\0"  # the write and what follows are not gated
            two = await push_image(registry, 2, ("latest",))  # a write through this object
            with anyio.fail_after(30):  # (joining the read at the gate would never return)
                assert (await registry.stat_manifest(REPO, "latest")).digest == two.digest
            backend.gate.set()
        assert results[0].digest in (one.digest, two.digest)
        assert (await registry.stat_manifest(REPO, "latest")).digest == two.digest
