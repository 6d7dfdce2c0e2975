"""Tests of the S3 backend against a real S3 server (moto's server mode), under asyncio and trio.

A session fixture starts moto in a child process on 127.0.0.1 (see
``asyncstore.testing.emulators``), sets fake credentials in the environment (the standard
AWS chain reads them) and creates the buckets with boto3. Nothing in botocore
is mocked: every request goes over HTTP to the server.

moto gaps, checked here by recording the headers asyncstore sends (a botocore
``before-send`` event hook on the client) instead of by the server's answer:

* moto does not verify ``x-amz-checksum-sha256`` (it only echoes it);
* moto ignores ``If-Match`` on CompleteMultipartUpload (it honours
  ``If-None-Match: *`` there, and both headers on PutObject);
* moto never answers 409 ConditionalRequestConflict, throttling or 5xx, and does
  not enforce permissions: those translations are tested on botocore's own
  ClientError objects;
* moto answers UploadPart / CompleteMultipartUpload for an unknown upload with a
  500 (not NoSuchUpload), and an abort racing with a part it is still receiving
  can fail with a 500 (the backend repeats the abort; the cancellation tests
  cover it).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import functools
import gc
import hashlib
import http.server
import io
import json
import os
import re
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import botocore.exceptions
import google_crc32c
import httpx
import pytest
from _servers import BUCKET, S3Server
from boto3.s3.transfer import TransferConfig
from hypothesis import given
from hypothesis import strategies as st

from asyncstore import (
    AlreadyExistsError,
    CommonPrefix,
    ConfigurationError,
    ConnectionError,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidRangeError,
    NotFoundError,
    ObjectInfo,
    PermissionDeniedError,
    PreconditionFailedError,
    RetryPolicy,
    Store,
    StoreError,
    TimeoutError,
    TransportError,
    UploadNotFoundError,
    WriteAttributes,
    open_store,
    open_store_async,
)
from asyncstore._backend import MiB
from asyncstore.backends.s3 import ETAG_TAG, SHA256_TAG, S3Backend, from_url
from asyncstore.backends.s3._body import S3ReadStream
from asyncstore.backends.s3._client import ASYNCIO_DEFAULT
from asyncstore.backends.s3._translate import translate
from asyncstore.testing import (
    FaultProxy,
    Seen,
    StoreConformance,
    pattern,
    pattern_chunks,
    sha256_of,
)

pytestmark = [
    pytest.mark.anyio,
    # aiobotocore warns once that it prefers httpx2 over the legacy httpx package.
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]

MISSING_BUCKET = "asyncstore-no-such-bucket"


# -- the server ------------------------------------------------------------------------------


@pytest.fixture
def prefix(s3: S3Server) -> Iterator[str]:
    """A fresh key prefix, emptied after the test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    s3.clean(name + "/")


@pytest.fixture
async def backend(s3: S3Server, prefix: str) -> AsyncIterator[S3Backend]:
    backend = s3.backend(prefix)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def store(backend: S3Backend) -> AsyncIterator[Store]:
    async with Store(backend, chunk_size=5 * MiB) as store:
        yield store


