"""RegistryStorage: the OCI conformance suite's storage-level cases, concurrency, cascades."""

# ruff: noqa: F811 - the fixtures imported from test_cas_helpers are test parameters here

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from test_cas_helpers import (  # noqa: F401 - store is a fixture
    PART,
    another_process,
    counts,
    files_in,
    keys,
    sha256,
    sha512,
    store,
)

from asyncstore import (
    BlobNotFoundError,
    DigestMismatchError,
    InvalidArgumentError,
    InvalidDigestError,
    InvalidOffsetError,
    MemoryBackend,
    NotFoundError,
    PermissionDeniedError,
    Store,
    TagNotFoundError,
    UploadNotFoundError,
    WriteAttributes,
    WriteResult,
)
from asyncstore.cas import ContentStore, Descriptor
from asyncstore.oci import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    RegistryStorage,
    TagList,
)
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio

REPO = "library/app"
EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_JSON = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@pytest.fixture
def registry(store: Store) -> RegistryStorage:
    return RegistryStorage(store)


def image_manifest(config: Descriptor, layers: list[Descriptor], **fields: object) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_dict(),
        "layers": [layer.to_dict() for layer in layers],
    }
    doc.update(fields)
    # Odd spacing on purpose: manifests must come back byte for byte.
    return json.dumps(doc, indent=3).encode() + b"\n"


async def push_image(
    registry: RegistryStorage, repo: str = REPO, *, seed: int = 0, tags: tuple[str, ...] = ()
) -> tuple[bytes, Descriptor]:
    config_bytes = json.dumps({"architecture": "amd64", "seed": seed}).encode()
    config = await registry.put_blob(repo, config_bytes)
    layer = await registry.put_blob(repo, pattern(PART + seed, seed=seed))
    config = Descriptor(config.digest, config.size, OCI_CONFIG)
    layer = Descriptor(layer.digest, layer.size, OCI_LAYER)
    body = image_manifest(config, [layer])
    return body, await registry.put_manifest(repo, body, OCI_MANIFEST, tags=tags)


async def chunked(registry: RegistryStorage, repo: str, data: bytes, chunk: int) -> str:
    sid = await registry.start_upload(repo)
    offset = 0
    for i in range(0, len(data), chunk):
        offset = await registry.append_upload(repo, sid, offset, data[i : i + chunk])
    return sid


# -- blobs: pushes --------------------------------------------------------------------------------


async def test_monolithic_push(registry: RegistryStorage) -> None:
    data = pattern(3 * PART)
    desc = await registry.put_blob(REPO, data, expected=sha256(data))
    assert (desc.digest, desc.size) == (sha256(data), len(data))
    assert await registry.blob_exists(REPO, desc.digest)
    assert await registry.get_blob(REPO, desc.digest) == data
    assert (await registry.stat_blob(REPO, desc.digest)).size == len(data)


async def test_monolithic_push_with_a_bad_digest_stores_and_links_nothing(
    registry: RegistryStorage,
) -> None:
    with pytest.raises(DigestMismatchError):
        await registry.put_blob(REPO, b"data", expected=sha256(b"other"))
    assert not await registry.blob_exists(REPO, sha256(b"other"))
    assert not await registry.blob_exists(REPO, sha256(b"data"))
    assert await keys(registry.store) == []


async def test_chunked_push(registry: RegistryStorage) -> None:
    data = pattern(4 * PART + 11)
    sid = await chunked(registry, REPO, data, 50_000)
    assert await registry.upload_progress(REPO, sid) == len(data)
    desc = await registry.finish_upload(REPO, sid, sha256(data))
    assert desc.digest == sha256(data)
    assert await registry.get_blob(REPO, desc.digest) == data
    with pytest.raises(UploadNotFoundError):
        await registry.upload_progress(REPO, sid)


class LinkFirstBackend(MemoryBackend):
    """Writes to blob keys wait until a repository's link to a blob has been written."""

    def __init__(self) -> None:
        super().__init__()
        self.linked = anyio.Event()

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        if key.startswith("blobs/"):
            with anyio.fail_after(10):  # a finish that linked only after storing waits forever
                await self.linked.wait()
        result = await super().put(key, data, attrs, checksums)
        if "/_layers/" in key:
            self.linked.set()
        return result


