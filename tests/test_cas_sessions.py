"""Resumable upload sessions: offsets, leases, resume from another process, finish, abort, purge."""

# ruff: noqa: F811 - the fixtures imported from test_cas_helpers are test parameters here

from __future__ import annotations

import base64
import json
import time
import types
from collections.abc import AsyncIterator, Mapping

import anyio
import pytest
from test_cas_helpers import (  # noqa: F401 - fixtures
    PART,
    MinPartBackend,
    another_process,
    cas,
    counts,
    keys,
    sha256,
    sha512,
    store,
)

from asyncstore import (
    CompletedPart,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    InvalidDigestError,
    InvalidOffsetError,
    MemoryBackend,
    PermissionDeniedError,
    Store,
    UploadNotFoundError,
    WriteAttributes,
    WriteResult,
)
from asyncstore.cas import ContentStore, UploadStatus, _sessions
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio

EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def push(cas: ContentStore, sid: str, data: bytes, chunk: int) -> int:
    offset = 0
    for i in range(0, len(data), chunk):
        offset = await cas.append(sid, offset, data[i : i + chunk])
    return offset


async def test_a_chunked_upload_is_assembled_verified_and_stored(cas: ContentStore) -> None:
    data = pattern(5 * PART + 321)
    sid = await cas.start()
    assert await cas.progress(sid) == 0
    assert await push(cas, sid, data, 50_000) == len(data)
    assert await cas.progress(sid) == len(data)
    desc = await cas.finish(sid, sha256(data))
    assert (desc.digest, desc.size) == (sha256(data), len(data))
    assert await cas.get(desc.digest) == data
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]
    assert cas.statistics().finishes_reread == 0
    with pytest.raises(UploadNotFoundError, match=sid):
        await cas.progress(sid)


@pytest.mark.parametrize("chunk", [1000, PART, 3 * PART + 5])
async def test_chunk_sizes_that_do_not_match_parts_are_assembled_in_order(
    cas: ContentStore, chunk: int
) -> None:
    data = pattern(4 * PART + 17)
    sid = await cas.start()
    await push(cas, sid, data, chunk)
    assert (await cas.finish(sid, sha256(data))).size == len(data)
    assert await cas.get(sha256(data)) == data


async def test_an_s3_like_backend_keeps_small_remainders_as_a_tail() -> None:
    async with Store(MinPartBackend(), chunk_size=PART) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        data = pattern(2 * PART + 100)
        await cas.append(sid, 0, data[:1000])
        # A session without parts keeps its few bytes in its state (see the next test).
        assert await keys(store, f"uploads/{sid}/") == [f"uploads/{sid}/state.json"]
        await cas.append(sid, 1000, data[1000 : PART + 50])
        await cas.append(sid, PART + 50, data[PART + 50 :])
        assert await keys(store, f"uploads/{sid}/") == [
            f"uploads/{sid}/state.json",
            f"uploads/{sid}/tail-{2 * PART + 100}",
        ]
        # Every inner part reached the minimum, or completing would have failed.
        desc = await cas.finish(sid, sha256(data))
        assert await cas.get(desc.digest) == data
        assert isinstance(store.backend, MemoryBackend)
        assert await store.backend.pending_uploads() == []


async def test_a_small_session_keeps_its_bytes_in_its_state(cas: ContentStore) -> None:
    backend = counts(cas.store)
    data = pattern(3000)
    sid = await cas.start()
    state_key = f"uploads/{sid}/state.json"
    assert await cas.append(sid, 0, data[:1000]) == 1000
    assert await cas.append(sid, 1000, data[1000:]) == 3000
    # One write per append (the state, which holds the bytes), and no tail object.
    assert backend.writes[state_key] == 3
    assert await keys(cas.store, f"uploads/{sid}/") == [state_key]
    state = json.loads(await cas.store.get(state_key))
    assert (state["format"], state["size"], state["tail"]) == (2, 3000, None)
    assert base64.b64decode(state["inline"]) == data
    desc = await cas.finish(sid, sha256(data))
    assert await cas.get(desc.digest) == data
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]