class Recorder:
    """The requests a test sent to moto, as the session's SigV4Proxy saw them (whichever
    path sent them, the lean one or aiobotocore): what moto cannot show by its answers,
    the headers can."""

    def __init__(self, s3: S3Server) -> None:
        self._proxy = s3.proxy
        self._start = len(s3.proxy.sent)

    @property
    def requests(self) -> list[tuple[str, dict[str, str], bytes]]:
        return [(s.operation, s.headers, s.body) for s in self._proxy.sent[self._start :]]

    def of(self, operation: str) -> list[dict[str, str]]:
        return [headers for op, headers, _ in self.requests if op == operation]

    def bodies(self, operation: str) -> list[bytes]:
        return [body for op, _, body in self.requests if op == operation]


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def b64crc32c(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the conformance suite -------------------------------------------------------------------


class TestS3Conformance(StoreConformance):
    """The whole asyncstore.testing suite, on a fresh prefix of the moto bucket per test."""

    # Measured: the streamed 1 GiB round trip takes 120-180 s per event loop against moto
    # (the put ~21 s; the ranged download ~156 s, because moto reads the whole multipart
    # object for every ranged GET), far over a minute. 256 MiB takes ~11 s per loop and
    # still needs 32 parts and 32 ranges of 8 MiB.
    large_size = 256 * MiB

    @pytest.fixture
    async def store(self, s3: S3Server, prefix: str) -> AsyncIterator[Store]:
        async with Store(s3.backend(prefix)) as store:
            yield store

    async def leftovers(self, store: Store) -> list[str]:
        assert isinstance(store.backend, S3Backend)
        return [f"{key} ({upload_id})" for key, upload_id in await store.backend.pending_uploads()]


# -- URLs and options ------------------------------------------------------------------------


def test_url_gives_bucket_prefix_and_options() -> None:
    backend = from_url(
        urlsplit(
            "s3://my-bucket/some/prefix/?region=eu-west-1&endpoint=http://127.0.0.1:9000"
            "&use_path_style=true&concurrency=8&part_size_mb=16"
        )
    )
    options = backend.options
    assert (options.bucket, options.prefix) == ("my-bucket", "some/prefix")
    assert options.region == "eu-west-1"
    assert options.endpoint == "http://127.0.0.1:9000"
    assert options.use_path_style is True
    assert backend.default_max_concurrency == 8
    assert backend.default_chunk_size == 16 * MiB


def test_url_defaults() -> None:
    backend = from_url(urlsplit("s3://bucket"))
    assert backend.options.prefix == ""
    assert backend.options.region is None  # resolved from the AWS chain at first use
    assert backend.options.endpoint is None
    assert backend.options.use_path_style is None
    assert backend.default_max_concurrency is None
    assert backend.default_chunk_size is None


def test_url_prefix_is_percent_decoded_and_stripped() -> None:
    assert from_url(urlsplit("s3://bucket//a%20b/c//")).options.prefix == "a b/c"
    assert from_url(urlsplit("s3://bucket/")).options.prefix == ""


def test_keyword_options_equal_url_options() -> None:
    backend = from_url(
        urlsplit("s3://bucket/p"),
        region="us-west-2",
        endpoint="https://s3.example.com",
        use_path_style=False,
        concurrency=100,
        part_size_mb=5120,
    )
    assert backend.options.region == "us-west-2"
    assert backend.options.endpoint == "https://s3.example.com"
    assert backend.options.use_path_style is False
    assert backend.default_max_concurrency == 100
    assert backend.default_chunk_size == 5120 * MiB


@pytest.mark.parametrize("value", ["true", "TRUE", "false", "False"])
def test_use_path_style_accepts_true_and_false(value: str) -> None:
    backend = from_url(urlsplit(f"s3://bucket?use_path_style={value}"))
    assert backend.options.use_path_style is (value.lower() == "true")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("s3://bucket?colour=blue", "colour"),
        ("s3://bucket?region=", "region"),
        ("s3://bucket?region=EU_WEST", "region"),
        ("s3://bucket?endpoint=ftp://host", "endpoint"),
        ("s3://bucket?endpoint=http://", "endpoint"),
        ("s3://bucket?endpoint=http://host/path", "endpoint"),
        ("s3://bucket?endpoint=http://key:secret@host", "endpoint"),
        ("s3://bucket?endpoint=http://host:99999", "endpoint"),
        ("s3://bucket?use_path_style=yes", "use_path_style"),
        ("s3://bucket?use_path_style=1", "use_path_style"),
        ("s3://bucket?concurrency=0", "concurrency"),
        ("s3://bucket?concurrency=101", "concurrency"),
        ("s3://bucket?concurrency=eight", "concurrency"),
        ("s3://bucket?concurrency=-1", "concurrency"),
        ("s3://bucket?part_size_mb=4", "part_size_mb"),
        ("s3://bucket?part_size_mb=5121", "part_size_mb"),
        ("s3://bucket?part_size_mb=1.5", "part_size_mb"),
        ("s3://bucket?region=us-east-1&region=eu-west-1", "region"),
    ],
)
def test_bad_url_option_is_a_configuration_error_naming_it(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        from_url(urlsplit(url))
    assert named in str(info.value)
    assert info.value.key == named


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"colour": "blue"}, "colour"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 0}, "concurrency"),
        ({"part_size_mb": 4}, "part_size_mb"),
        ({"use_path_style": "maybe"}, "use_path_style"),
        ({"region": 42}, "region"),
        ({"endpoint": "127.0.0.1:9000"}, "endpoint"),
    ],
)
def test_bad_keyword_option_is_a_configuration_error_naming_it(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        from_url(urlsplit("s3://bucket"), **options)


def test_option_in_url_and_keyword_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="both in the URL"):
        from_url(urlsplit("s3://bucket?region=eu-west-1"), region="eu-west-1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://AKIA:secret@bucket/p", "credentials"),
        ("s3://bucket:9000/p", "port"),
        ("s3:///prefix", "bucket"),
        ("s3://b/p", "bucket name"),
        ("s3://Upper-Case/p", "bucket name"),
        ("s3://-bucket/p", "bucket name"),
        ("s3://bucket/a/../b", "prefix"),
        ("s3://bucket/a/./b", "prefix"),
        ("s3://bucket/a%00b", "prefix"),
        ("s3://bucket/p#frag", "fragment"),
        ("s3://bucket/p?region", "region"),
    ],
)
def test_bad_url_is_rejected(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        from_url(urlsplit(url))
    assert "secret" not in str(info.value)
    assert "secret" not in str(info.value.key)


def test_open_store_builds_an_s3_backend() -> None:
    store = open_store("s3://bucket/prefix?region=eu-central-1&concurrency=4&part_size_mb=8")
    assert isinstance(store.backend, S3Backend)
    assert store.backend.options.prefix == "prefix"
    assert store.backend.default_max_concurrency == 4
    assert store.backend.default_chunk_size == 8 * MiB
    assert "s3://bucket/prefix" in repr(store)


def test_constructing_a_backend_does_no_io() -> None:
    backend = S3Backend("bucket", "p", endpoint="http://127.0.0.1:1")  # nothing listens there
    assert backend.http_library is None


# -- the client ------------------------------------------------------------------------------


async def test_client_is_made_lazily_per_event_loop_and_closed(
    s3: S3Server, prefix: str, anyio_backend: str
) -> None:
    backend = s3.backend(prefix)
    assert backend.http_library is None
    await backend.put("k", memoryview(b"v"), WriteAttributes(), {})
    assert backend.http_library == ("httpx" if anyio_backend == "trio" else ASYNCIO_DEFAULT)
    await backend.aclose()
    assert backend.http_library is not None
    assert (await backend.head("k")).size == 1  # a closed backend makes a new client
    await backend.aclose()


async def test_concurrent_first_calls_share_one_client(s3: S3Server, prefix: str) -> None:
    backend = s3.backend(prefix)
    clients: list[Any] = []

    async def first() -> None:
        clients.append(await backend.client())

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(first)
    assert len({id(client) for client in clients}) == 1
    await backend.aclose()


@dataclasses.dataclass
class PreparedSession:
    """A botocore session the S3 set-up prepared: a weak reference, and the JSON data loaded."""

    session: weakref.ref[Any]
    data: list[Any]


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> list[PreparedSession]:
    """Every botocore session the S3 backend prepares from now on, in order."""
    from asyncstore.backends.s3 import _client

    made: list[PreparedSession] = []
    prepare = _client._prepare_session

    def spied(options: Any) -> tuple[Any, str, list[Any]]:
        session, region, data = prepare(options)
        made.append(PreparedSession(weakref.ref(session), data))
        return session, region, data

    monkeypatch.setattr(_client, "_prepare_session", spied)
    return made


async def test_beside_the_lean_path_the_sdk_client_is_made_only_when_a_request_needs_it(
    s3: S3Server, prefix: str, prepared: list[PreparedSession]
) -> None:
    """The set-up's botocore session (with the S3 model and endpoint rules it loaded: some
    35,000 objects every full garbage collection walks) is dropped once the lean path is
    made; a request only the SDK sends makes the client again, once."""
    backend = s3.backend(prefix)
    factory = backend._clients
    async with Store(backend, chunk_size=5 * MiB) as store:
        await store.put("small", b"v")
        await store.put("large", pattern(11 * MiB, seed=5))  # multipart, tagged
        assert (await store.head("small")).size == 1
        assert len(await store.get("large")) == 11 * MiB
        assert [info.key async for info in store.list()] == ["large", "small"]
        assert factory.lean is not None
        assert not factory.sdk_client_open
        # Emptied, so freed at once, not left in the closed client's cycles for the collector.
        assert prepared[0].data and not any(prepared[0].data)
        gc.collect()
        assert len(prepared) == 1 and prepared[0].session() is None  # its models went with it

        await store.delete("small")  # DeleteObject: the SDK's
        await store.delete("large")
        assert factory.sdk_client_open
        assert len(prepared) == 2 and prepared[1].session() is not None  # made once, and kept
        assert all(prepared[1].data)
        assert not await store.exists("small")
    assert not factory.sdk_client_open


async def test_assumed_role_credentials_work_and_refresh_through_the_set_up_session(
    s3: S3Server,
    prefix: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    blockbuster: Any,
    prepared: list[PreparedSession],
) -> None:
    """A profile that assumes a role makes the session create an STS client (the loader
    once knew only S3's folder: "Unknown service: 'sts'"); such credentials refresh through
    that session, so its data is kept whole. moto answers STS at its own endpoint; the
    role's 900 s are within botocore's refresh window, so each ask refreshes them.

    aiobotocore's credential chain reads the source profile's credentials file on the
    event loop, in its own code (``raw_config_parse``): that read is let through here;
    the STS models, which it would also read there, are loaded in the set-up's thread.
    """
    (tmp_path / "config").write_text(
        "[profile assumer]\nrole_arn = arn:aws:iam::123456789012:role/asyncstore\n"
        "source_profile = base\nduration_seconds = 900\nregion = us-east-1\n"
    )
    (tmp_path / "credentials").write_text(
        "[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = base-secret\n"
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_PROFILE", "assumer")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3.moto_endpoint)
    for call in ("os.stat", "io.BufferedReader.read", "io.TextIOWrapper.read"):
        blockbuster.functions[call].can_block_in("botocore/configloader.py", "raw_config_parse")
    backend = S3Backend(BUCKET, prefix, endpoint=s3.moto_endpoint)  # moto checks no signature
    async with Store(backend) as store:
        await store.put("k", b"assumed")
        assert await store.get("k") == b"assumed"
        lean = backend._clients.lean
        assert lean is not None
        assert lean.refreshes
        assert all(prepared[0].data)  # kept whole: the refreshes make STS clients with it
        first = await lean._credentials.get_frozen_credentials()
        second = await lean._credentials.get_frozen_credentials()
        assert first.access_key != second.access_key  # refreshed, through STS
        assert "AKIDBASE" not in (first.access_key, second.access_key)  # the role's keys
        await store.delete("k")


class CredentialService:
    """Credentials served on 127.0.0.1 as AWS serves them, from a thread: to containers
    (ECS, EKS Pod Identity: ``GET /creds``, with an ``Authorization`` token when one is set)
    and to EC2 instances (IMDSv2: ``PUT /latest/api/token``, then the role's name and its
    credentials, each asked with that token).

    Every answer of credentials gives new keys (``ASIA...n``) that expire ``lifetime``
    seconds later; their secrets go into ``secrets`` (for `SigV4Proxy`, which checks the
    signatures with them). A request without what AWS requires is answered 401 and kept in
    ``refused``.
    """

    ROLE = "asyncstore-role"

    def __init__(self) -> None:
        self.lifetime = 900
        self.authorization: str | None = None
        #: What each answer of credentials gave: (access key, secret, token).
        self.served: list[tuple[str, str, str]] = []
        self.secrets: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # a connection that stalls does not hold a thread for longer

            def do_GET(self) -> None:
                owner._answer(self)

            def do_PUT(self) -> None:
                owner._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        serve = functools.partial(self.server.serve_forever, poll_interval=0.05)
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def _credentials(self) -> dict[str, str]:
        with self._lock:
            n = len(self.served) + 1
            keys = (f"ASIASERVED{n:06d}", f"served-secret-{n}", f"served-token-{n}")
            self.served.append(keys)
            self.secrets[keys[0]] = keys[1]
        expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=self.lifetime
        )
        return {
            "AccessKeyId": keys[0],
            "SecretAccessKey": keys[1],
            "Token": keys[2],
            "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        method, path, headers = handler.command, handler.path, handler.headers
        if path.startswith("http://"):  # absolute-form, as aiobotocore's httpx session sends
            path = urlsplit(path).path
        with self._lock:
            self.requests.append((method, path))
        roles = "/latest/meta-data/iam/security-credentials/"
        body: str | None = None
        if method == "GET" and path == "/creds":
            if headers.get("Authorization") == self.authorization:
                body = json.dumps(self._credentials())
        elif method == "PUT" and path == "/latest/api/token":
            ttl = headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if ttl.isdigit() and 1 <= int(ttl) <= 21600:
                body = f"imds-token-{uuid.uuid4().hex}"
                with self._lock:
                    self._tokens.add(body)
        elif method == "GET" and headers.get("X-aws-ec2-metadata-token") in self._tokens:
            if path == roles:
                body = self.ROLE
            elif path == roles + self.ROLE:
                body = json.dumps({"Code": "Success", "Type": "AWS-HMAC", **self._credentials()})
        if body is None:
            with self._lock:
                self.refused.append(f"{method} {path}")
            handler.send_error(401)
            return
        data = body.encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


@pytest.fixture
def credential_service(
    s3: S3Server, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, blockbuster: Any
) -> Iterator[CredentialService]:
    """A `CredentialService`, and an environment in which nothing else gives credentials:
    no keys, no profile, empty configuration files; the metadata services to be pointed at
    it by the test. The moto proxy checks signatures with the secrets it serves.

    The providers that come before the metadata services in aiobotocore's chain
    (``AioSharedCredentialProvider.load``, ``AioConfigProvider.load``,
    ``AioBotoProvider.load``) look for their files on the event loop, in botocore's code
    (``raw_config_parse``): those calls are let through here, as in the assumed-role test.
    """
    for call in ("os.stat", "io.BufferedReader.read", "io.TextIOWrapper.read"):
        blockbuster.functions[call].can_block_in("botocore/configloader.py", "raw_config_parse")
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CREDENTIAL_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        "AWS_EC2_METADATA_V1_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "BOTO_CONFIG"):
        monkeypatch.setenv(name, str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # the IMDS test turns it on
    service = CredentialService()
    assert s3.proxy is not None
    monkeypatch.setattr(s3.proxy, "secrets", service.secrets)
    try:
        yield service
    finally:
        service.close()


def signed_with(recorder: Recorder) -> list[tuple[str, str]]:
    """The access key and session token of each request recorded (in order)."""
    keys = []
    for _, headers, _ in recorder.requests:
        match = re.search(r"Credential=([^/]+)/", headers.get("authorization", ""))
        assert match is not None, headers
        keys.append((match[1], headers.get("x-amz-security-token", "")))
    return keys


def one_http_client_under_trio(anyio_backend: str, http_client: str) -> None:
    if anyio_backend == "trio" and http_client != "auto":
        pytest.skip("under trio, 'auto' is httpx")


@pytest.mark.parametrize("http_client", ["auto", "httpx"])
@pytest.mark.parametrize("authorization", [None, "token", "token file"])
async def test_container_credentials_work_and_refresh(
    s3: S3Server,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    credential_service: CredentialService,
    anyio_backend: str,
    http_client: str,
    authorization: str | None,
    tmp_path: Any,
    blockbuster: Any,
) -> None:
    """Credentials from the container credentials endpoint (ECS; with an authorization
    token, from the environment or, as EKS Pod Identity gives it, from a file) sign the lean
    path's requests and the SDK's, with aiohttp under asyncio, and with httpx under asyncio
    and trio (the set-up makes httpx the session's default, so that aiobotocore picks its
    anyio providers). Their 900 s are within botocore's refresh window, so each ask fetches
    new keys from the endpoint, and the next request is signed with them.

    aiobotocore's provider reads the token file on the event loop before each fetch, in
    botocore's code (``ContainerProvider._build_headers``, called by the ``fetch_creds`` of
    ``AioContainerProvider._create_fetcher``): that read is let through here.
    """
    one_http_client_under_trio(anyio_backend, http_client)
    service = credential_service
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"{service.url}/creds")
    if authorization == "token":
        service.authorization = "Bearer ecs-token"
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", service.authorization)
    elif authorization == "token file":
        service.authorization = "Bearer eks-pod-identity-token"
        (tmp_path / "token").write_text(service.authorization)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(tmp_path / "token"))
        blockbuster.functions["io.TextIOWrapper.read"].can_block_in(
            "botocore/credentials.py", "_build_headers"
        )
    recorder = Recorder(s3)
    # Through the proxy: the signatures are checked with the secrets served.
    backend = s3.backend(prefix, http_client=http_client)
    async with Store(backend) as store:
        await store.put("k", b"container")
        assert await store.get("k") == b"container"
        lean = backend._clients.lean
        assert lean is not None and lean.refreshes
        # aiobotocore's anyio credentials (and providers) with httpx, its asyncio ones else.
        anyio_chain = type(lean._credentials).__name__.startswith("Anyio")
        assert anyio_chain == (backend.http_library == "httpx")
        fetched = len(service.served)
        first = await lean._credentials.get_frozen_credentials()
        second = await lean._credentials.get_frozen_credentials()
        assert len(service.served) == fetched + 2  # each ask fetched them again
        assert [first[:3], second[:3]] == service.served[-2:]
        assert await store.get("k") == b"container"
        assert signed_with(recorder)[-1] == service.served[-1][::2]  # the keys fetched for it
        await store.delete("k")  # the SDK's client: a chain of its own, the same endpoint
    assert not service.refused
    assert all(key in service.secrets for key, _ in signed_with(recorder))
    assert ("DeleteObject", service.served[-1][::2]) in [
        (operation, keys)
        for (operation, _, _), keys in zip(recorder.requests, signed_with(recorder), strict=True)
    ]


@pytest.mark.parametrize("http_client", ["auto", "httpx"])
async def test_instance_metadata_credentials_work_and_refresh(
    s3: S3Server,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    credential_service: CredentialService,
    anyio_backend: str,
    http_client: str,
) -> None:
    """Credentials from EC2's instance metadata service (IMDSv2: a session token, then the
    role's credentials) sign the lean path's requests and the SDK's, with aiohttp under
    asyncio, and with httpx (aiobotocore's anyio fetcher) under asyncio and trio.

    botocore pushes the expiry of instance credentials that expire within 17-25 minutes
    further off (it takes them for an outage of the service), so these last 6 hours, as
    AWS's do, and the clock of the lean path's credentials is moved on to 12 minutes before
    their expiry: each ask then fetches new ones, and the next request is signed with them.
    """
    one_http_client_under_trio(anyio_backend, http_client)
    service = credential_service
    service.lifetime = 6 * 3600
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", service.url)
    recorder = Recorder(s3)
    backend = s3.backend(prefix, http_client=http_client)
    async with Store(backend) as store:
        await store.put("k", b"instance")
        assert await store.get("k") == b"instance"
        lean = backend._clients.lean
        assert lean is not None and lean.refreshes
        # aiobotocore's anyio credentials (and providers) with httpx, its asyncio ones else.
        anyio_chain = type(lean._credentials).__name__.startswith("Anyio")
        assert anyio_chain == (backend.http_library == "httpx")
        assert len(service.served) == 1  # fetched once: far from their expiry
        assert set(signed_with(recorder)) == {service.served[0][::2]}
        clock = lean._credentials._time_fetcher
        later = datetime.timedelta(seconds=service.lifetime - 12 * 60)
        lean._credentials._time_fetcher = lambda: clock() + later
        first = await lean._credentials.get_frozen_credentials()
        second = await lean._credentials.get_frozen_credentials()
        assert len(service.served) == 3  # each ask fetched them again
        assert [first[:3], second[:3]] == service.served[-2:]
        assert await store.get("k") == b"instance"
        assert signed_with(recorder)[-1] == service.served[-1][::2]
        await store.delete("k")  # the SDK's client: a chain of its own, the same service
    assert not service.refused
    assert ("PUT", "/latest/api/token") in service.requests  # IMDSv2 (v1's GETs are refused)
    assert ("DeleteObject", service.served[-1][::2]) in [
        (operation, keys)
        for (operation, _, _), keys in zip(recorder.requests, signed_with(recorder), strict=True)
    ]


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
async def test_each_http_library_works(
    s3: S3Server, prefix: str, anyio_backend: str, http_client: str
) -> None:
    if http_client == "aiohttp" and anyio_backend == "trio":
        backend = s3.backend(prefix, http_client="aiohttp")
        with pytest.raises(ConfigurationError, match="only under asyncio"):
            await backend.head("k")
        return
    data = pattern(11 * MiB, seed=4)
    async with Store(s3.backend(prefix, http_client=http_client), chunk_size=5 * MiB) as store:
        await store.put("k", data)
        assert await store.get("k") == data
        assert store.backend.http_library == http_client  # type: ignore[attr-defined]


def test_unknown_http_client_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="http_client"):
        S3Backend("bucket", http_client="requests")  # type: ignore[arg-type]


