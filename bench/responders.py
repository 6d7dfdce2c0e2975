"""Loopback responders: S3, the GCS JSON API and Azure Blob, at almost no cost to the server.

Usage::

    python bench/responders.py s3|gcs|azure [--port 0] [--keep-max-mib 1100]

Each prints ``READY <port>`` once it listens on 127.0.0.1, then serves until killed. They
exist so that a benchmark sees the *client's* own cost per request and per byte: moto and
the emulators spend a core on 100-200 MB/s and a few hundred requests per second; these
answer a small GET in a few tens of microseconds and send a large body straight from
memory.

Each keeps the objects written to it (bodies up to ``--keep-max-mib``; a larger one is
counted and dropped), with the headers the real service sends for them: ETag,
Last-Modified, Content-Type, Content-Range for ranges, user metadata (so the sha256 that
asyncstore records is served back and verified), and the service's conditional answers
(If-Match → 412, If-None-Match: * → 412 on S3/GCS, 409 on Azure). Multipart uploads keep
their parts and assemble them on completion.

What they do not do: check signatures or credentials (tests/_sigv4.py does that for S3),
list more than one page, or anything the benchmarks do not use.

``GET /__stats`` answers JSON with the requests and connections seen so far (by method),
``POST /__reset`` zeroes them. The bench scripts read them to report requests per GET and
connections opened.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import email.utils
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MiB = 1024 * 1024
HEAD_LIMIT = 64 * 1024
SEND_BLOCK = 1 * MiB
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    308: "Resume Incomplete",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
    416: "Range Not Satisfiable",
}


class Joined:
    """Bytes kept as the pieces they arrived in (a multipart upload's parts, a compose's
    sources, a session's chunks, a blob's blocks).

    Joining them would copy the whole object while the request that completes the
    upload waits (150 ms for 256 MiB here): a cost of this server, not of its client.
    A range is served from its piece, or joined from the pieces it spans.
    """

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = [piece for piece in pieces if piece]
        self.starts = list(itertools.accumulate((len(p) for p in self.pieces), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    @classmethod
    def of(cls, pieces: list[Any]) -> Joined:
        """The pieces (bytes, or `Joined` themselves), flattened."""
        flat: list[bytes] = []
        for piece in pieces:
            flat.extend(piece.pieces if isinstance(piece, Joined) else [piece])
        return cls(flat)

    def view(self, start: int, end: int) -> memoryview:
        first = bisect.bisect_right(self.starts, start) - 1
        if first >= len(self.pieces) or start >= end:
            return memoryview(b"")
        if end <= self.starts[first + 1]:  # within one piece: no copy
            offset = self.starts[first]
            return memoryview(self.pieces[first])[start - offset : end - offset]
        out = bytearray()
        index = first
        while index < len(self.pieces) and self.starts[index] < end:
            offset = self.starts[index]
            out += memoryview(self.pieces[index])[max(start - offset, 0) : end - offset]
            index += 1
        return memoryview(out)


@dataclass
class Obj:
    """A stored object: its bytes (None if dropped), size, ETag and metadata."""

    data: bytes | Joined | None
    size: int
    etag: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    modified: float = field(default_factory=time.time)
    generation: int = 0
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | memoryview = b""
    #: For HEAD: the length the body would have.
    length: int | None = None


class Stats:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.connections = 0

    def document(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()),
            "by_method": dict(self.requests),
            "connections": self.connections,
        }


class Responder:
    """An HTTP/1.1 server on asyncio streams; a subclass answers the service's requests."""

    def __init__(self, keep_max: int) -> None:
        self.keep_max = keep_max
        self.objects: dict[str, Obj] = {}
        self.uploads: dict[str, dict[int, bytes | int]] = {}
        self.stats = Stats()
        self._etags = itertools.count(1)
        self._generations = itertools.count(1_700_000_000_000_000)

    def new_etag(self) -> str:
        return f"{next(self._etags):032x}"

    def store(self, key: str, body: bytes | Joined, **attrs: Any) -> Obj:
        kept = body if len(body) <= self.keep_max else None
        obj = Obj(kept, len(body), self.new_etag(), generation=next(self._generations), **attrs)
        self.objects[key] = obj
        return obj

    async def handle(self, request: Request) -> Response:
        raise NotImplementedError

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request = await self._request(head, reader, writer)
                if request is None:
                    return
                if request.path == "/__stats":
                    body = json.dumps(self.stats.document()).encode()
                    response = Response(200, [("Content-Type", "application/json")], body)
                elif request.path == "/__keep":  # from now on, keep bodies up to ?mib=N
                    self.keep_max = int(request.query["mib"]) * MiB
                    response = Response(204)
                elif request.path == "/__reset":
                    self.stats = Stats()
                    self.stats.connections = 1
                    response = Response(204)
                else:
                    self.stats.requests[request.method] += 1
                    response = await self.handle(request)
                await self._send(writer, request, response)
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    async def _request(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Request | None:
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if headers.get("expect", "").lower() == "100-continue":
            # The client (aiobotocore's PUTs) waits for this before it sends the body.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            pieces = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                pieces.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            body = b"".join(p[:-2] for p in pieces)
        else:
            body = b""
        return Request(method.upper(), unquote(split.path), query, headers, body)

    async def _send(
        self, writer: asyncio.StreamWriter, request: Request, response: Response
    ) -> None:
        body = response.body
        length = response.length if response.length is not None else len(body)
        lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if response.status not in (204, 304):
            lines.append(f"Content-Length: {length}")
        lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if request.method != "HEAD" and body:
            view = memoryview(body)
            for start in range(0, len(view), SEND_BLOCK):
                writer.write(view[start : start + SEND_BLOCK])
                await writer.drain()
        else:
            await writer.drain()

    # -- shared pieces -------------------------------------------------------------------------

    @staticmethod
    def byte_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
        """``(start, end)`` (end exclusive) of a Range header; None: none; False: unsatisfiable."""
        if not header:
            return None
        match = _RANGE.fullmatch(header.strip())
        if match is None:
            return None
        first, last = match.groups()
        if first == "":
            if not last:
                return None
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = size if last == "" else min(int(last) + 1, size)
        if start >= size:
            return False
        return start, end

    def body_of(self, obj: Obj, start: int, end: int) -> memoryview:
        if obj.data is None:
            raise LookupError("the body of this object was dropped (larger than --keep-max-mib)")
        if isinstance(obj.data, Joined):
            return obj.data.view(start, end)
        return memoryview(obj.data)[start:end]


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


# -- S3 ------------------------------------------------------------------------------------------


class S3(Responder):
    """Path-style S3: ``/bucket/key``; any bucket exists."""

    def _headers(self, obj: Obj) -> list[tuple[str, str]]:
        headers = [
            ("ETag", f'"{obj.etag}"'),
            ("Last-Modified", _http_date(obj.modified)),
            ("Content-Type", obj.content_type),
            ("Accept-Ranges", "bytes"),
            ("x-amz-request-id", "0123456789ABCDEF"),
        ]
        headers += [(f"x-amz-meta-{name}", value) for name, value in obj.metadata.items()]
        if obj.tags:
            headers.append(("x-amz-tagging-count", str(len(obj.tags))))
        return headers

    @staticmethod
    def _error(status: int, code: str) -> Response:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{code}</Message><RequestId>0</RequestId></Error>"
        ).encode()
        return Response(status, [("Content-Type", "application/xml")], body)

    async def handle(self, request: Request) -> Response:
        _, _, rest = request.path.partition("/")
        bucket, _, key = rest.partition("/")
        q = request.query
        if not key:
            if request.method == "GET" and q.get("list-type") == "2":
                return self._list(bucket, q.get("prefix", ""))
            return Response(200, [("x-amz-bucket-region", "us-east-1")])
        full = f"{bucket}/{key}"
        obj = self.objects.get(full)
        if "tagging" in q:
            if obj is None:
                return self._error(404, "NoSuchKey")
            if request.method == "PUT":
                obj.tags = dict(
                    re.findall(rb"<Key>(.*?)</Key>\s*<Value>(.*?)</Value>", request.body)
                )  # type: ignore[arg-type]
                obj.tags = {k.decode(): v.decode() for k, v in obj.tags.items()}  # type: ignore[attr-defined]
                return Response(200)
            tags = "".join(
                f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in obj.tags.items()
            )
            body = f"<Tagging><TagSet>{tags}</TagSet></Tagging>".encode()
            return Response(200, [("Content-Type", "application/xml")], body)
        if request.method in ("GET", "HEAD"):
            if obj is None:
                return self._error(404, "NoSuchKey") if request.method == "GET" else Response(404)
            if_match = request.headers.get("if-match")
            if if_match is not None and if_match.strip('"') != obj.etag:
                return self._error(412, "PreconditionFailed")
            wanted = self.byte_range(request.headers.get("range"), obj.size)
            if wanted is False:
                return self._error(416, "InvalidRange")
            headers = self._headers(obj)
            if wanted is None:
                start, end, status = 0, obj.size, 200
            else:
                start, end = wanted  # type: ignore[misc]
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}"))
            if request.method == "HEAD":
                return Response(status, headers, length=end - start)
            return Response(status, headers, self.body_of(obj, start, end))
        if request.method == "PUT":
            if "partNumber" in q:
                parts = self.uploads.get(q["uploadId"])
                if parts is None:
                    return self._error(404, "NoSuchUpload")
                body = request.body
                parts[int(q["partNumber"])] = body if len(body) <= self.keep_max else len(body)
                headers = [("ETag", f'"{self.new_etag()}"')]
                if "x-amz-checksum-sha256" in request.headers:
                    headers.append(
                        ("x-amz-checksum-sha256", request.headers["x-amz-checksum-sha256"])
                    )
                return Response(200, headers)
            if request.headers.get("if-none-match") == "*" and obj is not None:
                return self._error(412, "PreconditionFailed")
            if_match = request.headers.get("if-match")
            if if_match is not None and (obj is None or if_match.strip('"') != obj.etag):
                return self._error(412 if obj is not None else 404, "PreconditionFailed")
            metadata = {
                name[len("x-amz-meta-") :]: value
                for name, value in request.headers.items()
                if name.startswith("x-amz-meta-")
            }
            content_type = request.headers.get("content-type", "binary/octet-stream")
            stored = self.store(full, request.body, content_type=content_type, metadata=metadata)
            headers = [("ETag", f'"{stored.etag}"'), ("x-amz-request-id", "0123456789ABCDEF")]
            if "x-amz-checksum-sha256" in request.headers:
                headers.append(("x-amz-checksum-sha256", request.headers["x-amz-checksum-sha256"]))
            return Response(200, headers)
        if request.method == "POST" and "uploads" in q:
            upload_id = f"up{self.new_etag()}"
            self.uploads[upload_id] = {}
            self.uploads[upload_id][0] = json.dumps(  # type: ignore[assignment]
                {
                    "metadata": {
                        name[len("x-amz-meta-") :]: value
                        for name, value in request.headers.items()
                        if name.startswith("x-amz-meta-")
                    },
                    "content_type": request.headers.get("content-type", "binary/octet-stream"),
                }
            ).encode()
            body = (
                f"<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
            )
            return Response(200, [("Content-Type", "application/xml")], body.encode())
        if request.method == "POST" and "uploadId" in q:
            parts = self.uploads.pop(q["uploadId"], None)
            if parts is None:
                return self._error(404, "NoSuchUpload")
            attrs = json.loads(parts.pop(0))  # type: ignore[arg-type]
            pieces = [parts[n] for n in sorted(parts)]
            if all(isinstance(p, bytes) for p in pieces):
                stored = self.store(full, Joined.of(pieces), **attrs)
            else:
                size = sum(p if isinstance(p, int) else len(p) for p in pieces)
                stored = Obj(None, size, self.new_etag(), **attrs)
                self.objects[full] = stored
            stored.etag = f"{stored.etag}-{len(pieces)}"
            body = (
                f"<CompleteMultipartUploadResult><Bucket>{bucket}</Bucket><Key>{key}</Key>"
                f'<ETag>"{stored.etag}"</ETag></CompleteMultipartUploadResult>'
            )
            return Response(200, [("Content-Type", "application/xml")], body.encode())
        if request.method == "DELETE":
            if "uploadId" in q:
                self.uploads.pop(q["uploadId"], None)
            else:
                self.objects.pop(full, None)
            return Response(204)
        return self._error(400, "NotImplemented")

    def _list(self, bucket: str, prefix: str) -> Response:
        entries = []
        for full, obj in sorted(self.objects.items()):
            name = full[len(bucket) + 1 :]
            if full.startswith(bucket + "/") and name.startswith(prefix):
                entries.append(
                    f"<Contents><Key>{name}</Key><Size>{obj.size}</Size>"
                    f'<ETag>"{obj.etag}"</ETag><LastModified>'
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime(obj.modified))}"
                    "</LastModified></Contents>"
                )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            f"<Name>{bucket}</Name><Prefix>{prefix}</Prefix><KeyCount>{len(entries)}</KeyCount>"
            f"<IsTruncated>false</IsTruncated>{''.join(entries)}</ListBucketResult>"
        )
        return Response(200, [("Content-Type", "application/xml")], body.encode())


