"""A small typed surface over the GCS JSON API: URLs, auth, requests, error translation.

`GCSApi` is made once per backend, inside the running event loop (see
``GCSBackend._ready``). It holds the httpx client, gcloud-aio's ``Storage``
(over the same client, through `CompatSession`) and the token source.
gcloud-aio's public calls serve the JSON requests they cover (listing,
delete, rewrite, compose without metadata, metadata patch); the requests it
cannot make without holding a whole body in memory, or without the
preconditions asyncstore needs, are made here with the httpx client.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote, urlencode

import httpx
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage

from ..._backend import WriteAttributes
from ..._errors import PreconditionFailedError, StoreError, TransportError
from ..._stream._tasks import Slots
from ..._types import ObjectInfo
from .._http import HttpPool, Response, StreamedBody, quoted
from ._http import CompatSession, TokenSource
from ._translate import Where, gcs_errors, raise_for_status

__all__ = [
    "JSON",
    "GCSApi",
    "BodyPieces",
    "Media",
    "check_generation",
    "conditions",
    "decode_json",
    "object_info",
    "parse_time",
]

JSON = dict[str, Any]
#: Body bytes handed to httpx per write (memoryview slices: no copy of a part).
_PIECE = 1024 * 1024
#: Seconds allowed for one JSON call made through gcloud-aio (per phase of the request;
#: the backend's connect and read timeouts still apply when they are shorter).
JSON_TIMEOUT = 60
_GENERATION = re.compile(r"^[0-9]{1,20}$")


def parse_time(value: object) -> datetime.datetime | None:
    """A datetime from GCS's RFC 3339 timestamps (``2024-05-01T12:00:00.123Z``)."""
    if not isinstance(value, str) or not value:
        return None
    return _parse_rfc3339(value)


@functools.lru_cache(maxsize=1024)  # listings and HEADs see the same few times again and again
def _parse_rfc3339(value: str) -> datetime.datetime | None:
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    date, sep, rest = text.partition(".")
    if sep:  # Python 3.10's fromisoformat wants 0, 3 or 6 fraction digits
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]  # the fraction's
        zone = rest[len(digits) :]
        text = f"{date}.{(digits + '000000')[:6]}{zone}"
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(slots=True)
class Media:
    """The answer to a media GET, read whole, or up to where it was cut short.

    Attributes:
        response: The response (its head; the body has been read and closed).
        body: The body bytes as stored (no decoding), as many as arrived.
        error: Why the body stopped short of its end (a lost connection, a read
            timeout), or None when it is whole.
    """

    response: httpx.Response | Response
    body: bytes
    error: TransportError | None = None


class BodyPieces(httpx.AsyncByteStream):
    """A request body made of byte pieces, sent in slices of at most 1 MiB without copying them.

    A class rather than an async generator: httpx may stop iterating a body
    half-way (a dropped connection), and an abandoned generator makes trio warn.
    """

    def __init__(self, *pieces: bytes | memoryview) -> None:
        self.pieces = [memoryview(piece).cast("B") for piece in pieces]
        self.size = sum(piece.nbytes for piece in self.pieces)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Slices(self.pieces)

    async def aclose(self) -> None:
        """Nothing to release."""


class _Slices:
    def __init__(self, pieces: Sequence[memoryview]) -> None:
        self._slices = iter(
            [piece[i : i + _PIECE] for piece in pieces for i in range(0, piece.nbytes, _PIECE)]
        )

    def __aiter__(self) -> _Slices:
        return self

    async def __anext__(self) -> bytes:
        try:
            piece = next(self._slices)
        except StopIteration:
            raise StopAsyncIteration from None
        return piece  # type: ignore[return-value]  # h11 takes any bytes-like object


class _StreamedByteStream(httpx.AsyncByteStream):
    """A `StreamedBody` as httpx's request stream (where the lean path cannot go)."""

    def __init__(self, body: StreamedBody) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body.chunks:
            for start in range(0, len(chunk), _PIECE):
                yield chunk[start : start + _PIECE]  # type: ignore[misc]  # h11 takes any buffer


