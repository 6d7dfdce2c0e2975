"""The Azure backend against Azurite: the conformance suite and Azure-specific behaviour.

A session fixture starts Azurite (installed into ./node_modules by `make test`)
on a free port and stops it at the end. Every async test runs under asyncio
and trio (see conftest.py), each in a fresh container that is deleted after it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import time
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
import pytest
from _servers import Azurite
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobServiceClient, ContentSettings
from hypothesis import given
from hypothesis import strategies as st

from asyncstore import (
    AlreadyExistsError,
    ConfigurationError,
    ConnectionError,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    InvalidRangeError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    Store,
    StoreError,
    TimeoutError,
    TransportError,
    UploadNotFoundError,
    open_store,
    open_store_async,
)
from asyncstore._backend import MiB, WriteAttributes
from asyncstore._stream._retry import RetryPolicy
from asyncstore.backends.azure import AzureBackend, HttpxTransport, decode_name, encode_name
from asyncstore.backends.azure._backend import block_id
from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY
from asyncstore.backends.azure._translate import translate
from asyncstore.testing import StoreConformance, pattern
from asyncstore.testing.emulators import free_port

REPO = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
ENV = "AZURE_STORAGE_CONNECTION_STRING"

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- Azurite


@pytest.fixture
def container(azurite: Azurite) -> Iterator[str]:
    """A fresh, empty container, deleted after the test (Azurite keeps blobs in memory)."""
    name = f"t{uuid.uuid4().hex[:24]}"
    service = azurite.service()
    service.create_container(name)
    try:
        yield name
    finally:
        with contextlib.suppress(AzureError):
            service.delete_container(name)
        service.close()


async def _sync(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the sync SDK (the interoperability side) in a worker thread."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


class RecordingTransport(HttpxTransport):
    """The httpx transport, remembering (method, url, headers) of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self.requests.append((request.method, request.url, dict(request.headers)))
        return await super().send(request, **kwargs)

    def find(self, method: str, comp: str | None = None) -> list[tuple[str, dict[str, str]]]:
        out = []
        for m, url, headers in self.requests:
            query = parse_qs(urlsplit(url).query)
            if m == method and (comp is None or query.get("comp") == [comp]):
                out.append((url, {k.lower(): v for k, v in headers.items()}))
        return out


def _backend(azurite: Azurite, container: str, prefix: str = "p", **options: Any) -> AzureBackend:
    return AzureBackend(container, prefix, connection_string=azurite.connection_string, **options)


