"""The soak test: 64 concurrent tasks of mixed puts, gets, lists and deletes on every backend.

The workload is `asyncstore.testing.soak.soak` (shared with ``bench/soak.py``, which runs it
larger and checks the process's peak RSS against the Store's memory formula).
Each run is bounded in count (64 tasks x `OPS_PER_TASK` operations) and checks
what the store holds afterwards: every object a task reported written reads
back with the right sha256, every delete took effect, each shared key holds
one intact version, and the listing is exactly the surviving keys. No timing
is asserted.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from _servers import Azurite, Emulator, S3Server

from asyncstore import Store, UploadNotFoundError
from asyncstore._backend import MiB
from asyncstore.backends.azure import AzureBackend
from asyncstore.backends.gcs import GCSBackend
from asyncstore.backends.local import LocalBackend
from asyncstore.backends.memory import MemoryBackend
from asyncstore.testing.soak import WEIGHTS, SoakError, SoakReport, soak

pytestmark = [
    pytest.mark.anyio,
    # aiobotocore warns once that it prefers httpx2 over the legacy httpx package.
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]

TASKS = 64
OPS_PER_TASK = 8
#: Per backend: the largest object, the part size and the parts in flight. The
#: emulators are slow (moto ~80 MB/s, the GCS emulator ~15 MB/s, single-threaded),
#: so their largest objects are smaller than the workload's 32 MiB (still several
#: parts each, so multipart uploads and ranged reads run); bench/soak.py runs 32 MiB.
SETTINGS: dict[str, dict[str, int]] = {
    "memory": {"max_size": 32 * MiB, "chunk_size": MiB, "max_concurrency": 4},
    "local": {"max_size": 32 * MiB, "chunk_size": MiB, "max_concurrency": 4},
    "s3": {"max_size": 12 * MiB, "chunk_size": 5 * MiB, "max_concurrency": 2},  # 5 MiB: S3's min
    "gcs": {"max_size": 3 * MiB, "chunk_size": MiB, "max_concurrency": 2},
    "azure": {"max_size": 8 * MiB, "chunk_size": MiB, "max_concurrency": 4},
}
#: A run that takes longer than this is stuck (a deadlock, a lost wake-up), not slow.
STUCK = 240


async def _run(
    store: Store, prefix: str, backend: str, anyio_backend: str, **options: Any
) -> SoakReport:
    settings = SETTINGS[backend]
    seed = sum(map(ord, f"{backend}/{anyio_backend}"))  # each run its own, reproducible workload
    with anyio.fail_after(STUCK):
        report = await soak(
            store,
            prefix,
            seed=seed,
            tasks=TASKS,
            ops_per_task=OPS_PER_TASK,
            max_size=settings["max_size"],
            **options,
        )
    assert report.total_ops == TASKS * OPS_PER_TASK
    kinds = set(WEIGHTS) - ({"shared-get"} if options.get("shared_reads") is False else set())
    assert set(report.ops) == kinds, report.ops  # every kind of operation ran
    assert report.written and report.deleted and report.shared
    assert report.largest > settings["chunk_size"]  # multipart puts and ranged reads ran
    print(f"soak {backend}/{anyio_backend}: {report.as_dict()}")
    return report


def _store(backend: Any, name: str) -> Store:
    settings = SETTINGS[name]
    return Store(
        backend, chunk_size=settings["chunk_size"], max_concurrency=settings["max_concurrency"]
    )


async def test_soak_memory(anyio_backend: str) -> None:
    backend = MemoryBackend()
    async with _store(backend, "memory") as store:
        await _run(store, "soak", "memory", anyio_backend)
    assert await backend.pending_uploads() == []  # no multipart upload left open


async def test_soak_local(anyio_backend: str, tmp_path: Any) -> None:
    async with _store(LocalBackend(str(tmp_path / "store")), "local") as store:
        await _run(store, "soak", "local", anyio_backend)
    temps = [p for p in (tmp_path / "store").rglob(".asyncstore-*") if p.is_file()]
    assert temps == []  # no temp file of an upload or a write left behind


async def test_soak_s3(anyio_backend: str, s3: S3Server) -> None:
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    try:
        async with _store(s3.backend(), "s3") as store:
            await _run(store, prefix, "s3", anyio_backend)
        assert s3.uploads(prefix) == []  # no incomplete multipart upload left
    finally:
        s3.clean(prefix)


@pytest.fixture
def bucket(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    name = emulator.create_bucket()
    try:
        yield name
    finally:
        emulator.empty(name)


async def test_soak_gcs(anyio_backend: str, emulator: Emulator, bucket: str) -> None:
    # The emulator serves one request at a time (backlog 5): 4 connections, the rest queue.
    backend = GCSBackend(bucket, max_connections=4)
    async with _store(backend, "gcs") as store:
        # The emulator ignores ifGenerationMatch on reads (see test_gcs_backend.py),
        # so a read racing with a put of the same key gets the metadata of one
        # version and bytes of another (a DigestMismatchError, a short body, a range
        # past the end) where GCS answers 412. No reads of the shared keys while
        # they are written, then; they are still written at once and verified after.
        await _run(store, "soak", "gcs", anyio_backend, shared_reads=False)
    names = await anyio.to_thread.run_sync(emulator.names, bucket)
    assert not [n for n in names if ".asyncstore-uploads/" in n]  # no composite part left


@contextlib.asynccontextmanager
async def _container(azurite: Azurite) -> AsyncIterator[str]:
    name = f"soak{uuid.uuid4().hex[:20]}"
    service = azurite.service()
    await anyio.to_thread.run_sync(service.create_container, name)
    try:
        yield name
    finally:
        await anyio.to_thread.run_sync(service.delete_container, name)
        service.close()


async def test_soak_azure(anyio_backend: str, azurite: Azurite) -> None:
    async with _container(azurite) as container:
        backend = AzureBackend(container, connection_string=azurite.connection_string)
        async with _store(backend, "azure") as store:
            # Two staged uploads of one key: the first to commit discards the other's
            # blocks, whose commit fails (docs/backends/azure.md, "Aborted and
            # cancelled uploads").
            await _run(
                store, "soak", "azure", anyio_backend, lost_write_errors=(UploadNotFoundError,)
            )
            assert await backend.pending_uploads() == []  # no uncommitted blocks left


class _LosesDeletes(MemoryBackend):
    """A broken store: deletes of keys ending in ``k1`` do nothing."""

    async def delete(self, key: str) -> None:
        if not key.endswith("k1"):
            await super().delete(key)


class _MisplacesWrites(MemoryBackend):
    """A broken store: writes of keys ending in ``k2`` land on another key."""

    def _commit(self, key: str, segments: Any, attrs: Any) -> Any:
        return super()._commit(key + "x" if key.endswith("k2") else key, segments, attrs)


@pytest.mark.parametrize("broken", [_LosesDeletes, _MisplacesWrites])
async def test_the_soak_catches_a_broken_store(anyio_backend: str, broken: type) -> None:
    async with Store(broken(), chunk_size=64 * 1024) as store:
        try:
            await soak(store, "soak", tasks=16, ops_per_task=12, max_size=256 * 1024)
        except Exception as exc:  # a SoakError, or a group of them (from the task group)
            assert _soak_errors(exc), exc
        else:
            pytest.fail(f"the soak did not notice a {broken.__name__} store")


def _soak_errors(exc: BaseException) -> list[SoakError]:
    if isinstance(exc, SoakError):
        return [exc]
    return [found for inner in getattr(exc, "exceptions", ()) for found in _soak_errors(inner)]
