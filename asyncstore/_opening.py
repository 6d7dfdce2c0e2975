"""`Opening`: a resource opened by an async call, awaited or used with ``async with``.

`open_store_async` and `Store.open` do their opening work (a worker-thread
import, a first ranged read) before handing the resource over, so errors
come out of that call, not out of the first use. Both spellings work:

    store = await open_store_async(url)     # closed by store.aclose()
    async with open_store_async(url) as store:
        ...                                  # closed on leaving the block
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import anyio

__all__ = ["Opening"]


class _AsyncResource(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


T = TypeVar("T", bound=_AsyncResource)


class Opening(Generic[T]):
    """The opening of a resource: ``await`` it for the resource, or enter it with ``async with``.

    ``await opening`` runs the opening and returns the resource, which the
    caller closes (``aclose()``). ``async with opening as resource`` runs the
    opening, enters the resource and leaves it at the end of the block. The
    opening runs once, when awaited or entered, never before; an Opening is
    used once.
    """

    __slots__ = ("_open", "_resource")

    def __init__(self, open: Callable[[], Awaitable[T]]) -> None:
        self._open = open
        self._resource: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._open().__await__()

    async def __aenter__(self) -> T:
        resource = await self._open()
        try:
            await resource.__aenter__()
        except BaseException:
            aclose = getattr(resource, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
            raise
        self._resource = resource
        return resource

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        resource, self._resource = self._resource, None
        if resource is None:  # pragma: no cover - only if __aenter__ failed, when this isn't called
            return None
        return await resource.__aexit__(exc_type, exc, tb)
