"""Translation of azure-core (and HTTP client) exceptions into asyncstore's error tree.

Every call into the Azure SDK runs inside `azure_errors`, so no azure, httpx or
aiohttp exception escapes the backend; the original stays as ``__cause__``:

| Azure error (status / error code)                          | asyncstore error           |
|------------------------------------------------------------|----------------------------|
| 404 `BlobNotFound`, `ResourceNotFoundError`                | NotFoundError (the key)    |
| 404 `ContainerNotFound`                                    | NotFoundError (the container) |
| 409 `BlobAlreadyExists`, `ResourceExistsError`             | AlreadyExistsError         |
| 409 lease, pending copy, snapshots present                 | PreconditionFailedError    |
| 412, 304, `ResourceModifiedError`                          | PreconditionFailedError    |
| 416 `InvalidRange`                                         | InvalidRangeError          |
| 400 `Md5Mismatch`, `Crc64Mismatch`                         | IntegrityError             |
| 400 `InvalidBlockList` (staged blocks gone)                | UploadNotFoundError        |
| 400 `InvalidHeaderValue` on `x-ms-version`                 | ConfigurationError         |
| other 400, 413                                             | InvalidArgumentError       |
| 401, 403, `ClientAuthenticationError`                      | PermissionDeniedError      |
| a credential that finds no identity                        | ConfigurationError         |
| 500 `OperationTimedOut`, 408, timeouts                     | TimeoutError               |
| 429, 5xx (`ServerBusy`, `InternalError`), truncated bodies | TransportError / ConnectionError |
| `ServiceRequestError`, `ServiceResponseError`              | ConnectionError            |
| anything else from the SDK                                 | StoreError                 |

Messages name the operation, the key and the store, the status, Azure's error
code and the request id, and never a secret (SAS signatures and keys are
scrubbed from any text the SDK produced).
"""

from __future__ import annotations

import builtins
import enum
import re
from collections.abc import Sequence
from typing import Any

import httpx
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

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

__all__ = ["azure_errors", "error_code", "scrub", "translate"]

_CORRUPT = frozenset({"Md5Mismatch", "Crc64Mismatch", "InvalidMd5", "InvalidCrc64"})
_TIMEOUT_CODES = frozenset({"OperationTimedOut", "RequestTimeout"})
_SIGNATURE = re.compile(r"(?i)(sig|accountkey|sharedaccesssignature)=([^&;\s'\"]+)")


