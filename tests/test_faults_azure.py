"""Azure under faults: Azurite behind the fault-injecting proxy (tests/_faultproxy.py).

The twin of test_faults_s3.py. Every case moves 64 MiB (8 blocks or ranges of
8 MiB) through one fault, under asyncio (azure-core's aiohttp transport) and
trio (`HttpxTransport`), and checks the promise: the transfer completes with
the right sha256 using the core's retries (block-level for uploads, ranged
resume pinned to the ETag for downloads), or fails with a TransportError
naming the key and the attempt count; either way nothing is left behind, by
Azurite's own listing of blobs with their uncommitted blocks.

An upload is staged blocks (Put Block, ``comp=block``, several in flight) and
one Put Block List (``comp=blocklist``) that commits them; a download is ranged
Get Blobs (``x-ms-range``), every range after the first pinned with If-Match.

No assertion depends on how fast this machine is: the read timeout is a hang
guard (`READ_TIMEOUT`) except in the cases that stall a request on purpose, which
keep one request in flight under a short one; what was sent again is judged by
the client's own record of failed attempts (`UploadLog`, `ReadLog`); every wait
is bounded.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from _faultproxy import (
    FaultProxy,
    ReadLog,
    Seen,
    UploadLog,
    assert_only_failed_parts_were_sent_again,
    assert_resumed_after_what_arrived,
    unanswered_listener,
)
from _servers import Azurite
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient

from asyncstore import (
    ConfigurationError,
    ConnectionError,
    RetryPolicy,
    Store,
    TimeoutError,
    TransportError,
    open_store,
)
from asyncstore._backend import MiB
from asyncstore.backends.azure import AzureBackend, HttpxTransport
from asyncstore.backends.azure._backend import block_id
from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY
from asyncstore.backends.azure._settle import SETTLE_TIMEOUT
from asyncstore.testing import pattern

pytestmark = [pytest.mark.anyio]

SIZE = 64 * MiB
PART = 8 * MiB
DATA = pattern(SIZE, seed=7)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
PREFIX = "f"
KEY = "big"
#: Patient enough to outlast each fault below, quick enough for a test.
RETRY = RetryPolicy(attempts=8, backoff_base=0.1, backoff_cap=1.0)
#: For refused connections: no jitter, so the attempts of a request span 4.5 s of the event
#: loop's clock, and the proxy's 1 s refusal (on the same clock) ends before the last one.
REFUSED_RETRY = RetryPolicy(attempts=8, backoff_base=0.1, backoff_cap=1.0, jitter=False)
#: The read and connect timeout of every case that is not about them: far past anything a
#: loaded machine takes to answer one request, so that it fires only if a request hangs.
READ_TIMEOUT = 60.0
#: The bound of every wait for an outcome (a whole 64 MiB transfer included): a hang fails
#: the test instead of the session (a timeout not honoured waits on an hour-long stall).
HANG_GUARD = 300.0
#: The read timeout of the cases that stall a request on purpose (each waits it out once).
#: They keep one request in flight, so that no request waits behind others at the server.
STALL_READ_TIMEOUT = 10.0
#: What "retries exhausted" looks like.
FEW = RetryPolicy(attempts=3, backoff_base=0.01, backoff_cap=0.05)
SERVER_BUSY = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
    b"<Message>The server is busy.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InternalError</Code>'
    b"<Message>The server encountered an internal error. Please retry the request.</Message>"
    b"</Error>"
)


# -- what the proxy saw ---------------------------------------------------------------------------


def _comp(seen: Seen) -> str | None:
    values = parse_qs(urlsplit(seen.target).query).get("comp")
    return values[0] if values else None


def is_block(seen: Seen) -> bool:
    """Put Block: one staged part."""
    return seen.method == "PUT" and _comp(seen) == "block"


def is_commit(seen: Seen) -> bool:
    """Put Block List: the commit (also the abort's empty placeholder commit)."""
    return seen.method == "PUT" and _comp(seen) == "blocklist"


def _range(seen: Seen) -> str | None:
    return seen.header("x-ms-range") or seen.header("range")


def is_ranged_get(seen: Seen) -> bool:
    """Get Blob of a range (not Get Block List, not a listing)."""
    return seen.method == "GET" and _comp(seen) is None and _range(seen) is not None


def ranges(proxy: FaultProxy) -> list[tuple[int, int, str | None]]:
    """(start, end, fault) of every ranged GET, in order (``end`` inclusive, as sent)."""
    out = []
    for seen in proxy.seen:
        if is_ranged_get(seen):
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", _range(seen) or "")
            assert match, _range(seen)
            out.append((int(match[1]), int(match[2]), seen.fault))
    return out


# -- Azurite's side (the sync SDK, straight to Azurite, not through the proxy) ------------------


class Blobs:
    """What Azurite holds in a test's container."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self.client: ContainerClient = service.get_container_client(container)

    def names(self) -> list[str]:
        """Every blob name, those with only uncommitted blocks included."""
        return sorted(b.name for b in self.client.list_blobs(include=["uncommittedblobs"]))

    def committed(self) -> list[str]:
        return sorted(b.name for b in self.client.list_blobs())

    def blocks(self, key: str = KEY) -> tuple[list[str], list[str]]:
        """The (committed, uncommitted) block ids of ``key``."""
        committed, uncommitted = self.client.get_blob_client(f"{PREFIX}/{key}").get_block_list(
            "all"
        )
        return [b.id for b in committed], [b.id for b in uncommitted]

    def digest(self, key: str = KEY) -> str:
        body = self.client.download_blob(f"{PREFIX}/{key}", max_concurrency=4).readall()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def etag(self, key: str = KEY) -> str:
        return str(self.client.get_blob_client(f"{PREFIX}/{key}").get_blob_properties().etag)

    def assert_nothing_left(self) -> None:
        """No blob, committed or made of uncommitted blocks only, is in the container."""
        assert self.names() == []


@pytest.fixture
def blobs(azurite: Azurite) -> Iterator[Blobs]:
    """A fresh container (deleted after the test: Azurite keeps blobs in memory)."""
    name = f"t{uuid.uuid4().hex[:24]}"
    service = azurite.service()
    service.create_container(name)
    try:
        yield Blobs(service, name)
    finally:
        with contextlib.suppress(AzureError):
            service.delete_container(name)
        service.close()


@pytest.fixture
async def proxy(azurite: Azurite) -> AsyncIterator[FaultProxy]:
    port = urlsplit(azurite.endpoint).port
    assert port is not None
    async with FaultProxy.running(port) as proxy:
        yield proxy


def make_store(
    proxy: FaultProxy,
    blobs: Blobs,
    retry: RetryPolicy = RETRY,
    *,
    max_concurrency: int = 4,
    timeout: float | None = None,
    **options: Any,
) -> Store:
    options.setdefault("read_timeout", READ_TIMEOUT)
    options.setdefault("connect_timeout", READ_TIMEOUT)
    backend = AzureBackend(
        blobs.client.container_name,
        PREFIX,
        account_url=f"{proxy.endpoint}/{AZURITE_ACCOUNT}",
        account_key=AZURITE_KEY,
        **options,
    )
    return Store(
        backend, chunk_size=PART, max_concurrency=max_concurrency, retry=retry, timeout=timeout
    )


def stalling(fault: dict[str, Any]) -> dict[str, Any]:
    """The store options of a case with ``fault``: a stall is waited out one request at a time."""
    if fault["kind"] != "stall":
        return {}
    return {"read_timeout": STALL_READ_TIMEOUT, "max_concurrency": 1}


def assert_committed_cleanly(blobs: Blobs, result_etag: str) -> None:
    """The blob holds DATA as exactly 8 blocks, no uncommitted block, at the ETag reported."""
    assert blobs.names() == [f"{PREFIX}/{KEY}"]
    assert blobs.digest() == DIGEST
    committed, uncommitted = blobs.blocks()
    assert len(committed) == SIZE // PART
    assert len({block.rsplit("-", 1)[0] for block in committed}) == 1, "one upload's blocks"
    assert uncommitted == []
    assert result_etag.strip('"') == blobs.etag().strip('"')


# -- uploads through each fault ------------------------------------------------------------------

UPLOAD_FAULTS: dict[str, dict[str, Any]] = {
    "reset mid-block body": {"kind": "reset_request", "match": is_block, "skip": 2, "after": MiB},
    "reset before a block's answer": {
        "kind": "reset_response",
        "match": is_block,
        "skip": 1,
        "after": None,
    },
    "503 ServerBusy burst": {
        "kind": "status",
        "match": is_block,
        "times": 4,
        "status": 503,
        "body": SERVER_BUSY,
    },
    "500 InternalError burst": {
        "kind": "status",
        "match": is_block,
        "times": 3,
        "status": 500,
        "body": INTERNAL,
    },
    "stalled block past the read timeout": {
        "kind": "stall",
        "match": is_block,
        "skip": 3,
        "after": None,
        "seconds": 30,
    },
}


@pytest.mark.parametrize("fault", list(UPLOAD_FAULTS))
async def test_an_upload_completes_through(fault: str, proxy: FaultProxy, blobs: Blobs) -> None:
    injected = proxy.add(**UPLOAD_FAULTS[fault])
    async with make_store(proxy, blobs, **stalling(UPLOAD_FAULTS[fault])) as store:
        log = UploadLog.attach(store)
        with anyio.fail_after(HANG_GUARD):
            result = await store.put(KEY, DATA)
    assert injected.fired >= 1
    assert result.sha256 == DIGEST
    assert_committed_cleanly(blobs, result.etag)
    # Only the broken block was sent again, not the whole upload, and once per attempt.
    assert_only_failed_parts_were_sent_again(log, SIZE // PART)
    assert len([s for s in proxy.seen if is_block(s)]) == len(log.attempts)
    assert len([s for s in proxy.seen if is_commit(s)]) == 1


@pytest.mark.parametrize("mode", ["overwrite", "create"])
async def test_an_upload_completes_when_the_commits_answer_is_lost(
    mode: str, proxy: FaultProxy, blobs: Blobs
) -> None:
    """Put Block List landed, the client never heard: the retried commit is safe.

    Without a condition it commits the same blocks again (Put Block List takes
    committed blocks too), so the blob is the same bytes, from one upload's
    blocks; with ``mode="create"`` it fails If-None-Match, and the backend
    recognises its own commit by the committed block list.
    """
    injected = proxy.add("reset_response", match=is_commit, after=None)
    async with make_store(proxy, blobs) as store:
        with anyio.fail_after(HANG_GUARD):
            result = await store.put(KEY, DATA, mode=mode)  # type: ignore[arg-type]
    assert injected.fired == 1
    assert result.sha256 == DIGEST
    assert_committed_cleanly(blobs, result.etag)
    commits = [s for s in proxy.seen if is_commit(s)]
    assert len(commits) == 2
    if mode == "create":
        assert all(c.header("if-none-match") == "*" for c in commits)
        assert any(s.method == "GET" and _comp(s) == "blocklist" for s in proxy.seen)
    assert not any(s.method == "DELETE" for s in proxy.seen), "no abort after a success"


async def test_an_upload_completes_through_refused_connections(
    proxy: FaultProxy, blobs: Blobs
) -> None:
    async with make_store(proxy, blobs, REFUSED_RETRY) as store, anyio.create_task_group() as tg:
        log = UploadLog.attach(store)

        async def refuse_after_the_first_block() -> None:
            await proxy.wait_for(is_block)
            await proxy.refuse(1.0)

        tg.start_soon(refuse_after_the_first_block)
        with anyio.fail_after(HANG_GUARD):
            result = await store.put(KEY, DATA)
    assert result.sha256 == DIGEST
    assert_committed_cleanly(blobs, result.etag)
    assert_only_failed_parts_were_sent_again(log, SIZE // PART)


# -- downloads through each fault ----------------------------------------------------------------

DOWNLOAD_FAULTS: dict[str, dict[str, Any]] = {
    "reset mid-way through the first range": {
        "kind": "reset_response",
        "match": is_ranged_get,
        "after": 3 * MiB,
    },
    "reset mid-range": {
        "kind": "reset_response",
        "match": is_ranged_get,
        "skip": 2,
        "after": 3 * MiB,
    },
    "reset before a range's answer": {
        "kind": "reset_response",
        "match": is_ranged_get,
        "skip": 2,
        "after": None,
    },
    "503 ServerBusy burst": {
        "kind": "status",
        "match": is_ranged_get,
        "times": 4,
        "status": 503,
        "body": SERVER_BUSY,
    },
    "500 InternalError burst": {
        "kind": "status",
        "match": is_ranged_get,
        "skip": 1,
        "times": 3,
        "status": 500,
        "body": INTERNAL,
    },
    "stalled range past the read timeout": {
        "kind": "stall",
        "match": is_ranged_get,
        "skip": 1,
        "after": 2 * MiB,
        "seconds": 30,
    },
}


@pytest.fixture
def stored(blobs: Blobs) -> str:
    """DATA at KEY, written straight to Azurite, with the sha256 asyncstore records."""
    blobs.client.upload_blob(
        f"{PREFIX}/{KEY}",
        DATA,
        metadata={"asyncstore_sha256": DIGEST},
        max_concurrency=4,
    )
    return KEY


@pytest.mark.parametrize("fault", list(DOWNLOAD_FAULTS))
async def test_a_download_completes_through(
    fault: str, proxy: FaultProxy, blobs: Blobs, stored: str, tmp_path: Path
) -> None:
    injected = proxy.add(**DOWNLOAD_FAULTS[fault])
    target = tmp_path / "big"
    async with make_store(proxy, blobs, **stalling(DOWNLOAD_FAULTS[fault])) as store:
        log = ReadLog.attach(store)
        with anyio.fail_after(HANG_GUARD):
            info = await store.download_file(stored, target)
    assert injected.fired >= 1
    assert info.sha256 == DIGEST
    assert hashlib.sha256(target.read_bytes()).hexdigest() == DIGEST.removeprefix("sha256:")
    assert [p.name for p in tmp_path.iterdir()] == ["big"]  # no temp file left
    gets = [s for s in proxy.seen if is_ranged_get(s)]
    first = next(i for i, s in enumerate(gets) if s.fault is None)
    etags = {s.header("if-match") for s in gets[first + 1 :]}
    assert etags == {blobs.etag()}, "every range after the first is pinned to the blob's ETag"
    seen = ranges(proxy)
    broken = next(i for i, (_, _, f) in enumerate(seen) if f is not None)
    _, end, _ = seen[broken]
    assert [(s, e) for s, e, f in seen[broken + 1 :] if e == end], f"not retried: {seen}"
    # Every broken range was asked again from the first byte the client had not received:
    # a resume where bytes had arrived, the whole range where none had.
    assert_resumed_after_what_arrived(log, some_arrived=bool(injected.after))


async def test_a_download_completes_through_refused_connections(
    proxy: FaultProxy, blobs: Blobs, stored: str
) -> None:
    async with make_store(proxy, blobs, REFUSED_RETRY) as store, anyio.create_task_group() as tg:

        async def refuse_after_the_first_range() -> None:
            await proxy.wait_for(is_ranged_get)
            await proxy.refuse(1.0)

        tg.start_soon(refuse_after_the_first_range)
        with anyio.fail_after(HANG_GUARD):
            data = await store.get(stored, chunk_size=PART)
    assert hashlib.sha256(data).hexdigest() == DIGEST.removeprefix("sha256:")


# -- retries exhausted ---------------------------------------------------------------------------


EXHAUSTING_UPLOAD_FAULTS: dict[str, dict[str, Any]] = {
    # The service answers 503 without staging anything.
    "503 on every block after the second": {
        "kind": "status",
        "match": is_block,
        "skip": 2,
        "status": 503,
        "body": SERVER_BUSY,
    },
    # The service stages every block, the client never hears: the abort must find them.
    "every block's answer lost after the second": {
        "kind": "reset_response",
        "match": is_block,
        "skip": 2,
        "after": None,
    },
}


@pytest.mark.parametrize("fault", list(EXHAUSTING_UPLOAD_FAULTS))
async def test_an_upload_that_keeps_failing_names_key_and_attempts_and_leaves_nothing(
    fault: str, proxy: FaultProxy, blobs: Blobs
) -> None:
    proxy.add(times=None, **EXHAUSTING_UPLOAD_FAULTS[fault])
    async with make_store(proxy, blobs, retry=FEW) as store:
        log = UploadLog.attach(store)
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"'big'.*after 3 attempt") as caught:
                await store.put(KEY, DATA)
    assert caught.value.key == KEY
    assert caught.value.attempts == 3
    sent = collections.Counter(s.target for s in proxy.seen if is_block(s))
    assert max(sent.values()) == 3, "one request per attempt, no hidden retries"
    assert sum(sent.values()) <= len(log.attempts)  # a cancelled attempt may send nothing
    # No blob, and no uncommitted blocks: the abort committed an empty placeholder
    # (which discards the staged blocks) and deleted it.
    blobs.assert_nothing_left()
    assert any(s.method == "DELETE" for s in proxy.seen), "aborted"


async def test_an_abort_whose_answers_are_lost_still_leaves_nothing(
    proxy: FaultProxy, blobs: Blobs
) -> None:
    """The abort's placeholder commit and its delete land unheard: the retried abort ends it.

    The abort is retried by the Store; the second one finds the placeholder (by its
    metadata naming the upload) or nothing, and deletes what is there.
    """
    proxy.add("status", match=is_block, skip=2, times=None, status=503, body=SERVER_BUSY)
    placeholder = proxy.add("reset_response", match=is_commit, after=None)
    delete = proxy.add("reset_response", match=lambda s: s.method == "DELETE", after=None)
    async with make_store(proxy, blobs, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"'big'.*after 3 attempt"):
                await store.put(KEY, DATA)
    assert placeholder.fired == 1
    assert delete.fired == 1
    blobs.assert_nothing_left()


async def test_an_overwrite_that_keeps_failing_keeps_the_old_blob(
    proxy: FaultProxy, blobs: Blobs
) -> None:
    """What can be cleaned up is: the blocks staged onto a committed blob cannot be.

    Azure has no call that deletes uncommitted blocks, and discarding them means
    committing the blob again (a new ETag, a rewrite of somebody's object), so the
    abort leaves them with the old blob; the next write of the key discards them
    (Azure also does after 7 days).
    """
    blobs.client.upload_blob(f"{PREFIX}/{KEY}", b"old")
    proxy.add("status", match=is_block, skip=2, times=None, status=503, body=SERVER_BUSY)
    async with make_store(proxy, blobs, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"'big'.*after 3 attempt"):
                await store.put(KEY, DATA)
        assert blobs.names() == [f"{PREFIX}/{KEY}"]
        assert blobs.client.download_blob(f"{PREFIX}/{KEY}").readall() == b"old"
        committed, uncommitted = blobs.blocks()
        assert committed == []  # written by Put Blob
        assert 2 <= len(uncommitted) < SIZE // PART
        assert len({block.rsplit("-", 1)[0] for block in uncommitted}) == 1, "one upload's"
        proxy.clear()
        with anyio.fail_after(HANG_GUARD):
            result = await store.put(KEY, DATA)
    assert_committed_cleanly(blobs, result.etag)  # the leftover blocks are gone


async def test_a_commit_whose_every_answer_is_lost_is_rolled_back(
    proxy: FaultProxy, blobs: Blobs
) -> None:
    """Each retried commit landed; the Store reports the failure, and the abort undoes it.

    Every block committed is this upload's, so the abort deletes the blob (If-Match
    on its ETag): a put that raised leaves no new object behind.
    """
    proxy.add("reset_response", match=is_commit, times=None, after=None)
    async with make_store(proxy, blobs, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"complete upload .*'big'.*after 3 attempt"):
                await store.put(KEY, DATA)
    # One request per attempt: the Store's policy decides, no transport retries on its own
    # (aiohttp re-sent every PUT once on a reset connection: 6 commits, until fixed).
    assert len([s for s in proxy.seen if is_commit(s)]) == 3
    blobs.assert_nothing_left()


async def test_a_download_that_keeps_failing_names_key_and_attempts_and_leaves_no_file(
    proxy: FaultProxy, blobs: Blobs, stored: str, tmp_path: Path
) -> None:
    proxy.add("reset_response", match=is_ranged_get, skip=1, times=None, after=MiB)
    async with make_store(proxy, blobs, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"'big'.*after 3 attempt") as caught:
                await store.download_file(stored, tmp_path / "big")
    assert caught.value.key == KEY
    assert caught.value.attempts == 3
    assert list(tmp_path.iterdir()) == []


async def test_a_server_that_stays_down_is_a_connection_error(
    proxy: FaultProxy, blobs: Blobs
) -> None:
    await proxy.refuse(3600)
    async with make_store(proxy, blobs, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(ConnectionError, match=r"'small'.*after 3 attempt") as caught:
                await store.put("small", b"x")
    assert caught.value.key == "small"
    assert caught.value.attempts == 3
    blobs.assert_nothing_left()


# -- timeouts ------------------------------------------------------------------------------------


async def test_a_stalled_read_times_out_at_the_read_timeout(
    proxy: FaultProxy, blobs: Blobs, stored: str
) -> None:
    # The stalls outlast every default (the SDK's 60 s, the transport's 120 s): only
    # the configured read timeout ends them before the guard does.
    proxy.add("stall", match=lambda s: s.method == "GET", times=None, after=MiB, seconds=3600)
    async with make_store(proxy, blobs, retry=FEW, read_timeout=0.5) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TimeoutError, match=r"'big'.*after 3 attempt") as caught:
                await store.get(stored)
    assert caught.value.key == KEY


async def test_the_store_timeout_bounds_an_upload_and_aborts_it(
    proxy: FaultProxy, blobs: Blobs
) -> None:
    # The stalled blocks' bodies are out (Azurite stages them): each cancelled write
    # gets SETTLE_TIMEOUT to hear its answer, so that the abort sees every block that
    # landed. That, not the read timeout (an hour here), bounds the cleanup.
    proxy.add("stall", match=is_block, skip=2, times=None, after=None, seconds=3600)
    async with make_store(proxy, blobs, read_timeout=3600, timeout=1.5) as store:
        with anyio.fail_after(SETTLE_TIMEOUT + HANG_GUARD):
            with pytest.raises(TimeoutError, match=r"put of key 'big'.*1\.5 s"):
                await store.put(KEY, DATA)
    blobs.assert_nothing_left()


async def test_a_callers_cancel_scope_bounds_a_download(
    proxy: FaultProxy, blobs: Blobs, stored: str, tmp_path: Path
) -> None:
    proxy.add("stall", match=is_ranged_get, skip=1, times=None, after=0, seconds=3600)
    async with make_store(proxy, blobs, read_timeout=3600) as store:
        with anyio.fail_after(HANG_GUARD), anyio.move_on_after(1.0) as scope:
            await store.download_file(stored, tmp_path / "big")
    assert scope.cancelled_caught
    assert list(tmp_path.iterdir()) == []


# -- the timeout options -------------------------------------------------------------------------


def test_timeouts_are_options_of_the_url() -> None:
    store = open_store(
        "az://data/p?account=myacct&connect_timeout=1.5&read_timeout=7", account_key="a2V5"
    )
    backend = store.backend
    assert isinstance(backend, AzureBackend)
    assert backend.timeouts == (1.5, 7.0)
    keywords = AzureBackend("data", account="myacct", account_key="a2V5", read_timeout=3)
    assert keywords.timeouts == (30.0, 3.0)
    assert AzureBackend("data", account="myacct", account_key="a2V5").timeouts == (30.0, 120.0)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("az://data?account=myacct&read_timeout=0", {}, "option 'read_timeout' of az://data"),
        ("az://data?account=myacct&read_timeout=soon", {}, "option 'read_timeout'"),
        ("az://data?account=myacct&connect_timeout=-1", {}, "option 'connect_timeout'"),
        ("az://data?account=myacct", {"connect_timeout": float("nan")}, "'connect_timeout'"),
        ("az://data?account=myacct", {"read_timeout": True}, "option 'read_timeout'"),
        (
            "az://data?account=myacct&read_timeout=5",
            {"transport": HttpxTransport()},
            "read_timeout cannot be combined with a transport object",
        ),
    ],
)
def test_a_bad_timeout_is_a_configuration_error(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        open_store(url, account_key="a2V5", **options)


async def test_the_backends_transports_get_the_timeouts(anyio_backend: str) -> None:
    backend = AzureBackend(
        "data", account="myacct", account_key="a2V5", connect_timeout=1.5, read_timeout=7
    )
    transport: Any = backend._make_transport()
    if isinstance(transport, HttpxTransport):
        assert transport.timeouts == (1.5, 7.0)
    else:  # azure-core's aiohttp transport, under asyncio
        assert anyio_backend == "asyncio"
        config = transport.connection_config
        assert (config.timeout, config.read_timeout) == (1.5, 7.0)
    await transport.close()
    given = HttpxTransport(connect_timeout=4, read_timeout=9)
    assert AzureBackend("data", account="myacct", account_key="a2V5", transport=given).timeouts == (
        4,
        9,
    )
    await given.close()


def test_block_ids_name_the_upload() -> None:
    # assert_committed_cleanly groups blocks by upload through the id's shape.
    assert block_id("0" * 32, 3).rsplit("-", 1) == ["0" * 32, "000003"]


async def test_a_connection_that_never_opens_times_out_at_the_connect_timeout() -> None:
    with unanswered_listener() as port:
        backend = AzureBackend(
            "unreachable",
            "p",
            account_url=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}",
            account_key=AZURITE_KEY,
            connect_timeout=0.5,
        )
        async with Store(backend, retry=FEW) as store:
            with anyio.fail_after(HANG_GUARD):  # a hang fails the test here
                with pytest.raises(TimeoutError, match=r"'k'.*after 3 attempt") as caught:
                    await store.head("k")
    assert caught.value.attempts == 3
