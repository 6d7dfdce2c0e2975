"""`AsyncStoreFile`: the file object of ``fs.open()``, reading ranges and streaming writes.

Reading: a file no larger than the filesystem's ``full_read_threshold`` is
read whole on first access, in one verified transfer, and served from memory
(a Parquet reader's many small reads then cost one request, and the sha256 is
checked). A larger file is read in spans (`_SpanCache`): a read that misses
fetches ``[start, max(end, start + block_size))`` as concurrent ranged reads
(the Store's ``chunk_size`` ranges, ``max_concurrency`` in flight), so a
Parquet reader's column-chunk reads of tens of MiB are parallel and a CSV
reader's small reads share a block; the span is kept as the pieces the Store
handed over, and a read is one copy out of them. Every span must come from
the version that was opened (its ETag). When the spans cover the file in
order to its end (a CSV reader, ``f.read()``, and a Parquet reader reading
every column: the few bytes it skips before a span are fetched with it, and
the footer it read first is kept), their sha256 is checked against the one
recorded at upload.

Writing (``wb``, or ``xb`` to create only): bytes are buffered up to the
block size (for written files, default 16 MiB) and then handed, one block at
a time, to one streaming `put` on the filesystem's loop, which uploads them
as a multipart upload in parts of the block size (parts in parallel, no more
bytes in flight than the store's window, sha256 computed on the way). A file
smaller than a block is one PUT at close. Memory stays bounded: the block
being filled, one block in hand-over, and the upload's window. Nothing is visible
at the path until ``close()``; leaving a ``with`` block by an exception
aborts the upload instead of committing part of the file.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import mmap
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import fsspec.asyn
import fsspec.spec

from .. import AlreadyExistsError, DigestMismatchError, InvalidArgumentError, LentBuffer, PutResult

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._filesystem import AsyncStoreFileSystem

__all__ = ["AsyncStoreFile"]

#: A span that starts at most this far past the verified prefix is fetched from it,
#: so that a reader which skips a few bytes (Parquet's leading magic) stays verifiable.
_HASH_GAP = 64 * 1024
#: Spans read ahead of the verified prefix (a Parquet footer, read first) of at most
#: this size are kept, up to `_AHEAD_BUDGET` bytes in all, to be hashed when reached.
_AHEAD_PIECE = 1024 * 1024
_AHEAD_BUDGET = 4 * 1024 * 1024
#: The most a sequential reader's span grows to (it doubles, from twice the block size
#: or its first read).
_READAHEAD_MAX = 128 * 1024 * 1024


class _SpanCache(fsspec.caching.BaseCache):  # type: ignore[misc]
    """fsspec's cache for a large file: the last span fetched, one ``bytes``.

    A read inside the span is a slice of it (a ``memoryview``, no copy, for
    `AsyncStoreFile.read_buffer`); a read past it fetches from where the span
    ends (or from the read's start) on: no overlap with what is held.
    """

    name = "asyncstore-spans"

    def __init__(self, blocksize: int, fetcher: Any, size: int) -> None:
        super().__init__(blocksize, fetcher, size)
        self._start = 0
        self._data = b""
        self._end = 0

    def view(self, start: int, end: int) -> bytes | memoryview:
        """The bytes ``[start, end)`` (clamped to the file): a view when they are held."""
        end = min(end, self.size)
        if start >= end:
            return b""
        self.total_requested_bytes += end - start
        if self._start <= start and end <= self._end:
            self.hit_count += 1
            return self._slice(start, end)
        self.miss_count += 1
        head = self._slice(start, self._end) if self._start <= start < self._end else b""
        fetch_from = self._end if head else start
        self._start, self._data = self.fetcher(fetch_from, end)
        self._end = self._start + len(self._data)
        rest = self._slice(fetch_from, end)
        return bytes(head) + rest if head else rest

    def _slice(self, start: int, end: int) -> bytes | memoryview:
        lo, hi = start - self._start, min(end, self._end) - self._start
        if lo == 0 and hi == len(self._data):
            return self._data
        return memoryview(self._data)[lo:hi]

    def _fetch(self, start: int | None, end: int | None) -> bytes:
        data = self.view(0 if start is None else start, self.size if end is None else end)
        return data if isinstance(data, bytes) else bytes(data)


class _StreamingPut:
    """One `Store.put` fed block by block from another thread; lives on one asyncio loop."""

    def __init__(self, fs: AsyncStoreFileSystem, path: str, mode: str, blocks: _Blocks) -> None:
        self._fs = fs
        self._path = path
        self._mode = mode
        self._blocks = blocks
        self._send: MemoryObjectSendStream[_BlockBuffer | io.BytesIO] | None = None
        self._task: asyncio.Task[PutResult] | None = None

    async def start(self, part_size: int) -> None:
        _, store, key = await self._fs._locate(self._path)  # on the loop that will use it
        send, receive = anyio.create_memory_object_stream[_BlockBuffer | io.BytesIO](1)
        self._send = send
        # Parts of the file's block size (fewer requests: a server such as moto pays for
        # each part), with no more bytes in flight than the store's own window.
        part = max(store.chunk_size, part_size)
        window = max(2, store.chunk_size * store.max_concurrency // part)

        async def run() -> PutResult:
            with receive:
                return await store.put(
                    key,
                    self._blocks.chunks(receive),
                    mode=self._mode,  # type: ignore[arg-type]
                    chunk_size=part,
                    max_concurrency=window,
                )

        # Owned by this object: awaited by finish() or abort(), which the file always calls.
        self._task = asyncio.get_running_loop().create_task(run())

    async def feed(self, data: _BlockBuffer | io.BytesIO) -> None:
        assert self._send is not None
        assert self._task is not None
        try:
            await self._send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._task  # the put ended early: raise its error
            raise

    async def finish(self) -> PutResult:
        assert self._send is not None
        assert self._task is not None
        await self._send.aclose()
        return await self._task

    async def abort(self) -> None:
        if self._send is not None:
            self._send.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            # The upload's own error, or its cancellation, is what the abort asked for.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class _BlockBuffer:
    """A file's write buffer for one block, written in place and handed on as a view.

    fsspec's ``io.BytesIO`` grows by reallocation as writes arrive and each block is a
    fresh one, so every block's pages were faulted in anew, then copied out by
    ``getvalue``: 0.7 CPU s/GiB on this machine, more than the sha256 of the same
    bytes. A file's block buffers are reused instead (`_Blocks`): 0.17 CPU s/GiB.
    The buffer is an anonymous mapping, whose pages the kernel provides as they are
    first written: a small file's block costs the pages it uses, not its full size.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self, size: int) -> None:
        self._buf = memoryview(mmap.mmap(-1, max(size, 1)))
        self._pos = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        end = self._pos + len(view)
        if end > len(self._buf):  # more than a block (the file's writes never ask it)
            grown = memoryview(mmap.mmap(-1, end))
            grown[: self._pos] = self._buf[: self._pos]
            self._buf = grown
        self._buf[self._pos : end] = view
        self._pos = end
        return len(view)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """Only what fsspec asks (``seek(0, 2)``: the size written)."""
        if (offset, whence) != (0, 2):
            raise io.UnsupportedOperation("a block buffer only reports its size")
        return self._pos

    def getvalue(self) -> memoryview:
        """The bytes written, as a view (no copy)."""
        return self._buf[: self._pos]

    def reset(self) -> _BlockBuffer:
        self._pos = 0
        return self


class _Blocks:
    """A written file's block buffers: the one being written, and those with the upload.

    Each full block is lent to `Store.put` (a `LentBuffer`): its parts are sent from
    the block itself, with no copy, and the store gives it back once they are
    stored. Taken by the file's thread, given back on the filesystem's loop (a deque
    is safe for both). The upload's window bounds how many are out at once.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: collections.deque[_BlockBuffer] = collections.deque()

    def take(self) -> _BlockBuffer:
        try:
            return self._free.pop().reset()
        except IndexError:
            return _BlockBuffer(self.size)

    def give_back(self, block: _BlockBuffer) -> None:
        self._free.append(block)

    async def chunks(self, receive: MemoryObjectReceiveStream[_BlockBuffer | io.BytesIO]) -> Any:
        """The blocks ``receive`` brings, each lent to the put (the first block, written
        to fsspec's BytesIO, as its bytes)."""
        async for block in receive:
            if isinstance(block, _BlockBuffer):
                yield LentBuffer(block.getvalue(), functools.partial(self.give_back, block))
            else:
                yield block.getvalue()


class AsyncStoreFile(fsspec.spec.AbstractBufferedFile):  # type: ignore[misc]
    """A file of an `AsyncStoreFileSystem`, opened with ``fs.open(path, "rb" | "wb" | "xb")``.

    Raises:
        FileNotFoundError: (asyncstore's NotFoundError) opening a missing file for reading.
        FileExistsError: (asyncstore's AlreadyExistsError) ``xb`` and the file exists,
            at open or, if another writer created it meanwhile, at close.
        DigestMismatchError: a file read whole, or in order to its end, does not
            match the sha256 recorded at upload.
        PreconditionFailedError: the file was replaced while open for reading.
    """

    fs: AsyncStoreFileSystem
    buffer: Any  # fsspec's io.BytesIO, or a `_BlockBuffer` while a block is written

    def __init__(
        self,
        fs: AsyncStoreFileSystem,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_type: str | None = None,
        cache_options: dict[str, Any] | None = None,
        size: int | None = None,
        **kwargs: Any,
    ) -> None:
        path = fs._strip_protocol(path)
        if mode not in ("rb", "wb", "xb"):
            raise InvalidArgumentError(
                f"mode {mode!r} for {path!r} is not supported: use 'rb', 'wb' or 'xb' "
                "(objects cannot be appended to)",
                key=path,
            )
        if not autocommit:
            raise InvalidArgumentError(
                f"{path!r}: asyncstore's files commit when closed; fsspec transactions "
                "are not supported",
                key=path,
            )
        self._upload: _StreamingPut | None = None
        self._whole: bytes | None = None
        self._hasher: Any = None
        self._hashed = 0
        self._expected: str | None = None
        self._etag: str | None = None
        if mode == "xb" and fs.exists(path):
            raise AlreadyExistsError(f"{path!r} already exists (mode 'xb')", key=path)
        if mode == "rb":
            self.details = fs.info(path)
            if self.details["type"] != "file":
                raise IsADirectoryError(f"{path!r} is a directory")
            self._etag = self.details.get("etag")
            self._expected = self.details.get("sha256")
            self._read_whole = self.details["size"] <= fs.full_read_threshold
            if self._expected is not None and not self._read_whole:
                self._hasher = hashlib.sha256()
            if cache_type is None:
                cache_type = "none" if self._read_whole else _SpanCache.name
        self._ahead: list[tuple[int, bytes]] = []
        self._next = 0  # where the last span fetched ended
        self._readahead = 0
        self._prefetch: tuple[int, int, concurrent.futures.Future[bytes]] | None = None
        self._hashing: concurrent.futures.ThreadPoolExecutor | None = None
        spans = cache_type == _SpanCache.name
        super().__init__(
            fs,
            path,
            mode,
            block_size=block_size,
            autocommit=autocommit,
            cache_type="none" if spans else cache_type or "readahead",
            cache_options=cache_options,
            size=self.details["size"] if mode == "rb" else None,
            **kwargs,
        )
        if spans:
            self.cache = _SpanCache(self.blocksize, self._fetch_span, self.size)

    def _run(self, func: Any, *args: Any) -> Any:
        return fsspec.asyn.sync(self.fs.loop, func, *args)

    # -- reading ------------------------------------------------------------------------------

    def read_buffer(self, length: int = -1) -> bytes | memoryview:
        """Read up to ``length`` bytes (all that is left if negative), without a copy.

        pyarrow's ``PythonFile`` calls this, when a file has it, instead of
        ``read``: a read within the span held is a ``memoryview`` of it.
        """
        if self.mode != "rb":
            raise ValueError("File not in read mode")
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if length < 0:
            length = self.size - self.loc
        end = min(self.size, self.loc + length)
        if self.loc >= end:
            return b""
        if self._read_whole:
            if self._whole is None:
                self._whole = self._run(self.fs._cat_file, self.path)
            out: bytes | memoryview = memoryview(self._whole)[self.loc : end]
        elif isinstance(self.cache, _SpanCache):
            out = self.cache.view(self.loc, end)
        else:
            return self.read(length)
        self.loc += len(out)
        return out

    def _fetch_range(self, start: int, end: int) -> bytes:
        if self._read_whole:
            if self._whole is None:
                self._whole = self._run(self.fs._cat_file, self.path)
            return self._whole[start:end]
        span_start, data = self._fetch_span(start, end)  # a cache_type of the caller's
        return data[start - span_start : end - span_start]

    def _fetch_span(self, start: int, end: int) -> tuple[int, bytes]:
        """Fetch from ``start`` (or the verified prefix, if it ends just before) to at
        least ``end``, with readahead for a sequential reader, as one ranged read."""
        if self._hasher is not None and self._hashed < start <= self._hashed + _HASH_GAP:
            start = self._hashed
        sequential = start in (0, self._next)
        if sequential:  # a reader going on in order: read further ahead each time
            grown = 2 * max(self._readahead, end - start, self.blocksize)
            self._readahead = min(_READAHEAD_MAX, grown)
        else:
            self._readahead = self.blocksize
        stop = min(self.size, max(end, start + self._readahead))
        data = self._prefetched(start, end)
        if data is None:
            data = self._run(self.fs._read_range, self.path, start, stop, self._etag)
        self._next = start + len(data)
        if sequential and self._next < self.size:
            ahead = min(_READAHEAD_MAX, 2 * self._readahead)
            self._start_prefetch(self._next, min(self.size, self._next + ahead))
        self._check_in_order(start, data)
        return start, data

    def _start_prefetch(self, start: int, stop: int) -> None:
        """Start reading ``[start, stop)`` on the filesystem's loop, for the next miss."""
        coro = self.fs._read_range(self.path, start, stop, self._etag)
        self._prefetch = (start, stop, asyncio.run_coroutine_threadsafe(coro, self.fs.loop))

    def _prefetched(self, start: int, end: int) -> bytes | None:
        """The prefetched span if it starts at ``start`` and reaches ``end`` (its error,
        if it failed); else None, and it is cancelled."""
        pending, self._prefetch = self._prefetch, None
        if pending is None:
            return None
        p_start, p_stop, future = pending
        if p_start == start and end <= p_stop:
            data: bytes = future.result()
            return data
        future.cancel()
        return None

    def close(self) -> None:
        """Close the file: a prefetch in flight is cancelled; a written file is committed."""
        pending, self._prefetch = getattr(self, "_prefetch", None), None
        if pending is not None:
            pending[2].cancel()
        self._stop_hashing()
        super().close()

    def _stop_hashing(self) -> None:
        hashing, self._hashing = getattr(self, "_hashing", None), None
        if hashing is not None:
            hashing.shutdown(wait=False, cancel_futures=True)

    def _check_in_order(self, start: int, data: bytes) -> None:
        """Hash what extends the verified prefix; keep a small span read ahead of it."""
        if self._hasher is None:
            return
        if start > self._hashed:
            kept = sum(len(p) for _, p in self._ahead)
            if len(data) <= _AHEAD_PIECE and kept + len(data) <= _AHEAD_BUDGET:
                self._ahead.append((start, data))
            return
        self._extend_hash(start, data)
        while self._hasher is not None:
            reached = [(s, p) for s, p in self._ahead if s <= self._hashed < s + len(p)]
            self._ahead = [(s, p) for s, p in self._ahead if s + len(p) > self._hashed]
            if not reached:
                break
            self._extend_hash(*reached[0])

    def _extend_hash(self, start: int, data: bytes) -> None:
        if self._hasher is None or not start <= self._hashed < start + len(data):
            return
        piece = memoryview(data)[self._hashed - start :]
        self._hashed = start + len(data)
        if self._hashed < self.size:
            # Hashed in order by the file's one hashing thread, while the reader goes on.
            if self._hashing is None:
                self._hashing = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="asyncstore-fsspec-sha256"
                )
            self._hashing.submit(self._hasher.update, piece)
            return
        if self._hashing is not None:  # the last piece: the check is made here, in the read
            self._hashing.submit(self._hasher.update, piece).result()
            self._stop_hashing()
        else:
            self._hasher.update(piece)
        if self._hasher is not None:
            actual = "sha256:" + self._hasher.hexdigest()
            self._hasher = None
            self._ahead = []
            if actual != self._expected:
                raise DigestMismatchError(
                    f"{self.path!r} is corrupt: its bytes hash to {actual}, but "
                    f"{self._expected} was recorded at upload",
                    expected=str(self._expected),
                    actual=actual,
                    key=self.path,
                )

    # -- writing ------------------------------------------------------------------------------

    def write(self, data: Any) -> int:
        """Buffer ``data``; each block is handed on as soon as it is full, at exactly the
        block size, so that the upload takes it as a part without copying it again."""
        view = memoryview(data).cast("B")
        size = len(view)
        while self.writable() and not self.closed and not self.forced:
            self._block_buffer()
            room = self.blocksize - self.buffer.tell()
            if not 0 < room < len(view):
                break
            super().write(view[:room])  # fills the block: fsspec flushes it
            view = view[room:]
        super().write(view)
        return size

    def _block_buffer(self) -> None:
        """fsspec starts each block on a fresh BytesIO: after the first block (a file of
        one block is one PUT of that BytesIO's bytes), an empty one becomes a `_BlockBuffer`."""
        if (
            self.offset is not None
            and isinstance(self.buffer, io.BytesIO)
            and not self.buffer.tell()
        ):
            self.buffer = self._blocks.take()

    @functools.cached_property
    def _blocks(self) -> _Blocks:
        return _Blocks(self.blocksize)

    def _initiate_upload(self) -> None:
        if self.forced:
            return  # the whole file is in the buffer: one put at close
        upload = _StreamingPut(self.fs, self.path, _mode(self.mode), self._blocks)
        self._run(upload.start, self.blocksize)
        self._upload = upload

    def _upload_chunk(self, final: bool = False) -> bool:
        buffer = self.buffer
        data = buffer.getvalue()
        if self._upload is None:
            self._run(self._put_whole, data)
            return True
        try:
            if data:
                self._run(self._upload.feed, buffer)
            if final:
                self._run(self._upload.finish)
        except BaseException:
            self.discard()
            raise
        return True

    async def _put_whole(self, data: bytes | memoryview) -> None:
        """The whole file, smaller than a block: one request (a single PUT)."""
        _, store, key = await self.fs._locate(self.path)
        part = max(store.chunk_size, len(data))
        await store.put(key, data, mode=_mode(self.mode), chunk_size=part)  # type: ignore[arg-type]

    def discard(self) -> None:
        """Abort the upload in progress: nothing is written."""
        upload, self._upload = self._upload, None
        if upload is not None:
            self._run(upload.abort)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self.writable() and not self.closed:  # type: ignore[has-type]
            self.discard()
            self.forced = True
            self.closed = True  # nothing to commit: the upload was aborted
            return
        self.close()


def _mode(mode: str) -> str:
    return "create" if mode == "xb" else "overwrite"
