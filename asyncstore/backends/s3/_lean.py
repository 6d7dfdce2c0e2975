"""The lean request path of S3: the requests that carry and describe the bytes, sent by asyncstore.

aiobotocore spends most of a small request's CPU in botocore's per-call
machinery (event hooks, parameter validation, endpoint rules, the signer,
response parsing), not on the wire. For the requests that carry the bytes,
which a service sends by the thousand (GetObject, HeadObject, PutObject,
UploadPart, ListObjectsV2), and for the rest of a large object's path
(CreateMultipartUpload, CompleteMultipartUpload, and the tags that record a
multipart object's sha256: PutObjectTagging, GetObjectTagging), the backend
builds the request itself,
signs it with `Signer` (SigV4, ``UNSIGNED-PAYLOAD`` plus the signed
``x-amz-checksum-sha256`` header) and sends it on the small HTTP/1.1 client of
``backends/_http.py``, under asyncio and trio alike. The response's headers are
read directly.

The SDK keeps what it does well, and everything else: the credential chain and
its refresh (the lean path asks the same credentials object before each
request), region and endpoint resolution (the base URL is taken once from a
URL the SDK presigns, so custom endpoints, path or virtual-hosted addressing,
FIPS and dual-stack endpoints come out as the SDK would send them), and every
other operation. Errors are turned into botocore ``ClientError`` objects with
the service's code and message, so they go through the one translation table
(``_translate.py``) like the SDK's.

The path is not used (the SDK sends every request) when a proxy is configured
for the endpoint, or with ``lean=False``. A request that S3 redirects to the
bucket's real region (301/307, or 400 naming another region) makes the backend
fall back to the SDK, which follows such redirects.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit
from xml.sax.saxutils import escape

from ..._stream._tasks import Slots
from .._http import HttpPool, Response, Target, proxied
from ._sigv4 import Signer, canonical_query, encode_path

__all__ = ["LeanS3", "WrongRegion", "client_error"]

#: The key presigned once to learn the URL the SDK would send requests to.
PROBE_KEY = "asyncstore-lean-probe"
#: The most bytes of an error response read (S3's error documents are small).
ERROR_BODY_LIMIT = 64 * 1024
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")
_REQUEST_ID = re.compile(rb"<RequestId>([^<]*)</RequestId>")


class WrongRegion(Exception):
    """S3 answered that the bucket lives in another region than the one signed for."""


def _operation(method: str, query: Mapping[str, str] | None) -> str:
    query = query or {}
    if "list-type" in query:
        return "ListObjectsV2"
    if "tagging" in query:
        return "PutObjectTagging" if method == "PUT" else "GetObjectTagging"
    if method == "POST":
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "PUT":
        return "UploadPart" if "partNumber" in query else "PutObject"
    return "HeadObject" if method == "HEAD" else "GetObject"


def parse_timestamp(value: str) -> datetime.datetime:
    """botocore's timestamps, the common form without dateutil: ``2024-05-01T12:00:00.000Z``.

    Listings carry one per object, and botocore's own parser (dateutil's) took a
    third of a no-op ``sync`` of 5,000 files. Any other form goes to botocore's.
    """
    if len(value) == 24 and value[10] == "T" and value[19] == "." and value[23] == "Z":
        try:
            return datetime.datetime(
                int(value[0:4]),
                int(value[5:7]),
                int(value[8:10]),
                int(value[11:13]),
                int(value[14:16]),
                int(value[17:19]),
                int(value[20:23]) * 1000,
                tzinfo=datetime.timezone.utc,
            )
        except ValueError:
            pass
    from botocore.utils import (  # type: ignore[import-untyped,unused-ignore]
        parse_timestamp as botocore_parse,
    )

    parsed: datetime.datetime = botocore_parse(value)
    return parsed


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def list_page(body: bytes, *, url_encoded: bool) -> dict[str, Any]:
    """A ListObjectsV2 answer in the SDK's shape: ``Contents`` (Key, Size, ETag,
    LastModified), ``CommonPrefixes`` (Prefix), ``IsTruncated``, ``NextContinuationToken``.

    With ``url_encoded`` (the request asked for ``encoding-type=url``, as botocore does, so
    that keys XML cannot carry come through), keys and prefixes are decoded.

    Raises:
        ValueError: the body is not a ListBucketResult.
    """
    root, ns = _xml_root(body, "ListBucketResult")
    decode = unquote_plus if url_encoded else str

    def text(node: Any, name: str) -> str:
        return _text(node, ns + name)

    contents = []
    for item in root.iterfind(ns + "Contents"):
        entry: dict[str, Any] = {
            "Key": decode(text(item, "Key")),
            "Size": int(text(item, "Size") or 0),
            "ETag": text(item, "ETag"),
        }
        modified = text(item, "LastModified")
        if modified:
            entry["LastModified"] = parse_timestamp(modified)
        contents.append(entry)
    prefixes = [
        {"Prefix": decode(text(item, "Prefix"))} for item in root.iterfind(ns + "CommonPrefixes")
    ]
    page: dict[str, Any] = {
        "Contents": contents,
        "CommonPrefixes": prefixes,
        "IsTruncated": text(root, "IsTruncated") == "true",
    }
    token = text(root, "NextContinuationToken")
    if token:
        page["NextContinuationToken"] = token
    return page


def _xml_root(body: bytes, expected: str) -> tuple[Any, str]:
    """The root element of an S3 answer and its namespace prefix.

    Raises:
        ValueError: the body is not XML, or its root is not ``expected``.
    """
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise ValueError(f"not XML: {exc}") from exc
    ns = _S3_NS if root.tag.startswith(_S3_NS) else ""
    if root.tag != ns + expected:
        raise ValueError(f"not a {expected}: {root.tag!r}")
    return root, ns


def _text(node: Any, name: str) -> str:
    found = node.find(name)
    return "" if found is None or found.text is None else str(found.text)


def result_field(body: bytes, result: str, field: str) -> str:
    """The text of ``field`` in an S3 answer whose root is ``result``: the ``UploadId`` of
    an InitiateMultipartUploadResult, the ``ETag`` (quoted, as S3 sends it) of a
    CompleteMultipartUploadResult.

    Raises:
        ValueError: the body is not such an answer, or it has no such field.
    """
    root, ns = _xml_root(body, result)
    value = _text(root, ns + field)
    if not value:
        raise ValueError(f"the answer names no {field}")
    return value


def complete_body(parts: Iterable[Mapping[str, Any]]) -> bytes:
    """A CompleteMultipartUpload request body of parts in the SDK's shape
    (``PartNumber``, ``ETag``, optional ``ChecksumCRC32C``)."""
    items = []
    for part in parts:
        fields = [
            f"<PartNumber>{int(part['PartNumber'])}</PartNumber>",
            f"<ETag>{escape(part['ETag'])}</ETag>",
        ]
        if "ChecksumCRC32C" in part:
            fields.append(f"<ChecksumCRC32C>{escape(part['ChecksumCRC32C'])}</ChecksumCRC32C>")
        items.append("<Part>" + "".join(fields) + "</Part>")
    return (
        f'<CompleteMultipartUpload xmlns="{_S3_NS[1:-1]}">'
        + "".join(items)
        + "</CompleteMultipartUpload>"
    ).encode()


def tagging_body(tags: Iterable[Mapping[str, str]]) -> bytes:
    """A PutObjectTagging request body of tags in the SDK's shape (``Key``, ``Value``)."""
    items = "".join(
        f"<Tag><Key>{escape(tag['Key'])}</Key><Value>{escape(tag['Value'])}</Value></Tag>"
        for tag in tags
    )
    return f'<Tagging xmlns="{_S3_NS[1:-1]}"><TagSet>{items}</TagSet></Tagging>'.encode()


