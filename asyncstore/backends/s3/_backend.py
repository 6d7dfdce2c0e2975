"""``S3Backend``: the backend primitives on Amazon S3 and S3-compatible services.

Each primitive is one S3 request (or a few): HeadObject, ranged GetObject
pinned with If-Match, PutObject, CreateMultipartUpload / UploadPart /
CompleteMultipartUpload / AbortMultipartUpload, ListObjectsV2, DeleteObject(s),
CopyObject / UploadPartCopy. The Store's core does the chunking, hashing,
parallelism and retries around them.

Where the sha256 of an object is recorded (so that any later read verifies it):

* single PutObject: in the user metadata ``x-amz-meta-asyncstore-sha256``,
  committed atomically with the bytes;
* multipart upload: S3 fixes the metadata at CreateMultipartUpload, before the
  digest is known, so right after CompleteMultipartUpload the object is
  tagged with ``asyncstore-sha256`` (the digest) and ``asyncstore-etag`` (the
  ETag of the object the digest belongs to). A reader believes the tag only
  when ``asyncstore-etag`` is the object's current ETag, so a tag written for
  another version of the key is ignored, never reported as corruption;
* copy: CopyObject writes the source's digest into the destination's metadata.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import math
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    GiB,
    IteratorReadStream,
    MiB,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from ..._errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    InvalidRangeError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    StoreError,
    TransportError,
    UploadNotFoundError,
)
from ..._keys import validate_key
from ..._meta import SHA256
from ..._stream._hashing import part_checksums_async
from ..._stream._retry import RetryPolicy
from ..._stream._upload import abort_quietly
from ..._types import CommonPrefix, ObjectInfo
from .._http import Response, ResponseStream, http_date
from ._body import PartBody, S3ReadStream
from ._client import DEFAULT_MAX_CONNECTIONS, HttpClient, S3ClientFactory
from ._lean import (
    LeanS3,
    WrongRegion,
    client_error,
    complete_body,
    list_page,
    result_field,
    tag_set,
    tagging_body,
)
from ._options import S3Options
from ._translate import error_code, s3_errors, translate

__all__ = ["ETAG_TAG", "SHA256_TAG", "S3Backend"]

logger = logging.getLogger("asyncstore.s3")

#: Object tag holding the sha256 of a multipart upload (``sha256:<hex>``).
SHA256_TAG = "asyncstore-sha256"
#: Object tag holding the ETag of the object version the sha256 tag describes.
ETAG_TAG = "asyncstore-etag"

#: S3's limits: parts of 5 MiB .. 5 GiB, 10,000 parts, 5 GiB per PutObject / CopyObject.
S3_CAPABILITIES = Capabilities(
    parallel_parts=True,
    min_part_size=5 * MiB,
    max_part_size=5 * GiB,
    max_parts=10_000,
    max_single_put=5 * GiB,
    # Each part's integrity in transit: CRC32C (hardware-accelerated, a few % of sha256's
    # cost), so that every byte is hashed with sha256 once, for the whole object.
    part_checksums=frozenset({"crc32c"}),
)

_DELETE_BATCH = 1000
#: Seconds to wait for a connection, and for each read of a response, unless set.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
_COPY_CONCURRENCY = 8
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
_TAG_CACHE_SIZE = 1024
_SHA256_VALUE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


#: The requests the lean path sends itself, with their HTTP method.
_LEAN_REQUESTS = {
    "get_object": "GET",
    "head_object": "HEAD",
    "put_object": "PUT",
    "upload_part": "PUT",
    "list_objects_v2": "GET",
    "create_multipart_upload": "POST",
    "complete_multipart_upload": "POST",
    "put_object_tagging": "PUT",
    "get_object_tagging": "GET",
}
#: Parameters of those requests sent as headers.
_LEAN_HEADERS = (
    ("Range", "range"),
    ("IfMatch", "if-match"),
    ("IfNoneMatch", "if-none-match"),
    ("ContentType", "content-type"),
    ("ChecksumSHA256", "x-amz-checksum-sha256"),
    ("ChecksumCRC32C", "x-amz-checksum-crc32c"),
    ("ChecksumAlgorithm", "x-amz-checksum-algorithm"),
)
#: ListObjectsV2 parameters and their query names.
_LIST_PARAMS = (("Delimiter", "delimiter"), ("ContinuationToken", "continuation-token"))
#: Marks an answer of the lean path (its body holds its own slot).
_LEAN = "_lean"


class _LeanBody:
    """A lean response's body, read like aiobotocore's (``read(n)``, ``aclose``)."""

    def __init__(self, response: Response) -> None:
        self.response = response

    @property
    def complete(self) -> bool:
        """Whether the body was read to its end (its connection is already back)."""
        return self.response.complete

    async def read(self, most: int) -> bytes:
        return await self.response.next_chunk(most)

    async def aclose(self) -> None:
        await self.response.aclose()


def _sdk_shape(response: Any, *, with_body: bool) -> dict[str, Any]:
    """The fields of a lean response that the SDK's answer would have (and the body)."""
    headers: Mapping[str, str] = response.headers
    shaped: dict[str, Any] = {
        _LEAN: True,
        "ETag": headers.get("etag", ""),
        "ContentLength": int(headers.get("content-length") or 0),
        "ResponseMetadata": {
            "RequestId": headers.get("x-amz-request-id"),
            "HTTPStatusCode": response.status,
        },
        "Metadata": {
            name[len("x-amz-meta-") :]: value
            for name, value in headers.items()
            if name.startswith("x-amz-meta-")
        },
    }
    if "content-range" in headers:
        shaped["ContentRange"] = headers["content-range"]
    if "last-modified" in headers:
        shaped["LastModified"] = http_date(headers["last-modified"])
    if "content-type" in headers:
        shaped["ContentType"] = headers["content-type"]
    if "x-amz-tagging-count" in headers:
        shaped["TagCount"] = int(headers["x-amz-tagging-count"])
    if with_body:
        shaped["Body"] = _LeanBody(response)
    return shaped


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _quote(etag: str) -> str:
    return etag if etag.startswith('"') or etag == "*" else f'"{etag}"'


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _request_id(response: Mapping[str, Any]) -> str | None:
    request_id = response.get("ResponseMetadata", {}).get("RequestId")
    return str(request_id) if request_id else None