async def test_finish_upload_links_the_blob_while_it_is_stored() -> None:
    async with Store(LinkFirstBackend(), chunk_size=PART) as store:
        registry = RegistryStorage(store)
        sid = await registry.start_upload(REPO)
        await registry.append_upload(REPO, sid, 0, b"layer")
        desc = await registry.finish_upload(REPO, sid, sha256(b"layer"))
        assert await registry.get_blob(REPO, desc.digest) == b"layer"


async def test_a_finish_upload_whose_blob_write_fails_reads_as_absent_and_can_be_retried(
    store: Store,
) -> None:
    registry = RegistryStorage(store)
    sid = await registry.start_upload(REPO)
    await registry.append_upload(REPO, sid, 0, b"layer")
    write_known = registry.cas._blobs.write_known

    async def refused(*args: object, **kwargs: object) -> Descriptor:
        await anyio.sleep(0)
        raise PermissionDeniedError("injected: the blob write is refused", key="blob")

    registry.cas._blobs.write_known = refused  # type: ignore[method-assign]
    with pytest.raises(PermissionDeniedError, match="injected"):
        await registry.finish_upload(REPO, sid, sha256(b"layer"))
    # The link may be there; without the blob the repository does not hold it.
    assert not await registry.blob_exists(REPO, sha256(b"layer"))
    with pytest.raises(BlobNotFoundError):
        await registry.stat_blob(REPO, sha256(b"layer"))
    registry.cas._blobs.write_known = write_known  # type: ignore[method-assign]
    desc = await registry.finish_upload(REPO, sid, sha256(b"layer"))
    assert await registry.get_blob(REPO, desc.digest) == b"layer"


async def test_chunked_push_whose_last_chunk_comes_with_the_finish(
    registry: RegistryStorage,
) -> None:
    data = pattern(2 * PART)
    sid = await registry.start_upload(REPO)
    await registry.append_upload(REPO, sid, 0, data[:1000])
    desc = await registry.finish_upload(REPO, sid, sha256(data), chunk=data[1000:])
    assert await registry.get_blob(REPO, desc.digest) == data
    sid = await registry.start_upload(REPO)
    with pytest.raises(InvalidOffsetError):
        await registry.finish_upload(REPO, sid, sha256(b"x"), chunk=b"x", offset=5)


async def test_an_out_of_order_chunk_is_rejected(registry: RegistryStorage) -> None:
    sid = await registry.start_upload(REPO)
    await registry.append_upload(REPO, sid, 0, b"a" * 10)
    with pytest.raises(InvalidOffsetError, match="resume at offset 10"):
        await registry.append_upload(REPO, sid, 20, b"c" * 10)
    assert await registry.upload_progress(REPO, sid) == 10


async def test_the_retry_of_a_stale_chunk_is_rejected(registry: RegistryStorage) -> None:
    sid = await registry.start_upload(REPO)
    await registry.append_upload(REPO, sid, 0, b"a" * 10)
    await registry.append_upload(REPO, sid, 10, b"b" * 10)
    with pytest.raises(InvalidOffsetError):
        await registry.append_upload(REPO, sid, 10, b"b" * 10)
    assert await registry.upload_progress(REPO, sid) == 20
    desc = await registry.finish_upload(REPO, sid, sha256(b"a" * 10 + b"b" * 10))
    assert desc.size == 20


async def test_resume_after_asking_for_progress_from_another_process(store: Store) -> None:
    data = pattern(3 * PART)
    sid = await chunked(RegistryStorage(store), REPO, data[:100_000], 100_000)
    async with another_process(store) as other:
        registry = RegistryStorage(other)
        offset = await registry.upload_progress(REPO, sid)
        assert offset == 100_000
        await registry.append_upload(REPO, sid, offset, data[offset:])
        desc = await registry.finish_upload(REPO, sid, sha256(data))
        assert await registry.get_blob(REPO, desc.digest) == data


