"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, and the client's record of what it got.

`FaultProxy` sits between asyncstore and a real server (moto, the GCS
emulator, Azurite) and forwards every request, except those that a `Fault`
matches, which it breaks in one of these ways:

- ``reset_request``: forward the request head and ``after`` bytes of its body,
  then reset both connections (RST, not FIN);
- ``reset_response``: forward the response head and ``after`` bytes of its body,
  wait until the client's side has acknowledged them (a reset discards what
  the sender has not yet delivered), then reset the client's connection; with
  ``after=None``, reset before the head: the server did the work, the client
  never hears of it;
- ``stall``: forward the response head and ``after`` bytes of its body (with
  ``after=None``, nothing), then send nothing for ``seconds`` (past the
  client's read timeout) and close;
- ``status``: answer ``status`` itself (503, 500, S3's SlowDown, ...), without
  passing the request on;
- refusing: `FaultProxy.refuse` closes the listening socket for a while, so
  connections are refused as by a restarting server.

Each connection carries one request: the proxy rewrites ``Connection: close``
into the request and the response, then pipes the bytes through, counting the
body bytes that pass. That keeps the proxy small (no body framing beyond what
a `status` answer needs) and makes every request's fate independent.

Runs in the test's own event loop (asyncio or trio) through anyio, and only
for as long as its ``async with`` block.

`ReadLog` and `UploadLog` record, on the client's side, what each ranged read
received and how each part's attempt ended: the fault tests assert on them
rather than on what the proxy sent, since a request the machine was merely slow
to answer fails and is retried too.
"""

from __future__ import annotations

import array
import dataclasses
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from .._errors import TransportError

__all__ = [
    "Attempt",
    "Fault",
    "FaultProxy",
    "ReadLog",
    "Received",
    "Seen",
    "UploadLog",
    "assert_only_failed_parts_were_sent_again",
    "assert_resumed_after_what_arrived",
    "method_is",
    "target_has",
    "unanswered_listener",
]

HEAD_LIMIT = 64 * 1024
READ_SIZE = 256 * 1024
#: The longest a reset waits for the client to acknowledge the bytes sent before it.
DELIVERY_BOUND = 30.0
#: The longest a test waits for a request it expects the client to send.
REQUEST_BOUND = 60.0
#: Pending connections the listening socket holds (a refused one never reaches it).
BACKLOG = 128


@dataclasses.dataclass
class Seen:
    """A request as the proxy saw it."""

    method: str
    target: str
    headers: dict[str, str]
    fault: str | None = None
    #: The status of the server's answer, once the proxy has read its head (None: the
    #: server never answered, as far as the proxy knows).
    status: int | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclasses.dataclass
class Fault:
    """What to break, and how often.

    Attributes:
        kind: ``reset_request``, ``reset_response``, ``stall`` or ``status``.
        match: Fires on requests for which this is true (default: every request).
        skip: Let this many matching requests through first.
        times: Fire this many times, then let requests through (None: forever).
        after: Body bytes to pass before a reset or stall; None: stop before the
            response head (for ``reset_response`` and ``stall``).
        seconds: How long a stall lasts.
        status: The status line's code for ``status``.
        body: The answer's body for ``status``.
        content_type: The answer's content type for ``status``.
    """

    kind: str
    match: Callable[[Seen], bool] = lambda seen: True
    skip: int = 0
    times: int | None = 1
    after: int | None = 0
    seconds: float = 30.0
    status: int = 503
    body: bytes = b""
    content_type: str = "application/xml"
    fired: int = 0
    matched: int = 0

    def __post_init__(self) -> None:
        if self.kind not in {"reset_request", "reset_response", "stall", "status"}:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def take(self, seen: Seen) -> bool:
        """Whether this fault fires for ``seen`` (counting it if it does)."""
        if not self.match(seen):
            return False
        self.matched += 1
        if self.matched <= self.skip or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


def method_is(*methods: str) -> Callable[[Seen], bool]:
    """A matcher for requests with one of ``methods``."""
    wanted = {m.upper() for m in methods}
    return lambda seen: seen.method in wanted


def target_has(pattern: str, *methods: str) -> Callable[[Seen], bool]:
    """A matcher for requests whose target matches the regex ``pattern`` (and method)."""
    regex = re.compile(pattern)
    wanted = {m.upper() for m in methods}
    return lambda seen: (not wanted or seen.method in wanted) and bool(regex.search(seen.target))


class FaultProxy:
    """A proxy from a port on 127.0.0.1 to ``upstream`` (``host:port``).

    Use as ``async with FaultProxy.running(port) as proxy:``, point the client
    at `FaultProxy.endpoint`, and add faults with `FaultProxy.add`.

    Attributes:
        seen: Every request, in arrival order, with the fault it met.
        faults: The faults in force; the first that matches a request fires.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self._serving: anyio.CancelScope | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._arrived = anyio.Event()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @asynccontextmanager
    async def running(cls, upstream_port: int) -> AsyncIterator[FaultProxy]:
        proxy = cls(upstream_port)
        async with anyio.create_task_group() as tg:
            proxy._tg = tg
            await proxy._listen()
            try:
                yield proxy
            finally:
                tg.cancel_scope.cancel()

    def add(self, kind: str, **options: object) -> Fault:
        """Add a fault (see `Fault` for the options) and return it."""
        fault = Fault(kind, **options)  # type: ignore[arg-type]
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()
        self.seen.clear()

    def requests(self, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if method is None or s.method == method]

    async def wait_for(self, match: Callable[[Seen], bool]) -> Seen:
        """The first request that ``match`` accepts, once it has arrived.

        Woken by each arriving request, not by polling; fails the test after
        `REQUEST_BOUND` seconds instead of hanging it.
        """
        with anyio.fail_after(REQUEST_BOUND):
            while True:
                found = next((s for s in self.seen if match(s)), None)
                if found is not None:
                    return found
                await self._arrived.wait()

    async def refuse(self, seconds: float) -> None:
        """Close the listening socket for ``seconds`` (connections are refused), then reopen.

        Returns at once; the port is reopened by a background task. The reopening
        socket listens before the task next yields, so a client whose retries are
        spaced by more than ``seconds`` in all (on the same event loop's clock) is
        sure to find it open again, however late the loop runs.
        """
        assert self._tg is not None
        assert self._serving is not None
        self._serving.cancel()
        assert self._listener is not None
        await self._listener.aclose()

        async def reopen() -> None:
            await anyio.sleep(seconds)
            await self._listen()

        self._tg.start_soon(reopen)

    async def _listen(self) -> None:
        assert self._tg is not None
        # Bound and listening here, synchronously: connections queue from this moment.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(BACKLOG)
        self.port = int(sock.getsockname()[1])
        listener = await anyio.abc.SocketListener.from_socket(sock)
        self._serving = scope = anyio.CancelScope()
        self._listener = listener
        tg = self._tg

        async def serve() -> None:
            with scope:
                async with listener:
                    await listener.serve(self._handle, task_group=tg)

        tg.start_soon(serve)

    # -- one connection, one request ----------------------------------------------------------

    async def _handle(self, client_stream: anyio.abc.SocketStream) -> None:
        client = _Conn(client_stream)
        upstream: _Conn | None = None
        reset = False
        try:
            head = await client.head()
            if head is None:
                return
            seen = _parse_request(head)
            self.seen.append(seen)
            self._arrived.set()
            self._arrived = anyio.Event()
            fault = next((f for f in self.faults if f.take(seen)), None)
            seen.fault = fault.kind if fault else None
            if fault is not None and fault.kind == "status":
                await _answer(client, fault, seen)
                return
            upstream = _Conn(await anyio.connect_tcp(*self.upstream))
            await upstream.stream.send(_with_close(head))
            request_budget = (fault.after or 0) if fault and fault.kind == "reset_request" else None
            async with anyio.create_task_group() as tg:
                # Each side ends the exchange when it is done, breaks or hits its budget;
                # no exception leaves a side (it would arrive as an ExceptionGroup).

                async def request_side() -> None:
                    # Clients send no EOF before the answer: an end here means the client
                    # went away (a cancelled request). Reset the server's side too, as a
                    # real server would see it, so a single-threaded server is not left
                    # waiting for the rest of a body.
                    nonlocal reset
                    assert upstream is not None
                    await _guarded(_pipe(client, upstream.stream, request_budget))
                    reset = True
                    tg.cancel_scope.cancel()

                tg.start_soon(request_side)
                if await _guarded(_respond(upstream, client.stream, fault, seen)) != "end":
                    reset = True
                tg.cancel_scope.cancel()
        except _BROKEN:
            reset = True
        finally:
            with anyio.CancelScope(shield=True):
                for conn in (client, upstream):
                    if conn is not None:
                        if reset:
                            _rst(conn.stream)
                        await conn.stream.aclose()


_BROKEN = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
    ValueError,
)


async def _guarded(step: Awaitable[str]) -> str:
    """``step``'s outcome, or "broken" if a connection broke under it."""
    try:
        return await step
    except _BROKEN:
        return "broken"


class _Conn:
    """A socket stream with a read-ahead buffer, for finding message heads."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def receive(self) -> bytes:
        """The buffered bytes if any, else the next bytes from the socket (b"" at the end)."""
        if self.buffer:
            data, self.buffer = self.buffer, b""
            return data
        try:
            return await self.stream.receive(READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return b""

    async def fill(self, size: int) -> None:
        while len(self.buffer) < size:
            data = await self.stream.receive(READ_SIZE)
            self.buffer += data

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self.buffer += await self.stream.receive(READ_SIZE)
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def head(self) -> bytes | None:
        """A message head up to its blank line (None if the peer closed first)."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > HEAD_LIMIT:
                raise ValueError("message head too long")
            try:
                self.buffer += await self.stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                return None
        end = self.buffer.index(b"\r\n\r\n") + 4
        head, self.buffer = self.buffer[:end], self.buffer[end:]
        return head


def _with_close(head: bytes) -> bytes:
    """``head`` with ``Connection: close`` in place of any connection headers."""
    lines = head[:-4].split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join([*kept, b"Connection: close", b"", b""])


def _parse_request(head: bytes) -> Seen:
    lines = head[:-4].split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return Seen(method.upper(), target, headers)


def _rst(stream: anyio.abc.SocketStream) -> None:
    """Make the next close of ``stream`` send RST (SO_LINGER 0) instead of FIN."""
    try:
        raw = stream.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, anyio.TypedAttributeLookupError):
        pass


