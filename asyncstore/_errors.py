"""The one exception tree of asyncstore.

Every error raised by the public API is a `StoreError`. Backends
translate their vendor's exceptions where they call the vendor (with
`translating`), so no botocore, azure-core or aiohttp exception
escapes; the original is kept as ``__cause__``:

    StoreError
    ├── NotFoundError              (also FileNotFoundError)
    │   ├── TagNotFoundError       (asyncstore.oci: the tag is unknown)
    │   ├── BlobNotFoundError      (asyncstore.oci: the blob is unknown)
    │   ├── ManifestNotFoundError  (asyncstore.oci: the manifest is unknown)
    │   └── RepositoryNotFoundError (asyncstore.oci: the repository is unknown)
    ├── AlreadyExistsError         (also FileExistsError)
    ├── PreconditionFailedError
    ├── IntegrityError
    │   └── DigestMismatchError    (expected, actual)
    ├── InvalidArgumentError       (also ValueError)
    │   ├── InvalidKeyError
    │   ├── InvalidDigestError
    │   ├── InvalidRangeError
    │   └── InvalidOffsetError
    ├── UploadNotFoundError
    ├── PermissionDeniedError      (also PermissionError)
    ├── ConfigurationError         (bad URL, unknown scheme, missing extra)
    └── TransportError             (retried by the Store)
        ├── TimeoutError           (also builtins.TimeoutError)
        └── ConnectionError        (also builtins.ConnectionError)

Every message names what was wrong and with which key, URL or option, and
never a secret: URLs are shown through `redact_url`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from types import TracebackType

__all__ = [
    "AlreadyExistsError",
    "BlobNotFoundError",
    "ConfigurationError",
    "ConnectionError",
    "DigestMismatchError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidDigestError",
    "InvalidKeyError",
    "InvalidOffsetError",
    "InvalidRangeError",
    "ManifestNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "RepositoryNotFoundError",
    "StoreError",
    "TagNotFoundError",
    "TimeoutError",
    "TransportError",
    "UploadNotFoundError",
    "translating",
    "redact_url",
]


class StoreError(Exception):
    """Base class of every error asyncstore raises.

    Attributes:
        key: The object key (or URL, or option name) the error is about, when
            there is one.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NotFoundError(StoreError, FileNotFoundError):
    """The object, bucket or container does not exist."""


class AlreadyExistsError(StoreError, FileExistsError):
    """A create-if-absent write found the key already present."""


class PreconditionFailedError(StoreError):
    """A conditional request failed: the object's ETag/version is not the one expected.

    Also raised when an object is replaced while it is being downloaded, since
    every range of a download is pinned to the first ETag.
    """


class IntegrityError(StoreError):
    """Bytes read or written do not match what was recorded for them."""


class DigestMismatchError(IntegrityError):
    """The digest of the bytes differs from the digest expected.

    Attributes:
        expected: The digest that was expected (``sha256:<hex>``).
        actual: The digest of the bytes actually seen.
    """

    def __init__(self, message: str, *, expected: str, actual: str, key: str | None = None):
        super().__init__(message, key=key)
        self.expected = expected
        self.actual = actual


class InvalidArgumentError(StoreError, ValueError):
    """An argument was rejected before any request was made."""


class InvalidKeyError(InvalidArgumentError):
    """An object key (or list prefix) is not acceptable."""


class InvalidDigestError(InvalidArgumentError):
    """A digest string does not follow the ``algorithm:hex`` grammar."""


class InvalidRangeError(InvalidArgumentError):
    """A byte range is negative, inverted or starts past the end of the object."""


class InvalidOffsetError(InvalidArgumentError):
    """An append offset is not the current size of the upload session."""


class UploadNotFoundError(StoreError):
    """The multipart upload or upload session does not exist (or is finished)."""


class TagNotFoundError(NotFoundError):
    """The tag does not exist in the repository (an `asyncstore.oci` error)."""


class BlobNotFoundError(NotFoundError):
    """The repository does not hold the blob, or its bytes are gone (an `asyncstore.oci` error)."""


class ManifestNotFoundError(NotFoundError):
    """The repository does not hold the manifest (an `asyncstore.oci` error)."""


class RepositoryNotFoundError(NotFoundError):
    """The repository holds nothing at all (an `asyncstore.oci` error)."""


class PermissionDeniedError(StoreError, PermissionError):
    """The service (or file system) refused the request."""


class ConfigurationError(StoreError):
    """A store URL, option or installation is wrong (unknown scheme, missing extra, ...)."""


class TransportError(StoreError):
    """The request may succeed if tried again: network error, timeout, throttling, 5xx.

    The Store retries these with exponential backoff and jitter; when the
    attempts are exhausted the last one is raised with ``attempts`` set.

    Attributes:
        attempts: How many attempts were made before giving up (0 if not retried).
    """

    def __init__(self, message: str, *, key: str | None = None, attempts: int = 0) -> None:
        super().__init__(message, key=key)
        self.attempts = attempts


class TimeoutError(TransportError, builtins.TimeoutError):
    """A connect or read deadline passed."""


class ConnectionError(TransportError, builtins.ConnectionError):
    """The connection could not be made or was lost."""


class translating:
    """``with translating(translate, *args, **context):``: foreign errors become asyncstore's.

    An exception raised in the block that is not already a `StoreError` (nor a
    cancellation) is handed to ``translate(exc, *args, **context)``, a
    backend's table of its SDK's and HTTP client's exceptions; the error it
    returns is raised from the original (kept as ``__cause__``); None lets the
    original through (a bug, not the service's). The one translating context of
    every backend, in the spirit of httpcore's ``map_exceptions``: a class, not a
    generator, because it wraps every request.
    """

    __slots__ = ("_args", "_context", "_translate")

    def __init__(
        self,
        translate: Callable[..., StoreError | None],
        /,
        *args: object,
        **context: object,
    ) -> None:
        self._translate = translate
        self._args = args
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, StoreError) or not isinstance(exc, Exception):
            return
        error = self._translate(exc, *self._args, **self._context)
        if error is not None:
            raise error from exc


def redact_url(url: object) -> str:
    """``url`` as it may be shown: user info, query values and fragment replaced by ``***``.

    Works on any text, URL or not: ``s3://user:pw@bucket/p?k=v#f`` gives
    ``s3://***@bucket/p?k=***#***``, and ``user:pw@host`` gives ``***@host``.
    A query item without ``=`` is hidden whole (it may be a pasted token).
    """
    text, hash_mark, _fragment = str(url).partition("#")
    base, question, query = text.partition("?")
    scheme, sep, rest = base.partition("://")
    if not sep:
        scheme, rest = "", base
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    elif not sep and "@" in rest:  # not a URL: anything before an "@" may be user:password
        authority, slash, path = "***@" + rest.rsplit("@", 1)[1], "", ""
    items = (
        (f"{item.split('=', 1)[0]}=***" if "=" in item else "***") if item else ""
        for item in query.split("&")
    )
    shown = f"{scheme}{sep}{authority}{slash}{path}"
    if question:
        shown += "?" + "&".join(items)
    if hash_mark:
        shown += "#***"
    return shown