async def test_cancel_an_upload(registry: RegistryStorage) -> None:
    sid = await chunked(registry, REPO, pattern(2 * PART), PART)
    await registry.abort_upload(REPO, sid)
    await registry.abort_upload(REPO, sid)
    with pytest.raises(UploadNotFoundError):
        await registry.upload_progress(REPO, sid)
    with pytest.raises(UploadNotFoundError):
        await registry.append_upload(REPO, sid, 0, b"x")
    assert await keys(registry.store) == []


async def test_an_upload_belongs_to_its_repository(registry: RegistryStorage) -> None:
    sid = await registry.start_upload(REPO)
    status = await registry.upload_status(REPO, sid)
    assert (status.id, status.scope) == (sid, REPO)
    for call in (
        registry.upload_progress("other/repo", sid),
        registry.append_upload("other/repo", sid, 0, b"x"),
        registry.finish_upload("other/repo", sid, EMPTY),
        registry.abort_upload("other/repo", sid),
    ):
        with pytest.raises(UploadNotFoundError):
            await call
    assert await registry.upload_progress(REPO, sid) == 0


async def test_finish_with_a_bad_digest_discards_the_upload_and_links_nothing(
    registry: RegistryStorage,
) -> None:
    data = pattern(2 * PART)
    sid = await chunked(registry, REPO, data, PART)
    with pytest.raises(DigestMismatchError):
        await registry.finish_upload(REPO, sid, sha256(b"wrong"))
    with pytest.raises(UploadNotFoundError):
        await registry.upload_progress(REPO, sid)
    assert not await registry.blob_exists(REPO, sha256(data))
    assert await keys(registry.store) == []


async def test_the_empty_blob_and_the_empty_json_blob(registry: RegistryStorage) -> None:
    assert (await registry.put_blob(REPO, b"", expected=EMPTY)).size == 0
    sid = await registry.start_upload(REPO)
    assert (await registry.finish_upload(REPO, sid, EMPTY)).digest == EMPTY
    assert await registry.get_blob(REPO, EMPTY) == b""
    desc = await registry.put_blob("other", b"{}", expected=EMPTY_JSON)
    assert desc.digest == EMPTY_JSON
    sid = await registry.start_upload(REPO)
    await registry.finish_upload(REPO, sid, EMPTY_JSON, chunk=b"{}")
    assert await registry.get_blob(REPO, EMPTY_JSON) == b"{}"


async def test_a_sha512_blob_can_be_pushed_both_ways(registry: RegistryStorage) -> None:
    data = pattern(PART + 1)
    assert (await registry.put_blob(REPO, data, expected=sha512(data))).digest == sha512(data)
    sid = await chunked(registry, "other", data, 10_000)
    assert (await registry.finish_upload("other", sid, sha512(data))).digest == sha512(data)
    assert await registry.get_blob("other", sha512(data)) == data


# -- blobs: reads, mount, delete ----------------------------------------------------------------


async def test_a_blob_of_another_repository_is_not_found(registry: RegistryStorage) -> None:
    desc = await registry.put_blob("team/a", b"secret")
    with pytest.raises(NotFoundError, match="not in repository 'team/b'"):
        await registry.get_blob("team/b", desc.digest)
    with pytest.raises(NotFoundError):
        await registry.stat_blob("team/b", desc.digest)
    with pytest.raises(NotFoundError):
        async for _ in registry.stream_blob("team/b", desc.digest):
            pass
    assert not await registry.blob_exists("team/b", desc.digest)


async def test_cross_repository_mount_copies_no_bytes(registry: RegistryStorage) -> None:
    data = pattern(3 * PART)
    desc = await registry.put_blob("team/a", data)
    mounted = await registry.mount_blob("team/b", desc.digest, from_repo="team/a")
    assert (mounted.digest, mounted.size) == (desc.digest, desc.size)
    assert await registry.get_blob("team/b", desc.digest) == data
    blob_key = registry.cas.blob_key(desc.digest)
    assert counts(registry.store).writes[blob_key] == 1
    assert counts(registry.store).writes_under("staging/") == 0


