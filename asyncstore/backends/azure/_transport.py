"""An anyio-native HTTP transport for azure-core, on httpx: the Azure SDK under asyncio AND trio.

azure-core sends every request of a pipeline through a pluggable
``AsyncHttpTransport``. Its own async transport is aiohttp (asyncio only), and
its trio transport runs ``requests`` in worker threads. `HttpxTransport` runs
on httpx, whose connection pool is written on anyio, so the same pipeline
works natively under either event loop, cancellation included:

* request bodies that are buffers (``bytes``, ``bytearray``, ``memoryview``,
  `BufferBody`) are sent as they are, in slices of `SEND_SLICE` bytes, without
  a copy of the whole body, by a plain iterator (httpcore does not close a
  body's iterator when a send is cancelled, and trio warns about abandoned
  async generators);
* a write whose body is all out is allowed to finish when its caller is
  cancelled (see `settled`), one still sending is dropped at once;
* responses are streamed: ``stream=True`` hands back a response whose body is
  read from the socket as it is iterated (never buffered whole), and closing
  the response releases its connection;
* requests wait for a connection on a semaphore, not in httpcore's queue;
* ``transport.sleep`` (used by azure-core's retry policies) is ``anyio.sleep``;
* httpx's exceptions are translated into azure-core's
  (``ServiceRequestError``, ``ServiceResponseError``, their timeout variants
  and ``IncompleteReadError``), the ones the SDK's policies and callers expect.

Both kinds of request azure-core knows are served: ``azure.core.rest``
requests (everything the Blob SDK's generated operations send) and the legacy
``azure.core.pipeline.transport`` requests (the multipart body of a blob batch).
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import httpx
from azure.core.exceptions import (
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import AsyncHttpResponse as LegacyAsyncHttpResponse
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

from ._settle import settled

__all__ = ["SEND_SLICE", "BufferBody", "HttpxTransport"]

#: Bytes handed to the connection per write when a request body is a buffer.
SEND_SLICE = 1024 * 1024
#: Connections kept per transport (every BlobClient of a backend shares one transport).
DEFAULT_MAX_CONNECTIONS = 100

_SAS_SIGNATURE = re.compile(r"(?i)([?&]sig=)([^&\s'\"]+)")


class SignatureFilter(logging.Filter):
    """Hides SAS signatures (``sig=``) in the request URLs that httpx logs.

    httpx logs every request at INFO (``HTTP Request: GET https://...?...&sig=...``),
    and with a SAS token the signature, the secret, is in the URL. This filter,
    on httpx's logger, replaces it with ``***``; the rest of the URL stays.
    (azure-core's own HTTP logging policy already redacts query values.)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _SAS_SIGNATURE.sub(r"\1***", message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_SIGNATURE_FILTER = SignatureFilter()


def install_log_filter() -> None:
    """Put `SignatureFilter` on httpx's logger (once; idempotent)."""
    logger = logging.getLogger("httpx")
    if _SIGNATURE_FILTER not in logger.filters:
        logger.addFilter(_SIGNATURE_FILTER)


class BufferBody(AsyncIterable[bytes]):
    """A request body over a buffer, for any azure-core transport.

    Each pass yields the buffer in slices of `SEND_SLICE` bytes, without a copy
    of the whole (a ``bytes`` body would be copied, and aiohttp warns about
    bodies over 1 MiB sent as one buffer). The buffer must stay unchanged until
    the request is done.
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        self.view = view if view.format == "B" and view.ndim == 1 else view.cast("B")

    def __len__(self) -> int:
        return self.view.nbytes

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Chunks(self.view)


class _Chunks(AsyncIterator[bytes]):
    """One pass over a request body, in slices of `SEND_SLICE` bytes.

    A plain iterator, not an async generator: httpcore does not close the
    body's iterator when a send is cancelled, and an abandoned async generator
    makes trio warn when it is garbage-collected.
    """

    def __init__(self, source: Any, on_end: Any = None) -> None:
        self._on_end = on_end
        self._view: memoryview | None = None
        self._position = 0
        self._file: Any = None
        self._inner: Any = None
        if source is None:
            self._view = memoryview(b"")
        elif isinstance(source, str):
            self._view = memoryview(source.encode("utf-8"))
        elif isinstance(source, bytes | bytearray | memoryview):
            self._view = memoryview(source).cast("B")
        elif isinstance(source, BufferBody):
            self._view = source.view
        elif hasattr(source, "read"):
            self._file = source
        elif isinstance(source, AsyncIterable):
            self._inner = source.__aiter__()
        elif isinstance(source, Iterable):
            self._inner = iter(source)
        else:
            raise TypeError(
                f"unsupported request body type for the httpx transport: {type(source).__name__}"
            )

    async def __anext__(self) -> bytes:
        try:
            return await self._next()
        except StopAsyncIteration:
            if self._on_end is not None:
                self._on_end()
            raise

    async def _next(self) -> bytes:
        if self._view is not None:
            if self._position >= self._view.nbytes:
                raise StopAsyncIteration
            start = self._position
            self._position = min(start + SEND_SLICE, self._view.nbytes)
            return self._view[start : self._position]  # type: ignore[return-value]  # a buffer
        if self._file is not None:
            chunk = await anyio.to_thread.run_sync(self._file.read, SEND_SLICE)
            if not chunk:
                raise StopAsyncIteration
            return bytes(chunk)
        if isinstance(self._inner, AsyncIterator):
            piece: bytes = await self._inner.__anext__()
            return piece
        try:
            item: bytes = next(self._inner)
        except StopIteration:
            raise StopAsyncIteration from None
        return item


class _Body(httpx.AsyncByteStream):
    """An azure-core request body as an httpx stream: sent again from the start on every pass.

    Buffers (``bytes``, ``bytearray``, ``memoryview``) are sent as they are, in
    slices, without a copy of the whole body.
    """

    def __init__(self, source: Any) -> None:
        self._source = source
        self.sent = False  # the last pass handed every byte to the connection

    def _ended(self) -> None:
        self.sent = True

    def sent_all(self) -> bool:
        """Whether the last pass handed every byte to the connection."""
        return self.sent

    @property
    def size(self) -> int | None:
        """The body's length in bytes, when it is a buffer (or empty)."""
        source = self._source
        if source is None:
            return 0
        if isinstance(source, str):
            return len(source.encode("utf-8"))
        if isinstance(source, bytes | bytearray | memoryview):
            return memoryview(source).nbytes
        if isinstance(source, BufferBody):
            return len(source)
        return None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self.sent = False
        return _Chunks(self._source, self._ended)

    async def aclose(self) -> None:
        """Nothing to release: the source belongs to the caller."""


def _response_headers(response: httpx.Response) -> CaseInsensitiveDict:
    """The response's headers with their case as sent (metadata names keep theirs)."""
    headers = CaseInsensitiveDict()
    encoding = response.headers.encoding
    for raw_name, raw_value in response.headers.raw:
        name, value = raw_name.decode(encoding), raw_value.decode(encoding)
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return headers


def _translate_httpx(exc: httpx.HTTPError, *, sent: bool) -> Exception:
    """The azure-core exception for an httpx one.

    ``sent`` says whether the response headers had arrived (the error is in the body).
    """
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ServiceRequestTimeoutError(exc, error=exc)
    if isinstance(exc, httpx.TimeoutException):
        return ServiceResponseTimeoutError(exc, error=exc)
    if not sent:
        return ServiceRequestError(exc, error=exc)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return IncompleteReadError(exc, error=exc)
    return ServiceResponseError(exc, error=exc)


class _StreamDownload(AsyncIterator[bytes]):
    """The body of a streamed response, read from the socket as it is iterated.

    Call `aclose` when done (before the end, too): it releases the connection.
    """

    def __init__(
        self, pipeline: Any, response: Any, *, decompress: bool = True, **kwargs: Any
    ) -> None:
        self.pipeline = pipeline
        self.response = response
        internal: httpx.Response = response.internal_response
        self._internal = internal
        self._chunks = internal.aiter_raw()
        self._started = self._finished = False
        self.content_length = int(internal.headers.get("Content-Length", 0) or 0)
        encoding = internal.headers.get("Content-Encoding", "").lower() if decompress else ""
        self._decompressor: Any = None
        if encoding in ("gzip", "deflate"):
            wbits = (16 + zlib.MAX_WBITS) if encoding == "gzip" else -zlib.MAX_WBITS
            self._decompressor = zlib.decompressobj(wbits=wbits)

    def __len__(self) -> int:
        return self.content_length

    async def __anext__(self) -> bytes:
        if self._finished:
            raise StopAsyncIteration
        self._started = True
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._finished = True
            await self._internal.aclose()
            if self._decompressor is not None:
                tail, self._decompressor = self._decompressor.flush(), None
                if tail:
                    return bytes(tail)
            raise
        except httpx.HTTPError as exc:
            self._finished = True
            await self.aclose()
            raise _translate_httpx(exc, sent=True) from exc
        except BaseException:
            self._finished = True
            await self.aclose()
            raise
        if self._decompressor is not None:
            return bytes(self._decompressor.decompress(chunk))
        return chunk

    async def aclose(self) -> None:
        """Stop reading and release the connection; safe to call more than once."""
        with anyio.CancelScope(shield=True):
            await self._internal.aclose()  # closes the connection if the body is unread
            if self._started and not self._finished:
                # httpx reads a body through async generators nested four deep, and
                # closing the outermost leaves the inner ones suspended: trio warns when
                # they are garbage-collected (encode/httpx#3686). With the connection
                # closed, resuming the outermost makes each level end with a read error,
                # so every one of them finishes here, now.
                self._finished = True
                for _ in range(64):  # at most what h11 had already buffered, then the error
                    try:
                        await self._chunks.__anext__()
                    except Exception:  # the error is the point
                        break
            self._finished = True


class _Permit:
    """A connection slot of the transport, given back once."""

    def __init__(self, slots: anyio.Semaphore) -> None:
        self._slots: anyio.Semaphore | None = slots

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release()


class _Released(httpx.AsyncByteStream):
    """A response body stream that gives its connection slot back when closed."""

    def __init__(self, stream: Any, permit: _Permit) -> None:
        self._stream = stream
        self._permit = permit

    def __aiter__(self) -> AsyncIterator[bytes]:
        iterator: AsyncIterator[bytes] = self._stream.__aiter__()
        return iterator

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._permit.release()


class _RestResponse(AsyncHttpResponseImpl):
    """An ``azure.core.rest.AsyncHttpResponse`` over an httpx response."""

    def __init__(self, *, request: Any, internal_response: httpx.Response, block_size: int) -> None:
        headers = _response_headers(internal_response)
        super().__init__(
            request=request,
            internal_response=internal_response,
            block_size=block_size,
            status_code=internal_response.status_code,
            reason=internal_response.reason_phrase,
            content_type=headers.get("content-type"),
            headers=headers,
            stream_download_generator=_StreamDownload,
        )

    async def close(self) -> None:
        if not self.is_closed:
            self._is_closed = True
            with anyio.CancelScope(shield=True):
                await self._internal_response.aclose()


class _LegacyResponse(LegacyAsyncHttpResponse):
    """An ``azure.core.pipeline.transport.AsyncHttpResponse`` over an httpx response."""

    def __init__(self, request: Any, internal_response: httpx.Response, block_size: int) -> None:
        super().__init__(request, internal_response, block_size=block_size)
        self.status_code = internal_response.status_code
        self.headers = _response_headers(internal_response)
        self.reason = internal_response.reason_phrase
        self.content_type = self.headers.get("content-type")
        self._content: bytes | None = None

    def body(self) -> bytes:
        if self._content is None:
            raise ValueError("the body is not loaded: call load_body() first")
        return self._content

    async def load_body(self) -> None:
        """Read the whole body into memory (for the synchronous ``body()``)."""
        stream = _StreamDownload(None, self, decompress=True)
        parts = [chunk async for chunk in stream]
        self._content = b"".join(parts)

    def stream_download(self, pipeline: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        return _StreamDownload(pipeline, self, **kwargs)


class HttpxTransport(AsyncHttpTransport[Any, Any]):
    """An azure-core async transport on httpx: runs under asyncio and trio alike.

    Give it to any Azure SDK async client as ``transport=HttpxTransport()``.
    The httpx client is made on first use, in a worker thread (loading the
    TLS certificates reads files), and closed by `close`.

    Args:
        connect_timeout: Seconds to wait for a connection (also for a free
            connection of the pool).
        read_timeout: Seconds to wait for each read or write on a connection.
        max_connections: Connections kept open at once.
        verify: Verify TLS certificates (or a CA bundle path).
        client: An httpx.AsyncClient to use instead of making one (not closed
            by `close`).
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 30.0,
        read_timeout: float = 120.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        verify: bool | str = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._verify = verify
        self._client = client
        self._owner = client is None
        self._lock = anyio.Lock()
        # Requests wait here for a connection rather than in httpcore's pool, whose
        # queue is scanned in full whenever a connection frees up: with thousands of
        # requests queued (2,000 concurrent GETs), that scan dominated the CPU time.
        self._slots = anyio.Semaphore(max_connections)
        self._closed = False
        self.block_size = 64 * 1024
        install_log_filter()

    def __repr__(self) -> str:
        return f"<HttpxTransport max_connections={self._max_connections}>"

    @property
    def timeouts(self) -> tuple[float, float]:
        """The (connect, read) timeouts in seconds."""
        return (self._connect_timeout, self._read_timeout)

    async def __aenter__(self) -> HttpxTransport:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()

    def _make_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=30.0,
        )
        return httpx.AsyncClient(
            limits=limits,
            timeout=self._timeout(self._connect_timeout, self._read_timeout),
            verify=self._verify,
            follow_redirects=False,
            trust_env=True,
        )

    @staticmethod
    def _timeout(connect: float, read: float) -> httpx.Timeout:
        return httpx.Timeout(connect=connect, read=read, write=read, pool=None)

    async def open(self) -> None:
        """Make the httpx client, once."""
        if self._client is not None:
            return
        async with self._lock:
            if self._closed:
                raise ServiceRequestError("the HTTP transport is closed")
            if self._client is None:
                self._client = await anyio.to_thread.run_sync(self._make_client)

    async def close(self) -> None:
        """Close the httpx client (if this transport made it)."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None and self._owner:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def sleep(self, duration: float) -> None:
        """Sleep with the running event loop (azure-core's retry policies call this)."""
        await anyio.sleep(duration)

    async def send(self, request: Any, *, stream: bool = False, **config: Any) -> Any:
        """Send an azure-core request; with ``stream=True`` the body is left unread.

        Raises:
            ServiceRequestError: the request could not be sent (connection refused, ...).
            ServiceResponseError: the response could not be read.
        """
        await self.open()
        client = self._client
        if client is None:
            raise ServiceRequestError("the HTTP transport is closed")
        timeout = self._timeout(
            config.pop("connection_timeout", None) or self._connect_timeout,
            config.pop("read_timeout", None) or self._read_timeout,
        )
        rest = isinstance(request, RestHttpRequest)
        if not rest and getattr(request, "files", None):
            raise ValueError("the httpx transport does not send multipart form files")
        body = _Body(request.content if rest else request.data)
        headers = [(name, value) for name, value in request.headers.items() if value is not None]
        names = {name.lower() for name, _ in headers}
        if "accept-encoding" not in names:
            headers.append(("Accept-Encoding", "identity"))
        size = body.size
        if size and "content-length" not in names and "transfer-encoding" not in names:
            headers.append(("Content-Length", str(size)))
        outgoing = client.build_request(
            request.method, request.url, headers=headers, timeout=timeout
        )
        outgoing.stream = body
        await self._slots.acquire()
        permit = _Permit(self._slots)
        try:
            if size == 0:
                internal = await client.send(outgoing, stream=True)
            else:  # a write: once its body is out, let it finish (see _settle)

                async def close(response: httpx.Response) -> None:
                    await response.aclose()

                internal = await settled(
                    lambda: client.send(outgoing, stream=True), sent=body.sent_all, abandon=close
                )
        except httpx.HTTPError as exc:
            permit.release()
            raise _translate_httpx(exc, sent=False) from exc
        except BaseException:
            permit.release()
            raise
        internal.stream = _Released(internal.stream, permit)
        response: Any
        if rest:
            response = _RestResponse(
                request=request, internal_response=internal, block_size=self.block_size
            )
            if not stream:
                try:
                    await response.read()
                finally:
                    await response.close()
        else:
            response = _LegacyResponse(request, internal, self.block_size)
            if not stream:
                await response.load_body()
        return response
