"""The lean HTTP client's connections: bytes out, bytes in, and bytes straight into a buffer.

A response body of a large read should cross memory once: from the kernel into
the buffer that the core hashes and writes out. Two implementations give that,
one per kind of event loop, behind one small interface (`Connection`):

* under asyncio, an ``asyncio.BufferedProtocol``: the transport reads from the
  socket straight into the buffer a `Connection.receive_into` caller gave it
  (and into a scratch buffer otherwise), with no per-read re-registration of
  the socket and no intermediate ``bytes`` object;
* under trio (and any other anyio backend), anyio's socket stream, with
  `Connection.receive_into` reading the raw socket into the buffer once it is
  readable (TLS streams copy from what they decrypted).

Errors are Python's own (`ConnectionClosed` is a ``ConnectionError``); the
backend that made the request names the key and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
import anyio.abc
import sniffio
from anyio.abc import SocketAttribute

__all__ = ["ConnectionClosed", "Connection", "open_connection"]

T = TypeVar("T")

#: Bytes asked of the socket per read when no caller's buffer is waiting.
SCRATCH_SIZE = 256 * 1024
#: Received bytes held for a reader before the socket stops being read (backpressure).
HIGH_WATER = 4 * 1024 * 1024
#: The most bytes one read copies into a caller's buffer. The copy (and the first touch
#: of the buffer's pages) runs on the event loop's thread, and the loop serves every
#: connection that is ready in one turn: eight ranges that each took the several MiB
#: a loopback socket holds made one turn last 5-30 ms (figures: docs/design.md). Under
#: trio a reader reads on while bytes are there, so the slice bounds the copy, not the
#: turn: `YIELD_BYTES` does.
READ_SLICE = 256 * 1024
#: Under trio, a reader that finds bytes waiting reads them without waiting; after this
#: many read with no wait it yields to the scheduler once (a checkpoint), so that one
#: range of a download cannot hold the event loop for the several MiB a loopback socket
#: holds (and the first touch of its buffer's pages): 9-21 ms of worst lag before.
YIELD_BYTES = READ_SLICE
#: A reader waiting for bytes into its buffer (asyncio) is woken once this many have
#: arrived, its buffer is full or the connection ends: a wake-up per slice cost 0.1
#: CPU s/GiB. A deadline that passes after some bytes arrived wakes it with them.
WAKE_BYTES = 1024 * 1024


class ConnectionClosed(ConnectionError):
    """The connection ended or broke before the response did."""


class Connection:
    """One open connection (see the module doc). Not safe for two tasks at once.

    Attributes:
        buffer: Bytes received after the end of the last answer's head, not yet consumed.
        idle_since: When the connection last went back to the pool (``time.monotonic``).
        token: What holds the pool's slot while the connection is in use.
    """

    __slots__ = ("_limit", "_until", "buffer", "idle_since", "token")

    def __init__(self) -> None:
        self.buffer = b""
        self.idle_since = 0.0
        self.token: object | None = None
        #: The time (on `_now`'s clock) the connection's waits give up at (None: no
        #: deadline), and the seconds it was set from (for the message).
        self._until: float | None = None
        self._limit = 0.0

    async def send(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    async def receive(self, most: int) -> bytes:
        """Up to ``most`` bytes (never empty).

        Raises:
            ConnectionClosed: the peer closed the connection, or it broke.
        """
        raise NotImplementedError

    async def receive_into(self, view: memoryview) -> int:
        """Read into ``view``; return how many bytes (at least one).

        Raises:
            ConnectionClosed: the peer closed the connection, or it broke.
        """
        raise NotImplementedError

    def fileno(self) -> int | None:
        """The socket's file descriptor, if the connection is plain TCP."""
        return None

    def deadline(self, seconds: float) -> _Deadline:
        """A block whose waits on this connection raise TimeoutError after ``seconds``.

        Only the connection's own sends and receives may be awaited in the block.
        """
        return _Deadline(self, seconds)

    def _now(self) -> float:
        return anyio.current_time()

    def _timeout(self) -> TimeoutError:
        return _no_answer(self._limit)

    def looks_alive(self) -> bool:
        """False if the peer closed (or sent anything) while the connection was idle."""
        fd = self.fileno()
        if self.buffer:
            return False
        if fd is None:
            return True
        try:  # readable while idle: an EOF, or bytes nobody asked for; never reusable
            readable, _, _ = select.select([fd], (), (), 0)
        except (OSError, ValueError):
            return False
        return not readable

    async def close(self) -> None:
        raise NotImplementedError


async def open_connection(host: str, port: int, ssl_context: ssl.SSLContext | None) -> Connection:
    """Open a connection to ``host:port`` (TLS with ``ssl_context``), for the running loop.

    Raises:
        OSError: it could not be opened.
    """
    if sniffio.current_async_library() == "asyncio":
        return await _AsyncioConnection.open(host, port, ssl_context)
    return await _StreamConnection.open(host, port, ssl_context)


