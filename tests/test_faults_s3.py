"""S3 under faults: moto behind the fault-injecting proxy (tests/_faultproxy.py).

Every case moves 64 MiB (8 parts or ranges of 8 MiB) through one fault, under
asyncio and trio, and checks the promise: the transfer completes with the
right sha256 using the core's retries (part-level for uploads, ranged resume
pinned to the ETag for downloads), or fails with a TransportError naming the
key and the attempt count; either way nothing is left behind, by moto's own
listing of objects and of multipart uploads.

No assertion depends on how fast this machine is: the read timeout is a hang
guard (`READ_TIMEOUT`) except in the cases that stall a request on purpose, which
keep one request in flight (nothing queues at the server) under a short one; what
was sent again is judged by the client's own record of failed attempts
(`UploadLog`, `ReadLog`); every wait is bounded.
"""

from __future__ import annotations

import collections
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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
from _servers import BUCKET, S3Server

from asyncstore import (
    ConnectionError,
    RetryPolicy,
    Store,
    TimeoutError,
    TransportError,
)
from asyncstore._backend import MiB
from asyncstore.backends.s3 import S3Backend
from asyncstore.testing import pattern

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
    pytest.mark.filterwarnings(
        r"ignore:Async generator 'httpx\._content\.\w*ByteStream\.__aiter__':ResourceWarning"
    ),
]

SIZE = 64 * MiB
PART = 8 * MiB
DATA = pattern(SIZE, seed=7)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
#: Patient enough to outlast each fault below, quick enough for a test.
RETRY = RetryPolicy(attempts=8, backoff_base=0.1, backoff_cap=1.0)
#: For refused connections: no jitter, so the attempts of a request span 4.5 s of the event
#: loop's clock, and the proxy's 1 s refusal (on the same clock) ends before the last one.
REFUSED_RETRY = RetryPolicy(attempts=8, backoff_base=0.1, backoff_cap=1.0, jitter=False)
#: The read and connect timeout of every case that is not about them: far past anything a
#: loaded machine takes to answer one request, so that it fires only if a request hangs.
READ_TIMEOUT = 60.0
#: The bound of every wait for an outcome (a whole 64 MiB transfer included): a hang fails
#: the test instead of the session.
HANG_GUARD = 300.0
#: The read timeout of the cases that stall a request on purpose (each waits it out once).
#: They keep one request in flight, so that no request waits behind others at the server:
#: an 8 MiB part takes moto well under a second to answer even on a loaded machine.
STALL_READ_TIMEOUT = 10.0
#: What "retries exhausted" looks like.
FEW = RetryPolicy(attempts=3, backoff_base=0.01, backoff_cap=0.05)
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


def is_part(seen: Seen) -> bool:
    return seen.method == "PUT" and "partNumber=" in seen.target


def is_complete(seen: Seen) -> bool:
    return seen.method == "POST" and "uploadId=" in seen.target


def is_ranged_get(seen: Seen) -> bool:
    return seen.method == "GET" and seen.header("range") is not None


@pytest.fixture
def prefix(s3: S3Server) -> Iterator[str]:
    name = f"f-{uuid.uuid4().hex[:12]}"
    yield name
    s3.clean(name + "/")


@pytest.fixture
async def proxy(s3: S3Server) -> AsyncIterator[FaultProxy]:
    port = int(s3.moto_endpoint.rsplit(":", 1)[1])
    async with FaultProxy.running(port) as proxy:
        yield proxy


def make_store(
    proxy: FaultProxy,
    prefix: str,
    retry: RetryPolicy = RETRY,
    *,
    max_concurrency: int = 4,
    timeout: float | None = None,
    **options: Any,
) -> Store:
    options.setdefault("read_timeout", READ_TIMEOUT)
    options.setdefault("connect_timeout", READ_TIMEOUT)
    backend = S3Backend(BUCKET, prefix, endpoint=proxy.endpoint, **options)
    return Store(
        backend, chunk_size=PART, max_concurrency=max_concurrency, retry=retry, timeout=timeout
    )


