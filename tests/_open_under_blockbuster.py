"""Opens one store URL in a fresh interpreter, with blockbuster watching asyncstore.

Usage: ``python _open_under_blockbuster.py async|sync asyncio|trio URL``. In a
fresh interpreter no backend is imported yet and the entry points are not
scanned, which is what the first `open_store` of a program meets. Prints
``opened <backend class>`` or ``raised <error class>``.
"""

from __future__ import annotations

import sys

import anyio
import blockbuster.blockbuster as _bb
import sniffio
from blockbuster import blockbuster_ctx

import asyncstore


class _AnyEventLoop:
    """As in conftest.py: a trio loop counts as a running loop too."""

    @staticmethod
    def get_running_loop() -> object:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            raise RuntimeError("no running event loop") from None


_bb.asyncio = _AnyEventLoop  # type: ignore[assignment]


async def main(mode: str, url: str) -> None:
    with blockbuster_ctx(["asyncstore"]):
        try:
            if mode == "async":
                async with asyncstore.open_store_async(url) as store:
                    backend = store.backend
            else:
                async with asyncstore.open_store(url) as store:
                    backend = store.backend
        except Exception as exc:
            print("raised", type(exc).__name__, exc)
        else:
            print("opened", type(backend).__name__)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[3], backend=sys.argv[2])