# -- keys and prefixes -----------------------------------------------------------------------


async def test_keys_live_under_the_prefix_and_list_is_relative(
    s3: S3Server, store: Store, prefix: str
) -> None:
    s3.boto.put_object(Bucket=BUCKET, Key=f"{prefix}x/outside", Body=b"sibling prefix")
    s3.boto.put_object(Bucket=BUCKET, Key=f"{prefix}-other", Body=b"sibling key")
    await store.put("a/b.txt", b"1")
    await store.put("c", b"2")
    assert sorted(s3.keys(prefix)) == sorted(
        [f"{prefix}/a/b.txt", f"{prefix}/c", f"{prefix}x/outside", f"{prefix}-other"]
    )
    listed = [entry async for entry in store.list()]
    assert [e.key for e in listed if isinstance(e, ObjectInfo)] == ["a/b.txt", "c"]
    top = [entry async for entry in store.list(delimiter="/")]
    assert top[0] == CommonPrefix("a/")
    assert [e.key for e in top[1:] if isinstance(e, ObjectInfo)] == ["c"]
    s3.clean(f"{prefix}x/")
    s3.clean(f"{prefix}-other")


async def test_empty_prefix_gives_bare_keys(s3: S3Server, prefix: str) -> None:
    async with Store(s3.backend("")) as store:
        await store.put(f"{prefix}/bare", b"x")
        assert s3.keys(f"{prefix}/") == [f"{prefix}/bare"]
        listed = [entry async for entry in store.list(f"{prefix}/")]
        assert [e.key for e in listed if isinstance(e, ObjectInfo)] == [f"{prefix}/bare"]


