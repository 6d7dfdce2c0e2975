"""The HTTP layer of the GCS backend: one httpx client, shared with gcloud-aio.

gcloud-aio-storage speaks aiohttp, which runs on asyncio only. It does accept
an injected session (``Storage(session=...)``, wrapped in gcloud-aio-auth's
``AioSession``), and only calls a handful of methods on it. `CompatSession`
provides those methods over an ``httpx.AsyncClient``, and httpx runs on anyio,
so the same objects work under asyncio and trio with no second event loop and
no thread. The backend's own requests (uploads of parts and chunks, ranged
reads, batch deletes, the final compose) use the httpx client directly.

gcloud-aio-auth's ``Token.get()`` starts its refresh with
``asyncio.create_task``, which trio cannot run; `TokenSource` keeps a Token
(built in a worker thread, because reading the credentials file blocks) and
awaits its public ``refresh()`` under an anyio lock instead.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import httpx
from gcloud.aio.auth import Token
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..._errors import (
    ConfigurationError,
    ConnectionError,
    PermissionDeniedError,
    StoreError,
    TimeoutError,
    TransportError,
)
from ..._stream._tasks import Slots

__all__ = [
    "SCOPES",
    "CompatResponse",
    "CompatSession",
    "TokenSource",
    "default_timeouts",
    "make_client",
]

SCOPES = ["https://www.googleapis.com/auth/devstorage.full_control"]
#: Default seconds to connect, and between two reads or writes of a body, before a
#: TimeoutError (the backend's ``connect_timeout`` and ``read_timeout`` options).
CONNECT_TIMEOUT = 30.0
IO_TIMEOUT = 120.0
#: Refresh a token this many seconds before it expires.
_TOKEN_MARGIN = 300
#: Seconds allowed for one token refresh.
REFRESH_TIMEOUT = 30


def default_timeouts() -> tuple[float, float]:
    """(connect, read) seconds when the options give none."""
    return CONNECT_TIMEOUT, IO_TIMEOUT


def make_client(
    max_connections: int = 64, timeouts: tuple[float, float] | None = None
) -> httpx.AsyncClient:
    """The backend's httpx client (call it in a worker thread: it loads CA certificates).

    ``timeouts`` is (connect, read): seconds to open a connection, and to wait
    for each read or write of a request's bytes (default `default_timeouts`).
    No pool timeout (``pool=None``): requests queue for a connection in the
    backend's CapacityLimiter of the same size before they reach httpx.
    """
    connect, read = timeouts or default_timeouts()
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect, read=read, write=read, pool=None),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
    )


def _timeout_of(value: object, timeouts: tuple[float, float]) -> httpx.Timeout:
    """An httpx timeout from gcloud-aio's ``aiohttp.ClientTimeout`` or seconds.

    gcloud-aio's timeouts are per call; here they bound each phase of it, and
    never lengthen the backend's own (connect, read) ``timeouts``: a stalled
    answer fails at the configured read timeout, whatever gcloud-aio asked for.
    """
    connect, read = timeouts
    total: float | None
    if isinstance(value, aiohttp.ClientTimeout):
        total = value.total
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        total = float(value)
    else:
        total = None
    if total is not None and total > 0:
        connect, read = min(connect, total), min(read, total)
    return httpx.Timeout(connect, read=read, write=read, pool=None)


def _content_of(data: object) -> bytes | None:
    if data is None:
        return None
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    read = getattr(data, "read", None)
    if read is not None:  # a file-like object: gcloud-aio wraps bodies in BytesIO
        chunk = read()
        return chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
    raise TypeError(f"unsupported request body {type(data).__name__}")


class _Body(httpx.AsyncByteStream):
    """A request body as one chunk, from a class rather than httpx's async generator.

    A request cut off mid-body leaves its body's iterator unfinished; an async
    generator left so makes trio warn when it is collected, a plain iterator does not.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __aiter__(self) -> _Body:
        self._sent = False
        return self

    async def __anext__(self) -> bytes:
        if self._sent or not self._body:
            raise StopAsyncIteration
        self._sent = True
        return self._body


