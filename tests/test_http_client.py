"""The lean HTTP/1.1 client (asyncstore/backends/_http.py), against scripted loopback servers.

Each test runs a server in its own event loop that reads request heads and answers with
exactly the bytes the test gives (framing by Content-Length, chunked, to the end of the
connection; HTTP/1.0; interim answers; peers that close, stall or cut a body short), and
checks what the client made of them: the bodies, which connections were reused, the errors.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from asyncstore.backends._http import ConnectionClosed, HttpPool, StreamedBody, Target, http_date

pytestmark = pytest.mark.anyio

Handler = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One accepted connection, as the server script sees it."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def request(self) -> tuple[str, dict[str, str], bytes] | None:
        """The next request (start line, headers, body by Content-Length); None at EOF."""
        while b"\r\n\r\n" not in self.buffer:
            try:
                self.buffer += await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        while len(self.buffer) < size:
            self.buffer += await self.stream.receive()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return lines[0], headers, body

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await self.handler(Peer(stream))


@asynccontextmanager
async def serving(handler: Handler, *, tls: bool = False) -> AsyncIterator[tuple[Server, HttpPool]]:
    """A scripted server on 127.0.0.1 and a pool to it; with ``tls``, over TLS with a
    certificate for 127.0.0.1 from a throwaway CA (trustme)."""
    server = Server(handler)
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.port = tcp.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = tcp
    client_context = None
    if tls:
        import ssl

        import trustme
        from anyio.streams.tls import TLSListener

        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        listener = TLSListener(tcp, server_context, standard_compatible=False)
    pool = HttpPool(
        Target("https" if tls else "http", "127.0.0.1", server.port),
        max_connections=4,
        connect_timeout=10,
        read_timeout=10,
        ssl_context=client_context,
    )
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve)
        try:
            yield server, pool
        finally:
            await pool.aclose()
            tg.cancel_scope.cancel()


def answer(body: bytes, *headers: str, status: str = "200 OK", version: str = "1.1") -> bytes:
    head = [f"HTTP/{version} {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def every_request(peer: Peer, reply: Callable[[str, dict[str, str], bytes], bytes]) -> None:
    while (request := await peer.request()) is not None:
        await peer.send(reply(*request))


async def test_a_body_by_content_length_keeps_the_connection() -> None:
    async def handler(peer: Peer) -> None:
        await every_request(peer, lambda line, headers, body: answer(b"hello " + body))

    async with serving(handler) as (server, pool):
        for word in (b"one", b"two", b"three"):
            response = await pool.request("PUT", "/k", {"x-test": "1"}, word)
            assert response.status == 200
            assert await response.read() == b"hello " + word
    assert server.connections == 1


async def test_a_chunked_body_with_trailers_is_decoded_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )

    async def handler(peer: Peer) -> None:
        await every_request(peer, lambda *request: chunked)

    async with serving(handler) as (server, pool):
        for _ in range(2):
            response = await pool.request("GET", "/k")
            assert await response.read() == b"hello world"
    assert server.connections == 1


async def test_http10_answers_close_the_connection_unless_kept_alive() -> None:
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        kept = "keep-alive" in request[0]
        await peer.send(answer(b"x", *(["Connection: keep-alive"] if kept else []), version="1.0"))
        if kept:
            await every_request(
                peer, lambda *r: answer(b"y", "Connection: keep-alive", version="1.0")
            )

    async with serving(handler) as (server, pool):
        for _ in range(2):  # HTTP/1.0 without keep-alive: the server closes; never reused
            assert await (await pool.request("GET", "/close")).read() == b"x"
        assert server.connections == 2
        assert await (await pool.request("GET", "/keep-alive")).read() == b"x"
        assert await (await pool.request("GET", "/again")).read() == b"y"
    assert server.connections == 3


async def test_connection_close_is_honoured_and_a_body_to_eof_is_read_whole() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end")

    async with serving(handler) as (server, pool):
        for _ in range(2):
            assert await (await pool.request("GET", "/k")).read() == b"to the end"
    assert server.connections == 2


async def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    async def handler(peer: Peer) -> None:
        async def reply(line: str, headers: dict[str, str], body: bytes) -> None:
            if line.startswith("HEAD"):
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n")
            else:
                await peer.send(b"HTTP/1.1 204 No Content\r\n\r\n")

        while (request := await peer.request()) is not None:
            await reply(*request)

    async with serving(handler) as (server, pool):
        head = await pool.request("HEAD", "/k")
        assert head.complete and head.headers["content-length"] == "12345"
        assert await head.read() == b""
        deleted = await pool.request("DELETE", "/k")
        assert deleted.status == 204 and deleted.complete
    assert server.connections == 1


async def test_an_interim_100_continue_is_skipped() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"done"))

    async with serving(handler) as (_, pool):
        response = await pool.request("PUT", "/k", {}, b"body")
        assert (response.status, await response.read()) == (200, b"done")


async def test_an_idle_connection_the_peer_closed_is_replaced_without_an_error() -> None:
    first_answered = anyio.Event()

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(b"first"))  # says nothing of closing, then closes
        first_answered.set()
        await peer.stream.aclose()

    async with serving(handler) as (server, pool):
        assert await (await pool.request("GET", "/1")).read() == b"first"
        await first_answered.wait()
        idle = pool._idle[0]
        with anyio.fail_after(10):
            while idle.looks_alive():  # until the FIN reaches the idle connection
                await anyio.sleep(0.001)
        assert await (await pool.request("GET", "/2")).read() == b"first"
    assert server.connections == 2


async def test_a_body_cut_short_gives_its_bytes_then_connection_closed() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await peer.stream.aclose()

    async with serving(handler) as (_, pool):
        response = await pool.request("GET", "/k")
        assert await response.next_chunk() == b"x" * 10
        with pytest.raises(ConnectionClosed):
            await response.next_chunk()


@pytest.mark.parametrize(
    "reply",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_a_malformed_answer_is_a_connection_error(reply: bytes) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(reply)
        await anyio.sleep_forever()

    async with serving(handler) as (_, pool):
        with pytest.raises(ConnectionClosed):
            response = await pool.request("GET", "/k")
            await response.read()


async def test_a_stalled_answer_is_a_timeout_error() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await anyio.sleep_forever()

    async with serving(handler) as (_, pool):
        pool.read_timeout = 0.2
        with anyio.fail_after(30), pytest.raises(TimeoutError):
            await pool.request("GET", "/k")
        assert pool.slots.borrowed_tokens == 0  # the connection was given up, not leaked


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("how", ["read", "readinto"])
async def test_a_body_that_stalls_is_a_timeout_error_and_frees_its_connection(
    how: str, tls: bool
) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await anyio.sleep_forever()

    async with serving(handler, tls=tls) as (_, pool):
        response = await pool.request("GET", "/k")
        pool.read_timeout = 0.2
        with anyio.fail_after(30), pytest.raises(TimeoutError, match=r"no answer within 0\.2 s"):
            if how == "read":
                await response.read()
            else:
                view = memoryview(bytearray(10))
                assert await response.readinto(view) == 3  # what had arrived
                await response.readinto(view[3:])
        assert pool.slots.borrowed_tokens == 0
        assert not pool._idle  # closed, not kept: its state is unknown


async def test_deadlines_nest_and_the_earlier_one_holds() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await anyio.sleep_forever()

    async with serving(handler) as (_, pool):
        for outer, inner in ((3600, 0.1), (0.1, 3600)):
            conn = await pool._checkout()
            try:
                await conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with (
                    anyio.fail_after(30),
                    pytest.raises(TimeoutError, match=r"within 0\.1 s"),
                    conn.deadline(outer),
                    conn.deadline(inner),
                ):
                    await conn.receive(100)
                # Left, the deadline no longer applies: a wait is only the caller's to bound.
                with anyio.move_on_after(0.3) as waited:
                    await conn.receive(100)
                assert waited.cancelled_caught
            finally:
                await conn.close()


async def test_requests_in_flight_never_exceed_max_connections() -> None:
    in_flight = peak = 0
    release = anyio.Event()

    async def handler(peer: Peer) -> None:
        nonlocal in_flight, peak
        while (request := await peer.request()) is not None:
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1
            await peer.send(answer(request[0].encode()))

    async with serving(handler) as (server, pool):
        results = []

        async def get(index: int) -> None:
            results.append(await (await pool.request("GET", f"/{index}")).read())

        async with anyio.create_task_group() as tg:
            for index in range(10):
                tg.start_soon(get, index)
            with anyio.fail_after(30):
                while in_flight < pool.max_connections:
                    await anyio.sleep(0.001)
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert peak == pool.max_connections == 4
    assert len(results) == 10
    assert server.connections == 4


async def test_a_body_of_several_buffers_is_sent_whole() -> None:
    received: list[bytes] = []

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            received.append(request[2])
            await peer.send(answer(b""))

    pieces = [b"head-", memoryview(bytes(range(256)) * 1000), b"-tail"]
    async with serving(handler) as (_, pool):
        await (await pool.request("POST", "/k", {}, pieces)).read()
        await (await pool.request("POST", "/k", {}, [b"small", b"-one"])).read()
    assert received == [b"".join(bytes(p) for p in pieces), b"small-one"]


async def test_a_streamed_body_is_sent_as_its_chunks_come_and_must_have_its_length() -> None:
    """A `StreamedBody`'s chunks are awaited between writes (here each from a worker
    thread, as the core reads a file); one that ends short of its ``Content-Length``
    is an error, and its connection, with a request cut short, is never reused."""
    received: list[bytes] = []

    async def handler(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            received.append(request[2])
            await peer.send(answer(b""))

    blocks = [bytes([n]) * (700 * 1024) for n in range(5)]

    async def chunks(count: int) -> AsyncIterator[memoryview]:
        for block in blocks[:count]:
            yield memoryview(await anyio.to_thread.run_sync(bytes, block))

    whole = sum(len(b) for b in blocks)
    async with serving(handler) as (server, pool):
        await (await pool.request("PUT", "/k", {}, StreamedBody(whole, chunks(5)))).read()
        with pytest.raises(ValueError, match=f"{whole} bytes was given {whole - len(blocks[4])}"):
            await pool.request("PUT", "/k", {}, StreamedBody(whole, chunks(4)))
        await (await pool.request("PUT", "/k", {}, b"after")).read()
    assert received[0] == b"".join(blocks)
    assert received[-1] == b"after"
    assert server.connections == 2  # the cut-short request's connection was closed


def test_http_date_reads_a_last_modified_header_as_an_aware_datetime() -> None:
    when = http_date("Sun, 06 Dec 2026 22:50:35 GMT")
    assert when == datetime.datetime(2026, 12, 6, 22, 50, 35, tzinfo=datetime.timezone.utc)
    assert http_date("not a date") is None
    assert http_date(None) is None
    assert http_date("") is None


# -- TLS ------------------------------------------------------------------------------------------


async def test_requests_and_bodies_cross_tls_and_reuse_the_connection() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: several TLS records, read in place

    async def handler(peer: Peer) -> None:
        await every_request(peer, lambda line, headers, sent: answer(body + sent))

    async with serving(handler, tls=True) as (server, pool):
        for word in (b"one", b"two"):
            response = await pool.request("PUT", "/k", {}, word)
            view = memoryview(bytearray(len(body) + len(word)))
            got = 0
            while n := await response.readinto(view[got:]):
                got += n
            assert bytes(view[:got]) == body + word
    assert server.connections == 1


class _CountingSocket:
    """A socket's reads counted, including those that found nothing to read yet."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.reads = 0
        self.empty = 0
        self.largest = 0  # the largest buffer a read was given

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def send(self, data: Any) -> int:
        return int(self._sock.send(data))

    def _counted(self, read: Callable[[Any], Any], arg: Any) -> Any:
        self.reads += 1
        try:
            return read(arg)
        except BlockingIOError:
            self.empty += 1
            raise

    def recv(self, most: int) -> bytes:
        return bytes(self._counted(self._sock.recv, most))

    def recv_into(self, view: memoryview) -> int:
        self.largest = max(self.largest, len(view))
        return int(self._counted(self._sock.recv_into, view))


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_the_answer_is_waited_for_before_it_is_read() -> None:
    """A request's answer is a round trip away: trio's connection waits for the socket
    to be readable first, rather than failing a read (a system call and an exception)."""
    release = anyio.Event()

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await release.wait()  # the answer comes once the client is surely waiting
            await peer.send(answer(b"pong"))

    async with serving(handler) as (_, pool):
        conn = await pool._checkout()
        counting = _CountingSocket(conn._raw)  # type: ignore[attr-defined]
        conn._raw = counting  # type: ignore[attr-defined]
        await pool._give_back(conn, reusable=True)
        bodies = []

        async def get() -> None:
            response = await pool.request("GET", "/k")
            bodies.append(await response.read())

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await anyio.wait_all_tasks_blocked()
            release.set()
        assert bodies == [b"pong"]
        assert counting.reads >= 1
        assert counting.empty == 0


