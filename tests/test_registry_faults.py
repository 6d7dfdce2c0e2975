"""The registry under faults: clients that vanish mid-body, servers killed mid-push or stopped.

- A client that disconnects in the middle of a PATCH leaves the upload at its
  last committed part, resumable at once (the server gives the session back).
- A server killed (SIGKILL) in the middle of a push, and started again over the
  same file:// or s3:// store, resumes the upload from its last committed part
  once the dead server's lease on it expires (``--upload-lease``).
- SIGTERM and SIGINT stop the server cleanly (exit 0) with every committed
  blob, manifest and tag still there for the next server.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from _registry import RegistryServer
from _registry_app import digest, registry_client
from _servers import BUCKET

from asyncstore import MemoryBackend, Store

MiB = 1024 * 1024
REPO = "library/app"


def _raw_patch(address: tuple[str, int], path: str, declared: int, send: bytes) -> None:
    """Send a PATCH that declares ``declared`` bytes, send ``send`` of them, then hang up."""
    with socket.create_connection(address, timeout=30) as sock:
        head = (
            f"PATCH {path} HTTP/1.1\r\nHost: registry\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + send)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        # the server reads the rest and sees the end: it answers nothing, or closes
        while sock.recv(65536):
            pass


@pytest.mark.anyio
async def test_a_client_that_disconnects_mid_patch_leaves_a_resumable_upload() -> None:
    data = bytes(range(256)) * (4 * MiB // 256)  # 4 MiB; parts of 1 MiB
    async with (
        Store(MemoryBackend(), chunk_size=MiB) as store,
        registry_client(store=store) as (client, _),
    ):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        url = httpx.URL(str(client.base_url))
        sent = 2 * MiB + MiB // 2
        await anyio.to_thread.run_sync(
            _raw_patch, (url.host, url.port), location, len(data), data[:sent]
        )
        # the two whole parts are committed; the half part that followed is not
        with anyio.fail_after(30):
            while True:
                status = await client.get(location)
                if status.headers["range"] == f"0-{2 * MiB - 1}":
                    break
                await anyio.sleep(0.01)
        resumed = await client.patch(
            location,
            content=data[2 * MiB :],
            headers={"content-range": f"{2 * MiB}-{len(data) - 1}"},
        )
        assert resumed.status_code == 202, resumed.text
        done = await client.put(location, params={"digest": digest(data)})
        assert done.status_code == 201
        assert (await client.get(f"/v2/{REPO}/blobs/{digest(data)}")).content == data


@pytest.mark.anyio
async def test_a_body_that_stops_before_its_content_length_stores_nothing_monolithic() -> None:
    data = b"x" * (3 * MiB)
    async with (
        Store(MemoryBackend(), chunk_size=MiB) as store,
        registry_client(store=store) as (client, registry),
    ):
        url = httpx.URL(str(client.base_url))
        path = f"/v2/{REPO}/blobs/uploads/?digest={digest(data)}"
        with socket.create_connection((url.host, url.port), timeout=30) as sock:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: r\r\nContent-Length: {len(data)}\r\n\r\n"
            ).encode()
            await anyio.to_thread.run_sync(sock.sendall, head + data[: MiB + 5])
            sock.shutdown(socket.SHUT_WR)
            await anyio.to_thread.run_sync(sock.recv, 65536)
        with anyio.fail_after(30):  # the server drops its staging object
            while [key async for key in store.list("staging/")]:
                await anyio.sleep(0.01)
        assert not await registry.cas.exists(digest(data))
        assert (await client.get("/v2/")).status_code == 200


# --------------------------------------------------------------------------- killed servers


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "file":
        return (tmp_path / "store").as_uri()
    s3 = request.getfixturevalue("s3")
    return f"s3://{BUCKET}/registry-{uuid.uuid4().hex[:8]}/?endpoint={s3.endpoint}"


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_server_killed_mid_push_is_resumed_by_the_next_one(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _store_url(kind, tmp_path, request)
    part = 5 * MiB  # S3's smallest part: the part size on both stores
    data = hashlib.sha256(b"seed").digest() * (4 * part // 32)  # 20 MiB
    options = ("--chunk-size", str(part), "--upload-lease", "2")
    log = tmp_path / "server.log"
    first = RegistryServer(url, *options, log=log)
    with first:
        client = httpx.Client(base_url=first.url, timeout=60)
        location = client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
        # a first PATCH of two parts completes: the server records them
        done = client.patch(location, content=data[: 2 * part])
        assert done.headers["range"] == f"0-{2 * part - 1}"
        # a second PATCH is under way (a part and a half sent) when the server is killed
        host, port = first.address.split(":")
        sock = socket.create_connection((host, int(port)), timeout=30)
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: r\r\n"
            f"Content-Length: {len(data) - 2 * part}\r\n\r\n"
        ).encode()
        sock.sendall(head)
        for chunk in _chunks(data[2 * part : 3 * part + part // 2], 256 * 1024):
            sock.sendall(chunk)
        assert client.get(location).status_code == 204  # still serving: the PATCH is open
        first.kill()
        sock.close()
        client.close()
    with (
        RegistryServer(url, *options, log=log) as second,
        httpx.Client(base_url=second.url, timeout=60) as client,
    ):
        status = client.get(location)
        assert status.status_code == 204
        committed = int(status.headers["range"].split("-")[1]) + 1
        assert committed in (2 * part, 3 * part)  # the recorded parts, never less
        rest = data[committed:]
        deadline = time.monotonic() + 60
        while True:  # the killed server's lease on the session expires after 2 s
            resumed = client.patch(
                location,
                content=rest,
                headers={"content-range": f"{committed}-{len(data) - 1}"},
            )
            if resumed.status_code != 416:
                break
            assert "in progress" in resumed.text, resumed.text
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert resumed.status_code == 202, resumed.text
        done = client.put(location, params={"digest": digest(data)})
        assert done.status_code == 201, done.text
        got = client.get(f"/v2/{REPO}/blobs/{digest(data)}")
        assert got.content == data


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_server_exits_0_and_keeps_every_committed_blob_manifest_and_tag(
    signum: signal.Signals, tmp_path: Path
) -> None:
    url = (tmp_path / "store").as_uri()
    config, layer = b'{"architecture":"amd64"}', b"layer" * 1000
    body = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        f'"config":{{"mediaType":"application/vnd.oci.image.config.v1+json",'
        f'"digest":"{digest(config)}","size":{len(config)}}},'
        f'"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar",'
        f'"digest":"{digest(layer)}","size":{len(layer)}}}]}}'
    ).encode()
    headers = {"content-type": "application/vnd.oci.image.manifest.v1+json"}
    log = tmp_path / "server.log"
    server = RegistryServer(url, log=log)
    with server, httpx.Client(base_url=server.url) as client:
        for blob in (config, layer):
            pushed = client.post(
                f"/v2/{REPO}/blobs/uploads/", params={"digest": digest(blob)}, content=blob
            )
            assert pushed.status_code == 201
        assert (
            client.put(f"/v2/{REPO}/manifests/v1", content=body, headers=headers).status_code == 201
        )
        pending = client.post(f"/v2/{REPO}/blobs/uploads/").headers["location"]
        assert client.patch(pending, content=b"half").status_code == 202
        assert server.process is not None
        server.process.send_signal(signum)
        assert server.wait(60) == 0, server.logs()
    assert "registry stopped; the store is closed" in log.read_text()
    with RegistryServer(url, log=log) as again, httpx.Client(base_url=again.url) as client:
        assert client.get(f"/v2/{REPO}/manifests/v1").content == body
        assert client.get(f"/v2/{REPO}/blobs/{digest(layer)}").content == layer
        assert client.get(f"/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
        assert client.get(pending).headers["range"] == "0-3"