async def test_list_entries_carry_size_etag_and_time(store: Store) -> None:
    result = await store.put("k", b"12345")
    (entry,) = [entry async for entry in store.list()]
    assert isinstance(entry, ObjectInfo)
    assert (entry.key, entry.size, entry.etag) == ("k", 5, result.etag)
    assert entry.last_modified is not None
    # Parsed by asyncstore's parser (datetime's UTC), not botocore's (dateutil's tzutc).
    assert entry.last_modified.tzinfo is datetime.timezone.utc
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - entry.last_modified).total_seconds()) < 3600


# -- reads -----------------------------------------------------------------------------------


async def test_ranged_read_reports_the_whole_object(backend: S3Backend, store: Store) -> None:
    await store.put("k", b"0123456789", content_type="text/plain", metadata={"a": "b"})
    async with await backend.read("k", 2, 5) as stream:
        assert b"".join([chunk async for chunk in stream]) == b"234"
        info = stream.info
    assert info.size == 10
    assert info.content_type == "text/plain"
    assert info.metadata["a"] == "b"
    assert info.metadata["asyncstore-sha256"] == digest(b"0123456789")
    assert info.last_modified is not None
    assert info.etag == (await store.head("k")).etag


async def test_range_edges(backend: S3Backend, store: Store) -> None:
    await store.put("ten", b"0123456789")
    await store.put("empty", b"")

    async def body(key: str, start: int, end: int | None = None) -> tuple[bytes, int]:
        async with await backend.read(key, start, end) as stream:
            return b"".join([chunk async for chunk in stream]), stream.info.size

    assert await body("ten", 10) == (b"", 10)  # start == size: empty, not an error
    assert await body("ten", 10, 20) == (b"", 10)
    assert await body("ten", 4, 4) == (b"", 10)
    assert await body("ten", 8, 1000) == (b"89", 10)  # end clamped
    assert await body("empty", 0) == (b"", 0)
    assert await body("empty", 0, 8 * MiB) == (b"", 0)
    with pytest.raises(InvalidRangeError, match="past the end"):
        await backend.read("ten", 11)
    with pytest.raises(InvalidRangeError):
        await backend.read("empty", 1)


async def test_read_is_pinned_by_if_match(backend: S3Backend, store: Store) -> None:
    first = await store.put("k", b"first")
    await store.put("k", b"second")
    with pytest.raises(PreconditionFailedError):
        await backend.read("k", 0, 3, if_match=first.etag)
    with pytest.raises(PreconditionFailedError):
        await backend.read("k", 6, 9, if_match=first.etag)  # also on the start == size path


