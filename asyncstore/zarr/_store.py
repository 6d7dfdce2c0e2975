"""`ZarrStore`: a ``zarr.abc.store.Store`` over asyncstore Stores.

Chunk keys are object keys below the store's root URL. Reads map zarr's
byte requests onto `Store.get` (range, offset, or suffix); a whole-object
read is verified against its recorded sha256. Writes are `Store.put`;
``set_if_not_exists`` is ``put(mode="create")``, atomic on every backend
(zarr's default is exists-then-set, which two writers can both pass).

zarr calls a store from the loop of whoever drives it: its own IO thread for
the synchronous API, or the caller's loop for ``zarr.api.asynchronous``. The
store keeps one asyncstore Store per loop, made on first use there (HTTP
clients belong to one loop), and is picklable (to Dask workers, say) as its
URL and options, without secrets.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
)
from zarr.abc.store import Store as _ZarrStoreBase
from zarr.core.buffer import Buffer, BufferPrototype

from .. import (
    AlreadyExistsError,
    CommonPrefix,
    ConfigurationError,
    NotFoundError,
    ObjectInfo,
    Store,
    open_store,
)
from .._errors import redact_url
from .._loopstores import LoopStores, close_on_loops, current_loop
from .._stream._tasks import task_group

__all__ = ["ZarrStore"]

_SECRET_OPTIONS = frozenset({"account_key", "sas_token", "connection_string", "credential"})
_DELETE_BATCH = 1000


class ZarrStore(_ZarrStoreBase):
    """A zarr v3 store over any asyncstore store URL (or a `Store`).

    Args:
        root: A store URL (``memory://name``, ``file:///srv/zarr``,
            ``s3://bucket/prefix``, ``gs://...``, ``az://...``), or a `Store`
            (not picklable, and used only on the loop its clients belong to).
        read_only: Refuse every write with zarr's ValueError.
        **options: As for `open_store` (``endpoint``, ``chunk_size``, ...).

    Raises:
        ConfigurationError: ``root`` is neither a store URL nor a Store; a bad
            URL or option is reported when the store is first used.
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, root: str | Store, *, read_only: bool = False, **options: Any) -> None:
        super().__init__(read_only=read_only)
        self._root = root
        self._options = options
        self._fixed: Store | None = None
        if isinstance(root, Store):
            self._fixed = root
        elif not isinstance(root, str) or "://" not in root:
            raise ConfigurationError(
                f"root must be a store URL like s3://bucket/prefix or a Store, not {root!r:.80}",
                key="root",
            )
        elif root.split("://")[0].lower() == "memory":
            # No loop-bound clients, and every loop must see the same objects.
            self._fixed = open_store(root, **options)
        self._stores = LoopStores(functools.partial(_open, str(root), options))
        # Clients left open when the store is dropped are closed on their loop if it still
        # runs (zarr's IO loop), else set aside: never left to the garbage collector.
        weakref.finalize(self, _release, self._stores)

    # -- identity, pickling, life cycle --------------------------------------------------------

    def __repr__(self) -> str:
        root = self._root if isinstance(self._root, Store) else redact_url(self._root)
        return f"ZarrStore({root!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ZarrStore)
            and (
                self._root is other._root
                if isinstance(self._root, Store)
                else self._root == other._root and self._options == other._options
            )
            and self.read_only == other.read_only
        )

    def __hash__(self) -> int:
        return hash((id(self._root) if isinstance(self._root, Store) else self._root,))

    def __getstate__(self) -> dict[str, Any]:
        if isinstance(self._root, Store):
            raise ConfigurationError(
                "a ZarrStore built over a Store instance cannot be pickled; "
                "build it from the store's URL instead",
                key="root",
            )
        secrets = sorted(_SECRET_OPTIONS & set(self._options))
        if secrets:
            raise ConfigurationError(
                f"this ZarrStore holds the secret option {secrets[0]!r}, which asyncstore "
                "does not pickle; give it through the environment instead",
                key=secrets[0],
            )
        return {"root": self._root, "options": self._options, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], read_only=state["read_only"], **state["options"])  # type: ignore[misc]

    def with_read_only(self, read_only: bool = False) -> ZarrStore:
        """The same location, opened read-only (or writable)."""
        return ZarrStore(self._root, read_only=read_only, **self._options)

    def close(self) -> None:
        """Close the asyncstore Stores made on other threads' loops (zarr's IO loop)."""
        close_on_loops(self._stores.take_all())
        super().close()

    async def aclose(self) -> None:
        """Close the asyncstore Store made on the running loop."""
        for store in self._stores.take_for(current_loop()):
            await store.aclose()
        super().close()

    async def _store(self) -> Store:
        if self._fixed is not None:
            return self._fixed
        return await self._stores.get("")

    # -- reading -------------------------------------------------------------------------------

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """The bytes at ``key`` (or the requested part of them); None if it does not exist."""
        if not self._is_open:
            await self._open()
        store = await self._store()
        try:
            if byte_range is None:
                data = await store.get(key)
            elif isinstance(byte_range, RangeByteRequest):
                data = await store.get(key, start=byte_range.start, end=byte_range.end)
            elif isinstance(byte_range, OffsetByteRequest):
                data = await store.get(key, start=byte_range.offset)
            elif isinstance(byte_range, SuffixByteRequest):
                data = await store.get(key, suffix=byte_range.suffix)
            else:
                raise TypeError(f"Unexpected byte_range, got {byte_range}")
        except NotFoundError:
            return None
        buffer: Buffer = prototype.buffer.from_bytes(data)
        return buffer

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Several (partial) values, read concurrently; None for each missing key."""
        requests = list(key_ranges)
        out: list[Buffer | None] = [None] * len(requests)

        async def one(index: int, key: str, byte_range: ByteRequest | None) -> None:
            out[index] = await self.get(key, prototype, byte_range)

        async with task_group() as tg:
            for index, (key, byte_range) in enumerate(requests):
                tg.start_soon(one, index, key, byte_range)
        return out

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        wanted = list(requests)
        out: list[Buffer | None] = [None] * len(wanted)

        async def one(index: int) -> None:
            out[index] = await self.get(*wanted[index])

        async with task_group() as tg:
            for index in range(len(wanted)):
                tg.start_soon(one, index)
        for (key, _, _), value in zip(wanted, out, strict=True):
            yield key, value

    async def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        return await (await self._store()).exists(key)

    async def getsize(self, key: str) -> int:
        """The size of the object at ``key``, from its metadata (FileNotFoundError if missing)."""
        return (await (await self._store()).head(key)).size

    async def getsize_prefix(self, prefix: str) -> int:
        """The total size of the objects below ``prefix``, from one listing."""
        total = 0
        async for entry in (await self._store()).list(_as_dir(prefix)):
            if isinstance(entry, ObjectInfo):
                total += entry.size
        return total

    # -- writing -------------------------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key``, recording its sha256."""
        if not self._is_open:
            await self._open()
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(
                f"ZarrStore.set(): `value` must be a Buffer instance. Got an instance of "
                f"{type(value)} instead."
            )
        await (await self._store()).put(key, value.as_buffer_like())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Write ``value`` at ``key`` only if nothing is there: an atomic create."""
        self._check_writable()
        with contextlib.suppress(AlreadyExistsError):  # something is there: keep it
            await (await self._store()).put(key, value.as_buffer_like(), mode="create")

    async def _set_many(self, values: Iterable[tuple[str, Buffer]]) -> None:
        async with task_group() as tg:
            for key, value in values:
                tg.start_soon(self.set, key, value)

    async def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error."""
        self._check_writable()
        await (await self._store()).delete(key)

    async def delete_dir(self, prefix: str) -> None:
        """Delete every object below ``prefix``, in batches."""
        self._check_writable()
        store = await self._store()
        batch: list[str] = []
        async for entry in store.list(_as_dir(prefix)):
            assert isinstance(entry, ObjectInfo)
            batch.append(entry.key)
            if len(batch) == _DELETE_BATCH:
                await store.delete_many(batch)
                batch = []
        if batch:
            await store.delete_many(batch)

    # -- listing -------------------------------------------------------------------------------

    async def list(self) -> AsyncIterator[str]:
        """Every key in the store."""
        async for entry in (await self._store()).list(""):
            assert isinstance(entry, ObjectInfo)
            yield entry.key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Every key that starts with ``prefix``."""
        async for entry in (await self._store()).list(prefix):
            assert isinstance(entry, ObjectInfo)
            yield entry.key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """The names directly below ``prefix``: its objects and its "directories"."""
        below = _as_dir(prefix)
        async for entry in (await self._store()).list(below, delimiter="/"):
            if isinstance(entry, CommonPrefix):
                yield entry.prefix[len(below) :].rstrip("/")
            else:
                yield entry.key[len(below) :]


def _open(root: str, options: dict[str, Any], _: str) -> Store:
    return open_store(root, **options)


def _release(stores: LoopStores) -> None:
    close_on_loops(stores.take_all(), timeout=1.0)


def _as_dir(prefix: str) -> str:
    prefix = prefix.rstrip("/")
    return f"{prefix}/" if prefix else ""