def tag_set(body: bytes) -> list[dict[str, str]]:
    """The tags of a GetObjectTagging answer, in the SDK's shape.

    Raises:
        ValueError: the body is not a Tagging document.
    """
    root, ns = _xml_root(body, "Tagging")
    return [
        {"Key": _text(tag, ns + "Key"), "Value": _text(tag, ns + "Value")}
        for tag in root.iterfind(f"{ns}TagSet/{ns}Tag")
    ]


def client_error(
    response: Response,
    body: bytes,
    operation: str,
    headers: Mapping[str, str],
    *,
    status: int | None = None,
) -> Exception:
    """A botocore ClientError of an error response, as the SDK would raise it.

    ``status`` overrides the response's (an error in the body of a 200 answer is a 500,
    as botocore makes it, so that it is retried).
    """
    import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]

    status = response.status if status is None else status
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    request_id = _REQUEST_ID.search(body)
    error = {
        "Code": code.group(1).decode("utf-8", "replace") if code else str(status),
        "Message": message.group(1).decode("utf-8", "replace") if message else response.reason,
    }
    metadata: dict[str, Any] = {
        "HTTPStatusCode": status,
        "HTTPHeaders": dict(headers),
        "RequestId": headers.get("x-amz-request-id")
        or (request_id.group(1).decode("utf-8", "replace") if request_id else None),
    }
    return botocore.exceptions.ClientError(  # type: ignore[no-any-return]
        {"Error": error, "ResponseMetadata": metadata}, operation
    )


