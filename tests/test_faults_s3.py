"""S3 under faults: moto behind the fault-injecting proxy (`asyncstore.testing.FaultProxy`).

`TestS3Faults` runs `asyncstore.testing.FaultConformance` on moto: 64 MiB
uploads (8 parts of 8 MiB) and downloads through every fault, under asyncio and
trio, with nothing left behind by moto's own listing of objects and of
multipart uploads. S3's own case: a single-request create whose answer was lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
from _servers import BUCKET, S3Server

from asyncstore import TransportError
from asyncstore._backend import MiB
from asyncstore.backends.s3 import S3Backend
from asyncstore.testing import FaultConformance, FaultProxy, Seen

pytestmark = [
    pytest.mark.filterwarnings("ignore:aiobotocore's httpx backend:DeprecationWarning"),
]

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


@dataclasses.dataclass(frozen=True)
class Place:
    """A prefix of the moto bucket, checked by boto3 straight at moto (not through the proxy)."""

    s3: S3Server
    prefix: str

    def keys(self) -> list[str]:
        return [key.removeprefix(self.prefix + "/") for key in self.s3.keys(self.prefix + "/")]

    def uploads(self) -> list[str]:
        return self.s3.uploads(self.prefix + "/")

    def get(self, key: str) -> dict[str, Any]:
        return dict(self.s3.boto.get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}"))

    def clean(self) -> None:
        self.s3.clean(self.prefix + "/")


def new_place(s3: S3Server) -> Place:
    return Place(s3, f"f-{uuid.uuid4().hex[:12]}")


def is_part(seen: Seen) -> bool:
    return seen.method == "PUT" and "partNumber=" in seen.target


def is_complete(seen: Seen) -> bool:
    return seen.method == "POST" and "uploadId=" in seen.target


class TestS3Faults(FaultConformance):
    """FaultConformance on moto (multipart uploads: UploadPart, CompleteMultipartUpload)."""

    error_bodies: ClassVar[Mapping[int, bytes]] = {503: SLOW_DOWN, 500: INTERNAL}
    timeout_url = "s3://bkt/p?endpoint=http://127.0.0.1:1"

    @pytest.fixture
    def upstream(self, s3: S3Server) -> int:
        return int(s3.moto_endpoint.rsplit(":", 1)[1])

    @pytest.fixture
    def place(self, s3: S3Server) -> Iterator[Place]:
        place = new_place(s3)
        yield place
        place.clean()

    @pytest.fixture(scope="class")
    @classmethod
    def stored(cls, s3: S3Server) -> Iterator[Place]:
        place = new_place(s3)
        s3.boto.put_object(Bucket=BUCKET, Key=f"{place.prefix}/{cls.key}", Body=cls.data())
        yield place
        place.clean()

    def make_backend(self, place: Place, endpoint: str, **options: Any) -> S3Backend:
        return S3Backend(BUCKET, place.prefix, endpoint=endpoint, **options)

    def is_part(self, seen: Seen) -> bool:
        return is_part(seen)

    def is_commit(self, seen: Seen) -> bool:
        return is_complete(seen)

    def is_abort(self, seen: Seen) -> bool:
        return seen.method == "DELETE" and "uploadId=" in seen.target

    async def version(self, place: Place, key: str) -> str:
        return str((await anyio.to_thread.run_sync(place.get, key))["ETag"])

    async def objects(self, place: Place) -> list[str]:
        return sorted(await anyio.to_thread.run_sync(place.keys))

    async def leftovers(self, place: Place) -> list[str]:
        return await anyio.to_thread.run_sync(place.uploads)

    async def stored_digest(self, place: Place, key: str) -> str:
        body = (await anyio.to_thread.run_sync(place.get, key))["Body"].read()
        return "sha256:" + hashlib.sha256(body).hexdigest()

    # -- S3's own cases ----------------------------------------------------------------------

    async def test_a_single_request_create_whose_answer_was_lost_succeeds_on_retry(
        self, place: Place, proxy: FaultProxy
    ) -> None:
        """The PUT landed, the answer was lost: the retry meets its own object (412 on a
        create-if-absent PUT) and recognises it by its sha256 instead of failing."""
        data = self.data()[:MiB]
        injected = proxy.add(
            "reset_response",
            match=lambda s: s.method == "PUT" and "uploadId=" not in s.target,
            after=None,
        )
        async with self.make_store(place, proxy) as store:
            with anyio.fail_after(self.hang_guard):
                result = await store.put("once", data, mode="create")
        assert injected.fired == 1
        assert result.sha256 == "sha256:" + hashlib.sha256(data).hexdigest()
        assert await self.stored_digest(place, "once") == result.sha256
        assert await self.objects(place) == ["once"]
        assert await self.leftovers(place) == []

    async def test_a_completion_that_fails_inside_its_200_answer_is_retried(
        self, place: Place, proxy: FaultProxy
    ) -> None:
        """S3 may fail CompleteMultipartUpload after its 200 has begun: the error is in the
        body. It is a 500 to asyncstore (as to botocore): retried, and the upload lands."""
        injected = proxy.add("status", match=is_complete, status=200, body=INTERNAL)
        async with self.make_store(place, proxy) as store:
            with anyio.fail_after(self.hang_guard):
                result = await store.put("completed", self.data())
        assert injected.fired == 1
        assert len([seen for seen in proxy.seen if is_complete(seen)]) == 2
        assert result.sha256 == self.digest()
        assert await self.stored_digest(place, "completed") == self.digest()
        assert await self.leftovers(place) == []

    async def test_an_unreadable_answer_to_create_is_an_error_naming_the_key(
        self, place: Place, proxy: FaultProxy
    ) -> None:
        """A 200 to CreateMultipartUpload whose body is no InitiateMultipartUploadResult: a
        TransportError that names the key and what was wrong, retried, and then raised."""
        injected = proxy.add(
            "status",
            match=lambda seen: seen.method == "POST" and "uploads" in seen.target,
            status=200,
            body=b"<html>a captive portal</html>",
            content_type="text/html",
            times=None,
        )
        async with self.make_store(place, proxy) as store:
            with anyio.fail_after(self.hang_guard), pytest.raises(TransportError) as raised:
                await store.put("unread", self.data())
        assert injected.fired >= 2  # retried before giving up
        message = str(raised.value)
        assert "'unread'" in message and "could not be read" in message
        assert await self.objects(place) == []
        assert await self.leftovers(place) == []