async def test_a_mount_from_a_repository_without_the_blob_fails(registry: RegistryStorage) -> None:
    desc = await registry.put_blob("team/a", b"x")
    with pytest.raises(NotFoundError, match="not in repository 'team/c'"):
        await registry.mount_blob("team/b", desc.digest, from_repo="team/c")
    assert not await registry.blob_exists("team/b", desc.digest)


async def test_deleting_a_blob_unlinks_it_from_one_repository_only(
    registry: RegistryStorage,
) -> None:
    desc = await registry.put_blob("team/a", b"shared")
    await registry.mount_blob("team/b", desc.digest, "team/a")
    await registry.delete_blob("team/a", desc.digest)
    assert not await registry.blob_exists("team/a", desc.digest)
    assert await registry.get_blob("team/b", desc.digest) == b"shared"
    with pytest.raises(NotFoundError):
        await registry.delete_blob("team/a", desc.digest)


async def test_blob_streams_and_files_are_verified(
    registry: RegistryStorage, tmp_path: Path
) -> None:
    data = pattern(3 * PART)
    desc = await registry.put_blob(REPO, data)
    async with registry.stream_blob(REPO, desc.digest) as body:
        assert b"".join([c async for c in body]) == data
    out = tmp_path / "out"
    await registry.fetch_blob(REPO, desc.digest, out / "layer")
    assert await anyio.Path(out / "layer").read_bytes() == data
    await registry.store.put(registry.cas.blob_key(desc.digest), b"tampered")
    with pytest.raises(DigestMismatchError):
        await registry.get_blob(REPO, desc.digest)
    with pytest.raises(DigestMismatchError):
        await registry.fetch_blob(REPO, desc.digest, out / "again")
    assert await anyio.to_thread.run_sync(files_in, out) == ["layer"]
    with pytest.raises(NotFoundError):
        await registry.fetch_blob("other", desc.digest, out / "x")


async def test_a_bad_digest_is_rejected_on_every_path(registry: RegistryStorage) -> None:
    bad = "sha256:XYZ"
    sid = await registry.start_upload(REPO)
    calls = [
        registry.put_blob(REPO, b"x", expected=bad),
        registry.get_blob(REPO, bad),
        registry.stat_blob(REPO, bad),
        registry.blob_exists(REPO, bad),
        registry.delete_blob(REPO, bad),
        registry.mount_blob(REPO, bad, "other"),
        registry.finish_upload(REPO, sid, bad),
        registry.put_manifest(REPO, b"{}", "application/json", digest=bad),
        registry.get_manifest(REPO, bad),
        registry.delete_manifest(REPO, bad),
        registry.tag_manifest(REPO, "v1", bad),
        registry.lookup_tags(REPO, bad),
        registry.list_referrers(REPO, bad),
    ]
    for call in calls:
        with pytest.raises(InvalidDigestError):
            await call
    with pytest.raises(InvalidDigestError):
        registry.stream_blob(REPO, bad)
    assert await registry.upload_progress(REPO, sid) == 0  # a bad digest keeps the session


async def test_a_bad_repository_name_is_rejected_on_every_path(registry: RegistryStorage) -> None:
    bad = "Bad/Name"
    calls = [
        registry.put_blob(bad, b"x"),
        registry.get_blob(bad, EMPTY),
        registry.start_upload(bad),
        registry.upload_progress(bad, "0" * 32),
        registry.put_manifest(bad, b"{}", "application/json"),
        registry.get_manifest(bad, "latest"),
        registry.resolve_tag(bad, "latest"),
        registry.list_tags(bad),
        registry.mount_blob(REPO, EMPTY, bad),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="repository name"):
            await call
    assert await keys(registry.store) == []


# -- manifests ------------------------------------------------------------------------------------


