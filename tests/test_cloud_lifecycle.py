"""The cloud backends' client lifecycle: made once, in one event loop, closed once.

S3, GCS and Azure hold their SDK clients in one `LoopBound` (asyncstore/_backend.py).
The first half checks the helper itself (no server); the second runs each cloud backend
against its emulator on 127.0.0.1: a store used from a second event loop (another
thread's ``anyio.run``) fails with a ConfigurationError naming the service and the store,
and closing a store twice is harmless.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
from _servers import Azurite, Emulator, S3Server

from asyncstore import ConfigurationError, Store, StoreError
from asyncstore._backend import Backend

pytestmark = [
    pytest.mark.anyio,
    # aiobotocore warns once that it prefers httpx2 over the legacy httpx package (trio).
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]


# --------------------------------------------------------------------------- the helper


class _Made:
    """What a LoopBound's ``open`` made, and how often it was closed."""

    def __init__(self) -> None:
        self.closes = 0

    async def close(self) -> None:
        self.closes += 1


def _bound(opened: list[_Made], **options: Any) -> Any:
    from asyncstore._backend import LoopBound

    async def open_(stack: contextlib.AsyncExitStack) -> _Made:
        await anyio.lowlevel.checkpoint()
        made = _Made()
        stack.push_async_callback(made.close)
        opened.append(made)
        return made

    return LoopBound("Test", "test://where", open_, **options)


async def test_concurrent_first_calls_make_one_client() -> None:
    opened: list[_Made] = []
    bound = _bound(opened)
    got: list[_Made] = []

    async def first() -> None:
        got.append(await bound.get())

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(first)
    assert len(opened) == 1
    assert got == opened * 8
    await bound.aclose()


async def test_a_client_is_closed_once_however_often_it_is_closed() -> None:
    opened: list[_Made] = []
    bound = _bound(opened)
    await bound.aclose()  # never made: nothing to close
    with pytest.raises(StoreError, match=r"the Test store test://where is closed"):
        await bound.get()
    bound = _bound(opened)
    await bound.get()
    await bound.aclose()
    await bound.aclose()
    assert [made.closes for made in opened] == [1]
    assert bound.value is None
    with pytest.raises(StoreError, match="is closed") as info:
        await bound.get()
    assert info.value.key == "test://where"


async def test_with_reopen_a_closed_client_is_made_anew() -> None:
    opened: list[_Made] = []
    bound = _bound(opened, reopen=True)
    first = await bound.get()
    await bound.aclose()
    second = await bound.get()
    assert second is not first
    assert [made.closes for made in opened] == [1, 0]
    await bound.aclose()
    assert [made.closes for made in opened] == [1, 1]


async def test_a_client_closed_while_it_is_made_is_closed_too() -> None:
    from asyncstore._backend import LoopBound

    started, release = anyio.Event(), anyio.Event()
    made = _Made()

    async def slow_open(stack: contextlib.AsyncExitStack) -> _Made:
        stack.push_async_callback(made.close)
        started.set()
        await release.wait()
        return made

    bound: LoopBound[_Made] = LoopBound("Test", "test://where", slow_open)
    failures: list[BaseException] = []

    async def first() -> None:
        try:
            await bound.get()
        except StoreError as exc:
            failures.append(exc)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await started.wait()
            await bound.aclose()
            release.set()
    assert made.closes == 1  # not left open by the close that came first
    assert len(failures) == 1
    assert "is closed" in str(failures[0])


async def test_the_helper_refuses_another_event_loop(anyio_backend: str) -> None:
    opened: list[_Made] = []
    bound = _bound(opened)
    await bound.get()

    def elsewhere() -> None:
        anyio.run(bound.get, backend=anyio_backend)

    with pytest.raises(ConfigurationError, match=r"the Test store test://where .*another event"):
        await anyio.to_thread.run_sync(elsewhere)
    assert len(opened) == 1
    assert await bound.get() is opened[0]  # its own loop keeps it
    await bound.aclose()


# --------------------------------------------------------------------------- the cloud backends


@dataclasses.dataclass
class Cloud:
    """How to make a fresh backend of one cloud service against its emulator."""

    service: str
    make: Callable[[], Backend]


@pytest.fixture(params=["s3", "gcs", "azure"])
def cloud(request: pytest.FixtureRequest) -> Iterator[Cloud]:
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3")
        prefix = f"lifecycle-{uuid.uuid4().hex[:12]}"
        yield Cloud("S3", lambda: s3.backend(prefix))
        s3.clean(prefix)
    elif request.param == "gcs":
        from asyncstore.backends.gcs import GCSBackend

        emulator: Emulator = request.getfixturevalue("emulator")
        bucket = emulator.create_bucket()
        yield Cloud("GCS", lambda: GCSBackend(bucket, "p", api_root=emulator.url))
        emulator.empty(bucket)
    else:
        from asyncstore.backends.azure import AzureBackend

        azurite: Azurite = request.getfixturevalue("azurite")
        name = f"t{uuid.uuid4().hex[:24]}"
        service = azurite.service()
        service.create_container(name)
        try:
            yield Cloud(
                "Azure",
                lambda: AzureBackend(name, "p", connection_string=azurite.connection_string),
            )
        finally:
            service.delete_container(name)
            service.close()


@contextlib.asynccontextmanager
async def _store(cloud: Cloud) -> AsyncIterator[Store]:
    async with Store(cloud.make()) as store:
        yield store


async def test_a_store_refuses_a_second_event_loop(cloud: Cloud, anyio_backend: str) -> None:
    async with _store(cloud) as store:
        await store.put("k", b"value")

        async def use() -> None:
            with anyio.fail_after(60):
                await store.backend.head("k")

        def second_loop() -> None:
            anyio.run(use, backend=anyio_backend)

        with pytest.raises(ConfigurationError) as info:
            await anyio.to_thread.run_sync(second_loop)
        message = str(info.value)
        assert f"the {cloud.service} store " in message
        assert "another event loop" in message
        assert info.value.key is not None
        assert info.value.key in message  # the store's URL
        assert await store.get("k") == b"value"  # the loop that opened it keeps it


async def test_closing_a_store_twice_is_harmless(cloud: Cloud) -> None:
    store = Store(cloud.make())
    await store.put("k", b"value")
    await store.aclose()
    await store.aclose()
    unused = Store(cloud.make())
    await unused.aclose()
    await unused.aclose()
    async with _store(cloud) as other:  # what the closed store wrote is there
        assert await other.get("k") == b"value"


async def test_a_store_closed_in_a_cancelled_scope_leaves_no_session_open(cloud: Cloud) -> None:
    """Closing while cancelled (a task group cancelled around ``async with Store``) closes
    everything: the SDK's HTTP sessions (aiobotocore's aiohttp session under asyncio), the
    lean connection pool, the credentials. Nothing is left for the garbage collector to
    report as "Unclosed client session" / "Unclosed connector"."""
    store = Store(cloud.make())
    await store.put("k", b"value")
    assert [info.key async for info in store.list()] == ["k"]  # a request through the SDK
    with anyio.CancelScope() as scope:
        scope.cancel()
        await store.aclose()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del store
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
