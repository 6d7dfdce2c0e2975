"""Test session setup: every async test under asyncio AND trio, with blocking calls caught.

blockbuster raises BlockingError when a blocking call (file I/O, time.sleep,
socket ops, ...) runs on the event-loop thread from asyncstore's code. It only
knows asyncio's loop, so it is told about trio's too: "a loop is running"
means sniffio sees an async library in this thread (worker threads see none).
"""

from __future__ import annotations

from collections.abc import Iterator

import blockbuster.blockbuster as _bb
import pytest
import sniffio
from _servers import _signatures_hold, azurite, emulator, s3
from blockbuster import BlockBuster, blockbuster_ctx

__all__ = ["_signatures_hold", "azurite", "emulator", "s3"]  # the session's servers


class _AnyEventLoop:
    """Stands in for the asyncio module inside blockbuster: any running loop counts."""

    @staticmethod
    def get_running_loop() -> object:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            raise RuntimeError("no running event loop") from None


_bb.asyncio = _AnyEventLoop  # type: ignore[assignment]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test in which asyncstore blocks the event loop (test code itself may)."""
    with blockbuster_ctx(["asyncstore"], excluded_modules=["asyncstore.testing"]) as bb:
        yield bb
