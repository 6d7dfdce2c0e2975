"""Translation of GCS responses and httpx / aiohttp / gcloud exceptions into asyncstore's tree.

Every request of the backend runs inside `gcs_errors`, so no vendor
exception escapes; the original stays as ``__cause__``:

    HTTP status / exception                          asyncstore error
    ---------------------------------------------    -------------------------------
    400 with a crc32c / MD5 mismatch                 IntegrityError
    400 otherwise                                    InvalidArgumentError
    401, 403                                         PermissionDeniedError
    404 (object)                                     NotFoundError (naming the key)
    404 (bucket)                                     NotFoundError (naming the bucket)
    404, 410 of an upload session or its parts       UploadNotFoundError
    412 of a create-if-absent write                  AlreadyExistsError
    412 otherwise                                    PreconditionFailedError
    416                                              InvalidRangeError
    408, httpx timeouts                              TimeoutError
    429, 5xx                                         TransportError (retried by the Store)
    connection refused / reset, truncated body       ConnectionError
    anything else                                    StoreError

gcloud-aio raises ``aiohttp.ClientResponseError`` for a failed status (it
builds one even though the requests themselves go through httpx, see
``_http``); the backend's own requests are checked with `raise_for_status`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import Protocol

import aiohttp
import httpx

from ..._errors import (
    AlreadyExistsError,
    ConfigurationError,
    ConnectionError,
    IntegrityError,
    InvalidArgumentError,
    InvalidRangeError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    StoreError,
    TimeoutError,
    TransportError,
    UploadNotFoundError,
    translating,
)

__all__ = ["GCSHTTPError", "Where", "gcs_errors", "raise_for_status", "status_error"]

_RETRYABLE = frozenset({429, 500, 502, 503, 504})
#: The most characters of a response body quoted in an error message.
_MAX_MESSAGE = 300


class GCSHTTPError(Exception):
    """A failed response to one of the backend's own requests (translated by `gcs_errors`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status}")
        self.status = status
        self.message = message


class Where:
    """What a request was about, for the error message and the error's class.

    Attributes:
        key: The store key (or None for a bucket-wide request).
        bucket: The bucket.
        upload: True for requests on an upload session or its temporary parts
            (a 404 there is UploadNotFoundError).
        create: True for a create-if-absent write (412 is AlreadyExistsError).
        write: True for a request that creates an object (a 404 there can only
            mean that the bucket does not exist).
    """

    __slots__ = ("bucket", "create", "key", "upload", "write")

    def __init__(
        self,
        bucket: str,
        key: str | None,
        *,
        upload: bool = False,
        create: bool = False,
        write: bool = False,
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.upload = upload
        self.create = create
        self.write = write


def _message_of(body: str) -> str:
    """Google's error message from a JSON error body, else the body itself (shortened)."""
    text = body.strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_MAX_MESSAGE]
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:_MAX_MESSAGE]
        if isinstance(error, str):
            description = data.get("error_description")
            return f"{error}: {description}" if description else error
    return text[:_MAX_MESSAGE]


def status_error(status: int, message: str, where: Where) -> StoreError:
    """The asyncstore error for a failed response with ``status``."""
    key = where.key
    bucket = where.bucket
    what = f"key {key!r} in bucket {bucket!r}" if key is not None else f"bucket {bucket!r}"
    said = f": {message}" if message else ""
    lowered = message.lower()
    if status == 404 or (status == 410 and where.upload):
        if where.upload:
            return UploadNotFoundError(
                f"the upload of {what} does not exist or has ended (HTTP {status}){said}", key=key
            )
        if key is None or where.write or "bucket" in lowered:
            return NotFoundError(f"bucket {bucket!r} does not exist (HTTP 404){said}", key=key)
        return NotFoundError(f"no object at {what} (HTTP 404){said}", key=key)
    if status == 412:
        if where.create:
            return AlreadyExistsError(f"{what} already exists (HTTP 412){said}", key=key)
        return PreconditionFailedError(
            f"the precondition on {what} failed: its generation is not the one expected "
            f"(HTTP 412){said}",
            key=key,
        )
    if status in (401, 403):
        return PermissionDeniedError(f"permission denied on {what} (HTTP {status}){said}", key=key)
    if status == 416:
        return InvalidRangeError(f"range not satisfiable for {what} (HTTP 416){said}", key=key)
    if status == 408:
        return TimeoutError(f"request timeout on {what} (HTTP 408){said}", key=key)
    if status in _RETRYABLE:
        return TransportError(f"GCS answered HTTP {status} for {what}{said}", key=key)
    if status == 400:
        if "crc32c" in lowered or "md5" in lowered:
            return IntegrityError(
                f"GCS rejected the bytes of {what}: checksum mismatch (HTTP 400){said}", key=key
            )
        return InvalidArgumentError(
            f"GCS rejected the request for {what} (HTTP 400){said}", key=key
        )
    return StoreError(f"GCS answered HTTP {status} for {what}{said}", key=key)


class Answer(Protocol):
    """What the backend reads of a response, from httpx or from the lean client."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def aread(self) -> bytes: ...


async def raise_for_status(response: Answer, where: Where) -> None:
    """Raise `GCSHTTPError` for an error status, reading the (small) body for its message.

    Raises:
        GCSHTTPError: the status is 400 or above.
    """
    if response.status_code < 400:
        return
    body = (await response.aread()).decode("utf-8", "replace")
    raise GCSHTTPError(response.status_code, _message_of(body))


def _aiohttp_message(exc: aiohttp.ClientResponseError) -> str:
    # gcloud-aio formats the message as "<reason>: <body>".
    reason, _, body = exc.message.partition(": ")
    return _message_of(body) if body else reason


def translate(exc: BaseException, where: Where) -> StoreError | None:
    """The asyncstore error for what a GCS request raised (None: not the service's)."""
    key = where.key
    if isinstance(exc, GCSHTTPError):
        return status_error(exc.status, exc.message, where)
    if isinstance(exc, aiohttp.ClientResponseError):
        return status_error(exc.status, _aiohttp_message(exc), where)
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(
            f"timed out talking to GCS about {_about(where)}: {type(exc).__name__}", key=key
        )
    if isinstance(exc, (httpx.TransportError, aiohttp.ClientError, builtins.ConnectionError)):
        return ConnectionError(
            f"connection to GCS lost or refused for {_about(where)}: {exc!r}", key=key
        )
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError(f"timed out talking to GCS about {_about(where)}", key=key)
    if isinstance(exc, httpx.InvalidURL):
        return ConfigurationError(f"invalid GCS request URL: {exc}", key=key)
    if isinstance(exc, (httpx.HTTPError, OSError, ValueError, KeyError)):
        return StoreError(f"unexpected error from GCS about {_about(where)}: {exc!r}", key=key)
    return None


def gcs_errors(where: Where) -> translating:
    """Translate whatever a GCS request raised into the asyncstore tree (see `translate`).

    StoreErrors (and cancellation) pass through unchanged.
    """
    return translating(translate, where)


def _about(where: Where) -> str:
    if where.key is None:
        return f"bucket {where.bucket!r}"
    return f"key {where.key!r} in bucket {where.bucket!r}"
