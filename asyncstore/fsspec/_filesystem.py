"""`AsyncStoreFileSystem`: an fsspec AsyncFileSystem over asyncstore Stores.

Two ways to name things:

* **Rooted**: ``AsyncStoreFileSystem("file:///srv/data")`` (or a `Store`):
  every path is a key of that one store (``"tables/a.parquet"``).
* **Per bucket**: the ``asyncstore+<scheme>`` protocols
  (``asyncstore+s3://bucket/key``), whose first path segment is the bucket
  (container, memory-store name) and the rest the key, as with s3fs, gcsfs
  and adlfs. One store is opened per bucket, with the filesystem's options.

Object stores have no directories: a "directory" is a prefix that some key
starts with, ``mkdir`` and ``makedirs`` do nothing, and an empty directory
does not exist.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import fsspec
import fsspec.asyn
import fsspec.spec
from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from .. import (
    CommonPrefix,
    ConfigurationError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRangeError,
    NotFoundError,
    ObjectInfo,
    RetryPolicy,
    Store,
    open_store,
)
from .._errors import redact_url
from .._loopstores import LoopStores, close_on_loops
from .._stream._tasks import task_group
from ._file import AsyncStoreFile

__all__ = [
    "AsyncStoreAzureFileSystem",
    "AsyncStoreFileSystem",
    "AsyncStoreGCSFileSystem",
    "AsyncStoreMemoryFileSystem",
    "AsyncStoreS3FileSystem",
    "register",
]

#: Backend options that hold a secret: never pickled (see __reduce__).
_SECRET_OPTIONS = frozenset(
    {"account_key", "sas_token", "connection_string", "credential", "token", "secret", "key"}
)
#: fsspec-style option names (s3fs, gcsfs, adlfs) and asyncstore's names for them.
_ALIASES: dict[str, dict[str, str]] = {
    "s3": {"endpoint_url": "endpoint", "region_name": "region"},
    "gs": {"endpoint_url": "api_root", "token": "service_file"},
    "az": {"account_name": "account"},
}
_S3_CREDENTIALS = ("key", "secret", "token", "anon", "profile")
#: Default size below which a file opened for reading is read whole (and so verified).
FULL_READ_THRESHOLD = 16 * 2**20
#: Default block size of a file opened for writing: the size of its parts, and the
#: size below which it is one PUT (s3fs: 50 MiB). 16 MiB, not 32: with the default
#: window (8 MiB x 8) four parts are in flight, not two, and a 277 MB ``to_parquet``
#: took 0.59 s against 0.64 on the loopback responder, 1.46-1.59 against 1.77-2.02
#: on moto (docs/datastack.md).
WRITE_BLOCK_SIZE = 16 * 2**20


class _CachedUnlessStore(fsspec.spec._Cached):  # type: ignore[misc]
    """fsspec's instance cache keys on ``repr`` of the arguments, and two Stores can
    look alike; a filesystem built over a Store instance is therefore never cached."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if any(isinstance(a, Store) for a in (*args, *kwargs.values())):
            kwargs["skip_instance_cache"] = True
        return super().__call__(*args, **kwargs)


def _strip(path: str) -> str:
    scheme, sep, rest = path.partition("://")
    if sep and scheme and "/" not in scheme:
        path = rest
    return path.strip("/")


def _translate_options(scheme: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """fsspec-style storage options as asyncstore's backend options."""
    out: dict[str, Any] = {}
    aliases = _ALIASES.get(scheme or "", {})
    for name, value in options.items():
        if scheme == "s3" and name in _S3_CREDENTIALS:
            raise ConfigurationError(
                f"option {name!r}: asyncstore's S3 backend takes credentials only from the "
                "standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                "instance roles), never as options, so they are never pickled or logged",
                key=name,
            )
        if name == "client_kwargs" and isinstance(value, Mapping):
            out.update(_translate_options(scheme, value))
            continue
        out[aliases.get(name, name)] = value
    return out


