"""Translation of botocore, aiohttp and httpx exceptions into asyncstore's error tree.

Every call into aiobotocore runs inside `s3_errors`, so no vendor
exception escapes the backend; the original stays as ``__cause__``::

    S3 error code / exception                        asyncstore error
    ---------------------------------------------    -------------------------------
    NoSuchKey, 404                                   NotFoundError (naming the key)
    NoSuchBucket                                     NotFoundError (naming the bucket)
    NoSuchUpload                                     UploadNotFoundError
    AccessDenied, 403, InvalidAccessKeyId, ...       PermissionDeniedError
    InvalidRange, 416                                InvalidRangeError
    PreconditionFailed, 412                          PreconditionFailedError
    BadDigest, XAmzContentSHA256Mismatch, ...        IntegrityError
    SlowDown, throttling, 409 Conditional-
      RequestConflict, 5xx, InternalError, ...       TransportError (retried by the Store)
    RequestTimeout, read/connect timeouts            TimeoutError
    connection refused/reset, truncated body         ConnectionError
    PermanentRedirect, AuthorizationHeader-
      Malformed, missing credentials                 ConfigurationError
    InvalidArgument, EntityTooSmall, ...             InvalidArgumentError
    anything else from the SDK                       StoreError
"""

from __future__ import annotations

import builtins
from typing import Any

import aiohttp
import botocore.exceptions  # type: ignore[import-untyped,unused-ignore]

from ..._errors import (
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

try:  # the httpx session is optional in aiobotocore; httpx2 is its preferred fork
    import httpx2 as _httpx  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installation
    try:
        import httpx as _httpx
    except ImportError:
        _httpx = None

__all__ = ["error_code", "s3_errors", "translate"]

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "InvalidToken",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "InvalidObjectState",
    }
)
_RETRYABLE = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "InternalError",
        "ServiceUnavailable",
        "ServerBusy",
        "ConditionalRequestConflict",
        "OperationAborted",
        "RequestTimeTooSkewed",
    }
)
_CORRUPT = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidChecksum"})
_CONFIG = frozenset(
    {
        "PermanentRedirect",
        "TemporaryRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
        "InvalidBucketName",
        "301",
        "307",
        "400",
    }
)
_BAD_ARGUMENT = frozenset(
    {
        "InvalidArgument",
        "InvalidRequest",
        "InvalidPart",
        "InvalidPartOrder",
        "EntityTooSmall",
        "EntityTooLarge",
        "KeyTooLongError",
        "MetadataTooLarge",
        "MalformedXML",
        "InvalidTag",
    }
)

_TIMEOUTS: tuple[type[BaseException], ...] = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
    aiohttp.ServerTimeoutError,
    builtins.TimeoutError,
)
_CONNECTION: tuple[type[BaseException], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    aiohttp.ClientError,
    OSError,
)
_CREDENTIALS: tuple[type[BaseException], ...] = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.NoRegionError,
    botocore.exceptions.ProfileNotFound,
)
if _httpx is not None:
    _TIMEOUTS += (_httpx.TimeoutException,)
    _CONNECTION += (_httpx.TransportError, _httpx.StreamError)


def error_code(exc: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status of a botocore ClientError (``("", 0)`` otherwise)."""
    response: Any = getattr(exc, "response", None)
    if not isinstance(exc, botocore.exceptions.ClientError) or not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _client_error(
    exc: BaseException, *, what: str, key: str | None, bucket: str, location: str
) -> StoreError:
    code, status = error_code(exc)
    response: Any = getattr(exc, "response", {})
    message = str(response.get("Error", {}).get("Message", "")) or str(exc)
    request_id = response.get("ResponseMetadata", {}).get("RequestId")
    subject = f"key {key!r} in {location}" if key is not None else location
    detail = f"{code or status}: {message}" + (f" (request id {request_id})" if request_id else "")
    if code == "NoSuchBucket":
        return NotFoundError(
            f"bucket {bucket!r} does not exist ({what} of {subject})", key=key or bucket
        )
    if code in _NOT_FOUND or (status == 404 and not code):
        return NotFoundError(f"no object at {subject}", key=key)
    if code == "NoSuchUpload":
        return UploadNotFoundError(f"{what} of {subject}: no such multipart upload", key=key)
    if code in _DENIED or status == 403:
        return PermissionDeniedError(f"{what} of {subject} was refused: {detail}", key=key)
    if code == "InvalidRange" or status == 416:
        return InvalidRangeError(f"{what} of {subject}: {detail}", key=key)
    if code == "PreconditionFailed" or status == 412:
        return PreconditionFailedError(
            f"{what} of {subject}: a precondition failed ({detail})", key=key
        )
    if code in _CORRUPT:
        return IntegrityError(
            f"{what} of {subject}: the service rejected a checksum: {detail}", key=key
        )
    if code == "RequestTimeout":
        return TimeoutError(f"{what} of {subject} timed out: {detail}", key=key)
    if code in _RETRYABLE or status == 429 or status >= 500:
        return TransportError(f"{what} of {subject} failed: {detail}", key=key)
    if code in _CONFIG:
        return ConfigurationError(
            f"{what} of {subject} failed: {detail}; check the bucket name, region and endpoint",
            key=key or bucket,
        )
    if code in _BAD_ARGUMENT:
        return InvalidArgumentError(f"{what} of {subject} was rejected: {detail}", key=key)
    return StoreError(f"{what} of {subject} failed: {detail}", key=key)


def translate(
    exc: BaseException, *, what: str, key: str | None, bucket: str, location: str
) -> StoreError | None:
    """The asyncstore error for a vendor exception, or None if it is not one of theirs.

    Args:
        exc: The exception raised by aiobotocore, botocore, aiohttp or httpx.
        what: The operation, for the message ("read", "upload part 3", ...).
        key: The object key (relative to the store) the operation was about.
        bucket: The bucket, named when it does not exist.
        location: ``s3://bucket/prefix``, for the message.
    """
    subject = f"key {key!r} in {location}" if key is not None else location
    if isinstance(exc, botocore.exceptions.ClientError):
        return _client_error(exc, what=what, key=key, bucket=bucket, location=location)
    if isinstance(exc, _TIMEOUTS):
        return TimeoutError(f"{what} of {subject} timed out: {exc}", key=key)
    if isinstance(exc, _CREDENTIALS):
        return ConfigurationError(
            f"{what} of {subject}: no usable AWS credentials or region: {exc} "
            "(set them in the environment, the shared config files or an instance role)",
            key=key,
        )
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        return InvalidArgumentError(f"{what} of {subject}: {exc}", key=key)
    if isinstance(exc, _CONNECTION):
        return ConnectionError(f"{what} of {subject}: connection failed: {exc}", key=key)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return StoreError(f"{what} of {subject} failed: {exc}", key=key)
    if _httpx is not None and isinstance(exc, _httpx.HTTPError):
        return StoreError(f"{what} of {subject} failed: {exc}", key=key)
    return None


def s3_errors(what: str, *, key: str | None, bucket: str, location: str) -> translating:
    """Translate vendor exceptions raised in the block (see `translate`).

    asyncstore errors and exceptions that are not the SDK's (bugs, cancellation)
    pass through unchanged.
    """
    return translating(translate, what=what, key=key, bucket=bucket, location=location)