def _unacknowledged(stream: anyio.abc.SocketStream) -> int:
    """Bytes sent on ``stream`` that the peer has not acknowledged yet (SIOCOUTQ; 0 elsewhere)."""
    try:
        import fcntl
        import termios

        request = termios.TIOCOUTQ
    except (ImportError, AttributeError):  # pragma: no cover - not Linux
        return 0
    raw = stream.extra(SocketAttribute.raw_socket)
    queued = array.array("i", [0])
    fcntl.ioctl(raw.fileno(), request, queued)
    return queued[0]


async def _delivered(stream: anyio.abc.SocketStream) -> None:
    """Wait until the peer has acknowledged every byte sent (at most `DELIVERY_BOUND` s).

    A reset (SO_LINGER 0) discards what is still in the sender's queue: on a
    busy machine a client that has not yet read would otherwise receive a few
    KiB of the ``after`` bytes, or none. What the peer's kernel acknowledged, its
    reader receives before the reset (Linux hands over queued data first).
    """
    pause = 0.001
    with anyio.move_on_after(DELIVERY_BOUND):
        while _unacknowledged(stream):  # the kernel has no event for this: poll, backing off
            await anyio.sleep(pause)
            pause = min(pause * 2, 0.05)


async def _pipe(source: _Conn, sink: anyio.abc.SocketStream, budget: int | None) -> str:
    """Copy ``source`` to ``sink`` until it ends ("end"), or ``budget`` bytes ("budget")."""
    while data := await source.receive():
        if budget is not None and len(data) >= budget:
            if budget:
                await sink.send(data[:budget])
            return "budget"
        if budget is not None:
            budget -= len(data)
        await sink.send(data)
    return "end"


