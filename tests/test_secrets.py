"""Credentials never appear in error messages, reprs or logs.

Every test sets distinctive secrets (AWS keys in the environment, Azure account
keys, SAS tokens and connection strings as keywords and in the environment, a
GCS service file's private key, client secret, refresh token and the access
token it is exchanged for, passwords and query values in store URLs), drives
the failure paths (bad options, an unreachable endpoint, wrong credentials
against the local servers, missing objects and containers, bad keys) and a
successful round trip, and scans everything they produced:

* of every error: ``str``, ``repr``, ``key``, ``args`` and the whole chained
  traceback (``traceback.format_exception``: every ``__cause__`` and
  ``__context__``, vendor exceptions included);
* ``repr`` of the Store, ``repr`` and ``describe()`` of the backend, ``repr``
  of its configuration dataclass;
* every log record of every logger at DEBUG (asyncstore's and the vendors':
  botocore, aiobotocore, azure-core's HTTP logging policy, aiohttp, httpx,
  httpcore, gcloud-aio), message and traceback.

A secret counts as found in its raw form, URL-quoted (``quote`` and
``quote_plus``), and base64-encoded (standard and URL-safe alphabets, at any
alignment inside a longer encoded text).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import logging
import os
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from _servers import BUCKET, Azurite, Emulator, S3Server

from asyncstore import (
    ConfigurationError,
    ConnectionError,
    InvalidKeyError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    Store,
    StoreError,
    known_schemes,
    open_store,
    open_store_async,
)
from asyncstore._backend import MiB
from asyncstore._registry import redact_url
from asyncstore.backends.azure import AzureBackend
from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY
from asyncstore.backends.gcs import GCSBackend
from asyncstore.backends.s3 import S3Backend
from asyncstore.testing import pattern
from asyncstore.testing.emulators import free_port

# --------------------------------------------------------------------------- the secrets

AWS_ACCESS_KEY_ID = "AKIAxSECRETxIDx7F3A9C1E"
AWS_SECRET_ACCESS_KEY = "SECRETxAWSxSECRETxKEYx7f3a9c1e/+Zq"
AWS_SESSION_TOKEN = "SECRETxAWSxSESSIONxTOKENx7f3a9c1e+/=="
#: An Azure account key: base64 of 64 bytes, like a real one.
AZURE_KEY_BYTES = b"SECRETxAZURExACCOUNTxKEYx7f3a9c1e" + bytes(range(200, 231))
AZURE_KEY = base64.b64encode(AZURE_KEY_BYTES).decode()
#: A SAS token's signature: base64 of an HMAC (so with '+', '/' and '='), URL-quoted in the token.
AZURE_SAS_SIG = base64.b64encode(b"SECRETxSASxSIGx7f3a9c1e" + bytes(range(245, 256))).decode()
AZURE_SAS = (
    "sv=2022-11-02&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&spr=https,http"
    f"&sig={quote(AZURE_SAS_SIG, safe='')}"
)
GCS_CLIENT_SECRET = "SECRETxGCSxCLIENTxSECRETx7f3a9c1e"
GCS_REFRESH_TOKEN = "1//SECRETxGCSxREFRESHxTOKENx7f3a9c1e"
GCS_ACCESS_TOKEN = "ya29.SECRETxGCSxACCESSxTOKENx7f3a9c1e"
GCS_BAD_PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nSECRETxGCSxPRIVATExKEYx7f3a9c1e\n-----END PRIVATE KEY-----\n"
)
URL_PASSWORD = "SECRETxURLxPASSWORDx7f3a9c1e"
URL_QUERY = {
    "access_key_id": "SECRETxURLxACCESSxKEYxIDx7f3a",
    "secret_access_key": "SECRETxURLxSECRETxACCESSxKEYx7f3a",
    "sas_token": "SECRETxURLxSASxTOKENx7f3a",
}
URL_QUERY_TEXT = "&".join(f"{name}={quote(value)}" for name, value in URL_QUERY.items())

#: Secrets every test scans for; tests add the ones they make (a generated key, a real SAS).
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
    "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN,
    "azure account key": AZURE_KEY,
    "azure account key (decoded)": AZURE_KEY_BYTES[:33].decode(),
    "azure SAS signature": AZURE_SAS_SIG,
    "GCS client secret": GCS_CLIENT_SECRET,
    "GCS refresh token": GCS_REFRESH_TOKEN,
    "GCS access token": GCS_ACCESS_TOKEN,
    "GCS private key": "SECRETxGCSxPRIVATExKEYx7f3a9c1e",
    "URL password": URL_PASSWORD,
    **{f"URL query {name}": value for name, value in URL_QUERY.items()},
}

pytestmark = [
    pytest.mark.usefixtures("aws_secrets"),
    # aiobotocore warns once that it prefers httpx2 over the legacy httpx package.
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]


def _b64_needles(secret: bytes, encode: Callable[[bytes], bytes]) -> list[str]:
    """What ``secret`` looks like inside any longer base64 text, at each of the 3 alignments."""
    needles = []
    for offset in range(3):
        encoded = encode(b"\0" * offset + secret + b"\0\0\0").decode()
        # The first 4 characters carry the padding bytes, the last 8 the trailing ones.
        needles.append(encoded[4:-8])
    return needles


def needles(secret: str) -> set[str]:
    """``secret`` and its obvious encodings."""
    raw = secret.encode()
    found = {secret, quote(secret, safe=""), quote_plus(secret)}
    found |= set(_b64_needles(raw, base64.b64encode))
    found |= set(_b64_needles(raw, base64.urlsafe_b64encode))
    return {needle for needle in found if len(needle) >= 12}


class Scan:
    """Every text the failure paths produced, checked for secrets at the end."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = dict(secrets)
        self.texts: list[tuple[str, str]] = []

    def secret(self, name: str, value: str) -> None:
        self.secrets[name] = value

    def text(self, label: str, text: object) -> None:
        self.texts.append((label, str(text)))

    def exception(self, label: str, exc: BaseException) -> None:
        self.text(f"{label}: traceback", "".join(traceback.format_exception(exc)))
        seen: set[int] = set()
        pending: list[BaseException] = [exc]
        while pending:
            error = pending.pop()
            if id(error) in seen:
                continue
            seen.add(id(error))
            name = type(error).__name__
            self.text(f"{label}: str({name})", str(error))
            self.text(f"{label}: repr({name})", repr(error))
            self.text(f"{label}: {name}.args", repr(error.args))
            if isinstance(error, StoreError):
                self.text(f"{label}: {name}.key", repr(error.key))
            pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
            pending.extend(getattr(error, "exceptions", ()))

    def store(self, label: str, store: Store) -> None:
        backend = store.backend
        self.text(f"{label}: repr(store)", repr(store))
        self.text(f"{label}: repr(backend)", repr(backend))
        self.text(f"{label}: describe()", backend.describe())
        for attribute in ("config", "options"):
            if hasattr(backend, attribute):
                config = getattr(backend, attribute)
                self.text(f"{label}: repr(backend.{attribute})", repr(config))
                self.text(f"{label}: str(backend.{attribute})", str(config))

    async def fails(
        self, label: str, expected: type[BaseException], action: Callable[[], Awaitable[object]]
    ) -> BaseException:
        """Run ``action``, which must raise ``expected``; keep everything about the error."""
        with pytest.raises(expected) as info:
            await action()
        self.exception(label, info.value)
        return info.value

    def check(self, logs: LogCapture) -> None:
        for label, text in logs.texts():
            self.text(label, text)
        assert self.texts, "nothing was scanned"
        leaks = []
        for name, secret in self.secrets.items():
            forms = needles(secret)
            for label, text in self.texts:
                if any(form in text for form in forms):
                    leaks.append(f"{name} in {label}")
        assert not leaks, "secrets leaked:\n" + "\n".join(sorted(set(leaks)))


