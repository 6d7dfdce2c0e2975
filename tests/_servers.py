"""The session's servers on 127.0.0.1, shared by every test module that needs them.

- ``s3``: moto's S3 server in a child process (`_moto.MotoServer`), with fake
  credentials in the environment and the bucket `BUCKET`;
- ``emulator``: gcp-storage-emulator, in memory (one per module: see the fixture);
- ``azurite``: Azurite's Blob service (installed into ./node_modules by `make test`).

`conftest.py` imports the fixtures, so moto and Azurite start at most once per session,
whichever modules use them (the backend tests, the fault and soak tests).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from _moto import FAKE_ENV, MotoServer, fake_aws_env
from _sigv4 import SigV4Proxy
from azure.storage.blob import BlobServiceClient

from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY
from asyncstore.backends.s3 import S3Backend

REPO = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
BUCKET = "asyncstore-test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- S3 (moto)


class S3Server:
    """The moto server of the session, with a boto3 client for checking what is stored.

    asyncstore's clients reach moto through `SigV4Proxy` (``endpoint``), which checks every
    request's signature with botocore's signer and records what was sent; the boto3 client
    of the checks, and the fault proxies, talk to moto directly (``moto_endpoint``).
    """

    def __init__(self, moto_endpoint: str, proxy: SigV4Proxy) -> None:
        self.moto_endpoint = moto_endpoint
        self.proxy = proxy
        self.endpoint = proxy.endpoint
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
    with (
        fake_aws_env(),
        MotoServer() as server,
        SigV4Proxy(server.endpoint, FAKE_ENV["AWS_SECRET_ACCESS_KEY"]).running() as proxy,
    ):
        s3 = S3Server(server.endpoint, proxy)
        s3.boto.create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture(autouse=True)
def _signatures_hold(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used moto: every request it sent had botocore's signature."""
    yield
    if "s3" in request.fixturenames:
        s3: S3Server = request.getfixturevalue("s3")
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
    port = free_port()
    log = tmp_path_factory.mktemp("gcs-emulator") / "emulator.log"
    command = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
        "--quiet",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=1) as response:
                    if response.read() == b"OK":
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gcp-storage-emulator did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield Emulator(url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}?comp=list", timeout=1)
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403: unsigned) means it is up
    except OSError:
        return False
    return True


def _start_azurite(workdir: Path, in_memory: bool) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    storage = ["--inMemoryPersistence"] if in_memory else ["--location", str(workdir)]
    log = workdir / f"azurite-{port}.log"
    command = [
        str(AZURITE_BIN),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        "--silent",
        *storage,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite on 127.0.0.1 and a free port, in memory (else in a temp folder), for the session."""
    if not AZURITE_BIN.exists():
        pytest.fail(
            f"Azurite is not installed at {AZURITE_BIN}: run `make test`, which installs it "
            "into ./node_modules with npm"
        )
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    try:
        for in_memory in (True, False):
            proc, endpoint, log = _start_azurite(workdir, in_memory)
            deadline = time.monotonic() + 60
            while proc.poll() is None and not _answers(endpoint):
                if time.monotonic() > deadline:
                    _stop(proc)
                    pytest.fail(f"Azurite did not answer within 60 s: {log.read_text()}")
                time.sleep(0.1)
            if proc.poll() is None:
                break
            output = log.read_text()
            if not in_memory or "inMemoryPersistence" not in output:
                pytest.fail(f"Azurite exited with status {proc.returncode}: {output}")
        try:
            yield Azurite(endpoint)
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
