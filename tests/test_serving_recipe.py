"""The Starlette recipe of docs/serving.md, run as written: 404 before any byte, headers
from the opened object's info, the body streamed, and every read closed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import ClientDisconnect

from asyncstore import MemoryBackend, ReadStream, Store
from asyncstore.testing import pattern

pytestmark = pytest.mark.anyio

RECIPE = Path(__file__).resolve().parent.parent / "docs" / "serving.md"


def recipe() -> dict[str, Any]:
    """The page's first Python block, executed: it defines ObjectResponse and make_app."""
    text = RECIPE.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {"__name__": "recipe"}
    exec(compile(code.group(1), str(RECIPE), "exec"), namespace)
    return namespace


class ClosedReads(MemoryBackend):
    """Counts the ranged reads not yet closed."""

    def __init__(self) -> None:
        super().__init__()
        self.open_reads = 0

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        stream = await super().read(key, start, end, if_match=if_match)
        self.open_reads += 1
        close = stream.aclose
        closed = False

        async def aclose() -> None:
            nonlocal closed
            if not closed:
                closed = True
                self.open_reads -= 1
            await close()

        stream.aclose = aclose  # type: ignore[method-assign]
        return stream


async def test_the_starlette_recipe_answers_404_before_any_byte_and_streams_the_rest() -> None:
    backend = ClosedReads()
    data = pattern(3 * 1024 * 1024 + 5)
    async with Store(backend, chunk_size=1024 * 1024) as store:
        await store.put("dir/big.bin", data, content_type="application/x-big")
        info = await store.head("dir/big.bin")
        app = recipe()["make_app"](store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            missing = await client.get("/objects/nope.bin")
            assert missing.status_code == 404
            assert "nope.bin" in missing.text

            found = await client.get("/objects/dir/big.bin")
            assert found.status_code == 200
            assert found.headers["content-type"] == "application/x-big"
            assert found.headers["content-length"] == str(len(data))
            assert found.headers["etag"] == f'"{info.etag}"'
            assert found.content == data
    assert backend.open_reads == 0


async def test_the_recipe_closes_the_stream_when_the_client_goes_away() -> None:
    backend = ClosedReads()
    async with Store(backend, chunk_size=1024 * 1024) as store:
        await store.put("big.bin", pattern(4 * 1024 * 1024))
        app = recipe()["make_app"](store)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/objects/big.bin",
            "raw_path": b"/objects/big.bin",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"test")],
            "server": ("test", 80),
            "client": ("127.0.0.1", 1234),
        }
        bodies = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies == 2:
                    raise OSError("the client went away")

        with pytest.raises(ClientDisconnect):
            await app(scope, receive, send)
        assert bodies == 2
    assert backend.open_reads == 0
