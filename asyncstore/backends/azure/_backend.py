"""`AzureBackend`: Azure Blob Storage through the azure-storage-blob aio SDK.

Each primitive is one or two SDK calls, made on the BlobClient of the key:

* ``put``: one Put Blob (the operation ``upload_blob`` makes for small
  bodies, given the buffer itself), with the part's MD5 from the core as
  ``Content-MD5`` so the service verifies it.
* multipart: ``create_upload`` only makes an id (Azure has no "start"
  call); ``upload_part`` is one Put Block
  (``stage_block``) with a block id made from the upload id and the part
  number (all ids the same length) and the part's ``Content-MD5``;
  ``complete_upload`` is one Put Block List (``commit_block_list``) that also
  sets the content type, the metadata (with the whole-object sha256) and the
  condition (``If-None-Match: *`` / ``If-Match``). The SDK's chunking helpers
  are never used: the core decides the parts, so memory follows its formula.
* ``abort_upload``: Azure cannot delete uncommitted blocks by themselves. When
  the key has no committed blob and every uncommitted block is this upload's,
  the abort commits an empty block list with ``If-None-Match: *`` (which makes
  the service discard the uncommitted blocks) and deletes that zero-length
  placeholder with ``If-Match`` on its ETag, so an abort never touches
  anyone else's blob. Otherwise the blocks are left for Azure, which discards
  them at the next write of the key, or after 7 days. A write whose body has
  been sent is allowed to finish when its caller is cancelled (`settled`),
  so that the abort which follows sees every block that landed.
* ``read``: one Get Blob with a ``Range`` and ``If-Match``, streamed from the
  socket (never buffered whole).
* ``list``: List Blobs (``list_blobs`` / ``walk_blobs`` with a delimiter), a
  page of up to 5,000 names per request.
* ``delete_many``: Blob Batch (256 deletes per request) under asyncio;
  bounded concurrency under trio (azure-core's batch code uses
  ``asyncio.gather``) and with SAS or anonymous access.
* ``copy``: Copy Blob (``start_copy_from_url``), polled until it completes.
"""

from __future__ import annotations

import base64
import builtins
import collections
import contextlib
import dataclasses
import importlib
import platform
import re
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeVar

import anyio
import anyio.to_thread

# The blocks' CRC-64 (core's _hashing): loaded with the backend (77 ms), not by the
# first upload's hashing thread while it holds the GIL (the event loop stalled).
import awscrt.checksums  # type: ignore[import-untyped]  # noqa: F401
import sniffio
from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.storage.blob import BlobBlock, BlobProperties, ContentSettings
from azure.storage.blob._generated.models import BlobHTTPHeaders, ModifiedAccessConditions
from azure.storage.blob.aio import BlobClient, BlobPrefix, ContainerClient

from ..._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    IteratorReadStream,
    LoopBound,
    MiB,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from ..._errors import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidArgumentError,
    InvalidRangeError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    TransportError,
    UploadNotFoundError,
    translating,
)
from ..._stream._tasks import task_group
from ..._types import CommonPrefix, ObjectInfo
from .._http import Response, ResponseStream, http_date
from ._lean import LeanAzure
from ._metadata import decode_metadata, encode_metadata, encode_name
from ._options import AzureConfig, resolve
from ._settle import settled
from ._translate import azure_errors, error_code
from ._transport import BufferBody, HttpxTransport

__all__ = ["AzureBackend"]

T = TypeVar("T")

#: Largest block Put Block takes, and largest body of one Put Blob.
MAX_BLOCK = 4000 * MiB
MAX_PUT = 5000 * MiB
#: Deletes per Blob Batch request (the service's limit).
BATCH_SIZE = 256
#: Deletes in flight when they cannot be batched.
DELETE_CONCURRENCY = 16
#: Bytes a read yields at a time: socket reads (64 KiB) are joined up to this, so
#: that the core sees few, large pieces, while a response is never held whole.
READ_PIECE = 1 * MiB
#: Requests in flight at once on the lean path (and the Store's default bound).
LEAN_CONNECTIONS = 64
#: Bytes per read of azure-core's aiohttp transport (its default is 4 KiB).
AIOHTTP_BLOCK = 256 * 1024
#: BlobClients kept for reuse (making one costs ~0.1 ms of CPU).
CLIENT_CACHE = 512
_UPLOAD_ID = re.compile(r"\A[0-9a-f]{32}\Z")
_PLACEHOLDER = encode_name("asyncstore-aborted")


def block_id(upload_id: str, number: int) -> str:
    """The (unencoded) block id of part ``number`` of an upload: the same length for every part."""
    return f"{upload_id}-{number:06d}"