# -- GCS (JSON API) ------------------------------------------------------------------------------


class GCS(Responder):
    """The JSON API: ``/storage/v1/b/B/o/O`` (metadata or ``alt=media``) and uploads."""

    def _resource(self, bucket: str, name: str, obj: Obj) -> dict[str, Any]:
        return {
            "kind": "storage#object",
            "bucket": bucket,
            "name": name,
            "size": str(obj.size),
            "generation": str(obj.generation),
            "metageneration": "1",
            "etag": obj.etag,
            "contentType": obj.content_type,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(obj.modified)),
            "timeCreated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(obj.modified)),
            "metadata": obj.metadata,
        }

    @staticmethod
    def _error(status: int, message: str) -> Response:
        body = json.dumps({"error": {"code": status, "message": message}}).encode()
        return Response(status, [("Content-Type", "application/json")], body)

    def _media_headers(self, obj: Obj) -> list[tuple[str, str]]:
        headers = [
            ("Content-Type", obj.content_type),
            ("ETag", obj.etag),
            ("Last-Modified", _http_date(obj.modified)),
            ("x-goog-generation", str(obj.generation)),
            ("x-goog-metageneration", "1"),
            ("x-goog-stored-content-length", str(obj.size)),
            ("x-goog-stored-content-encoding", "identity"),
            ("x-goog-storage-class", "STANDARD"),
            ("Accept-Ranges", "bytes"),
        ]
        headers += [(f"x-goog-meta-{name}", value) for name, value in obj.metadata.items()]
        return headers

    def _check(self, obj: Obj | None, q: dict[str, str]) -> Response | None:
        want = q.get("ifGenerationMatch")
        if want is not None:
            current = "0" if obj is None else str(obj.generation)
            if want != current:
                return self._error(412, "conditionNotMet")
        return None

    async def handle(self, request: Request) -> Response:
        path, q = request.path, request.query
        upload = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", path)
        if upload is not None:
            return self._upload(upload.group(1), request)
        # Media downloads may also be asked under /download (gcsfs does; GCS serves both).
        match = re.fullmatch(r"(?:/download)?/storage/v1/b/([^/]+)/o/(.+)", path)
        if match is None:
            if re.fullmatch(r"/storage/v1/b/([^/]+)/o", path):
                return self._list(path.split("/")[4], q.get("prefix", ""))
            if re.fullmatch(r"/storage/v1/b/([^/]+)", path):
                return Response(200, [("Content-Type", "application/json")], b"{}")
            return self._error(404, "Not Found")
        bucket, name = match.groups()
        if request.method == "POST" and name.endswith("/compose"):
            return self._compose(bucket, name.removesuffix("/compose"), request)
        full = f"{bucket}/{name}"
        obj = self.objects.get(full)
        if request.method == "DELETE":
            if obj is None:
                return self._error(404, "No such object")
            del self.objects[full]
            return Response(204)
        if obj is None:
            return self._error(404, f"No such object: {full}")
        failed = self._check(obj, q)
        if failed is not None:
            return failed
        if q.get("alt") != "media":
            body = json.dumps(self._resource(bucket, name, obj)).encode()
            return Response(200, [("Content-Type", "application/json")], body)
        wanted = self.byte_range(request.headers.get("range"), obj.size)
        if wanted is False:
            return self._error(416, "Requested range not satisfiable")
        headers = self._media_headers(obj)
        if wanted is None:
            return Response(200, headers, self.body_of(obj, 0, obj.size))
        start, end = wanted  # type: ignore[misc]
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}"))
        return Response(206, headers, self.body_of(obj, start, end))

    def _compose(self, bucket: str, name: str, request: Request) -> Response:
        """A compose: the sources' bytes, in order (or their sizes, where dropped).

        No ``crc32c`` is returned (computing it would put hashing on the server), so
        the client's check of the composite's crc32c is skipped here.
        """
        q = request.query
        if (failed := self._check(self.objects.get(f"{bucket}/{name}"), q)) is not None:
            return failed
        meta = json.loads(request.body)
        sources = []
        for source in meta["sourceObjects"]:
            found = self.objects.get(f"{bucket}/{source['name']}")
            if found is None:
                return self._error(404, f"No such object: {bucket}/{source['name']}")
            sources.append(found)
        destination = meta.get("destination") or {}
        attrs = {
            "metadata": dict(destination.get("metadata") or {}),
            "content_type": destination.get("contentType", "application/octet-stream"),
        }
        if all(source.data is not None for source in sources):
            body = Joined.of([source.data for source in sources])
            obj = self.store(f"{bucket}/{name}", body, **attrs)
        else:
            size = sum(source.size for source in sources)
            obj = Obj(None, size, self.new_etag(), generation=next(self._generations), **attrs)
            self.objects[f"{bucket}/{name}"] = obj
        return Response(
            200,
            [("Content-Type", "application/json")],
            json.dumps(self._resource(bucket, name, obj)).encode(),
        )

    def _upload(self, bucket: str, request: Request) -> Response:
        q = request.query
        kind = q.get("uploadType")
        if kind == "media":
            name = q["name"]
            if (failed := self._check(self.objects.get(f"{bucket}/{name}"), q)) is not None:
                return failed
            obj = self.store(f"{bucket}/{name}", request.body)
            return self._created(bucket, name, obj)
        if kind == "multipart":
            boundary = re.search(r'boundary="?([^";]+)"?', request.headers["content-type"])
            assert boundary is not None
            parts = request.body.split(b"--" + boundary.group(1).encode())
            meta_part, media_part = parts[1], parts[2]
            meta = json.loads(meta_part.split(b"\r\n\r\n", 1)[1].strip())
            _media_head, _, media = media_part.partition(b"\r\n\r\n")
            media = media[:-2] if media.endswith(b"\r\n") else media
            name = meta.get("name") or q.get("name")
            if (failed := self._check(self.objects.get(f"{bucket}/{name}"), q)) is not None:
                return failed
            content_type = meta.get("contentType", "application/octet-stream")
            obj = self.store(
                f"{bucket}/{name}",
                media,
                metadata=dict(meta.get("metadata") or {}),
                content_type=content_type,
            )
            return self._created(bucket, name, obj)
        if kind == "resumable":
            if "upload_id" not in q:
                meta = json.loads(request.body or b"{}")
                upload_id = f"rs{self.new_etag()}"
                self.uploads[upload_id] = {
                    0: json.dumps({"bucket": bucket, "meta": meta, "q": q}).encode()
                }
                host = request.headers.get("host", "127.0.0.1")
                location = (
                    f"http://{host}/upload/storage/v1/b/{bucket}/o"
                    f"?uploadType=resumable&upload_id={upload_id}"
                )
                return Response(200, [("Location", location)])
            return self._resumable_chunk(bucket, q["upload_id"], request)
        return self._error(400, f"uploadType {kind!r} not served")

    def _resumable_chunk(self, bucket: str, upload_id: str, request: Request) -> Response:
        parts = self.uploads.get(upload_id)
        if parts is None:
            return self._error(404, "No such upload")
        received = sum(len(p) if isinstance(p, bytes) else p for n, p in parts.items() if n)
        content_range = request.headers.get("content-range", "")
        total_match = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", content_range)
        if request.body:
            parts[len(parts)] = (
                request.body if len(request.body) <= self.keep_max else len(request.body)
            )
            received += len(request.body)
        total = total_match.group(3) if total_match else "*"
        if total == "*" or int(total) != received:
            headers = [("Range", f"bytes=0-{received - 1}")] if received else []
            return Response(308, headers)
        info = json.loads(parts.pop(0))  # type: ignore[arg-type]
        self.uploads.pop(upload_id)
        pieces = [parts[n] for n in sorted(parts)]
        meta = info["meta"]
        name = meta.get("name") or info["q"].get("name")
        attrs = {
            "metadata": dict(meta.get("metadata") or {}),
            "content_type": meta.get("contentType", "application/octet-stream"),
        }
        if all(isinstance(p, bytes) for p in pieces):
            obj = self.store(f"{bucket}/{name}", Joined.of(pieces), **attrs)
        else:
            obj = Obj(None, received, self.new_etag(), generation=next(self._generations), **attrs)
            self.objects[f"{bucket}/{name}"] = obj
        return self._created(bucket, name, obj)

    def _created(self, bucket: str, name: str, obj: Obj) -> Response:
        body = json.dumps(self._resource(bucket, name, obj)).encode()
        return Response(200, [("Content-Type", "application/json")], body)

    def _list(self, bucket: str, prefix: str) -> Response:
        items = [
            self._resource(bucket, full[len(bucket) + 1 :], obj)
            for full, obj in sorted(self.objects.items())
            if full.startswith(f"{bucket}/{prefix}")
        ]
        body = json.dumps({"kind": "storage#objects", "items": items}).encode()
        return Response(200, [("Content-Type", "application/json")], body)


