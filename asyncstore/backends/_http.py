"""A small HTTP/1.1 client on anyio: the backends' lean request path.

The SDKs' per-call pipelines (botocore's event hooks, parsers and user-agent
assembly; httpx's models and middleware) cost ten to twenty times more CPU per
small request than the request itself. This client does only what a backend's
hot operations need: keep-alive connections in a bounded pool, a request head
and body written as they are, a response head parsed into a dict, and the body
read by ``Content-Length``, chunked or to the end of the connection. It runs
unchanged under asyncio and trio (anyio streams), so both event loops get the
same lean path.

What it deliberately does not do, because the backends' contract gives those
jobs to others: retry (the core's `RetryPolicy` is the only one), follow
redirects, decompress, go through proxies (a backend falls back to its SDK
when one is configured), or sign (each backend signs its own requests).

Errors are Python's own: ``OSError`` subclasses for connections that fail,
break or end early (`ConnectionClosed`), ``TimeoutError`` for a connect or read
that takes longer than its timeout. The backend that made the request
translates them into asyncstore's errors, with the key and location.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import functools
import ssl
import time
import urllib.request
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from urllib.parse import quote, urlsplit

import anyio
import anyio.abc
import anyio.to_thread

from .._backend import ReadStream
from .._errors import TransportError
from .._stream._tasks import Slots
from .._types import ObjectInfo
from ._connections import Connection, ConnectionClosed, open_connection

__all__ = [
    "ConnectFailed",
    "ConnectionClosed",
    "HttpPool",
    "Response",
    "ResponseStream",
    "StreamedBody",
    "Target",
    "http_date",
    "proxied",
    "quoted",
    "target_of",
]


@functools.lru_cache(maxsize=1024)  # a service sends the same few dates over and over
def http_date(value: str | None) -> datetime.datetime | None:
    """A ``Last-Modified`` header as an aware datetime (None if absent or unreadable)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


@functools.lru_cache(maxsize=4096)  # the same keys are asked for again and again
def quoted(name: str, safe: str) -> str:
    """``urllib.parse.quote(name, safe=safe)``, remembered: an object name in a URL.

    ``quote`` encodes a name with a ``/`` (the usual key) a byte at a time in Python,
    which cost more than the rest of a small request's URL.
    """
    return quote(name, safe=safe)


#: The most bytes a response head may have.
HEAD_LIMIT = 64 * 1024
#: Bytes asked of the socket per receive while the size to come is unknown.
RECEIVE_SIZE = 256 * 1024
#: Seconds an idle connection is kept (services close theirs after 20 s or more).
IDLE_SECONDS = 15.0

#: A body up to this size is sent in one write with the head.
SMALL_BODY = 64 * 1024
#: Bytes per write of a larger body.
SEND_BLOCK = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class StreamedBody:
    """A request body of known length whose bytes come from an async iterable, sent as they come.

    Attributes:
        length: Its ``Content-Length``: the iterable must yield exactly that many bytes.
        chunks: The bytes, in order.
    """

    length: int
    chunks: AsyncIterable[bytes | memoryview]


def proxied(url: str) -> bool:
    """Whether the environment routes requests to ``url`` through a proxy (``*_PROXY``).

    The lean client does not speak to proxies: a backend sends such requests
    through its SDK instead.
    """
    split = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies.get(split.scheme) and not proxies.get("all"):
        return False
    return not urllib.request.proxy_bypass(split.hostname or "")


def target_of(url: str) -> Target | None:
    """The `Target` of an ``http(s)://host[:port]`` URL (None for another scheme)."""
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        return None
    return Target(
        split.scheme, split.hostname, split.port or (443 if split.scheme == "https" else 80)
    )