class CompatResponse:
    """The part of ``aiohttp.ClientResponse`` that gcloud-aio uses, over a read httpx response."""

    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self._response = response
        self._body = body
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers = CIMultiDictProxy(CIMultiDict(response.headers.multi_items()))
        url = URL(str(response.request.url))
        self.request_info = aiohttp.RequestInfo(
            url, response.request.method, CIMultiDictProxy(CIMultiDict()), url
        )
        self.history: tuple[Any, ...] = ()
        self.url = url

    async def read(self) -> bytes:
        """The body."""
        return self._body

    async def text(self, encoding: str | None = None, errors: str = "strict") -> str:
        """The body as text (UTF-8 unless told otherwise)."""
        return self._body.decode(encoding or "utf-8", errors)

    async def json(self, *, content_type: str | None = None, **_: Any) -> Any:
        """The body as JSON (None when empty), whatever its content type."""
        return json.loads(self._body) if self._body else None

    def release(self) -> None:
        """Nothing to release: the body was read when the response arrived."""

    def close(self) -> None:
        """Nothing to close (see `release`)."""

    async def __aenter__(self) -> CompatResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class CompatSession:
    """The part of ``aiohttp.ClientSession`` that gcloud-aio's ``AioSession`` calls.

    Requests go through the backend's httpx client; bodies are small JSON
    documents (metadata, listings, rewrite and compose calls, token refreshes),
    read whole before the response is returned.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        limiter: Slots | None = None,
        timeouts: tuple[float, float] | None = None,
    ) -> None:
        self._client = client
        self._limiter = limiter
        self._timeouts = timeouts or default_timeouts()
        self.closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        data: object = None,
        timeout: object = None,  # noqa: ASYNC109 - aiohttp's signature, mapped to httpx's
        **_: Any,
    ) -> CompatResponse:
        """Send a request and read its whole answer (aiohttp's keyword arguments)."""
        # gcloud-aio sets Content-Length itself; httpx computes it from the body.
        sent = {k: v for k, v in (headers or {}).items() if k.lower() != "content-length"}
        body = _content_of(data)
        if body is not None:
            sent["Content-Length"] = str(len(body))
        request = self._client.build_request(
            method,
            url,
            headers=sent,
            params=dict(params) if params else None,
            timeout=_timeout_of(timeout, self._timeouts),
        )
        if body is not None:  # a class, not httpx's generator, which a cut-off would leave open
            request.stream = _Body(body)
        if self._limiter is None:
            response = await self._client.send(request)
        else:
            async with self._limiter:
                response = await self._client.send(request)
        return CompatResponse(response, response.content)

    async def get(self, url: str, **kwargs: Any) -> CompatResponse:
        """`request` with ``GET``."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> CompatResponse:
        """`request` with ``POST``."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> CompatResponse:
        """`request` with ``PUT``."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> CompatResponse:
        """`request` with ``PATCH``."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> CompatResponse:
        """`request` with ``DELETE``."""
        return await self.request("DELETE", url, **kwargs)

    async def head(self, url: str, **kwargs: Any) -> CompatResponse:
        """`request` with ``HEAD`` (redirects are never followed)."""
        kwargs.pop("allow_redirects", None)
        return await self.request("HEAD", url, **kwargs)

    async def close(self) -> None:
        """The httpx client belongs to the backend, which closes it."""
        self.closed = True


def _load_token(service_file: str | None, session: CompatSession) -> Token:
    """Build gcloud-aio's Token (reads the credentials file: call it in a worker thread)."""
    if service_file is None:
        return Token(session=session, scopes=SCOPES)  # type: ignore[arg-type]
    path = os.path.expanduser(service_file)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        data = json.loads(text)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the GCS service_file {service_file!r}: {exc.strerror or exc}",
            key="service_file",
        ) from exc
    except ValueError as exc:
        raise ConfigurationError(
            f"the GCS service_file {service_file!r} is not valid JSON: {exc}",
            key="service_file",
        ) from exc
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigurationError(
            f"the GCS service_file {service_file!r} is not a Google credentials file "
            "(it has no 'type')",
            key="service_file",
        )
    try:
        return Token(service_file=io.StringIO(text), session=session, scopes=SCOPES)  # type: ignore[arg-type]
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(
            f"the GCS service_file {service_file!r} cannot be used: {exc}", key="service_file"
        ) from exc


class TokenSource:
    """OAuth2 access tokens for the requests, refreshed under an anyio lock.

    Stands in for gcloud-aio's Token where ``Storage`` asks for one
    (``await token.get()``), and gives the backend's own requests their
    ``Authorization`` header. The Token is used only for its public
    ``refresh()`` (one attempt: a failure is classified here, and a
    TransportError is retried by the Store with the request that needed it).
    """

    def __init__(self, service_file: str | None, session: CompatSession) -> None:
        self._service_file = service_file
        self._session = session
        self._token: Token | None = None
        self._value: str | None = None
        self._expires = 0.0
        self._lock = anyio.Lock()

    async def get(self) -> str | None:
        """A valid access token, refreshed when it is missing or about to expire.

        Raises:
            ConfigurationError: the credentials file cannot be used.
            PermissionDeniedError: the credentials were refused, or there are none.
            TransportError: the token endpoint could not be reached, or answered 429 / 5xx.
        """
        async with self._lock:
            if self._value is not None and time.time() < self._expires - _TOKEN_MARGIN:
                return self._value
            if self._token is None:
                self._token = await anyio.to_thread.run_sync(
                    _load_token, self._service_file, self._session
                )
            source = _source(self._service_file)
            try:
                response = await self._token.refresh(timeout=REFRESH_TIMEOUT)
            except StoreError:
                raise
            except aiohttp.ClientResponseError as exc:
                message = f"cannot obtain a Google access token ({source}): {exc.message}"
                if exc.status == 429 or exc.status >= 500:
                    raise TransportError(message, key="credentials") from exc
                raise PermissionDeniedError(message, key="credentials") from exc
            except httpx.TimeoutException as exc:
                raise TimeoutError(
                    f"timed out obtaining a Google access token ({source})", key="credentials"
                ) from exc
            except httpx.TransportError as exc:
                raise ConnectionError(
                    f"cannot reach the token endpoint of {source}: {exc!r}", key="credentials"
                ) from exc
            except Exception as exc:
                raise PermissionDeniedError(
                    f"cannot obtain a Google access token ({source}): {exc!r}", key="credentials"
                ) from exc
            self._value = response.value
            self._expires = time.time() + response.expires_in
            return self._value

    async def headers(self) -> dict[str, str]:
        """The ``Authorization`` header for a request."""
        return {"Authorization": f"Bearer {await self.get()}"}


def _source(service_file: str | None) -> str:
    if service_file is not None:
        return f"service_file {service_file!r}"
    return "Application Default Credentials"
