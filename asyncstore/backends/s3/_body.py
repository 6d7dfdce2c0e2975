"""Request and response bodies: a part sent from the core's buffer, a GetObject body read.

**Request bodies.** A part (or a single put) is sent as a `PartBody`:
an async iterable of slices of the core's buffer, so the bytes are neither
copied into a ``bytes`` object nor, by aiohttp, out of a ``BytesIO`` on the
event loop (aiohttp's ``BytesIOPayload`` calls ``getbuffer()``, which copies
a shared buffer: ~30 ms of blocked loop per 16 MiB part). Both of
aiobotocore's HTTP sessions stream an async iterable as it is, with the
Content-Length botocore sets.

**Response bodies.**
The body is read as it arrives and handed on in chunks of `CHUNK` bytes
(the last one shorter), never as a whole. Pieces are gathered up to a chunk
because the core hashes chunks of 256 KiB and more in a worker thread, in
parallel with the network, and smaller ones on the event loop. With aiohttp,
``read(n)`` returns what the socket has buffered; with httpx, the raw chunks
of the response are taken as they come (aiobotocore's httpx ``read(n)`` would
copy them into a growing buffer first). Closing the stream early closes the
response, and with it the connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager
from typing import Any

import anyio

from ..._backend import MiB, ReadStream
from ..._errors import StoreError, TransportError
from ..._types import ObjectInfo

__all__ = ["CHUNK", "PartBody", "S3ReadStream"]

#: Bytes per chunk handed to the core (the last chunk of a body may be shorter).
CHUNK = 1 * MiB
#: Bytes per write of a request body.
SEND_BLOCK = 1 * MiB


class _Slices:
    """An async iterator over consecutive slices of a buffer (not a generator: nothing
    to finalize when a request is abandoned)."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def __aiter__(self) -> _Slices:
        return self

    async def __anext__(self) -> memoryview:
        if self._pos >= len(self._view):
            raise StopAsyncIteration
        piece = self._view[self._pos : self._pos + SEND_BLOCK]
        self._pos += len(piece)
        return piece


class PartBody:
    """The bytes of a request, sent from the caller's buffer without a copy.

    It has ``read`` because botocore accepts only bytes or file objects as a
    body; the HTTP libraries use ``__aiter__``. It is deliberately not a
    sync iterable (aiobotocore's httpx session would iterate it line by line).
    The buffer must stay unchanged until the request is answered, which the
    core guarantees: it reuses a part's buffer only after ``upload_part`` returns.
    """

    def __init__(self, data: memoryview) -> None:
        self._view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    @property
    def view(self) -> memoryview:
        """The bytes, as a flat buffer."""
        return self._view

    def __aiter__(self) -> _Slices:
        return _Slices(self._view[self._pos :])

    def read(self, size: int = -1) -> bytes:
        """Read like a file (botocore's checks only; the HTTP libraries iterate)."""
        end = len(self._view) if size is None or size < 0 else self._pos + size
        chunk = bytes(self._view[self._pos : end])
        self._pos += len(chunk)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = min(max(base + offset, 0), len(self._view))
        return self._pos

    def tell(self) -> int:
        return self._pos


def _raw_chunks(body: Any) -> AsyncGenerator[bytes, None] | None:
    """The raw chunks of an httpx response body, or None for another session's body."""
    aiter_raw = getattr(getattr(body, "raw_stream", None), "aiter_raw", None)
    if aiter_raw is None:
        return None
    chunks: AsyncGenerator[bytes, None] = aiter_raw()
    return chunks


class S3ReadStream(ReadStream):
    """The bytes of one (ranged) GetObject, as they arrive.

    Args:
        info: The whole object's info.
        body: aiobotocore's streaming body of the response.
        errors: Makes the context that translates the SDK's exceptions.
        skip: Bytes at the start of the body to drop (a server that ignored the Range).
        limit: The most bytes to pass on after ``skip`` (None: all).
        on_close: Called once the body is closed (frees the request's slot).
    """

    def __init__(
        self,
        info: ObjectInfo,
        body: Any,
        errors: Callable[[], AbstractContextManager[None]],
        *,
        skip: int = 0,
        limit: int | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self._body = body
        self._errors = errors
        self._raw = _raw_chunks(body)
        self._skip = skip
        self._left = limit
        self._on_close = on_close
        self._eof = False
        self._closed = False
        self._error: TransportError | None = None

    async def _piece(self, most: int) -> bytes:
        """The next bytes of the body (b"" at its end)."""
        if self._raw is not None:
            try:
                return await self._raw.__anext__()
            except StopAsyncIteration:
                return b""
        piece: bytes = await self._body.read(most)
        return piece

    async def _gather(self) -> bytes:
        """Up to `CHUNK` bytes; a body cut short hands on what arrived, then raises."""
        pieces: list[bytes] = []
        size = 0
        try:
            with self._errors():
                while size < CHUNK:
                    piece = await self._piece(CHUNK - size)
                    if not piece:
                        self._eof = True
                        break
                    pieces.append(piece)
                    size += len(piece)
        except TransportError as exc:
            if not pieces:
                raise
            self._error = exc  # raised by the next __anext__: the core resumes after these
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def __anext__(self) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        while not self._closed and not self._eof and self._left != 0:
            chunk = await self._gather()
            if self._skip:
                dropped = min(self._skip, len(chunk))
                self._skip -= dropped
                chunk = chunk[dropped:]
            if self._left is not None:
                chunk = chunk[: self._left]
                self._left -= len(chunk)
            if chunk:
                return chunk
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if getattr(self._body, "complete", False):  # nothing left to release but the slot
            if self._on_close is not None:
                self._on_close()
            return
        try:
            # A failure to close a connection we are done with is no failure of the read.
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError), self._errors():
                if self._raw is not None:
                    await self._raw.aclose()
                await self._body.aclose()
        finally:
            if self._on_close is not None:
                self._on_close()