# --------------------------------------------------------------------------- logging


class LogCapture(logging.Handler):
    """Every record of every logger; formatted at the end (formatting reads source files)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.messages.append(record.getMessage())  # now: the arguments may change later

    def texts(self) -> Iterator[tuple[str, str]]:
        formatter = logging.Formatter()
        for record, message in zip(self.records, self.messages, strict=True):
            label = f"log {record.name} {record.levelname}"
            yield label, message
            if record.exc_info:
                yield f"{label} traceback", formatter.formatException(record.exc_info)
            if record.stack_info:
                yield f"{label} stack", record.stack_info

    def names(self) -> set[str]:
        return {record.name for record in self.records}


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Every logger at DEBUG, every record captured (loggers that do not propagate too)."""
    handler = LogCapture()
    root = logging.getLogger()
    levels: list[tuple[logging.Logger, int]] = [(root, root.level)]
    extra: list[logging.Logger] = []
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger.level > logging.DEBUG:
            levels.append((logger, logger.level))
            logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(handler)
            extra.append(logger)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger in extra:
            logger.removeHandler(handler)
        for logger, level in levels:
            logger.setLevel(level)
        logging.disable(disabled)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def aws_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS chain finds the distinctive credentials (and nothing of the user's)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS_SESSION_TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def scan() -> Scan:
    return Scan(SECRETS)


def _unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


ONE_ATTEMPT = RetryPolicy(attempts=1)


async def _round_trip(scan: Scan, label: str, store: Store, *, large: int = 0) -> None:
    """A successful put / get / list / delete (what a healthy store logs), then the usual errors."""
    await store.put("secret-scan/small", b"hello")
    assert await store.get("secret-scan/small") == b"hello"
    if large:
        data = pattern(large, seed=7)
        await store.put("secret-scan/large", data)
        assert await store.get("secret-scan/large") == data
    assert [entry.key async for entry in store.list("secret-scan/")]
    await store.delete_many(["secret-scan/small", "secret-scan/large"])
    await scan.fails(f"{label} get missing", NotFoundError, lambda: store.get("secret-scan/none"))
    await scan.fails(f"{label} head missing", NotFoundError, lambda: store.head("secret-scan/none"))
    await scan.fails(
        f"{label} copy missing", NotFoundError, lambda: store.copy("secret-scan/none", "x")
    )
    await scan.fails(f"{label} bad key", InvalidKeyError, lambda: store.get("../escape"))
    await scan.fails(f"{label} bad key", InvalidKeyError, lambda: store.put("a//b", b""))
    scan.store(label, store)


# --------------------------------------------------------------------------- bad options


def _env_cases() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    pw = f"user:{URL_PASSWORD}"
    q = URL_QUERY_TEXT
    return [
        # the registry
        (f"nope://{pw}@host/p?{q}", {}, {}),
        (f"{pw}@host/p?{q}", {}, {}),
        # memory:// and file://
        (f"memory://name?{q}", {}, {}),
        (f"file:///tmp/asyncstore-secret-scan?{q}", {}, {}),
        (f"file://{pw}@somehost/tmp/asyncstore-secret-scan", {}, {}),
        # S3
        (f"s3://{pw}@bucket/p", {}, {}),
        (f"s3://bucket/p?{q}", {}, {}),
        (f"s3://bucket:9000/p?{q}", {}, {}),
        (f"s3://bucket/p?{q}#frag", {}, {}),
        (f"s3://bucket/p?{URL_PASSWORD}", {}, {}),
        (f"gs://bucket/p?{URL_PASSWORD}", {}, {}),
        (f"az://data/p?{URL_PASSWORD}", {}, {}),
        ("s3://bucket/p", {"endpoint": f"ftp://{pw}@127.0.0.1:9000"}, {}),
        ("s3://bucket/p", {"endpoint": f"http://{pw}@127.0.0.1:9000"}, {}),
        ("s3://bucket/p", {"endpoint": f"http://127.0.0.1:9000/?{q}"}, {}),
        (f"s3://bucket/p?endpoint={quote(f'http://127.0.0.1:9000/?{q}', safe='')}", {}, {}),
        ("s3://bucket/p", {"secret_access_key": AWS_SECRET_ACCESS_KEY}, {}),
        # GCS
        (f"gs://{pw}@bucket/p", {}, {}),
        (f"gs://bucket/p?{q}", {}, {}),
        (f"gs://bucket:9000/p?{q}", {}, {}),
        (f"gcs://bucket/p?{q}#frag", {}, {}),
        ("gs://bucket/p", {"api_root": f"ftp://{pw}@127.0.0.1:9000"}, {}),
        ("gs://bucket/p", {"api_root": f"https://{pw}@127.0.0.1:9000"}, {}),
        ("gs://bucket/p", {"api_root": f"https://127.0.0.1:9000/x?{q}"}, {}),
        ("gs://bucket/p", {"token": GCS_ACCESS_TOKEN}, {}),
        ("gs://bucket/p", {}, {"STORAGE_EMULATOR_HOST": f"ftp://{pw}@127.0.0.1:1/?{q}"}),
        # Azure
        (f"az://{pw}@myacct.blob.core.windows.net/p", {}, {}),
        (f"az://data/p?account=myacct&{q}", {}, {}),
        (f"az://data/p?account=myacct&account_key={quote(AZURE_KEY, safe='')}", {}, {}),
        (f"az://data/p?account=myacct&sas_token={quote(AZURE_SAS, safe='')}", {}, {}),
        (f"azure://data/p?colour={URL_PASSWORD}", {}, {}),
        ("az://data/p?account=myacct", {"account_key": AZURE_KEY, "sas_token": AZURE_SAS}, {}),
        ("az://data/p", {"account_key": AZURE_KEY}, {}),
        ("az://data/p?account=myacct", {"credential": AZURE_KEY}, {}),
        ("az://data/p", {"connection_string": f"AccountKey={AZURE_KEY}"}, {}),
        ("az://data/p", {"connection_string": f"garbage{AZURE_KEY}"}, {}),
        (
            "az://data/p",
            {
                "connection_string": f"AccountName=myacct;AccountKey={AZURE_KEY};BlobEndpoint=ftp://x"
            },
            {},
        ),
        (
            "az://data/p",
            {"account_url": f"https://{pw}@myacct.blob.core.windows.net"},
            {},
        ),
        (
            "az://data/p",
            {"account_url": f"https://myacct.blob.core.windows.net?{AZURE_SAS}"},
            {},
        ),
        ("az://data/p", {}, {"AZURE_STORAGE_CONNECTION_STRING": f"garbage;AccountKey={AZURE_KEY}"}),
        (
            "az://data/p?account=myacct",
            {"sas_token": AZURE_SAS, "connection_string": f"AccountKey={AZURE_KEY}"},
            {},
        ),
    ]


@pytest.mark.parametrize(
    ("url", "options", "environ"),
    [pytest.param(*case, id=f"{i}-{case[0].split(':')[0]}") for i, case in enumerate(_env_cases())],
)
def test_bad_options_never_show_a_secret(
    url: str,
    options: dict[str, Any],
    environ: dict[str, str],
    logs: LogCapture,
    scan: Scan,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        open_store(url, **options)
    scan.exception("open_store", info.value)
    scan.check(logs)


@pytest.mark.parametrize(
    "url",
    [
        f"s3://user:{URL_PASSWORD}@bucket/p",
        f"s3://bucket/p?{URL_QUERY_TEXT}",
        f"gs://bucket/p?{URL_QUERY_TEXT}",
        f"az://data/p?account=myacct&{URL_QUERY_TEXT}",
        f"file:///tmp/asyncstore-secret-scan?{URL_QUERY_TEXT}",
    ],
)
def test_the_command_line_shows_no_secret(
    url: str, logs: LogCapture, scan: Scan, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a user sees: the CLI's error output for a store URL with secrets in it."""
    from asyncstore._cli import main

    assert main(["-s", url, "ls"]) != 0
    out, err = capsys.readouterr()
    assert "error" in err.lower() or "option" in err.lower(), err
    scan.text("cli stdout", out)
    scan.text("cli stderr", err)
    scan.check(logs)


def test_redact_url_hides_every_password_and_query_value() -> None:
    pw = f"user:{URL_PASSWORD}"
    for url in (
        f"s3://{pw}@bucket/p?{URL_QUERY_TEXT}",
        f"{pw}@host?{URL_QUERY_TEXT}",
        f"http://{pw}@[::1:bad/p?{URL_QUERY_TEXT}",
        f"s3://bucket/p?{URL_PASSWORD}&x={URL_PASSWORD}#{URL_PASSWORD}",
    ):
        shown = redact_url(url)
        assert not any(secret in shown for secret in (URL_PASSWORD, *URL_QUERY.values())), shown


def test_reprs_of_stores_with_secrets(
    logs: LogCapture, scan: Scan, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Stores opened with every kind of secret: their reprs and descriptions show none."""
    service_file = tmp_path / "user.json"
    service_file.write_text(json.dumps(_authorized_user("https://oauth2.example/token")))
    stores = [
        open_store("s3://bucket/p?region=eu-west-1"),
        open_store("gs://bucket/p", service_file=str(service_file)),
        open_store("az://data/p?account=myacct", account_key=AZURE_KEY),
        open_store("az://data/p?account=myacct", sas_token=AZURE_SAS),
        open_store("az://data/p", connection_string=f"AccountName=myacct;AccountKey={AZURE_KEY}"),
        open_store(
            "az://data/p",
            connection_string=f"BlobEndpoint=https://myacct.blob.core.windows.net;"
            f"SharedAccessSignature={AZURE_SAS}",
        ),
    ]
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", f"AccountName=envacct;AccountKey={AZURE_KEY}"
    )
    stores.append(open_store("az://data/p"))
    for store in stores:
        scan.store(repr(store.backend.describe()), store)
    scan.check(logs)


# --------------------------------------------------------------------------- S3 (moto)


@pytest.mark.anyio
async def test_s3_failure_paths(s3: S3Server, logs: LogCapture, scan: Scan) -> None:
    prefix = f"secrets-{uuid.uuid4().hex[:8]}"
    try:
        async with Store(s3.backend(prefix), retry=ONE_ATTEMPT) as store:
            await _round_trip(scan, "s3", store, large=6 * MiB)
        async with Store(
            S3Backend("no-such-bucket-secret-scan", endpoint=s3.endpoint), retry=ONE_ATTEMPT
        ) as store:
            await scan.fails("s3 missing bucket", NotFoundError, lambda: store.get("k"))
            await scan.fails("s3 missing bucket", StoreError, lambda: store.put("k", b"v"))
            scan.store("s3 missing bucket", store)
        async with Store(
            S3Backend(BUCKET, prefix, endpoint=_unreachable()), retry=ONE_ATTEMPT
        ) as store:
            await scan.fails("s3 unreachable", ConnectionError, lambda: store.get("k"))
            await scan.fails("s3 unreachable", ConnectionError, lambda: store.put("k", b"v"))
            scan.store("s3 unreachable", store)
    finally:
        s3.clean(prefix)
    assert any(name.startswith("botocore") for name in logs.names())
    scan.check(logs)


# --------------------------------------------------------------------------- Azure (Azurite)


@pytest.fixture
def container(azurite: Azurite) -> Iterator[str]:
    name = f"s{uuid.uuid4().hex[:24]}"
    service = azurite.service()
    service.create_container(name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            service.delete_container(name)
        service.close()


def _real_sas(container: str) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        AZURITE_ACCOUNT,
        container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )


@pytest.fixture
def registry() -> None:
    """Entry points read (a blocking call) before open_store runs in the event loop."""
    assert "az" in known_schemes()


@pytest.mark.anyio
@pytest.mark.usefixtures("registry")
async def test_azure_failure_paths(
    anyio_backend: str,
    azurite: Azurite,
    container: str,
    logs: LogCapture,
    scan: Scan,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = azurite.endpoint
    sas = _real_sas(container)
    real_sig = dict(item.split("=", 1) for item in sas.split("&"))["sig"]
    # Azurite's key is public, but this code must treat it as the secret it is in production.
    scan.secret("Azurite account key", AZURITE_KEY)
    scan.secret("a real SAS signature", real_sig)
    wrong_cs = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURE_KEY};BlobEndpoint={endpoint};"
    )

    # wrong credentials: refused by Azurite
    wrong = {
        "wrong account key": {"account_url": endpoint, "account_key": AZURE_KEY},
        "wrong SAS": {"account_url": endpoint, "sas_token": AZURE_SAS},
        "wrong connection string": {"connection_string": wrong_cs},
    }
    for label, options in wrong.items():
        async with Store(AzureBackend(container, "p", **options), retry=ONE_ATTEMPT) as store:
            await scan.fails(label, PermissionDeniedError, lambda: store.put("k", b"v"))
            await scan.fails(label, PermissionDeniedError, lambda: store.get("k"))
            await scan.fails(
                label,
                PermissionDeniedError,
                lambda: store.put("big", b"x" * 5000, chunk_size=2048),  # staged blocks
            )
            scan.store(label, store)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong_cs)
    async with open_store_async(f"az://{container}/p", retry=ONE_ATTEMPT) as store:
        await scan.fails("wrong env connection", PermissionDeniedError, lambda: store.head("k"))
        scan.store("wrong env connection string", store)

    # the right credentials: a healthy round trip, then missing objects and bad keys
    right = {
        "account key": {"account_url": endpoint, "account_key": AZURITE_KEY},
        "SAS": {"account_url": endpoint, "sas_token": sas},
        "connection string": {"connection_string": azurite.connection_string},
    }
    for label, options in right.items():
        async with Store(AzureBackend(container, "p", **options), retry=ONE_ATTEMPT) as store:
            await _round_trip(scan, f"azure {label}", store, large=3 * MiB)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    async with open_store_async(f"az://{container}/p", retry=ONE_ATTEMPT) as store:
        await _round_trip(scan, "azure env connection string", store)
    async with Store(
        AzureBackend("no-such-container", account_url=endpoint, account_key=AZURITE_KEY),
        retry=ONE_ATTEMPT,
    ) as store:
        await scan.fails("azure missing container", NotFoundError, lambda: store.get("k"))

    # an unreachable service
    unreachable = f"{_unreachable()}/{AZURITE_ACCOUNT}"
    for label, options in {
        "unreachable, account key": {"account_url": unreachable, "account_key": AZURE_KEY},
        "unreachable, SAS": {"account_url": unreachable, "sas_token": AZURE_SAS},
        "unreachable, connection string": {
            "connection_string": wrong_cs.replace(endpoint, unreachable)
        },
    }.items():
        async with Store(AzureBackend(container, "p", **options), retry=ONE_ATTEMPT) as store:
            await scan.fails(label, ConnectionError, lambda: store.get("k"))
            await scan.fails(label, ConnectionError, lambda: store.put("k", b"v"))
            scan.store(label, store)
    assert any(name.startswith("azure") for name in logs.names())
    if anyio_backend == "trio":  # the httpx transport: httpx logs every URL, SAS included
        assert "httpx" in logs.names()
    scan.check(logs)


def test_the_command_line_against_azurite_shows_no_secret(
    azurite: Azurite,
    container: str,
    logs: LogCapture,
    scan: Scan,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    """The CLI with a connection string in the environment: refused, then accepted."""
    from asyncstore._cli import main

    scan.secret("Azurite account key", AZURITE_KEY)
    wrong = azurite.connection_string.replace(AZURITE_KEY, AZURE_KEY)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    assert main(["-s", f"az://{container}", "ls"]) == 1
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"hello")
    for loop in ("asyncio", "trio"):
        assert (
            main(["-s", f"az://{container}", "--async-backend", loop, "cp", str(sample), ":k"]) == 0
        )
        assert main(["-s", f"az://{container}", "--async-backend", loop, "ls", "-r"]) == 0
        assert main(["-s", f"az://{container}", "--async-backend", loop, "stat", ":none"]) == 1
    out, err = capsys.readouterr()
    assert "refused" in err and "k" in out, (out, err)
    scan.text("cli stdout", out)
    scan.text("cli stderr", err)
    scan.check(logs)


# --------------------------------------------------------------------------- GCS (emulator)


class TokenServer:
    """A Google OAuth2 token endpoint on 127.0.0.1: ``/token`` grants, ``/refuse`` refuses."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.requests.append(self.rfile.read(length).decode())
                if self.path == "/token":
                    status = 200
                    body = {
                        "access_token": GCS_ACCESS_TOKEN,
                        "expires_in": 3600,
                        "token_type": "Bearer",
                    }
                else:
                    status = 401
                    body = {"error": "invalid_client", "error_description": "Unauthorized"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def bucket(emulator: Emulator) -> Iterator[str]:
    name = emulator.create_bucket()
    try:
        yield name
    finally:
        emulator.empty(name)


def _authorized_user(token_uri: str) -> dict[str, str]:
    return {
        "type": "authorized_user",
        "client_id": "client-id.apps.googleusercontent.com",
        "client_secret": GCS_CLIENT_SECRET,
        "refresh_token": GCS_REFRESH_TOKEN,
        "token_uri": token_uri,
    }


def _service_account(token_uri: str, private_key: str) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": "secret-scan",
        "private_key_id": "0123456789abcdef",
        "private_key": private_key,
        "client_email": "scan@secret-scan.iam.gserviceaccount.com",
        "token_uri": token_uri,
    }


def _rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@contextlib.asynccontextmanager
async def _gcs_store(
    bucket: str, api_root: str, service_file: Any, **options: Any
) -> AsyncIterator[Store]:
    backend = GCSBackend(bucket, "p", api_root=api_root, service_file=str(service_file), **options)
    # The emulator speaks http, where the backend sends no token; make it send one
    # (as it would over https to Google) so that the token's whole path is scanned.
    backend.anonymous = False
    async with Store(backend, retry=ONE_ATTEMPT) as store:
        yield store


@pytest.mark.anyio
async def test_gcs_failure_paths(
    emulator: Emulator,
    bucket: str,
    token_server: TokenServer,
    logs: LogCapture,
    scan: Scan,
    tmp_path: Any,
) -> None:
    pem = _rsa_pem()
    body = "".join(pem.splitlines()[1:-1])
    scan.secret("a real private key", body[100:160])
    files = {}
    for name, content in {
        "user": _authorized_user(token_server.url + "/token"),
        "service account": _service_account(token_server.url + "/token", pem),
        "refused": _authorized_user(token_server.url + "/refuse"),
        "no token endpoint": _authorized_user(_unreachable() + "/token"),
        "bad private key": _service_account(token_server.url + "/token", GCS_BAD_PRIVATE_KEY),
    }.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(json.dumps(content))
        files[name] = path

    for label in ("user", "service account"):
        async with _gcs_store(bucket, emulator.url, files[label]) as store:
            await _round_trip(scan, f"gcs {label}", store, large=3 * MiB)
        async with _gcs_store("no-such-bucket-scan", emulator.url, files[label]) as store:
            await scan.fails(f"gcs {label} missing bucket", NotFoundError, lambda: store.get("k"))
    # the secrets went where they belong (and the scan below finds them nowhere else)
    assert any(quote_plus(GCS_CLIENT_SECRET) in body for body in token_server.requests)
    assert any("assertion=" in body for body in token_server.requests)
    async with _gcs_store(bucket, emulator.url, files["refused"]) as store:
        await scan.fails("gcs refused token", PermissionDeniedError, lambda: store.get("k"))
        scan.store("gcs refused token", store)
    async with _gcs_store(bucket, emulator.url, files["no token endpoint"]) as store:
        await scan.fails("gcs no token endpoint", ConnectionError, lambda: store.get("k"))
    async with _gcs_store(bucket, emulator.url, files["bad private key"]) as store:
        await scan.fails("gcs bad private key", PermissionDeniedError, lambda: store.get("k"))
    async with _gcs_store(bucket, _unreachable(), files["user"]) as store:
        await scan.fails("gcs unreachable", ConnectionError, lambda: store.get("k"))
        await scan.fails("gcs unreachable", ConnectionError, lambda: store.put("k", b"v"))
        scan.store("gcs unreachable", store)
    assert "httpx" in logs.names()
    scan.check(logs)


def test_the_scan_finds_a_leak(logs: LogCapture) -> None:
    """The scanner itself: a secret in any form, in any text or log, is reported."""
    for form in (
        AZURE_KEY,
        quote(AZURE_SAS_SIG, safe=""),
        base64.b64encode(b"Basic x:" + URL_PASSWORD.encode()).decode(),
        base64.urlsafe_b64encode(b"ab" + GCS_REFRESH_TOKEN.encode()).decode(),
        repr(AZURE_KEY_BYTES),
    ):
        scan = Scan(SECRETS)
        scan.text("a text", f"... {form} ...")
        with pytest.raises(AssertionError, match="secrets leaked"):
            scan.check(logs)
    token = {"x-amz-security-token": AWS_SESSION_TOKEN}
    logging.getLogger("vendor.sdk").debug("headers: %s", token)
    with pytest.raises(AssertionError, match=r"AWS_SESSION_TOKEN in log vendor\.sdk DEBUG"):
        Scan(SECRETS).check(logs)