def stalling(fault: dict[str, Any]) -> dict[str, Any]:
    """The store options of a case with ``fault``: a stall is waited out one request at a time."""
    if fault["kind"] != "stall":
        return {}
    return {"read_timeout": STALL_READ_TIMEOUT, "max_concurrency": 1}


def assert_nothing_left(s3: S3Server, prefix: str) -> None:
    assert s3.keys(prefix + "/") == []
    assert s3.uploads(prefix + "/") == []


def stored_digest(s3: S3Server, prefix: str, key: str) -> str:
    body = s3.boto.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()
    return "sha256:" + hashlib.sha256(body).hexdigest()


# -- uploads through each fault ------------------------------------------------------------------

UPLOAD_FAULTS: dict[str, dict[str, Any]] = {
    "reset mid-part body": {"kind": "reset_request", "match": is_part, "skip": 2, "after": MiB},
    "reset mid-response": {"kind": "reset_response", "match": is_part, "skip": 1, "after": None},
    "503 SlowDown burst": {
        "kind": "status",
        "match": is_part,
        "times": 4,
        "status": 503,
        "body": SLOW_DOWN,
    },
    "500 burst": {"kind": "status", "match": is_part, "times": 3, "status": 500, "body": INTERNAL},
    "stalled part past the read timeout": {
        "kind": "stall",
        "match": is_part,
        "skip": 3,
        "after": None,
        "seconds": 30,
    },
    "lost CompleteMultipartUpload answer": {
        "kind": "reset_response",
        "match": is_complete,
        "after": None,
    },
}


