"""The session's servers on 127.0.0.1, shared by every test module that needs them.

- ``s3``: moto's S3 server in a child process, with fake credentials in the environment
  and the bucket `BUCKET`, behind `SigV4Proxy` (which checks every request's signature);
- ``emulator``: gcp-storage-emulator, in memory (one per module: see the fixture);
- ``azurite``: Azurite's Blob service (installed into ./node_modules by `make test`).

They are started by `asyncstore.testing.emulators`, which the benchmarks use too; this
module adds the fixtures and the helpers that check what each server holds.
`conftest.py` imports the fixtures, so moto and Azurite start at most once per session,
whichever modules use them (the backend tests, the fault and soak tests).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from _sigv4 import SigV4Proxy
from azure.storage.blob import BlobServiceClient

from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY
from asyncstore.backends.s3 import S3Backend
from asyncstore.testing.emulators import (
    FAKE_AWS_ENV,
    EmulatorError,
    fake_aws_env,
    gcs_emulator,
    moto_server,
)
from asyncstore.testing.emulators import azurite as azurite_server

REPO = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
BUCKET = "asyncstore-test"


# --------------------------------------------------------------------------- S3 (moto)


class S3Server:
    """The moto server of the session, with a boto3 client for checking what is stored.

    asyncstore's clients reach moto through `SigV4Proxy` (``endpoint``), which checks every
    request's signature with botocore's signer and records what was sent; the boto3 client
    of the checks, and the fault proxies, talk to moto directly (``moto_endpoint``).
    """

    def __init__(self, moto_endpoint: str, proxy: SigV4Proxy | None = None) -> None:
        self.moto_endpoint = moto_endpoint
        self.proxy = proxy
        self.endpoint = proxy.endpoint if proxy is not None else moto_endpoint
        self.boto = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")

    def backend(self, prefix: str = "", **options: Any) -> S3Backend:
        return S3Backend(BUCKET, prefix, endpoint=self.endpoint, **options)

    def keys(self, prefix: str) -> list[str]:
        pages = self.boto.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def uploads(self, prefix: str) -> list[str]:
        response = self.boto.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
        return [upload["Key"] for upload in response.get("Uploads", [])]

    def clean(self, prefix: str) -> None:
        """Remove every object and multipart upload under ``prefix``."""
        response = self.boto.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
        for upload in response.get("Uploads", []):
            self.boto.abort_multipart_upload(
                Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        keys = self.keys(prefix)
        for first in range(0, len(keys), 1000):
            self.boto.delete_objects(
                Bucket=BUCKET,
                Delete={"Objects": [{"Key": key} for key in keys[first : first + 1000]]},
            )


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, fake credentials in the environment, the test bucket."""
    try:
        with (
            fake_aws_env(),
            moto_server() as server,
            SigV4Proxy(server.url, FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]).running() as proxy,
        ):
            s3 = S3Server(server.url, proxy)
            s3.boto.create_bucket(Bucket=BUCKET)
            yield s3
    except EmulatorError as exc:
        pytest.fail(str(exc))


@pytest.fixture(autouse=True)
def _signatures_hold(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used moto: every request it sent had botocore's signature."""
    yield
    if "s3" in request.fixturenames:
        s3: S3Server = request.getfixturevalue("s3")
        assert s3.proxy is not None
        failures, s3.proxy.failures[:] = list(s3.proxy.failures), []
        assert not failures, "requests whose SigV4 signature botocore rejects:\n" + "\n".join(
            failures
        )


# --------------------------------------------------------------------------- GCS


@dataclasses.dataclass
class Emulator:
    """A running gcp-storage-emulator; its helpers are plain blocking calls for fixtures."""

    url: str

    def create_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        body = {"name": name, "softDeletePolicy": {"retentionDurationSeconds": "0"}}
        response = httpx.post(
            f"{self.url}/storage/v1/b", params={"project": "test"}, json=body, timeout=30
        )
        response.raise_for_status()
        return name

    def objects(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.url}/storage/v1/b/{bucket}/o", params={"prefix": prefix}, timeout=30
        )
        response.raise_for_status()
        return list(response.json().get("items") or [])

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(item["name"] for item in self.objects(bucket, prefix))

    def resource(self, bucket: str, name: str) -> dict[str, Any]:
        quoted = urllib.parse.quote(name, safe="")
        response = httpx.get(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}", timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def empty(self, bucket: str) -> None:
        """Delete a bucket's objects (the emulator keeps everything in memory)."""
        with httpx.Client(timeout=30) as client:
            for name in self.names(bucket):
                quoted = urllib.parse.quote(name, safe="")
                client.delete(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """gcp-storage-emulator on 127.0.0.1 and a free port, in memory, for one test module.

    Per module, not per session: the emulator never gives back the memory of
    objects it has deleted (it reached 7.5 GiB after the fault tests' 64 MiB
    transfers and was killed by the OOM killer), and it starts in about a second.
    """
    yield from run_emulator(tmp_path_factory)


def run_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A fresh gcp-storage-emulator, for a fixture of any scope (its log in a temp folder)."""
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    try:
        with gcs_emulator(log=log) as server:
            yield Emulator(server.url)
    except EmulatorError as exc:
        pytest.fail(str(exc))


# --------------------------------------------------------------------------- Azure (Azurite)


@dataclasses.dataclass(frozen=True)
class Azurite:
    """A running Azurite: its Blob endpoint and the dev account's connection string."""

    endpoint: str

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};"
        )

    def service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite on 127.0.0.1 and a free port, in memory, for the session."""
    if not AZURITE_BIN.exists():
        pytest.fail(
            f"Azurite is not installed at {AZURITE_BIN}: run `make test`, which installs it "
            "into ./node_modules with npm"
        )
    try:
        with azurite_server(AZURITE_BIN) as server:
            yield Azurite(server.url)
    except EmulatorError as exc:
        pytest.fail(str(exc))