async def test_a_manifest_is_stored_byte_exact_and_found_by_digest_or_tag(
    registry: RegistryStorage,
) -> None:
    body, desc = await push_image(registry, tags=("v1",))
    assert desc.digest == sha256(body)
    assert (desc.media_type, desc.size, desc.artifact_type) == (OCI_MANIFEST, len(body), OCI_CONFIG)
    assert await registry.get_manifest(REPO, desc.digest) == (body, desc)
    got, by_tag = await registry.get_manifest(REPO, "v1")
    assert got == body
    assert (by_tag.digest, by_tag.media_type) == (desc.digest, OCI_MANIFEST)
    assert (await registry.stat_manifest(REPO, "v1")).digest == desc.digest
    assert await registry.manifest_exists(REPO, desc.digest)
    assert not await registry.manifest_exists(REPO, "nope")
    assert not await registry.manifest_exists("other", desc.digest)


async def test_put_manifest_by_digest_checks_the_body(registry: RegistryStorage) -> None:
    body, desc = await push_image(registry)
    again = await registry.put_manifest(REPO, body, OCI_MANIFEST, digest=desc.digest)
    assert again == desc
    by512 = await registry.put_manifest(REPO, body, OCI_MANIFEST, digest=sha512(body))
    assert by512.digest == sha512(body)
    with pytest.raises(DigestMismatchError) as info:
        await registry.put_manifest(REPO, body + b" ", OCI_MANIFEST, digest=desc.digest)
    assert info.value.actual == sha256(body + b" ")
    assert not await registry.manifest_exists(REPO, sha256(body + b" "))
    # Counted with the content store's own mismatches (ContentStore.record_mismatch).
    assert registry.cas.statistics().digest_mismatches == 1


async def test_a_manifest_whose_blobs_are_not_in_the_repository_is_refused(
    registry: RegistryStorage,
) -> None:
    config = await registry.put_blob("elsewhere", b"{}")
    body = image_manifest(Descriptor(config.digest, 2, OCI_EMPTY), [])
    with pytest.raises(NotFoundError, match=f"references blob {config.digest}"):
        await registry.put_manifest(REPO, body, OCI_MANIFEST)
    assert not await registry.manifest_exists(REPO, sha256(body))
    lenient = RegistryStorage(registry.store, check_references=False)
    assert (await lenient.put_manifest(REPO, body, OCI_MANIFEST)).digest == sha256(body)


async def test_an_index_needs_its_manifests_in_the_repository(registry: RegistryStorage) -> None:
    _, image = await push_image(registry)
    entry = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": image.size}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
    desc = await registry.put_manifest(REPO, index, OCI_INDEX, tags=["multi"])
    assert (await registry.resolve_tag(REPO, "multi")).media_type == OCI_INDEX
    with pytest.raises(NotFoundError, match=f"references manifest {image.digest}"):
        await registry.put_manifest("other", index, OCI_INDEX)
    assert desc.digest == sha256(index)


@pytest.mark.parametrize(
    ("body", "media_type", "reason"),
    [
        (b"not json", OCI_MANIFEST, "not a JSON object"),
        (json.dumps({"mediaType": OCI_INDEX}).encode(), OCI_MANIFEST, "declares mediaType"),
        (b"{}", "not-a-media-type", "type/subtype"),
    ],
)
async def test_a_malformed_manifest_is_refused(
    registry: RegistryStorage, body: bytes, media_type: str, reason: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=reason):
        await registry.put_manifest(REPO, body, media_type)
    assert await keys(registry.store) == []


async def test_manifest_arguments_are_checked_before_anything_is_stored(
    registry: RegistryStorage,
) -> None:
    with pytest.raises(InvalidArgumentError, match="must be bytes"):
        await registry.put_manifest(REPO, "text", "application/json")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="tag"):
        await registry.put_manifest(REPO, b"{}", "application/json", tags=["bad tag"])
    with pytest.raises(InvalidArgumentError, match="digest or a tag"):
        await registry.get_manifest(REPO, 5)  # type: ignore[arg-type]
    assert await keys(registry.store) == []


