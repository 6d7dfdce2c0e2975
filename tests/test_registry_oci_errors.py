"""The not-found errors of asyncstore.oci: each a NotFoundError subclass naming what is unknown.

Issue 13, defect 13: TagNotFoundError was not a NotFoundError. The registry
server maps these classes to the spec's codes (BLOB_UNKNOWN, MANIFEST_UNKNOWN,
NAME_UNKNOWN) by type, never by parsing a message.
"""

from __future__ import annotations

import json

import pytest

import asyncstore
from asyncstore import (
    BlobNotFoundError,
    DigestMismatchError,
    InvalidArgumentError,
    ManifestNotFoundError,
    MemoryBackend,
    NotFoundError,
    RepositoryNotFoundError,
    Store,
    TagNotFoundError,
)
from asyncstore.oci import OCI_CONFIG, OCI_MANIFEST, RegistryStorage

pytestmark = pytest.mark.anyio

MISSING = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "cls",
    [TagNotFoundError, BlobNotFoundError, ManifestNotFoundError, RepositoryNotFoundError],
)
def test_each_oci_not_found_error_is_a_not_found_error(cls: type[Exception]) -> None:
    assert issubclass(cls, NotFoundError)
    assert issubclass(cls, FileNotFoundError)
    assert getattr(asyncstore, cls.__name__) is cls
    assert cls.__name__ in asyncstore.__all__


async def test_a_missing_tag_is_caught_as_not_found() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        with pytest.raises(NotFoundError) as info:
            await registry.resolve_tag("app", "latest")
        assert type(info.value) is TagNotFoundError
        with pytest.raises(TagNotFoundError):
            await registry.get_manifest("app", "latest")


async def test_a_missing_blob_raises_blob_not_found() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        for call in (
            registry.stat_blob("app", MISSING),
            registry.get_blob("app", MISSING),
            registry.delete_blob("app", MISSING),
            registry.mount_blob("app", MISSING, "other"),
            registry.mount_stored_blob("app", MISSING),
        ):
            with pytest.raises(BlobNotFoundError, match="blob"):
                await call


async def test_a_blob_linked_but_whose_bytes_are_gone_raises_blob_not_found() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        descriptor = await registry.put_blob("app", b"bytes")
        await registry.cas.delete(descriptor.digest)
        with pytest.raises(BlobNotFoundError):
            await registry.stat_blob("app", descriptor.digest)
        with pytest.raises(BlobNotFoundError):
            await registry.get_blob("app", descriptor.digest)


async def test_a_missing_manifest_raises_manifest_not_found() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        for call in (
            registry.get_manifest("app", MISSING),
            registry.stat_manifest("app", MISSING),
            registry.delete_manifest("app", MISSING),
            registry.tag_manifest("app", "v1", MISSING),
        ):
            with pytest.raises(ManifestNotFoundError):
                await call


async def test_a_manifest_referencing_a_missing_blob_names_the_blob() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": MISSING, "size": 2},
                "layers": [],
            }
        ).encode()
        with pytest.raises(BlobNotFoundError, match=MISSING):
            await registry.put_manifest("app", body, OCI_MANIFEST)


async def test_tags_of_a_repository_that_does_not_exist_raise_repository_not_found() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        with pytest.raises(RepositoryNotFoundError, match="'nothing/here'"):
            await registry.list_tags("nothing/here")


async def test_a_manifest_whose_stored_bytes_were_replaced_is_a_digest_mismatch() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store, manifest_cache=0)
        config = await registry.put_blob("app", b"{}")
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": str(config.digest), "size": 2},
                "layers": [],
            }
        ).encode()
        descriptor = await registry.put_manifest("app", body, OCI_MANIFEST, tags=["v1"])
        assert await registry.get_manifest("app", "v1") == (body, descriptor)
        # someone rewrites the stored body (the store records the new bytes' sha256)
        await store.put(registry.cas.blob_key(descriptor.digest), b"{}" + b" " * (len(body) - 2))
        with pytest.raises(DigestMismatchError, match="is corrupt") as info:
            await registry.get_manifest("app", "v1")
        assert info.value.expected == str(descriptor.digest)


async def test_a_cached_manifest_is_not_served_once_deleted_or_untagged() -> None:
    async with Store(MemoryBackend()) as store:
        registry = RegistryStorage(store)
        other = RegistryStorage(store)  # another server process over the same store
        config = await registry.put_blob("app", b"{}")
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": str(config.digest), "size": 2},
                "layers": [],
            }
        ).encode()
        descriptor = await registry.put_manifest("app", body, OCI_MANIFEST, tags=["v1"])
        assert (await registry.get_manifest("app", "v1"))[0] == body  # cached now
        await other.untag("app", "v1")
        with pytest.raises(TagNotFoundError):
            await registry.get_manifest("app", "v1")
        assert (await registry.get_manifest("app", str(descriptor.digest)))[0] == body
        await other.delete_manifest("app", descriptor.digest)
        with pytest.raises(ManifestNotFoundError):
            await registry.get_manifest("app", str(descriptor.digest))


def test_the_manifest_cache_size_is_checked() -> None:
    store = Store(MemoryBackend())
    with pytest.raises(InvalidArgumentError, match="manifest_cache"):
        RegistryStorage(store, manifest_cache=-1)