@pytest.mark.parametrize("fault", list(UPLOAD_FAULTS))
async def test_an_upload_completes_through(
    fault: str, s3: S3Server, proxy: FaultProxy, prefix: str
) -> None:
    injected = proxy.add(**UPLOAD_FAULTS[fault])
    async with make_store(proxy, prefix, **stalling(UPLOAD_FAULTS[fault])) as store:
        log = UploadLog.attach(store)
        with anyio.fail_after(HANG_GUARD):
            result = await store.put("big", DATA)
    assert injected.fired >= 1
    assert result.sha256 == DIGEST
    assert stored_digest(s3, prefix, "big") == DIGEST
    assert s3.keys(prefix + "/") == [f"{prefix}/big"]
    assert s3.uploads(prefix + "/") == []
    # Only the broken part was sent again, not the whole upload, and once per attempt.
    assert_only_failed_parts_were_sent_again(log, SIZE // PART)
    assert len([s for s in proxy.seen if is_part(s)]) == len(log.attempts)


async def test_an_upload_completes_through_refused_connections(
    s3: S3Server, proxy: FaultProxy, prefix: str
) -> None:
    async with make_store(proxy, prefix, REFUSED_RETRY) as store, anyio.create_task_group() as tg:
        log = UploadLog.attach(store)

        async def refuse_after_the_first_part() -> None:
            await proxy.wait_for(is_part)
            await proxy.refuse(1.0)

        tg.start_soon(refuse_after_the_first_part)
        with anyio.fail_after(HANG_GUARD):
            result = await store.put("big", DATA)
    assert result.sha256 == DIGEST
    assert_only_failed_parts_were_sent_again(log, SIZE // PART)
    assert stored_digest(s3, prefix, "big") == DIGEST
    assert s3.uploads(prefix + "/") == []


@pytest.mark.parametrize("size", [MiB, SIZE], ids=["put", "multipart"])
async def test_a_create_whose_answer_was_lost_succeeds_on_retry(
    size: int, s3: S3Server, proxy: FaultProxy, prefix: str
) -> None:
    """The write landed, the answer was lost: the retry meets its own object (412 on a
    create-if-absent PUT) and recognises it by its sha256 instead of failing."""
    commit = (
        (lambda s: s.method == "PUT" and "uploadId=" not in s.target)
        if size == MiB
        else is_complete
    )
    injected = proxy.add("reset_response", match=commit, after=None)
    async with make_store(proxy, prefix) as store:
        with anyio.fail_after(HANG_GUARD):
            result = await store.put("once", DATA[:size], mode="create")
    assert injected.fired == 1
    assert result.sha256 == "sha256:" + hashlib.sha256(DATA[:size]).hexdigest()
    assert stored_digest(s3, prefix, "once") == result.sha256
    assert s3.uploads(prefix + "/") == []


# -- downloads through each fault ----------------------------------------------------------------

DOWNLOAD_FAULTS: dict[str, dict[str, Any]] = {
    "reset mid-range": {
        "kind": "reset_response",
        "match": is_ranged_get,
        "skip": 2,
        "after": 3 * MiB,
    },
    "503 burst": {
        "kind": "status",
        "match": is_ranged_get,
        "times": 4,
        "status": 503,
        "body": SLOW_DOWN,
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
def stored(s3: S3Server, prefix: str) -> str:
    s3.boto.put_object(Bucket=BUCKET, Key=f"{prefix}/big", Body=DATA)
    return "big"


@pytest.mark.parametrize("fault", list(DOWNLOAD_FAULTS))
async def test_a_download_completes_through(
    fault: str, proxy: FaultProxy, prefix: str, stored: str, tmp_path: Path
) -> None:
    injected = proxy.add(**DOWNLOAD_FAULTS[fault])
    target = tmp_path / "big"
    async with make_store(proxy, prefix, **stalling(DOWNLOAD_FAULTS[fault])) as store:
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
    assert len(etags) == 1 and None not in etags, "every range after the first is pinned"
    # A broken range resumed from the byte the client had received, not from its start.
    assert_resumed_after_what_arrived(log, some_arrived=DOWNLOAD_FAULTS[fault]["kind"] != "status")


async def test_a_download_completes_through_refused_connections(
    proxy: FaultProxy, prefix: str, stored: str
) -> None:
    async with make_store(proxy, prefix, REFUSED_RETRY) as store, anyio.create_task_group() as tg:

        async def refuse_after_the_first_range() -> None:
            await proxy.wait_for(is_ranged_get)
            await proxy.refuse(1.0)

        tg.start_soon(refuse_after_the_first_range)
        with anyio.fail_after(HANG_GUARD):
            data = await store.get(stored, chunk_size=PART)
    assert hashlib.sha256(data).hexdigest() == DIGEST.removeprefix("sha256:")


# -- retries exhausted ---------------------------------------------------------------------------


async def test_an_upload_that_keeps_failing_names_key_and_attempts_and_leaves_nothing(
    s3: S3Server, proxy: FaultProxy, prefix: str
) -> None:
    proxy.add("status", match=is_part, skip=2, times=None, status=503, body=SLOW_DOWN)
    async with make_store(proxy, prefix, retry=FEW) as store:
        log = UploadLog.attach(store)
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"'big'.*after 3 attempt") as caught:
                await store.put("big", DATA)
    assert caught.value.key == "big"
    assert caught.value.attempts == 3
    # No part was sent more than the policy's 3 times, and no request without an attempt
    # (attempts cancelled when the upload failed may not have sent theirs).
    assert max(collections.Counter(a.number for a in log.attempts).values()) == 3
    assert len([s for s in proxy.seen if is_part(s)]) <= len(log.attempts)
    assert_nothing_left(s3, prefix)
    assert any(s.method == "DELETE" and "uploadId=" in s.target for s in proxy.seen), "aborted"


async def test_a_download_that_keeps_failing_names_key_and_attempts_and_leaves_no_file(
    proxy: FaultProxy, prefix: str, stored: str, tmp_path: Path
) -> None:
    proxy.add("reset_response", match=is_ranged_get, skip=1, times=None, after=MiB)
    async with make_store(proxy, prefix, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TransportError, match=r"'big'.*after 3 attempt") as caught:
                await store.download_file(stored, tmp_path / "big")
    assert caught.value.key == "big"
    assert list(tmp_path.iterdir()) == []


async def test_a_server_that_stays_down_is_a_connection_error(
    s3: S3Server, proxy: FaultProxy, prefix: str
) -> None:
    await proxy.refuse(3600)
    async with make_store(proxy, prefix, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(ConnectionError, match=r"'small'.*after 3 attempt") as caught:
                await store.put("small", b"x")
    assert caught.value.key == "small"
    assert_nothing_left(s3, prefix)


# -- timeouts ------------------------------------------------------------------------------------


async def test_a_stalled_read_times_out_at_the_read_timeout(
    proxy: FaultProxy, prefix: str, stored: str
) -> None:
    proxy.add("stall", match=lambda s: s.method == "GET", times=None, after=MiB, seconds=3600)
    async with make_store(proxy, prefix, retry=FEW, read_timeout=0.5) as store:
        with anyio.fail_after(HANG_GUARD):  # a hang fails the test here
            with pytest.raises(TimeoutError, match=r"'big'.*after 3 attempt") as caught:
                await store.get(stored)
    assert caught.value.key == "big"


async def test_the_store_timeout_bounds_an_upload_and_aborts_it(
    s3: S3Server, proxy: FaultProxy, prefix: str
) -> None:
    # Only the Store's timeout can end the stalls (the read timeout is an hour).
    proxy.add("stall", match=is_part, skip=2, times=None, after=None, seconds=3600)
    async with make_store(proxy, prefix, read_timeout=3600, timeout=1.5) as store:
        log = UploadLog.attach(store)
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(TimeoutError, match=r"put of key 'big'.*1\.5 s"):
                await store.put("big", DATA)
    assert s3.keys(prefix + "/") == []
    if log.created:
        assert s3.uploads(prefix + "/") == [], "the upload was aborted"
    else:
        # The timeout came before CreateMultipartUpload's answer (a very slow machine):
        # the client never learned the upload's id, the known limit of docs/reliability.md.
        assert log.attempts == []
        s3.clean(prefix + "/")


async def test_a_callers_cancel_scope_bounds_a_download(
    proxy: FaultProxy, prefix: str, stored: str, tmp_path: Path
) -> None:
    proxy.add("stall", match=is_ranged_get, skip=1, times=None, after=0, seconds=3600)
    async with make_store(proxy, prefix, read_timeout=3600) as store:
        with anyio.fail_after(HANG_GUARD), anyio.move_on_after(1.0) as scope:
            await store.download_file(stored, tmp_path / "big")
    assert scope.cancelled_caught
    assert list(tmp_path.iterdir()) == []


def test_timeouts_are_options_of_the_url() -> None:
    from asyncstore import open_store

    store = open_store("s3://bkt/p?endpoint=http://127.0.0.1:1&connect_timeout=1.5&read_timeout=7")
    backend = store.backend
    assert isinstance(backend, S3Backend)
    assert backend.timeouts == (1.5, 7.0)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1e9", "100000000"])
def test_a_bad_timeout_option_is_a_configuration_error(bad: str) -> None:
    from asyncstore import ConfigurationError, open_store

    with pytest.raises(ConfigurationError, match="read_timeout") as caught:
        open_store(f"s3://bkt/p?read_timeout={bad}")
    assert caught.value.key == "read_timeout"


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    with unanswered_listener() as port:
        yield port


async def test_a_connection_that_never_opens_times_out_at_the_connect_timeout(
    unanswered_port: int, prefix: str
) -> None:
    backend = S3Backend(
        BUCKET, prefix, endpoint=f"http://127.0.0.1:{unanswered_port}", connect_timeout=0.5
    )
    async with Store(backend, retry=FEW) as store:
        with anyio.fail_after(HANG_GUARD):  # a hang fails the test here
            with pytest.raises(TransportError, match=r"'k'.*after 3 attempt") as caught:
                await store.head("k")
    assert isinstance(caught.value, TimeoutError), repr(caught.value)