def _checksum_header(checksums: Mapping[str, bytes]) -> dict[str, str]:
    """The header the service checks a block (or a Put Blob) against: ``x-ms-content-crc64``
    (CRC-64/NVME, little-endian), or ``content-md5`` from a caller that gave an MD5."""
    crc64 = checksums.get("crc64nvme")
    if crc64:
        little = int.from_bytes(crc64, "big").to_bytes(8, "little")
        return {"x-ms-content-crc64": base64.b64encode(little).decode("ascii")}
    md5 = checksums.get("md5")
    return {"content-md5": base64.b64encode(md5).decode("ascii")} if md5 else {}


def _byte_view(data: memoryview) -> memoryview:
    return data if data.format == "B" and data.ndim == 1 else data.cast("B")


def _etag(value: object) -> str:
    """An ETag in its quoted form (listings return it bare, other responses quoted)."""
    text = str(value)
    return text if text.startswith(('"', "W/")) else f'"{text}"'


def _content_range_size(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-range") or ""
    _, _, total = value.rpartition("/")
    return int(total) if total.isdigit() else None


def _request_id(result: Mapping[str, Any]) -> str | None:
    value = result.get("request_id")
    return str(value) if value else None


def _transport_timeouts(config: AzureConfig) -> tuple[float, float] | None:
    """The (connect, read) timeouts the backend's transport will have, if known."""
    transport = config.transport
    if isinstance(transport, str):
        return config.timeouts
    if isinstance(transport, HttpxTransport):
        return transport.timeouts
    connection = getattr(transport, "connection_config", None)  # azure-core's transports
    connect = getattr(connection, "timeout", None)
    read = getattr(connection, "read_timeout", None)
    if isinstance(connect, int | float) and isinstance(read, int | float):
        return (float(connect), float(read))
    return None


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@dataclasses.dataclass(frozen=True, slots=True)
class _Session:
    """What the backend makes on first use: the SDK client and the lean path (or None)."""

    container: ContainerClient
    lean: LeanAzure | None


class AzureBackend(Backend):
    """Azure Blob Storage (block blobs) in one container, under an optional key prefix.

    Open one with ``open_store("az://container/prefix?account=NAME")`` or
    directly. The SDK client is made on first use, inside the running event
    loop, and closed by `aclose` (``async with`` the Store).

    Args:
        container: The container (it must exist).
        prefix: Key prefix under which the store's keys live.
        account: The storage account name.
        account_url: The Blob endpoint, for emulators and custom domains
            (``http://127.0.0.1:10000/devstoreaccount1`` for Azurite).
        connection_string: A storage connection string (the only way in, if given).
        account_key: The account's shared key.
        sas_token: A shared access signature (with or without the leading ``?``).
        credential: An azure-core credential object (``azure.identity.aio``, ...);
            the caller keeps ownership and closes it.
        anonymous: Send requests unsigned (public containers).
        transport: ``"auto"`` (aiohttp under asyncio, `HttpxTransport` under trio),
            ``"httpx"``, ``"aiohttp"`` (asyncio only), or an
            azure-core ``AsyncHttpTransport`` object such as
            ``HttpxTransport(max_connections=32)``, which the store then owns and closes.
        concurrency: The store's default parts / ranges in flight.
        part_size_mb: The store's default part / range size, in MiB.
        connect_timeout: Seconds to wait for a connection (default 30), with
            either transport the backend makes.
        read_timeout: Seconds to wait for each read or write on a connection
            (default 120): a stalled response fails with a TimeoutError, which
            the Store retries (a download resumes from the byte it reached).
            With a transport object, set its own timeouts instead.
        environ: Where to read ``AZURE_STORAGE_CONNECTION_STRING`` (default: the environment).
        lean: Send Get Blob, Get Blob Properties, Put Blob and Put Block on
            asyncstore's lean HTTP/1.1 client (signed with the account key, or with
            the SAS token) instead of through azure-core's pipeline; token
            credentials, connection strings and proxies keep the SDK's path.

    Attributes:
        timeouts: The (connect, read) timeouts in seconds of the transport, or
            None for a transport object other than `HttpxTransport` and
            azure-core's (whose timeouts are unknown here).

    Raises:
        ConfigurationError: see `asyncstore.backends.azure.from_url`.
    """

    capabilities = Capabilities(
        parallel_parts=True,
        min_part_size=1,
        max_part_size=MAX_BLOCK,
        max_parts=50_000,
        max_single_put=MAX_PUT,
        part_checksums=frozenset({"crc64nvme"}),
    )

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        account: str | None = None,
        account_url: str | None = None,
        connection_string: str | None = None,
        account_key: str | None = None,
        sas_token: str | None = None,
        credential: Any = None,
        anonymous: bool = False,
        transport: str | AsyncHttpTransport[Any, Any] = "auto",
        concurrency: int | None = None,
        part_size_mb: int | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
        lean: bool = True,
    ) -> None:
        options: dict[str, object] = {
            "account": account,
            "account_url": account_url,
            "connection_string": connection_string,
            "account_key": account_key,
            "sas_token": sas_token,
            "credential": credential,
            "anonymous": anonymous or None,
            "transport": transport,
            "concurrency": concurrency,
            "part_size_mb": part_size_mb,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "lean": lean,
        }
        self._setup(resolve(container, prefix, options, environ=environ))

    @classmethod
    def from_config(cls, config: AzureConfig) -> AzureBackend:
        """A backend for an already resolved configuration."""
        backend = cls.__new__(cls)
        backend._setup(config)
        return backend

    def _setup(self, config: AzureConfig) -> None:
        self.config = config
        self._root = f"{config.prefix}/" if config.prefix else ""
        self._secrets = config.secrets()
        if config.concurrency is not None:
            self.default_max_concurrency = config.concurrency
        if config.part_size_mb is not None:
            self.default_chunk_size = config.part_size_mb * MiB
        self.timeouts = _transport_timeouts(config)
        self._session: LoopBound[_Session] = LoopBound("Azure", config.url, self._open_client)
        self._blobs: collections.OrderedDict[str, BlobClient] = collections.OrderedDict()
        self._transport_settles = True
        self._transport_name: str | None = None
        self.default_max_connections = LEAN_CONNECTIONS

    def describe(self) -> str:
        where = self.config.account_url or "?"
        account = self.config.account or "?"
        http = f", {self._transport_name}" if self._transport_name else ""
        return f"azure {self.config.url} (account {account} at {where}, {self.config.auth}{http})"

    def __repr__(self) -> str:
        return f"<AzureBackend {self.describe()}>"

    # -- the SDK client ----------------------------------------------------------------------

    def _errors(self, what: str, key: str | None) -> translating:
        return azure_errors(
            what,
            key=key,
            container=self.config.container,
            location=self.config.url,
            secrets=self._secrets,
        )

    async def _client(self) -> ContainerClient:
        return (await self._session.get()).container

    def _make_transport(self) -> Any:
        """The transport: ``"auto"`` is aiohttp under asyncio, `HttpxTransport` under trio.

        Under asyncio, aiohttp costs about half the CPU per downloaded byte and per
        request (see docs/backends/azure.md); httpx is what runs under trio.
        """
        choice = self.config.transport
        if not isinstance(choice, str):
            return choice
        library = sniffio.current_async_library()
        connect, read = self.config.timeouts
        if choice == "auto":
            choice = "aiohttp" if library == "asyncio" else "httpx"
        if choice == "aiohttp":
            if library != "asyncio":
                raise ConfigurationError(
                    f"transport='aiohttp' of {self.config.url} runs only under asyncio, "
                    f"not {library}; use transport='httpx' (or 'auto')",
                    key="transport",
                )
            from ._aiohttp import AioHttpTransportNoRetry

            return AioHttpTransportNoRetry(
                connection_data_block_size=AIOHTTP_BLOCK,
                connection_timeout=connect,
                read_timeout=read,
            )
        return HttpxTransport(connect_timeout=connect, read_timeout=read)

    async def _write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a write so that a cancelled caller still lets it land before going on.

        HttpxTransport does this itself (and knows when a body is not out yet);
        for other transports the write gets up to `SETTLE_TIMEOUT` seconds.
        """
        if self._transport_settles:
            return await work()
        return await settled(work)

    async def _open_client(self, stack: contextlib.AsyncExitStack) -> _Session:
        """Make the SDK client and the lean request path, in the running event loop."""
        config = self.config
        # azure-core's user-agent policy calls platform.platform(), which runs
        # `uname -p` in a subprocess the first time in a process: do that (cached by
        # the platform module) in a worker thread, not on the event loop.
        await anyio.to_thread.run_sync(platform.platform)
        transport = self._make_transport()
        self._transport_settles = isinstance(transport, HttpxTransport)
        self._transport_name = getattr(transport, "_label", type(transport).__name__)
        kwargs: dict[str, Any] = {
            "transport": transport,
            "retry_total": 0,  # the Store retries TransportErrors itself
            "max_single_put_size": MAX_PUT,
            "max_block_size": MAX_BLOCK,
        }
        with self._errors("open", None):
            if config.connection_string is not None:
                client = ContainerClient.from_connection_string(
                    config.connection_string, config.container, **kwargs
                )
            else:
                assert config.account_url is not None
                credential = await self._credential(stack)
                client = ContainerClient(
                    config.account_url, config.container, credential=credential, **kwargs
                )
            await stack.enter_async_context(client)
        lean = None
        if config.lean and config.account_url is not None:
            lean = LeanAzure.setup(
                f"{config.account_url.rstrip('/')}/{config.container}",
                client.api_version,
                auth=config.auth,
                account=config.account,
                account_key=config.account_key,
                sas_token=config.sas_token,
                max_connections=LEAN_CONNECTIONS,
                connect_timeout=config.timeouts[0],
                read_timeout=config.timeouts[1],
            )
        if lean is not None:
            stack.push_async_callback(lean.aclose)
        return _Session(client, lean)

    async def _credential(self, stack: contextlib.AsyncExitStack) -> Any:
        config = self.config
        if config.auth == "account-key":
            assert config.account is not None
            assert config.account_key is not None
            return AzureNamedKeyCredential(config.account, config.account_key)
        if config.auth == "sas":
            assert config.sas_token is not None
            return AzureSasCredential(config.sas_token)
        if config.auth == "credential":
            return config.credential
        if config.auth == "anonymous":
            return None
        try:  # importing azure.identity reads files: off the event loop
            identity = await anyio.to_thread.run_sync(importlib.import_module, "azure.identity.aio")
        except ImportError as exc:
            raise ConfigurationError(
                f"Azure store {config.url} needs DefaultAzureCredential: "
                "pip install azure-identity",
                key="credential",
            ) from exc
        # Its token requests go through httpx too (its default is aiohttp: asyncio only).
        credential = await anyio.to_thread.run_sync(
            lambda: identity.DefaultAzureCredential(
                transport=HttpxTransport(
                    connect_timeout=config.timeouts[0], read_timeout=config.timeouts[1]
                )
            )
        )
        stack.push_async_callback(credential.close)
        return credential

    async def _lean_path(self) -> LeanAzure | None:
        """The lean request path (made with the SDK client; None: the SDK sends all)."""
        return (await self._session.get()).lean

    async def _lean_send(
        self,
        lean: LeanAzure,
        method: str,
        key: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: dict[str, str] | None = None,
        body: memoryview | None = None,
    ) -> Response:
        """A lean request whose whole answer is read (for writes and HEAD); its response."""
        response = await lean.request(
            method, self._root + key, query=query, headers=headers, body=body
        )
        await lean.raise_for_status(response, method)
        await response.read()
        return response

    async def _blob(self, key: str) -> BlobClient:
        blob = self._blobs.get(key)
        if blob is not None:
            self._blobs.move_to_end(key)
            return blob
        client = await self._client()
        blob = client.get_blob_client(self._root + key)
        self._blobs[key] = blob
        if len(self._blobs) > CLIENT_CACHE:
            self._blobs.popitem(last=False)
        return blob

    async def aclose(self) -> None:
        """Close the SDK client, its HTTP connections and a DefaultAzureCredential."""
        self._blobs.clear()
        await self._session.aclose()

    # -- reading -------------------------------------------------------------------------------

    def _info(self, key: str, props: BlobProperties) -> ObjectInfo:
        settings = props.content_settings
        return ObjectInfo(
            key=key,
            size=int(props.size or 0),
            etag=_etag(props.etag),
            last_modified=props.last_modified,
            content_type=settings.content_type if settings is not None else None,
            metadata=decode_metadata(props.metadata),
        )

    def _info_from_headers(self, key: str, headers: Mapping[str, str]) -> ObjectInfo:
        """ObjectInfo from a Get Blob (Properties) answer's headers (lower-case names)."""
        size = _content_range_size(headers)
        if size is None:
            size = int(headers.get("content-length") or 0)
        stored = {
            name[len("x-ms-meta-") :]: value
            for name, value in headers.items()
            if name.startswith("x-ms-meta-")
        }
        return ObjectInfo(
            key=key,
            size=size,
            etag=_etag(headers.get("etag")),
            last_modified=http_date(headers.get("last-modified")),
            content_type=headers.get("content-type"),
            metadata=decode_metadata(stored),
        )

    async def head(self, key: str) -> ObjectInfo:
        """Get Blob Properties: size, ETag, content type and metadata.

        Raises:
            NotFoundError: The key does not exist.
        """
        lean = await self._lean_path()
        if lean is not None:
            with self._errors("head", key):
                response = await self._lean_send(lean, "HEAD", key)
            return self._info_from_headers(key, response.headers)
        blob = await self._blob(key)
        with self._errors("head", key):
            props = await blob.get_blob_properties()
        return self._info(key, props)

    async def _head_pinned(self, key: str, if_match: str | None) -> ObjectInfo:
        blob = await self._blob(key)
        conditions: dict[str, Any] = (
            {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
            if if_match is not None
            else {}
        )
        with self._errors("read", key):
            props = await blob.get_blob_properties(**conditions)
        return self._info(key, props)

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        """Get Blob of ``[start, end)`` with ``If-Match``, streamed as it arrives.

        Raises:
            NotFoundError: The key does not exist.
            InvalidRangeError: ``start`` is past the end of the object.
            PreconditionFailedError: ``if_match`` is given and the ETag differs.
        """
        if start < 0 or (end is not None and end < start):
            raise InvalidRangeError(
                f"invalid range [{start}, {end}) for key {key!r} in {self.config.url}", key=key
            )
        if end is not None and end == start:  # HTTP cannot ask for zero bytes
            return await self._empty_read(key, start, if_match)
        byte_range = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"
        lean = await self._lean_path()
        if lean is not None:
            return await self._lean_read(lean, key, start, byte_range, if_match)
        blob = await self._blob(key)
        conditions = ModifiedAccessConditions(if_match=if_match) if if_match is not None else None

        def keep(pipeline_response: Any, body: Any, headers: Any) -> tuple[Any, Any]:
            return pipeline_response.http_response, body

        # BlobClient.download_blob reads each response whole into memory (and retries
        # with asyncio.sleep), so ranges go through the generated Get Blob operation
        # the downloader itself calls, which streams.
        operations: Any = blob._client.blob
        try:
            with self._errors("read", key):
                response, body = await operations.download(
                    range=byte_range,
                    modified_access_conditions=conditions,
                    decompress=False,
                    cls=keep,
                )
        except InvalidRangeError:  # start >= size, or an empty blob
            return await self._empty_read(key, start, if_match)
        info = self._info_from_headers(key, {k.lower(): v for k, v in response.headers.items()})

        async def close() -> None:
            with anyio.CancelScope(shield=True):
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()
                await response.close()

        return IteratorReadStream(info, self._chunks(key, body), close=close)

    async def _lean_read(
        self, lean: LeanAzure, key: str, start: int, byte_range: str, if_match: str | None
    ) -> ReadStream:
        headers = {"x-ms-range": byte_range}
        if if_match is not None:
            headers["if-match"] = if_match
        try:
            with self._errors("read", key):
                response = await lean.request("GET", self._root + key, headers=headers)
                await lean.raise_for_status(response, "GET")
        except InvalidRangeError:  # start >= size, or an empty blob
            return await self._empty_read(key, start, if_match)
        info = self._info_from_headers(key, response.headers)
        return ResponseStream(info, response, lambda: self._errors("read", key), piece=READ_PIECE)

    async def _empty_read(self, key: str, start: int, if_match: str | None) -> ReadStream:
        info = await self._head_pinned(key, if_match)
        if start > info.size:
            raise InvalidRangeError(
                f"range start {start} is past the end of key {key!r} in {self.config.url} "
                f"({info.size} bytes)",
                key=key,
            )
        return IteratorReadStream(info, _no_chunks())

    async def _chunks(self, key: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The body in pieces of `READ_PIECE` bytes (the last one shorter), as they arrive.

        A body cut short hands on the bytes that did arrive before its
        TransportError, so the core resumes after them.
        """
        pieces: builtins.list[bytes] = []
        held = 0
        while True:
            try:
                with self._errors("read", key):
                    try:
                        chunk = await body.__anext__()
                    except StopAsyncIteration:
                        break
            except TransportError:
                if held:
                    yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                raise
            while held + len(chunk) >= READ_PIECE:
                cut = READ_PIECE - held
                pieces.append(chunk[:cut] if cut < len(chunk) else chunk)
                chunk = chunk[cut:]
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces, held = [], 0
            if chunk:
                pieces.append(chunk)
                held += len(chunk)
        if held:
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # -- writing -------------------------------------------------------------------------------

    def _conditions(self, attrs: WriteAttributes) -> dict[str, Any]:
        if attrs.if_match is not None:
            return {"etag": attrs.if_match, "match_condition": MatchConditions.IfNotModified}
        if attrs.if_none_match:
            return {"match_condition": MatchConditions.IfMissing}
        return {}

    @contextlib.contextmanager
    def _write_errors(self, what: str, key: str, attrs: WriteAttributes) -> Iterator[None]:
        try:
            with self._errors(what, key):
                yield
        except NotFoundError as exc:
            # If-Match on a missing blob: the precondition fails (not "not found")
            if attrs.if_match is None or error_code(exc.__cause__)[0] == "ContainerNotFound":
                raise
            raise PreconditionFailedError(
                f"key {key!r} in {self.config.url} does not exist, so it does not have "
                f"ETag {attrs.if_match!r}",
                key=key,
            ) from exc

    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        """Put Blob: the whole object in one request, its MD5 checked by the service.

        Raises:
            AlreadyExistsError: ``attrs.if_none_match`` and the key exists.
            PreconditionFailedError: ``attrs.if_match`` does not match.
            IntegrityError: the bytes arrived damaged (Content-MD5 mismatch).
        """
        lean = await self._lean_path()
        if lean is not None:
            return await self._lean_put(lean, key, data, attrs, checksums)
        blob = await self._blob(key)
        body = BufferBody(data)
        headers = {f"x-ms-meta-{n}": v for n, v in encode_metadata(attrs.metadata, key=key).items()}
        headers.update(_checksum_header(checksums))
        conditions = ModifiedAccessConditions(
            if_match=attrs.if_match, if_none_match="*" if attrs.if_none_match else None
        )
        content = BlobHTTPHeaders(blob_content_type=attrs.content_type)

        def keep(pipeline_response: Any, body: Any, response_headers: Any) -> Any:
            return response_headers

        # BlobClient.upload_blob takes only bytes (a copy of the buffer), which aiohttp
        # also warns about above 1 MiB; its Put Blob operation takes any body.
        operations: Any = blob._client.block_blob
        with self._write_errors("put", key, attrs):
            result = await self._write(
                lambda: operations.upload(
                    content_length=len(body),
                    body=body,
                    blob_http_headers=content,
                    modified_access_conditions=conditions,
                    headers=headers,
                    cls=keep,
                )
            )
        return WriteResult(etag=_etag(result["ETag"]), request_id=result.get("x-ms-request-id"))

    async def _lean_put(
        self,
        lean: LeanAzure,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        headers = {"x-ms-blob-type": "BlockBlob"}
        headers.update(
            (f"x-ms-meta-{n}", v) for n, v in encode_metadata(attrs.metadata, key=key).items()
        )
        if attrs.content_type:
            headers["x-ms-blob-content-type"] = attrs.content_type
        if attrs.if_match is not None:
            headers["if-match"] = attrs.if_match
        if attrs.if_none_match:
            headers["if-none-match"] = "*"
        headers.update(_checksum_header(checksums))
        with self._write_errors("put", key, attrs):
            response = await settled(
                lambda: self._lean_send(lean, "PUT", key, headers=headers, body=_byte_view(data))
            )
        return WriteResult(
            etag=_etag(response.headers.get("etag")),
            request_id=response.headers.get("x-ms-request-id"),
        )

    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        """Make an upload id: Azure has no "start" call, the blocks make the upload.

        The id is all an upload needs (block ids derive from it), so any
        AzureBackend on the same container can continue it. The write condition
        in ``attrs`` is checked, atomically, by `complete_upload`.
        """
        await self._client()
        return uuid.uuid4().hex

    def _check_upload(self, key: str, upload_id: str) -> None:
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            raise UploadNotFoundError(
                f"no upload {upload_id!r} for key {key!r} in {self.config.url}", key=key
            )

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        """Put Block: stage part ``number`` with its CRC-64, verified by the service.

        Raises:
            UploadNotFoundError: The upload id is not one of this backend's.
            IntegrityError: the bytes arrived damaged (CRC-64 or Content-MD5 mismatch).
        """
        self._check_upload(key, upload_id)
        if not 1 <= number <= self.capabilities.max_parts:
            raise InvalidArgumentError(
                f"part number {number} of upload {upload_id!r} for key {key!r} is not "
                f"between 1 and {self.capabilities.max_parts}",
                key=key,
            )
        view = _byte_view(data)
        name = block_id(upload_id, number)
        lean = await self._lean_path()
        if lean is not None:
            headers = _checksum_header(checksums)
            # The id as the SDK sends it (base64 of the name), so its commit finds the block.
            query = {"comp": "block", "blockid": base64.b64encode(name.encode()).decode()}
            with self._errors(f"stage block {number}", key):
                await settled(
                    lambda: self._lean_send(
                        lean, "PUT", key, query=query, headers=headers, body=view
                    )
                )
            return CompletedPart(number, offset, view.nbytes, etag=name, checksums=checksums)
        blob = await self._blob(key)
        body: Any = BufferBody(view)  # sent in slices, not copied (see BufferBody)
        with self._errors(f"stage block {number}", key):
            await self._write(
                lambda: blob.stage_block(
                    name, body, length=view.nbytes, headers=_checksum_header(checksums)
                )
            )
        return CompletedPart(number, offset, view.nbytes, etag=name, checksums=checksums)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        """Put Block List: commit the blocks in order with content type, metadata and condition.

        A commit that already happened (its response lost, the call retried) is
        recognised by the committed block list and reported as done.

        Raises:
            UploadNotFoundError: a block is missing (never staged, aborted or expired).
            AlreadyExistsError / PreconditionFailedError: the condition fails; the
                upload is then left for `abort_upload`.
        """
        self._check_upload(key, upload_id)
        blob = await self._blob(key)
        names = [block_id(upload_id, part.number) for part in parts]
        settings = ContentSettings(content_type=attrs.content_type) if attrs.content_type else None
        try:
            with self._write_errors("commit", key, attrs):
                result = await self._write(
                    lambda: blob.commit_block_list(
                        [BlobBlock(block_id=name) for name in names],
                        content_settings=settings,
                        metadata=encode_metadata(attrs.metadata, key=key),
                        **self._conditions(attrs),
                    )
                )
        except (AlreadyExistsError, PreconditionFailedError):
            committed = await self._committed_as(key, names)
            if committed is None:
                raise
            return committed
        return WriteResult(etag=_etag(result["etag"]), request_id=_request_id(result))

    async def _committed_as(self, key: str, names: Sequence[str]) -> WriteResult | None:
        """The blob at ``key`` if its committed blocks are exactly ``names`` (our own commit)."""
        blob = await self._blob(key)
        try:
            with self._errors("get block list", key):
                committed, _ = await blob.get_block_list("committed")
                if [block.id for block in committed] != list(names):
                    return None
                props = await blob.get_blob_properties()
        except NotFoundError:
            return None
        return WriteResult(etag=_etag(props.etag))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Discard the upload's staged blocks (and a blob its cancelled commit made); idempotent.

        See the module documentation for why an empty placeholder is committed
        and deleted, and when blocks are left to Azure's garbage collection.
        """
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            return
        blob = await self._blob(key)
        mine = f"{upload_id}-"
        try:
            with self._errors("abort upload", key):
                committed, uncommitted = await blob.get_block_list("all")
        except NotFoundError:
            return  # no blob and no staged block
        ours = [block for block in uncommitted if block.id.startswith(mine)]
        theirs = [block for block in uncommitted if not block.id.startswith(mine)]
        if ours and not theirs:
            await self._discard_blocks(key, upload_id)
        elif not uncommitted and committed and all(b.id.startswith(mine) for b in committed):
            await self._delete_if_ours(key, upload_id, committed_by_us=True)
        elif not uncommitted and not committed:
            await self._delete_if_ours(key, upload_id, committed_by_us=False)

    async def _discard_blocks(self, key: str, upload_id: str) -> None:
        blob = await self._blob(key)
        try:
            with self._errors("abort upload", key):
                placeholder = await blob.commit_block_list(
                    [],
                    metadata={_PLACEHOLDER: upload_id},
                    match_condition=MatchConditions.IfMissing,
                )
        except AlreadyExistsError:
            return  # a committed blob is there: its next write (or 7 days) ends the blocks
        await self._delete_etag(key, _etag(placeholder["etag"]))

    async def _delete_if_ours(self, key: str, upload_id: str, *, committed_by_us: bool) -> None:
        """Delete the blob at ``key`` if this upload made it (placeholder or cancelled commit)."""
        blob = await self._blob(key)
        try:
            with self._errors("abort upload", key):
                props = await blob.get_blob_properties()
        except NotFoundError:
            return
        if committed_by_us or (props.metadata or {}).get(_PLACEHOLDER) == upload_id:
            await self._delete_etag(key, _etag(props.etag))

    async def _delete_etag(self, key: str, etag: str) -> None:
        blob = await self._blob(key)
        with (
            contextlib.suppress(NotFoundError, PreconditionFailedError),
            self._errors("abort upload", key),
        ):
            await blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)

    # -- delete and copy -----------------------------------------------------------------------

    async def delete(self, key: str) -> None:
        """Delete Blob (with its snapshots); a missing key is not an error."""
        blob = await self._blob(key)
        with contextlib.suppress(NotFoundError), self._errors("delete", key):
            await blob.delete_blob(delete_snapshots="include")

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several blobs: Blob Batch under asyncio, 16 at a time otherwise."""
        names = list(dict.fromkeys(keys))
        if not names:
            return
        batch = sniffio.current_async_library() == "asyncio" and self.config.auth not in (
            "sas",
            "anonymous",
        )
        if not batch:
            limiter = anyio.CapacityLimiter(DELETE_CONCURRENCY)

            async def delete_one(key: str) -> None:
                async with limiter:
                    await self.delete(key)

            async with task_group() as tg:
                for key in names:
                    tg.start_soon(delete_one, key)
            return
        client = await self._client()
        for start in range(0, len(names), BATCH_SIZE):
            chunk = names[start : start + BATCH_SIZE]
            with self._errors("delete_many", chunk[0]):
                parts = await client.delete_blobs(
                    *[self._root + key for key in chunk],
                    delete_snapshots="include",
                    raise_on_any_failure=False,
                )
                responses = [part async for part in parts]
            for key, response in zip(chunk, responses, strict=False):
                if response.status_code in (200, 202, 404):
                    continue
                with self._errors("delete", key):
                    raise HttpResponseError(response=response)

    async def copy(self, src: str, dst: str) -> WriteResult:
        """Copy Blob from ``src`` to ``dst`` (metadata and content type included), awaited.

        Raises:
            NotFoundError: ``src`` does not exist.
        """
        source = await self._blob(src)
        target = await self._blob(dst)
        url = source.url
        if self.config.auth == "sas" and self.config.sas_token and "?" not in url:
            url = f"{url}?{self.config.sas_token}"
        with self._errors("copy", src):
            started = await target.start_copy_from_url(url)
        status = str(started.get("copy_status") or "success")
        copy_id = str(started.get("copy_id") or "")
        etag = _etag(started["etag"])
        delay = 0.05
        try:
            while status == "pending":
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
                with self._errors("copy", dst):
                    props = await target.get_blob_properties()
                status, etag = str(props.copy.status), _etag(props.etag)
                if status in ("failed", "aborted"):
                    raise StoreError(
                        f"copy of key {src!r} to {dst!r} in {self.config.url} {status}: "
                        f"{props.copy.status_description}",
                        key=dst,
                    )
        except BaseException:
            if status == "pending" and copy_id:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await target.abort_copy(copy_id)
            raise
        return WriteResult(etag=etag, request_id=_request_id(started))

    # -- listing (last: the method name shadows the builtin in the class body) ------------------

    async def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        """List Blobs under ``prefix`` in key order, 5,000 per request, with metadata.

        With a delimiter, names that have it after the prefix are rolled up
        into CommonPrefix entries by the service.
        """
        client = await self._client()
        full = self._root + prefix
        cut = len(self._root)
        with self._errors("list", prefix or None):
            if delimiter:
                pages = client.walk_blobs(
                    name_starts_with=full or None, delimiter=delimiter, include=["metadata"]
                ).by_page()
            else:
                pages = client.list_blobs(
                    name_starts_with=full or None, include=["metadata"]
                ).by_page()
        while True:
            with self._errors("list", prefix or None):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
                items = [item async for item in page]
            # A page holds its prefixes first, then its blobs: put them back in key order.
            entries: builtins.list[ObjectInfo | CommonPrefix] = []
            for item in items:
                name = str(item.name)[cut:]
                if isinstance(item, BlobPrefix):
                    entries.append(CommonPrefix(name))
                elif isinstance(item, BlobProperties):
                    entries.append(self._info(name, item))
            entries.sort(key=lambda e: e.prefix if isinstance(e, CommonPrefix) else e.key)
            for entry in entries:
                yield entry

    async def pending_uploads(self, prefix: str = "") -> builtins.list[tuple[str, str]]:
        """``(key, upload id)`` of the blocks staged under ``prefix`` on keys with no blob.

        The upload id comes from the block ids (``<upload id>-<part number>``).
        Blocks staged onto a key that has a committed blob are not listed: Azure
        keeps them with that blob until its next write, or for 7 days.
        """
        client = await self._client()
        full = self._root + prefix or None
        cut = len(self._root)
        with self._errors("list uncommitted blobs", prefix or None):
            committed = {b.name async for b in client.list_blobs(name_starts_with=full)}
            every = [
                b.name
                async for b in client.list_blobs(
                    name_starts_with=full, include=["uncommittedblobs"]
                )
            ]
        found: set[tuple[str, str]] = set()
        for name in every:
            if name in committed:
                continue
            key = name[cut:]
            try:
                with self._errors("list uncommitted blocks", key):
                    _, uncommitted = await (await self._blob(key)).get_block_list("uncommitted")
            except NotFoundError:
                continue  # committed or discarded since the listing
            found.update((key, str(block.id).rpartition("-")[0]) for block in uncommitted)
        return sorted(found)