async def test_object_replaced_by_another_writer_mid_download(s3: S3Server, store: Store) -> None:
    old, new = pattern(6 * MiB, seed=1), pattern(6 * MiB, seed=2)
    await store.put("moving", old)
    body = store.stream("moving", chunk_size=MiB)
    assert await body.__anext__() == old[:MiB]
    key = f"{store.backend.options.prefix}/moving"  # type: ignore[attr-defined]
    s3.boto.put_object(Bucket=BUCKET, Key=key, Body=new)
    with pytest.raises(PreconditionFailedError, match="replaced during the download"):
        async for _ in body:
            pass
    await body.aclose()


async def test_missing_key_names_the_key(store: Store) -> None:
    for call in (store.get, store.head):
        with pytest.raises(NotFoundError) as info:
            await call("no/such/key")
        assert "no/such/key" in str(info.value)
        assert info.value.key == "no/such/key"


async def test_missing_bucket_names_the_bucket(s3: S3Server) -> None:
    async with Store(S3Backend(MISSING_BUCKET, "p", endpoint=s3.endpoint)) as store:
        calls = [
            lambda: store.get("k"),
            lambda: store.head("k"),
            lambda: store.put("k", b"x"),
            lambda: store.copy("k", "k2"),
            lambda: store.delete("k"),
        ]
        for call in calls:
            with pytest.raises(NotFoundError, match=MISSING_BUCKET):
                await call()
        with pytest.raises(NotFoundError, match=MISSING_BUCKET):
            async for _ in store.list():
                pass


async def test_unreachable_endpoint_is_a_connection_error(prefix: str) -> None:
    with socket_port() as port:  # bound, never listening: connections are refused
        backend = S3Backend(BUCKET, prefix, endpoint=f"http://127.0.0.1:{port}")
        with pytest.raises(ConnectionError) as info:
            await backend.head("k")
        assert isinstance(info.value, TransportError)
        assert isinstance(info.value.__cause__, Exception)
        await backend.aclose()


class socket_port:
    """A local TCP port that is bound but not listening, for the duration of a block."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


class _FakeBody:
    """Stands in for aiobotocore's streaming body: hands out ``pieces`` one read at a time."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.closed = False

    async def read(self, most: int) -> bytes:  # at most ``most`` bytes, like aiohttp's
        await anyio.lowlevel.checkpoint()
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > most:
            self.pieces.insert(0, piece[most:])
        return piece[:most]

    async def aclose(self) -> None:
        self.closed = True


async def _drain(stream: S3ReadStream) -> list[bytes]:
    async with stream:
        return [chunk async for chunk in stream]


async def test_read_stream_gathers_pieces_into_chunks() -> None:
    pieces = [bytes([i]) * 300_000 for i in range(8)]  # 2.4 MB in pieces of 300 kB
    body = _FakeBody(pieces)
    info = ObjectInfo("k", 2_400_000, "e")
    chunks = await _drain(S3ReadStream(info, body, contextlib.nullcontext))
    assert b"".join(chunks) == b"".join(pieces)
    assert [len(chunk) for chunk in chunks] == [MiB, MiB, 2_400_000 - 2 * MiB]
    assert body.closed


async def test_read_stream_skips_and_limits_for_a_server_that_ignored_the_range() -> None:
    data = bytes(range(256)) * 40
    body = _FakeBody([data[i : i + 1000] for i in range(0, len(data), 1000)])
    stream = S3ReadStream(
        ObjectInfo("k", len(data), "e"), body, contextlib.nullcontext, skip=2500, limit=3000
    )
    assert b"".join(await _drain(stream)) == data[2500:5500]
    assert body.closed


async def test_read_stream_closed_early_closes_the_body() -> None:
    body = _FakeBody([b"x" * MiB, b"y" * MiB])
    stream = S3ReadStream(ObjectInfo("k", 2 * MiB, "e"), body, contextlib.nullcontext)
    async with stream:
        assert await stream.__anext__() == b"x" * MiB
    assert body.closed
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_read_stream_cut_short_hands_on_what_arrived_then_raises() -> None:
    """The core resumes after the bytes it got, so none that arrived may be dropped."""

    class _CutBody(_FakeBody):
        async def read(self, most: int) -> bytes:
            if not self.pieces:
                raise ConnectionError("reset by peer", key="k")
            return await super().read(most)

    body = _CutBody([b"a" * 300_000, b"b" * 100_000])  # less than one chunk, then a reset
    stream = S3ReadStream(ObjectInfo("k", MiB, "e"), body, contextlib.nullcontext)
    async with stream:
        assert await stream.__anext__() == b"a" * 300_000 + b"b" * 100_000
        with pytest.raises(ConnectionError, match="reset by peer"):
            await stream.__anext__()


# -- integrity -------------------------------------------------------------------------------