async def test_a_missing_manifest_or_tag_is_not_found(registry: RegistryStorage) -> None:
    with pytest.raises(NotFoundError, match="not in repository"):
        await registry.get_manifest(REPO, sha256(b"absent"))
    with pytest.raises(TagNotFoundError, match="'latest' does not exist"):
        await registry.get_manifest(REPO, "latest")
    with pytest.raises(NotFoundError):
        await registry.delete_manifest(REPO, sha256(b"absent"))


# -- tags -----------------------------------------------------------------------------------------


async def test_tags_resolve_move_and_untag(registry: RegistryStorage) -> None:
    _, one = await push_image(registry, seed=1, tags=("latest", "v1"))
    _, two = await push_image(registry, seed=2)
    assert (await registry.resolve_tag(REPO, "latest")).digest == one.digest
    assert (await registry.tag_manifest(REPO, "latest", two.digest)).digest == two.digest
    assert (await registry.resolve_tag(REPO, "latest")).digest == two.digest
    assert await registry.lookup_tags(REPO, one.digest) == ["v1"]
    assert await registry.lookup_tags(REPO, two.digest) == ["latest"]
    await registry.untag(REPO, "v1")
    with pytest.raises(TagNotFoundError):
        await registry.untag(REPO, "v1")
    with pytest.raises(TagNotFoundError):
        await registry.resolve_tag(REPO, "v1")
    assert await registry.manifest_exists(REPO, one.digest)  # untag keeps the manifest


async def test_tagging_a_manifest_the_repository_lacks_fails(registry: RegistryStorage) -> None:
    _, desc = await push_image(registry, "team/a")
    with pytest.raises(NotFoundError):
        await registry.tag_manifest("team/b", "v1", desc.digest)
    with pytest.raises(InvalidArgumentError, match="tag"):
        await registry.tag_manifest("team/a", "-bad", desc.digest)
    assert (await registry.list_tags("team/a")).tags == ()


TAGS = ["1.0", "1.10", "1.2", "A", "Z", "_under", "a", "latest", "v1", "z"]


async def tagged(registry: RegistryStorage) -> Descriptor:
    _, desc = await push_image(registry)
    for tag in reversed(TAGS):
        await registry.tag_manifest(REPO, tag, desc.digest)
    return desc


async def test_tags_are_listed_in_lexical_order(registry: RegistryStorage) -> None:
    await tagged(registry)
    listing = await registry.list_tags(REPO)
    assert isinstance(listing, TagList)
    assert listing == TagList(tuple(sorted(TAGS)), None)
    assert list(listing.tags) == sorted(TAGS)


@pytest.mark.parametrize(
    ("n", "last", "tags", "next_"),
    [
        (0, None, [], None),
        (1, None, ["1.0"], "1.0"),
        (3, None, ["1.0", "1.10", "1.2"], "1.2"),
        (len(TAGS), None, sorted(TAGS), None),
        (len(TAGS) + 5, None, sorted(TAGS), None),
        (None, "latest", ["v1", "z"], None),
        (1, "latest", ["v1"], "v1"),
        (2, "latest", ["v1", "z"], None),
        (None, "z", [], None),
        (5, "zzz", [], None),
        (None, "b", ["latest", "v1", "z"], None),  # a cursor need not be a tag
        (2, "", ["1.0", "1.10"], "1.10"),
        (0, "a", [], None),
    ],
)
async def test_tag_pagination(
    registry: RegistryStorage, n: int | None, last: str | None, tags: list[str], next_: str | None
) -> None:
    await tagged(registry)
    assert await registry.list_tags(REPO, n=n, last=last) == TagList(tuple(tags), next_)


async def test_following_the_next_cursor_visits_every_tag_once(registry: RegistryStorage) -> None:
    await tagged(registry)
    seen: list[str] = []
    last = None
    while True:
        page = await registry.list_tags(REPO, n=3, last=last)
        seen.extend(page.tags)
        if page.next is None:
            break
        last = page.next
    assert seen == sorted(TAGS)


