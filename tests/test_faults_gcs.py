"""GCS under faults: gcp-storage-emulator behind the fault-injecting proxy.

`asyncstore.testing.FaultConformance` runs twice on the emulator, once per
upload method: `TestCompositeUploads` (parts as temporary objects, composed,
then deleted; the default) and `TestResumableUploads` (one session, chunks in
order, resumed from the offset the session reports). The downloads, which do not
depend on the upload method, run in the first. Every case moves 64 MiB (8 parts
or ranges of 8 MiB) under asyncio and trio, with nothing left behind by the
emulator's own listing (no object, no temporary part).

The emulator's gaps that matter here (see also tests/test_gcs_backend.py):

* it ignores ``ifGenerationMatch`` everywhere, so a retried compose of a
  create-if-absent upload never meets the 412 that GCS answers; the proxy
  answers it instead (`test_a_lost_compose_answer_of_a_create_is_not_a_conflict`);
* it never persists part of a chunk (the proxy resets its connection, and it
  drops the request), so a session resumes at a chunk boundary here; the
  resume from an unaligned committed offset is tested with the recording proxy
  in test_gcs_backend.py;
* it forgets a finished session: the status query after a lost final answer gets
  404 where GCS answers 200 with the object (an ``xfail``, with a twin,
  `test_a_lost_final_answer_is_read_from_the_session`, where the proxy answers as
  GCS does);
* it cannot cancel a session (``DELETE`` answers 501): an aborted resumable
  upload leaves nothing visible, and the suite checks that the ``DELETE`` is sent;
* it is single-threaded: a request whose client goes away mid-body, or an
  answer the proxy stalls, would block it for every other request, so the
  proxy lets go of the upstream side then; and requests queue behind each
  other, which is why the stall cases keep one request in flight.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal

import anyio
import anyio.to_thread
import httpx
import pytest
from _servers import Emulator, run_emulator

from asyncstore import AlreadyExistsError, ConfigurationError, TimeoutError
from asyncstore._meta import SHA256
from asyncstore.backends.gcs import GCSBackend
from asyncstore.backends.gcs._uploads import TEMP_SEGMENT
from asyncstore.testing import FaultConformance, FaultProxy, FaultSpec, Seen, UploadLog

PREFIX = "f"
BACKEND_ERROR = json.dumps({"error": {"code": 503, "message": "Backend Error"}}).encode()
INTERNAL = json.dumps({"error": {"code": 500, "message": "Internal Error"}}).encode()
PRECONDITION_FAILED = json.dumps({"error": {"code": 412, "message": "Precondition Failed"}})


# -- what the requests are -----------------------------------------------------------------------


def _path(seen: Seen) -> str:
    return seen.target.split("?", 1)[0]


def _query(seen: Seen) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(seen.target.partition("?")[2]))


def is_part(seen: Seen) -> bool:
    """A composite part: one ``uploadType=multipart`` upload of a temporary object."""
    return (
        seen.method == "POST"
        and _path(seen).startswith("/upload/")
        and _query(seen).get("uploadType") == "multipart"
    )


def is_chunk(seen: Seen) -> bool:
    """A chunk of a resumable session (``Content-Range: bytes a-b/*``)."""
    return seen.method == "PUT" and bool(
        re.fullmatch(r"bytes \d+-\d+/\*", seen.header("content-range") or "")
    )


def is_final(seen: Seen) -> bool:
    """The request that finishes a session (it names the total size)."""
    return seen.method == "PUT" and bool(
        re.fullmatch(r"bytes (\d+-\d+|\*)/\d+", seen.header("content-range") or "")
    )


def is_status_query(seen: Seen) -> bool:
    return seen.method == "PUT" and seen.header("content-range") == "bytes */*"


def is_compose(seen: Seen) -> bool:
    return seen.method == "POST" and _path(seen).endswith("/compose")


def is_batch(seen: Seen) -> bool:
    return seen.method == "POST" and _path(seen).startswith("/batch/")


def is_listing(seen: Seen) -> bool:
    return seen.method == "GET" and _path(seen).endswith("/o")


def session_requests(proxy: FaultProxy) -> list[tuple[int, int, Seen]]:
    """(start, end + 1, request) of every request of a session that carried bytes, in order."""
    out = []
    for seen in proxy.seen:
        if seen.method == "PUT":
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\*|\d+)", seen.header("content-range") or "")
            if match:
                out.append((int(match[1]), int(match[2]) + 1, seen))
    return out