class LeanS3:
    """Sends the byte-carrying S3 requests of one bucket itself.

    Made by `setup` once the SDK client exists. Every request waits for a slot
    of ``limiter``, the backend's one bound on requests in flight.

    Args:
        pool: Connections to the endpoint.
        prefix: The encoded path before an object key ("/bucket/" for path style).
        signer: Signs for the client's region.
        credentials: aiobotocore's credentials object (refreshed as the SDK would).
    """

    def __init__(self, pool: HttpPool, prefix: str, signer: Signer, credentials: Any) -> None:
        self.pool = pool
        self.prefix = prefix
        self.signer = signer
        self._credentials = credentials
        # Credentials that never refresh (keys from the environment or a file) are frozen
        # once; refreshable ones are asked before each request, as the SDK does.
        self._frozen: Any = None
        #: Whether the credentials refresh (they are asked before each request).
        self.refreshes = hasattr(credentials, "refresh_needed")
        self._host = pool.target.host_header

    @classmethod
    async def setup(
        cls,
        client: Any,
        credentials: Any,
        bucket: str,
        region: str,
        *,
        limiter: Slots,
        connect_timeout: float,
        read_timeout: float,
    ) -> LeanS3 | None:
        """The lean path for ``bucket``, or None where the SDK must send every request.

        The SDK presigns a GET of `PROBE_KEY` (no request is made): its URL is
        where the SDK would send requests for the bucket's keys.
        """
        if credentials is None:
            return None  # anonymous access: leave it all to the SDK
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": PROBE_KEY}, ExpiresIn=60
        )
        split = urlsplit(url)
        if (
            proxied(url)
            or split.scheme not in ("http", "https")
            or not split.hostname
            or not split.path.endswith("/" + PROBE_KEY)
        ):
            return None
        port = split.port or (443 if split.scheme == "https" else 80)
        target = Target(split.scheme, split.hostname, port)
        pool = HttpPool(
            target,
            max_connections=limiter.total_tokens,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            limiter=limiter,
        )
        prefix = split.path[: -len(PROBE_KEY)]
        return cls(pool, prefix, Signer(region), credentials)

    async def request(
        self,
        method: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview | None = None,
        bounded: bool = True,
    ) -> Response:
        """Sign and send a request for ``key`` (the full key, prefix included).

        Returns the response of any status; an error status is for the caller
        to turn into an error (`raise_for_status`). With ``bounded`` False, the
        request takes no slot of the limit (a lookup made while holding one).
        """
        frozen = self._frozen
        if frozen is None:
            frozen = await self._credentials.get_frozen_credentials()
            if not self.refreshes:
                self._frozen = frozen
        path = self.prefix + encode_path(key)
        query_string = canonical_query(query.items()) if query else ""
        sent = headers if headers is not None else {}
        sent.update(
            self.signer.sign(
                method,
                self._host,
                path,
                query_string,
                sent,
                access_key=frozen.access_key,
                secret_key=frozen.secret_key,
                token=frozen.token,
            )
        )
        target = f"{path}?{query_string}" if query_string else path
        return await self.pool.request(method, target, sent, body, bounded=bounded)

    async def raise_for_status(
        self, response: Response, method: str, query: Mapping[str, str] | None = None
    ) -> None:
        """Raise the SDK's ClientError for an error response (after reading its body).

        Raises:
            WrongRegion: S3 redirected the request to the bucket's own region.
        """
        if response.status < 300:
            return
        headers = response.headers
        body = await response.read(ERROR_BODY_LIMIT) if method != "HEAD" else b""
        await response.aclose()
        region = headers.get("x-amz-bucket-region")
        if (
            response.status in (301, 307) or (response.status == 400 and region)
        ) and region != self.signer.region:
            raise WrongRegion(region)
        raise client_error(response, body, _operation(method, query), headers)

    async def aclose(self) -> None:
        await self.pool.aclose()
