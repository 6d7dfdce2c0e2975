"""AWS Signature Version 4 for the lean request path: header-signed S3 requests.

botocore's signer (``S3SigV4Auth``) builds an ``AWSRequest``, walks its
headers through several helpers and derives the signing key anew for every
request; that is a good part of the SDK's cost per small request. This one
signs the same way for the few requests the lean path sends (GET, HEAD, PUT,
UploadPart): the canonical request of the method, the percent-encoded path
(S3 paths are not normalised or encoded twice), the sorted query, the signed
headers and ``UNSIGNED-PAYLOAD`` (the body is protected by the
``x-amz-checksum-sha256`` header, which is signed). The signing key is derived
once per day, region and secret.

It must never drift from AWS's rules: tests/_sigv4.py is a loopback proxy that
checks every request it passes on with botocore's own signer, and the S3 test
suites run through it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote

__all__ = ["UNSIGNED_PAYLOAD", "Signer", "canonical_query", "encode_path"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_ALGORITHM = "AWS4-HMAC-SHA256"


def encode_path(path: str) -> str:
    """``path`` percent-encoded as S3 wants it on the wire and in the canonical request."""
    return quote(path, safe="/~")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """The query string, encoded and sorted: the same on the wire and in the canonical request."""
    return "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in sorted(params)
    )


@functools.lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    """The ``x-amz-date`` of a second (cached: requests come by the thousand per second)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))


class Signer:
    """Signs requests for one region and service with SigV4 (header authorization).

    Args:
        region: The region the requests go to.
        service: The service name in the credential scope ("s3").
    """

    def __init__(self, region: str, service: str = "s3") -> None:
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret, date, signing key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == date:
            return cached[2]
        key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
        for part in (self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret, date, key)
        return key

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        *,
        access_key: str,
        secret_key: str,
        token: str | None = None,
        now: float | None = None,
    ) -> dict[str, str]:
        """The headers that authorize the request: Authorization, X-Amz-Date, and the rest.

        Args:
            method: The HTTP method.
            host: The ``Host`` header the request is sent with.
            path: The encoded path (`encode_path`).
            query: The encoded, sorted query (`canonical_query`), "" for none.
            headers: The other headers to sign (lower-case names); values as sent.
            access_key: The access key id.
            secret_key: The secret access key.
            token: The session token of temporary credentials.
            now: The signing time (seconds since the epoch; default: now).

        Returns:
            The headers to send besides ``headers``: ``authorization``, ``x-amz-date``,
            ``x-amz-content-sha256`` and, with a token, ``x-amz-security-token``.
        """
        stamp = _stamp(int(time.time() if now is None else now))
        date = stamp[:8]
        added = {"x-amz-content-sha256": UNSIGNED_PAYLOAD, "x-amz-date": stamp}
        if token:
            added["x-amz-security-token"] = token
        signed = {"host": host, **headers, **added}
        names = sorted(signed)
        canonical_headers = "".join(f"{name}:{' '.join(signed[name].split())}\n" for name in names)
        signed_headers = ";".join(names)
        canonical = (
            f"{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{UNSIGNED_PAYLOAD}"
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = (
            f"{_ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(
            self._signing_key(secret_key, date), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        added["authorization"] = (
            f"{_ALGORITHM} Credential={access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )
        return added
