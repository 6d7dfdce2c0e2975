"""The HTTP side of the registry: ASGI requests and bodies, responses, the spec's error bodies."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "API_VERSION",
    "ClientDisconnected",
    "Receive",
    "RegistryError",
    "Request",
    "Scope",
    "Send",
    "error_body",
    "send_response",
    "start_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Sent on every response, as registries do (clients check it on ``/v2/``).
API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")

_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")


class RegistryError(Exception):
    """An error answered with the distribution spec's JSON body.

    Attributes:
        status: The HTTP status.
        code: The spec's error code (``BLOB_UNKNOWN``, ``DIGEST_INVALID``, ...).
        message: A human-readable message (never a secret).
        detail: Optional structured detail.
        headers: Extra response headers.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: object = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = list(headers)


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


def error_body(code: str, message: str, detail: object = None) -> bytes:
    """``{"errors": [{"code", "message", "detail"}]}`` as the spec defines it."""
    entry: dict[str, object] = {"code": code, "message": message}
    entry["detail"] = detail if detail is not None else {}
    return json.dumps({"errors": [entry]}, separators=(",", ":")).encode()


class Request:
    """One HTTP request: method, path, query, headers, and its body as a stream.

    Header names are lowercase; values are decoded as latin-1, as HTTP/1.1 allows.
    The body is read at most once, through `chunks`, `read` or `discard`.
    """

    __slots__ = ("_done", "_first", "_receive", "headers", "method", "path", "query")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw_query = scope.get("query_string", b"").decode("latin-1")
        self.query: dict[str, list[str]] = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
        self.headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        self._receive = receive
        self._done = False
        self._first: bytes | None = None

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def content_length(self) -> int | None:
        """The declared Content-Length, or None.

        Raises:
            RegistryError: 400 SIZE_INVALID for a malformed value.
        """
        value = self.headers.get("content-length")
        if value is None:
            return None
        value = value.strip()
        if not _CONTENT_LENGTH.fullmatch(value):
            raise RegistryError(
                400, "SIZE_INVALID", f"Content-Length {value[:40]!r} is not a byte count"
            )
        return int(value)

    async def _next(self) -> tuple[bytes, bool]:
        """The next piece of the body and whether more follows."""
        if self._first is not None:
            first, self._first = self._first, None
            return first, not self._done
        if self._done:
            return b"", False
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._done = True
            raise ClientDisconnected("the client disconnected before the end of the body")
        more = bool(message.get("more_body", False))
        if not more:
            self._done = True
        return bytes(message.get("body", b"")), more

    async def has_body(self) -> bool:
        """Whether the request carries at least one byte of body (reads the first piece)."""
        if self._first is not None:
            return True
        while True:
            piece, more = await self._next()
            if piece:
                self._first = piece
                return True
            if not more:
                return False

    async def chunks(self, *, limit: int | None = None, what: str = "body") -> AsyncIterator[bytes]:
        """The body as it arrives, checked against Content-Length and ``limit``.

        Raises (from the iteration):
            RegistryError: 400 SIZE_INVALID when the body is shorter or longer than
                its Content-Length; 413 SIZE_INVALID past ``limit``.
            ClientDisconnected: the client went away.
        """
        declared = self.content_length()
        if limit is not None and declared is not None and declared > limit:
            raise RegistryError(
                413, "SIZE_INVALID", f"the {what} ({declared} bytes) is larger than {limit} bytes"
            )
        received = 0
        more = True
        while more:
            piece, more = await self._next()
            received += len(piece)
            if declared is not None and received > declared:
                raise RegistryError(
                    400,
                    "SIZE_INVALID",
                    f"the {what} is longer than its Content-Length ({declared} bytes)",
                )
            if limit is not None and received > limit:
                raise RegistryError(413, "SIZE_INVALID", f"the {what} is larger than {limit} bytes")
            if piece:
                yield piece
        if declared is not None and received != declared:
            raise RegistryError(
                400,
                "SIZE_INVALID",
                f"the {what} ended after {received} of its {declared} bytes (Content-Length)",
            )

    async def read(self, *, limit: int, what: str = "body") -> bytes:
        """The whole body (at most ``limit`` bytes; 413 SIZE_INVALID above)."""
        pieces = [piece async for piece in self.chunks(limit=limit, what=what)]
        return b"".join(pieces)

    async def discard(self) -> None:
        """Read and drop whatever body is left (so the connection can be reused)."""
        if self._done and self._first is None:
            return
        self._first = None
        while not self._done:
            await self._next()


async def start_response(
    send: Send, status: int, headers: Iterable[tuple[bytes, bytes]], *, length: int | None
) -> None:
    """Send the status line and headers (with Content-Length when known)."""
    out = [API_VERSION, *headers]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})


async def send_response(
    send: Send,
    status: int,
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    head: bool = False,
    length: int | None = None,
) -> None:
    """Send a whole response; for HEAD, the headers of the GET (length included) only."""
    await start_response(send, status, headers, length=len(body) if length is None else length)
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})