async def test_single_put_sends_crc32c_and_records_the_sha256_in_metadata(
    s3: S3Server, backend: S3Backend, store: Store, prefix: str
) -> None:
    """The body is hashed with sha256 once (the object's digest, recorded); its transit is
    protected by a CRC32C (moto echoes checksums without checking them: this checks what
    is sent)."""
    recorder = Recorder(s3)
    data = pattern(100_000)
    result = await store.put("single", data)
    (put,) = recorder.of("PutObject")
    assert put["x-amz-checksum-crc32c"] == b64crc32c(data)
    # No second sha256 pass over the body: not signed, no sha256 checksum header.
    assert put["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    assert "x-amz-checksum-sha256" not in put
    head = s3.boto.head_object(Bucket=BUCKET, Key=f"{prefix}/single")
    assert head["Metadata"]["asyncstore-sha256"] == digest(data) == result.sha256
    assert (await store.head("single")).sha256 == digest(data)


async def test_multipart_sends_crc32c_per_part_and_tags_the_whole_sha256(
    s3: S3Server, backend: S3Backend, store: Store, prefix: str
) -> None:
    recorder = Recorder(s3)
    data = pattern(3 * 5 * MiB + 123, seed=11)
    result = await store.put("multi", data, chunk_size=5 * MiB, max_concurrency=3)
    assert result.part_count == 4
    (create,) = recorder.of("CreateMultipartUpload")
    assert create["x-amz-checksum-algorithm"] == "CRC32C"
    parts = recorder.of("UploadPart")
    assert len(parts) == 4
    sent = sorted(headers["x-amz-checksum-crc32c"] for headers in parts)
    expected = sorted(b64crc32c(data[i : i + 5 * MiB]) for i in range(0, len(data), 5 * MiB))
    assert sent == expected
    assert all(headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD" for headers in parts)
    assert not any("x-amz-checksum-sha256" in headers for headers in parts)
    (complete,) = recorder.bodies("CompleteMultipartUpload")
    assert complete.count(b"<ChecksumCRC32C>") == 4
    tags = s3.boto.get_object_tagging(Bucket=BUCKET, Key=f"{prefix}/multi")["TagSet"]
    assert {tag["Key"]: tag["Value"] for tag in tags} == {
        SHA256_TAG: digest(data),
        ETAG_TAG: result.etag,
    }
    info = await store.head("multi")
    assert info.sha256 == digest(data)
    assert info.metadata == {}
    assert await store.get("multi") == data


async def test_a_large_objects_whole_path_goes_on_the_lean_path(
    s3: S3Server, store: Store, prefix: str
) -> None:
    """Create, parts, complete, the sha256's tags, and a fresh reader's tag lookup: all sent
    by asyncstore (botocore's user agent on none), all signed as botocore would (the proxy
    checks), on an awkward key; the bodies are what the SDK would send."""
    key = "d i r/a+b%20é&<x>"
    data = pattern(2 * 5 * MiB + 7, seed=21)
    recorder = Recorder(s3)
    result = await store.put(key, data, chunk_size=5 * MiB, metadata={"m": "v"})
    async with Store(S3Backend(BUCKET, prefix, endpoint=s3.endpoint)) as fresh:  # no cached tag
        assert (await fresh.head(key)).sha256 == digest(data)
        assert await fresh.get(key) == data
    operations = [op for op, _, _ in recorder.requests]
    for operation in (
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "PutObjectTagging",
        "GetObjectTagging",
    ):
        assert operation in operations
    agents = [headers.get("user-agent", "") for _, headers, _ in recorder.requests]
    assert not [agent for agent in agents if "botocore" in agent.lower()]
    (create,) = recorder.of("CreateMultipartUpload")
    assert create["x-amz-meta-m"] == "v"
    assert create["x-amz-checksum-algorithm"] == "CRC32C"
    (complete,) = recorder.bodies("CompleteMultipartUpload")
    assert complete.count(b"<Part>") == 3
    assert complete.count(b"<ChecksumCRC32C>") == 3
    (tagging,) = recorder.bodies("PutObjectTagging")
    (tagging_headers,) = recorder.of("PutObjectTagging")
    assert (
        tagging_headers["content-md5"] == base64.b64encode(hashlib.md5(tagging).digest()).decode()
    )
    tags = s3.boto.get_object_tagging(Bucket=BUCKET, Key=f"{prefix}/{key}")["TagSet"]
    assert {tag["Key"]: tag["Value"] for tag in tags} == {
        SHA256_TAG: digest(data),
        ETAG_TAG: result.etag,
    }


async def test_a_tag_lookup_needs_no_slot_of_the_request_limit(
    s3: S3Server, store: Store, prefix: str
) -> None:
    """A read holds its slot while it looks up the sha256 tag: with one slot in all, the
    lookup must not wait for a slot (it would wait for itself)."""
    data = pattern(11 * MiB, seed=22)
    await store.put("multi", data, chunk_size=5 * MiB)
    async with Store(S3Backend(BUCKET, prefix, endpoint=s3.endpoint, max_connections=1)) as one:
        with anyio.fail_after(60):
            async with one.stream("multi") as body:
                got = b"".join([chunk async for chunk in body])
    assert got == data


async def test_multipart_sha256_tag_is_verified_on_read(
    s3: S3Server, store: Store, prefix: str
) -> None:
    data = pattern(11 * MiB, seed=12)
    result = await store.put("multi", data, chunk_size=5 * MiB)
    wrong = digest(data + b"!")
    s3.boto.put_object_tagging(
        Bucket=BUCKET,
        Key=f"{prefix}/multi",
        Tagging={
            "TagSet": [{"Key": SHA256_TAG, "Value": wrong}, {"Key": ETAG_TAG, "Value": result.etag}]
        },
    )
    fresh = Store(S3Backend(BUCKET, prefix, endpoint=s3.endpoint))  # no cached tag
    async with fresh:
        with pytest.raises(DigestMismatchError) as info:
            await fresh.get("multi", chunk_size=4 * MiB)
        assert info.value.expected == wrong
        assert info.value.actual == digest(data)


async def test_sha256_tag_of_another_version_is_ignored(
    s3: S3Server, store: Store, prefix: str
) -> None:
    data = pattern(11 * MiB, seed=13)
    await store.put("multi", data, chunk_size=5 * MiB)
    s3.boto.put_object_tagging(
        Bucket=BUCKET,
        Key=f"{prefix}/multi",
        Tagging={
            "TagSet": [
                {"Key": SHA256_TAG, "Value": digest(b"other")},
                {"Key": ETAG_TAG, "Value": "0123456789abcdef0123456789abcdef-2"},
            ]
        },
    )
    async with Store(S3Backend(BUCKET, prefix, endpoint=s3.endpoint)) as fresh:
        assert (await fresh.head("multi")).sha256 is None  # not believed, not "corrupt"
        assert await fresh.get("multi") == data


async def test_copy_records_the_sha256_in_the_destination_metadata(
    s3: S3Server, store: Store, prefix: str
) -> None:
    data = pattern(11 * MiB, seed=14)
    await store.put("multi", data, chunk_size=5 * MiB, metadata={"m": "1"})
    await store.copy("multi", "copied")
    head = s3.boto.head_object(Bucket=BUCKET, Key=f"{prefix}/copied")
    assert head["Metadata"] == {"m": "1", "asyncstore-sha256": digest(data)}
    assert await store.get("copied") == data


async def test_copy_above_the_copyobject_limit_uses_upload_part_copy(
    s3: S3Server, backend: S3Backend, store: Store
) -> None:
    recorder = Recorder(s3)
    backend.copy_threshold = backend.copy_part_size = 5 * MiB  # stands in for 5 GiB
    data = pattern(12 * MiB, seed=15)
    await store.put("src", data, content_type="application/x-big", metadata={"m": "2"})
    await store.copy("src", "dst")
    assert len(recorder.of("UploadPartCopy")) == 3
    assert recorder.of("CopyObject") == []
    assert all(h["x-amz-copy-source-if-match"] for h in recorder.of("UploadPartCopy"))
    info = await store.head("dst")
    assert (info.content_type, dict(info.metadata), info.sha256) == (
        "application/x-big",
        {"m": "2"},
        digest(data),
    )
    assert await store.get("dst") == data
    assert await backend.pending_uploads() == []


def is_part_copy(seen: Seen) -> bool:
    return (
        seen.method == "PUT"
        and "partNumber=" in seen.target
        and bool(seen.header("x-amz-copy-source"))
    )


PART_COPY_FAULTS = {
    "500 InternalError": (
        500,
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
        b"<Message>We encountered an internal error.</Message></Error>",
    ),
    # What UploadPartCopy answers when the source's ETag no longer matches: the backend
    # turns it into a TransportError ("changed during its copy") so that the copy is
    # made again from the source's new version.
    "412 PreconditionFailed": (
        412,
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code>"
        b"<Message>At least one of the pre-conditions you specified did not hold</Message>"
        b"</Error>",
    ),
}


@pytest.mark.parametrize("fault", list(PART_COPY_FAULTS))
async def test_a_failing_part_copy_is_retried_by_store_copy(
    fault: str, s3: S3Server, prefix: str
) -> None:
    """A part copy that fails reaches Store.copy as a TransportError (not an
    ExceptionGroup), so the copy is retried and completes."""
    status, body = PART_COPY_FAULTS[fault]
    data = pattern(12 * MiB, seed=16)
    port = int(s3.endpoint.rsplit(":", 1)[1])
    async with FaultProxy.running(port) as proxy:
        backend = S3Backend(BUCKET, prefix, endpoint=proxy.endpoint)
        backend.copy_threshold = backend.copy_part_size = 5 * MiB  # stands in for 5 GiB
        retry = RetryPolicy(attempts=3, backoff_base=0.01, backoff_cap=0.05)
        async with Store(backend, chunk_size=5 * MiB, retry=retry) as store:
            await store.put("src", data)
            injected = proxy.add("status", match=is_part_copy, skip=1, status=status, body=body)
            await store.copy("src", "dst")
            assert injected.fired == 1
            assert await store.get("dst") == data
            assert await backend.pending_uploads() == []
    assert s3.uploads(prefix + "/") == []


# -- conditional writes ----------------------------------------------------------------------


async def test_conditional_put_headers(s3: S3Server, backend: S3Backend, store: Store) -> None:
    recorder = Recorder(s3)
    first = await store.put("k", b"1", mode="create")
    await store.put("k", b"2", mode={"if_match": first.etag})
    create, match = recorder.of("PutObject")
    assert create["if-none-match"] == "*"
    assert match["if-match"] == f'"{first.etag}"'


async def test_complete_upload_carries_if_none_match(
    s3: S3Server, backend: S3Backend, prefix: str
) -> None:
    """The condition is on CompleteMultipartUpload itself, not only checked up front."""
    recorder = Recorder(s3)
    attrs = WriteAttributes(if_none_match=True)
    upload_id = await backend.create_upload("late", attrs)
    s3.boto.put_object(Bucket=BUCKET, Key=f"{prefix}/late", Body=b"another writer won")
    data = memoryview(pattern(5 * MiB))
    part = await backend.upload_part("late", upload_id, 1, 0, data, {})
    with pytest.raises(AlreadyExistsError, match="late"):
        await backend.complete_upload("late", upload_id, [part], attrs)
    await backend.abort_upload("late", upload_id)
    (complete,) = recorder.of("CompleteMultipartUpload")
    assert complete["if-none-match"] == "*"
    assert s3.boto.get_object(Bucket=BUCKET, Key=f"{prefix}/late")["Body"].read() == (
        b"another writer won"
    )
    assert await backend.pending_uploads() == []


async def test_complete_upload_carries_if_match(
    s3: S3Server, backend: S3Backend, store: Store
) -> None:
    """moto ignores If-Match on CompleteMultipartUpload: the header sent is what is checked."""
    first = await store.put("k", b"v1")
    recorder = Recorder(s3)
    await store.put("k", pattern(11 * MiB), mode={"if_match": first.etag}, chunk_size=5 * MiB)
    (complete,) = recorder.of("CompleteMultipartUpload")
    assert complete["if-match"] == f'"{first.etag}"'


# -- cancellation ----------------------------------------------------------------------------


async def test_cancelled_200_mib_upload_leaves_no_multipart_upload(
    s3: S3Server, store: Store, prefix: str
) -> None:
    parts_done = 0
    two_parts = anyio.Event()

    async def progress(done: int, total: int | None) -> None:
        nonlocal parts_done
        parts_done += 1
        if parts_done >= 2:
            two_parts.set()

    async with anyio.create_task_group() as tg:

        async def upload() -> None:
            await store.put(
                "big", pattern_chunks(200 * MiB, seed=3), chunk_size=8 * MiB, progress=progress
            )

        tg.start_soon(upload)
        await two_parts.wait()
        tg.cancel_scope.cancel()
    assert s3.uploads(prefix + "/") == []
    assert await store.backend.pending_uploads() == []  # type: ignore[attr-defined]
    assert not await store.exists("big")


async def test_abort_is_idempotent(backend: S3Backend) -> None:
    upload_id = await backend.create_upload("k", WriteAttributes())
    assert await backend.pending_uploads() == [("k", upload_id)]
    await backend.abort_upload("k", upload_id)
    await backend.abort_upload("k", upload_id)
    assert await backend.pending_uploads() == []


# -- presigned URLs --------------------------------------------------------------------------


async def test_presigned_get_url_serves_the_bytes(backend: S3Backend, store: Store) -> None:
    data = pattern(70_000, seed=21)
    await store.put("shared/file.bin", data)
    url = await backend.sign("shared/file.bin", "GET", expires_in=300)
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data


async def test_presigned_put_url_uploads(backend: S3Backend, store: Store) -> None:
    import datetime

    url = await backend.sign("upload/here", "put", expires_in=datetime.timedelta(minutes=5))
    async with httpx.AsyncClient() as client:
        response = await client.put(url, content=b"uploaded with a presigned URL")
    assert response.status_code == 200
    assert await store.get("upload/here") == b"uploaded with a presigned URL"


@pytest.mark.parametrize(
    ("key", "method", "expires_in", "error"),
    [
        ("a//b", "GET", 60, InvalidKeyError),
        ("k", "DELETE", 60, InvalidArgumentError),
        ("k", "GET", 0, InvalidArgumentError),
        ("k", "GET", 8 * 24 * 3600, InvalidArgumentError),
        ("k", "GET", True, InvalidArgumentError),
    ],
)
async def test_sign_rejects_bad_arguments(
    backend: S3Backend, key: str, method: str, expires_in: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await backend.sign(key, method, expires_in)


# -- interoperability ------------------------------------------------------------------------


async def test_objects_written_by_asyncstore_read_back_by_boto3(
    s3: S3Server, store: Store, prefix: str
) -> None:
    small, large = pattern(1000, seed=31), pattern(13 * MiB + 7, seed=32)
    await store.put("small", small, content_type="text/x-small")
    await store.put("large", large, chunk_size=5 * MiB)
    got = s3.boto.get_object(Bucket=BUCKET, Key=f"{prefix}/small")
    assert got["Body"].read() == small
    assert got["ContentType"] == "text/x-small"
    assert s3.boto.get_object(Bucket=BUCKET, Key=f"{prefix}/large")["Body"].read() == large


async def test_multipart_object_written_by_boto3_read_and_streamed(
    s3: S3Server, store: Store, prefix: str
) -> None:
    data = pattern(17 * MiB + 3, seed=33)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.boto.upload_fileobj(io.BytesIO(data), BUCKET, f"{prefix}/from-boto3", Config=config)
    info = await store.head("from-boto3")
    assert info.etag.endswith("-4")  # really a multipart object
    assert info.sha256 is None  # nothing recorded: read without verification
    assert await store.get("from-boto3", chunk_size=3 * MiB) == data
    async with store.stream("from-boto3", chunk_size=2 * MiB, max_concurrency=4) as body:
        assert await sha256_of(body) == (digest(data), len(data))


# -- deleting --------------------------------------------------------------------------------


async def test_delete_many_batches_of_1000(
    s3: S3Server, backend: S3Backend, store: Store, prefix: str
) -> None:
    keys = [f"d/{i:05d}" for i in range(1500)]
    limiter = anyio.CapacityLimiter(32)

    async def put(key: str) -> None:
        async with limiter:
            await store.put(key, b"")

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(put, key)
    recorder = Recorder(s3)
    await store.delete_many([*keys, "d/missing", keys[0]])
    assert len(recorder.of("DeleteObjects")) == 2
    assert s3.keys(prefix + "/") == []


# -- error translation -----------------------------------------------------------------------


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "REQ123"},
        },
        "GetObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NotFoundError),
        ("404", 404, NotFoundError),
        ("NoSuchBucket", 404, NotFoundError),
        ("NoSuchUpload", 404, UploadNotFoundError),
        ("AccessDenied", 403, PermissionDeniedError),
        ("403", 403, PermissionDeniedError),
        ("InvalidAccessKeyId", 403, PermissionDeniedError),
        ("InvalidRange", 416, InvalidRangeError),
        ("PreconditionFailed", 412, PreconditionFailedError),
        ("ConditionalRequestConflict", 409, TransportError),
        ("SlowDown", 503, TransportError),
        ("ThrottlingException", 400, TransportError),
        ("InternalError", 500, TransportError),
        ("ServiceUnavailable", 503, TransportError),
        ("", 502, TransportError),
        ("RequestTimeout", 400, TimeoutError),
        ("BadDigest", 400, IntegrityError),
        ("XAmzContentSHA256Mismatch", 400, IntegrityError),
        ("EntityTooSmall", 400, InvalidArgumentError),
        ("PermanentRedirect", 301, ConfigurationError),
        ("SomethingNew", 400, StoreError),
    ],
)
def test_client_errors_are_translated(code: str, status: int, expected: type[Exception]) -> None:
    error = translate(
        _client_error(code, status),
        what="read",
        key="k/ey",
        bucket="bkt",
        location="s3://bkt/p",
    )
    assert type(error) is expected
    assert error is not None
    if code == "NoSuchBucket":
        assert "'bkt'" in str(error)
    else:
        assert "k/ey" in str(error)