async def test_a_session_with_a_tail_object_is_finished_as_before(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A session appended to by a version that kept small sessions in a tail object
    # (state format 1), finished by this one.
    data = pattern(3000)
    monkeypatch.setattr(_sessions, "INLINE_STATE", 0)
    older = ContentStore(store)
    sid = await older.start()
    await older.append(sid, 0, data[:1000])
    state = json.loads(await store.get(f"uploads/{sid}/state.json"))
    assert (state["format"], "inline" in state) == (1, False)
    assert state["tail"]["key"].startswith(f"uploads/{sid}/tail-1000-")
    monkeypatch.undo()
    async with another_process(store) as other:
        newer = ContentStore(other)
        # Appending moves the bytes into the state; the tail object goes.
        assert await newer.append(sid, 1000, data[1000:]) == 3000
        assert await keys(other, f"uploads/{sid}/") == [f"uploads/{sid}/state.json"]
        desc = await newer.finish(sid, sha256(data))
        assert await newer.get(desc.digest) == data
        assert await keys(other) == [newer.blob_key(desc.digest)]


@pytest.mark.parametrize(
    "change",
    [
        {"inline": "AAAA", "size": 4},  # 3 bytes for a size of 4
        {"inline": "not base64!"},
        {"inline": "AAAA", "size": 3, "tail": {"key": "uploads/x/tail-3", "size": 3}},
    ],
    ids=["size", "base64", "beside-a-tail"],
)
async def test_an_inline_state_that_does_not_add_up_is_refused(
    cas: ContentStore, change: dict[str, object]
) -> None:
    sid = await cas.start()
    await cas.append(sid, 0, b"abc")
    key = f"uploads/{sid}/state.json"
    state = json.loads(await cas.store.get(key))
    state.update(change)
    await cas.store.put(key, json.dumps(state).encode())
    with pytest.raises(IntegrityError, match=f"upload session {sid}: its state.json is not"):
        await cas.progress(sid)


async def test_a_small_append_does_not_read_the_state_this_process_wrote(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cas = ContentStore(store)
    reads: list[str] = []
    real_read = _sessions.read_with_etag

    async def counting(store: Store, key: str) -> tuple[bytes, str]:
        reads.append(key)
        return await real_read(store, key)

    monkeypatch.setattr(_sessions, "read_with_etag", counting)
    sid = await cas.start()
    assert await cas.append(sid, 0, b"abc") == 3
    assert await cas.append(sid, None, b"def") == 6
    assert reads == []  # both appends were written on the ETag of this process's last write
    desc = await cas.finish(sid, sha256(b"abcdef"))
    assert reads == []  # the bytes it remembers hash to the digest: they are the blob
    assert await cas.get(desc.digest) == b"abcdef"
    assert await keys(store) == [cas.blob_key(desc.digest)]
    with pytest.raises(UploadNotFoundError, match=sid):
        await cas.finish(sid, sha256(b"abcdef"))  # finished: the memory went with the session


async def test_a_small_append_sees_what_another_process_wrote_since(store: Store) -> None:
    here = ContentStore(store)
    sid = await here.start()
    async with another_process(store) as other:
        there = ContentStore(other)
        assert await there.append(sid, 0, b"abc") == 3
        # What this process remembers (size 0) is out of date: the conditional write
        # fails, the state is read again, and the append lands after the other's.
        with pytest.raises(InvalidOffsetError, match="resume at offset 3"):
            await here.append(sid, 0, b"xyz")
        assert await here.append(sid, 3, b"def") == 6
        assert await there.append(sid, None, b"ghi") == 9
        assert await here.append(sid, None, b"jkl") == 12
        assert await here.append(sid, None, b"") == 12
        assert await there.append(sid, None, b"mno") == 15
        # This process remembers 12 bytes, which do not hash to the digest of the 15:
        # the finish reads the state and stores what the other process appended too.
        desc = await here.finish(sid, sha256(b"abcdefghijklmno"))
        assert await there.get(desc.digest) == b"abcdefghijklmno"
        # Finished by this process: the other one's memory does not revive the session.
        with pytest.raises(UploadNotFoundError, match=sid):
            await there.append(sid, None, b"more")


async def test_a_small_append_to_a_session_aborted_elsewhere_finds_it_gone(store: Store) -> None:
    here = ContentStore(store)
    sid = await here.start()
    await here.append(sid, 0, b"abc")
    async with another_process(store) as other:
        await ContentStore(other).abort(sid)
    with pytest.raises(UploadNotFoundError, match=sid):
        await here.append(sid, 3, b"def")
    assert await keys(store) == []


async def test_an_append_at_the_wrong_offset_is_rejected_and_changes_nothing(
    cas: ContentStore,
) -> None:
    sid = await cas.start()
    await cas.append(sid, 0, b"a" * 100)
    with pytest.raises(InvalidOffsetError, match="resume at offset 100"):
        await cas.append(sid, 150, b"out of order")
    with pytest.raises(InvalidOffsetError, match="offset 40"):
        await cas.append(sid, 40, b"stale retry")
    with pytest.raises(InvalidOffsetError, match="negative"):
        await cas.append(sid, -1, b"x")
    with pytest.raises(InvalidOffsetError, match="must be an int"):
        await cas.append(sid, "100", b"x")  # type: ignore[arg-type]
    assert await cas.progress(sid) == 100
    await cas.append(sid, 100, b"b" * 10)
    assert (await cas.finish(sid, sha256(b"a" * 100 + b"b" * 10))).size == 110


async def test_a_retried_chunk_is_rejected_once_it_was_received(cas: ContentStore) -> None:
    sid = await cas.start()
    size = await cas.append(sid, 0, b"chunk-1")
    with pytest.raises(InvalidOffsetError):
        await cas.append(sid, 0, b"chunk-1")
    assert await cas.progress(sid) == size


async def test_an_append_rejects_what_is_not_bytes(cas: ContentStore) -> None:
    sid = await cas.start()
    with pytest.raises(InvalidArgumentError, match="is a str"):
        await cas.append(sid, 0, "text")
    assert await cas.progress(sid) == 0


async def test_a_chunk_may_be_any_source(cas: ContentStore) -> None:
    data = pattern(3 * PART)

    async def gen() -> AsyncIterator[bytes]:
        yield data[:100]
        yield data[100:]

    sid = await cas.start()
    size = await cas.append(sid, 0, gen())
    size = await cas.append(sid, size, [b"tail"])
    assert (await cas.finish(sid, sha256(data + b"tail"))).size == size


async def test_a_session_is_resumed_by_another_process_after_asking_for_progress(
    store: Store,
) -> None:
    data = pattern(3 * PART + 999)
    first = ContentStore(store)
    sid = await first.start()
    await first.append(sid, 0, data[:70_000])
    async with another_process(store) as other_store:
        second = ContentStore(other_store)
        offset = await second.progress(sid)
        assert offset == 70_000
        await second.append(sid, offset, data[offset:])
        desc = await second.finish(sid, sha256(data))
        # This process did not see the first chunk: it re-read the content once.
        assert second.statistics().finishes_reread == 1
    assert await first.get(desc.digest) == data


async def test_the_process_that_made_every_append_finishes_without_rereading(
    store: Store,
) -> None:
    data = pattern(2 * PART + 5)
    cas = ContentStore(store)
    sid = await cas.start()
    await push(cas, sid, data, 40_000)
    async with another_process(store) as other_store:
        assert await ContentStore(other_store).progress(sid) == len(data)
    await cas.finish(sid, sha256(data))
    assert cas.statistics().finishes_reread == 0


async def test_a_stale_running_hash_is_not_trusted(store: Store) -> None:
    data = pattern(2 * PART)
    cas = ContentStore(store)
    sid = await cas.start()
    await cas.append(sid, 0, data[:PART])
    async with another_process(store) as other_store:
        await ContentStore(other_store).append(sid, PART, data[PART:])
    desc = await cas.finish(sid, sha256(data))
    assert cas.statistics().finishes_reread == 1
    assert await cas.get(desc.digest) == data


async def test_finish_with_the_wrong_digest_discards_the_session(cas: ContentStore) -> None:
    data = pattern(3 * PART)
    sid = await cas.start()
    await push(cas, sid, data, PART)
    wrong = sha256(b"not this")
    with pytest.raises(DigestMismatchError) as info:
        await cas.finish(sid, wrong)
    assert (info.value.expected, info.value.actual) == (wrong, sha256(data))
    assert sid in str(info.value)
    assert await keys(cas.store) == []
    with pytest.raises(UploadNotFoundError):
        await cas.progress(sid)
    inner = counts(cas.store).inner
    if isinstance(inner, MemoryBackend):
        assert await inner.pending_uploads() == []


async def test_finish_with_the_wrong_digest_from_another_process_discards_too(
    store: Store,
) -> None:
    sid = await ContentStore(store).start()
    await ContentStore(store).append(sid, 0, pattern(2 * PART))
    with pytest.raises(DigestMismatchError):
        await ContentStore(store).finish(sid, sha256(b"wrong"))
    assert await keys(store) == []


async def test_a_small_session_with_the_wrong_digest_stores_nothing(cas: ContentStore) -> None:
    sid = await cas.start()
    await cas.append(sid, 0, b"small")
    with pytest.raises(DigestMismatchError):
        await cas.finish(sid, sha256(b"other"))
    assert await keys(cas.store) == []


async def test_a_malformed_digest_at_finish_keeps_the_session(cas: ContentStore) -> None:
    sid = await cas.start()
    await cas.append(sid, 0, b"abc")
    with pytest.raises(InvalidDigestError):
        await cas.finish(sid, "sha256:abc")
    assert await cas.progress(sid) == 3
    assert (await cas.finish(sid, sha256(b"abc"))).size == 3


async def test_a_zero_byte_upload_and_the_empty_json_upload(cas: ContentStore) -> None:
    sid = await cas.start()
    assert (await cas.finish(sid, EMPTY)).size == 0
    assert await cas.get(EMPTY) == b""
    sid = await cas.start()
    assert await cas.append(sid, 0, b"") == 0
    await cas.append(sid, 0, b"{}")
    desc = await cas.finish(sid, sha256(b"{}"))
    assert await cas.get(desc.digest) == b"{}"
    assert await keys(cas.store, "uploads/") == []


async def test_finish_of_a_blob_already_stored_deduplicates(cas: ContentStore) -> None:
    data = pattern(2 * PART)
    await cas.put(data)
    sid = await cas.start()
    await cas.append(sid, 0, data)
    await cas.finish(sid, sha256(data))
    assert counts(cas.store).writes[cas.blob_key(sha256(data))] == 1
    assert cas.statistics().blobs_deduplicated == 1
    assert await keys(cas.store) == [cas.blob_key(sha256(data))]


async def test_a_sha512_session_is_verified_by_rereading(store: Store) -> None:
    data = pattern(2 * PART + 1)
    cas = ContentStore(store)
    sid = await cas.start()
    await push(cas, sid, data, 30_000)
    desc = await cas.finish(sid, sha512(data))
    assert desc.digest == sha512(data)
    assert cas.statistics().finishes_reread == 1
    assert await cas.get(desc.digest) == data


async def test_a_sha512_session_finished_by_another_process_records_the_right_sha256(
    store: Store,
) -> None:
    data = pattern(2 * PART + 1)
    sid = await ContentStore(store).start()
    await ContentStore(store).append(sid, 0, data)
    cas = ContentStore(store)
    desc = await cas.finish(sid, sha512(data))
    info = await store.head(cas.blob_key(desc.digest))
    assert info.sha256 == sha256(data)
    assert await cas.get(desc.digest) == data
    assert await keys(store) == [cas.blob_key(desc.digest)]
    sid = await cas.start()
    await ContentStore(store).append(sid, 0, data)
    with pytest.raises(DigestMismatchError):
        await ContentStore(store).finish(sid, sha512(b"wrong"))


async def test_abort_discards_everything_and_is_idempotent(cas: ContentStore) -> None:
    sid = await cas.start()
    await cas.append(sid, 0, pattern(2 * PART + 10))
    await cas.abort(sid)
    await cas.abort(sid)
    assert await keys(cas.store) == []
    inner = counts(cas.store).inner
    if isinstance(inner, MemoryBackend):
        assert await inner.pending_uploads() == []
    for call in (cas.progress, cas.status):
        with pytest.raises(UploadNotFoundError):
            await call(sid)
    with pytest.raises(UploadNotFoundError):
        await cas.append(sid, 0, b"x")
    with pytest.raises(UploadNotFoundError):
        await cas.finish(sid, EMPTY)


async def test_unknown_and_malformed_session_ids_are_not_found(cas: ContentStore) -> None:
    for sid in ("0" * 32, "../../blobs", "", None):
        with pytest.raises(UploadNotFoundError):
            await cas.progress(sid)  # type: ignore[arg-type]
        with pytest.raises(UploadNotFoundError):
            await cas.append(sid, 0, b"x")  # type: ignore[arg-type]
        with pytest.raises(UploadNotFoundError):
            await cas.finish(sid, EMPTY)  # type: ignore[arg-type]
    await cas.abort("0" * 32)  # never started: nothing to do
    with pytest.raises(UploadNotFoundError):
        await cas.abort("nope")


async def test_a_scoped_session_is_invisible_from_another_scope(cas: ContentStore) -> None:
    sid = await cas.start(scope="library/a")
    status = await cas.status(sid, scope="library/a")
    assert isinstance(status, UploadStatus)
    assert (status.id, status.size, status.scope) == (sid, 0, "library/a")
    assert status.created <= status.updated
    for scope in (None, "library/b"):
        with pytest.raises(UploadNotFoundError):
            await cas.append(sid, 0, b"x", scope=scope)
        with pytest.raises(UploadNotFoundError):
            await cas.abort(sid, scope=scope)
    assert await cas.progress(sid, scope="library/a") == 0
    with pytest.raises(InvalidArgumentError, match="scope must be"):
        await cas.start(scope=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "tail-object"])
async def test_racing_appends_at_one_offset_let_exactly_one_win(
    cas: ContentStore, inline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not inline:  # the session's bytes go to a tail object, not into its state
        monkeypatch.setattr(_sessions, "INLINE_STATE", 100)
    sid = await cas.start()
    await cas.append(sid, 0, b"base")
    winners: list[bytes] = []
    losers: list[Exception] = []

    async def racer(i: int) -> None:
        chunk = bytes([65 + i]) * 1000
        try:
            await cas.append(sid, 4, chunk)
        except InvalidOffsetError as exc:
            losers.append(exc)
        else:
            winners.append(chunk)

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(racer, i)
    assert len(winners) == 1
    assert len(losers) == 7
    assert await cas.progress(sid) == 1004
    # The losers' tail objects, if any, are gone: the session holds its state and
    # its tail object, or only its state (which holds the bytes).
    assert len(await keys(cas.store, f"uploads/{sid}/")) == (1 if inline else 2)
    desc = await cas.finish(sid, sha256(b"base" + winners[0]))
    assert await cas.get(desc.digest) == b"base" + winners[0]


class GatedBackend(MemoryBackend):
    """Parts wait for ``gate`` (when set), so an append can be held mid-flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: anyio.Event | None = None
        self.waiting = anyio.Event()
        self.fail_part: int | None = None

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        if number == self.fail_part:
            raise PermissionDeniedError(f"injected: part {number} refused", key=key)
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


class BlobGateBackend(MemoryBackend):
    """Writes to blob keys (puts and copies) wait until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()

    async def _wait(self, key: str) -> None:
        if key.startswith("blobs/"):
            with anyio.fail_after(10):  # a finish that stored the blob first waits forever
                await self.gate.wait()

    async def put(
        self, key: str, data: memoryview, attrs: WriteAttributes, checksums: Mapping[str, bytes]
    ) -> WriteResult:
        await self._wait(key)
        return await super().put(key, data, attrs, checksums)

    async def copy(self, src: str, dst: str) -> WriteResult:
        await self._wait(dst)
        return await super().copy(src, dst)


@pytest.mark.parametrize("size", [1000, 3 * PART + 5], ids=["small", "multipart"])
async def test_finish_awaits_verified_while_the_blob_is_stored(size: int) -> None:
    backend = BlobGateBackend()
    async with Store(backend, chunk_size=PART) as store:
        cas = ContentStore(store)
        data = pattern(size)
        sid = await cas.start()
        await cas.append(sid, 0, data)
        stored_then: list[bool] = []

        async def verified() -> None:
            stored_then.append(await cas.exists(sha256(data)))
            backend.gate.set()  # the blob may be written now

        desc = await cas.finish(sid, sha256(data), verified=verified)
        assert stored_then == [False]
        assert await cas.get(desc.digest) == data
        assert await keys(store) == [cas.blob_key(desc.digest)]


@pytest.mark.parametrize("size", [1000, 3 * PART + 5], ids=["small", "multipart"])
async def test_finish_with_the_wrong_digest_does_not_await_verified(
    cas: ContentStore, size: int
) -> None:
    called: list[bool] = []

    async def verified() -> None:
        called.append(True)

    sid = await cas.start()
    await cas.append(sid, 0, pattern(size))
    with pytest.raises(DigestMismatchError):
        await cas.finish(sid, sha256(b"other"), verified=verified)
    assert called == []
    assert await keys(cas.store) == []


@pytest.mark.parametrize("size", [1000, 3 * PART + 5], ids=["small", "multipart"])
async def test_a_failing_verified_fails_the_finish_and_keeps_the_session(
    cas: ContentStore, size: int
) -> None:
    data = pattern(size)

    async def verified() -> None:
        raise PermissionDeniedError("injected: the link is refused", key="link")

    sid = await cas.start()
    await cas.append(sid, 0, data)
    with pytest.raises(PermissionDeniedError, match="injected"):
        await cas.finish(sid, sha256(data), verified=verified)
    assert await cas.progress(sid) == len(data)
    desc = await cas.finish(sid, sha256(data))  # retried
    assert await cas.get(desc.digest) == data
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]


# A chunk larger than the inline limit (PART) takes the leased path, through parts.
BIG = pattern(PART + 5)


async def test_an_append_in_progress_holds_the_session() -> None:
    backend = GatedBackend()
    async with Store(backend, chunk_size=PART) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        backend.gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(cas.append, sid, 0, BIG)
            with anyio.fail_after(30):
                await backend.waiting.wait()
            with pytest.raises(InvalidOffsetError, match="another append is in progress"):
                await cas.append(sid, 0, b"second")
            with pytest.raises(InvalidOffsetError, match="another append is in progress"):
                await cas.append(sid, 0, BIG)
            with pytest.raises(InvalidOffsetError, match="in progress"):
                await cas.finish(sid, sha256(BIG))
            backend.gate.set()
        backend.gate = None
        assert (await cas.finish(sid, sha256(BIG))).size == len(BIG)


async def _set_lease(store: Store, sid: str, expires: float) -> None:
    key = f"uploads/{sid}/state.json"
    state = json.loads(await store.get(key))
    state["lease"] = {"owner": "crashed", "expires": expires, "action": "append"}
    await store.put(key, json.dumps(state).encode())


async def test_a_lease_left_by_a_crashed_writer_expires(cas: ContentStore) -> None:
    sid = await cas.start()
    await cas.append(sid, 0, b"abc")
    await _set_lease(cas.store, sid, time.time() + 3600)
    with pytest.raises(InvalidOffsetError, match="in progress"):
        await cas.append(sid, 3, b"def")
    await _set_lease(cas.store, sid, time.time() - 1)
    assert await cas.append(sid, 3, b"def") == 6
    assert (await cas.finish(sid, sha256(b"abcdef"))).size == 6


async def test_a_failed_append_releases_the_session_at_its_committed_size() -> None:
    backend = GatedBackend()
    async with Store(backend, chunk_size=PART) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        data = pattern(4 * PART)
        backend.fail_part = 3
        with pytest.raises(PermissionDeniedError):
            await cas.append(sid, 0, data)
        offset = await cas.progress(sid)
        assert offset == 2 * PART
        backend.fail_part = None
        await cas.append(sid, offset, data[offset:])
        assert await cas.get((await cas.finish(sid, sha256(data))).digest) == data
        assert cas.statistics().finishes_reread == 0


async def test_a_cancelled_append_releases_the_session() -> None:
    backend = GatedBackend()
    async with Store(backend, chunk_size=PART) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        backend.gate = anyio.Event()
        with anyio.move_on_after(0.05):
            await cas.append(sid, 0, BIG)
        backend.gate = None
        assert await cas.progress(sid) == 0
        await cas.append(sid, 0, b"again")
        assert (await cas.finish(sid, sha256(b"again"))).size == 5


async def test_an_append_to_an_aborted_session_fails() -> None:
    backend = GatedBackend()
    async with Store(backend, chunk_size=PART) as gated:
        cas = ContentStore(gated)
        sid = await cas.start()
        backend.gate = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def append() -> None:
                with pytest.raises(UploadNotFoundError, match="aborted or finished"):
                    await cas.append(sid, 0, BIG)

            tg.start_soon(append)
            with anyio.fail_after(30):
                await backend.waiting.wait()
            await cas.abort(sid)
            backend.gate.set()
        assert await keys(gated) == []


def _two_hours_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Move the sessions' wall clock two hours ahead (instead of sleeping past a cutoff)."""
    from asyncstore.cas import _sessions

    clock = types.SimpleNamespace(time=lambda: time.time() + 7200, monotonic=time.monotonic)
    monkeypatch.setattr(_sessions, "time", clock)


async def test_purge_removes_abandoned_sessions_and_staging(
    cas: ContentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await cas.start()
    await cas.append(old, 0, b"old")
    await cas.store.put("staging/" + "f" * 32, b"leftover")
    assert await cas.purge(3600) == 0
    _two_hours_later(monkeypatch)  # what is there now was written two hours ago
    fresh = await cas.start()
    removed = await cas.purge(3600)
    assert removed == 2
    assert await keys(cas.store) == [f"uploads/{fresh}/state.json"]
    with pytest.raises(InvalidArgumentError, match="older_than"):
        await cas.purge(-1)


async def test_a_finish_that_crashed_after_completing_can_be_retried(store: Store) -> None:
    data = pattern(2 * PART)
    cas = ContentStore(store)
    sid = await cas.start()
    await cas.append(sid, 0, data)
    # What the crashed finish did: complete the multipart upload, then die.
    state = json.loads(await store.get(f"uploads/{sid}/state.json"))
    parts = [
        CompletedPart(
            p["number"],
            p["offset"],
            p["size"],
            p["etag"],
            {k: base64.b64decode(v) for k, v in p["checksums"].items()},
        )
        for p in state["parts"]
    ]
    data_key = f"uploads/{sid}/data"
    await store.complete_upload(data_key, state["upload_id"], parts, sha256=sha256(data))
    desc = await ContentStore(store).finish(sid, sha256(data))
    assert await cas.get(desc.digest) == data
    assert await keys(store) == [cas.blob_key(desc.digest)]


async def test_a_session_that_fits_the_inline_limit_is_written_once(cas: ContentStore) -> None:
    backend = counts(cas.store)
    data = pattern(3000)
    sid = await cas.start()
    state_key = f"uploads/{sid}/state.json"
    await cas.append(sid, 0, data[:1000])
    await cas.append(sid, 1000, data[1000:])
    # One state write at the start and one per append: no lease is taken, and no
    # multipart upload is created (whose id would need a state write of its own).
    assert backend.writes[state_key] == 3
    desc = await cas.finish(sid, sha256(data))
    assert backend.writes[state_key] == 3  # a finish that takes no lease
    assert backend.writes[f"uploads/{sid}/data"] == 0  # no upload completed, nothing copied
    assert backend.writes[cas.blob_key(desc.digest)] == 1
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]
    assert await cas.get(desc.digest) == data
    assert cas.statistics().finishes_reread == 0


async def test_a_session_outgrowing_the_inline_limit_moves_its_tail_into_parts(
    cas: ContentStore,
) -> None:
    data = pattern(3 * PART + 7)
    sid = await cas.start()
    await cas.append(sid, 0, data[:1000])  # kept as a tail
    await cas.append(sid, 1000, data[1000:])  # the tail becomes the start of part 1
    desc = await cas.finish(sid, sha256(data))
    assert await cas.get(desc.digest) == data
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]
    assert cas.statistics().finishes_reread == 0


