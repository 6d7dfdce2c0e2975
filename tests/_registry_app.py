"""An in-process registry server for the API tests: `RegistryApp` under `serve`, on a free port."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx

from asyncstore import MemoryBackend, Store
from asyncstore.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, RegistryStorage
from asyncstore.registry import Authenticator, RegistryApp, RegistryConfig, ServerOptions, serve


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.asynccontextmanager
async def running(app: Any, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 and a free port; yield its base URL; stop it on exit."""
    stop = anyio.Event()
    ready = anyio.Event()
    urls: list[str] = []

    def started(url: str) -> None:
        urls.append(url)
        ready.set()

    settings = ServerOptions(listen="127.0.0.1:0", shutdown_timeout=5, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(app, settings, ready=started, shutdown_trigger=stop.wait))
        with anyio.fail_after(30):
            await ready.wait()
        try:
            yield urls[0]
        finally:
            stop.set()


@contextlib.asynccontextmanager
async def registry_client(
    config: RegistryConfig | None = None,
    *,
    auth: Authenticator | None = None,
    store: Store | None = None,
    **options: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, RegistryStorage]]:
    """A registry over ``store`` (default: memory) and an httpx client for it."""
    async with contextlib.AsyncExitStack() as stack:
        if store is None:
            store = await stack.enter_async_context(Store(MemoryBackend()))
        registry = RegistryStorage(store)
        app = RegistryApp(registry, config, auth=auth)
        url = await stack.enter_async_context(running(app, **options))
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0))
        )
        yield client, registry


async def push_blob(client: httpx.AsyncClient, repo: str, data: bytes) -> str:
    d = digest(data)
    response = await client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": d}, content=data)
    assert response.status_code == 201, response.text
    return d


def manifest(config: bytes, layers: list[bytes], **fields: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": digest(layer), "size": len(layer)}
            for layer in layers
        ],
    }
    doc.update(fields)
    return json.dumps(doc, indent=2).encode()


async def push_image(
    client: httpx.AsyncClient, repo: str, tag: str, *, seed: int = 0, **fields: Any
) -> tuple[bytes, str]:
    config = json.dumps({"architecture": "amd64", "seed": seed}).encode()
    layer = f"layer {seed}".encode() * 100
    await push_blob(client, repo, config)
    await push_blob(client, repo, layer)
    body = manifest(config, [layer], **fields)
    response = await client.put(
        f"/v2/{repo}/manifests/{tag}", content=body, headers={"content-type": OCI_MANIFEST}
    )
    assert response.status_code == 201, response.text
    return body, digest(body)


def error_code(response: httpx.Response) -> str:
    errors = response.json()["errors"]
    assert isinstance(errors, list) and errors
    assert set(errors[0]) == {"code", "message", "detail"}
    return str(errors[0]["code"])