def test_botocore_network_errors_are_transport_errors() -> None:
    cases: list[tuple[Exception, type[Exception]]] = [
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), ConnectionError),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), ConnectionError),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), TimeoutError),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), TimeoutError),
        (botocore.exceptions.ResponseStreamingError(error="reset"), ConnectionError),
        (httpx.RemoteProtocolError("peer closed"), ConnectionError),
        (httpx.ReadTimeout("slow"), TimeoutError),
        (botocore.exceptions.NoCredentialsError(), ConfigurationError),
        (RuntimeError("a bug, not the SDK"), type(None)),
    ]
    for exc, expected in cases:
        error = translate(exc, what="read", key="k", bucket="b", location="s3://b")
        assert type(error) is expected, exc


# -- the store's defaults from the URL -------------------------------------------------------


async def test_open_store_against_the_server(s3: S3Server, prefix: str) -> None:
    url = f"s3://{BUCKET}/{prefix}?endpoint={s3.endpoint}&use_path_style=true&region=us-east-1"
    async with open_store_async(url) as store:
        await store.put("via/url", b"hello")
        assert await store.get("via/url") == b"hello"
    assert s3.keys(prefix + "/") == [f"{prefix}/via/url"]


def test_fake_credentials_come_from_the_environment(s3: S3Server) -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"