class AsyncStoreFileSystem(fsspec.asyn.AsyncFileSystem, metaclass=_CachedUnlessStore):  # type: ignore[misc]
    """An fsspec filesystem over asyncstore: verified reads, streamed writes, any backend.

    Built over one store, where paths are its keys:

        fs = AsyncStoreFileSystem("s3://bucket/prefix", endpoint="http://127.0.0.1:9000")
        fs.pipe_file("a/b.bin", b"...")

    or, through the ``asyncstore+<scheme>`` protocols (``asyncstore+s3``,
    ``asyncstore+gs``, ``asyncstore+az``, ``asyncstore+memory``), over one
    store per bucket, where paths are ``bucket/key``:

        fs = fsspec.filesystem("asyncstore+s3", endpoint_url="http://127.0.0.1:9000")
        fs.cat_file("bucket/a/b.bin")

    Whole-object reads (``cat_file``, ``get_file``, and files opened for
    reading that are read whole or in order) are verified against the sha256
    recorded at upload: a mismatch raises asyncstore's `DigestMismatchError`.

    Args:
        root: A store URL (``memory://``, ``file:///srv/data``, ``s3://bucket/prefix``,
            ...) or a `Store`; None with the per-bucket protocol classes.
        chunk_size: The stores' part / range size (default: the backend's).
        max_concurrency: Parts / ranges in flight per transfer (default: the backend's).
        retry: The stores' `RetryPolicy`.
        timeout: Seconds one store call may take in all.
        block_size: Buffer size of files opened with `open`. Reading: the least a
            read that misses fetches (default: ``chunk_size``, else 8 MiB; a reader
            going on in order reads further ahead, up to 128 MiB). Writing: the
            part size, and the size below which a file is one PUT (default:
            ``chunk_size`` if larger, else 16 MiB).
        full_read_threshold: Files opened for reading whose size is at most this
            are read whole on first access (one verified transfer, then served from
            memory); larger ones are read in ranges with readahead and verified
            when read in order to the end. Default 16 MiB.
        asynchronous: fsspec's flag: True when calling the ``_``-prefixed
            coroutine methods from your own event loop (asyncio or trio).
        loop: fsspec's IO loop, for ``asynchronous=False`` (default: fsspec's).
        batch_size: How many coroutines fsspec's bulk methods run at once.
        **options: Backend options, as for `open_store`; fsspec's names are
            accepted too (``endpoint_url`` and ``client_kwargs`` for S3,
            ``endpoint_url`` for GCS, ``account_name`` for Azure).

    Raises:
        ConfigurationError: no root on the generic class, a bad root or option
            (when the first store is opened), or credentials given as options for S3.
    """

    protocol: ClassVar[str | tuple[str, ...]] = ("asyncstore",)
    root_marker = ""
    #: The URL scheme of the per-bucket protocol classes (None: rooted).
    scheme: ClassVar[str | None] = None

    def __init__(
        self,
        root: str | Store | None = None,
        *,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        block_size: int | None = None,
        full_read_threshold: int = FULL_READ_THRESHOLD,
        asynchronous: bool = False,
        loop: Any = None,
        batch_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(asynchronous=asynchronous, loop=loop, batch_size=batch_size)
        given = {
            "chunk_size": chunk_size,
            "max_concurrency": max_concurrency,
            "retry": retry,
            "timeout": timeout,
        }
        self._store_options = {k: v for k, v in given.items() if v is not None}
        self._backend_options = _translate_options(self._root_scheme(root), options)
        self._fixed: Store | None = None
        self._given_store = isinstance(root, Store)
        self._root_url: str | None = None
        if isinstance(root, Store):
            self._fixed = root
        elif isinstance(root, str):
            if "://" not in root:
                raise ConfigurationError(
                    f"root must be a store URL like s3://bucket/prefix, not {redact_url(root)!r}",
                    key=redact_url(root),
                )
            self._root_url = root
            if root.split("://")[0].lower() == "memory":
                # A memory store has no clients tied to a loop, and every loop must see
                # the same objects: one store for all of them.
                self._fixed = self._open_root("")
        elif root is not None:
            raise ConfigurationError(
                f"root must be a store URL or an asyncstore Store, not {type(root).__name__}",
                key="root",
            )
        elif self.scheme is None:
            raise ConfigurationError(
                "AsyncStoreFileSystem needs a root (a store URL or a Store), or use one of "
                "the asyncstore+<scheme> protocols (asyncstore+s3://bucket/key, ...)",
                key="root",
            )
        self.blocksize: int = block_size or chunk_size or 8 * 2**20
        #: Block (and part) size of files opened for writing.
        self.write_blocksize: int = block_size or max(chunk_size or 0, WRITE_BLOCK_SIZE)
        self.full_read_threshold: int = full_read_threshold
        for name, value in (
            ("block_size", self.blocksize),
            ("full_read_threshold", self.full_read_threshold),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(
                    f"{name} must be an integer number of bytes, not {value!r}", key=name
                )
        # The opener holds no reference to self, so that the finalizer can run.
        self._stores = LoopStores(_RootOpener(self))
        weakref.finalize(self, _close_stores, self._stores)

    # -- stores, paths ------------------------------------------------------------------------

    def _root_scheme(self, root: object) -> str | None:
        if isinstance(root, str) and "://" in root:
            return {"gcs": "gs", "azure": "az", "abfs": "az"}.get(
                root.split("://")[0].lower(), root.split("://")[0].lower()
            )
        return self.scheme

    def _open_root(self, bucket: str) -> Store:
        return _RootOpener(self)(bucket)

    async def _store(self, bucket: str) -> Store:
        if self._fixed is not None:
            return self._fixed
        return await self._stores.get(bucket)

    def _split(self, path: str) -> tuple[str, str]:
        """``path`` as (bucket, key); the bucket is "" when the filesystem is rooted."""
        path = self._strip_protocol(path)
        if self.scheme is None or self._root_url is not None or self._fixed is not None:
            return "", path
        bucket, _, key = path.partition("/")
        return bucket, key

    def _join(self, bucket: str, key: str) -> str:
        if not bucket:
            return key
        return f"{bucket}/{key}" if key else bucket

    async def _locate(self, path: str) -> tuple[str, Store, str]:
        bucket, key = self._split(path)
        return bucket, await self._store(bucket), key

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return _strip(fsspec.utils.stringify_path(path))

    @property
    def loop(self) -> Any:
        """fsspec's IO loop; after a fork, the child's (its Stores are then made anew)."""
        if self._pid != os.getpid():  # type: ignore[has-type]
            self._stores.reset_after_fork()
            self._pid = os.getpid()
            if not self.asynchronous:
                self._loop = fsspec.asyn.get_loop()
        return self._loop

    # -- life cycle, pickling -----------------------------------------------------------------

    async def _aclose(self) -> None:
        """Close the Stores made on the running loop (their HTTP clients)."""
        from .._loopstores import current_loop

        for store in self._stores.take_for(current_loop()):
            await store.aclose()

    def close(self) -> None:
        """Close every Store this filesystem made, on the loops that made them.

        Call ``await fs._aclose()`` instead from inside a running loop.
        """
        close_on_loops(self._stores.take_all())

    def __reduce__(self) -> Any:
        if self._given_store:
            raise ConfigurationError(
                "a filesystem built over a Store instance cannot be pickled (its clients "
                "belong to this process); build it from the store's URL instead",
                key="root",
            )
        secrets = sorted(_SECRET_OPTIONS & set(self._backend_options))
        if secrets:
            raise ConfigurationError(
                f"this filesystem holds the secret option {secrets[0]!r}, which asyncstore "
                "does not pickle; give it through the environment instead (e.g. "
                "AZURE_STORAGE_CONNECTION_STRING, GOOGLE_APPLICATION_CREDENTIALS), where "
                "each process resolves it itself",
                key=secrets[0],
            )
        return super().__reduce__()

    # -- metadata -----------------------------------------------------------------------------

    def _file_entry(self, bucket: str, info: ObjectInfo) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self._join(bucket, info.key),
            "size": info.size,
            "type": "file",
            "etag": info.etag,
            "sha256": info.sha256,
            "content_type": info.content_type,
            "metadata": dict(info.metadata),
        }
        if info.last_modified is not None:
            entry["LastModified"] = info.last_modified
            entry["mtime"] = info.last_modified.timestamp()
        return entry

    def _dir_entry(self, name: str) -> dict[str, Any]:
        return {"name": name, "size": 0, "type": "directory"}

    async def _head(self, store: Store, key: str) -> ObjectInfo | None:
        try:
            return await store.head(key)
        except NotFoundError:
            return None

    async def _has_children(self, store: Store, key: str) -> bool:
        prefix = f"{key}/" if key else ""
        entries = store.list(prefix, delimiter="/")
        try:
            async for _ in entries:
                return True
        except NotFoundError:
            return False
        finally:
            await entries.aclose()  # type: ignore[attr-defined]
        return False

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        bucket, store, key = await self._locate(path)
        name = self._join(bucket, key)
        if not key:
            return self._dir_entry(name)
        info = await self._head(store, key)
        if info is not None:
            return self._file_entry(bucket, info)
        if await self._has_children(store, key):
            return self._dir_entry(name)
        raise NotFoundError(f"no such file or directory: {name!r}", key=name)

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except (NotFoundError, InvalidKeyError):
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        bucket, store, key = await self._locate(path)
        prefix = f"{key}/" if key else ""
        out: list[dict[str, Any]] = []
        try:
            async for entry in store.list(prefix, delimiter="/"):
                if isinstance(entry, CommonPrefix):
                    out.append(self._dir_entry(self._join(bucket, entry.prefix.rstrip("/"))))
                else:
                    out.append(self._file_entry(bucket, entry))
        except NotFoundError:
            if not key:
                raise
        if not out and key:
            info = await self._head(store, key)
            if info is None:
                name = self._join(bucket, key)
                raise NotFoundError(f"no such file or directory: {name!r}", key=name)
            out.append(self._file_entry(bucket, info))
        return out if detail else [entry["name"] for entry in out]

    async def _find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every file below ``path`` (and the directories, with ``withdirs``), from one listing."""
        detail = kwargs.pop("detail", False)
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        bucket, store, key = await self._locate(path)
        prefix = f"{key}/" if key else ""
        out: dict[str, dict[str, Any]] = {}
        try:
            async for entry in store.list(prefix):
                assert isinstance(entry, ObjectInfo)
                parts = entry.key[len(prefix) :].split("/")
                if withdirs:
                    for depth in range(1, len(parts)):
                        if maxdepth is not None and depth > maxdepth:
                            break
                        name = self._join(bucket, prefix + "/".join(parts[:depth]))
                        out.setdefault(name, self._dir_entry(name))
                if maxdepth is None or len(parts) <= maxdepth:
                    out[self._join(bucket, entry.key)] = self._file_entry(bucket, entry)
        except NotFoundError:
            if not key:
                raise
        if key:
            if out and withdirs:
                name = self._join(bucket, key)
                out[name] = self._dir_entry(name)
            elif not out:
                info = await self._head(store, key)
                if info is not None:
                    out[self._join(bucket, key)] = self._file_entry(bucket, info)
        names = sorted(out)
        return {name: out[name] for name in names} if detail else names

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: object stores have no directories."""

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Nothing to do: object stores have no directories."""

    def checksum(self, path: str) -> int:
        """The sha256 recorded at upload, as an int (the ETag's hash when none was recorded)."""
        return int(self.ukey(path), 16)

    def ukey(self, path: str) -> str:
        """A key that changes whenever the content does: the recorded sha256's hex digits."""
        info = self.info(path)
        sha = info.get("sha256")
        if sha:
            return str(sha).partition(":")[2]
        return hashlib.sha256(f"{info['name']}:{info.get('etag')}".encode()).hexdigest()

    # -- reading ------------------------------------------------------------------------------

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """The object's bytes, or ``[start, end)`` of them; negative bounds count from the end.

        A whole-object read is verified against the recorded sha256.
        """
        _, store, key = await self._locate(path)
        for name, value in (("start", start), ("end", end)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidRangeError(
                    f"{name} for {path!r} must be an int or None, not {value!r}", key=key
                )
        if start is not None and start < 0 and end is None:
            return await store.get(key, suffix=-start)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = (await store.head(key)).size
            start = None if start is None else max(0, start + size if start < 0 else start)
            end = None if end is None else max(0, end + size if end < 0 else end)
        if start is not None and end is not None and end <= start:
            await store.head(key)  # a missing object is still an error
            return b""
        try:
            return await store.get(key, start=start, end=end)
        except InvalidRangeError:
            if start is not None and start > 0 and (await store.head(key)).size <= start:
                return b""  # fsspec reads past the end as empty, like Python files
            raise

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: int | list[int] | None,
        ends: int | list[int] | None,
        max_gap: int | None = None,
        batch_size: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """Byte ranges of one or more files, read concurrently (the stores bound requests)."""
        if not isinstance(paths, list):
            raise TypeError("paths must be a list")
        count = len(paths)
        starts_ = list(starts) if isinstance(starts, Iterable) else [starts] * count
        ends_ = list(ends) if isinstance(ends, Iterable) else [ends] * count
        if len(starts_) != count or len(ends_) != count:
            raise ValueError("paths, starts and ends must have the same length")
        out: list[Any] = [None] * count
        limit = anyio.CapacityLimiter(batch_size or self.batch_size or 256)

        async def one(index: int) -> None:
            async with limit:
                try:
                    out[index] = await self._cat_file(
                        paths[index], start=starts_[index], end=ends_[index]
                    )
                except Exception as exc:
                    if on_error != "return":
                        raise
                    out[index] = exc

        async with task_group() as tg:
            for index in range(count):
                tg.start_soon(one, index)
        return out

    async def _read_range(self, path: str, start: int, end: int, etag: str | None) -> bytes:
        """``[start, end)`` of the version whose ETag is ``etag`` (a span of an open file),
        as one ranged read: an open file's readahead makes its spans large and few."""
        _, store, key = await self._locate(path)
        return await store.get(
            key, start=start, end=end, if_match=etag, chunk_size=max(store.chunk_size, end - start)
        )

    async def _get_file(
        self, rpath: str, lpath: str, callback: Callback = DEFAULT_CALLBACK, **kwargs: Any
    ) -> None:
        """Download to a local file, atomically and verified, feeding ``callback``."""
        _, store, key = await self._locate(rpath)
        if await anyio.to_thread.run_sync(os.path.isdir, lpath):
            return
        try:
            await store.download_file(key, lpath, progress=_progress(callback))
        except NotFoundError:
            if key and await self._has_children(store, key):  # a directory
                await anyio.to_thread.run_sync(lambda: os.makedirs(lpath, exist_ok=True))
                return
            raise

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncStoreFile:
        return AsyncStoreFile(
            self,
            path,
            mode,
            block_size=block_size or (self.blocksize if mode == "rb" else self.write_blocksize),
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )

    # -- writing ------------------------------------------------------------------------------

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        """Write ``value`` at ``path`` (``mode="create"``: FileExistsError if it exists)."""
        _, store, key = await self._locate(path)
        await store.put(key, value, mode=_put_mode(mode, path))

    async def _put_file(
        self,
        lpath: str,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        """Upload a local file (streamed in parts, hashed on the way), feeding ``callback``."""
        if await anyio.to_thread.run_sync(os.path.isdir, lpath):
            return  # directories exist only through the keys below them
        _, store, key = await self._locate(rpath)
        await store.upload_file(
            lpath, key, mode=_put_mode(mode, rpath), progress=_progress(callback)
        )

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy an object: server-side within a store, else streamed between the two."""
        bucket1, store1, key1 = await self._locate(path1)
        bucket2, store2, key2 = await self._locate(path2)
        if bucket1 == bucket2:
            await store1.copy(key1, key2)
            return
        info = await store1.head(key1)
        body = store1.stream(key1)
        await store2.put(key2, _chunks(body), content_type=info.content_type)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        _, store, key = await self._locate(path)
        await store.delete(key)

    async def _rm(
        self,
        path: str | list[str],
        recursive: bool = False,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Delete files (every file below a directory with ``recursive``), batched per store."""
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        by_bucket: dict[str, list[str]] = {}
        for name in paths:
            bucket, key = self._split(name)
            if key:
                by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            store = await self._store(bucket)
            present = set(keys)
            files = [key for key in keys if not _is_prefix_of_another(key, present)]
            await store.delete_many(files)


class _RootOpener:
    """Opens the store of a bucket (or the root) with a filesystem's options."""

    def __init__(self, fs: AsyncStoreFileSystem) -> None:
        self.root_url = fs._root_url
        self.scheme = fs.scheme
        self.protocol = fs.protocol[0]
        self.options = {**fs._store_options, **fs._backend_options}

    def __call__(self, bucket: str) -> Store:
        if self.root_url is not None:
            return open_store(self.root_url, **self.options)
        if not bucket:
            raise InvalidArgumentError(
                f"a path of the {self.protocol} filesystem starts with a bucket: "
                f"{self.protocol}://bucket/key",
                key="",
            )
        return open_store(f"{self.scheme}://{bucket}", **self.options)


def _is_prefix_of_another(key: str, keys: set[str]) -> bool:
    # A "directory" found by expand_path: a key with others below it. (An object and a
    # directory of the same name cannot both exist on a file system backend; on the
    # cloud backends deleting the directory's name, absent as an object, is harmless.)
    return any(other.startswith(key + "/") for other in keys)


async def _chunks(body: Any) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk


def _put_mode(mode: str, path: str) -> Any:
    if mode not in ("overwrite", "create"):
        raise InvalidArgumentError(
            f"mode for {path!r} must be 'overwrite' or 'create', not {mode!r}", key=path
        )
    return mode


def _progress(callback: Callback) -> Callable[[int, int | None], None]:
    sized = False

    def report(done: int, total: int | None) -> None:
        nonlocal sized
        if not sized and total is not None:
            callback.set_size(total)
            sized = True
        callback.absolute_update(done)

    return report


def _close_stores(stores: LoopStores) -> None:
    close_on_loops(stores.take_all(), timeout=1.0)


# -- the per-bucket protocol classes -----------------------------------------------------------


class AsyncStoreS3FileSystem(AsyncStoreFileSystem):
    """``asyncstore+s3://bucket/key``: S3 through asyncstore, one store per bucket."""

    protocol = ("asyncstore+s3",)
    scheme = "s3"


class AsyncStoreGCSFileSystem(AsyncStoreFileSystem):
    """``asyncstore+gs://bucket/key``: Google Cloud Storage through asyncstore."""

    protocol = ("asyncstore+gs", "asyncstore+gcs")
    scheme = "gs"


class AsyncStoreAzureFileSystem(AsyncStoreFileSystem):
    """``asyncstore+az://container/key``: Azure Blob Storage through asyncstore."""

    protocol = ("asyncstore+az", "asyncstore+abfs")
    scheme = "az"


class AsyncStoreMemoryFileSystem(AsyncStoreFileSystem):
    """``asyncstore+memory://name/key``: the in-process named memory stores."""

    protocol = ("asyncstore+memory",)
    scheme = "memory"


_BY_PROTOCOL: dict[str, type[AsyncStoreFileSystem]] = {
    "s3": AsyncStoreS3FileSystem,
    "s3a": AsyncStoreS3FileSystem,
    "gs": AsyncStoreGCSFileSystem,
    "gcs": AsyncStoreGCSFileSystem,
    "az": AsyncStoreAzureFileSystem,
    "abfs": AsyncStoreAzureFileSystem,
    "memory": AsyncStoreMemoryFileSystem,
}


def register(protocols: Iterable[str] = ("s3", "gs", "az")) -> None:
    """Serve the plain protocols (``s3://``, ``gs://``, ``az://``) with asyncstore.

    After ``register(("s3",))``, ``pandas.read_parquet("s3://bucket/t.parquet")``,
    ``dask.dataframe.read_parquet(...)`` and every other fsspec user reach S3
    through asyncstore, with the same ``storage_options`` (``endpoint_url``,
    ``client_kwargs``, ...). It replaces the implementation fsspec had for
    those protocols (s3fs, gcsfs, adlfs) in this process only.

    Args:
        protocols: Any of ``s3``, ``s3a``, ``gs``, ``gcs``, ``az``, ``abfs``, ``memory``.

    Raises:
        ConfigurationError: a protocol asyncstore does not serve.
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    chosen = list(protocols)
    for name in chosen:
        if name not in _BY_PROTOCOL:
            raise ConfigurationError(
                f"asyncstore cannot serve the fsspec protocol {name!r}; "
                f"it serves {', '.join(sorted(_BY_PROTOCOL))}",
                key=name,
            )
    for name in chosen:
        fsspec.register_implementation(name, _BY_PROTOCOL[name], clobber=True)