async def test_finishing_a_multipart_session_writes_its_state_once(cas: ContentStore) -> None:
    backend = counts(cas.store)
    data = pattern(3 * PART + 100)  # on minpart: three parts and a 100-byte tail
    sid = await cas.start()
    state_key = f"uploads/{sid}/state.json"
    await cas.append(sid, 0, data)
    before = backend.writes[state_key]
    desc = await cas.finish(sid, sha256(data))
    # The lease only: neither the tail's part nor the completion is recorded, since a
    # finish that crashes after completing is recovered from the assembled object.
    assert backend.writes[state_key] - before == 1
    assert await cas.get(desc.digest) == data
    assert await keys(cas.store) == [cas.blob_key(desc.digest)]


async def test_a_finish_that_crashed_after_completing_with_a_tail_can_be_retried() -> None:
    async with Store(MinPartBackend(), chunk_size=PART) as store:
        cas = ContentStore(store)
        data = pattern(2 * PART + 100)
        sid = await cas.start()
        await cas.append(sid, 0, data)
        state = json.loads(await store.get(f"uploads/{sid}/state.json"))
        assert state["tail"] is not None
        # What the crashed finish did: send the tail as the last part, complete, die.
        parts = [
            CompletedPart(p["number"], p["offset"], p["size"], p["etag"], {})
            for p in state["parts"]
        ]
        data_key = f"uploads/{sid}/data"
        tail = await store.get(state["tail"]["key"])
        parts.append(
            await store.upload_part(
                data_key, state["upload_id"], len(parts) + 1, tail, offset=len(data) - len(tail)
            )
        )
        await store.complete_upload(data_key, state["upload_id"], parts, sha256=sha256(data))
        desc = await ContentStore(store).finish(sid, sha256(data))
        assert await cas.get(desc.digest) == data
        assert await keys(store) == [cas.blob_key(desc.digest)]


