"""The chunker: any source of bytes, cut into parts of one size.

Accepted sources: a buffer (bytes, bytearray, memoryview, array, mmap ...),
a path (``str``-free: ``os.PathLike`` such as ``pathlib.Path`` or
``anyio.Path``), a binary file object (sync ``read`` or async ``read``), and a
sync or async iterable of buffers. Parts of a buffer, of ``bytes`` items at
least one part long, and of `LentBuffer` items, are zero-copy views; everything
else is copied into a pooled part buffer, reused once its part is stored.

Sync file reads and sync iterators run in worker threads, so a slow source
never blocks the event loop.
"""

from __future__ import annotations

import inspect
import io
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Protocol

import anyio.to_thread

from .._errors import InvalidArgumentError
from .._types import LentBuffer
from ._buffers import BufferPool

__all__ = ["PartReader", "open_source"]


class PartReader(Protocol):
    """Reads a source one part at a time."""

    #: Total size when known before reading (buffers, files), else None.
    size: int | None
    #: Bytes in every part but the last.
    part_size: int

    async def read_part(self) -> memoryview | None:
        """The next part: ``part_size`` bytes, fewer only for the last; None at the end."""
        ...

    async def aclose(self) -> None:
        """Release the source (close a file opened here)."""
        ...

    def release(self, part: memoryview) -> None:
        """The caller is done with ``part``: its buffer may be reused for a later part."""
        ...

    def seek(self, offset: int) -> bool:
        """Read on from ``offset`` (a file opened here); False if the source cannot."""
        ...


class _BufferReader:
    def __init__(self, data: memoryview, part_size: int) -> None:
        self._data = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        self.part_size = part_size
        self._pos = 0
        self.size: int | None = len(self._data)

    def release(self, part: memoryview) -> None:
        return None  # parts are views of the caller's buffer: never recycled

    def seek(self, offset: int) -> bool:
        return False  # the parts' path: views of the caller's buffer, sent as they are

    async def read_part(self) -> memoryview | None:
        if self._pos >= len(self._data):
            return None
        part = self._data[self._pos : self._pos + self.part_size]
        self._pos += len(part)
        return part

    async def aclose(self) -> None:
        return None


class _FileReader:
    """A sync binary file: ``readinto`` in a worker thread, one call per part."""

    def __init__(
        self, file: Any, part_size: int, *, size: int | None, owned: bool, key: str = ""
    ) -> None:
        self._file = file
        self._key = key
        self.part_size = part_size
        self._pool = BufferPool(part_size)
        self._owned = owned
        self._eof = False
        self.size = size

    def _read(self) -> memoryview | None:
        buf = self._pool.take()
        view = memoryview(buf)
        filled = 0
        readinto = getattr(self._file, "readinto", None)
        while filled < self.part_size:
            if readinto is not None:
                n = readinto(view[filled:])
            else:
                chunk = self._file.read(self.part_size - filled)
                if chunk and not isinstance(chunk, (bytes, bytearray, memoryview)):
                    self._pool.give(buf)
                    raise _not_binary(self._key, type(chunk).__name__)
                n = len(chunk) if chunk else 0
                view[filled : filled + n] = chunk if chunk else b""
            if not n:
                self._eof = True
                break
            filled += n
        if not filled:
            self._pool.give(buf)
            return None
        return view[:filled]

    def release(self, part: memoryview) -> None:
        self._pool.give(part)

    def seek(self, offset: int) -> bool:
        if not self._owned or self.size is None:
            return False  # a caller's file object: its position is the caller's
        self._file.seek(offset)  # a regular file's lseek: no wait
        self._eof = False
        return True

    async def read_part(self) -> memoryview | None:
        if self._eof:
            return None
        return await anyio.to_thread.run_sync(self._read)

    async def aclose(self) -> None:
        if self._owned:
            with anyio.CancelScope(shield=True):  # closed even when the upload was cancelled
                await anyio.to_thread.run_sync(self._file.close)
        await self._pool.aclose()


class _Loan:
    """A `LentBuffer` being used as parts: given back once its last part is released."""

    __slots__ = ("lent", "parts", "returned")

    def __init__(self, lent: LentBuffer) -> None:
        self.lent = lent
        self.parts = 0  # parts of it handed out and not yet released
        self.returned = False