class _Deadline:
    """A connection's deadline: a time its waits give up at, with no cancel scope.

    Entering sets the connection's deadline (the earlier of an enclosing one and
    ``seconds`` from now), leaving restores the one before. Only a wait that
    actually waits pays for it (a loop timer under asyncio, a cancel scope under
    trio); bytes already received cost nothing. A cancel scope per request and per
    read cost more than the rest of a small request's waits.
    """

    __slots__ = ("_conn", "_saved", "_seconds")

    def __init__(self, conn: Connection, seconds: float) -> None:
        self._conn = conn
        self._seconds = seconds
        self._saved: tuple[float | None, float] = (None, 0.0)

    def __enter__(self) -> None:
        conn = self._conn
        self._saved = (conn._until, conn._limit)
        until = conn._now() + self._seconds
        if conn._until is None or until < conn._until:
            conn._until, conn._limit = until, self._seconds

    def __exit__(self, *exc_info: object) -> None:
        self._conn._until, self._conn._limit = self._saved


# -- asyncio -------------------------------------------------------------------------------------


class _Protocol(asyncio.BufferedProtocol):
    """Reads into the waiting caller's buffer when there is one, else into a scratch buffer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # A memoryview, never the bytearray itself: asyncio's TLS transport fills the
        # buffer record by record through ``buf[offset:]``, which copies a bytearray, so
        # every record after the first would be lost (zeros in the body).
        self.scratch = memoryview(bytearray(SCRATCH_SIZE))
        self.pending = bytearray()  # received into the scratch buffer, not yet taken
        self.target: memoryview | None = None  # a caller's buffer being filled
        self.filled = 0
        self.wake_at = 0  # the reader of ``target`` is woken once this much is filled
        self.into_target = False
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        self.drained: asyncio.Future[None] | None = None
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        target = self.target
        if target is not None and not self.pending and self.filled < len(target):
            self.into_target = True
            return target[self.filled : self.filled + READ_SLICE]
        self.into_target = False
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self.into_target:
            self.filled += nbytes
            if self.filled < self.wake_at:
                return  # more to come before the reader is woken (see WAKE_BYTES)
        else:
            self.pending += self.scratch[:nbytes]
            if len(self.pending) > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(ConnectionClosed("the connection was lost"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resume(self) -> None:
        if self.paused and len(self.pending) <= HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()


def _no_answer(seconds: float) -> TimeoutError:
    return TimeoutError(f"no answer within {seconds} s")


def _expire(waiter: asyncio.Future[None], seconds: float, proto: _Protocol) -> None:
    if waiter.done():
        return
    if proto.filled:  # bytes arrived in time, fewer than the reader is woken for
        waiter.set_result(None)
    else:  # the error is made only when a deadline passes
        waiter.set_exception(_no_answer(seconds))


class _AsyncioConnection(Connection):
    __slots__ = ("_fd", "_proto")

    def __init__(self, protocol: _Protocol, fd: int | None) -> None:
        super().__init__()
        self._proto = protocol
        self._fd = fd

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _until_done(self, waiter: asyncio.Future[None]) -> None:
        """Wait for ``waiter``, within the connection's deadline if it has one."""
        if self._until is None:
            await waiter
            return
        timer = asyncio.get_running_loop().call_at(
            self._until, _expire, waiter, self._limit, self._proto
        )
        try:
            await waiter
        finally:
            timer.cancel()

    @classmethod
    async def open(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> _AsyncioConnection:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            _Protocol, host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno() if sock is not None and ssl_context is None else None
        return cls(protocol, fd)

    def fileno(self) -> int | None:
        return self._fd

    def _broken(self) -> ConnectionClosed:
        error = self._proto.error
        closed = ConnectionClosed("the connection ended" if error is None else str(error))
        closed.__cause__ = error
        return closed

    async def _wait(self) -> None:
        proto = self._proto
        proto.waiter = asyncio.get_running_loop().create_future()
        try:
            await self._until_done(proto.waiter)
        finally:
            proto.waiter = None

    async def send(self, data: bytes | memoryview) -> None:
        proto = self._proto
        transport = proto.transport
        if transport is None or transport.is_closing() or proto.error is not None:
            raise self._broken()
        transport.write(data)
        if proto.writing_paused:
            proto.drained = asyncio.get_running_loop().create_future()
            try:
                await self._until_done(proto.drained)
            finally:
                proto.drained = None

    async def receive(self, most: int) -> bytes:
        proto = self._proto
        while not proto.pending:
            if proto.eof:
                raise self._broken()
            await self._wait()
        data = bytes(proto.pending[:most])
        del proto.pending[:most]
        proto.resume()
        return data

    async def receive_into(self, view: memoryview) -> int:
        proto = self._proto
        if proto.pending:
            n = min(len(view), len(proto.pending))
            view[:n] = proto.pending[:n]
            del proto.pending[:n]
            proto.resume()
            return n
        if proto.eof:
            raise self._broken()
        proto.target, proto.filled = view, 0
        proto.wake_at = min(len(view), WAKE_BYTES)
        try:
            while not proto.filled:
                if proto.eof:
                    raise self._broken()
                await self._wait()
            return proto.filled
        finally:
            proto.target, proto.filled = None, 0

    async def close(self) -> None:
        transport = self._proto.transport
        if transport is not None:
            transport.abort()  # no lingering: the connection is not reused


# -- anyio (trio, ...) -------------------------------------------------------------------------


class _StreamConnection(Connection):
    """A connection on an anyio socket stream: trio's, in practice.

    Under trio the waits go to trio itself (``trio.lowlevel.wait_readable``, a
    ``trio.CancelScope`` for the deadline), not through anyio's wrappers: each
    wrapper layer cost more than the request's own parsing. And after a request
    is sent, the answer is a round trip away: the first read waits for the socket
    to be readable before it asks, rather than failing a ``recv`` first (a system
    call and an exception per request).
    """

    __slots__ = (
        "_answer_due",
        "_checkpoint",
        "_raw",
        "_scope",
        "_stream",
        "_time",
        "_unyielded",
        "_wait_readable",
        "_wait_writable",
    )

    def __init__(self, stream: anyio.abc.ByteStream, raw: socket.socket | None) -> None:
        super().__init__()
        self._stream = stream
        self._raw = raw
        self._answer_due = False
        #: Bytes read since the reader last waited or yielded (see `YIELD_BYTES`).
        self._unyielded = 0
        if sniffio.current_async_library() == "trio":
            import trio

            self._scope: Callable[..., Any] = trio.CancelScope
            self._time: Callable[[], float] = trio.current_time
            self._wait_readable: Callable[[Any], Awaitable[None]] = trio.lowlevel.wait_readable
            self._wait_writable: Callable[[Any], Awaitable[None]] = trio.lowlevel.wait_writable
            self._checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
        else:
            self._scope = anyio.CancelScope
            self._time = anyio.current_time
            self._wait_readable = anyio.wait_readable
            self._wait_writable = anyio.wait_writable
            self._checkpoint = anyio.lowlevel.checkpoint

    @classmethod
    async def open(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> _StreamConnection:
        if ssl_context is not None:
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                host, port, ssl_context=ssl_context, tls_standard_compatible=False
            )
            return cls(stream, None)
        tcp = await anyio.connect_tcp(host, port)
        return cls(tcp, tcp.extra(SocketAttribute.raw_socket))

    def fileno(self) -> int | None:
        return self._raw.fileno() if self._raw is not None else None

    def _now(self) -> float:
        return self._time()

    async def send(self, data: bytes | memoryview) -> None:
        raw = self._raw
        if raw is None:  # TLS: the stream encrypts
            try:
                await self._within(self._stream.send, data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise ConnectionClosed("the connection broke") from exc
            return
        # Straight to the socket, as receive_into reads: a request and its small body
        # fit in the send buffer, so most sends are one system call and no wait.
        view = memoryview(data)
        while view:
            try:
                sent = raw.send(view)
            except BlockingIOError:
                await self._within(self._wait_writable, raw)
                continue
            except OSError as exc:
                raise ConnectionClosed(f"the connection broke: {exc}") from exc
            view = view[sent:]
        self._answer_due = True

    async def receive(self, most: int) -> bytes:
        raw = self._raw
        if raw is None:  # TLS: what the stream decrypted
            try:
                return await self._within(self._stream.receive, most)
            except (
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
            ) as exc:
                raise ConnectionClosed("the connection ended") from exc
        return await self._read_raw(raw, raw.recv, most)

    async def _within(self, wait: Callable[[Any], Awaitable[T]], arg: Any) -> T:
        """``await wait(arg)``, given up with TimeoutError at the connection's deadline."""
        if self._until is None:
            return await wait(arg)
        with self._scope(deadline=self._until):
            return await wait(arg)
        raise self._timeout()  # reached only when the scope's deadline cancelled the wait

    async def receive_into(self, view: memoryview) -> int:
        raw = self._raw
        if raw is None:  # TLS: take what the stream decrypted
            data = await self.receive(len(view))
            view[: len(data)] = data
            return len(data)
        return await self._read_raw(raw, raw.recv_into, view[:READ_SLICE])

    async def _read_raw(self, raw: socket.socket, read: Callable[[Any], T], arg: Any) -> T:
        """``read(arg)`` (``recv`` or ``recv_into``) once the socket is readable: what it
        returned, never empty."""
        if self._answer_due:  # the answer to what was just sent is a round trip away
            self._answer_due = False
            self._unyielded = 0
            await self._within(self._wait_readable, raw)
        elif self._unyielded >= YIELD_BYTES:  # read on long enough without a wait
            self._unyielded = 0
            await self._checkpoint()
        while True:
            try:
                got = read(arg)
            except BlockingIOError:
                self._unyielded = 0
                await self._within(self._wait_readable, raw)
                continue
            except OSError as exc:
                raise ConnectionClosed(f"the connection broke: {exc}") from exc
            if not got:
                raise ConnectionClosed("the connection ended")
            self._unyielded += got if isinstance(got, int) else len(cast(bytes, got))
            return got

    async def close(self) -> None:
        broken = (OSError, anyio.BrokenResourceError)
        with anyio.CancelScope(shield=True), contextlib.suppress(*broken):
            await anyio.aclose_forcefully(self._stream)