class ConnectFailed(ConnectionError):
    """No connection could be opened (refused, unreachable, no such host)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where requests go: scheme, host and port, and the ``Host`` header to send."""

    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Response:
    """A response: status, headers (lower-case names), and a body to read once.

    The connection stays taken until the body is read to its end (then it goes
    back to the pool) or `aclose` is called (then it is closed, unless the body
    was complete).

    Attributes:
        status: The status code.
        reason: The reason phrase.
        headers: The headers, names in lower case (repeated ones joined by ", ").
    """

    __slots__ = (
        "_chunked",
        "_conn",
        "_done",
        "_left",
        "_pool",
        "_reusable",
        "headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        pool: HttpPool,
        conn: Connection,
        status: int,
        reason: str,
        headers: dict[str, str],
        *,
        bodiless: bool,
        http10: bool = False,
    ) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        # HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes it unless
        # told to keep it (Python's http.server, the GCS emulator, answer in 1.0).
        connection = headers.get("connection", "").lower()
        self._reusable = connection == "keep-alive" if http10 else connection != "close"
        self._chunked = False
        self._left: int | None = 0
        if not bodiless:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._chunked = True  # _left: bytes left in the current chunk
            elif "content-length" in headers:
                value = headers["content-length"]
                if not value.isdigit():
                    raise ConnectionClosed(f"bad Content-Length {value!r}")
                self._left = int(value)
            else:
                self._left = None  # to the end of the connection
                self._reusable = False
        self._done = not self._chunked and self._left == 0

    @property
    def complete(self) -> bool:
        """Whether the body was read to its end."""
        return self._done

    @property
    def status_code(self) -> int:
        """The status (httpx's name for it)."""
        return self.status

    async def _finish(self) -> None:
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool._give_back(conn, reusable=self._reusable)

    async def _receive(self, conn: Connection, most: int) -> bytes:
        if conn.buffer:
            data, conn.buffer = conn.buffer[:most], conn.buffer[most:]
            return data
        return await self._pool._receive(conn, most)

    async def next_chunk(self, most: int = RECEIVE_SIZE) -> bytes:
        """The next bytes of the body, at most ``most`` (b"" once it is all read)."""
        conn = self._conn
        if self._done or conn is None:
            return b""
        try:
            if self._chunked:
                return await self._next_chunked(conn, most)
            if self._left is None:  # until the connection ends
                try:
                    return await self._receive(conn, most)
                except ConnectionClosed:
                    await self._finish()
                    return b""
            data = await self._receive(conn, min(most, self._left))
            self._left -= len(data)
            if self._left == 0:
                await self._finish()
        except BaseException:
            await self.aclose()
            raise
        return data

    async def readinto(self, view: memoryview) -> int:
        """Read the next bytes of the body into ``view``; return how many (0 at its end).

        Bytes arriving for a body of known length go straight from the socket into
        ``view`` (no intermediate copy): this is how large reads cross memory once.
        """
        conn = self._conn
        if self._done or conn is None or not len(view):
            return 0
        if self._chunked or self._left is None:  # framing to parse: from the pieces
            data = await self.next_chunk(len(view))
            view[: len(data)] = data
            return len(data)
        try:
            want = min(len(view), self._left)
            if conn.buffer:
                n = min(want, len(conn.buffer))
                view[:n] = conn.buffer[:n]
                conn.buffer = conn.buffer[n:]
            else:
                with conn.deadline(self._pool.read_timeout):
                    n = await conn.receive_into(view[:want])
            self._left -= n
            if self._left == 0:
                await self._finish()
        except BaseException:
            await self.aclose()
            raise
        return n

    async def _next_chunked(self, conn: Connection, most: int) -> bytes:
        if self._left == 0:
            line = await self._line(conn)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionClosed(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while await self._line(conn):  # trailers, up to the empty line
                    pass
                await self._finish()
                return b""
            self._left = size
        assert self._left is not None
        data = await self._receive(conn, min(most, self._left))
        self._left -= len(data)
        if self._left == 0:
            await self._line(conn)  # the CRLF after the chunk's data
        return data

    async def _line(self, conn: Connection) -> bytes:
        while (end := conn.buffer.find(b"\r\n")) < 0:
            if len(conn.buffer) > HEAD_LIMIT:
                raise ConnectionClosed("chunk line too long")
            conn.buffer += await self._pool._receive(conn, RECEIVE_SIZE)
        line, conn.buffer = conn.buffer[:end], conn.buffer[end + 2 :]
        return line

    async def read(self, limit: int | None = None) -> bytes:
        """The rest of the body (more than ``limit`` bytes is a `ConnectionClosed` error)."""
        pieces = []
        total = 0
        while data := await self.next_chunk():
            pieces.append(data)
            total += len(data)
            if limit is not None and total > limit:
                await self.aclose()
                raise ConnectionClosed(f"response body longer than {limit} bytes")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aread(self) -> bytes:
        """The rest of the body (httpx's name for `read`)."""
        return await self.read()

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was read, else closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            reusable = self._done and self._reusable
            self._done = True
            await self._pool._give_back(conn, reusable=reusable)


class ResponseStream(ReadStream):
    """A ReadStream over a lean response's body: a backend's `ReadStream` for its reads.

    `readinto` receives straight into the caller's buffer; iteration hands on
    pieces of up to ``piece`` bytes (the core hashes large pieces in a worker
    thread). A body cut short hands on the bytes that arrived, then raises.

    Args:
        info: The whole object's info.
        response: The response whose body this is.
        errors: Makes the context that translates the client's errors (the backend's).
        piece: The size of the pieces iteration gathers.
    """

    def __init__(
        self,
        info: ObjectInfo,
        response: Response,
        errors: Callable[[], AbstractContextManager[None]],
        *,
        piece: int = 1024 * 1024,
    ) -> None:
        self.info = info
        self._response = response
        self._errors = errors
        self._piece = piece
        self._error: BaseException | None = None

    async def readinto(self, view: memoryview) -> int:
        with self._errors():
            return await self._response.readinto(view)

    async def __anext__(self) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        pieces: list[bytes] = []
        size = 0
        try:
            with self._errors():
                while size < self._piece and (data := await self._response.next_chunk()):
                    pieces.append(data)
                    size += len(data)
        except TransportError as exc:
            if not pieces:
                raise
            self._error = exc  # raised by the next call: the core resumes after these bytes
        if not pieces:
            raise StopAsyncIteration
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def aclose(self) -> None:
        if not self._response.complete:
            with anyio.CancelScope(shield=True):
                await self._response.aclose()


class HttpPool:
    """Keep-alive connections to one host, at most ``max_connections`` in use at once.

    A request waits for a free connection (backpressure, never an error); an
    idle connection that the peer closed is noticed before it is used, and
    replaced. Use a pool in one event loop.

    Args:
        target: The host to talk to.
        max_connections: Requests in flight at once (each holds one connection
            until its response body is read or closed).
        connect_timeout: Seconds to wait for a connection (and a TLS handshake).
        read_timeout: Seconds to wait for each read (or write) on a connection.
        ssl_context: For https (default: the system's, made on first use in a
            worker thread).
        limiter: A limit of requests in flight shared with other requests of the
            backend (default: the pool's own, of ``max_connections``).
    """

    def __init__(
        self,
        target: Target,
        *,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        limiter: Slots | None = None,
    ) -> None:
        self.target = target
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl = ssl_context
        self._idle: list[Connection] = []
        self._slots: Slots | None = limiter
        self._host_line = f"Host: {target.host_header}\r\n".encode("latin-1")
        #: Connections opened so far.
        self.opened = 0

    @property
    def slots(self) -> Slots:
        """The limit of requests in flight (made in the running event loop)."""
        if self._slots is None:
            self._slots = Slots(self.max_connections)
        return self._slots

    async def _connect(self) -> Connection:
        target = self.target
        try:
            return await self._open(target)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise ConnectFailed(f"no connection to {target.host_header}: {exc}") from exc

    async def _open(self, target: Target) -> Connection:
        with anyio.fail_after(self.connect_timeout):
            context = None
            if target.scheme == "https":
                if self._ssl is None:
                    self._ssl = await anyio.to_thread.run_sync(ssl.create_default_context)
                context = self._ssl
            conn = await open_connection(target.host, target.port, context)
        self.opened += 1
        return conn

    async def _checkout(self) -> Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since <= IDLE_SECONDS and conn.looks_alive():
                return conn
            await conn.close()
        return await self._connect()

    async def _give_back(self, conn: Connection, *, reusable: bool) -> None:
        """Free the connection's slot; keep it for the next request, or close it."""
        token, conn.token = conn.token, None
        if token is not None:
            self.slots.release_on_behalf_of(token)
        if reusable:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            await conn.close()

    async def _receive(self, conn: Connection, most: int, *, timed: bool = True) -> bytes:
        """The next bytes from the connection, within the read timeout unless ``timed`` is
        False (the caller's own scope then bounds the wait)."""
        if not timed:
            return await conn.receive(most)
        with conn.deadline(self.read_timeout):
            return await conn.receive(most)

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes | memoryview | Sequence[bytes | memoryview] | StreamedBody | None = None,
        *,
        bounded: bool = True,
    ) -> Response:
        """Send a request and return the response once its head has arrived.

        Args:
            method: "GET", "PUT", ...
            target: The path and query, already percent-encoded.
            headers: Headers to send besides ``Host`` and ``Content-Length``.
            body: The body: a buffer, or buffers sent one after another (sent from
                the buffers as they are, in writes of at most `SEND_BLOCK` bytes), or a
                `StreamedBody` (each write, and the wait for the answer, then has a
                read timeout of its own: the whole upload may take longer).
            bounded: Whether the request waits for a slot of the limit of requests
                in flight. A lookup made by a caller that holds a slot already (and
                would otherwise wait for the slots of callers doing the same) is
                sent unbounded: there are never more of those than slots.

        Raises:
            OSError: the connection failed or broke (`ConnectionClosed`).
            TimeoutError: a connect, send or read took longer than its timeout.
        """
        items = headers.items() if isinstance(headers, Mapping) else headers
        lines = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), self._host_line]
        lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in items]
        pieces: list[memoryview] = []
        streamed: StreamedBody | None = None
        if isinstance(body, StreamedBody):
            streamed = body
            lines.append(b"Content-Length: %d\r\n\r\n" % body.length)
        elif body is not None:
            given = [body] if isinstance(body, (bytes, bytearray, memoryview)) else body
            pieces = [memoryview(piece).cast("B") for piece in given]
            lines.append(b"Content-Length: %d\r\n\r\n" % sum(len(p) for p in pieces))
        elif method in ("PUT", "POST", "PATCH"):
            lines.append(b"Content-Length: 0\r\n\r\n")
        else:
            lines.append(b"\r\n")
        head = b"".join(lines)
        token: object | None = None
        if bounded:
            token = object()
            await self.slots.acquire_on_behalf_of(token)
        try:
            conn = await self._checkout()
        except BaseException:
            if token is not None:
                self.slots.release_on_behalf_of(token)
            raise
        conn.token = token
        try:
            if streamed is not None:
                await self._send_streamed(conn, head, streamed)
                with conn.deadline(self.read_timeout):
                    response = await self._read_head(conn, method)
            else:
                # One deadline for the request and the response's head (each write and read
                # of a large body gets its own): a scope per socket call costs more than the
                # call.
                with conn.deadline(self.read_timeout):
                    if sum(len(piece) for piece in pieces) <= SMALL_BODY:
                        await conn.send(b"".join([head, *pieces]))
                    else:
                        await conn.send(head)
                        for piece in pieces:
                            for start in range(0, len(piece), SEND_BLOCK):
                                with conn.deadline(self.read_timeout):
                                    await conn.send(piece[start : start + SEND_BLOCK])
                    response = await self._read_head(conn, method)
        except BaseException:
            await self._give_back(conn, reusable=False)
            raise
        if response.complete:
            await response._finish()
        return response

    async def _send_streamed(self, conn: Connection, head: bytes, body: StreamedBody) -> None:
        """Send the head and a `StreamedBody`, its chunks awaited between the writes.

        Each write has a deadline of its own (nothing else may be awaited inside one).
        """
        with conn.deadline(self.read_timeout):
            await conn.send(head)
        sent = 0
        async for chunk in body.chunks:
            view = memoryview(chunk).cast("B")
            sent += view.nbytes
            if sent > body.length:
                break
            for start in range(0, view.nbytes, SEND_BLOCK):
                with conn.deadline(self.read_timeout):
                    await conn.send(view[start : start + SEND_BLOCK])
        if sent != body.length:
            raise ValueError(
                f"a request body of {body.length} bytes was given "
                f"{'more' if sent > body.length else sent}"
            )

    async def _read_head(self, conn: Connection, method: str) -> Response:
        while True:
            while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
                if len(conn.buffer) > HEAD_LIMIT:
                    raise ConnectionClosed("response head too long")
                conn.buffer += await self._receive(conn, RECEIVE_SIZE, timed=False)
            head = conn.buffer[:end].decode("latin-1")
            conn.buffer = conn.buffer[end + 4 :]
            status_line, _, rest = head.partition("\r\n")
            code = status_line[9:12]
            if not status_line.startswith("HTTP/1.") or not code.isdigit():
                raise ConnectionClosed(f"bad status line {status_line[:60]!r}")
            status = int(code)
            if not 100 <= status < 200:
                break  # an interim answer (100 Continue) is skipped: the real one follows
        headers: dict[str, str] = {}
        for line in rest.split("\r\n"):
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            if name in headers:
                headers[name] += ", " + value
            else:
                headers[name] = value
        bodiless = method == "HEAD" or status in (204, 304)
        http10 = status_line.startswith("HTTP/1.0")
        return Response(
            self, conn, status, status_line[13:], headers, bodiless=bodiless, http10=http10
        )

    async def aclose(self) -> None:
        """Close every idle connection (those in use close as their responses finish)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