def _code(exc: BaseException) -> str:
    """The S3 error code behind a translated error ("" when there is none)."""
    code, status = error_code(exc.__cause__ or exc)
    return code or (str(status) if status else "")


async def _crc32c_of(data: memoryview) -> bytes:
    sums = await part_checksums_async(data, ("crc32c",))
    return sums["crc32c"]


class _NoChunks:
    """The body of an empty read (an iterator, not a generator: nothing to finalize)."""

    def __aiter__(self) -> _NoChunks:
        return self

    async def __anext__(self) -> bytes:
        await anyio.lowlevel.checkpoint()
        raise StopAsyncIteration


def _merge_listing(
    contents: Sequence[Mapping[str, Any]], prefixes: Sequence[Mapping[str, Any]]
) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
    """One ListObjectsV2 page's objects and common prefixes, in key order."""
    i = j = 0
    while i < len(contents) or j < len(prefixes):
        if j >= len(prefixes) or (i < len(contents) and contents[i]["Key"] < prefixes[j]["Prefix"]):
            yield contents[i]["Key"], contents[i]
            i += 1
        else:
            yield prefixes[j]["Prefix"], None
            j += 1


class S3Backend(Backend):
    """Objects in an S3 bucket (AWS or any S3-compatible service), under a key prefix.

    Open one with ``open_store("s3://bucket/prefix?region=...")`` or build it
    directly. Nothing is done until the first operation, which makes the
    aiobotocore client in the running event loop (asyncio or trio);
    `aclose` (or closing the Store) closes it. Credentials come from
    the standard AWS chain: environment, shared config/credentials files,
    container or instance role.

    Args:
        bucket: The bucket.
        prefix: Key prefix of the store ("" for the bucket's root).
        region: The bucket's region (default: the AWS configuration's, then ``us-east-1``).
        endpoint: Endpoint URL of an S3-compatible service (``http(s)://host[:port]``).
        use_path_style: Path-style (True) or virtual-hosted-style (False)
            addressing; None lets botocore choose.
        concurrency: The Store's default parts / ranges in flight (1..100), or None.
        part_size_mb: The Store's default part / range size in MiB (5..5120), or None.
        http_client: The HTTP library of aiobotocore: "auto" (httpx under trio;
            under asyncio the faster one measured), "aiohttp" (asyncio only) or "httpx".
        max_connections: Requests in flight at once, for every transfer of the
            store (the connection pool holds a few more, for tag lookups).
        connect_timeout: Seconds to wait for a connection (default 10).
        read_timeout: Seconds to wait for each read of a response (default 60);
            a stalled response fails with a TimeoutError, which the Store retries.
        lean: Send GET, HEAD, PUT and UploadPart on asyncstore's lean request path
            (signed with SigV4 and sent by its own HTTP/1.1 client, under asyncio and
            trio alike) instead of through aiobotocore's per-call pipeline. Off, or
            with a proxy configured, aiobotocore sends every request.

    Attributes:
        options: The parsed options.
        default_max_concurrency: ``concurrency``, for the Store's default (or None).
        default_chunk_size: ``part_size_mb`` in bytes, for the Store's default (or None).
        copy_threshold: Objects larger than this are copied with UploadPartCopy
            (S3's CopyObject limit: 5 GiB).
        copy_part_size: Part size of an UploadPartCopy copy.
    """

    capabilities = S3_CAPABILITIES

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint: str | None = None,
        use_path_style: bool | None = None,
        concurrency: int | None = None,
        part_size_mb: int | None = None,
        http_client: HttpClient = "auto",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        lean: bool = True,
    ) -> None:
        self.options = S3Options(
            bucket,
            prefix.strip("/") if isinstance(prefix, str) else prefix,
            region=region,
            endpoint=endpoint,
            use_path_style=use_path_style,
            concurrency=concurrency,
            part_size_mb=part_size_mb,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            lean=lean,
        )
        #: (connect, read) timeouts in seconds.
        self.timeouts = (
            self.options.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            self.options.read_timeout or DEFAULT_READ_TIMEOUT,
        )
        self.default_max_concurrency = self.options.concurrency
        self.default_max_connections = max_connections
        self.default_chunk_size = (
            self.options.part_size_mb * MiB if self.options.part_size_mb is not None else None
        )
        self.copy_threshold = 5 * GiB
        self.copy_part_size = 512 * MiB
        self._clients = S3ClientFactory(
            self.options,
            http_client=http_client,
            max_connections=max_connections,
            connect_timeout=self.timeouts[0],
            read_timeout=self.timeouts[1],
            lean=self.options.lean is not False,
        )
        self._bucket = self.options.bucket
        self._root = self.options.prefix + "/" if self.options.prefix else ""
        self._location = self.options.url
        self._bucket_seen = False
        self._tag_cache: collections.OrderedDict[tuple[str, str], str] = collections.OrderedDict()
        self._completed: dict[str, str] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def describe(self) -> str:
        where = f" at {self.options.endpoint}" if self.options.endpoint else ""
        return f"s3 {self._location}{where}"

    def __repr__(self) -> str:
        return f"<S3Backend {self.describe()}>"

    @property
    def http_library(self) -> str | None:
        """The HTTP library the client uses ("aiohttp" or "httpx"), once it is made."""
        return self._clients.http_library

    async def client(self) -> Any:
        """The underlying aiobotocore S3 client (made on first use), for what asyncstore lacks.

        Requests made with it bypass asyncstore's error translation and prefix.
        """
        return await self._clients.get()

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self._clients.aclose()

    def _full(self, key: str) -> str:
        return self._root + key

    def _relative(self, full: str) -> str:
        return full[len(self._root) :]

    def _errors(self, what: str, key: str | None) -> contextlib.AbstractContextManager[None]:
        return s3_errors(what, key=key, bucket=self._bucket, location=self._location)

    async def _call(
        self, what: str, key: str | None, method: str, *, hold: object = None, **params: Any
    ) -> Any:
        """One S3 request, translated, within the limit of requests in flight.

        With ``hold``, the request's slot stays taken on behalf of ``hold`` when
        the call returns (a response whose body is still to be read) and is
        released with ``self._release(hold)``.
        """
        client = await self._clients.get()
        slots = self._clients.slots
        assert slots is not None
        borrower = hold if hold is not None else object()
        await slots.acquire_on_behalf_of(borrower)
        try:
            with self._errors(what, key):
                response = await getattr(client, method)(Bucket=self._bucket, **params)
        except BaseException:
            slots.release_on_behalf_of(borrower)
            raise
        if hold is None:
            slots.release_on_behalf_of(borrower)
        self._bucket_seen = True
        return response

    async def _request(
        self,
        what: str,
        key: str | None,
        method: str,
        *,
        hold: object = None,
        lookup: bool = False,
        **params: Any,
    ) -> Any:
        """Like `_call`, on the lean path for the requests that have one (see ``_lean.py``).

        The answer has the SDK's shape either way. On the lean path the response
        holds its own slot (freed when its body is closed), so ``hold`` holds none:
        the answer says so with ``_LEAN``. A ``lookup`` is made outside the limit,
        like `_lookup`'s.
        """
        await self._clients.ready()
        lean = self._clients.lean
        if lean is not None and method in _LEAN_REQUESTS:
            try:
                response = await self._lean_call(lean, what, key, method, params, lookup=lookup)
            except WrongRegion as exc:
                logger.info(
                    "%s: the bucket is in region %s, not %s; the SDK sends every request",
                    self._location,
                    exc,
                    lean.signer.region,
                )
                self._clients.lean = None
                await lean.aclose()
            else:
                self._bucket_seen = True
                return response
        if lookup:
            return await self._lookup(what, key, method, **params)
        return await self._call(what, key, method, hold=hold, **params)

    async def _lean_call(
        self,
        lean: LeanS3,
        what: str,
        key: str | None,
        method: str,
        params: Mapping[str, Any],
        *,
        lookup: bool = False,
    ) -> dict[str, Any]:
        verb, query = _LEAN_REQUESTS[method], None
        headers = {header: str(params[param]) for param, header in _LEAN_HEADERS if param in params}
        for name, value in params.get("Metadata", {}).items():
            headers[f"x-amz-meta-{name}"] = value
        if verb == "POST" or "tagging" in method:
            return await self._lean_xml(lean, what, key, method, params, headers, lookup=lookup)
        if method == "upload_part":
            query = {"partNumber": str(params["PartNumber"]), "uploadId": params["UploadId"]}
        elif method == "list_objects_v2":
            return await self._lean_list(lean, what, key, params)
        body = params["Body"].view if "Body" in params else None
        with self._errors(what, key):
            response = await lean.request(
                verb, params["Key"], query=query, headers=headers, body=body
            )
            await lean.raise_for_status(response, verb, query)
        return _sdk_shape(response, with_body=verb == "GET")

    async def _lean_xml(
        self,
        lean: LeanS3,
        what: str,
        key: str | None,
        method: str,
        params: Mapping[str, Any],
        headers: dict[str, str],
        *,
        lookup: bool,
    ) -> dict[str, Any]:
        """The large object's other requests on the lean path, whose bodies are XML:
        CreateMultipartUpload, CompleteMultipartUpload, PutObjectTagging and
        GetObjectTagging. The answer has the fields of the SDK's that the backend reads."""
        body: bytes | None = None
        if method == "create_multipart_upload":
            query = {"uploads": ""}
        elif method == "complete_multipart_upload":
            query = {"uploadId": params["UploadId"]}
            body = complete_body(params["MultipartUpload"]["Parts"])
        else:
            query = {"tagging": ""}
            if method == "put_object_tagging":
                body = tagging_body(params["Tagging"]["TagSet"])
                # S3 asks for a checksum of a tagging body; MD5 is the one every
                # S3-compatible service accepts.
                headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
        verb = _LEAN_REQUESTS[method]
        with self._errors(what, key):
            response = await lean.request(
                verb, params["Key"], query=query, headers=headers, body=body, bounded=not lookup
            )
            await lean.raise_for_status(response, verb, query)
            answer = await response.read()
            shaped = _sdk_shape(response, with_body=False)
            try:
                if method == "create_multipart_upload":
                    shaped["UploadId"] = result_field(
                        answer, "InitiateMultipartUploadResult", "UploadId"
                    )
                elif method == "complete_multipart_upload":
                    if b"<Error>" in answer[:512]:
                        # S3 may fail a completion after its 200 has started: botocore makes
                        # that a 500, retried like one.
                        raise client_error(
                            response,
                            answer,
                            "CompleteMultipartUpload",
                            response.headers,
                            status=500,
                        )
                    shaped["ETag"] = result_field(answer, "CompleteMultipartUploadResult", "ETag")
                elif method == "get_object_tagging":
                    shaped["TagSet"] = tag_set(answer)
            except ValueError as exc:
                raise TransportError(
                    f"{what} of key {key!r} in {self._location}: "
                    f"the answer could not be read ({exc})",
                    key=key,
                ) from exc
        return shaped

    async def _lean_list(
        self, lean: LeanS3, what: str, key: str | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One ListObjectsV2 page on the lean path, parsed with ElementTree (botocore's
        shape-driven parser spent about 40 µs an object), keys URL-encoded as botocore asks."""
        query = {"list-type": "2", "prefix": params["Prefix"], "encoding-type": "url"}
        for param, name in (
            ("Delimiter", "delimiter"),
            ("ContinuationToken", "continuation-token"),
        ):
            if param in params:
                query[name] = params[param]
        with self._errors(what, key):
            response = await lean.request("GET", "", query=query)
            await lean.raise_for_status(response, "GET", query)
            body = await response.read()
        try:
            return list_page(body, url_encoded=True)
        except (ValueError, SyntaxError) as exc:  # ElementTree's ParseError is a SyntaxError
            raise TransportError(
                f"{what} of prefix {key!r} in bucket {self._bucket!r}: "
                f"the listing could not be read ({exc})",
                key=key,
            ) from exc

    async def _lookup(self, what: str, key: str | None, method: str, **params: Any) -> Any:
        """A small request made while holding a slot: outside the limit (RESERVED_CONNECTIONS)."""
        client = await self._clients.get()
        with self._errors(what, key):
            return await getattr(client, method)(Bucket=self._bucket, **params)

    def _release(self, holder: object) -> None:
        slots = self._clients.slots
        if slots is not None and holder is not None:
            slots.release_on_behalf_of(holder)

    # -- reading -------------------------------------------------------------------------------

    def _info(self, key: str, response: Mapping[str, Any], size: int) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=size,
            etag=_unquote(str(response.get("ETag", ""))),
            last_modified=response.get("LastModified"),
            content_type=response.get("ContentType"),
            metadata=dict(response.get("Metadata") or {}),
        )

    async def _with_tagged_sha(
        self, key: str, info: ObjectInfo, tag_count: int | None
    ) -> ObjectInfo:
        """``info`` with the sha256 of a multipart upload, read from its tags if recorded."""
        if SHA256 in info.metadata or tag_count == 0:
            return info
        if tag_count is None and "-" not in info.etag:  # not a multipart ETag: never tagged
            return info
        full = self._full(key)
        sha = self._tag_cache.get((full, info.etag))
        if sha is None:
            try:
                response = await self._request(
                    "read tags", key, "get_object_tagging", lookup=True, Key=full
                )
            except (NotFoundError, PermissionDeniedError):
                return info  # gone meanwhile, or tags not readable: read without verification
            tags = {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}
            sha = tags.get(SHA256_TAG)
            if tags.get(ETAG_TAG) != info.etag or sha is None or not _SHA256_VALUE.match(sha):
                return info
            self._tag_cache[(full, info.etag)] = sha
            while len(self._tag_cache) > _TAG_CACHE_SIZE:
                self._tag_cache.popitem(last=False)
        return dataclasses.replace(info, metadata={**info.metadata, SHA256: sha})

    async def _head(self, key: str, *, if_match: str | None = None) -> ObjectInfo:
        params: dict[str, Any] = {"Key": self._full(key)}
        if if_match is not None:
            params["IfMatch"] = _quote(if_match)
        try:
            response = await self._request("head", key, "head_object", **params)
        except NotFoundError as exc:
            if _code(exc) != "NoSuchBucket":
                await self._check_bucket(key)
            raise
        info = self._info(key, response, int(response.get("ContentLength", 0)))
        return await self._with_tagged_sha(key, info, response.get("TagCount"))

    async def _check_bucket(self, key: str) -> None:
        """After a bodiless 404 (HEAD), tell a missing bucket from a missing key (once)."""
        if self._bucket_seen:
            return
        try:
            await self._call("head bucket", key, "head_bucket")
        except NotFoundError as exc:
            raise NotFoundError(
                f"bucket {self._bucket!r} does not exist (looking up key {key!r} in "
                f"{self._location})",
                key=key,
            ) from exc.__cause__
        except StoreError:
            return  # cannot tell (e.g. no s3:ListBucket permission): report the key

    async def head(self, key: str) -> ObjectInfo:
        return await self._head(key)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        if start < 0 or (end is not None and end < start):
            raise InvalidRangeError(
                f"invalid range [{start}, {end}) for key {key!r} in {self._location}", key=key
            )
        if end is not None and end == start:
            return await self._empty_read(key, start, if_match, empty_range=True)
        params: dict[str, Any] = {"Key": self._full(key)}
        ranged = start > 0 or end is not None
        if ranged:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if if_match is not None:
            params["IfMatch"] = _quote(if_match)
        holder: object = object()
        try:
            response = await self._request("read", key, "get_object", hold=holder, **params)
        except InvalidRangeError:
            # 416: the range starts at or past the end (S3 answers 416 for any range
            # of an empty object): start == size is an empty body, start > size an error.
            return await self._empty_read(key, start, if_match)
        if response.get(_LEAN):
            holder = None  # the lean response holds its own slot
        try:
            return await self._read_stream(key, start, end, ranged, response, holder)
        except BaseException:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await response["Body"].aclose()
            self._release(holder)
            raise

    async def _read_stream(
        self,
        key: str,
        start: int,
        end: int | None,
        ranged: bool,
        response: Mapping[str, Any],
        holder: object,
    ) -> ReadStream:
        body = response["Body"]
        content_range = _CONTENT_RANGE.match(str(response.get("ContentRange") or ""))
        length = int(response.get("ContentLength", 0))
        skip, limit = 0, None
        if content_range is not None:
            size = int(content_range.group(3))
        else:
            size = length  # the whole object: no Range sent, or a server that ignored it
            if ranged:
                skip, limit = start, (None if end is None else end - start)
        info = await self._with_tagged_sha(
            key, self._info(key, response, size), response.get("TagCount")
        )
        if isinstance(body, _LeanBody) and not skip and limit is None:
            return ResponseStream(info, body.response, lambda: self._errors("read", key))
        return S3ReadStream(
            info,
            body,
            lambda: self._errors("read", key),
            skip=skip,
            limit=limit,
            on_close=lambda: self._release(holder),
        )

    async def _empty_read(
        self, key: str, start: int, if_match: str | None, *, empty_range: bool = False
    ) -> ReadStream:
        """An empty body at ``start``, checked against the object's size with a HEAD.

        ``empty_range``: ``[start, start)`` was asked for; otherwise the service
        answered 416, so ``start`` should be at (or past) the end.
        """
        info = await self._head(key, if_match=if_match)
        if start > info.size:
            raise InvalidRangeError(
                f"range start {start} is past the end of key {key!r} in {self._location} "
                f"({info.size} bytes)",
                key=key,
            )
        if start < info.size and not empty_range:  # the object grew meanwhile: try again
            raise TransportError(f"key {key!r} in {self._location} changed during a read", key=key)
        return IteratorReadStream(info, _NoChunks())

    # -- writing -------------------------------------------------------------------------------

    def _conditions(self, attrs: WriteAttributes) -> dict[str, str]:
        params: dict[str, str] = {}
        if attrs.if_none_match:
            params["IfNoneMatch"] = "*"
        if attrs.if_match is not None:
            params["IfMatch"] = _quote(attrs.if_match)
        return params

    def _condition_failed(self, key: str, attrs: WriteAttributes, exc: StoreError) -> StoreError:
        """The error for a conditional write the service refused (``exc`` if it was not that)."""
        code = _code(exc)
        if attrs.if_none_match and isinstance(exc, PreconditionFailedError):
            return AlreadyExistsError(f"key {key!r} already exists in {self._location}", key=key)
        if attrs.if_match is not None and (
            isinstance(exc, PreconditionFailedError) or code in ("NoSuchKey", "404")
        ):
            return PreconditionFailedError(
                f"key {key!r} in {self._location} does not have ETag {attrs.if_match!r}", key=key
            )
        return exc

    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        params: dict[str, Any] = {
            "Key": self._full(key),
            "Body": PartBody(data),
            "ContentLength": data.nbytes,
            "Metadata": dict(attrs.metadata),
            **self._conditions(attrs),
        }
        if attrs.content_type is not None:
            params["ContentType"] = attrs.content_type
        if "crc32c" in checksums:
            params["ChecksumCRC32C"] = _b64(checksums["crc32c"])
        elif "sha256" in checksums:
            params["ChecksumSHA256"] = _b64(checksums["sha256"])
        try:
            response = await self._request("put", key, "put_object", **params)
        except (PreconditionFailedError, NotFoundError) as exc:
            raise self._condition_failed(key, attrs, exc) from exc.__cause__
        return WriteResult(_unquote(response["ETag"]), _request_id(response))

    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        metadata = {name: value for name, value in attrs.metadata.items() if name != SHA256}
        params: dict[str, Any] = {
            "Key": self._full(key),
            "Metadata": metadata,
            "ChecksumAlgorithm": "CRC32C",
        }
        if attrs.content_type is not None:
            params["ContentType"] = attrs.content_type
        response = await self._request("create upload", key, "create_multipart_upload", **params)
        return str(response["UploadId"])

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        crc = checksums.get("crc32c")
        if crc is None:  # the core always sends it; a direct caller may not
            crc = await _crc32c_of(data)
        response = await self._request(
            f"upload part {number}",
            key,
            "upload_part",
            Key=self._full(key),
            UploadId=upload_id,
            PartNumber=number,
            Body=PartBody(data),
            ContentLength=data.nbytes,
            ChecksumCRC32C=_b64(crc),
        )
        return CompletedPart(
            number, offset, data.nbytes, etag=str(response["ETag"]), checksums={"crc32c": crc}
        )

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        etag = self._completed.get(upload_id)
        request_id = None
        if etag is None:  # not a retry after the tagging below failed
            listed = []
            for part in parts:
                entry: dict[str, Any] = {"PartNumber": part.number, "ETag": _quote(part.etag)}
                if "crc32c" in part.checksums:
                    entry["ChecksumCRC32C"] = _b64(part.checksums["crc32c"])
                listed.append(entry)
            try:
                params: dict[str, Any] = {
                    "Key": self._full(key),
                    "UploadId": upload_id,
                    "MultipartUpload": {"Parts": listed},
                    **self._conditions(attrs),
                }
                response = await self._request(
                    "complete upload", key, "complete_multipart_upload", **params
                )
            except (PreconditionFailedError, NotFoundError) as exc:
                raise self._condition_failed(key, attrs, exc) from exc.__cause__
            etag = _unquote(response["ETag"])
            request_id = _request_id(response)
            self._completed[upload_id] = etag
        sha = attrs.metadata.get(SHA256)
        if sha is not None:
            await self._record_sha256(key, etag, sha)
        self._completed.pop(upload_id, None)
        return WriteResult(etag, request_id)

    async def _record_sha256(self, key: str, etag: str, sha: str) -> None:
        """Tag a multipart object with its sha256 and the ETag that sha256 belongs to.

        A TransportError propagates (the Store retries ``complete_upload``, which
        then only tags). Without the permission to tag, the object stays
        committed, without a recorded sha256, and a warning is logged.
        """
        tags = [{"Key": SHA256_TAG, "Value": sha}, {"Key": ETAG_TAG, "Value": etag}]
        try:
            await self._request(
                "record sha256",
                key,
                "put_object_tagging",
                Key=self._full(key),
                Tagging={"TagSet": tags},
            )
        except (PermissionDeniedError, NotFoundError) as exc:
            logger.warning(
                "key %r in %s was written but its sha256 could not be recorded: %s",
                key,
                self._location,
                exc,
            )
            return
        self._tag_cache[(self._full(key), etag)] = sha

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload. A missing upload is not an error.

        S3 documents that an abort racing with part uploads still in progress may
        have to be repeated: a transient failure is a TransportError, which the
        core retries like any other request.
        """
        self._completed.pop(upload_id, None)
        with contextlib.suppress(UploadNotFoundError, NotFoundError):
            await self._call(
                "abort upload",
                key,
                "abort_multipart_upload",
                Key=self._full(key),
                UploadId=upload_id,
            )

    async def pending_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        """``(key, upload id)`` of the multipart uploads under ``prefix`` not yet finished."""
        found: list[tuple[str, str]] = []
        params: dict[str, Any] = {"Prefix": self._full(prefix)}
        while True:
            response = await self._call("list uploads", prefix, "list_multipart_uploads", **params)
            for upload in response.get("Uploads") or []:
                found.append((self._relative(upload["Key"]), upload["UploadId"]))
            if not response.get("IsTruncated"):
                return found
            params["KeyMarker"] = response.get("NextKeyMarker")
            params["UploadIdMarker"] = response.get("NextUploadIdMarker")

    # -- listing -------------------------------------------------------------------------------

    async def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        params: dict[str, Any] = {"Prefix": self._full(prefix)}
        if delimiter:
            params["Delimiter"] = delimiter
        while True:
            page = await self._request("list", prefix, "list_objects_v2", **params)
            for name, entry in _merge_listing(
                page.get("Contents") or [], page.get("CommonPrefixes") or []
            ):
                if entry is None:
                    yield CommonPrefix(self._relative(name))
                else:
                    yield ObjectInfo(
                        key=self._relative(name),
                        size=int(entry.get("Size", 0)),
                        etag=_unquote(str(entry.get("ETag", ""))),
                        last_modified=entry.get("LastModified"),
                    )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    # -- deleting ------------------------------------------------------------------------------

    async def delete(self, key: str) -> None:
        await self._call("delete", key, "delete_object", Key=self._full(key))

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete with DeleteObjects, 1000 keys per request; missing keys are not an error.

        Raises:
            PermissionDeniedError / TransportError / StoreError: for the first key
                the service could not delete, naming it.
        """
        unique = list(dict.fromkeys(keys))
        for first in range(0, len(unique), _DELETE_BATCH):
            batch = unique[first : first + _DELETE_BATCH]
            response = await self._call(
                "delete_many",
                batch[0],
                "delete_objects",
                Delete={"Objects": [{"Key": self._full(key)} for key in batch], "Quiet": True},
            )
            for error in response.get("Errors") or []:
                if error.get("Code") == "NoSuchKey":
                    continue
                raise self._delete_error(error)

    def _delete_error(self, error: Mapping[str, Any]) -> StoreError:
        import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]

        key = self._relative(str(error.get("Key", "")))
        cause = botocore.exceptions.ClientError(
            {"Error": {"Code": error.get("Code", ""), "Message": error.get("Message", "")}},
            "DeleteObjects",
        )
        translated = translate(
            cause, what="delete", key=key, bucket=self._bucket, location=self._location
        )
        assert translated is not None
        translated.__cause__ = cause
        return translated

    # -- copying -------------------------------------------------------------------------------

    async def copy(self, src: str, dst: str) -> WriteResult:
        info = await self._head(src)
        source = {"Bucket": self._bucket, "Key": self._full(src)}
        if info.size > self.copy_threshold:
            return await self._copy_multipart(src, dst, info, source)
        params: dict[str, Any] = {
            "Key": self._full(dst),
            "CopySource": source,
            "CopySourceIfMatch": _quote(info.etag),
            "MetadataDirective": "REPLACE",
            "Metadata": dict(info.metadata),  # with the sha256, wherever the source had it
        }
        if info.content_type is not None:
            params["ContentType"] = info.content_type
        try:
            response = await self._call("copy", src, "copy_object", **params)
        except PreconditionFailedError as exc:  # the source changed since the HEAD: again
            raise TransportError(f"key {src!r} changed during its copy", key=src) from exc
        result = response.get("CopyObjectResult", {})
        return WriteResult(_unquote(str(result.get("ETag", ""))), _request_id(response))

    async def _copy_multipart(
        self, src: str, dst: str, info: ObjectInfo, source: Mapping[str, str]
    ) -> WriteResult:
        """Copy an object larger than CopyObject allows, with UploadPartCopy in parallel.

        The parts run in the core's task group, so a failing part (a TransportError,
        the source changing) reaches Store.copy as itself, which retries it, and not
        as an ExceptionGroup.
        """
        from ..._stream._tasks import task_group

        part_size = max(self.copy_part_size, math.ceil(info.size / 10_000 / MiB) * MiB)
        attrs = WriteAttributes(info.content_type, info.metadata)
        upload_id = await self.create_upload(dst, attrs)
        parts: list[CompletedPart] = []
        limiter = anyio.CapacityLimiter(_COPY_CONCURRENCY)

        async def copy_part(number: int, offset: int) -> None:
            end = min(offset + part_size, info.size)
            async with limiter:
                try:
                    response = await self._call(
                        f"copy part {number}",
                        dst,
                        "upload_part_copy",
                        Key=self._full(dst),
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceIfMatch=_quote(info.etag),
                        CopySourceRange=f"bytes={offset}-{end - 1}",
                    )
                except PreconditionFailedError as exc:
                    raise TransportError(f"key {src!r} changed during its copy", key=src) from exc
            etag = str(response.get("CopyPartResult", {}).get("ETag", ""))
            parts.append(CompletedPart(number, offset, end - offset, etag))

        try:
            async with task_group() as tg:
                for number, offset in enumerate(range(0, info.size, part_size), start=1):
                    tg.start_soon(copy_part, number, offset)
            parts.sort(key=lambda part: part.number)
            return await self.complete_upload(dst, upload_id, parts, attrs)
        except BaseException:
            # Retried as the core retries an upload's abort: a stale pooled connection
            # can fail the first attempt, and a leftover upload costs storage.
            await abort_quietly(self, dst, upload_id, RetryPolicy())
            raise

    # -- presigned URLs ------------------------------------------------------------------------

    async def sign(
        self, key: str, method: str = "GET", expires_in: float | datetime.timedelta = 3600
    ) -> str:
        """A presigned URL that lets anyone holding it GET or PUT ``key`` until it expires.

        Args:
            key: The object key.
            method: "GET" (download) or "PUT" (upload the body as is).
            expires_in: Seconds (or a timedelta) the URL stays valid, up to 7 days.

        Raises:
            InvalidKeyError: The key is not acceptable.
            InvalidArgumentError: Another method, or a lifetime out of 1 s .. 7 days.
        """
        validate_key(key)
        verb = method.upper() if isinstance(method, str) else method
        if verb not in ("GET", "PUT"):
            raise InvalidArgumentError(
                f"sign() of key {key!r}: method must be 'GET' or 'PUT', not {method!r}", key=key
            )
        seconds = (
            expires_in.total_seconds() if isinstance(expires_in, datetime.timedelta) else expires_in
        )
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or not 1 <= seconds <= _MAX_PRESIGN_SECONDS
        ):
            raise InvalidArgumentError(
                f"sign() of key {key!r}: expires_in must be 1 s to 7 days, not {expires_in!r}",
                key=key,
            )
        client = await self._clients.get()
        with self._errors("sign", key):
            url: str = await client.generate_presigned_url(
                "get_object" if verb == "GET" else "put_object",
                Params={"Bucket": self._bucket, "Key": self._full(key)},
                ExpiresIn=int(seconds),
                HttpMethod=verb,
            )
        return url