async def _respond(
    upstream: _Conn, client: anyio.abc.SocketStream, fault: Fault | None, seen: Seen
) -> str:
    """Pass the response on (interim 1xx heads too); a response fault fires in its body."""
    while True:
        head = await upstream.head()
        if head is None:
            return "end"
        status = head.split(b" ", 2)[1]
        if not status.startswith(b"1"):
            seen.status = int(status)
            break
        await client.send(head)
    if fault is None or fault.kind not in {"reset_response", "stall"}:
        await client.send(_with_close(head))
        return await _pipe(upstream, client, None)
    if fault.after is None:
        outcome = "budget"  # the server answered; the client hears nothing
    else:
        await client.send(_with_close(head))
        outcome = await _pipe(upstream, client, fault.after)
        if fault.kind == "reset_response":
            await _delivered(client)
    if fault.kind == "stall":
        # Let go of the server (a single-threaded one would block on the rest of the
        # answer, and every other request with it); only this client is held.
        _rst(upstream.stream)
        await upstream.stream.aclose()
        await anyio.sleep(fault.seconds)
        return "end"
    return outcome


async def _answer(client: _Conn, fault: Fault, seen: Seen) -> None:
    """Answer ``fault.status`` after reading the request's body (unless it awaits 100)."""
    if (seen.header("expect") or "").lower() != "100-continue":
        await _drain_body(client, seen)
    reason = {500: "Internal Server Error", 503: "Service Unavailable", 429: "Too Many"}.get(
        fault.status, "Error"
    )
    head = (
        f"HTTP/1.1 {fault.status} {reason}\r\n"
        f"Content-Type: {fault.content_type}\r\n"
        f"Content-Length: {len(fault.body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    await client.stream.send(head + fault.body)


async def _drain_body(client: _Conn, seen: Seen) -> None:
    length = seen.header("content-length")
    if length is not None:
        await client.fill(int(length))
        return
    if "chunked" not in (seen.header("transfer-encoding") or "").lower():
        return
    while True:  # chunked: up to the zero-size chunk and its (empty) trailer
        size = int((await client.line()).split(b";")[0], 16)
        await client.fill(size + 2)
        client.buffer = client.buffer[size + 2 :]
        if size == 0:
            return


@contextmanager
def unanswered_listener() -> Iterator[int]:
    """A port on 127.0.0.1 whose listener never accepts and whose backlog is full.

    A connection to it neither opens nor is refused: the SYN is dropped and the
    client waits for its connect timeout. Yields the port.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs are dropped, not refused
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in (*fillers, listener):
            sock.close()


@dataclasses.dataclass
class Received:
    """One call of a backend's ``read``: the range asked for and what the caller received."""

    start: int
    end: int | None
    received: int = 0
    error: BaseException | None = None


class ReadLog:
    """What a Store actually received from each ranged read of its backend.

    ``ReadLog.attach(store)`` wraps ``store.backend.read``; every call adds a
    `Received` to `reads`, counting the bytes the backend's stream handed over
    and the error that ended it (or that failed the call itself), if any. Fault
    tests assert on this (what the client got) rather than on what the proxy sent.
    """

    def __init__(self) -> None:
        self.reads: list[Received] = []

    @classmethod
    def attach(cls, store: Any) -> ReadLog:
        log = cls()
        backend = store.backend
        original = backend.read

        async def read(key: str, start: int = 0, end: int | None = None, **kw: Any) -> Any:
            entry = Received(start, end)
            log.reads.append(entry)
            try:
                stream = await original(key, start, end, **kw)
            except BaseException as exc:
                entry.error = exc
                raise
            return _CountingStream(stream, entry)

        backend.read = read
        return log

    def broken(self) -> list[Received]:
        """The reads that ended in a transport error, in order."""
        return [r for r in self.reads if isinstance(r.error, TransportError)]

    def retry_of(self, broken: Received) -> Received:
        """The read after ``broken`` that asked for the rest of its range."""
        later = self.reads[self.reads.index(broken) + 1 :]
        found = next((r for r in later if r.end == broken.end and r.start >= broken.start), None)
        assert found is not None, f"the read of {broken} was not retried: {self.reads}"
        return found


def assert_resumed_after_what_arrived(log: ReadLog, *, some_arrived: bool = True) -> None:
    """Every broken read was retried from the first byte the client had not received.

    With ``some_arrived``, some broken read had received part of its range (the
    fault let bytes through before it broke), so at least one retry is a resume.
    """
    broken = log.broken()
    assert broken, f"no read broke: {log.reads}"
    for read in broken:
        retry = log.retry_of(read)
        assert retry.start == read.start + read.received, (
            f"the retry asked from byte {retry.start}, but the client had received "
            f"bytes {read.start}-{read.start + read.received}: {log.reads}"
        )
    if some_arrived:
        assert any(r.received for r in broken), f"nothing of a broken read arrived: {log.reads}"


@dataclasses.dataclass
class Attempt:
    """One call of a backend's ``upload_part``, and how it ended."""

    upload_id: str
    number: int
    offset: int
    size: int
    error: BaseException | None = None
    done: bool = False


class UploadLog:
    """What a Store asked of its backend's multipart primitives, and what they answered.

    ``UploadLog.attach(store)`` wraps ``create_upload`` (the ids the client learned
    go to `created`) and ``upload_part`` (every call, with its outcome, goes to
    `attempts`). Fault tests assert on this, the client's own record, instead of
    guessing from counts of requests which failures a fault caused: a request that
    the machine was merely slow to answer is a failure too, and may be retried.
    """

    def __init__(self) -> None:
        self.created: list[str] = []
        self.attempts: list[Attempt] = []

    @classmethod
    def attach(cls, store: Any) -> UploadLog:
        log = cls()
        backend = store.backend
        create, upload_part = backend.create_upload, backend.upload_part

        async def create_upload(key: str, attrs: Any) -> str:
            upload_id: str = await create(key, attrs)
            log.created.append(upload_id)
            return upload_id

        async def part(
            key: str, upload_id: str, number: int, offset: int, data: Any, sums: Any
        ) -> Any:
            entry = Attempt(upload_id, number, offset, len(data))
            log.attempts.append(entry)
            try:
                result = await upload_part(key, upload_id, number, offset, data, sums)
            except BaseException as exc:
                entry.error = exc
                raise
            entry.done = True
            return result

        backend.create_upload = create_upload
        backend.upload_part = part
        return log

    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if a.error is not None]