def scrub(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with SAS signatures, account keys and the given secrets replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SIGNATURE.sub(lambda m: f"{m[1]}=***", text)


def error_code(exc: BaseException | None) -> tuple[str, int]:
    """Azure's error code and the HTTP status of an HttpResponseError (``("", 0)`` otherwise)."""
    if not isinstance(exc, HttpResponseError):
        return "", 0
    code: Any = getattr(exc, "error_code", None)
    response: Any = getattr(exc, "response", None)
    if not code and response is not None:
        code = response.headers.get("x-ms-error-code")
    if isinstance(code, enum.Enum):
        code = code.value
    return str(code or ""), int(getattr(exc, "status_code", None) or 0)


def _detail(exc: BaseException, code: str, status: int, secrets: Sequence[str]) -> str:
    response: Any = getattr(exc, "response", None)
    request_id = response.headers.get("x-ms-request-id") if response is not None else None
    message = getattr(exc, "reason", None) if isinstance(exc, HttpResponseError) else None
    text = str(getattr(exc, "message", None) or exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    if code and first.startswith(("Operation returned", "(")):
        first = ""
    parts = [str(status) if status else "", code, first or (message or "")]
    detail = " ".join(p for p in parts if p).strip() or type(exc).__name__
    if request_id:
        detail += f" (request id {request_id})"
    return scrub(detail, secrets)


def _http_error(
    exc: HttpResponseError,
    *,
    what: str,
    key: str | None,
    container: str,
    location: str,
    secrets: Sequence[str],
) -> StoreError:
    code, status = error_code(exc)
    subject = f"key {key!r} in {location}" if key is not None else location
    detail = _detail(exc, code, status, secrets)
    if code == "ContainerNotFound":
        return NotFoundError(
            f"container {container!r} does not exist ({what} of {subject}: {detail}); "
            "create it first",
            key=key or container,
        )
    if status == 404 or isinstance(exc, ResourceNotFoundError):
        return NotFoundError(f"no object at {subject} ({what}: {detail})", key=key)
    if status == 409 or isinstance(exc, ResourceExistsError):
        if not code or code.endswith("AlreadyExists"):
            return AlreadyExistsError(f"{subject} already exists ({what}: {detail})", key=key)
        return PreconditionFailedError(
            f"{what} of {subject} conflicts with the blob's state: {detail}", key=key
        )
    if status in (412, 304) or isinstance(exc, ResourceModifiedError | ResourceNotModifiedError):
        return PreconditionFailedError(
            f"{what} of {subject}: a precondition failed ({detail})", key=key
        )
    if status == 416 or code == "InvalidRange":
        return InvalidRangeError(
            f"{what} of {subject}: the range is not satisfiable ({detail})", key=key
        )
    if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
        if type(exc).__name__ == "CredentialUnavailableError":
            return ConfigurationError(
                f"{what} of {subject}: no Azure credential is available: {detail}", key=key
            )
        return PermissionDeniedError(f"{what} of {subject} was refused: {detail}", key=key)
    if code in _CORRUPT:
        return IntegrityError(
            f"{what} of {subject}: the service rejected a checksum: {detail}", key=key
        )
    if code == "InvalidBlockList":
        return UploadNotFoundError(
            f"{what} of {subject}: the staged blocks are gone (aborted, expired, or "
            f"discarded by another write to the key): {detail}",
            key=key,
        )
    if code == "InvalidHeaderValue" and "x-ms-version" in str(exc).lower():
        return ConfigurationError(
            f"{what} of {subject}: the service does not accept this SDK's API version "
            f"({detail}); for Azurite, start it with --skipApiVersionCheck",
            key=key,
        )
    if code in _TIMEOUT_CODES or status == 408:
        return TimeoutError(f"{what} of {subject} timed out: {detail}", key=key)
    if status == 429 or status >= 500:
        return TransportError(f"{what} of {subject} failed: {detail}", key=key)
    if status in (400, 413):
        return InvalidArgumentError(f"{what} of {subject} was rejected: {detail}", key=key)
    if isinstance(exc, IncompleteReadError):
        return ConnectionError(f"{what} of {subject}: the body was cut short: {detail}", key=key)
    if isinstance(exc, DecodeError):
        return TransportError(f"{what} of {subject}: unreadable response: {detail}", key=key)
    return StoreError(f"{what} of {subject} failed: {detail}", key=key)


def translate(
    exc: BaseException,
    *,
    what: str,
    key: str | None,
    container: str,
    location: str,
    secrets: Sequence[str] = (),
) -> StoreError | None:
    """The asyncstore error for an Azure SDK / HTTP client exception, or None if not one.

    Args:
        exc: The exception raised by the SDK, azure-core, httpx or aiohttp.
        what: The operation, for the message ("read", "stage block 3", ...).
        key: The object key (relative to the store) the operation was about.
        container: The container, named when it does not exist.
        location: ``az://container/prefix``, for the message.
        secrets: Strings to scrub from the message.
    """
    subject = f"key {key!r} in {location}" if key is not None else location
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
        return TimeoutError(f"{what} of {subject} timed out: {scrub(str(exc), secrets)}", key=key)
    if isinstance(exc, HttpResponseError) and (
        getattr(exc, "response", None) is not None or getattr(exc, "status_code", None)
    ):
        return _http_error(
            exc, what=what, key=key, container=container, location=location, secrets=secrets
        )
    if isinstance(exc, IncompleteReadError):
        return ConnectionError(
            f"{what} of {subject}: the body was cut short: {scrub(str(exc), secrets)}", key=key
        )
    if isinstance(exc, ClientAuthenticationError):
        if type(exc).__name__ == "CredentialUnavailableError":
            return ConfigurationError(
                f"{what} of {subject}: no Azure credential is available: "
                f"{scrub(str(exc), secrets)}",
                key=key,
            )
        return PermissionDeniedError(
            f"{what} of {subject}: authentication failed: {scrub(str(exc), secrets)}", key=key
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ConnectionError(
            f"{what} of {subject}: connection failed: {scrub(str(exc), secrets)}", key=key
        )
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(f"{what} of {subject} timed out: {scrub(str(exc), secrets)}", key=key)
    if isinstance(exc, httpx.TransportError | httpx.StreamError):
        return ConnectionError(
            f"{what} of {subject}: connection failed: {scrub(str(exc), secrets)}", key=key
        )
    if isinstance(exc, AzureError | httpx.HTTPError):
        return StoreError(f"{what} of {subject} failed: {scrub(str(exc), secrets)}", key=key)
    if isinstance(exc, builtins.TimeoutError):  # the lean client's, and anyio's
        return TimeoutError(f"{what} of {subject} timed out", key=key)
    if isinstance(exc, OSError):  # the lean client's connections
        return ConnectionError(
            f"{what} of {subject}: connection failed: {scrub(str(exc), secrets)}", key=key
        )
    if type(exc).__module__.startswith("aiohttp"):
        return ConnectionError(
            f"{what} of {subject}: connection failed: {scrub(str(exc), secrets)}", key=key
        )
    return None


def azure_errors(
    what: str,
    *,
    key: str | None,
    container: str,
    location: str,
    secrets: Sequence[str] = (),
) -> translating:
    """Translate SDK exceptions raised in the block (see `translate`).

    asyncstore errors and exceptions that are not the SDK's (bugs, cancellation)
    pass through unchanged.
    """
    return translating(
        translate, what=what, key=key, container=container, location=location, secrets=secrets
    )
