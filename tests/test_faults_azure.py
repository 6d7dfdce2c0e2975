"""Azure under faults: Azurite behind the fault-injecting proxy (`asyncstore.testing.FaultProxy`).

`TestAzureFaults` runs `asyncstore.testing.FaultConformance` on Azurite: 64 MiB
uploads (8 blocks of 8 MiB) and downloads through every fault, under asyncio
(azure-core's aiohttp transport) and trio (`HttpxTransport`), with nothing left
behind by Azurite's own listing of blobs with their uncommitted blocks.

An upload is staged blocks (Put Block, ``comp=block``, several in flight) and
one Put Block List (``comp=blocklist``) that commits them; a download is ranged
Get Blobs (``x-ms-range``), every range after the first pinned with If-Match.
Azure's own cases: aborts whose answers are lost, blocks staged onto an existing
blob, commits whose every answer is lost, the transports' timeouts.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread
import pytest
from _servers import Azurite
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient

from asyncstore import ConfigurationError, TransportError, open_store
from asyncstore.backends.azure import AzureBackend, HttpxTransport
from asyncstore.backends.azure._backend import block_id
from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY
from asyncstore.backends.azure._settle import SETTLE_TIMEOUT
from asyncstore.testing import FaultConformance, FaultProxy, Seen

PREFIX = "f"
SERVER_BUSY = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
    b"<Message>The server is busy.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InternalError</Code>'
    b"<Message>The server encountered an internal error. Please retry the request.</Message>"
    b"</Error>"
)


# -- what the proxy saw ---------------------------------------------------------------------------


def _comp(seen: Seen) -> str | None:
    values = parse_qs(urlsplit(seen.target).query).get("comp")
    return values[0] if values else None


def is_block(seen: Seen) -> bool:
    """Put Block: one staged part."""
    return seen.method == "PUT" and _comp(seen) == "block"


def is_commit(seen: Seen) -> bool:
    """Put Block List: the commit (also the abort's empty placeholder commit)."""
    return seen.method == "PUT" and _comp(seen) == "blocklist"


def _range(seen: Seen) -> str | None:
    return seen.header("x-ms-range") or seen.header("range")


# -- Azurite's side (the sync SDK, straight to Azurite, not through the proxy) ------------------


class Blobs:
    """What Azurite holds in a test's container."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self.client: ContainerClient = service.get_container_client(container)

    def names(self) -> list[str]:
        """Every blob name, those with only uncommitted blocks included."""
        return sorted(b.name for b in self.client.list_blobs(include=["uncommittedblobs"]))

    def committed(self) -> list[str]:
        return sorted(b.name for b in self.client.list_blobs())

    def blocks(self, key: str) -> tuple[list[str], list[str]]:
        """The (committed, uncommitted) block ids of ``key``."""
        blob = self.client.get_blob_client(f"{PREFIX}/{key}")
        committed, uncommitted = blob.get_block_list("all")
        return [b.id for b in committed], [b.id for b in uncommitted]

    def uncommitted(self) -> list[str]:
        """Blobs made of uncommitted blocks only, and uncommitted blocks of committed blobs."""
        committed = self.committed()
        left = [f"blob {name}" for name in self.names() if name not in committed]
        for name in committed:
            _, blocks = self.blocks(name.removeprefix(f"{PREFIX}/"))
            left += [f"block {block} of {name}" for block in blocks]
        return left

    def read(self, key: str) -> bytes:
        return self.client.download_blob(f"{PREFIX}/{key}", max_concurrency=4).readall()

    def etag(self, key: str) -> str:
        return str(self.client.get_blob_client(f"{PREFIX}/{key}").get_blob_properties().etag)


@contextlib.contextmanager
def container(azurite: Azurite) -> Iterator[Blobs]:
    """A fresh container (deleted afterwards: Azurite keeps blobs in memory)."""
    name = f"t{uuid.uuid4().hex[:24]}"
    service = azurite.service()
    service.create_container(name)
    try:
        yield Blobs(service, name)
    finally:
        with contextlib.suppress(AzureError):
            service.delete_container(name)
        service.close()


class TestAzureFaults(FaultConformance):
    """FaultConformance on Azurite (staged blocks, one Put Block List)."""

    error_bodies: ClassVar[Mapping[int, bytes]] = {503: SERVER_BUSY, 500: INTERNAL}
    # A cancelled write is let finish for up to SETTLE_TIMEOUT before the abort runs.
    cleanup_grace = SETTLE_TIMEOUT
    timeout_url = "az://data/p?account=myacct"
    url_options: ClassVar[Mapping[str, Any]] = {"account_key": "a2V5"}

    @pytest.fixture
    def upstream(self, azurite: Azurite) -> int:
        port = urlsplit(azurite.endpoint).port
        assert port is not None
        return port

    @pytest.fixture
    def place(self, azurite: Azurite) -> Iterator[Blobs]:
        with container(azurite) as blobs:
            yield blobs

    @pytest.fixture(scope="class")
    @classmethod
    def stored(cls, azurite: Azurite) -> Iterator[Blobs]:
        """DATA at `key`, written straight to Azurite, with the sha256 asyncstore records."""
        with container(azurite) as blobs:
            blobs.client.upload_blob(
                f"{PREFIX}/{cls.key}",
                cls.data(),
                metadata={"asyncstore_sha256": cls.digest()},
                max_concurrency=4,
            )
            yield blobs

    def make_backend(self, place: Blobs, endpoint: str, **options: Any) -> AzureBackend:
        return AzureBackend(
            place.client.container_name,
            PREFIX,
            account_url=f"{endpoint}/{AZURITE_ACCOUNT}",
            account_key=AZURITE_KEY,
            **options,
        )

    def is_part(self, seen: Seen) -> bool:
        return is_block(seen)

    def is_commit(self, seen: Seen) -> bool:
        return is_commit(seen)

    def is_abort(self, seen: Seen) -> bool:
        return seen.method == "DELETE"

    def is_ranged_get(self, seen: Seen) -> bool:
        """Get Blob of a range (not Get Block List, not a listing)."""
        return seen.method == "GET" and _comp(seen) is None and _range(seen) is not None

    async def version(self, place: Blobs, key: str) -> str:
        return await anyio.to_thread.run_sync(place.etag, key)

    async def objects(self, place: Blobs) -> list[str]:
        names = await anyio.to_thread.run_sync(place.committed)
        return [name.removeprefix(f"{PREFIX}/") for name in names]

    async def leftovers(self, place: Blobs) -> list[str]:
        return await anyio.to_thread.run_sync(place.uncommitted)

    async def stored_digest(self, place: Blobs, key: str) -> str:
        body = await anyio.to_thread.run_sync(place.read, key)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    async def check_upload(self, place: Blobs, etag: str) -> None:
        """The blob is exactly one upload's blocks, at the ETag the upload reported."""
        committed, _ = await anyio.to_thread.run_sync(place.blocks, self.key)
        assert len(committed) == self.parts
        assert len({block.rsplit("-", 1)[0] for block in committed}) == 1, "one upload's blocks"
        assert etag.strip('"') == (await self.version(place, self.key)).strip('"')

    def check_lost_completion(self, proxy: FaultProxy, mode: str) -> None:
        """Without a condition the retried commit commits the same blocks again (Put Block
        List takes committed blocks too); with ``mode="create"`` it fails If-None-Match,
        and the backend recognises its own commit by the committed block list."""
        if mode == "create":
            commits = [s for s in proxy.seen if is_commit(s)]
            assert all(c.header("if-none-match") == "*" for c in commits)
            assert any(s.method == "GET" and _comp(s) == "blocklist" for s in proxy.seen)
        assert not any(s.method == "DELETE" for s in proxy.seen), "no abort after a success"

    # -- Azure's own cases ---------------------------------------------------------------------

    async def test_an_abort_whose_answers_are_lost_still_leaves_nothing(
        self, place: Blobs, proxy: FaultProxy
    ) -> None:
        """The abort's placeholder commit and its delete land unheard: the retried abort ends it.

        The abort is retried by the Store; the second one finds the placeholder (by its
        metadata naming the upload) or nothing, and deletes what is there.
        """
        proxy.add(**self.error(503, match=is_block, skip=2, times=None))
        placeholder = proxy.add("reset_response", match=is_commit, after=None)
        delete = proxy.add("reset_response", match=lambda s: s.method == "DELETE", after=None)
        async with self.make_store(place, proxy, self.few) as store:
            with anyio.fail_after(self.hang_guard):
                with pytest.raises(TransportError, match=r"'big'.*after 3 attempt"):
                    await store.put(self.key, self.data())
        assert placeholder.fired == 1
        assert delete.fired == 1
        assert await anyio.to_thread.run_sync(place.names) == []

    async def test_an_overwrite_that_keeps_failing_keeps_the_old_blob(
        self, place: Blobs, proxy: FaultProxy
    ) -> None:
        """What can be cleaned up is: the blocks staged onto a committed blob cannot be.

        Azure has no call that deletes uncommitted blocks, and discarding them means
        committing the blob again (a new ETag, a rewrite of somebody's object), so the
        abort leaves them with the old blob; the next write of the key discards them
        (Azure also does after 7 days).
        """
        name = f"{PREFIX}/{self.key}"
        await anyio.to_thread.run_sync(lambda: place.client.upload_blob(name, b"old"))
        proxy.add(**self.error(503, match=is_block, skip=2, times=None))
        async with self.make_store(place, proxy, self.few) as store:
            with anyio.fail_after(self.hang_guard):
                with pytest.raises(TransportError, match=r"'big'.*after 3 attempt"):
                    await store.put(self.key, self.data())
            assert await anyio.to_thread.run_sync(place.names) == [name]
            assert await anyio.to_thread.run_sync(place.read, self.key) == b"old"
            committed, uncommitted = await anyio.to_thread.run_sync(place.blocks, self.key)
            assert committed == []  # written by Put Blob
            assert 2 <= len(uncommitted) < self.parts
            assert len({block.rsplit("-", 1)[0] for block in uncommitted}) == 1, "one upload's"
            proxy.clear()
            with anyio.fail_after(self.hang_guard):
                result = await store.put(self.key, self.data())
        assert await self.objects(place) == [self.key]
        assert await self.stored_digest(place, self.key) == self.digest()
        assert await self.leftovers(place) == []  # the leftover blocks are gone
        await self.check_upload(place, result.etag)

    async def test_a_commit_whose_every_answer_is_lost_is_rolled_back(
        self, place: Blobs, proxy: FaultProxy
    ) -> None:
        """Each retried commit landed; the Store reports the failure, and the abort undoes it.

        Every block committed is this upload's, so the abort deletes the blob (If-Match
        on its ETag): a put that raised leaves no new object behind.
        """
        proxy.add("reset_response", match=is_commit, times=None, after=None)
        async with self.make_store(place, proxy, self.few) as store:
            with anyio.fail_after(self.hang_guard):
                with pytest.raises(
                    TransportError, match=r"complete upload .*'big'.*after 3 attempt"
                ):
                    await store.put(self.key, self.data())
        # One request per attempt: the Store's policy decides, no transport retries on its own
        # (aiohttp re-sent every PUT once on a reset connection: 6 commits, until fixed).
        assert len([s for s in proxy.seen if is_commit(s)]) == 3
        assert await anyio.to_thread.run_sync(place.names) == []

    def test_a_timeout_option_with_a_transport_object_is_a_configuration_error(self) -> None:
        with pytest.raises(
            ConfigurationError, match="read_timeout cannot be combined with a transport object"
        ):
            open_store(
                "az://data?account=myacct&read_timeout=5",
                account_key="a2V5",
                transport=HttpxTransport(),
            )

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"connect_timeout": float("nan")}, "'connect_timeout'"),
            ({"read_timeout": True}, "option 'read_timeout'"),
        ],
    )
    def test_a_bad_timeout_keyword_is_a_configuration_error(
        self, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=re.escape(message)):
            open_store("az://data?account=myacct", account_key="a2V5", **options)

    def test_timeout_keywords_and_their_defaults(self) -> None:
        keywords = AzureBackend("data", account="myacct", account_key="a2V5", read_timeout=3)
        assert keywords.timeouts == (30.0, 3.0)
        assert AzureBackend("data", account="myacct", account_key="a2V5").timeouts == (
            30.0,
            120.0,
        )

    async def test_the_backends_transports_get_the_timeouts(self, anyio_backend: str) -> None:
        backend = AzureBackend(
            "data", account="myacct", account_key="a2V5", connect_timeout=1.5, read_timeout=7
        )
        transport: Any = backend._make_transport()
        if isinstance(transport, HttpxTransport):
            assert transport.timeouts == (1.5, 7.0)
        else:  # azure-core's aiohttp transport, under asyncio
            assert anyio_backend == "asyncio"
            config = transport.connection_config
            assert (config.timeout, config.read_timeout) == (1.5, 7.0)
        await transport.close()
        given = HttpxTransport(connect_timeout=4, read_timeout=9)
        backend = AzureBackend("data", account="myacct", account_key="a2V5", transport=given)
        assert backend.timeouts == (4, 9)
        await given.close()

    def test_block_ids_name_the_upload(self) -> None:
        # check_upload groups blocks by upload through the id's shape.
        assert block_id("0" * 32, 3).rsplit("-", 1) == ["0" * 32, "000003"]