def check_generation(value: str, key: str) -> str:
    """``value`` if it can be a generation; else no object can match it."""
    if not _GENERATION.match(value):
        raise PreconditionFailedError(
            f"key {key!r} cannot have the ETag {value!r}: GCS ETags are object generations "
            "(decimal numbers)",
            key=key,
        )
    return value


def conditions(attrs: WriteAttributes, key: str) -> dict[str, str]:
    """The ``ifGenerationMatch`` query parameter of a conditional write."""
    if attrs.if_none_match:
        return {"ifGenerationMatch": "0"}
    if attrs.if_match is not None:
        return {"ifGenerationMatch": check_generation(attrs.if_match, key)}
    return {}


class GCSApi:
    """The requests of one backend: one bucket, one prefix, one client.

    Attributes:
        bucket: The bucket.
        root: The store's prefix with a trailing ``/`` ("" for the bucket's root).
        api_root: Scheme and host of the JSON API.
        storage: gcloud-aio's Storage, over `client`.
        client: The httpx client every request goes through.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        bucket: str,
        root: str,
        api_root: str,
        anonymous: bool,
        project: str | None,
        service_file: str | None,
        max_connections: int = 64,
        timeouts: tuple[float, float] | None = None,
        pool: HttpPool | None = None,
    ) -> None:
        self.client = client
        #: The lean request path (None: httpx sends every request).
        self.pool = pool
        self.bucket = bucket
        self.root = root
        self.api_root = api_root
        self.project = project
        # Requests wait for a connection here, in FIFO order and before any work on them,
        # rather than in httpcore's pool (which scans every waiting request each time a
        # connection frees up). Token refreshes bypass it: a request waiting for its
        # token must not hold the slot the refresh needs.
        self.limiter = Slots(max_connections)
        self.session = CompatSession(client, self.limiter, timeouts)
        self.tokens: TokenSource | None = (
            None if anonymous else TokenSource(service_file, CompatSession(client, None, timeouts))
        )
        # Storage asks its token for ``await token.get()`` only; TokenSource provides that
        # under trio as well. Anonymous (emulator) storages never ask.
        self.storage = Storage(
            session=self.session,  # type: ignore[arg-type]
            token=cast(Token, self.tokens),
            api_root=api_root,
            api_is_dev=anonymous,
        )
        b = quote(bucket, safe="")
        self.objects_url = f"{api_root}/storage/v1/b/{b}/o"
        self.upload_url = f"{api_root}/upload/storage/v1/b/{b}/o"
        self.batch_url = f"{api_root}/batch/storage/v1"

    # -- names and URLs

    def object_url(self, name: str) -> str:
        """The JSON API URL of the object called ``name``."""
        return f"{self.objects_url}/{quoted(name, '')}"

    def object_path(self, name: str) -> str:
        """The path of `object_url` (for batch requests)."""
        return f"/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    def params(self, **extra: str | None) -> dict[str, str]:
        """Query parameters with ``userProject`` added when a project is configured."""
        out = {k: v for k, v in extra.items() if v is not None}
        if self.project is not None:
            out["userProject"] = self.project
        return out

    async def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Request headers, with ``Authorization`` unless the backend is anonymous."""
        out = dict(extra or {})
        if self.tokens is not None:
            with gcs_errors(Where(self.bucket, None)):
                out.update(await self.tokens.headers())
        return out

    # -- requests

    async def send(
        self,
        method: str,
        url: str,
        where: Where,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | BodyPieces | StreamedBody | None = None,
        ok: Sequence[int] = (),
        raw: bool = False,
    ) -> tuple[httpx.Response | Response, bytes]:
        """Send a request, read the whole answer; raise the translated error for an error status.

        Statuses in ``ok`` are returned like successes. With ``raw`` the body is
        returned as sent (no ``Content-Encoding`` decoding: the stored bytes of
        a gzip-encoded object). The body is always read to its end, so that no
        half-read httpx stream is left for the garbage collector (trio warns).
        """
        target = self._lean_target(url, params)
        if target is not None:
            return await self._send_lean(method, target, where, headers, content, ok)
        if isinstance(content, (bytes, bytearray, memoryview)):
            content = BodyPieces(content)  # never an httpx generator that a cut-off leaves open
        async with self.limiter:
            sent = await self.headers(headers)
            with gcs_errors(where):
                if isinstance(content, BodyPieces):
                    sent["Content-Length"] = str(content.size)
                    request = self.client.build_request(method, url, params=params, headers=sent)
                    request.stream = content
                elif isinstance(content, StreamedBody):  # its chunks are closed by its owner
                    sent["Content-Length"] = str(content.length)
                    request = self.client.build_request(method, url, params=params, headers=sent)
                    request.stream = _StreamedByteStream(content)
                else:
                    request = self.client.build_request(
                        method, url, params=params, headers=sent, content=content
                    )
                response = await self.client.send(request, stream=True)
                try:
                    if response.status_code >= 400 and response.status_code not in ok:
                        await raise_for_status(response, where)
                    if raw:
                        body = b"".join([chunk async for chunk in response.aiter_raw()])
                    else:
                        body = await response.aread()
                finally:
                    await response.aclose()
        return response, body

    async def get_media(
        self,
        url: str,
        where: Where,
        *,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        ok: Sequence[int] = (),
    ) -> Media:
        """GET a body as stored, keeping the bytes that arrived if it is cut short.

        Like `send` with ``raw``, except that a body cut short (a reset, a
        read timeout) after some bytes of a successful answer is returned with
        them, and the TransportError in `Media.error`: a reader can keep those
        bytes and resume after them instead of asking for them again.
        """
        pieces: list[bytes] = []
        cut: Exception | None = None
        target = self._lean_target(url, params)
        if target is not None:
            return await self._get_media_lean(target, where, headers, ok)
        async with self.limiter:
            sent = await self.headers(headers)
            with gcs_errors(where):
                request = self.client.build_request("GET", url, params=params, headers=sent)
                response = await self.client.send(request, stream=True)
                try:
                    if response.status_code >= 400 and response.status_code not in ok:
                        await raise_for_status(response, where)
                    try:
                        async for piece in response.aiter_raw():
                            pieces.append(piece)
                    except (httpx.TransportError, OSError) as exc:
                        if not pieces or response.status_code >= 300:
                            raise
                        cut = exc
                finally:
                    await response.aclose()
        return Media(response, b"".join(pieces), _cut(cut, where))

    # -- the lean path: the same requests on backends/_http.py's client instead of httpx

    def _lean_target(self, url: str, params: Mapping[str, str] | None) -> str | None:
        """``url``'s path and query for the lean client (None: a URL it does not serve)."""
        if self.pool is None or not url.startswith(self.api_root + "/"):
            return None
        path = url[len(self.api_root) :]
        if params:
            joiner = "&" if "?" in path else "?"
            path += joiner + urlencode(params, quote_via=quote)
        return path

    async def _send_lean(
        self,
        method: str,
        target: str,
        where: Where,
        headers: Mapping[str, str] | None,
        content: bytes | BodyPieces | StreamedBody | None,
        ok: Sequence[int],
    ) -> tuple[Response, bytes]:
        assert self.pool is not None
        token = object()
        await self.limiter.acquire_on_behalf_of(token)
        try:
            sent = await self.headers(headers)
            body = content.pieces if isinstance(content, BodyPieces) else content
            with gcs_errors(where):
                response = await self.pool.request(method, target, sent, body)
                try:
                    if response.status >= 400 and response.status not in ok:
                        await raise_for_status(response, where)
                    data = await response.read()
                finally:
                    await response.aclose()
        finally:
            self.limiter.release_on_behalf_of(token)
        return response, data

    async def open_media(
        self, url: str, where: Where, *, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> Response | None:
        """GET a body to be streamed: the response once its head is in (None: no lean path).

        An error status (but 416, which is returned) is raised, translated; the
        response's body is the caller's to read (or close).
        """
        target = self._lean_target(url, params)
        if target is None:
            return None
        assert self.pool is not None
        token = object()
        await self.limiter.acquire_on_behalf_of(token)
        try:
            sent = await self.headers(headers)
            with gcs_errors(where):
                response = await self.pool.request("GET", target, sent)
                if response.status >= 400 and response.status != 416:
                    await raise_for_status(response, where)  # reads and closes the body
        finally:  # the pool's own slot stays taken until the body is read or closed
            self.limiter.release_on_behalf_of(token)
        return response

    async def _get_media_lean(
        self, target: str, where: Where, headers: Mapping[str, str], ok: Sequence[int]
    ) -> Media:
        assert self.pool is not None
        pieces: list[bytes] = []
        cut: Exception | None = None
        token = object()
        await self.limiter.acquire_on_behalf_of(token)
        try:
            sent = await self.headers(headers)
            with gcs_errors(where):
                response = await self.pool.request("GET", target, sent)
                try:
                    if response.status >= 400 and response.status not in ok:
                        await raise_for_status(response, where)
                    try:
                        while piece := await response.next_chunk():
                            pieces.append(piece)
                    except OSError as exc:  # TimeoutError included
                        if not pieces or response.status >= 300:
                            raise
                        cut = exc
                finally:
                    await response.aclose()
        finally:
            self.limiter.release_on_behalf_of(token)
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return Media(response, body, _cut(cut, where))

    async def send_json(
        self,
        method: str,
        url: str,
        where: Where,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | BodyPieces | None = None,
        json_body: object = None,
    ) -> JSON:
        """Send a request and return its JSON object body."""
        extra = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body).encode("utf-8")
            extra["Content-Type"] = "application/json; charset=UTF-8"
        _, body = await self.send(method, url, where, params=params, headers=extra, content=content)
        return decode_json(body, where)

    async def resource(self, name: str, where: Where, *, generation: str | None = None) -> JSON:
        """The object resource (metadata) of ``name``."""
        return await self.send_json(
            "GET", self.object_url(name), where, params=self.params(ifGenerationMatch=generation)
        )

    async def upload_multipart(
        self,
        resource: JSON,
        data: memoryview,
        where: Where,
        *,
        params: Mapping[str, str] | None = None,
    ) -> JSON:
        """One-request upload of ``data`` with its resource (``uploadType=multipart``).

        The body (resource JSON + bytes) is streamed from ``data`` without a copy.
        """
        boundary = "asyncstore-" + uuid.uuid4().hex
        media_type = resource.get("contentType") or "application/octet-stream"
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps(resource)}\r\n"
            f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f'multipart/related; boundary="{boundary}"'}
        return await self.send_json(
            "POST",
            self.upload_url,
            where,
            params={**self.params(uploadType="multipart"), **(params or {})},
            headers=headers,
            content=BodyPieces(head, data, tail),
        )