# -- the emulator's side -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Place:
    """A bucket of the emulator, checked straight at the emulator (not through the proxy)."""

    emulator: Emulator
    bucket: str

    def names(self) -> list[str]:
        """Every object under the prefix, temporary parts included."""
        return self.emulator.names(self.bucket, PREFIX + "/")

    def read(self, key: str) -> bytes:
        quoted = urllib.parse.quote(f"{PREFIX}/{key}", safe="")
        url = f"{self.emulator.url}/storage/v1/b/{self.bucket}/o/{quoted}?alt=media"
        response = httpx.get(url, timeout=120)
        response.raise_for_status()
        return response.content

    def resource(self, key: str) -> dict[str, Any]:
        return self.emulator.resource(self.bucket, f"{PREFIX}/{key}")


def new_place(emulator: Emulator) -> Iterator[Place]:
    place = Place(emulator, emulator.create_bucket())
    try:
        yield place
    finally:
        emulator.empty(place.bucket)  # it keeps everything in memory


class _GCSFaults(FaultConformance):
    """FaultConformance on the emulator, for one upload method."""

    @pytest.fixture(scope="class")
    @classmethod
    def emulator(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
        """An emulator per class: it never gives back the memory of deleted objects, and
        each class moves a few GiB through it."""
        yield from run_emulator(tmp_path_factory)

    upload: ClassVar[Literal["composite", "resumable"]]
    error_bodies: ClassVar[Mapping[int, bytes]] = {503: BACKEND_ERROR, 500: INTERNAL}
    error_content_type = "application/json"
    timeout_url = "gs://bkt-1/p?api_root=http://127.0.0.1:1"

    @pytest.fixture
    def upstream(self, emulator: Emulator) -> int:
        return int(emulator.url.rsplit(":", 1)[1])

    @pytest.fixture
    def place(self, emulator: Emulator) -> Iterator[Place]:
        yield from new_place(emulator)

    @pytest.fixture(scope="class")
    @classmethod
    def stored(cls, emulator: Emulator) -> Iterator[Place]:
        """The object, with its sha256 recorded, for every download case."""
        for place in new_place(emulator):
            name = f"{PREFIX}/{cls.key}"
            base = f"{emulator.url}/upload/storage/v1/b/{place.bucket}/o"
            with httpx.Client(timeout=120) as client:
                client.post(
                    base, params={"uploadType": "media", "name": name}, content=cls.data()
                ).raise_for_status()
                client.patch(
                    f"{emulator.url}/storage/v1/b/{place.bucket}/o/"
                    + urllib.parse.quote(name, safe=""),
                    json={"metadata": {SHA256: cls.digest()}},
                ).raise_for_status()
            yield place

    def make_backend(self, place: Place, endpoint: str, **options: Any) -> GCSBackend:
        return GCSBackend(place.bucket, PREFIX, api_root=endpoint, upload=self.upload, **options)

    def is_ranged_get(self, seen: Seen) -> bool:
        # A read's first media GET asks without a generation: GCS names the generation
        # in its answer (x-goog-generation), the emulator does not, so the backend drops
        # that answer unread, reads the metadata and reads the ranges pinned. Against the
        # emulator, the pinned GETs are the reads: a fault on the dropped one breaks no read.
        return (
            seen.method == "GET"
            and _query(seen).get("alt") == "media"
            and seen.header("range") is not None
            and "ifGenerationMatch" in _query(seen)
        )

    def pin(self, seen: Seen) -> str | None:
        return _query(seen).get("ifGenerationMatch")

    async def version(self, place: Place, key: str) -> str:
        return str((await anyio.to_thread.run_sync(place.resource, key))["generation"])

    async def objects(self, place: Place) -> list[str]:
        names = await anyio.to_thread.run_sync(place.names)
        return [n.removeprefix(f"{PREFIX}/") for n in names if TEMP_SEGMENT not in n]

    async def leftovers(self, place: Place) -> list[str]:
        return [n for n in await anyio.to_thread.run_sync(place.names) if TEMP_SEGMENT in n]

    async def stored_digest(self, place: Place, key: str) -> str:
        body = await anyio.to_thread.run_sync(place.read, key)
        return "sha256:" + hashlib.sha256(body).hexdigest()


class TestCompositeUploads(_GCSFaults):
    """Composite uploads (the default): parts in parallel, composed, temporaries deleted."""

    upload = "composite"

    def is_part(self, seen: Seen) -> bool:
        return is_part(seen)

    def is_commit(self, seen: Seen) -> bool:
        return is_compose(seen)

    def is_abort(self, seen: Seen) -> bool:
        """The abort lists the temporary parts (then deletes those it finds)."""
        return is_listing(seen) and TEMP_SEGMENT in _query(seen).get("prefix", "")

    def upload_faults(self) -> dict[str, list[FaultSpec]]:
        return {
            **super().upload_faults(),
            "503 on the clean-up": [
                self.error(503, match=lambda s: is_batch(s) or is_listing(s), times=2)
            ],
        }

    def assert_parts_sent_once(self, proxy: FaultProxy, log: UploadLog) -> None:
        super().assert_parts_sent_once(proxy, log)
        assert not any(is_chunk(s) for s in proxy.seen)

    # -- GCS's own cases (composite) -----------------------------------------------------------

    async def test_a_lost_compose_answer_of_a_create_is_not_a_conflict(
        self, place: Place, proxy: FaultProxy
    ) -> None:
        """GCS composed the object, the answer was lost; the retry meets ifGenerationMatch=0.

        The emulator ignores the condition, so the proxy answers the retried compose
        with GCS's 412: the upload did create the object, and must say so.
        """
        lost = proxy.add("reset_response", match=is_compose, after=None)
        conflict = proxy.add(**self.error(412, match=is_compose, body=PRECONDITION_FAILED.encode()))
        async with self.make_store(place, proxy) as store:
            with anyio.fail_after(self.hang_guard):
                result = await store.put(self.key, self.data(), mode="create")
            info = await store.head(self.key)
        assert (lost.fired, conflict.fired) == (1, 1)
        assert result.sha256 == self.digest()
        assert result.etag == info.etag
        assert await self.objects(place) == [self.key]
        assert await self.leftovers(place) == []
        composes = [s for s in proxy.seen if is_compose(s)]
        assert all(_query(s).get("ifGenerationMatch") == "0" for s in composes)

    async def test_a_conflicting_create_is_still_a_conflict(
        self, place: Place, proxy: FaultProxy
    ) -> None:
        """A 412 on a compose whose earlier attempt did not create the object is a conflict."""
        async with self.make_store(place, proxy) as store:
            await store.put(self.key, b"someone else's")
            proxy.add("reset_request", match=is_compose, after=0)  # never reached GCS
            proxy.add(**self.error(412, match=is_compose, body=PRECONDITION_FAILED.encode()))
            with anyio.fail_after(self.hang_guard), pytest.raises(AlreadyExistsError):
                await store.put(self.key, self.data(), mode="create")
            assert await store.get(self.key) == b"someone else's"
        assert await self.objects(place) == [self.key]
        assert await self.leftovers(place) == []

    async def test_gcloud_aio_calls_time_out_at_the_read_timeout_too(
        self, stored: Place, proxy: FaultProxy
    ) -> None:
        """Listing and deleting go through gcloud-aio, which asks for 60 s per call: 0.5 s wins.

        The bound is below one 60 s call: only the configured read timeout can meet it.
        """
        proxy.add(
            "stall",
            match=lambda s: s.method in ("GET", "DELETE"),
            times=None,
            after=None,
            seconds=3600,
        )
        async with self.make_store(stored, proxy, self.few, read_timeout=0.5) as store:
            with anyio.fail_after(50):
                with pytest.raises(TimeoutError):
                    [entry async for entry in store.list()]
                with pytest.raises(TimeoutError):
                    await store.delete("absent")

    def test_timeout_keywords_and_their_defaults(self) -> None:
        assert GCSBackend("bkt-1", connect_timeout=2, read_timeout=0.25).timeouts == (2.0, 0.25)
        assert GCSBackend("bkt-1").timeouts == (30.0, 120.0)

    @pytest.mark.parametrize(
        ("options", "name"),
        [({"read_timeout": -1}, "read_timeout"), ({"connect_timeout": True}, "connect_timeout")],
    )
    def test_bad_timeout_keywords_are_configuration_errors(
        self, options: dict[str, Any], name: str
    ) -> None:
        from asyncstore import open_store

        with pytest.raises(ConfigurationError, match=name) as caught:
            open_store("gs://bkt-1", **options)
        assert caught.value.key == name
        with pytest.raises(ConfigurationError, match=name):
            GCSBackend("bkt-1", **options)

    async def test_the_timeouts_reach_the_client_and_cap_gcloud_aios(self) -> None:
        from asyncstore.backends.gcs._http import _timeout_of

        backend = GCSBackend(
            "bkt-1", api_root="http://127.0.0.1:1", connect_timeout=1.5, read_timeout=7
        )
        try:
            api, _ = await backend._ready()
            assert api.client.timeout == httpx.Timeout(1.5, read=7, write=7, pool=None)
        finally:
            await backend.aclose()
        # gcloud-aio's per-call timeouts (60 s for JSON calls) never lengthen the configured
        assert _timeout_of(60, (1.5, 7.0)) == httpx.Timeout(1.5, read=7, write=7, pool=None)
        assert _timeout_of(3, (1.5, 7.0)) == httpx.Timeout(1.5, read=3, write=3, pool=None)
        assert _timeout_of(None, (1.5, 7.0)) == httpx.Timeout(1.5, read=7, write=7, pool=None)


class TestResumableUploads(_GCSFaults):
    """Resumable uploads: one session, chunks in order, resumed where the session stands."""

    upload = "resumable"
    # The cases that do not depend on the upload method run in TestCompositeUploads only.
    test_a_download_completes_through = None
    test_a_download_completes_through_refused_connections = None
    test_a_download_that_keeps_failing_names_key_and_attempts_and_leaves_no_file = None
    test_a_stalled_read_times_out_at_the_read_timeout = None
    test_a_callers_cancel_scope_bounds_a_download = None
    test_a_server_that_stays_down_is_a_connection_error = None
    test_a_connection_that_never_opens_times_out_at_the_connect_timeout = None
    test_timeouts_are_options_of_the_url = None
    test_a_bad_timeout_option_is_a_configuration_error = None
    xfail: ClassVar[Mapping[str, str]] = {
        "test_an_upload_completes_when_the_completing_answer_is_lost": (
            "the emulator forgets a finished session: the status query that follows the "
            "lost answer gets 404 (GCS answers 200 with the object); "
            "test_a_lost_final_answer_is_read_from_the_session answers as GCS does"
        ),
    }

    def is_part(self, seen: Seen) -> bool:
        return is_chunk(seen)

    def is_commit(self, seen: Seen) -> bool:
        return is_final(seen)

    def is_abort(self, seen: Seen) -> bool:
        return seen.method == "DELETE" and "upload_id=" in seen.target

    def upload_faults(self) -> dict[str, list[FaultSpec]]:
        # Asked for its offset before it has any byte, the emulator answers
        # ``Range: bytes=0-0`` (one byte; GCS sends no Range), then rejects the resumed
        # chunk ("expected 0, got 1"): the answered faults spare the first chunk.
        faults = super().upload_faults()
        faults["5xx burst"] = [{**spec, "skip": 1} for spec in faults["5xx burst"]]
        faults["503 on the status query"] = [
            self.error(503, match=is_chunk, skip=1),  # the chunk's failure, then the query's
            self.error(503, match=is_status_query),
        ]
        return faults

    def exhausting_faults(self) -> dict[str, FaultSpec]:
        # A chunk whose answer is lost is found in the session by the next attempt's
        # status query: the upload goes on, it does not exhaust its retries.
        return {
            name: spec
            for name, spec in super().exhausting_faults().items()
            if spec["kind"] == "status"
        }

    def assert_parts_sent_once(self, proxy: FaultProxy, log: UploadLog) -> None:
        """No request carried bytes the session had acknowledged; never a restart from 0.

        After a broken chunk the upload asks the session for its offset and goes on
        from there. "Acknowledged" is what the emulator itself answered (308 or 200),
        whether or not the answer reached the client; a request whose answer the proxy
        never saw constrains nothing (the session may or may not have taken it).
        """
        assert not any(is_part(s) for s in proxy.seen)
        held = 0
        sent = [(start, end, seen.status) for start, end, seen in session_requests(proxy)]
        for start, end, status in sent:
            assert start >= held, f"bytes {start}-{end} sent after the session held {held}: {sent}"
            if status is not None and status < 400:
                held = max(held, end)
        assert held == self.size, sent
        if log.failed():  # a broken chunk: the session was asked where it stood
            assert any(is_status_query(s) for s in proxy.seen)

    # -- GCS's own cases (resumable) -----------------------------------------------------------

    async def test_a_lost_final_answer_is_read_from_the_session(
        self, place: Place, proxy: FaultProxy
    ) -> None:
        """GCS finished the session and its answer was lost: the status query tells.

        The emulator answers that query with 404 once the session is finished; GCS
        answers 200 with the object, as the proxy does here (with the emulator's resource).
        """
        lost = proxy.add("reset_response", match=is_final, after=None)

        def finished_session(seen: Seen) -> bool:
            if not (lost.fired and is_status_query(seen)):
                return False
            answer.body = json.dumps(place.resource(self.key)).encode()
            return True

        answer = proxy.add(
            "status", match=finished_session, status=200, content_type="application/json"
        )
        async with self.make_store(place, proxy) as store:
            with anyio.fail_after(self.hang_guard):
                result = await store.put(self.key, self.data(), mode="create")
            info = await store.head(self.key)
        assert (lost.fired, answer.fired) == (1, 1)
        assert result.sha256 == self.digest()
        assert result.etag == info.etag
        assert info.sha256 == self.digest()  # recorded by the patch that follows the session
        assert await self.objects(place) == [self.key]
        assert len([s for s in proxy.seen if is_final(s)]) == 1, "the session was finished once"
        assert len([s for s in proxy.seen if is_chunk(s)]) == self.parts, "no chunk sent again"
