"""The lean request path of Azure Blob: Get Blob, Get Blob Properties, Put Blob and Put Block.

azure-core runs every request through a pipeline of policies (headers, user agent,
request ids, retries (off here), logging, distributed tracing, the signer) and
parses every response into models; for the requests that carry the bytes, that
costs more CPU than the request itself. The backend sends these four itself,
on the HTTP/1.1 client of ``backends/_http.py`` (asyncio and trio alike),
authorised the way the store is configured:

* an account key: a Shared Key signature (`SharedKeySigner`, the string to sign
  of the Blob service; tests/test_azure_lean.py checks it against the SDK's own
  policy, and Azurite checks every signature);
* a SAS token: its query string, appended to each request;
* anonymous access: nothing.

Stores that sign in with a token credential (Entra ID, DefaultAzureCredential) or
a connection string keep the SDK's path for every request, as do stores behind a
proxy. Error responses become azure-core ``HttpResponseError`` objects with the
service's status, error code and request id, so they go through the one
translation table (``_translate.py``).
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from .._http import HttpPool, Response, proxied, quoted, target_of

__all__ = ["LeanAzure", "SharedKeySigner", "http_error"]

#: The most bytes of an error response read (Azure's error documents are small).
ERROR_BODY_LIMIT = 64 * 1024
_CODE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")
#: The standard headers of the Shared Key string to sign, in order (``Range`` is sent as
#: ``x-ms-range``, a canonicalised header, so its own line stays empty).
_SIGNED_STANDARD = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


@functools.lru_cache(maxsize=256)
def _header_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """``x-ms-*`` header names in the order the service sorts them for Shared Key.

    The service sorts with a .NET culture collation (``-`` is ignored, ``_`` comes
    after letters, ...), which the SDK reproduces with its tables; asyncstore uses the
    SDK's function rather than a second copy of those tables (and caches the order of
    each set of names a request sends).
    """
    from azure.storage.blob._shared.authentication import _storage_header_sort

    return tuple(name for name, _ in _storage_header_sort([(name, "") for name in names]))


_date: tuple[int, str] = (0, "")


def _date_now() -> str:
    """``x-ms-date``: the time now as an HTTP date, made once per second."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, usegmt=True))
    return _date[1]


class SharedKeySigner:
    """Shared Key authorisation of Blob service requests for one account.

    Args:
        account: The storage account name.
        key: The account key (base64, as the portal shows it).
    """

    def __init__(self, account: str, key: str) -> None:
        self.account = account
        self._key = base64.b64decode(key)

    def string_to_sign(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        content_length: int,
    ) -> str:
        """The Blob service's string to sign (``path`` as sent, percent-encoded; ``query``
        and ``headers`` as given, not encoded; header names in lower case)."""
        standard = dict(headers)
        standard["content-length"] = str(content_length) if content_length else ""
        lines = [method, *(standard.get(name, "") for name in _SIGNED_STANDARD)]
        names = _header_order(tuple(name for name in headers if name.startswith("x-ms-")))
        canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in names)
        resource = f"/{self.account}{path}" + "".join(
            f"\n{name.lower()}:{value}" for name, value in sorted(query.items())
        )
        return "\n".join(lines) + "\n" + canonical_headers + resource

    def authorization(self, to_sign: str) -> str:
        """The ``Authorization`` header's value for a string to sign."""
        digest = hmac.new(self._key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        return f"SharedKey {self.account}:{base64.b64encode(digest).decode('ascii')}"


def http_error(response: Response, body: bytes) -> Exception:
    """An azure-core HttpResponseError for an error response, as the SDK would raise it."""
    from azure.core.exceptions import HttpResponseError

    headers = response.headers
    code = headers.get("x-ms-error-code")
    if not code:
        found = _CODE.search(body)
        code = found.group(1).decode("utf-8", "replace") if found else ""
    found = _MESSAGE.search(body)
    message = found.group(1).decode("utf-8", "replace") if found else response.reason
    error = HttpResponseError(message=message.splitlines()[0] if message else response.reason)
    error.status_code = response.status
    error.error_code = code or None  # type: ignore[attr-defined]
    error.reason = response.reason
    error.response = SimpleNamespace(  # what the translation table reads of a response
        status_code=response.status, headers=headers, reason=response.reason
    )
    return error


class LeanAzure:
    """Sends the byte-carrying requests of one container itself.

    Args:
        pool: Connections to the Blob service endpoint.
        prefix: The encoded path before a blob name ("/account/container/" for
            Azurite, "/container/" for Azure).
        version: The ``x-ms-version`` to send (the SDK's).
        signer: Shared Key signer (None: SAS or anonymous).
        sas: A SAS token's query string (without "?"), or None.
    """

    def __init__(
        self,
        pool: HttpPool,
        prefix: str,
        version: str,
        signer: SharedKeySigner | None,
        sas: str | None,
    ) -> None:
        self.pool = pool
        self.prefix = prefix
        self.version = version
        self.signer = signer
        self.sas = sas.lstrip("?") if sas else None

    @classmethod
    def setup(
        cls,
        container_url: str,
        version: str,
        *,
        auth: str,
        account: str | None,
        account_key: str | None,
        sas_token: str | None,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> LeanAzure | None:
        """The lean path for the container at ``container_url``, or None where the SDK
        must send every request (token credentials, connection strings, proxies)."""
        target = target_of(container_url)
        if target is None or proxied(container_url):
            return None
        if auth == "account-key" and account and account_key:
            signer: SharedKeySigner | None = SharedKeySigner(account, account_key)
        elif auth in ("sas", "anonymous"):
            signer = None
        else:
            return None
        pool = HttpPool(
            target,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        path = urlsplit(container_url).path.rstrip("/") + "/"
        return cls(pool, path, version, signer, sas_token if auth == "sas" else None)

    async def request(
        self,
        method: str,
        name: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview | Sequence[bytes | memoryview] | None = None,
    ) -> Response:
        """Send a request for the blob ``name`` (the full name, the store's prefix included).

        ``headers`` have lower-case names. Returns the response of any status.
        """
        path = self.prefix + quoted(name, "/~")
        sent = headers if headers is not None else {}
        sent["x-ms-version"] = self.version
        sent["x-ms-date"] = _date_now()
        params = dict(query or {})
        if self.signer is not None:
            length = (
                0
                if body is None
                else len(body)
                if isinstance(body, (bytes, bytearray, memoryview))
                else sum(len(piece) for piece in body)
            )
            to_sign = self.signer.string_to_sign(method, path, params, sent, length)
            sent["authorization"] = self.signer.authorization(to_sign)
        query_string = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        if self.sas:
            query_string = f"{query_string}&{self.sas}" if query_string else self.sas
        target = f"{path}?{query_string}" if query_string else path
        return await self.pool.request(method, target, sent, body)

    async def raise_for_status(self, response: Response, method: str) -> None:
        """Raise the SDK's HttpResponseError for an error response (after reading its body)."""
        if response.status < 300:
            return
        body = await response.read(ERROR_BODY_LIMIT) if method != "HEAD" else b""
        await response.aclose()
        raise http_error(response, body)

    async def aclose(self) -> None:
        await self.pool.aclose()
