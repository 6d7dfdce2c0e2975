"""A loopback proxy in front of moto that checks every request's SigV4 signature with botocore.

asyncstore signs its hot S3 requests itself (``backends/s3/_sigv4.py``); moto does not
check signatures. Every request the S3 tests send through `SigV4Proxy` is checked with
botocore's own signer (``S3SigV4Auth`` for header-signed requests, ``S3SigV4QueryAuth`` for
presigned URLs): the canonical request is rebuilt from what arrived (method, path and query
as sent, the signed headers), signed with the test credentials and compared. A request whose
signature differs is answered ``403 SignatureDoesNotMatch`` (as S3 would) and kept in
`SigV4Proxy.failures`; a request whose ``x-amz-content-sha256`` names a digest is checked
against its body too. The proxy also records every request (operation, headers, body), so
tests can check what was sent whichever path sent it.

It runs in threads (a ``ThreadingHTTPServer`` with keep-alive), so a session-scoped
fixture can share it between event loops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import http.server
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = ["Sent", "SigV4Proxy", "operation_of"]

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)
#: Request bodies kept for `Sent.body` (larger ones are kept as their first bytes).
KEEP_BODY = 1024 * 1024


@dataclasses.dataclass
class Sent:
    """A request as it reached the proxy."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    operation: str


def operation_of(method: str, target: str, headers: dict[str, str]) -> str:
    """The S3 operation a request is (by its method, query and headers)."""
    split = urlsplit(target)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    has_key = split.path.strip("/").count("/") >= 1
    if method == "PUT":
        if "tagging" in query:
            return "PutObjectTagging"
        if "partNumber" in query:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        if "x-amz-copy-source" in headers:
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "POST"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if "tagging" in query:
        return "GetObjectTagging"
    if "uploads" in query:
        return "ListMultipartUploads"
    if not has_key:
        return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
    return "GetObject"


class SigV4Proxy:
    """Forwards to ``upstream`` (``http://host:port``), checking and recording every request.

    Args:
        upstream: moto's endpoint.
        secret_key: The secret of the test credentials (moto accepts any).
    """

    def __init__(self, upstream: str, secret_key: str) -> None:
        split = urlsplit(upstream)
        self.upstream = (split.hostname or "127.0.0.1", split.port or 80)
        self.secret_key = secret_key
        #: The secrets of other access keys (a test that serves credentials of its own).
        self.secrets: dict[str, str] = {}
        self.sent: list[Sent] = []
        self.failures: list[str] = []
        self.checked = 0
        #: Requests being handled now, and the most at once (tests may reset it).
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def of(self, operation: str) -> list[Sent]:
        with self._lock:
            return [sent for sent in self.sent if sent.operation == operation]

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()

    @contextmanager
    def running(self) -> Iterator[SigV4Proxy]:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="sigv4-proxy", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    # -- checking ------------------------------------------------------------------------------

    def _secret(self, access_key: str) -> str:
        """The secret of ``access_key``: the environment's when a test put its keys there,
        or the one in `secrets`."""
        if access_key in self.secrets:
            return self.secrets[access_key]
        if access_key == os.environ.get("AWS_ACCESS_KEY_ID"):
            return os.environ.get("AWS_SECRET_ACCESS_KEY", self.secret_key)
        return self.secret_key

    def check(self, method: str, target: str, headers: dict[str, str], body: bytes) -> str | None:
        """Why the request's signature is wrong, or None if botocore signs it the same."""
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if "X-Amz-Signature" in query:
            return self._check_presigned(method, target, headers, query)
        authorization = headers.get("authorization")
        if authorization is None:
            return "no Authorization header"
        match = _AUTH.fullmatch(authorization)
        if match is None:
            return f"malformed Authorization header {authorization!r}"
        access_key, date, region, service, signed, signature = match.groups()
        stamp = headers.get("x-amz-date", "")
        if stamp[:8] != date:
            return f"x-amz-date {stamp!r} is not of the credential's date {date}"
        names = signed.split(";")
        missing = [name for name in names if name not in headers]
        if missing:
            return f"signed headers {missing} were not sent"
        creds = Credentials(
            access_key, self._secret(access_key), headers.get("x-amz-security-token")
        )
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}{target}",
            headers={name: headers[name] for name in names},
        )
        request.context["timestamp"] = stamp
        auth = S3SigV4Auth(creds, service, region)
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if expected != signature:
            return f"signature differs from botocore's; canonical request:\n{canonical}"
        claimed = headers.get("x-amz-content-sha256", "")
        if re.fullmatch(r"[0-9a-f]{64}", claimed) and hashlib.sha256(body).hexdigest() != claimed:
            return "x-amz-content-sha256 is not the body's sha256"
        return None

    def _check_presigned(
        self, method: str, target: str, headers: dict[str, str], query: dict[str, str]
    ) -> str | None:
        access_key, _, region, service, _ = query["X-Amz-Credential"].split("/")
        pairs = urlsplit(target).query.split("&")
        unsigned = "&".join(p for p in pairs if not p.startswith("X-Amz-Signature="))
        path = urlsplit(target).path
        names = query["X-Amz-SignedHeaders"].split(";")
        creds = Credentials(access_key, self._secret(access_key), query.get("X-Amz-Security-Token"))
        request = AWSRequest(
            method=method,
            url=f"http://{headers['host']}{path}?{unsigned}",
            headers={name: headers[name] for name in names if name in headers},
        )
        request.context["timestamp"] = query["X-Amz-Date"]
        auth = S3SigV4QueryAuth(creds, service, region, expires=int(query["X-Amz-Expires"]))
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if expected != query["X-Amz-Signature"]:
            return f"presigned signature differs from botocore's; canonical request:\n{canonical}"
        return None


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: SigV4Proxy
    protocol_version = "HTTP/1.1"
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = self.headers.get("content-length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            pieces = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(pieces)
        return b""

    def _handle(self) -> None:
        owner = self.owner
        if self.path.startswith(("http://", "https://")):  # absolute-form (aiobotocore + httpx)
            split = urlsplit(self.path)
            self.path = split.path + (f"?{split.query}" if split.query else "")
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = self._body()
        operation = operation_of(self.command, self.path, headers)
        problem = owner.check(self.command, self.path, headers, body)
        with owner._lock:
            owner.checked += 1
            owner.sent.append(Sent(self.command, self.path, headers, body[:KEEP_BODY], operation))
            if problem is not None:
                owner.failures.append(f"{self.command} {self.path}: {problem}")
            owner.in_flight += 1
            owner.peak = max(owner.peak, owner.in_flight)
        try:
            self._answer(problem, body)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _answer(self, problem: str | None, body: bytes) -> None:
        owner = self.owner
        if problem is not None:
            answer = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SignatureDoesNotMatch"
                b"</Code><Message>checked by tests/_sigv4.py</Message></Error>"
            )
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)
            return
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*owner.upstream, timeout=120)
        forwarded = {
            name: value
            for name, value in self.headers.items()
            if name.lower() not in ("transfer-encoding", "connection", "content-length")
        }
        try:
            self._upstream.request(self.command, self.path, body=body, headers=forwarded)
            response = self._upstream.getresponse()
        except (OSError, http.client.HTTPException):
            self._upstream.close()
            self._upstream = http.client.HTTPConnection(*owner.upstream, timeout=120)
            self._upstream.request(self.command, self.path, body=body, headers=forwarded)
            response = self._upstream.getresponse()
        data = response.read()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        length = response.getheader("content-length")
        if self.command != "HEAD" or not length:
            length = str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up before its answer is written (a read given up, a test
    that closes its stream early) is the client's business: no traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