@pytest.mark.parametrize(("n", "last"), [(-1, None), (True, None), ("2", None), (None, 5)])
async def test_bad_pagination_arguments_are_rejected(
    registry: RegistryStorage, n: object, last: object
) -> None:
    await tagged(registry)
    with pytest.raises(InvalidArgumentError):
        await registry.list_tags(REPO, n=n, last=last)  # type: ignore[arg-type]


async def test_listing_the_tags_of_an_unknown_repository_fails(registry: RegistryStorage) -> None:
    with pytest.raises(NotFoundError, match="repository 'ghost' does not exist"):
        await registry.list_tags("ghost")
    await registry.put_blob("ghost", b"x")
    assert await registry.list_tags("ghost") == TagList(())
    assert await registry.repository_exists("ghost")


async def test_nested_repositories_keep_their_own_tags(registry: RegistryStorage) -> None:
    await push_image(registry, "library/ubuntu", tags=("22.04",))
    await push_image(registry, "library/ubuntu/minimal", seed=3, tags=("slim",))
    assert (await registry.list_tags("library/ubuntu")).tags == ("22.04",)
    assert (await registry.list_tags("library/ubuntu/minimal")).tags == ("slim",)


# -- delete cascades ------------------------------------------------------------------------------


async def test_deleting_a_manifest_removes_its_tags_only(registry: RegistryStorage) -> None:
    _, one = await push_image(registry, seed=1, tags=("a", "b"))
    _, two = await push_image(registry, seed=2, tags=("c",))
    await registry.delete_manifest(REPO, one.digest)
    assert (await registry.list_tags(REPO)).tags == ("c",)
    with pytest.raises(NotFoundError):
        await registry.get_manifest(REPO, one.digest)
    with pytest.raises(TagNotFoundError):
        await registry.resolve_tag(REPO, "a")
    assert (await registry.resolve_tag(REPO, "c")).digest == two.digest


async def test_deleting_a_tag_never_deletes_a_manifest_another_tag_uses(
    registry: RegistryStorage,
) -> None:
    _, desc = await push_image(registry, tags=("a", "b"))
    await registry.untag(REPO, "a", prune=True)
    assert await registry.manifest_exists(REPO, desc.digest)
    assert (await registry.resolve_tag(REPO, "b")).digest == desc.digest
    await registry.untag(REPO, "b", prune=True)  # the last tag: the manifest goes too
    assert not await registry.manifest_exists(REPO, desc.digest)
    assert not await registry.manifest_exists(REPO, "b")


async def test_a_deleted_manifest_stays_in_another_repository(registry: RegistryStorage) -> None:
    body, desc = await push_image(registry, "team/a")
    await push_image(registry, "team/b")
    await registry.delete_manifest("team/a", desc.digest)
    assert await registry.cas.get(desc.digest) == body  # bytes are shared, never deleted here


# -- referrers ------------------------------------------------------------------------------------


async def test_referrers_are_listed_by_subject_and_artifact_type(
    registry: RegistryStorage,
) -> None:
    _, subject = await push_image(registry, tags=("v1",))
    empty = await registry.put_blob(REPO, b"{}")
    config = Descriptor(empty.digest, 2, OCI_EMPTY)
    sig = image_manifest(
        config,
        [],
        artifactType="application/vnd.example.sig",
        subject=subject.to_dict(),
        annotations={"org.example.signer": "ci"},
    )
    sig_desc = await registry.put_manifest(REPO, sig, OCI_MANIFEST)
    sbom_config = await registry.put_blob(REPO, b'{"sbom": true}')
    sbom = image_manifest(
        Descriptor(sbom_config.digest, sbom_config.size, "application/vnd.example.sbom"),
        [],
        subject=subject.to_dict(),
    )
    sbom_desc = await registry.put_manifest(REPO, sbom, OCI_MANIFEST)
    referrers = await registry.list_referrers(REPO, subject.digest)
    assert sorted(r.digest for r in referrers) == sorted([sig_desc.digest, sbom_desc.digest])
    by_digest = {r.digest: r for r in referrers}
    assert by_digest[sig_desc.digest].artifact_type == "application/vnd.example.sig"
    assert by_digest[sig_desc.digest].annotations == {"org.example.signer": "ci"}
    assert by_digest[sbom_desc.digest].artifact_type == "application/vnd.example.sbom"
    only = await registry.list_referrers(
        REPO, subject.digest, artifact_type="application/vnd.example.sig"
    )
    assert [r.digest for r in only] == [sig_desc.digest]
    await registry.delete_manifest(REPO, sig_desc.digest)
    assert [r.digest for r in await registry.list_referrers(REPO, subject.digest)] == [
        sbom_desc.digest
    ]
    assert await registry.list_referrers(REPO, sha256(b"no such subject")) == []