async def test_requests_in_flight_are_limited_to_max_connections(s3: S3Server, prefix: str) -> None:
    async with Store(s3.backend(prefix, max_connections=3)) as store:
        for i in range(12):
            await store.put(f"k{i}", b"x" * 100)
        backend = store.backend
        assert isinstance(backend, S3Backend)
        recorder = Recorder(s3)
        streams = [await backend.read(f"k{i}", 0, 50) for i in range(3)]  # hold 3 slots
        with anyio.move_on_after(0.5) as waited:
            await backend.read("k3", 0, 50)
        assert waited.cancelled_caught  # a 4th request waits for a slot
        for stream in streams:
            await stream.aclose()
        s3.proxy.peak = 0
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(store.get, f"k{i}")
        assert 1 <= s3.proxy.peak <= 3
        assert len(recorder.of("GetObject")) >= 15


@given(
    st.datetimes(
        min_value=datetime.datetime(1970, 1, 1),
        max_value=datetime.datetime(9999, 12, 31),
    )
)
def test_listing_timestamps_parse_as_botocore_parses_them(moment: datetime.datetime) -> None:
    from botocore.utils import parse_timestamp as botocore_parse

    from asyncstore.backends.s3._lean import parse_timestamp

    millis = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    for text in (
        millis.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis.microsecond // 1000:03d}Z",
        millis.strftime("%Y-%m-%dT%H:%M:%SZ"),
        millis.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    ):
        assert parse_timestamp(text) == botocore_parse(text), text


@pytest.mark.parametrize("text", ["2026-02-30T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "x" * 24])
def test_a_bad_listing_timestamp_is_refused_as_botocore_refuses_it(text: str) -> None:
    from asyncstore.backends.s3._lean import parse_timestamp

    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


_PAGE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Name>b</Name><Prefix>p%2F</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>"
    b"<EncodingType>url</EncodingType>"
    b"<Contents><Key>p/a+b%26c</Key><LastModified>2026-12-07T02:18:58.123Z</LastModified>"
    b"<ETag>&quot;e1&quot;</ETag><Size>7</Size><StorageClass>STANDARD</StorageClass></Contents>"
    b"<CommonPrefixes><Prefix>p/d%C3%A9j%C3%A0/</Prefix></CommonPrefixes>"
    b"<NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>"
)


def test_a_listing_page_parses_as_the_sdk_shapes_it() -> None:
    from asyncstore.backends.s3._lean import list_page

    page = list_page(_PAGE, url_encoded=True)
    assert page["Contents"] == [
        {
            "Key": "p/a b&c",
            "Size": 7,
            "ETag": '"e1"',
            "LastModified": datetime.datetime(
                2026, 12, 7, 2, 18, 58, 123000, tzinfo=datetime.timezone.utc
            ),
        }
    ]
    assert page["CommonPrefixes"] == [{"Prefix": "p/déjà/"}]
    assert page["IsTruncated"] is True
    assert page["NextContinuationToken"] == "tok/+="
    last = _PAGE.replace(b"<IsTruncated>true", b"<IsTruncated>false").replace(
        b"<NextContinuationToken>tok/+=</NextContinuationToken>", b""
    )
    assert list_page(last, url_encoded=True)["IsTruncated"] is False
    assert "NextContinuationToken" not in list_page(last, url_encoded=True)


@pytest.mark.parametrize("body", [b"<Error><Code>x</Code></Error>", b"not xml", b""])
def test_a_listing_page_that_is_not_one_is_refused(body: bytes) -> None:
    from asyncstore.backends.s3._lean import list_page

    with pytest.raises((ValueError, SyntaxError)):
        list_page(body, url_encoded=True)


async def test_listing_goes_on_the_lean_path_and_keeps_awkward_keys(
    s3: S3Server, store: Store
) -> None:
    keys = sorted(["a b", "a+b", "a%20b", "x&y<z>", "é/ü", "q?=#", "t\u00a0s", "d/e/f"])
    for key in keys:
        await store.put(key, key.encode())
    recorder = Recorder(s3)
    listed = [entry.key async for entry in store.list() if isinstance(entry, ObjectInfo)]
    assert listed == keys
    top = [entry async for entry in store.list(delimiter="/")]
    assert [e.key if isinstance(e, ObjectInfo) else e.prefix for e in top] == sorted(
        [k for k in keys if "/" not in k] + ["d/", "é/"]
    )
    sent = recorder.of("ListObjectsV2")
    assert sent and all("botocore" not in h.get("user-agent", "").lower() for h in sent)


def test_the_session_looks_in_one_services_folder_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether a service has a model is checked in that service's folder only, not by
    listing the 400 services botocore has; any service can be loaded (STS, SSO: the
    credential chain's clients), and a full listing is still there for error messages."""
    from asyncstore.backends.s3._client import _prepare_session
    from asyncstore.backends.s3._options import S3Options

    session, _, _ = _prepare_session(S3Options(bucket="some-bucket", region="eu-west-1"))
    loader = session.get_component("data_loader")
    names = loader.list_available_services("service-2")
    listed: list[str] = []
    listdir = os.listdir

    def counting(path: Any = ".") -> list[str]:
        listed.append(str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    assert "s3" in names
    assert "sts" in names
    assert "no-such-service" not in names
    assert "s3" not in loader.list_available_services("no-such-model-9")
    assert 0 < len(listed) < 20  # the folders of the services asked about, no more
    monkeypatch.setattr(os, "listdir", listdir)
    assert {"s3", "sts"} <= set(names)  # iterated: botocore's whole listing
    # The models the client reads are loaded (from botocore's own data).
    assert loader.load_service_model("s3", "service-2")["metadata"]["serviceId"] == "S3"
    assert loader.load_service_model("sts", "service-2")["metadata"]["serviceId"] == "STS"


def test_the_session_keeps_the_aws_data_path(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncstore.backends.s3._client import _prepare_session
    from asyncstore.backends.s3._options import S3Options

    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    session, _, _ = _prepare_session(S3Options(bucket="some-bucket", region="eu-west-1"))
    assert str(tmp_path) in session.get_component("data_loader").search_paths