# -- Azure Blob ----------------------------------------------------------------------------------


class Azure(Responder):
    """Blob service paths ``/account/container/blob``: Get/Put Blob, blocks, properties."""

    def _headers(self, obj: Obj) -> list[tuple[str, str]]:
        headers = [
            ("ETag", f'"0x{obj.etag[-16:].upper()}"'),
            ("Last-Modified", _http_date(obj.modified)),
            ("Content-Type", obj.content_type),
            ("Accept-Ranges", "bytes"),
            ("x-ms-blob-type", "BlockBlob"),
            ("x-ms-request-id", "00000000-0000-0000-0000-000000000000"),
            ("x-ms-version", "2025-01-05"),
            ("x-ms-creation-time", _http_date(obj.modified)),
            ("x-ms-lease-state", "available"),
            ("x-ms-lease-status", "unlocked"),
            ("x-ms-server-encrypted", "true"),
        ]
        headers += [(f"x-ms-meta-{name}", value) for name, value in obj.metadata.items()]
        return headers

    def _etag(self, obj: Obj) -> str:
        return f'"0x{obj.etag[-16:].upper()}"'

    @staticmethod
    def _error(status: int, code: str) -> Response:
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>{code}</Message></Error>"
        ).encode()
        return Response(
            status, [("Content-Type", "application/xml"), ("x-ms-error-code", code)], body
        )

    async def handle(self, request: Request) -> Response:
        parts = request.path.split("/", 3)
        q = request.query
        if len(parts) < 4 or not parts[3]:
            if q.get("comp") == "list":
                return self._list(parts[2] if len(parts) > 2 else "", q.get("prefix", ""))
            return Response(201 if request.method == "PUT" else 200, [("ETag", '"0x1"')])
        full = f"{parts[2]}/{parts[3]}"
        obj = self.objects.get(full)
        comp = q.get("comp")
        if request.method in ("GET", "HEAD") and comp is None:
            if obj is None:
                return self._error(404, "BlobNotFound")
            if_match = request.headers.get("if-match")
            if if_match is not None and if_match != self._etag(obj):
                return self._error(412, "ConditionNotMet")
            header = request.headers.get("x-ms-range") or request.headers.get("range")
            wanted = self.byte_range(header, obj.size)
            if wanted is False:
                return self._error(416, "InvalidRange")
            headers = self._headers(obj)
            if wanted is None:
                start, end, status = 0, obj.size, 200
            else:
                start, end = wanted  # type: ignore[misc]
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{obj.size}"))
            if request.method == "HEAD":
                return Response(200, headers, length=obj.size)
            return Response(status, headers, self.body_of(obj, start, end))
        if request.method == "PUT" and comp == "block":
            staged = self.uploads.setdefault(full, {})
            block = len(staged) + 1
            staged[block] = (
                request.body if len(request.body) <= self.keep_max else len(request.body)
            )
            self.uploads.setdefault(full + "#ids", {})[block] = q["blockid"].encode()  # type: ignore[assignment]
            return Response(201, [("x-ms-request-server-encrypted", "true")])
        if request.method == "PUT" and comp == "blocklist":
            conditional = self._conditional(obj, request)
            if conditional is not None:
                return conditional
            staged = self.uploads.pop(full, {})
            ids = {v: k for k, v in self.uploads.pop(full + "#ids", {}).items()}  # type: ignore[union-attr]
            wanted_ids = re.findall(rb"<(?:Latest|Uncommitted|Committed)>(.*?)</", request.body)
            pieces = [staged[ids[i]] for i in wanted_ids if i in ids]
            attrs = self._attrs(request)
            if all(isinstance(p, bytes) for p in pieces):
                stored = self.store(full, Joined.of(pieces), **attrs)
            else:
                size = sum(p if isinstance(p, int) else len(p) for p in pieces)
                stored = Obj(None, size, self.new_etag(), **attrs)
                self.objects[full] = stored
            return Response(
                201, [("ETag", self._etag(stored)), ("Last-Modified", _http_date(stored.modified))]
            )
        if request.method == "PUT" and comp is None:
            conditional = self._conditional(obj, request)
            if conditional is not None:
                return conditional
            stored = self.store(full, request.body, **self._attrs(request))
            headers = [("ETag", self._etag(stored)), ("Last-Modified", _http_date(stored.modified))]
            if "content-md5" in request.headers:
                headers.append(("Content-MD5", request.headers["content-md5"]))
            return Response(201, headers)
        if request.method == "GET" and comp == "blocklist":
            return Response(
                200,
                [("Content-Type", "application/xml")],
                b"<BlockList><CommittedBlocks/><UncommittedBlocks/></BlockList>",
            )
        if request.method == "DELETE":
            if obj is None:
                return self._error(404, "BlobNotFound")
            del self.objects[full]
            return Response(202)
        return self._error(400, "UnsupportedQueryParameter")

    def _conditional(self, obj: Obj | None, request: Request) -> Response | None:
        if request.headers.get("if-none-match") == "*" and obj is not None:
            return self._error(409, "BlobAlreadyExists")
        if_match = request.headers.get("if-match")
        if if_match is not None and (obj is None or if_match != self._etag(obj)):
            return self._error(412 if obj is not None else 404, "ConditionNotMet")
        return None

    @staticmethod
    def _attrs(request: Request) -> dict[str, Any]:
        return {
            "metadata": {
                name[len("x-ms-meta-") :]: value
                for name, value in request.headers.items()
                if name.startswith("x-ms-meta-")
            },
            "content_type": request.headers.get(
                "x-ms-blob-content-type", "application/octet-stream"
            ),
        }

    def _list(self, container: str, prefix: str) -> Response:
        blobs = "".join(
            f"<Blob><Name>{full[len(container) + 1 :]}</Name><Properties>"
            f"<Content-Length>{obj.size}</Content-Length><Etag>{self._etag(obj)}</Etag>"
            f"<Last-Modified>{_http_date(obj.modified)}</Last-Modified>"
            f"<Content-Type>{obj.content_type}</Content-Type><BlobType>BlockBlob</BlobType>"
            "</Properties></Blob>"
            for full, obj in sorted(self.objects.items())
            if full.startswith(f"{container}/{prefix}")
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><EnumerationResults>'
            f"<Blobs>{blobs}</Blobs><NextMarker/></EnumerationResults>"
        )
        return Response(200, [("Content-Type", "application/xml")], body.encode())


SERVICES: dict[str, type[Responder]] = {"s3": S3, "gcs": GCS, "azure": Azure}


async def serve(service: str, port: int, keep_max: int) -> None:
    responder = SERVICES[service](keep_max)
    server = await asyncio.start_server(
        responder.serve, "127.0.0.1", port, limit=HEAD_LIMIT, backlog=1024
    )
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keep-max-mib", type=int, default=1100)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(serve(args.service, args.port, args.keep_max_mib * MiB))
    except ImportError:
        asyncio.run(serve(args.service, args.port, args.keep_max_mib * MiB))
    return 0


if __name__ == "__main__":
    sys.exit(main())
