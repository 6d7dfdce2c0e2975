"""Artifacts (data + manifest committed as one pair) and directory-tree sync."""

# ruff: noqa: F811 - the fixtures imported from test_cas_helpers are test parameters here

from __future__ import annotations

import json
import os
import stat
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
    store,
)

from asyncstore import (
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
)
from asyncstore.cas import ArtifactRecord, ContentStore, TreeSyncResult
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio


# -- artifacts ----------------------------------------------------------------------------------


async def test_an_artifact_round_trips(cas: ContentStore) -> None:
    record = await cas.put_artifact("stacks/t_123/web/42", b"snapshot", b'{"v":1}')
    assert isinstance(record, ArtifactRecord)
    assert record.data.digest == sha256(b"snapshot")
    assert record.manifest.digest == sha256(b'{"v":1}')
    assert await cas.get_artifact("stacks/t_123/web/42") == (b"snapshot", b'{"v":1}')
    assert await cas.artifact_exists("stacks/t_123/web/42")
    assert await cas.stat_artifact("stacks/t_123/web/42") == record
    assert "artifacts/stacks/t_123/web/42/@artifact.json" in await keys(cas.store)


async def test_the_commit_record_is_written_after_both_blobs(cas: ContentStore) -> None:
    record = await cas.put_artifact("a/b", pattern(3 * PART), b"manifest")
    log = counts(cas.store).log
    commit = log.index("artifacts/a/b/@artifact.json")
    assert log.index(cas.blob_key(record.data.digest)) < commit
    assert log.index(cas.blob_key(record.manifest.digest)) < commit
    assert commit == len(log) - 1


async def test_an_identical_put_is_an_idempotent_overwrite(cas: ContentStore) -> None:
    first = await cas.put_artifact("ref", b"data", b"manifest")
    again = await cas.put_artifact("ref", b"data", b"manifest")
    assert first == again
    assert cas.statistics().blobs_written == 2
    assert cas.statistics().blobs_deduplicated == 2
    assert await cas.get_artifact("ref") == (b"data", b"manifest")


async def test_a_new_put_replaces_the_pair(cas: ContentStore) -> None:
    await cas.put_artifact("ref", b"old data", b"old manifest")
    await cas.put_artifact("ref", b"new data", b"new manifest")
    assert await cas.get_artifact("ref") == (b"new data", b"new manifest")


async def test_nested_refs_coexist(cas: ContentStore) -> None:
    await cas.put_artifact("a", b"1", b"m1")
    await cas.put_artifact("a/b", b"2", b"m2")
    await cas.put_artifact("a/b/c", b"3", b"m3")
    assert await cas.get_artifact("a/b") == (b"2", b"m2")
    assert await cas.get_artifact("a/b/c") == (b"3", b"m3")


async def test_a_reader_never_sees_a_half_written_pair(cas: ContentStore) -> None:
    """A reader racing twenty writes only ever sees a data blob with its own manifest."""
    seen: set[int] = set()
    writes_done = anyio.Event()

    async def writer() -> None:
        for generation in range(20):
            data = pattern(PART + generation * 1000, seed=generation)
            manifest = json.dumps({"generation": generation, "data": sha256(data)}).encode()
            await cas.put_artifact("race/ref", data, manifest)
            await anyio.sleep(0)
        writes_done.set()

    async def reader() -> None:
        while not writes_done.is_set():
            try:
                data, manifest = await cas.get_artifact("race/ref")
            except NotFoundError:
                assert not seen, "the artifact disappeared after being committed"
                await anyio.sleep(0)
                continue
            meta = json.loads(manifest)
            assert meta["data"] == sha256(data)
            seen.add(meta["generation"])

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(reader)
        tg.start_soon(writer)
    assert seen  # the readers did overlap the writes
    _, manifest = await cas.get_artifact("race/ref")
    assert json.loads(manifest)["generation"] == 19


@pytest.mark.parametrize(
    "ref", ["", "/a", "a/", "a//b", "../x", ".hidden", "a/@x", "a b", "x" * 600, None, 5]
)
async def test_a_malformed_ref_is_rejected(cas: ContentStore, ref: object) -> None:
    with pytest.raises(InvalidArgumentError, match="artifact ref"):
        await cas.put_artifact(ref, b"d", b"m")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="artifact ref"):
        await cas.get_artifact(ref)  # type: ignore[arg-type]
    assert await keys(cas.store) == []


async def test_a_missing_artifact_is_not_found(cas: ContentStore) -> None:
    with pytest.raises(NotFoundError, match="no artifact at ref 'nope'"):
        await cas.get_artifact("nope")
    with pytest.raises(NotFoundError, match="nope"):
        await cas.stat_artifact("nope")
    with pytest.raises(NotFoundError, match="nope"):
        await cas.delete_artifact("nope")
    assert not await cas.artifact_exists("nope")


async def test_delete_artifact_removes_the_commit_record(cas: ContentStore) -> None:
    record = await cas.put_artifact("ref", b"d", b"m")
    await cas.delete_artifact("ref")
    assert not await cas.artifact_exists("ref")
    assert await cas.exists(record.data.digest)  # blobs are shared: they stay


async def test_a_lost_blob_or_a_bad_record_is_reported(cas: ContentStore) -> None:
    record = await cas.put_artifact("ref", b"data", b"manifest")
    await cas.delete(record.data.digest)
    with pytest.raises(NotFoundError, match=f"data blob {record.data.digest} is missing"):
        await cas.get_artifact("ref")
    await cas.store.put("artifacts/ref/@artifact.json", b"{not json")
    with pytest.raises(IntegrityError, match="not valid"):
        await cas.get_artifact("ref")