class _Assembler:
    """Cuts a stream of buffers of any sizes into parts of exactly ``part_size``.

    Parts are filled into pooled buffers; a ``bytes`` item holding one or more
    whole parts is sliced instead (zero-copy: bytes cannot change under us,
    unlike a bytearray the caller may reuse), and so is a `LentBuffer` that
    starts a part: its whole parts, and its tail if the stream ends there, are
    views of the lender's memory, and the lender gets it back (``release``)
    once the last of them is released or the assembler is closed.
    """

    def __init__(self, part_size: int, key: str) -> None:
        self.pool = BufferPool(part_size)
        self._key = key
        self._buf: memoryview | None = None
        self._fill = 0
        self._loans: dict[int, tuple[memoryview, _Loan]] = {}  # id(part) -> (part, loan)
        self._tail: tuple[memoryview, _Loan] | None = None  # a lent tail, not yet a part
        # Parts are cut in a worker thread for a sync iterable, and released on the loop.
        self._lock = threading.Lock()

    def _lend(self, part: memoryview, loan: _Loan) -> memoryview:
        with self._lock:
            loan.parts += 1
            self._loans[id(part)] = (part, loan)
        return part

    def _done_with(self, loan: _Loan, parts: int) -> None:
        """Release ``loan`` if none of its parts is out and no tail of it is pending."""
        with self._lock:
            loan.parts -= parts
            pending = self._tail is not None and self._tail[1] is loan
            done = not (loan.parts or pending or loan.returned)
            loan.returned |= done
        if done:
            loan.lent.release()

    def release(self, part: memoryview) -> None:
        """``part`` is no longer needed: back to the pool, or to its lender."""
        with self._lock:
            held = self._loans.pop(id(part), None)
        if held is None:
            self.pool.give(part)
        else:
            self._done_with(held[1], 1)

    def close(self) -> None:
        """Give every lent buffer still held back to its lender (the put is over)."""
        with self._lock:
            held = [loan for _, loan in self._loans.values()]
            held += [self._tail[1]] if self._tail is not None else []
            loans = {id(loan): loan for loan in held if not loan.returned}
            for loan in loans.values():
                loan.returned = True
            self._loans, self._tail = {}, None
        for loan in loans.values():
            loan.lent.release()

    def _settle_tail(self) -> None:
        """More is coming after a lent tail: copy it into a part buffer of our own."""
        assert self._tail is not None
        view, loan = self._tail
        self._begin_part(view)
        self._tail = None
        self._done_with(loan, 0)

    def _begin_part(self, view: memoryview) -> None:
        """Copy ``view`` (less than a part) into a part buffer, to be filled by what follows."""
        self._buf = self.pool.take()
        self._buf[: len(view)] = view
        self._fill = len(view)

    def feed(self, item: object) -> Iterator[memoryview]:
        if self._tail is not None:
            self._settle_tail()
        loan = None
        if isinstance(item, LentBuffer):
            loan, item = _Loan(item), item.data
        elif isinstance(item, str) or not isinstance(item, (bytes, bytearray, memoryview)):
            try:
                item = memoryview(item)  # type: ignore[arg-type]
            except TypeError:
                raise InvalidArgumentError(
                    f"the data for key {self._key!r} yielded a {type(item).__name__}; "
                    "expected bytes-like chunks",
                    key=self._key,
                ) from None
        zero_copy = isinstance(item, bytes)
        view = memoryview(item).cast("B")
        size = self.pool.size
        if self._buf is not None:
            take = view[: size - self._fill]
            self._buf[self._fill : self._fill + len(take)] = take
            self._fill += len(take)
            view = view[len(take) :]
            if self._fill < size:
                if loan is not None:
                    self._done_with(loan, 0)  # copied whole
                return
            part, self._buf, self._fill = memoryview(self._buf), None, 0
            yield part
        while len(view) >= size:
            if zero_copy:
                yield view[:size]
            elif loan is not None:
                yield self._lend(view[:size], loan)
            else:
                buf = self.pool.take()
                buf[:] = view[:size]
                yield memoryview(buf)
            view = view[size:]
        if len(view) and loan is not None:
            self._tail = (view, loan)  # a part of its own if the stream ends here
        elif len(view):
            self._begin_part(view)
        if loan is not None:
            self._done_with(loan, 0)

    def flush(self) -> memoryview | None:
        if self._tail is not None:
            view, loan = self._tail
            self._lend(view, loan)
            self._tail = None
            return view
        if self._buf is None:
            return None
        part = memoryview(self._buf)[: self._fill]
        self._buf, self._fill = None, 0
        return part


class _AsyncIterableReader:
    def __init__(self, source: AsyncIterable[Any], part_size: int, key: str) -> None:
        self.part_size = part_size
        self._it = source.__aiter__()
        self._assembler = _Assembler(part_size, key)
        self._ready: list[memoryview] = []
        self._done = False
        self.size: int | None = None

    def release(self, part: memoryview) -> None:
        self._assembler.release(part)

    async def _next_item(self) -> tuple[bool, object]:
        try:
            return True, await self._it.__anext__()
        except StopAsyncIteration:
            return False, None

    async def read_part(self) -> memoryview | None:
        while not self._ready:
            if self._done:
                return None
            more, item = await self._next_item()
            await self._assembler.pool.reserve()  # a part buffer, allocated off the loop
            if more:
                self._ready.extend(self._assembler.feed(item))
            else:
                self._done = True
                last = self._assembler.flush()
                if last is not None:
                    self._ready.append(last)
        return self._ready.pop(0)

    def seek(self, offset: int) -> bool:
        return False  # a stream is read once

    async def aclose(self) -> None:
        self._assembler.close()
        aclose = getattr(self._it, "aclose", None)
        if aclose is not None:
            await aclose()
        await self._assembler.pool.aclose()