@pytest.fixture
async def store(azurite: Azurite, container: str) -> AsyncIterator[Store]:
    async with Store(_backend(azurite, container)) as store:
        yield store


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _b64crc64(data: bytes) -> str:
    """Azure's x-ms-content-crc64: CRC-64/NVME, little-endian (azure-storage-blob's own
    function, when its checksum extension is there; else a bitwise reference)."""
    value = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        value ^= byte
        for _ in range(8):
            value = (value >> 1) ^ (0x9A6C9329AC4BC9B5 if value & 1 else 0)
    return base64.b64encode((value ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")).decode()


def test_the_crc64_reference_is_crc64_nvme() -> None:
    # The catalogue's check value of CRC-64/NVME, over "123456789".
    check = base64.b64decode(_b64crc64(b"123456789"))
    assert int.from_bytes(check, "little") == 0xAE8B14860A799888


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- conformance


class TestAzureConformance(StoreConformance):
    """The asyncstore.testing suite, in a fresh container under the prefix ``conformance``."""

    # The 1 GiB round trip (8 MiB parts, 4 in flight) took 17 s under asyncio (aiohttp)
    # and 33 s under trio (httpx) against an in-memory Azurite on the shared 2-CPU test
    # machine: within the ~60 s budget, so large_size stays at 1 GiB.

    @pytest.fixture
    async def store(self, azurite: Azurite, container: str) -> AsyncIterator[Store]:
        async with Store(_backend(azurite, container, "conformance")) as store:
            yield store

    async def leftovers(self, store: Store) -> list[str]:
        assert isinstance(store.backend, AzureBackend)
        return [f"{key} ({upload_id})" for key, upload_id in await store.backend.pending_uploads()]


# --------------------------------------------------------------------------- URLs and options


def _open(url: str, environ: dict[str, str] | None = None, **options: Any) -> AzureBackend:
    """from_url through open_store's registry, with a controlled environment."""
    from asyncstore.backends.azure import from_url

    with pytest.MonkeyPatch.context() as mp:
        for name in (ENV,):
            mp.delenv(name, raising=False)
        for name, value in (environ or {}).items():
            mp.setenv(name, value)
        return from_url(urlsplit(url), **options)


def test_az_url_with_account_and_key() -> None:
    backend = _open("az://data/some/prefix?account=myacct", account_key="c2VjcmV0")
    config = backend.config
    assert (config.container, config.prefix, config.account) == ("data", "some/prefix", "myacct")
    assert config.account_url == "https://myacct.blob.core.windows.net"
    assert config.auth == "account-key"


def test_azure_scheme_is_the_same_as_az() -> None:
    backend = _open("azure://data?account=myacct", sas_token="?sv=1&sig=abc")
    assert backend.config.auth == "sas"
    assert backend.config.sas_token == "sv=1&sig=abc"
    assert backend.config.prefix == ""


def test_abfs_url_names_container_and_account() -> None:
    backend = _open("abfs://logs@myacct.dfs.core.windows.net/year=2024", account_key="a2V5")
    config = backend.config
    assert (config.container, config.account, config.prefix) == ("logs", "myacct", "year=2024")
    assert config.account_url == "https://myacct.blob.core.windows.net"


def test_abfs_url_of_another_cloud_keeps_its_suffix() -> None:
    backend = _open("abfs://logs@myacct.dfs.core.chinacloudapi.cn/", account_key="a2V5")
    assert backend.config.account_url == "https://myacct.blob.core.chinacloudapi.cn"


def test_url_options_concurrency_and_part_size_set_store_defaults() -> None:
    backend = _open(
        "az://data?account=myacct&concurrency=12&part_size_mb=16&transport=httpx",
        anonymous=True,
    )
    assert backend.default_max_concurrency == 12
    assert backend.default_chunk_size == 16 * MiB
    assert backend.config.auth == "anonymous"


def test_account_url_for_an_emulator() -> None:
    backend = _open(
        "az://data", account_url="http://127.0.0.1:10000/devstoreaccount1/", account_key="a2V5"
    )
    assert backend.config.account == "devstoreaccount1"
    assert backend.config.account_url == "http://127.0.0.1:10000/devstoreaccount1"


@pytest.fixture
def without_azure_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as if azure-identity were not installed, whether or not it is (adlfs brings it)."""
    import asyncstore.backends.azure._options as options

    monkeypatch.setattr(options, "_identity_available", lambda: False)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("az://data?account=myacct&colour=red", {}, "unknown option 'colour'"),
        ("az://data?account=myacct", {"colour": "red"}, "unknown option 'colour'"),
        ("az://Data?account=myacct", {}, "invalid Azure container name"),
        ("az://ab?account=myacct", {}, "invalid Azure container name"),
        ("az://a--b?account=myacct", {}, "invalid Azure container name"),
        ("az:///prefix?account=myacct", {}, "needs a container"),
        ("az://data/a//b?account=myacct", {}, "invalid Azure store prefix"),
        ("az://data/a/../b?account=myacct", {}, "invalid Azure store prefix"),
        ("az://data?account=My_Acct", {}, "option 'account'"),
        ("az://data?account=myacct#frag", {}, "fragment"),
        ("az://data?account=a&account=b", {}, "given twice"),
        ("az://data?account=myacct", {"account": "other"}, "both in the URL"),
        ("az://data?account=myacct&transport=requests", {}, "option 'transport'"),
        ("az://data?account=myacct&concurrency=0", {}, "option 'concurrency'"),
        ("az://data?account=myacct&part_size_mb=5000", {}, "option 'part_size_mb'"),
        ("az://data?account=myacct&anonymous=maybe", {}, "option 'anonymous'"),
        ("az://data", {"account_url": "ftp://host/x", "anonymous": True}, "http:// or https://"),
        ("az://data", {"account_url": "https://h/?sv=1", "anonymous": True}, "query string"),
        ("abfs://logs@example.com/x", {}, "must name the account"),
        ("az://data?account=myacct", {"connection_string": "nonsense"}, "malformed"),
        (
            "az://data?account=other",
            {"connection_string": "AccountName=myacct;AccountKey=x"},
            "for 'myacct'",
        ),
        ("az://data?account=myacct", {"account_key": "a", "sas_token": "b"}, "one way to sign in"),
        ("az://data?account=myacct", {"credential": "a-key-string"}, "credential object"),
        ("az://data", {"account_key": "a2V5"}, "needs an account"),
        ("az://data", {}, "needs an account"),
        ("az://data?account=myacct", {}, "pip install azure-identity"),
        (
            "az://data?account=myacct",
            {"account_url": "https://other.blob.core.windows.net", "anonymous": True},
            "account_url is for 'other'",
        ),
        # each way of signing in, its own error paths
        (
            "az://data",
            {
                "account_url": "https://myacct.blob.core.windows.net",
                "connection_string": "AccountName=myacct;AccountKey=x",
            },
            "either connection_string or account_url",
        ),
        ("az://data", {"connection_string": "AccountKey=x"}, "names no account"),
        ("az://data", {"connection_string": " "}, "'connection_string' of az://data must be"),
        ("az://data?account=myacct", {"account_key": " "}, "'account_key' of az://data must be"),
        ("az://data?account=myacct", {"sas_token": ""}, "'sas_token' of az://data must be"),
        ("az://data", {"sas_token": "sv=1&sig=x"}, "needs an account"),
        ("az://data?account=myacct", {"credential": object()}, "an azure-core credential"),
        ("az://data", {"credential": types.SimpleNamespace(get_token=id)}, "needs an account"),
        ("az://data", {"anonymous": True}, "needs an account"),
    ],
)
def test_bad_urls_and_options_are_rejected(
    url: str, options: dict[str, Any], message: str, without_azure_identity: None
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        _open(url, **options)


@pytest.mark.parametrize("name", ["account_key", "sas_token", "connection_string", "credential"])
def test_secrets_in_the_url_are_rejected_without_showing_them(name: str) -> None:
    with pytest.raises(ConfigurationError, match="keyword argument") as info:
        _open(f"az://data?account=myacct&{name}=TOPSECRET")
    assert "TOPSECRET" not in str(info.value)
    assert info.value.key == name


def test_credentials_in_the_netloc_are_rejected_without_showing_them() -> None:
    with pytest.raises(ConfigurationError, match="must not carry credentials") as info:
        _open("az://user:TOPSECRET@myacct.blob.core.windows.net/x")
    assert "TOPSECRET" not in str(info.value)
    assert "TOPSECRET" not in str(info.value.key)


def test_secrets_never_appear_in_repr_or_describe() -> None:
    key = "S0VZLVRIQVQtTVVTVC1OT1QtTEVBSw=="
    backends = [
        _open("az://data?account=myacct", account_key=key),
        _open("az://data", connection_string=f"AccountName=myacct;AccountKey={key}"),
        _open("az://data?account=myacct", sas_token=f"sv=2024&sig={key}"),
    ]
    for backend in backends:
        for text in (repr(backend), backend.describe(), repr(backend.config), repr(Store(backend))):
            assert key not in text


def test_connection_string_environment_variable_is_used() -> None:
    cs = "DefaultEndpointsProtocol=https;AccountName=envacct;AccountKey=a2V5"
    backend = _open("az://data", environ={ENV: cs})
    assert backend.config.auth == "connection-string"
    assert backend.config.account == "envacct"
    assert backend.config.account_url == "https://envacct.blob.core.windows.net"


def test_connection_string_environment_of_another_account_is_not_used(
    without_azure_identity: None,
) -> None:
    cs = "AccountName=envacct;AccountKey=a2V5"
    with pytest.raises(ConfigurationError, match="pip install azure-identity"):
        _open("az://data?account=myacct", environ={ENV: cs})
    assert _open("az://data?account=myacct", environ={ENV: cs}, account_key="a").config.auth == (
        "account-key"
    )


def test_malformed_connection_string_environment_names_the_variable_only() -> None:
    with pytest.raises(ConfigurationError, match=ENV) as info:
        _open("az://data", environ={ENV: "garbage-SECRETVALUE"})
    assert "SECRETVALUE" not in str(info.value)


def test_open_store_finds_the_backend_by_scheme(azurite: Azurite) -> None:
    for scheme in ("az", "azure"):
        store = open_store(f"{scheme}://data/x", connection_string=azurite.connection_string)
        assert isinstance(store.backend, AzureBackend)
        assert store.backend.config.prefix == "x"


async def test_env_connection_string_reaches_azurite(
    azurite: Azurite, container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, azurite.connection_string)
    async with open_store_async(f"az://{container}/env") as store:
        await store.put("k", b"from the environment")
        assert await store.get("k") == b"from the environment"
    blob = azurite.service().get_blob_client(container, "env/k")
    assert await _sync(lambda: blob.download_blob().readall()) == b"from the environment"


# --------------------------------------------------------------------------- metadata names

_USER_NAME = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,30}\Z")


@given(_USER_NAME)
def test_metadata_names_round_trip_as_identifiers(name: str) -> None:
    stored = encode_name(name)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stored), stored
    assert stored == stored.lower()
    assert decode_name(stored) == name


@given(_USER_NAME, _USER_NAME)
def test_distinct_metadata_names_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert encode_name(a).lower() != encode_name(b).lower()


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("owner", "owner"),
        ("created_by", "created_by"),
        ("asyncstore-sha256", "asyncstore_sha256"),
        ("asyncstore-mtime", "asyncstore_mtime"),
        ("content-hash", "_content__hash"),
        ("x.y", "_x_dy"),
        ("1st", "_1st"),
        ("my_key-2", "_my_ukey__2"),
        ("asyncstore_x", "_asyncstore_ux"),
    ],
)
def test_metadata_name_translation_table(name: str, stored: str) -> None:
    assert encode_name(name) == stored
    assert decode_name(stored) == name


@pytest.mark.parametrize("foreign", ["Owner", "_x", "a_b_c", "asyncstore_Foo", "x_"])
def test_foreign_metadata_names_are_reported_as_they_are(foreign: str) -> None:
    assert decode_name(foreign) == foreign


async def test_metadata_names_with_dashes_and_dots_reach_azure_translated(
    azurite: Azurite, container: str, store: Store
) -> None:
    metadata = {"content-hash": "1", "x.y": "2", "1st": "3", "owner": "4", "asyncstore_x": "5"}
    result = await store.put("m", b"data", metadata=metadata)
    blob = azurite.service().get_blob_client(container, "p/m")
    stored = (await _sync(blob.get_blob_properties)).metadata
    assert stored == {
        "_content__hash": "1",
        "_x_dy": "2",
        "_1st": "3",
        "owner": "4",
        "_asyncstore_ux": "5",
        "asyncstore_sha256": result.sha256,
    }
    info = await store.head("m")
    assert dict(info.metadata) == metadata
    assert info.sha256 == result.sha256


async def test_metadata_written_by_other_tools_is_reported_unchanged(
    azurite: Azurite, container: str, store: Store
) -> None:
    blob = azurite.service().get_blob_client(container, "p/foreign")
    await _sync(blob.upload_blob, b"x", metadata={"Owner": "someone", "some_thing": "1"})
    info = await store.head("foreign")
    assert dict(info.metadata) == {"Owner": "someone", "some_thing": "1"}
    listed = [e async for e in store.list("foreign")]
    assert dict(listed[0].metadata) == {"Owner": "someone", "some_thing": "1"}


# --------------------------------------------------------------------------- uploads


async def test_blocks_are_staged_with_crc64_and_committed_with_attributes(
    azurite: Azurite, container: str
) -> None:
    transport = RecordingTransport()
    data = pattern(2 * MiB + 123, seed=4)
    async with Store(_backend(azurite, container, transport=transport)) as store:
        result = await store.put(
            "big", data, chunk_size=MiB, content_type="application/x-test", metadata={"a-b": "c"}
        )
    assert result.part_count == 3
    staged = transport.find("PUT", "block")
    assert len(staged) == 3
    ids = [parse_qs(urlsplit(url).query)["blockid"][0] for url, _ in staged]
    assert len({len(i) for i in ids}) == 1  # equal-length block ids
    pieces = {  # the x-ms-content-crc64 of every block is the CRC-64 of its bytes
        base64.b64decode(i).decode(): headers["x-ms-content-crc64"]
        for i, (_, headers) in zip(ids, staged, strict=True)
    }
    assert not any("content-md5" in headers for _, headers in staged)
    upload_id = next(iter(pieces)).split("-")[0]
    for number, start in enumerate(range(0, len(data), MiB), start=1):
        assert pieces[block_id(upload_id, number)] == _b64crc64(data[start : start + MiB])
    ((_, commit),) = transport.find("PUT", "blocklist")
    assert commit["x-ms-blob-content-type"] == "application/x-test"
    assert commit["x-ms-meta-asyncstore_sha256"] == _digest(data)
    assert commit["x-ms-meta-_a__b"] == "c"
    assert "if-none-match" not in commit


async def test_small_put_is_one_request_with_crc64_and_sha256(
    azurite: Azurite, container: str
) -> None:
    transport = RecordingTransport()
    async with Store(_backend(azurite, container, transport=transport)) as store:
        await store.put("small", b"hello", mode="create")
    puts = transport.find("PUT")
    assert len(puts) == 1
    _, headers = puts[0]
    assert headers["x-ms-content-crc64"] == _b64crc64(b"hello")
    assert headers["x-ms-meta-asyncstore_sha256"] == _digest(b"hello")
    assert headers["if-none-match"] == "*"


@pytest.mark.parametrize(
    ("name", "code"),
    [("crc64nvme", "Crc64Mismatch"), ("md5", "Md5Mismatch")],
)
async def test_the_service_rejects_a_block_whose_checksum_does_not_match(
    azurite: Azurite, container: str, name: str, code: str
) -> None:
    # CRC-64 is what the core sends; an MD5 from a direct caller is still honoured.
    other = b"other bytes"
    digest = (
        base64.b64decode(_b64crc64(other))[::-1]  # network order, as the core gives it
        if name == "crc64nvme"
        else hashlib.md5(other).digest()
    )
    async with Store(_backend(azurite, container)) as store:
        backend = store.backend
        upload_id = await backend.create_upload("k", WriteAttributes())
        wrong = {name: digest}
        with pytest.raises(IntegrityError, match=code) as info:
            await backend.upload_part("k", upload_id, 1, 0, memoryview(b"bytes"), wrong)
        assert isinstance(info.value.__cause__, HttpResponseError)
        with pytest.raises(IntegrityError):
            await backend.put("k", memoryview(b"bytes"), WriteAttributes(), wrong)
        await backend.abort_upload("k", upload_id)
        assert not await store.exists("k")


async def test_sha256_is_recorded_and_verified(
    azurite: Azurite, container: str, store: Store
) -> None:
    data = pattern(3 * MiB, seed=8)
    result = await store.put("s", data, chunk_size=MiB)
    blob = azurite.service().get_blob_client(container, "p/s")
    props = await _sync(blob.get_blob_properties)
    assert props.metadata["asyncstore_sha256"] == result.sha256 == _digest(data)
    # Another tool replaces the bytes but keeps the metadata: reads must notice.
    await _sync(blob.upload_blob, b"tampered", overwrite=True, metadata=props.metadata)
    with pytest.raises(DigestMismatchError) as info:
        await store.get("s")
    assert info.value.expected == result.sha256
    assert info.value.actual == _digest(b"tampered")


async def test_failed_create_keeps_the_blob_and_leaves_no_uncommitted_blob(
    azurite: Azurite, container: str, store: Store
) -> None:
    await store.put("k", b"first")
    with pytest.raises(AlreadyExistsError):
        await store.put("k", pattern(3 * MiB), chunk_size=MiB, mode="create")
    assert await store.get("k") == b"first"
    assert await store.backend.pending_uploads() == []
    # The staged blocks stay with the committed blob (nothing can remove them without
    # rewriting it): Azure discards them at the blob's next write, or after 7 days.
    blob = azurite.service().get_blob_client(container, "p/k")
    _, uncommitted = await _sync(blob.get_block_list, "uncommitted")
    assert len(uncommitted) == 3


async def test_commit_condition_fails_when_the_key_appears_meanwhile(
    azurite: Azurite, container: str
) -> None:
    async with Store(_backend(azurite, container)) as store:
        backend = store.backend
        attrs = WriteAttributes(if_none_match=True)
        upload_id = await backend.create_upload("k", attrs)
        part = await backend.upload_part("k", upload_id, 1, 0, memoryview(b"mine"), {})
        await store.put("k", b"someone else")
        with pytest.raises(AlreadyExistsError):
            await backend.complete_upload("k", upload_id, [part], attrs)
        # A committed blob is there now: the abort leaves it (and, on Azurite, which
        # unlike Azure keeps staged blocks across a Put Blob, the block) alone.
        await backend.abort_upload("k", upload_id)
        assert await store.get("k") == b"someone else"


async def test_if_match_commit_fails_when_the_etag_moved(azurite: Azurite, container: str) -> None:
    async with Store(_backend(azurite, container)) as store:
        backend = store.backend
        first = await store.put("k", b"v1")
        attrs = WriteAttributes(if_match=first.etag)
        upload_id = await backend.create_upload("k", attrs)
        part = await backend.upload_part("k", upload_id, 1, 0, memoryview(b"v2"), {})
        await store.put("k", b"v1 again")
        with pytest.raises(PreconditionFailedError):
            await backend.complete_upload("k", upload_id, [part], attrs)
        assert await store.get("k") == b"v1 again"


async def test_a_retried_commit_that_already_happened_succeeds(
    azurite: Azurite, container: str
) -> None:
    async with Store(_backend(azurite, container)) as store:
        backend = store.backend
        attrs = WriteAttributes(if_none_match=True)
        upload_id = await backend.create_upload("k", attrs)
        part = await backend.upload_part("k", upload_id, 1, 0, memoryview(b"data"), {})
        first = await backend.complete_upload("k", upload_id, [part], attrs)
        again = await backend.complete_upload("k", upload_id, [part], attrs)  # response "lost"
        assert again.etag == first.etag
        assert await store.get("k") == b"data"


async def test_completing_an_unknown_upload_raises_upload_not_found(store: Store) -> None:
    backend = store.backend
    part = await backend.upload_part(
        "k", uuid.uuid4().hex, 1, 0, memoryview(b"x"), {}
    )  # a block of another upload
    with pytest.raises(UploadNotFoundError):
        await backend.complete_upload("k", uuid.uuid4().hex, [part], WriteAttributes())
    with pytest.raises(UploadNotFoundError):
        await backend.upload_part("k", "not-an-id", 1, 0, memoryview(b"x"), {})


async def test_cancelled_upload_leaves_no_blob_and_no_blocks(
    azurite: Azurite, container: str, store: Store
) -> None:
    staged = anyio.Event()

    async def source() -> AsyncIterator[bytes]:
        for seed in range(3):
            yield pattern(MiB, seed=seed)
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async def progress(done: int, total: int | None) -> None:
        staged.set()

    async with anyio.create_task_group() as tg:

        async def upload() -> None:
            await store.put("gone", source(), chunk_size=MiB, progress=progress)

        tg.start_soon(upload)
        await staged.wait()
        tg.cancel_scope.cancel()
    service = azurite.service().get_container_client(container)
    names = await _sync(lambda: [b.name for b in service.list_blobs(include=["uncommittedblobs"])])
    assert names == []


async def test_abort_is_idempotent_and_leaves_other_blobs_alone(
    azurite: Azurite, container: str, store: Store
) -> None:
    backend = store.backend
    await store.put("kept", b"committed before")
    upload_id = await backend.create_upload("kept", WriteAttributes())
    await backend.upload_part("kept", upload_id, 1, 0, memoryview(b"new"), {})
    await backend.abort_upload("kept", upload_id)  # a committed blob is there: left alone
    await backend.abort_upload("kept", upload_id)
    assert await store.get("kept") == b"committed before"
    fresh = await backend.create_upload("fresh", WriteAttributes())
    await backend.upload_part("fresh", fresh, 1, 0, memoryview(b"new"), {})
    assert await backend.pending_uploads() == [("fresh", fresh)]
    assert await backend.pending_uploads("fr") == [("fresh", fresh)]
    assert await backend.pending_uploads("kept") == []
    await backend.abort_upload("fresh", fresh)
    await backend.abort_upload("fresh", fresh)
    await backend.abort_upload("fresh", "not-an-id")
    assert not await store.exists("fresh")
    assert "fresh" not in [key for key, _ in await backend.pending_uploads()]


async def test_abort_does_not_discard_another_uploads_blocks(store: Store) -> None:
    backend = store.backend
    mine = await backend.create_upload("k", WriteAttributes())
    theirs = await backend.create_upload("k", WriteAttributes())
    await backend.upload_part("k", mine, 1, 0, memoryview(b"mine"), {})
    part = await backend.upload_part("k", theirs, 1, 0, memoryview(b"theirs"), {})
    await backend.abort_upload("k", mine)
    await backend.complete_upload("k", theirs, [part], WriteAttributes())
    assert await store.get("k") == b"theirs"


# --------------------------------------------------------------------------- downloads


async def test_every_range_of_a_download_is_pinned_to_the_first_etag(
    azurite: Azurite, container: str
) -> None:
    transport = RecordingTransport()
    data = pattern(4 * MiB + 1, seed=2)
    async with Store(_backend(azurite, container, transport=transport)) as store:
        result = await store.put("obj", data)
        transport.requests.clear()
        assert await store.get("obj", chunk_size=MiB, max_concurrency=3) == data
    gets = transport.find("GET")
    assert len(gets) == 5
    ranges = sorted(headers["x-ms-range"] for _, headers in gets)
    assert ranges[:2] == ["bytes=0-1048575", "bytes=1048576-2097151"]
    pinned = [headers.get("if-match") for _, headers in gets]
    assert pinned[0] is None  # the first read learns the ETag
    assert pinned[1:] == [result.etag] * 4


async def test_read_with_a_stale_etag_fails(store: Store) -> None:
    first = await store.put("k", b"one")
    await store.put("k", b"two")
    with pytest.raises(PreconditionFailedError):
        await store.backend.read("k", 0, 3, if_match=first.etag)
    with pytest.raises(PreconditionFailedError):
        await store.backend.read("k", 3, 3, if_match=first.etag)  # the empty-range path too


async def test_object_replaced_by_another_client_mid_download_fails(
    azurite: Azurite, container: str, store: Store
) -> None:
    await store.put("moving", pattern(3 * MiB, seed=1))
    body = store.stream("moving", chunk_size=MiB)
    await body.__anext__()
    blob = azurite.service().get_blob_client(container, "p/moving")
    await _sync(blob.upload_blob, pattern(3 * MiB, seed=2), overwrite=True)
    with pytest.raises(PreconditionFailedError, match="replaced during the download"):
        async for _ in body:
            pass
    await body.aclose()


async def test_ranges_stream_in_pieces_rather_than_whole(store: Store) -> None:
    data = pattern(4 * MiB, seed=6)
    await store.put("obj", data + b"!")
    async with await store.backend.read("obj", 0, 4 * MiB + 1) as body:
        sizes = [len(chunk) async for chunk in body]
    assert sizes == [MiB] * 4 + [1]  # socket reads joined up to 1 MiB, never the whole range


async def test_transport_streams_response_bodies(azurite: Azurite, container: str) -> None:
    from azure.core.pipeline import AsyncPipeline
    from azure.core.rest import HttpRequest

    service = azurite.service()
    public = f"pub{uuid.uuid4().hex[:20]}"
    await _sync(service.create_container, public, public_access="blob")
    try:
        data = pattern(3 * MiB, seed=9)
        await _sync(service.get_blob_client(public, "obj").upload_blob, data)
        async with AsyncPipeline(transport=HttpxTransport()) as pipeline:
            result = await pipeline.run(
                HttpRequest("GET", f"{azurite.endpoint}/{public}/obj"), stream=True
            )
            response = result.http_response
            sizes = [len(chunk) async for chunk in response.iter_bytes()]
            assert response.is_closed
        assert sum(sizes) == len(data)
        assert len(sizes) > 3
        assert max(sizes) <= 64 * 1024
        backend = AzureBackend(public, account_url=azurite.endpoint, anonymous=True)
        async with Store(backend) as store:  # unsigned requests to a public container
            assert await store.get("obj", chunk_size=MiB) == data
    finally:
        await _sync(service.delete_container, public)


async def test_closing_a_read_early_releases_the_connection(store: Store) -> None:
    await store.put("obj", pattern(4 * MiB))
    for _ in range(150):  # more reads than the pool has connections
        body = await store.backend.read("obj", 0, 4 * MiB)
        async with body:
            await body.__anext__()
    assert await store.get("obj", end=10) == pattern(4 * MiB)[:10]


async def test_empty_ranges_and_ranges_past_the_end(store: Store) -> None:
    await store.put("empty", b"")
    await store.put("ten", b"0123456789")
    backend = store.backend
    for key, start, end in (("empty", 0, None), ("empty", 0, 0), ("ten", 10, None), ("ten", 4, 4)):
        async with await backend.read(key, start, end) as body:
            assert [c async for c in body] == []
    with pytest.raises(InvalidRangeError):
        await backend.read("ten", 11)
    with pytest.raises(InvalidRangeError):
        await backend.read("empty", 1)


async def test_a_body_cut_short_hands_on_what_arrived_then_raises() -> None:
    """The pieces held towards a whole READ_PIECE are passed on before the error."""
    from azure.core.exceptions import IncompleteReadError

    from asyncstore.backends.azure._backend import READ_PIECE

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 300_000
        yield b"b" * 100_000
        raise IncompleteReadError("reset by peer")

    backend = AzureBackend("data", account="myacct", account_key="a2V5")
    got = []
    with pytest.raises(ConnectionError, match="cut short"):
        async for chunk in backend._chunks("k", body()):
            got.append(chunk)
    assert got == [b"a" * 300_000 + b"b" * 100_000]
    assert sum(map(len, got)) < READ_PIECE


# --------------------------------------------------------------------------- interoperability


async def test_sync_sdk_reads_what_asyncstore_wrote(
    azurite: Azurite, container: str, store: Store
) -> None:
    big, small = pattern(5 * MiB + 7, seed=11), b"small body"
    await store.put("big", big, chunk_size=2 * MiB, content_type="application/x-big")
    await store.put("small", small, metadata={"owner": "qa"})
    service = azurite.service()
    blob = service.get_blob_client(container, "p/big")
    assert await _sync(lambda: blob.download_blob().readall()) == big
    props = await _sync(blob.get_blob_properties)
    assert props.content_settings.content_type == "application/x-big"
    assert props.size == len(big)
    small_blob = service.get_blob_client(container, "p/small")
    assert await _sync(lambda: small_blob.download_blob().readall()) == small
    assert (await _sync(small_blob.get_blob_properties)).metadata["owner"] == "qa"


async def test_asyncstore_reads_what_the_sync_sdk_wrote(
    azurite: Azurite, container: str, store: Store
) -> None:
    data = pattern(3 * MiB + 5, seed=12)
    service = BlobServiceClient.from_connection_string(
        azurite.connection_string, max_single_put_size=MiB, max_block_size=MiB
    )
    blob = service.get_blob_client(container, "p/from-sdk")  # staged in 1 MiB blocks
    await _sync(
        blob.upload_blob,
        data,
        metadata={"source": "sdk"},
        content_settings=ContentSettings(content_type="text/x-sdk"),
    )
    assert await store.get("from-sdk", chunk_size=MiB, max_concurrency=4) == data
    info = await store.head("from-sdk")
    assert (info.size, info.content_type, info.sha256) == (len(data), "text/x-sdk", None)
    assert dict(info.metadata) == {"source": "sdk"}
    assert [e.key async for e in store.list()] == ["from-sdk"]


# --------------------------------------------------------------------------- other operations


@pytest.mark.parametrize("transport", ["auto", "httpx"])
async def test_delete_many_past_one_batch(azurite: Azurite, container: str, transport: str) -> None:
    # Blob Batch under asyncio (through either transport), one delete per key under trio.
    async with Store(_backend(azurite, container, transport=transport)) as store:
        await _delete_many_past_one_batch(store)


async def _delete_many_past_one_batch(store: Store) -> None:
    keys = [f"d/{i:04d}" for i in range(300)]
    limiter = anyio.CapacityLimiter(32)

    async def put(key: str) -> None:
        async with limiter:
            await store.put(key, b"x")

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(put, key)
    await store.put("keep", b"x")
    await store.delete_many([*keys, "d/missing"])
    assert [e.key async for e in store.list()] == ["keep"]


async def test_copy_is_server_side_and_keeps_attributes(azurite: Azurite, container: str) -> None:
    transport = RecordingTransport()
    data = pattern(2 * MiB, seed=3)
    async with Store(_backend(azurite, container, transport=transport)) as store:
        await store.put("src", data, content_type="text/x", metadata={"a.b": "1"})
        transport.requests.clear()
        await store.copy("src", "dst")
        copies = [h for _, h in transport.find("PUT") if "x-ms-copy-source" in h]
        assert len(copies) == 1
        assert transport.find("GET") == []  # no byte went through the client
        info = await store.head("dst")
        assert (info.content_type, dict(info.metadata)) == ("text/x", {"a.b": "1"})
        assert await store.get("dst") == data


async def test_listing_with_a_prefix_strips_it_and_hides_other_keys(
    azurite: Azurite, container: str, store: Store
) -> None:
    service = azurite.service().get_container_client(container)
    await _sync(service.upload_blob, "outside", b"x")
    await _sync(service.upload_blob, "p2/other", b"x")
    await store.put("in/a", b"x")
    assert [e.key async for e in store.list()] == ["in/a"]
    assert [e.prefix async for e in store.list(delimiter="/")] == ["in/"]  # type: ignore[union-attr]


async def test_auto_transport_is_aiohttp_under_asyncio_and_httpx_under_trio(
    azurite: Azurite, container: str, anyio_backend: str
) -> None:
    async with Store(_backend(azurite, container)) as store:
        await store.put("k", b"x")
        expected = "AioHttpTransport" if anyio_backend == "asyncio" else "HttpxTransport"
        assert store.backend.describe().endswith(f"connection-string, {expected})")


async def test_aiohttp_transport_runs_under_asyncio_only(
    azurite: Azurite, container: str, anyio_backend: str
) -> None:
    backend = _backend(azurite, container, transport="aiohttp")
    async with Store(backend) as store:
        if anyio_backend == "asyncio":
            await store.put("k", pattern(3 * MiB), chunk_size=MiB)
            assert await store.get("k", chunk_size=MiB) == pattern(3 * MiB)
        else:
            with pytest.raises(ConfigurationError, match="only under asyncio"):
                await store.put("k", b"x")


# --------------------------------------------------------------------------- errors


async def test_missing_container_names_it(azurite: Azurite) -> None:
    async with Store(
        AzureBackend("nosuchcontainer", connection_string=azurite.connection_string)
    ) as store:
        with pytest.raises(NotFoundError, match="container 'nosuchcontainer' does not exist"):
            await store.put("k", b"x")
        with pytest.raises(NotFoundError, match="nosuchcontainer"):
            [e async for e in store.list()]


async def test_wrong_account_key_is_permission_denied_without_the_key(
    azurite: Azurite, container: str
) -> None:
    bad = base64.b64encode(b"not the key" * 4).decode()
    backend = AzureBackend(
        container, account_url=azurite.endpoint, account_key=bad, account=AZURITE_ACCOUNT
    )
    async with Store(backend) as store:
        with pytest.raises(PermissionDeniedError) as info:
            await store.put("k", b"x")
    assert bad not in str(info.value)
    assert isinstance(info.value.__cause__, AzureError)


async def test_unreachable_service_is_a_connection_error(container: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    backend = AzureBackend(container, account_url=endpoint, account_key=AZURITE_KEY)
    async with Store(backend, retry=RetryPolicy(attempts=2, backoff_base=0.01)) as store:
        with pytest.raises(ConnectionError) as info:
            await store.get("k")
    assert info.value.attempts == 2


async def test_sas_signature_is_scrubbed_from_errors(azurite: Azurite, container: str) -> None:
    backend = AzureBackend(
        container, account_url=azurite.endpoint, sas_token="sv=2020-02-10&sig=SIGNATURESECRET"
    )
    async with Store(backend) as store:
        with pytest.raises(StoreError) as info:
            await store.put("k", b"x")
    assert "SIGNATURESECRET" not in str(info.value)


class _Response:
    """Enough of an azure-core response for HttpResponseError."""

    def __init__(self, status: int, code: str) -> None:
        self.status_code = status
        self.reason = "Reason"
        self.headers = {"x-ms-error-code": code, "x-ms-request-id": "req-1"}
        self.content_type = None
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "BlobNotFound", NotFoundError),
        (404, "ContainerNotFound", NotFoundError),
        (409, "BlobAlreadyExists", AlreadyExistsError),
        (409, "LeaseIdMissing", PreconditionFailedError),
        (412, "ConditionNotMet", PreconditionFailedError),
        (304, "ConditionNotMet", PreconditionFailedError),
        (416, "InvalidRange", InvalidRangeError),
        (400, "Md5Mismatch", IntegrityError),
        (400, "InvalidBlockList", UploadNotFoundError),
        (400, "InvalidMetadata", InvalidArgumentError),
        (403, "AuthorizationPermissionMismatch", PermissionDeniedError),
        (401, "InvalidAuthenticationInfo", PermissionDeniedError),
        (500, "OperationTimedOut", TimeoutError),
        (503, "ServerBusy", TransportError),
        (500, "InternalError", TransportError),
        (429, "TooManyRequests", TransportError),
    ],
)
def test_error_mapping(status: int, code: str, expected: type[StoreError]) -> None:
    exc = HttpResponseError(message="The message.", response=_Response(status, code))
    error = translate(exc, what="put", key="k", container="c", location="az://c/p")
    assert type(error) is expected
    assert error is not None
    assert code in str(error)
    assert "req-1" in str(error)


def test_transport_failures_are_transport_errors() -> None:
    from azure.core.exceptions import (
        IncompleteReadError,
        ServiceRequestError,
        ServiceResponseTimeoutError,
    )

    cases = [
        (ServiceRequestError("refused"), ConnectionError),
        (ServiceResponseTimeoutError("slow"), TimeoutError),
        (IncompleteReadError("cut"), ConnectionError),
    ]
    for exc, expected in cases:
        error = translate(exc, what="read", key="k", container="c", location="az://c")
        assert type(error) is expected
        assert isinstance(error, TransportError)
    assert (
        translate(ValueError("x"), what="read", key="k", container="c", location="az://c") is None
    )


async def test_settled_write_finishes_when_its_caller_is_cancelled() -> None:
    from asyncstore.backends.azure._settle import settled

    landed = anyio.Event()

    async def write() -> str:
        await anyio.sleep(0.05)
        landed.set()
        return "done"

    with anyio.move_on_after(0.01) as scope:
        await settled(write)
    assert scope.cancelled_caught
    assert landed.is_set()  # the cancellation went on only once the write had landed


async def test_settled_write_whose_body_is_not_out_is_dropped_at_once() -> None:
    from asyncstore.backends.azure._settle import settled

    finished = []

    async def write() -> str:
        await anyio.sleep(5)
        finished.append(True)
        return "done"

    started = time.monotonic()
    with anyio.move_on_after(0.01):
        await settled(write, sent=lambda: False)
    assert time.monotonic() - started < 1
    assert finished == []


async def test_settled_write_result_arriving_late_is_cleaned_up() -> None:
    from asyncstore.backends.azure._settle import settled

    cleaned: list[str] = []

    async def write() -> str:
        await anyio.sleep(0.05)
        return "response"

    async def abandon(result: str) -> None:
        cleaned.append(result)

    with anyio.move_on_after(0.01):
        await settled(write, sent=lambda: True, abandon=abandon)
    assert cleaned == ["response"]
    assert await settled(write) == "response"


async def test_transport_sleeps_with_the_running_loop() -> None:
    transport = HttpxTransport()
    started = time.monotonic()
    await transport.sleep(0.01)
    assert time.monotonic() - started >= 0.005
    await transport.close()


@pytest.fixture(autouse=True)
def _no_connection_string_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get(ENV):
        monkeypatch.delenv(ENV)


async def test_a_named_key_credential_signs_requests(azurite: Azurite, container: str) -> None:
    from azure.core.credentials import AzureNamedKeyCredential

    credential = AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    backend = AzureBackend(container, "p", account_url=azurite.endpoint, credential=credential)
    async with Store(backend) as store:
        await store.put("signed", b"by a credential object")
        assert await store.get("signed") == b"by a credential object"


def test_an_account_key_with_an_account_url_that_names_no_account_names_the_url() -> None:
    with pytest.raises(ConfigurationError, match=r"account_url.*names none") as caught:
        AzureBackend("container", account_url="http://127.0.0.1:1", account_key=AZURITE_KEY)
    assert caught.value.key == "account_url"