def _cut(cause: Exception | None, where: Where) -> TransportError | None:
    """The TransportError of a body cut short by ``cause`` (None if it was not)."""
    if cause is None:
        return None
    try:
        with gcs_errors(where):
            raise cause
    except TransportError as translated:
        return translated
    return None  # pragma: no cover - gcs_errors raises a StoreError for every exception


def decode_json(body: bytes, where: Where) -> JSON:
    """The JSON object of a response body.

    Raises:
        StoreError: the body is not a JSON object.
    """
    try:
        data = json.loads(body) if body else {}
    except ValueError as exc:
        raise StoreError(
            f"GCS sent a response that is not JSON for {where.key or where.bucket!r}: "
            f"{body[:100]!r}",
            key=where.key,
        ) from exc
    if not isinstance(data, dict):
        raise StoreError(f"GCS sent unexpected JSON: {body[:100]!r}", key=where.key)
    return data


def object_info(resource: Mapping[str, Any], key: str) -> ObjectInfo:
    """ObjectInfo from an object resource; the ETag is the generation."""
    raw = resource.get("metadata") or {}
    metadata = (
        {str(k): str(v) for k, v in raw.items() if v is not None} if isinstance(raw, dict) else {}
    )
    content_type = resource.get("contentType")
    return ObjectInfo(
        key=key,
        size=int(resource.get("size") or 0),
        etag=str(resource["generation"]),
        last_modified=parse_time(resource.get("updated")),
        content_type=content_type if isinstance(content_type, str) and content_type else None,
        metadata=metadata,
    )
