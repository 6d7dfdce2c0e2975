"""GCSBackend: the Backend primitives over the GCS JSON API."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import heapq
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    IteratorReadStream,
    KiB,
    LoopBound,
    MiB,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from ..._errors import (
    ConnectionError,
    InvalidKeyError,
    InvalidRangeError,
    PreconditionFailedError,
    StoreError,
)
from ..._types import CommonPrefix, ObjectInfo
from .._http import HttpPool, ResponseStream, http_date, proxied, target_of
from ._api import (
    JSON_TIMEOUT,
    GCSApi,
    Media,
    check_generation,
    conditions,
    object_info,
)
from ._http import default_timeouts, make_client
from ._objects import delete_names, write_resource
from ._options import DEFAULT_MAX_CONNECTIONS, GCSOptions, UploadMethod, resolve_api_root
from ._translate import Answer, Where, gcs_errors
from ._uploads import TEMP_SEGMENT, Uploads

__all__ = ["GCSBackend"]

#: Objects per listing page.
PAGE_SIZE = 1000
#: The most bytes one read request asks for (a read of more makes several).
READ_REQUEST = 16 * MiB
#: How often a read retries when the object changes between its metadata and its bytes.
_READ_ATTEMPTS = 3
_LIST_FIELDS = "items(name,size,generation,updated,contentType,metadata),prefixes,nextPageToken"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(-?\d+)/(\d+|\*)$")  # the emulator: "0--1/0"
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
_META_HEADER = "x-goog-meta-"

_COMPOSITE = Capabilities(
    parallel_parts=True,
    min_part_size=1,  # parts are objects: any size composes
    max_part_size=5 * 1024 * MiB,
    max_parts=1024,  # a composite object has at most 1024 components
    max_single_put=5 * 1024 * MiB,
    part_checksums=frozenset({"crc32c"}),
)
#: ``upload=auto``: parts as composite uploads, a file in one streamed request to a
#: resumable session (`create_stream_upload`); docs/backends/gcs.md says why, measured.
_AUTO = dataclasses.replace(_COMPOSITE, streamed_upload=True)
_RESUMABLE = Capabilities(
    parallel_parts=False,
    min_part_size=256 * KiB,  # chunks of a session are multiples of 256 KiB
    max_part_size=5 * 1024 * MiB,
    max_parts=1_000_000,
    max_single_put=5 * 1024 * MiB,
    part_checksums=frozenset({"crc32c"}),
    streamed_upload=True,  # a file in one request: see Uploads.stream
)


_GENERATION = re.compile(r"[0-9]{1,20}")


class _NoGeneration(Exception):
    """A media response without ``x-goog-generation``: the read starts with the metadata."""


def _is_temp(name: str) -> bool:
    return name.startswith(TEMP_SEGMENT + "/") or f"/{TEMP_SEGMENT}/" in name


class GCSBackend(Backend):
    """Objects in a Google Cloud Storage bucket, below an optional prefix.

    ``Store(GCSBackend("bucket", "prefix"))``, or ``open_store("gs://bucket/prefix")``.
    Nothing is contacted before the first request; the HTTP client and the
    credentials are made then, inside the running event loop (asyncio or
    trio), and released by `aclose`.

    Args:
        bucket: The bucket.
        prefix: The key prefix the store lives under ("" for the bucket's root).
        project: The project billed for the requests (sent as ``userProject``).
        api_root: ``http(s)://host[:port]`` of the JSON API (default:
            ``STORAGE_EMULATOR_HOST`` when set, else ``https://storage.googleapis.com``).
        service_file: A credentials JSON file (default: Application Default Credentials).
        upload: For objects of more than one part: ``"auto"`` (the default: a file
            in one streamed request to a resumable session, anything else as a
            parallel composite upload), ``"composite"`` (parallel composite uploads)
            or ``"resumable"`` (resumable sessions: a file in one request, other
            sources in parts, in order).
        concurrency: The store's default parts / ranges in flight.
        part_size_mb: The store's default part / range size, in MiB.
        max_connections: The most HTTP connections open at once.
        connect_timeout: Seconds to wait for a connection (default 30).
        read_timeout: Seconds to wait for each read or write of a request's
            bytes (default 120); a stalled answer fails with a TimeoutError,
            which the Store retries. gcloud-aio's own per-call timeouts never
            make it longer.
        lean: Send the backend's own requests (object reads, metadata, uploads)
            on asyncstore's lean HTTP/1.1 client instead of httpx (under asyncio
            and trio alike); off, or with a proxy configured, httpx sends them.

    Attributes:
        options: The validated options.
        timeouts: (connect, read) timeouts in seconds.
        api_root: Scheme and host of the JSON API in use.
        anonymous: Whether requests go without credentials (an emulator).

    Raises:
        ConfigurationError: a bad bucket, prefix or option.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        project: str | None = None,
        api_root: str | None = None,
        service_file: str | None = None,
        upload: UploadMethod = "auto",
        concurrency: int | None = None,
        part_size_mb: int | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        lean: bool = True,
    ) -> None:
        options = GCSOptions(
            bucket,
            prefix,
            project=project,
            api_root=api_root,
            service_file=service_file,
            upload=upload,
            concurrency=concurrency,
            part_size_mb=part_size_mb,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            lean=lean,
        )
        self.options = options
        default_connect, default_read = default_timeouts()
        self.timeouts: tuple[float, float] = (
            options.connect_timeout or default_connect,
            options.read_timeout or default_read,
        )
        self.api_root, self.anonymous = resolve_api_root(options.api_root)
        self.capabilities = {"auto": _AUTO, "composite": _COMPOSITE, "resumable": _RESUMABLE}[
            options.upload
        ]
        if options.part_size_mb is not None:
            self.default_chunk_size = options.part_size_mb * MiB
        if options.concurrency is not None:
            self.default_max_concurrency = options.concurrency
        self.default_max_connections = options.max_connections
        self._root = f"{options.prefix}/" if options.prefix else ""
        self._session: LoopBound[tuple[GCSApi, Uploads]] = LoopBound("GCS", options.url, self._open)

    @property
    def upload_method(self) -> UploadMethod:
        """How uploads of more than one part are made (``auto``, ``composite`` or ``resumable``)."""
        return self.options.upload

    def describe(self) -> str:
        where = "" if self.api_root.endswith("googleapis.com") else f" at {self.api_root}"
        return f"gcs {self.options.url}{where}"

    # -- set-up

    async def _ready(self) -> tuple[GCSApi, Uploads]:
        return await self._session.get()

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[GCSApi, Uploads]:
        """Make the HTTP clients (in the running event loop) and the request helpers."""
        client = await anyio.to_thread.run_sync(
            make_client, self.options.max_connections, self.timeouts
        )
        stack.push_async_callback(client.aclose)
        pool = self._lean_pool()
        if pool is not None:
            stack.push_async_callback(pool.aclose)
        api = GCSApi(
            client=client,
            bucket=self.options.bucket,
            root=self._root,
            api_root=self.api_root,
            anonymous=self.anonymous,
            project=self.options.project,
            service_file=self.options.service_file,
            max_connections=self.options.max_connections,
            timeouts=self.timeouts,
            pool=pool,
        )
        return api, Uploads(api)

    def _lean_pool(self) -> HttpPool | None:
        """The lean client's pool for the JSON API's host (None: httpx sends every request)."""
        target = target_of(self.api_root)
        if not self.options.lean or target is None or proxied(self.api_root):
            return None
        return HttpPool(
            target,
            max_connections=self.options.max_connections,
            connect_timeout=self.timeouts[0],
            read_timeout=self.timeouts[1],
        )

    async def aclose(self) -> None:
        """Close the HTTP client; the backend cannot be used afterwards."""
        await self._session.aclose()

    # -- names

    def name(self, key: str) -> str:
        """The object name of ``key`` (the store's prefix + the key).

        Raises:
            InvalidKeyError: the key has a segment reserved for upload temporaries.
        """
        if (
            key == TEMP_SEGMENT
            or key.startswith(TEMP_SEGMENT + "/")
            or f"/{TEMP_SEGMENT}/" in ("/" + key)
        ):
            raise InvalidKeyError(
                f"key {key!r} has the path segment {TEMP_SEGMENT!r}, which the GCS backend "
                "reserves for the temporary parts of uploads",
                key=key,
            )
        return self._root + key

    def key(self, name: str) -> str:
        """The store key of the object called ``name``."""
        return name[len(self._root) :]

    def where(self, key: str | None, **flags: bool) -> Where:
        """A `Where` for a request about ``key`` in this backend's bucket."""
        return Where(self.options.bucket, key, **flags)

    # -- metadata and reads

    async def head(self, key: str) -> ObjectInfo:
        api, _ = await self._ready()
        resource = await api.resource(self.name(key), self.where(key))
        return object_info(resource, key)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        """Open ``[start, end)`` of an object, pinned to one generation: one request.

        The media response carries what the object's metadata would say
        (``x-goog-generation``, the size, the content type, the user metadata as
        ``x-goog-meta-*``), so a small object costs one GET; the later requests of
        the read (and of a download: ``if_match``) are pinned to that generation,
        and a replaced object fails with PreconditionFailedError. A service whose
        media responses lack the generation gets the metadata read first.
        """
        api, _ = await self._ready()
        name = self.name(key)
        where = self.where(key)
        if if_match is not None:
            generation = check_generation(if_match, key)
            if end is not None and end <= start:
                info = object_info(await api.resource(name, where, generation=generation), key)
                return _empty(info, start, key)
            return await self._read_pinned(api, name, key, start, end, generation)
        if end is None or end > start:
            with contextlib.suppress(_NoGeneration):
                return await self._read_pinned(api, name, key, start, end, None)
        for attempt in builtins.range(1, _READ_ATTEMPTS + 1):
            info = object_info(await api.resource(name, where), key)
            stop = info.size if end is None else min(end, info.size)
            if start >= stop:
                return _empty(info, start, key)
            try:
                return await self._read_pinned(api, name, key, start, stop, info.etag, info)
            except PreconditionFailedError:
                if attempt == _READ_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_pinned(
        self,
        api: GCSApi,
        name: str,
        key: str,
        start: int,
        end: int | None,
        generation: str | None,
        info: ObjectInfo | None = None,
    ) -> ReadStream:
        """Read ``[start, end)`` of generation ``generation``, at most 16 MiB per request.

        The first request is made here (so a missing object, a replaced one or
        a bad range fails now); the rest as the stream is consumed. With no
        ``generation``, the first answer's ``x-goog-generation`` pins the rest
        (`_NoGeneration` if it has none).
        """
        where = self.where(key)
        if end is not None and 0 < end - start <= READ_REQUEST:
            streamed = await self._stream_pinned(api, name, key, start, end, generation, info)
            if streamed is not None:
                return streamed
        ranges = _Ranges(api, name, where, generation, start)
        first_end = start + READ_REQUEST if end is None else min(end, start + READ_REQUEST)
        media = await ranges.fetch(start, first_end)
        response = media.response
        if response.status_code == 416:
            return await self._unsatisfied(api, name, key, start, response, generation, info)
        if generation is None:
            generation = response.headers.get("x-goog-generation")
            if generation is None or not _GENERATION.fullmatch(generation):
                raise _NoGeneration
            ranges.pin(generation)
        body_start, size = _body_range(response, start)
        if info is None:
            info = _info_from_headers(response.headers, key, generation, size)
        if start > size:
            raise InvalidRangeError(
                f"range start {start} is past the end of key {key!r} ({size} bytes)", key=key
            )
        ranges.stop = size if end is None else min(end, size)
        ranges.take(body_start, media.body)
        if media.error is not None:
            if ranges.position == start:
                raise media.error  # nothing usable arrived
            ranges.error = media.error  # raised after the bytes that did
        return IteratorReadStream(info, ranges)

    async def _unsatisfied(
        self,
        api: GCSApi,
        name: str,
        key: str,
        start: int,
        response: Answer,
        generation: str | None,
        info: ObjectInfo | None,
    ) -> ReadStream:
        """The empty read (or InvalidRangeError) a 416 answer means."""
        total = _unsatisfied_size(response.headers.get("content-range", ""))
        if info is None:
            resource = await api.resource(name, self.where(key), generation=generation)
            info = object_info(resource, key)
        return _empty(info, start, key, size=info.size if total is None else total)

    async def _stream_pinned(
        self,
        api: GCSApi,
        name: str,
        key: str,
        start: int,
        end: int,
        generation: str | None,
        info: ObjectInfo | None,
    ) -> ReadStream | None:
        """``[start, end)`` in one request, streamed (its bytes received straight into the
        reader's buffers); None when the answer is not the range itself (an empty or
        gzip-encoded object): `_read_pinned` then reads it the general way."""
        where = self.where(key)
        response = await api.open_media(
            api.object_url(name),
            where,
            params=api.params(alt="media", ifGenerationMatch=generation),
            headers={"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "gzip"},
        )
        if response is None:
            return None
        if response.status == 416:
            return await self._unsatisfied(api, name, key, start, response, generation, info)
        usable = response.status == 206
        if usable and generation is None:
            generation = response.headers.get("x-goog-generation")
            if generation is None or not _GENERATION.fullmatch(generation):
                await response.aclose()
                raise _NoGeneration
        if usable:
            body_start, size = _body_range(response, start)
            usable = body_start == start and start < size
        if not usable:  # the general way says what a start at or past the end means
            await response.aclose()
            return None
        assert generation is not None
        if info is None:
            info = _info_from_headers(response.headers, key, generation, size)
        return ResponseStream(info, response, lambda: gcs_errors(where))

    # -- writes

    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        """Write the object in one ``uploadType=multipart`` request (resource + bytes).

        The crc32c (and MD5, when given) go in the resource, so GCS verifies
        the bytes; ``mode="create"`` / ``if_match`` become ``ifGenerationMatch``.
        """
        api, _ = await self._ready()
        name = self.name(key)
        resource = write_resource(name, attrs, checksums)
        where = self.where(key, create=attrs.if_none_match, write=True)
        result = await api.upload_multipart(resource, data, where, params=conditions(attrs, key))
        return WriteResult(etag=str(result["generation"]))

    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        _, uploads = await self._ready()
        resumable = self.upload_method == "resumable"  # auto: parts go as composite uploads
        return await uploads.create(
            key, self.name(key), attrs, "resumable" if resumable else "composite"
        )

    async def create_stream_upload(self, key: str, attrs: WriteAttributes) -> str:
        _, uploads = await self._ready()
        return await uploads.create(key, self.name(key), attrs, "resumable")

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        _, uploads = await self._ready()
        return await uploads.part(key, self.name(key), upload_id, number, offset, data, checksums)

    async def upload_stream(
        self,
        key: str,
        upload_id: str,
        size: int,
        chunks: Callable[[int], AsyncGenerator[memoryview, None]],
    ) -> None:
        _, uploads = await self._ready()
        await uploads.stream(key, self.name(key), upload_id, size, chunks)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        _, uploads = await self._ready()
        return await uploads.complete(key, self.name(key), upload_id, parts, attrs)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        _, uploads = await self._ready()
        await uploads.abort(key, self.name(key), upload_id)

    async def pending_uploads(self, prefix: str = "") -> builtins.list[tuple[str, str]]:
        """``(key, upload id)`` of the composite uploads under ``prefix`` with parts stored.

        Open resumable sessions are not listed: GCS has no call that lists them
        (they expire after a week).
        """
        _, uploads = await self._ready()
        return await uploads.pending(prefix)

    # -- delete and copy

    async def delete(self, key: str) -> None:
        api, _ = await self._ready()
        await delete_names(api, [self.name(key)], key=key)

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete in batch requests of up to 100 objects, a few batches at once."""
        api, _ = await self._ready()
        names = [self.name(key) for key in keys]
        await delete_names(api, names)

    async def copy(self, src: str, dst: str) -> WriteResult:
        """Server-side copy with the ``rewrite`` call, repeated until GCS says done."""
        api, _ = await self._ready()
        src_name, dst_name = self.name(src), self.name(dst)
        with gcs_errors(self.where(src)):
            data = await api.storage.copy(
                api.bucket,
                src_name,
                api.bucket,
                new_name=dst_name,
                params=api.params(),
                timeout=JSON_TIMEOUT,
            )
        resource = data.get("resource")
        if not isinstance(resource, dict) or "generation" not in resource:
            raise StoreError(f"GCS's rewrite of key {src!r} to {dst!r} returned no object")
        return WriteResult(etag=str(resource["generation"]))

    # -- listing (last: the method name shadows the builtin in the class body)

    async def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """Yield objects (and, with a delimiter, common prefixes) in key order, page by page.

        Each page's objects and prefixes are merged by name; the temporary
        parts of uploads in progress are never listed.
        """
        api, _ = await self._ready()
        full_prefix = self._root + prefix
        where = self.where(None)
        token: str | None = None
        last_common: str | None = None
        while True:
            params = api.params(
                prefix=full_prefix or None,
                delimiter=delimiter or None,
                maxResults=str(PAGE_SIZE),
                pageToken=token,
                fields=_LIST_FIELDS,
            )
            with gcs_errors(where):
                page = await api.storage.list_objects(
                    api.bucket, params=params, timeout=JSON_TIMEOUT
                )
            items = page.get("items") or []
            prefixes = page.get("prefixes") or []
            entries: Iterable[tuple[str, Any]] = heapq.merge(
                ((item["name"], item) for item in sorted(items, key=lambda i: i["name"])),
                ((p, None) for p in sorted(prefixes)),
                key=lambda pair: pair[0],
            )
            for name, item in entries:
                if _is_temp(name):
                    continue
                if item is None:
                    if name == last_common:
                        continue
                    last_common = name
                    yield CommonPrefix(self.key(name))
                else:
                    yield object_info(item, self.key(name))
            token = page.get("nextPageToken") or None
            if token is None:
                return


def _empty(info: ObjectInfo, start: int, key: str, *, size: int | None = None) -> ReadStream:
    size = info.size if size is None else size
    if start > size:
        raise InvalidRangeError(
            f"range start {start} is past the end of key {key!r} ({size} bytes)", key=key
        )
    return IteratorReadStream(info, _NoChunks())


class _NoChunks:
    """The body of an empty range."""

    def __aiter__(self) -> _NoChunks:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        raise StopAsyncIteration


def _unsatisfied_size(content_range: str) -> int | None:
    match = _UNSATISFIED_RANGE.match(content_range.strip())
    return int(match.group(1)) if match else None


def _body_range(response: Answer, start: int) -> tuple[int, int]:
    """(offset of the body's first byte, size of the whole object) of a media response."""
    headers = response.headers
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(headers.get("content-range", "").strip())
        if match is None:
            raise StoreError(
                f"GCS sent a partial response without a usable Content-Range: "
                f"{headers.get('content-range')!r}"
            )
        first, total = int(match.group(1)), match.group(3)
        if total != "*":
            return first, int(total)
        stored = headers.get("x-goog-stored-content-length")
        if stored is None:
            raise StoreError("GCS did not say the size of the object in a partial response")
        return first, int(stored)
    # 200: the whole object (the service ignored the Range, e.g. a gzip-encoded object)
    stored = headers.get("x-goog-stored-content-length") or headers.get("content-length")
    if stored is None:
        raise StoreError("GCS did not say the size of the object")
    return 0, int(stored)


def _info_from_headers(
    headers: Mapping[str, str], key: str, generation: str, size: int
) -> ObjectInfo:
    metadata = {
        name[len(_META_HEADER) :]: value
        for name, value in headers.items()
        if name.startswith(_META_HEADER)  # lower-case names (the lean client's, httpx's)
    }
    content_type = headers.get("content-type")
    return ObjectInfo(
        key=key,
        size=size,
        etag=headers.get("x-goog-generation", generation),
        last_modified=http_date(headers.get("last-modified")),
        content_type=content_type or None,
        metadata=metadata,
    )


class _Ranges:
    """The bytes of a pinned read, fetched in requests of at most `READ_REQUEST` bytes.

    Each request's answer is read whole (bounded memory: one request's bytes),
    so no half-read HTTP stream is ever abandoned; a class rather than an async
    generator, so that a consumer may stop early without leaving one behind.
    An answer cut short (a reset, a read timeout) hands on the bytes that did
    arrive, then raises its TransportError: the Store's retry resumes from the
    byte reached instead of fetching the whole request again.
    """

    def __init__(
        self, api: GCSApi, name: str, where: Where, generation: str | None, start: int
    ) -> None:
        self._api = api
        self._name = name
        self._where = where
        self._generation = generation
        self.position = start
        self.stop = start
        #: Raised once the bytes before it are consumed (an answer cut short).
        self.error: StoreError | None = None
        self._ready: builtins.list[bytes] = []

    def pin(self, generation: str) -> None:
        """Pin the requests still to come to ``generation``."""
        self._generation = generation

    async def fetch(self, start: int, end: int) -> Media:
        """GET bytes ``[start, end)`` as stored (no decoding), pinned to the generation."""
        api = self._api
        return await api.get_media(
            api.object_url(self._name),
            self._where,
            params=api.params(alt="media", ifGenerationMatch=self._generation),
            headers={"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "gzip"},
            ok=(416,),
        )

    def take(self, body_start: int, body: bytes) -> None:
        """Keep the part of a response body (starting at ``body_start``) that is wanted next."""
        skip = self.position - body_start
        if skip < 0:
            raise StoreError(
                f"GCS sent bytes from {body_start} for a range starting at {self.position} "
                f"of key {self._where.key!r}",
                key=self._where.key,
            )
        piece = (
            body[skip : skip + self.stop - self.position]
            if skip or len(body) > (self.stop - self.position)
            else body
        )
        if piece:
            self._ready.append(piece)
            self.position += len(piece)

    def __aiter__(self) -> _Ranges:
        return self

    async def __anext__(self) -> bytes:
        if self._ready:
            return self._ready.pop(0)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if self.position >= self.stop:
            raise StopAsyncIteration
        end = min(self.stop, self.position + READ_REQUEST)
        media = await self.fetch(self.position, end)
        response = media.response
        if response.status_code == 416:
            raise ConnectionError(
                f"key {self._where.key!r} ended at byte {self.position}, before {self.stop}",
                key=self._where.key,
            )
        body_start, _ = _body_range(response, self.position)
        before = self.position
        self.take(body_start, media.body)
        if media.error is not None:
            if self.position == before:
                raise media.error
            self.error = media.error
        if self.position == before:
            raise ConnectionError(
                f"GCS sent no bytes for {self.position}-{end} of key {self._where.key!r}",
                key=self._where.key,
            )
        return self._ready.pop(0)

    async def aclose(self) -> None:
        """Drop what was fetched and not consumed."""
        self._ready.clear()
        self.error = None
        self.position = self.stop