async def test_a_corrupt_artifact_blob_is_caught(cas: ContentStore) -> None:
    record = await cas.put_artifact("ref", b"data", b"manifest")
    await cas.store.put(cas.blob_key(record.manifest.digest), b"tampered")
    with pytest.raises(DigestMismatchError):
        await cas.get_artifact("ref")


# -- trees --------------------------------------------------------------------------------------

MTIME_NS = 1_600_000_000_123_456_789


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha",
        "empty": b"",
        "sub/b.bin": pattern(3 * PART),
        "sub/deeper/c.txt": b"gamma",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    os.chmod(root / "a.txt", 0o640)
    os.chmod(root / "sub/deeper/c.txt", 0o755)
    os.symlink(root / "a.txt", root / "link-to-a")
    return files


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for rel in files_in(root):
        st = os.lstat(root / rel)
        if stat.S_ISREG(st.st_mode):
            out[rel] = ((root / rel).read_bytes(), st.st_mtime_ns, st.st_mode & 0o7777)
    return out


async def test_a_tree_round_trips_with_mtime_and_mode(cas: ContentStore, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = await anyio.to_thread.run_sync(make_tree, src)
    up = await cas.upload_tree(src, "trees/t1")
    assert isinstance(up, TreeSyncResult)
    assert sorted(up.transferred) == sorted(files)  # the symlink is skipped
    assert up.bytes_transferred == sum(len(d) for d in files.values())
    down = await cas.download_tree("trees/t1", dst)
    assert sorted(down.transferred) == sorted(files)
    before = await anyio.to_thread.run_sync(snapshot, src)  # regular files only
    assert await anyio.to_thread.run_sync(snapshot, dst) == before
    entry = {f.path: f for f in down.files}["a.txt"]
    assert (entry.digest, entry.size, entry.mtime_ns, entry.mode) == (
        sha256(b"alpha"),
        5,
        MTIME_NS,
        0o640,
    )


async def test_unchanged_files_are_not_uploaded_again(cas: ContentStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    await anyio.to_thread.run_sync(make_tree, src)
    await cas.upload_tree(src, "t")
    await anyio.Path(src / "a.txt").write_bytes(b"changed")
    again = await cas.upload_tree(src, "t")
    assert again.transferred == ("a.txt",)
    assert again.bytes_transferred == len(b"changed")
    assert "sub/b.bin" in again.skipped


async def test_matching_local_files_are_skipped_and_their_metadata_restored(
    cas: ContentStore, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = await anyio.to_thread.run_sync(make_tree, src)
    await cas.upload_tree(src, "t")
    await cas.download_tree("t", dst)

    def disturb() -> None:
        os.chmod(dst / "a.txt", 0o600)
        os.utime(dst / "a.txt", ns=(1, 1))
        (dst / "sub/deeper/c.txt").write_bytes(b"stale")
        (dst / "extra.txt").write_bytes(b"mine")

    await anyio.to_thread.run_sync(disturb)
    result = await cas.download_tree("t", dst)
    assert result.transferred == ("sub/deeper/c.txt",)
    assert set(result.skipped) == set(files) - {"sub/deeper/c.txt"}
    got = await anyio.to_thread.run_sync(snapshot, dst)
    assert got["a.txt"] == (b"alpha", MTIME_NS, 0o640)
    assert got["sub/deeper/c.txt"] == (b"gamma", MTIME_NS, 0o755)
    assert got["extra.txt"][0] == b"mine"  # files the tree does not list are left alone


async def test_a_corrupt_blob_leaves_no_wrong_file_in_place(
    cas: ContentStore, tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    await anyio.to_thread.run_sync(make_tree, src)
    await cas.upload_tree(src, "t")
    await cas.store.put(cas.blob_key(sha256(b"gamma")), b"evil!")

    def stale_copy() -> None:
        (dst / "sub/deeper").mkdir(parents=True)
        (dst / "sub/deeper/c.txt").write_bytes(b"stale")

    await anyio.to_thread.run_sync(stale_copy)
    with pytest.raises(DigestMismatchError):
        await cas.download_tree("t", dst)
    present = await anyio.to_thread.run_sync(files_in, dst)
    assert "sub/deeper/c.txt" not in present
    assert not [name for name in present if ".asyncstore-" in name]


async def test_tree_errors(cas: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no tree at ref 'nope'"):
        await cas.download_tree("nope", tmp_path / "dst")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        await cas.upload_tree(tmp_path / "missing", "t")
    with pytest.raises(InvalidArgumentError, match="local_dir must be"):
        await cas.upload_tree(5, "t")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="tree ref"):
        await cas.upload_tree(tmp_path, "../t")


@pytest.mark.parametrize("path", ["../escape", "/abs", "a//b", "", "a/./b"])
async def test_an_index_with_an_unsafe_path_is_refused(
    cas: ContentStore, tmp_path: Path, path: str
) -> None:
    digest = (await cas.put(b"x")).digest
    index = {
        "format": 1,
        "ref": "t",
        "files": [{"path": path, "sha256": digest, "size": 1, "mtime_ns": 0, "mode": "644"}],
    }
    await cas.store.put("trees/t/@tree.json", json.dumps(index).encode())
    with pytest.raises(IntegrityError, match="unsafe path"):
        await cas.download_tree("t", tmp_path / "dst")
    assert not await anyio.Path(tmp_path / "escape").exists()