async def test_one_read_copies_at_most_a_slice_into_the_callers_buffer() -> None:
    """A large body is received into the caller's buffer a slice per socket read: the
    copy runs on the event loop's thread, and one turn of the loop serves every ready
    connection, so a read of all a socket holds (MiBs) would stall the loop."""
    from asyncstore.backends import _connections

    body = bytes(range(256)) * (12 * 1024)  # 3 MiB

    async def handler(peer: Peer) -> None:
        await every_request(peer, lambda line, headers, _: answer(body))

    async with serving(handler) as (_, pool):
        conn = await pool._checkout()
        proto = getattr(conn, "_proto", None)
        if proto is not None:  # asyncio: the protocol hands the transport a slice
            target = memoryview(bytearray(len(body)))
            proto.target, proto.filled = target, 0
            assert len(proto.get_buffer(-1)) == _connections.READ_SLICE
            proto.filled = len(body) - 10
            assert len(proto.get_buffer(-1)) == 10
            proto.target, proto.filled = None, 0
        else:  # trio: recv_into is given a slice
            counting = _CountingSocket(conn._raw)  # type: ignore[attr-defined]
            conn._raw = counting  # type: ignore[attr-defined]
        await pool._give_back(conn, reusable=True)
        response = await pool.request("GET", "/big")
        view = memoryview(bytearray(len(body)))
        got = 0
        while n := await response.readinto(view[got:]):
            got += n
        assert bytes(view) == body
        if proto is None:
            assert counting.largest <= _connections.READ_SLICE


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_a_reader_that_finds_bytes_waiting_yields_every_yield_bytes() -> None:
    """Under trio a reader reads what the socket holds without waiting: it yields to the
    scheduler after each `YIELD_BYTES` read; else one range of a download held the event
    loop for the several MiB a loopback socket holds (9-21 ms of worst lag)."""
    import trio

    from asyncstore.backends import _connections

    class Flowing:
        """A socket whose bytes are always there: no read ever waits."""

        def recv_into(self, view: memoryview) -> int:
            view[:1] = b"x"
            return len(view)

    conn = _connections._StreamConnection(None, Flowing())  # type: ignore[arg-type]
    total = 4 * _connections.YIELD_BYTES
    view = memoryview(bytearray(64 * 1024))
    reader: list[Any] = []
    steps = 0

    class CountSteps(trio.abc.Instrument):
        def before_task_step(self, task: Any) -> None:
            nonlocal steps
            steps += task in reader

    async def read_all() -> None:
        reader.append(trio.lowlevel.current_task())
        got = 0
        while got < total:
            got += await conn.receive_into(view)

    instrument = CountSteps()
    trio.lowlevel.add_instrument(instrument)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    # Counted from the reader's first yield on: one after each YIELD_BYTES but the last.
    assert steps >= total // _connections.YIELD_BYTES - 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_reader_is_woken_per_wake_bytes_not_per_slice() -> None:
    """Under asyncio the reader of a large body is woken once `WAKE_BYTES` have arrived
    (or at its deadline, with what did): a wake-up per slice cost 0.1 CPU s/GiB."""
    import asyncio

    from asyncstore.backends import _connections

    proto = _connections._Protocol()
    conn = _connections._AsyncioConnection(proto, None)
    view = memoryview(bytearray(2 * _connections.WAKE_BYTES))
    slices = _connections.WAKE_BYTES // _connections.READ_SLICE

    def arrive() -> None:  # what the transport does with each read from the socket
        buf = proto.get_buffer(-1)
        buf[:] = b"x" * len(buf)
        proto.buffer_updated(len(buf))

    reader = asyncio.ensure_future(conn.receive_into(view))
    await asyncio.sleep(0)  # the reader is waiting now
    for _ in range(slices - 1):
        arrive()
        await asyncio.sleep(0)
        assert not reader.done()
    arrive()
    assert await reader == _connections.WAKE_BYTES

    # At its deadline, a reader with fewer bytes is woken with them (not a timeout).
    with conn.deadline(0.05):
        reader = asyncio.ensure_future(conn.receive_into(view))
        await asyncio.sleep(0)
        arrive()
        assert await reader == _connections.READ_SLICE
