"""RegistryApp: the OCI distribution-spec v1.1 HTTP API as an ASGI app over RegistryStorage."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from .. import (
    BlobNotFoundError,
    DigestMismatchError,
    InvalidArgumentError,
    InvalidDigestError,
    InvalidOffsetError,
    InvalidRangeError,
    ManifestNotFoundError,
    NotFoundError,
    RepositoryNotFoundError,
    StoreError,
    TagNotFoundError,
    TransportError,
    UploadNotFoundError,
)
from ..cas import Digest
from ..oci import OCI_INDEX, RegistryStorage, check_repository, check_tag, inspect_manifest
from ._auth import Authenticator, Identity
from ._http import (
    ClientDisconnected,
    Receive,
    RegistryError,
    Request,
    Scope,
    Send,
    error_body,
    send_response,
    start_response,
)

__all__ = ["RegistryApp", "RegistryConfig"]

log = logging.getLogger("asyncstore.registry")

MiB = 1024 * 1024

_NAME = r"(?P<name>.+?)"  # checked by check_repository: NAME_INVALID
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/v2/?"), "base"),
    (re.compile(rf"/v2/{_NAME}/blobs/uploads/?"), "uploads"),
    (re.compile(rf"/v2/{_NAME}/blobs/uploads/(?P<session>[^/]+)"), "upload"),
    (re.compile(rf"/v2/{_NAME}/blobs/(?P<digest>[^/]+)"), "blob"),
    (re.compile(rf"/v2/{_NAME}/manifests/(?P<reference>[^/]+)"), "manifest"),
    (re.compile(rf"/v2/{_NAME}/tags/list"), "tags"),
    (re.compile(rf"/v2/{_NAME}/referrers/(?P<digest>[^/]+)"), "referrers"),
]
_METHODS = {
    "base": ("GET", "HEAD"),
    "uploads": ("POST",),
    "upload": ("GET", "PATCH", "PUT", "DELETE"),
    "blob": ("GET", "HEAD", "DELETE"),
    "manifest": ("GET", "HEAD", "PUT", "DELETE"),
    "tags": ("GET",),
    "referrers": ("GET",),
}
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]{1,18})-([0-9]{1,18})(?:/(?:[0-9]{1,18}|\*))?")
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
_JSON = (b"content-type", b"application/json")
#: Bodies up to this size (declared) are read whole before they are stored; larger ones stream.
SMALL_BODY = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryConfig:
    """What the registry allows.

    Attributes:
        read_only: Refuse every push and delete (405 UNSUPPORTED).
        delete: Allow deleting manifests, tags and blobs (else 405 UNSUPPORTED).
        max_manifest_size: Largest manifest body accepted (413 above it).
        max_upload_size: Largest blob accepted, in bytes (413 above it); None: no limit.
        automatic_mount: A mount without ``from`` links any blob the store holds
            under that digest (201) instead of starting an upload (202).
        tags_page_size: Most tags in one answer of ``tags/list`` (a larger ``n`` is
            cut to it); a ``Link`` header points at the next page.
    """

    read_only: bool = False
    delete: bool = True
    max_manifest_size: int = 4 * MiB
    max_upload_size: int | None = None
    automatic_mount: bool = True
    tags_page_size: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_manifest_size", "max_upload_size", "tags_page_size"):
            value = getattr(self, name)
            if value is None and name == "max_upload_size":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, not {value!r}", key=name)


def _digest(value: str, what: str = "digest") -> Digest:
    try:
        return Digest(value)
    except InvalidArgumentError:
        raise RegistryError(
            400, "DIGEST_INVALID", f"{what} {value[:80]!r} is not a valid digest"
        ) from None


def _range_header(size: int) -> tuple[bytes, bytes]:
    return b"range", f"0-{max(size - 1, 0)}".encode()


def _upload_headers(name: str, session: str, size: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"location", f"/v2/{name}/blobs/uploads/{session}".encode()),
        _range_header(size),
        (b"docker-upload-uuid", session.encode()),
    ]


def _translate(exc: StoreError, *, where: str) -> RegistryError:
    """The spec's answer to an asyncstore error raised while serving ``where``."""
    if isinstance(exc, DigestMismatchError | InvalidDigestError):
        return RegistryError(400, "DIGEST_INVALID", str(exc))
    if isinstance(exc, InvalidOffsetError):
        return RegistryError(416, "BLOB_UPLOAD_INVALID", str(exc))
    if isinstance(exc, InvalidRangeError):
        return RegistryError(416, "BLOB_UPLOAD_INVALID", str(exc))
    if isinstance(exc, UploadNotFoundError):
        return RegistryError(404, "BLOB_UPLOAD_UNKNOWN", str(exc))
    if isinstance(exc, RepositoryNotFoundError):
        return RegistryError(404, "NAME_UNKNOWN", str(exc))
    if isinstance(exc, ManifestNotFoundError | TagNotFoundError) or (
        isinstance(exc, NotFoundError) and where == "manifest"
    ):
        return RegistryError(404, "MANIFEST_UNKNOWN", str(exc))
    if isinstance(exc, NotFoundError):
        return RegistryError(404, "BLOB_UNKNOWN", str(exc))
    if isinstance(exc, InvalidArgumentError):
        code = "MANIFEST_INVALID" if where == "manifest" else "BLOB_UPLOAD_INVALID"
        return RegistryError(400, code, str(exc))
    if isinstance(exc, TransportError):
        return RegistryError(
            503,
            "TOOMANYREQUESTS",
            "the storage did not answer in time; retry later",
            headers=[(b"retry-after", b"1")],
        )
    log.error("storage error while serving %s: %s", where, exc)
    return RegistryError(500, "UNKNOWN", "the storage failed to complete the request")