class WaitingBackend(MemoryBackend):
    """Part 1 of an upload is only stored once ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = anyio.Event()

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        if number == 1:
            with anyio.fail_after(30):
                await self.go.wait()
        return await super().upload_part(key, upload_id, number, offset, data, checksums)


async def test_the_next_part_is_received_while_one_is_stored() -> None:
    backend = WaitingBackend()
    data = pattern(3 * PART)

    async def body() -> AsyncIterator[bytes]:
        yield data[:PART]
        # Part 2 is asked for while part 1 is still being stored: let part 1 go.
        backend.go.set()
        yield data[PART : 2 * PART]
        yield data[2 * PART :]

    async with Store(backend, chunk_size=PART) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        assert await cas.append(sid, 0, body()) == len(data)
        desc = await cas.finish(sid, sha256(data))
        assert await cas.get(desc.digest) == data
        assert cas.statistics().finishes_reread == 0


async def test_a_stream_failing_while_a_part_is_stored_keeps_that_part() -> None:
    backend = WaitingBackend()
    data = pattern(3 * PART)

    async def body() -> AsyncIterator[bytes]:
        yield data[:PART]
        backend.go.set()
        raise PermissionDeniedError("injected: the client went away")

    async with Store(backend, chunk_size=PART) as store:
        cas = ContentStore(store)
        sid = await cas.start()
        with pytest.raises(PermissionDeniedError, match="went away"):
            await cas.append(sid, 0, body())
        # Part 1 was stored before the failure surfaced, and recorded: resume after it.
        assert await cas.progress(sid) == PART
        await cas.append(sid, PART, data[PART:])
        desc = await cas.finish(sid, sha256(data))
        assert await cas.get(desc.digest) == data