async def test_a_referrer_may_point_at_a_subject_not_yet_pushed(registry: RegistryStorage) -> None:
    empty = await registry.put_blob(REPO, b"{}")
    ghost = {"mediaType": OCI_MANIFEST, "digest": sha256(b"later"), "size": 5}
    body = image_manifest(Descriptor(empty.digest, 2, OCI_EMPTY), [], subject=ghost)
    desc = await registry.put_manifest(REPO, body, OCI_MANIFEST)
    assert [r.digest for r in await registry.list_referrers(REPO, sha256(b"later"))] == [
        desc.digest
    ]


# -- concurrency ----------------------------------------------------------------------------------


async def test_sixteen_tasks_pushing_one_blob_store_it_once(registry: RegistryStorage) -> None:
    data = pattern(300 * 1024)
    results: list[Descriptor] = []

    async def push(i: int) -> None:
        results.append(await registry.put_blob(f"team/r{i % 4}", data, expected=sha256(data)))

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(push, i)
    assert {r.digest for r in results} == {sha256(data)}
    assert len(results) == 16
    assert counts(registry.store).writes[registry.cas.blob_key(sha256(data))] == 1
    for i in range(4):
        assert await registry.get_blob(f"team/r{i}", sha256(data)) == data


async def test_sixteen_chunked_pushes_of_one_blob_all_succeed(registry: RegistryStorage) -> None:
    data = pattern(2 * PART + 7)
    results: list[Descriptor] = []

    async def push() -> None:
        sid = await chunked(registry, REPO, data, 40_000)
        results.append(await registry.finish_upload(REPO, sid, sha256(data)))

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(push)
    assert len(results) == 16
    assert await registry.get_blob(REPO, sha256(data)) == data
    assert await keys(registry.store, "uploads/") == []


async def test_sixteen_tasks_tagging_one_repository_lose_no_tag(
    registry: RegistryStorage,
) -> None:
    _, desc = await push_image(registry)

    async def tag(i: int) -> None:
        await registry.tag_manifest(REPO, f"t{i:02d}", desc.digest)

    async with anyio.create_task_group() as tg:
        for i in range(16):
            tg.start_soon(tag, i)
    expected = [f"t{i:02d}" for i in range(16)]
    assert list((await registry.list_tags(REPO)).tags) == expected
    assert await registry.lookup_tags(REPO, desc.digest) == expected


async def test_a_registry_can_share_a_content_store(store: Store) -> None:
    cas = ContentStore(store, "shared/")
    registry = RegistryStorage(store, content=cas)
    desc = await registry.put_blob(REPO, b"x")
    assert registry.prefix == "shared/"
    assert await cas.get(desc.digest) == b"x"
    assert cas.statistics().blobs_written == 1


async def test_a_tag_is_resolved_through_the_manifest_it_points_at(
    registry: RegistryStorage,
) -> None:
    _, desc = await push_image(registry, tags=("v1",))
    assert await registry.stat_manifest(REPO, "v1") == desc  # with artifact type, annotations
    # A tag that raced the deletion of its manifest points nowhere.
    revision = f"repositories/{REPO}/_manifests/revisions/sha256/{desc.digest.encoded}"
    await registry.store.delete(revision)
    with pytest.raises(TagNotFoundError, match="which was deleted"):
        await registry.get_manifest(REPO, "v1")
    assert not await registry.manifest_exists(REPO, "v1")