Handler = Callable[[Request, Send, dict[str, str]], Awaitable[None]]


class RegistryApp:
    """An OCI registry (distribution spec v1.1) as an ASGI 3 application.

    Serve it with any ASGI server that runs on the event loop you use;
    `asyncstore.registry.serve` runs it with hypercorn under asyncio or trio.
    The store (and so the `RegistryStorage`) is opened and closed by the caller.

    Args:
        registry: Where blobs, uploads, manifests and tags are kept.
        config: What is allowed (read-only, delete, size limits).
        auth: Who may pull and push; None lets everyone do everything
            the configuration allows.
    """

    def __init__(
        self,
        registry: RegistryStorage,
        config: RegistryConfig | None = None,
        *,
        auth: Authenticator | None = None,
    ) -> None:
        self.registry = registry
        self.config = config if config is not None else RegistryConfig()
        self.auth = auth
        self._handlers: dict[tuple[str, str], Handler] = {
            ("base", "GET"): self._base,
            ("base", "HEAD"): self._base,
            ("uploads", "POST"): self._start_upload,
            ("upload", "GET"): self._upload_status,
            ("upload", "PATCH"): self._append,
            ("upload", "PUT"): self._finish,
            ("upload", "DELETE"): self._cancel,
            ("blob", "GET"): self._get_blob,
            ("blob", "HEAD"): self._get_blob,
            ("blob", "DELETE"): self._delete_blob,
            ("manifest", "GET"): self._get_manifest,
            ("manifest", "HEAD"): self._get_manifest,
            ("manifest", "PUT"): self._put_manifest,
            ("manifest", "DELETE"): self._delete_manifest,
            ("tags", "GET"): self._tags,
            ("referrers", "GET"): self._referrers,
        }

    def __repr__(self) -> str:
        return f"<RegistryApp over {self.registry!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return  # websockets: not part of the API
        request = Request(scope, receive)
        started = False
        status = 0
        begun = time.perf_counter()

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
            await send(message)

        try:
            await self._dispatch(request, tracking_send)
        except RegistryError as exc:
            if started:
                raise
            await self._error(request, tracking_send, exc)
        except ClientDisconnected:
            log.info("%s %s: the client disconnected", request.method, request.path[:200])
        except Exception:
            # A bug, or a backend error outside the error tree: a JSON 500, never a traceback.
            log.exception("%s %s failed", request.method, request.path[:200])
            if started:
                raise
            failure = RegistryError(500, "UNKNOWN", "the registry failed to complete the request")
            await self._error(request, tracking_send, failure)
        finally:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s %d %.1f ms",
                    request.method,
                    request.path[:200],
                    status,
                    (time.perf_counter() - begun) * 1000,
                )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _error(self, request: Request, send: Send, exc: RegistryError) -> None:
        if exc.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path[:200], exc.status, exc.code)
        else:
            log.debug("%s %s -> %d %s", request.method, request.path[:200], exc.status, exc.code)
        try:
            await request.discard()
        except ClientDisconnected:
            return
        except RegistryError:
            pass
        await send_response(
            send,
            exc.status,
            [_JSON, *exc.headers],
            error_body(exc.code, exc.message, exc.detail),
            head=request.method == "HEAD",
        )

    async def _dispatch(self, request: Request, send: Send) -> None:
        kind, match = _route(request.path)
        handler = self._handlers.get((kind, request.method))
        if handler is None:
            raise RegistryError(
                405,
                "UNSUPPORTED",
                f"{request.method} is not supported on this endpoint",
                headers=[(b"allow", ", ".join(_METHODS[kind]).encode())],
            )
        write = request.method not in ("GET", "HEAD")
        await self._authorize(request, write)
        if write and self.config.read_only:
            raise RegistryError(405, "UNSUPPORTED", "this registry is read-only")
        params = match.groupdict()
        if "name" in params:
            try:
                params["name"] = check_repository(params["name"])
            except InvalidArgumentError as exc:
                raise RegistryError(400, "NAME_INVALID", str(exc)) from None
        try:
            await handler(request, send, params)
        except StoreError as exc:
            raise _translate(exc, where=kind) from exc

    async def _authorize(self, request: Request, write: bool) -> Identity | None:
        if self.auth is None:
            return None
        identity = await self.auth.identify(request.headers.get("authorization"))
        if identity is None:
            identity = self.auth.anonymous()
            if identity is None or (write and not identity.can_write):
                raise RegistryError(
                    401, "UNAUTHORIZED", "authentication required", headers=[self.auth.challenge]
                )
        if write and not identity.can_write:
            raise RegistryError(
                403, "DENIED", f"user {identity.user!r} may pull but not push or delete"
            )
        return identity

    # -- /v2/ -----------------------------------------------------------------------------------

    async def _base(self, request: Request, send: Send, params: dict[str, str]) -> None:
        await send_response(send, 200, [_JSON], b"{}", head=request.method == "HEAD")

    # -- blobs ----------------------------------------------------------------------------------

    def _blob_location(self, name: str, digest: Digest) -> list[tuple[bytes, bytes]]:
        return [
            (b"location", f"/v2/{name}/blobs/{digest}".encode()),
            (b"docker-content-digest", str(digest).encode()),
        ]

    async def _get_blob(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name = params["name"]
        digest = _digest(params["digest"])
        head = request.method == "HEAD"
        headers = [
            (b"docker-content-digest", str(digest).encode()),
            (b"accept-ranges", b"bytes"),
            (b"content-type", b"application/octet-stream"),
        ]
        wanted = request.headers.get("range")
        if head or wanted is not None:
            descriptor = await self.registry.stat_blob(name, digest)
            size = descriptor.size
            if head:
                await send_response(send, 200, headers, head=True, length=size)
                return
            assert wanted is not None
            span = _parse_range(wanted, size)
            if span is not None:
                start, end = span
                stream = await self.registry.stream_blob_range(name, digest, start, end)
                headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
                async with stream:
                    await _send_stream(send, 206, headers, end - start, stream)
                return
        blob = self.registry.stream_blob(name, digest)
        async with blob:
            assert blob.descriptor is not None
            await _send_stream(send, 200, headers, blob.descriptor.size, blob)

    async def _delete_blob(self, request: Request, send: Send, params: dict[str, str]) -> None:
        self._check_delete()
        digest = _digest(params["digest"])
        await self.registry.delete_blob(params["name"], digest)
        await send_response(send, 202, [(b"docker-content-digest", str(digest).encode())])

    def _check_delete(self) -> None:
        if not self.config.delete:
            raise RegistryError(405, "UNSUPPORTED", "deleting is disabled on this registry")

    # -- uploads --------------------------------------------------------------------------------

    def _upload_limit(self, offset: int = 0) -> int | None:
        limit = self.config.max_upload_size
        return None if limit is None else max(limit - offset, 0)

    async def _start_upload(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name = params["name"]
        mount = request.param("mount")
        if mount is not None:
            digest = _digest(mount, "mount")
            source = request.param("from")
            if source is not None:
                try:
                    source = check_repository(source)
                except InvalidArgumentError as exc:
                    raise RegistryError(400, "NAME_INVALID", str(exc)) from None
            if source is not None or self.config.automatic_mount:
                try:
                    if source is not None:
                        await self.registry.mount_blob(name, digest, source)
                    else:
                        await self.registry.mount_stored_blob(name, digest)
                except BlobNotFoundError:
                    pass  # not there: start an upload instead, as the spec says
                else:
                    await request.discard()
                    await send_response(send, 201, self._blob_location(name, digest))
                    return
        given = request.param("digest")
        if given is not None:
            digest = _digest(given)
            body = await _body(request, self._upload_limit(), None, "blob")
            descriptor = await self.registry.put_blob(name, body, expected=digest)
            await send_response(send, 201, self._blob_location(name, descriptor.digest))
            return
        await request.discard()
        session = await self.registry.start_upload(name)
        await send_response(send, 202, _upload_headers(name, session, 0))

    async def _upload_status(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name, session = params["name"], params["session"]
        size = await self.registry.upload_progress(name, session)
        await send_response(send, 204, _upload_headers(name, session, size), length=0)

    async def _body_offset(
        self, request: Request, name: str, session: str
    ) -> tuple[int | None, int | None]:
        """Where the body of a PATCH or closing PUT goes, and its declared length.

        Without Content-Range the offset is None (append at the session's size),
        unless an upload limit needs to know it: then it is read first.
        """
        header = request.headers.get("content-range")
        if header is None:
            if self.config.max_upload_size is None:
                return None, None
            return await self.registry.upload_progress(name, session), None
        match = _CONTENT_RANGE.fullmatch(header.strip())
        if match is None:
            raise RegistryError(
                416, "BLOB_UPLOAD_INVALID", f"Content-Range {header[:60]!r} is not start-end"
            )
        start, end = int(match[1]), int(match[2])
        if end < start:
            raise RegistryError(
                416, "BLOB_UPLOAD_INVALID", f"Content-Range {header[:60]!r} ends before it starts"
            )
        length = end - start + 1
        declared = request.content_length()
        if declared is not None and declared != length:
            raise RegistryError(
                400,
                "SIZE_INVALID",
                f"Content-Length {declared} differs from the {length} bytes of Content-Range",
            )
        return start, length

    async def _append(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name, session = params["name"], params["session"]
        offset, length = await self._body_offset(request, name, session)
        limit = self._upload_limit(offset or 0)
        if limit is not None and length is not None and length > limit:
            raise RegistryError(
                413,
                "SIZE_INVALID",
                f"the blob would exceed the upload limit of {self.config.max_upload_size} bytes",
            )
        body = await _body(request, limit, length, "chunk")
        size = await self.registry.append_upload(name, session, offset, body)
        await send_response(send, 202, _upload_headers(name, session, size), length=0)

    async def _finish(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name, session = params["name"], params["session"]
        given = request.param("digest")
        if given is None:
            raise RegistryError(400, "DIGEST_INVALID", "closing an upload needs ?digest=")
        digest = _digest(given)
        if await request.has_body():
            offset, length = await self._body_offset(request, name, session)
            body = await _body(request, self._upload_limit(offset or 0), length, "chunk")
            descriptor = await self.registry.finish_upload(
                name, session, digest, chunk=body, offset=offset
            )
        else:
            descriptor = await self.registry.finish_upload(name, session, digest)
        await send_response(send, 201, self._blob_location(name, descriptor.digest))

    async def _cancel(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name, session = params["name"], params["session"]
        await self.registry.upload_status(name, session)  # 404 for an unknown session
        await self.registry.abort_upload(name, session)
        await send_response(send, 204, length=0)

    # -- manifests --------------------------------------------------------------------------------

    async def _get_manifest(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name, reference = params["name"], params["reference"]
        if ":" in reference:
            _digest(reference)
        else:
            _known_tag(reference)
        head = request.method == "HEAD"
        if head:
            descriptor = await self.registry.stat_manifest(name, reference)
            body = b""
        else:
            body, descriptor = await self.registry.get_manifest(name, reference)
        headers = [
            (b"content-type", descriptor.media_type.encode("latin-1", "replace")),
            (b"docker-content-digest", str(descriptor.digest).encode()),
        ]
        await send_response(send, 200, headers, body, head=head, length=descriptor.size)

    async def _put_manifest(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name, reference = params["name"], params["reference"]
        digest: Digest | None = None
        tags: list[str] = []
        if ":" in reference:
            digest = _digest(reference)
        else:
            try:
                tags.append(check_tag(reference))
            except InvalidArgumentError as exc:
                raise RegistryError(400, "MANIFEST_INVALID", str(exc)) from None
        limit = self.config.max_manifest_size
        body = await request.read(limit=limit, what="manifest")
        media_type = _media_type(request.headers.get("content-type"), body)
        try:
            descriptor = await self.registry.put_manifest(
                name, body, media_type, digest=digest, tags=tags
            )
        except NotFoundError as exc:
            raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", str(exc)) from exc
        except DigestMismatchError as exc:
            raise RegistryError(400, "DIGEST_INVALID", str(exc)) from exc
        except InvalidArgumentError as exc:
            raise RegistryError(400, "MANIFEST_INVALID", str(exc)) from exc
        headers = [
            (b"location", f"/v2/{name}/manifests/{descriptor.digest}".encode()),
            (b"docker-content-digest", str(descriptor.digest).encode()),
        ]
        subject = inspect_manifest(body, media_type, str(descriptor.digest)).subject
        if subject is not None:
            headers.append((b"oci-subject", str(subject.digest).encode()))
        await send_response(send, 201, headers)

    async def _delete_manifest(self, request: Request, send: Send, params: dict[str, str]) -> None:
        self._check_delete()
        name, reference = params["name"], params["reference"]
        if ":" in reference:
            await self.registry.delete_manifest(name, _digest(reference))
        else:
            _known_tag(reference)
            await self.registry.untag(name, reference)
        await send_response(send, 202)

    # -- discovery --------------------------------------------------------------------------------

    async def _tags(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name = params["name"]
        n_param, last = request.param("n"), request.param("last")
        n = self.config.tags_page_size
        if n_param is not None:
            if not n_param.isdigit() or len(n_param) > 12:
                raise RegistryError(
                    400, "UNSUPPORTED", f"n={n_param[:40]!r} is not a number of tags"
                )
            n = min(int(n_param), n)
        page = await self.registry.list_tags(name, n=n, last=last)
        headers = [_JSON]
        if page.next is not None:
            query = f"n={n}&last={page.next}"
            headers.append((b"link", f'</v2/{name}/tags/list?{query}>; rel="next"'.encode()))
        body = json.dumps({"name": name, "tags": list(page.tags)}).encode()
        await send_response(send, 200, headers, body)

    async def _referrers(self, request: Request, send: Send, params: dict[str, str]) -> None:
        name = params["name"]
        digest = _digest(params["digest"])
        artifact_type = request.param("artifactType")
        referrers = await self.registry.list_referrers(name, digest, artifact_type=artifact_type)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor.to_dict() for descriptor in referrers],
        }
        headers = [(b"content-type", OCI_INDEX.encode())]
        if artifact_type is not None:
            headers.append((b"oci-filters-applied", b"artifactType"))
        await send_response(send, 200, headers, json.dumps(index).encode())


def _route(path: str) -> tuple[str, re.Match[str]]:
    for pattern, kind in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None:
            return kind, match
    raise RegistryError(404, "NAME_UNKNOWN", f"no such endpoint: {path[:200]!r}")


def _known_tag(reference: str) -> None:
    """A malformed tag names no manifest: 404 MANIFEST_UNKNOWN (what pulls expect)."""
    try:
        check_tag(reference)
    except InvalidArgumentError:
        raise RegistryError(
            404, "MANIFEST_UNKNOWN", f"{reference[:130]!r} is neither a tag nor a digest"
        ) from None


def _media_type(header: str | None, body: bytes) -> str:
    """The manifest's media type: Content-Type, else the body's own ``mediaType``."""
    if header is not None:
        value = header.split(";", 1)[0].strip()
        if value:
            return value
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    found = doc.get("mediaType") if isinstance(doc, dict) else None
    if not isinstance(found, str) or not found:
        raise RegistryError(
            400, "MANIFEST_INVALID", "the manifest has no Content-Type and no mediaType field"
        )
    return found


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single ``bytes=`` range; None to send the whole blob.

    Raises:
        RegistryError: 416 for a range that starts past the end.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None  # not a single byte range: ignored, as RFC 9110 allows
    unsatisfiable = RegistryError(
        416,
        "BLOB_UNKNOWN",
        f"range {header[:60]!r} is outside the blob's {size} bytes",
        headers=[(b"content-range", f"bytes */{size}".encode())],
    )
    if not match[1]:  # the last n bytes
        n = int(match[2])
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(size - n, 0), size
    start = int(match[1])
    end = int(match[2]) + 1 if match[2] else size
    if start >= size or end <= start:
        raise unsatisfiable
    return start, min(end, size)


async def _body(
    request: Request, limit: int | None, length: int | None, what: str
) -> bytes | AsyncIterator[bytes]:
    """The body to store: read whole when small, else a stream of its pieces.

    A body whose declared size (``length``, from Content-Range, or Content-Length)
    is at most `SMALL_BODY` is read into memory, so the store takes the buffer path
    (no part buffers, no staging object); any other body streams as it arrives.
    """
    declared = length if length is not None else request.content_length()
    if declared is not None and declared <= SMALL_BODY and (limit is None or declared <= limit):
        data = await request.read(limit=declared, what=what)
        if length is not None and len(data) != length:
            raise RegistryError(
                400,
                "SIZE_INVALID",
                f"the {what} ended after {len(data)} of the {length} bytes of its Content-Range",
            )
        return data
    body = request.chunks(limit=limit, what=what)
    return body if length is None else _exactly(body, length)


async def _exactly(body: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """The body, which must be exactly ``length`` bytes (its Content-Range)."""
    received = 0
    async for piece in body:
        received += len(piece)
        if received > length:
            raise RegistryError(
                400, "SIZE_INVALID", f"the chunk is longer than its Content-Range ({length} bytes)"
            )
        yield piece
    if received != length:
        raise RegistryError(
            400,
            "SIZE_INVALID",
            f"the chunk ended after {received} of the {length} bytes of its Content-Range",
        )


async def _send_stream(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], length: int, body: Any
) -> None:
    await start_response(send, status, headers, length=length)
    async for chunk in body:
        await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