class _SyncIterableReader(_AsyncIterableReader):
    """A sync iterable: items are pulled in a worker thread, one part's worth per call."""

    def __init__(self, source: Iterable[Any], part_size: int, key: str) -> None:
        self.part_size = part_size
        self._sync_it: Iterator[Any] = iter(source)
        self._assembler = _Assembler(part_size, key)
        self._ready = []
        self._done = False
        self.size = None
        # Lists and tuples are already in memory: no need for a thread.
        self._inline = isinstance(source, (list, tuple))

    def _pull(self) -> tuple[list[memoryview], bool]:
        ready: list[memoryview] = []
        for item in self._sync_it:
            ready.extend(self._assembler.feed(item))
            if ready:
                return ready, False
        last = self._assembler.flush()
        return ([last] if last is not None else []), True

    async def read_part(self) -> memoryview | None:
        while not self._ready:
            if self._done:
                return None
            if self._inline:
                ready, self._done = self._pull()
            else:
                ready, self._done = await anyio.to_thread.run_sync(self._pull)
            self._ready.extend(ready)
        return self._ready.pop(0)

    async def aclose(self) -> None:
        self._assembler.close()
        close = getattr(self._sync_it, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):  # closed even when the upload was cancelled
                await anyio.to_thread.run_sync(close)
        await self._assembler.pool.aclose()


class _AsyncFileReader(_AsyncIterableReader):
    """An async binary file (``await f.read(n)``), e.g. ``anyio.AsyncFile``."""

    def __init__(self, file: Any, part_size: int, key: str) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                chunk = await file.read(part_size)
                if not chunk:
                    return
                yield chunk

        super().__init__(chunks(), part_size, key)


def _not_binary(key: str, got: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"the file given as data for key {key!r} reads {got}, not bytes: it is open in "
        "text mode; open it in binary mode ('rb') or pass its pathlib.Path",
        key=key,
    )


def _open_path(path: os.PathLike[str], key: str) -> tuple[Any, int, os.stat_result]:
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by _FileReader.aclose
    except FileNotFoundError as exc:
        raise InvalidArgumentError(
            f"cannot upload {os.fspath(path)!r} to key {key!r}: no such file", key=key
        ) from exc
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot upload {os.fspath(path)!r} to key {key!r}: {exc.strerror}", key=key
        ) from exc
    st = os.fstat(file.fileno())
    return file, st.st_size, st


#: A file smaller than this (and than one part) is opened, read and closed in one
#: worker-thread call, rather than one call each: a many-file sync sends mostly such
#: files. Larger ones are read into the core's page-aligned buffers, part by part.
SMALL_FILE = 1 << 20


def _open_file(
    path: os.PathLike[str], key: str, plan: Callable[[int | None], int]
) -> tuple[Any, bytes | None, int, os.stat_result]:
    """Open ``path`` and plan its parts: (the open file, or None and its bytes, read
    whole and the file closed, when it is small; the part size; its stat)."""
    file, size, st = _open_path(path, key)
    try:
        part_size = plan(size)
        if size < min(SMALL_FILE, part_size):
            data = file.read(size + 1)
            if len(data) <= size:  # (a file that grew since its stat is read in parts)
                file.close()
                return None, data, part_size, st
            file.seek(0)
    except BaseException:
        file.close()
        raise
    return file, None, part_size, st


async def open_source(
    data: object, plan: Callable[[int | None], int], *, key: str
) -> tuple[PartReader, os.stat_result | None]:
    """Wrap ``data`` in a PartReader; for a path, also return its ``stat``.

    Args:
        data: The source.
        plan: Given the source's size (None if unknown), returns the part size.
        key: The key being written, for error messages.

    Raises:
        InvalidArgumentError: ``data`` is a str or not a source of bytes, naming the key.
    """
    if isinstance(data, str):
        raise InvalidArgumentError(
            f"data for key {key!r} is a str; encode it (data.encode()) or pass a pathlib.Path",
            key=key,
        )
    if isinstance(data, os.PathLike):
        file, whole, part_size, st = await anyio.to_thread.run_sync(_open_file, data, key, plan)
        if whole is not None:
            return _BufferReader(memoryview(whole), part_size), st
        return _FileReader(file, part_size, size=st.st_size, owned=True), st
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        pass
    else:
        return _BufferReader(view, plan(view.nbytes)), None
    read = getattr(data, "read", None)
    # A text file (open(path), or anyio's AsyncFile over one) reads str, not bytes.
    if isinstance(data, io.TextIOBase) or isinstance(getattr(data, "wrapped", None), io.TextIOBase):
        raise _not_binary(key, "str")
    part_size = plan(None)
    if read is not None:
        if inspect.iscoroutinefunction(read):
            return _AsyncFileReader(data, part_size, key), None
        return _FileReader(data, part_size, size=None, owned=False, key=key), None
    if isinstance(data, AsyncIterable):
        return _AsyncIterableReader(data, part_size, key), None
    if isinstance(data, Iterable):
        return _SyncIterableReader(data, part_size, key), None
    raise InvalidArgumentError(
        f"cannot upload a {type(data).__name__} to key {key!r}: expected bytes, a buffer, "
        "a path, a binary file, or a sync or async iterable of bytes",
        key=key,
    )