def assert_only_failed_parts_were_sent_again(log: UploadLog, parts: int) -> None:
    """One upload of ``parts`` parts, each sent until it succeeded and never after.

    A part is sent again only after an attempt of it failed with a transport
    error: no part that succeeded is sent again, the upload is not restarted.
    """
    assert len(set(log.created)) == 1, f"one upload: {log.created}"
    by_number: dict[int, list[Attempt]] = {}
    for attempt in log.attempts:
        assert attempt.upload_id == log.created[0]
        by_number.setdefault(attempt.number, []).append(attempt)
    assert sorted(by_number) == list(range(1, parts + 1)), sorted(by_number)
    for number, attempts in by_number.items():
        *failed, last = attempts
        assert last.done, f"part {number} never succeeded: {attempts}"
        assert all(isinstance(a.error, TransportError) for a in failed), (
            f"part {number} was sent again after {attempts}"
        )


class _CountingStream:
    def __init__(self, stream: Any, entry: Received) -> None:
        self.info = stream.info
        self._stream = stream
        self._entry = entry

    def __aiter__(self) -> _CountingStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk: bytes = await self._stream.__anext__()
        except StopAsyncIteration:
            raise
        except BaseException as exc:
            self._entry.error = exc
            raise
        self._entry.received += len(chunk)
        return chunk

    async def readinto(self, view: memoryview) -> int:
        try:
            n: int = await self._stream.readinto(view)
        except BaseException as exc:
            self._entry.error = exc
            raise
        self._entry.received += n
        return n

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _CountingStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
