"""The aiobotocore S3 client: made lazily in the running event loop, closed by ``aclose``.

Constructing an `S3Backend` does no I/O. The
first operation makes the client, in a `LoopBound` (``asyncstore/_backend.py``,
shared by the cloud backends): once, under a lock so concurrent first calls share
one, in the event loop that then owns it (a call from another loop is a
ConfigurationError):

1. In a worker thread: the botocore session is created, the shared AWS config
   files are read, the region resolved (option, then AWS configuration, then
   ``us-east-1``) and botocore's JSON service models loaded. All of that is
   blocking file I/O that must not run on the event loop.
2. In the event loop: the client is created with an HTTP session for the
   running library (httpx under trio; under asyncio, aiohttp by default, see
   `ASYNCIO_DEFAULT`) and entered into an ``AsyncExitStack`` that
   ``aclose`` unwinds.
3. With the lean path (``_lean.py``), the client presigns the URL that tells
   the lean path where requests go, and is closed again at once: the session
   and the models it loaded are dropped, so that the garbage collector's full
   passes do not walk them (about 35,000 objects: a full pass took 45-55 ms
   with them and about 19 ms without, on a quiet machine). A request that only
   the SDK sends (a delete, a copy, a presigned URL...) makes the client again,
   once, the same way.

The client is configured for S3 and S3-compatible services alike:
``request_checksum_calculation`` / ``response_checksum_validation`` are
``"when_required"`` (services that reject the newest default checksums keep
working; asyncstore sends its own SHA-256 per request), payloads are not
SHA-256-signed a second time (``UNSIGNED-PAYLOAD``; the ``x-amz-checksum-sha256``
header, signed, carries the digest the core computed), and botocore's own
retries are off: the Store retries TransportErrors, once, with backoff.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Iterator
from typing import Any, Literal

import anyio
import anyio.to_thread

from ..._backend import LoopBound
from ..._errors import ConfigurationError
from ..._stream._tasks import Slots
from ._lean import LeanS3, parse_timestamp
from ._options import S3Options
from ._translate import s3_errors

__all__ = ["ASYNCIO_DEFAULT", "HttpClient", "S3ClientFactory", "current_library"]

#: Which HTTP library aiobotocore uses: "auto" picks per event loop.
HttpClient = Literal["auto", "aiohttp", "httpx"]

#: The HTTP session "auto" picks under asyncio (under trio only httpx runs).
#: Chosen by measurement: see docs/backends/s3.md and bench/s3.py.
ASYNCIO_DEFAULT: Literal["aiohttp", "httpx"] = "aiohttp"

#: Default number of requests in flight at once (parts and ranges of concurrent transfers).
DEFAULT_MAX_CONNECTIONS = 64
#: Connections kept free of the request limit, for the tag lookups a read makes while it
#: holds its own connection (so that reads that all hold one never wait for each other).
RESERVED_CONNECTIONS = 4


def current_library() -> str:
    """The async library running in this thread ("asyncio" or "trio")."""
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio, so only asyncio remains
        return "asyncio"
    return sniffio.current_async_library()


#: botocore's loggers that show a request's headers at DEBUG (aiobotocore logs through them).
REQUEST_LOGGERS = ("botocore.endpoint", "botocore.auth")
_SESSION_TOKEN = re.compile(r"(?i)(x-amz-security-token(?:'?:\s*b?'|:|=))([^'\s&]+)")


class SessionTokenFilter(logging.Filter):
    """Hides the ``X-Amz-Security-Token`` in botocore's DEBUG records of requests.

    botocore logs every request's headers ("Sending http request: ...") and
    canonical request ("CanonicalRequest: ...") at DEBUG, the session token of
    temporary credentials included. This filter, on those loggers only, replaces
    the token with ``***`` (the secret key itself is never logged; the access
    key id, in the ``Authorization`` header, is an identifier, not a secret).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _SESSION_TOKEN.sub(r"\1***", message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_TOKEN_FILTER = SessionTokenFilter()


def install_log_filter() -> None:
    """Put `SessionTokenFilter` on botocore's request loggers (once; idempotent)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _TOKEN_FILTER not in logger.filters:
            logger.addFilter(_TOKEN_FILTER)


#: The data files botocore reads to make an S3 client (loaded in the worker thread).
_CLIENT_DATA = ("_retry", "endpoints", "partitions", "sdk-default-configuration")
_CLIENT_MODELS = ("service-2", "endpoint-rule-set-1")


class _ServiceNames:
    """What botocore's loader asks of ``list_available_services``, one folder at a time.

    botocore checks ``service_name in known_services`` before it loads a model:
    this answers by looking in that service's folder only. Listed (for an error
    message), it is botocore's whole listing.
    """

    def __init__(self, loader: Any, type_name: str, listing: Any) -> None:
        self._loader = loader
        self._type_name = type_name
        self._listing = listing

    def __contains__(self, name: object) -> bool:
        from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
            DataNotFoundError,
        )

        if not isinstance(name, str):
            return False
        try:
            self._loader.determine_latest_version(name, self._type_name)
        except DataNotFoundError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._listing(self._type_name))


def _s3_loader(search_paths: str | None) -> Any:
    """botocore's data loader, checking that a service exists in that service's folder only.

    botocore's own loader lists every service's folder (over 400) once per kind
    of model loaded, to check that the one asked for is among them; this one
    looks in the folder of the service asked for (S3's, and STS's or SSO's when
    the credentials are an assumed role or single sign-on). Everything else
    (search paths, ``AWS_DATA_PATH``, ``~/.aws/models``, the newest API
    version) is botocore's.
    """
    from botocore.loaders import create_loader  # type: ignore[import-untyped,unused-ignore]

    loader = create_loader(search_paths)
    listing = loader.list_available_services
    loader.list_available_services = lambda type_name: _ServiceNames(loader, type_name, listing)
    return loader


def _prepare_session(options: S3Options) -> tuple[Any, str, list[Any]]:
    """Create the botocore session and do its blocking file I/O (runs in a worker thread).

    The modules the client needs are imported here too, not in the event loop.
    Returns the session, the region and the JSON data loaded (for `_release`).
    """
    import aiobotocore.config  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]

    install_log_filter()
    session = get_session()
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    profile = session.get_scoped_config()  # parses the shared config / credentials files once
    loader = _s3_loader(session.get_config_variable("data_path"))
    session.register_component("data_loader", loader)
    region = options.region or session.get_config_variable("region") or "us-east-1"
    # botocore's JSON models and data that making the client reads (not the paginators,
    # waiters and examples that aiobotocore's warm_up_loader_caches also loads).
    loaded = [loader.load_data_with_path(name)[0] for name in _CLIENT_DATA]
    for model in _CLIENT_MODELS:
        # Called as botocore's client creator calls it: the loader caches by arguments.
        loaded.append(loader.load_service_model("s3", model, api_version=None))
    # The credential chain makes clients of its own on the event loop (STS for an assumed
    # role, SSO for single sign-on): their models are read here, where reading blocks nothing.
    from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
        DataNotFoundError,
        UnknownServiceError,
    )

    for service in _credential_services(profile):
        for model in _CLIENT_MODELS:
            with contextlib.suppress(DataNotFoundError, UnknownServiceError):  # then: botocore's
                loader.load_service_model(service, model, api_version=None)
    return session, region, loaded


def _credential_services(profile: dict[str, Any]) -> list[str]:
    """The services whose clients the credential chain will make for ``profile``."""
    services = []
    if {"role_arn", "web_identity_token_file"} & profile.keys() or os.environ.get("AWS_ROLE_ARN"):
        services.append("sts")
    if {"sso_start_url", "sso_session"} & profile.keys():
        services += ["sso", "sso-oidc"]
    return services


def _release(loaded: list[Any]) -> None:
    """Empty the JSON data a dropped session loaded, so that it is freed now.

    A closed aiobotocore client lives on in reference cycles (its event hooks
    hold it) until a full pass of the garbage collector, and with it the
    dicts and lists of the models it was made from: about 34,000 objects,
    23,000 of them botocore's ``endpoints`` data. Emptied, they are freed at
    once by reference counting, and that pass finds 6,400 objects, not 34,000.
    Only for a session nothing can use again (see `S3ClientFactory._create`).
    """
    for data in loaded:
        data.clear()


class S3ClientFactory:
    """Makes (once) and closes the aiobotocore S3 client of one backend, and the lean path.

    With the lean path (the default), the SDK client made at set-up only
    presigns the URL that tells the lean path where requests go; then it is
    closed and the botocore session dropped, with the S3 service model and
    endpoint rules it loaded (some 35,000 objects that every full pass of the
    garbage collector would walk). The SDK client is made again, once, when a
    request the lean path does not send first needs it (`get`).

    Args:
        options: The store's options (region, endpoint, addressing style).
        http_client: "auto", "aiohttp" (asyncio only) or "httpx".
        max_connections: Size of the HTTP connection pool.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for bytes of a response.
        lean: Whether to send the requests that carry the bytes on the lean path.
    """

    def __init__(
        self,
        options: S3Options,
        *,
        http_client: HttpClient = "auto",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        lean: bool = True,
    ) -> None:
        if http_client not in ("auto", "aiohttp", "httpx"):
            raise ConfigurationError(
                f"http_client must be 'auto', 'aiohttp' or 'httpx', not {http_client!r}",
                key="http_client",
            )
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigurationError(
                f"max_connections must be an integer >= 1, not {max_connections!r}",
                key="max_connections",
            )
        self._options = options
        self._http_client = http_client
        self._max_connections = max_connections
        self._timeouts = (connect_timeout, read_timeout)
        # A closed factory makes a new client on the next call (in any event loop).
        #: The set-up: the lean path, or else the SDK client (which then sends everything).
        self._base: LoopBound[_Base] = LoopBound("S3", options.url, self._create, reopen=True)
        #: The SDK client beside the lean path, made when a request first needs it.
        self._sdk: LoopBound[Any] = LoopBound("S3", options.url, self._create_sdk, reopen=True)
        #: Limits the requests in flight to ``max_connections``, made with the client.
        self.slots: Slots | None = None
        #: The HTTP library of the client made ("aiohttp" or "httpx"), once made.
        self.http_library: str | None = None
        #: The region the client signs for, once made.
        self.region: str | None = None
        self._lean_wanted = lean
        #: The lean request path, once the client is made (None: the SDK sends all).
        self.lean: LeanS3 | None = None

    def _session_for(self, library: str) -> Literal["aiohttp", "httpx"]:
        if self._http_client == "auto":
            return "httpx" if library != "asyncio" else ASYNCIO_DEFAULT
        if self._http_client == "aiohttp" and library != "asyncio":
            raise ConfigurationError(
                f"http_client='aiohttp' runs only under asyncio, not {library}; "
                "use 'httpx' or 'auto'",
                key="http_client",
            )
        return self._http_client

    async def ready(self) -> None:
        """Set up, in the running event loop, what every request needs (once).

        That is the lean path (or the SDK client where there is none), the
        limit of requests in flight and the region.

        Raises:
            ConfigurationError: The client was made in another event loop.
        """
        await self._base.get()

    async def get(self) -> Any:
        """The SDK client, made on first use in the running event loop.

        Raises:
            ConfigurationError: The client was made in another event loop.
        """
        base = await self._base.get()
        if base.client is not None:
            return base.client
        return await self._sdk.get()

    @property
    def sdk_client_open(self) -> bool:
        """Whether an SDK client is open now (it is not, beside the lean path, until a
        request the lean path does not send needs it)."""
        base = self._base.value
        return base is not None and (base.client is not None or self._sdk.value is not None)

    def _where(self) -> contextlib.AbstractContextManager[None]:
        bucket, url = self._options.bucket, self._options.url
        return s3_errors("opening the client", key=None, bucket=bucket, location=url)

    async def _enter_client(
        self, session: Any, region: str, name: str, stack: contextlib.AsyncExitStack
    ) -> Any:
        """Make the SDK client with ``session`` (its exit on ``stack``)."""
        # Imported by _prepare_session in the worker thread: this is a lookup.
        from aiobotocore.config import AioConfig  # type: ignore[import-untyped,unused-ignore]

        options = self._options
        connect_timeout, read_timeout = self._timeouts
        extra: dict[str, Any] = {}
        if name == "httpx":
            from aiobotocore.httpxsession import (  # type: ignore[import-untyped,unused-ignore]
                HttpxSession,
            )

            extra["http_session_cls"] = HttpxSession
            # Waiting for a free pooled connection is backpressure, not a failure.
            extra["connector_args"] = {"pool_timeout": None, "write_timeout": read_timeout}
            # The clients the credential chain makes (STS for an assumed role) too: under
            # trio, aiobotocore's default (aiohttp) cannot run.
            session.set_default_client_config(AioConfig(http_session_cls=HttpxSession))
        s3_config: dict[str, Any] = {"payload_signing_enabled": False}
        if options.use_path_style is not None:
            s3_config["addressing_style"] = "path" if options.use_path_style else "virtual"
        config = AioConfig(
            region_name=region,
            signature_version="s3v4",
            s3=s3_config,
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=self._max_connections + RESERVED_CONNECTIONS,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
            **extra,
        )
        return await stack.enter_async_context(
            session.create_client("s3", endpoint_url=options.endpoint, config=config)
        )

    async def _create(self, stack: contextlib.AsyncExitStack) -> _Base:
        name = self._session_for(current_library())
        connect_timeout, read_timeout = self._timeouts
        sdk = contextlib.AsyncExitStack()  # the SDK client's own exit: closed early with lean
        stack.push_async_callback(sdk.aclose)
        with self._where():
            session, region, loaded = await anyio.to_thread.run_sync(
                _prepare_session, self._options
            )
            client = await self._enter_client(session, region, name, sdk)
        slots = Slots(self._max_connections)
        if self._lean_wanted:
            with self._where():
                lean = await LeanS3.setup(
                    client,
                    await session.get_credentials(),
                    self._options.bucket,
                    region,
                    limiter=slots,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                )
            if lean is not None:
                # Closed with the client (again if the backend dropped it already: idempotent).
                stack.push_async_callback(lean.aclose)
                # The SDK client has done its part: drop it and the session's models (made
                # again when a request needs them: `get`).
                await sdk.aclose()
                client = None
                if not lean.refreshes:  # refreshable credentials may make STS clients with it
                    _release(loaded)
            self.lean = lean
        self.slots = slots
        self.http_library = name
        self.region = region
        return _Base(client)

    async def _create_sdk(self, stack: contextlib.AsyncExitStack) -> Any:
        """The SDK client beside the lean path (its set-up done: the region is known)."""
        assert self.region is not None
        assert self.http_library is not None
        with self._where():
            session, _, _ = await anyio.to_thread.run_sync(_prepare_session, self._options)
            return await self._enter_client(session, self.region, self.http_library, stack)

    async def aclose(self) -> None:
        """Close the client and its connections; the next call makes a new one."""
        self.slots = None
        self.lean = None  # closed by the client's exit stack
        await self._sdk.aclose()
        await self._base.aclose()


@dataclasses.dataclass(slots=True)
class _Base:
    """What the set-up made: the SDK client, or None when the lean path sends the
    requests and the SDK client is made on demand."""

    client: Any
