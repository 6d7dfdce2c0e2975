"""Multipart uploads on GCS: parallel composite uploads and resumable sessions.

GCS's JSON API has no multipart upload of the S3 kind. The backend offers two
ways to send an object in parts; the ``upload=`` option picks the one new
uploads use (composite by default), and either kind of upload id is
understood whatever the option says:

**Composite** (``gcs-composite.<tag>.<uuid>``): every part is uploaded in
parallel, in one request, as a temporary object
``<prefix>/.asyncstore-uploads/<uuid>/<part number>`` carrying its crc32c
(GCS checks it). ``complete_upload`` composes the parts (32 per ``compose``
call, in a tree of intermediate composites for more, at most 1024 parts in
all), the last compose creating the object with its content type, its
metadata (the sha256 included) and the write's ``ifGenerationMatch``. The
object's crc32c, computed by GCS, is checked against the parts' crc32cs
combined; then the temporaries are deleted (a transient failure of that
clean-up is retried here: the Store does not repeat a commit that succeeded).
``abort_upload`` deletes them. A final compose whose answer was lost may have
landed: when its retry then fails its condition (412), the object is read
back, and it is this upload's if it holds its sha256 and size.

**Resumable** (``gcs-resumable.<tag>.<session id>``): a resumable upload
session; parts go in order (``parallel_parts=False``; a part that starts
past the bytes the session has is InvalidOffsetError), each as one ``PUT``
of a multiple of 256 KiB. A part's last bytes that do not fill 256 KiB are
kept in memory (less than 256 KiB) and sent with the next part, or with the
final request. After a transport error the next attempt asks the session for
its committed offset and resumes from there. The final request carries the
whole object's crc32c (``X-Goog-Hash``, from the parts' crc32cs); metadata is
fixed when the session starts, so the sha256, known only at the end, is
patched in right after (``ifGenerationMatch`` / ``ifMetagenerationMatch`` of
the new object).

The ``<tag>`` (16 hex digits of the sha256 of the object name) ties an id to
its key: another key's id is UploadNotFoundError without a request. A
resumable session id is the service's ``upload_id``; the session URL is
rebuilt from the configured API root, so an id can never send bytes elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

import anyio

from ..._backend import CompletedPart, KiB, WriteAttributes, WriteResult
from ..._errors import (
    AlreadyExistsError,
    IntegrityError,
    InvalidArgumentError,
    InvalidOffsetError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    TransportError,
    UploadNotFoundError,
)
from ..._meta import SHA256
from ..._stream._tasks import task_group
from .._http import StreamedBody
from ._api import JSON, JSON_TIMEOUT, BodyPieces, GCSApi, conditions, decode_json
from ._crc32c import combine_all, from_base64, to_base64
from ._objects import delete_names, write_resource
from ._translate import Where, gcs_errors

__all__ = ["QUANTUM", "TEMP_SEGMENT", "UPLOAD_KEY", "Uploads"]

logger = logging.getLogger("asyncstore.gcs")

#: The path segment under which composite uploads keep their temporary parts.
TEMP_SEGMENT = ".asyncstore-uploads"
#: Metadata of a temporary part: the store key of its upload (for `Uploads.pending`).
UPLOAD_KEY = "asyncstore-upload-key"
#: Chunks of a resumable session (but the last) are multiples of this.
QUANTUM = 256 * KiB
#: Sources per compose call (the service's limit).
COMPOSE_LIMIT = 32
#: Compose calls of one tree level in flight at once.
COMPOSE_CONCURRENCY = 8
#: Seconds the temporaries' clean-up may take after a commit or a cancellation.
CLEANUP_TIMEOUT = 30.0
#: Attempts at the clean-up of a committed upload's temporaries (a listing and batch
#: deletes, all idempotent), and the seconds before the second one (doubling, at most 2 s).
CLEANUP_ATTEMPTS = 5
CLEANUP_BACKOFF = 0.2
#: Attempts at a chunk the service persisted only in part before giving up.
_SHORT_WRITES = 3

_ID = re.compile(r"^gcs-(composite|resumable)\.([0-9a-f]{16})\.([A-Za-z0-9%._~-]{1,2048})$")
_UUID = re.compile(r"^[0-9a-f]{32}$")
_RANGE = re.compile(r"^bytes=0-(\d+)$")


def _tag(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]


def _contiguous(key: str, upload_id: str, parts: Sequence[CompletedPart]) -> int:
    """The total size of ``parts``, checked to follow each other from offset 0."""
    expected = 0
    for part in parts:
        if part.offset != expected or part.size < 0:
            raise InvalidArgumentError(
                f"parts of upload {upload_id!r} for key {key!r} are not contiguous: "
                f"part {part.number} starts at {part.offset}, expected {expected}",
                key=key,
            )
        expected += part.size
    return expected


def _combined_crc(parts: Sequence[CompletedPart]) -> int | None:
    """The whole object's crc32c from its parts', if every part has one."""
    values = []
    for part in parts:
        crc = part.checksums.get("crc32c")
        if crc is None:
            return None
        values.append((int.from_bytes(crc, "big"), part.size))
    return combine_all(values)


@dataclasses.dataclass(slots=True)
class _Session:
    """What this process knows of a resumable session.

    Attributes:
        committed: Bytes the service has persisted, or None when unknown
            (a new process, or after an error): then it is asked.
        tail_start: Offset of ``tail`` in the object.
        tail: Bytes accepted from parts but not sent yet (less than 256 KiB,
            unless a send failed).
        done: The object resource, once the session has been finalised.
        create: Whether the session creates its object only if the key is absent.
    """

    committed: int | None = None
    tail_start: int = 0
    tail: bytes = b""
    done: JSON | None = None
    create: bool = False
    lock: anyio.Lock = dataclasses.field(default_factory=anyio.Lock)

    @property
    def held_end(self) -> int:
        return max(self.committed or 0, self.tail_start + len(self.tail))


class Uploads:
    """The multipart primitives of one GCS backend, over its `GCSApi`.

    It knows the backend only through the API object (bucket, prefix, requests)
    and the shared object operations of ``_objects.py``: this module never
    imports ``_backend.py``, which builds it.
    """

    def __init__(self, api: GCSApi) -> None:
        self._api = api
        self._sessions: dict[str, _Session] = {}
        # Composite uploads whose final compose failed in a way that may hide its success
        # (a lost answer, a cancellation): a retry that meets its own object must not
        # take it for another writer's.
        self._uncertain: set[str] = set()

    # -- ids

    def _parse(
        self, key: str, name: str, upload_id: object
    ) -> tuple[Literal["composite", "resumable"], str]:
        match = _ID.match(upload_id) if isinstance(upload_id, str) else None
        if match is None or match.group(2) != _tag(name):
            raise UploadNotFoundError(f"no upload {upload_id!r} for key {key!r}", key=key)
        kind, token = match.group(1), match.group(3)
        if kind == "composite":
            if not _UUID.match(token):
                raise UploadNotFoundError(f"no upload {upload_id!r} for key {key!r}", key=key)
            return "composite", token
        return "resumable", unquote(token)

    def _where(self, key: str | None, **flags: bool) -> Where:
        return Where(self._api.bucket, key, **flags)

    def _temp_prefix(self, uid: str) -> str:
        return f"{self._api.root}{TEMP_SEGMENT}/{uid}/"

    # -- the four primitives

    async def create(
        self, key: str, name: str, attrs: WriteAttributes, method: Literal["composite", "resumable"]
    ) -> str:
        """Start an upload of ``method``; return its id."""
        params = conditions(attrs, key)  # rejects an impossible if_match before any request
        if method == "resumable":
            return await self._create_session(key, name, attrs, params)
        return f"gcs-composite.{_tag(name)}.{uuid.uuid4().hex}"

    async def part(
        self,
        key: str,
        name: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        """Upload part ``number``: a temporary object, or the next bytes of the session."""
        if number < 1 or offset < 0:
            raise InvalidArgumentError(
                f"part {number} at offset {offset} of upload {upload_id!r} for key {key!r}: "
                "part numbers start at 1 and offsets at 0",
                key=key,
            )
        kind, token = self._parse(key, name, upload_id)
        if kind == "composite":
            return await self._composite_part(key, token, number, offset, data, checksums)
        return await self._session_part(
            key, name, upload_id, token, number, offset, data, checksums
        )

    async def stream(
        self,
        key: str,
        name: str,
        upload_id: str,
        size: int,
        chunks: Callable[[int], AsyncGenerator[memoryview, None]],
    ) -> None:
        """Send a session all its bytes in one request, from where the session stands.

        The request's ``Content-Range`` gives the object's size, so the session is
        finished when the request is; ``complete`` then checks its crc32c against the
        parts' and patches in the sha256. A request that broke is resumed by the next
        call, from the session's committed offset (asked of it, as after a broken part).
        """
        kind, token = self._parse(key, name, upload_id)
        if kind != "resumable":
            raise InvalidArgumentError(
                f"upload {upload_id!r} of key {key!r} is a composite upload: its parts are "
                "uploaded one by one",
                key=key,
            )
        api = self._api
        session = self._known(upload_id)
        async with session.lock:
            await self._refresh(key, name, token, session)
            if session.done is not None:
                return  # finished by an attempt whose answer was lost
            assert session.committed is not None
            start = session.committed
            try:
                async with contextlib.aclosing(chunks(start)) as body:
                    response, answer = await api.send(
                        "PUT",
                        api.upload_url,
                        self._where(key, upload=True, create=session.create),
                        params=self._session_params(name, token),
                        headers={
                            "Content-Range": (
                                f"bytes {start}-{size - 1}/{size}"
                                if start < size
                                else f"bytes */{size}"
                            )
                        },
                        content=StreamedBody(size - start, body) if start < size else b"",
                        ok=(308,),
                    )
            except BaseException:
                session.committed = None  # ask the session before sending more
                raise
            if response.status_code == 308:
                session.committed = None
                raise TransportError(
                    f"the upload session of key {key!r} did not take all {size} bytes (it has "
                    f"{_committed(response.headers.get('range'))})",
                    key=key,
                )
            session.done = decode_json(answer, self._where(key))

    async def complete(
        self,
        key: str,
        name: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        attrs: WriteAttributes,
    ) -> WriteResult:
        """Commit the upload as the object ``name`` with ``attrs``."""
        kind, token = self._parse(key, name, upload_id)
        total = _contiguous(key, upload_id, parts)
        params = conditions(attrs, key)
        if kind == "composite":
            return await self._compose(key, name, token, parts, attrs, params)
        return await self._finish_session(key, name, upload_id, token, parts, total, attrs)

    async def abort(self, key: str, name: str, upload_id: str) -> None:
        """Delete the temporaries / cancel the session; idempotent."""
        try:
            kind, token = self._parse(key, name, upload_id)
        except UploadNotFoundError:
            return
        if kind == "composite":
            self._uncertain.discard(token)
            await self._delete_temporaries(token)
        else:
            self._sessions.pop(upload_id, None)
            await self._cancel_session(key, name, token)

    # -- composite

    async def _composite_part(
        self,
        key: str,
        uid: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        temp = f"{self._temp_prefix(uid)}{number:05d}"
        resource = write_resource(temp, WriteAttributes(metadata={UPLOAD_KEY: key}), checksums)
        where = self._where(key, write=True)
        result = await self._api.upload_multipart(resource, data, where)
        return CompletedPart(
            number, offset, data.nbytes, etag=str(result["generation"]), checksums=checksums
        )

    async def _compose(
        self,
        key: str,
        name: str,
        uid: str,
        parts: Sequence[CompletedPart],
        attrs: WriteAttributes,
        params: Mapping[str, str],
    ) -> WriteResult:
        if not parts:
            raise InvalidArgumentError(f"upload of key {key!r} has no parts to compose", key=key)
        api = self._api
        prefix = self._temp_prefix(uid)
        sources = [f"{prefix}{part.number:05d}" for part in parts]
        level = 0
        while len(sources) > COMPOSE_LIMIT:
            sources = await self._compose_level(key, prefix, level, sources)
            level += 1
        destination = {
            "contentType": attrs.content_type or "application/octet-stream",
            "metadata": dict(attrs.metadata),
        }
        where = self._where(key, upload=True, create=attrs.if_none_match)
        try:
            resource = await api.send_json(
                "POST",
                f"{api.object_url(name)}/compose",
                where,
                params={**api.params(), **params},
                json_body={
                    "sourceObjects": [{"name": source} for source in sources],
                    "destination": destination,
                },
            )
        except (AlreadyExistsError, PreconditionFailedError) as exc:
            if uid not in self._uncertain:
                raise
            # An earlier attempt's compose may have landed, its answer lost; the condition
            # then fails on this upload's own object.
            resource = await self._own_object(key, name, parts, attrs, exc)
        except BaseException as exc:
            if isinstance(exc, TransportError) or not isinstance(exc, Exception):
                self._uncertain.add(uid)  # lost, timed out or cancelled: it may have landed
            raise
        self._uncertain.discard(uid)
        await self._check_crc(key, name, resource, parts)
        await self._cleanup(uid)
        return WriteResult(etag=str(resource["generation"]))

    async def _own_object(
        self,
        key: str,
        name: str,
        parts: Sequence[CompletedPart],
        attrs: WriteAttributes,
        conflict: StoreError,
    ) -> JSON:
        """The object at ``name`` if it is the one this upload composed.

        It is when it holds this upload's sha256 (the metadata the compose
        sets) and size.

        Raises:
            StoreError: ``conflict`` (the condition's failure), when it is not.
        """
        sha = attrs.metadata.get(SHA256)
        try:
            resource = await self._api.resource(name, self._where(key))
        except NotFoundError:
            resource = {}
        recorded = resource.get("metadata") or {}
        size = sum(part.size for part in parts)
        if (
            sha is None
            or not isinstance(recorded, dict)
            or recorded.get(SHA256) != sha
            or str(resource.get("size")) != str(size)
        ):
            raise conflict
        return resource

    async def _compose_level(
        self, key: str, prefix: str, level: int, sources: Sequence[str]
    ) -> list[str]:
        """Compose ``sources`` in groups of 32 into intermediate temporaries."""
        api = self._api
        groups = [sources[i : i + COMPOSE_LIMIT] for i in range(0, len(sources), COMPOSE_LIMIT)]
        targets = [f"{prefix}c{level}-{index:05d}" for index in range(len(groups))]
        limiter = anyio.CapacityLimiter(COMPOSE_CONCURRENCY)
        where = self._where(key, upload=True)

        async def compose(target: str, group: Sequence[str]) -> None:
            async with limiter:
                with gcs_errors(where):
                    await api.storage.compose(
                        api.bucket,
                        target,
                        list(group),
                        content_type="application/octet-stream",
                        params=api.params(),
                        timeout=JSON_TIMEOUT,
                    )

        async with task_group() as tg:
            for target, group in zip(targets, groups, strict=True):
                tg.start_soon(compose, target, group)
        return targets

    async def _temp_names(self, uid: str) -> list[str]:
        api = self._api
        prefix = self._temp_prefix(uid)
        names: list[str] = []
        token: str | None = None
        where = self._where(None)
        while True:
            params = api.params(prefix=prefix, pageToken=token, fields="items(name),nextPageToken")
            with gcs_errors(where):
                page = await api.storage.list_objects(
                    api.bucket, params=params, timeout=JSON_TIMEOUT
                )
            names.extend(str(item["name"]) for item in page.get("items") or [])
            token = page.get("nextPageToken") or None
            if token is None:
                return names

    async def pending(self, prefix: str) -> list[tuple[str, str]]:
        """``(key, upload id)`` of the composite uploads under ``prefix`` with parts stored.

        Each temporary part records its upload's key (`UPLOAD_KEY`); resumable
        sessions cannot be listed (the JSON API has no call for it).
        """
        api = self._api
        found: set[tuple[str, str]] = set()
        token: str | None = None
        where = self._where(None)
        while True:
            params = api.params(
                prefix=f"{api.root}{TEMP_SEGMENT}/",
                pageToken=token,
                fields="items(name,metadata),nextPageToken",
            )
            with gcs_errors(where):
                page = await api.storage.list_objects(
                    api.bucket, params=params, timeout=JSON_TIMEOUT
                )
            for item in page.get("items") or []:
                key = (item.get("metadata") or {}).get(UPLOAD_KEY)
                uid = str(item["name"])[len(f"{api.root}{TEMP_SEGMENT}/") :].split("/")[0]
                if isinstance(key, str) and key.startswith(prefix) and _UUID.match(uid):
                    found.add((key, f"gcs-composite.{_tag(api.root + key)}.{uid}"))
            token = page.get("nextPageToken") or None
            if token is None:
                return sorted(found)

    async def _delete_temporaries(self, uid: str) -> None:
        names = await self._temp_names(uid)
        await delete_names(self._api, names)

    async def _cleanup(self, uid: str) -> None:
        """Delete the temporaries of a committed upload, whatever happens to the caller.

        The Store does not retry this (``complete_upload`` has succeeded, and
        repeating it would compose again), so a TransportError is retried here,
        a few times within `CLEANUP_TIMEOUT`. The object is committed: a failed
        clean-up does not fail the upload (what remains is under
        ``.asyncstore-uploads/``, see the docs), but it is logged.
        """
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT) as scope:
            for attempt in range(1, CLEANUP_ATTEMPTS + 1):
                try:
                    await self._delete_temporaries(uid)
                except TransportError as exc:
                    if attempt == CLEANUP_ATTEMPTS:
                        _cleanup_failed(self._temp_prefix(uid), exc)
                        return
                    await anyio.sleep(min(CLEANUP_BACKOFF * 2 ** (attempt - 1), 2.0))
                except StoreError as exc:
                    _cleanup_failed(self._temp_prefix(uid), exc)
                    return
                else:
                    return
        if scope.cancelled_caught:
            _cleanup_failed(self._temp_prefix(uid), None)

    async def _check_crc(
        self, key: str, name: str, resource: JSON, parts: Sequence[CompletedPart]
    ) -> None:
        """Compare the committed object's crc32c with the parts'; delete it on a mismatch.

        Raises:
            IntegrityError: the crc32cs differ (the object is deleted).
        """
        expected = _combined_crc(parts)
        actual = from_base64(str(resource.get("crc32c", "")))
        if expected is None or actual is None or expected == actual:
            return
        api = self._api
        generation = str(resource["generation"])
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(CLEANUP_TIMEOUT),
            contextlib.suppress(StoreError),
        ):
            await api.send(
                "DELETE",
                api.object_url(name),
                self._where(key),
                params=api.params(ifGenerationMatch=generation),
            )
        raise IntegrityError(
            f"key {key!r}: GCS computed crc32c {to_base64(actual)} for the committed object, "
            f"but its parts add up to {to_base64(expected)}; the object was deleted",
            key=key,
        )

    # -- resumable sessions

    def _session_params(self, name: str, token: str) -> dict[str, str]:
        return {"uploadType": "resumable", "name": name, "upload_id": token}

    async def _create_session(
        self, key: str, name: str, attrs: WriteAttributes, params: Mapping[str, str]
    ) -> str:
        api = self._api
        resource = write_resource(name, attrs)
        where = self._where(key, create=attrs.if_none_match, write=True)
        response, _ = await api.send(
            "POST",
            api.upload_url,
            where,
            params={**api.params(uploadType="resumable", name=name), **params},
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "X-Upload-Content-Type": attrs.content_type or "application/octet-stream",
            },
            content=json.dumps(resource).encode("utf-8"),
        )
        location = response.headers.get("location", "")
        tokens = parse_qs(urlsplit(location).query).get("upload_id")
        if not tokens:
            raise StoreError(
                f"GCS started an upload session for key {key!r} without a session URL "
                f"({location!r})",
                key=key,
            )
        upload_id = f"gcs-resumable.{_tag(name)}.{quote(tokens[0], safe='')}"
        self._sessions[upload_id] = _Session(committed=0, create=attrs.if_none_match)
        return upload_id

    async def _query(self, key: str, name: str, token: str) -> tuple[int, JSON | None]:
        """Ask the session for its committed offset (and its object, if it is finalised)."""
        api = self._api
        response, body = await api.send(
            "PUT",
            api.upload_url,
            self._where(key, upload=True),
            params=self._session_params(name, token),
            headers={"Content-Range": "bytes */*"},
            content=b"",
            ok=(308,),
        )
        if response.status_code == 308:
            return _committed(response.headers.get("range")), None
        return -1, decode_json(body, self._where(key))

    def _known(self, upload_id: str) -> _Session:
        return self._sessions.setdefault(upload_id, _Session())

    async def _refresh(self, key: str, name: str, token: str, session: _Session) -> None:
        if session.committed is not None or session.done is not None:
            return
        committed, done = await self._query(key, name, token)
        if done is not None:
            session.done = done
        else:
            session.committed = committed

    async def _session_part(
        self,
        key: str,
        name: str,
        upload_id: str,
        token: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        session = self._known(upload_id)
        view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        end = offset + view.nbytes
        part = CompletedPart(number, offset, view.nbytes, etag=str(number), checksums=checksums)
        async with session.lock:
            await self._refresh(key, name, token, session)
            if session.done is not None:
                raise UploadNotFoundError(
                    f"the upload session {upload_id!r} of key {key!r} is already finished",
                    key=key,
                )
            assert session.committed is not None
            if end <= session.held_end:
                return part  # a part sent before (a retry after a lost response)
            position = session.committed
            short_writes = 0
            while True:
                aligned = position + (end - position) // QUANTUM * QUANTUM
                if aligned <= position:
                    break
                pieces = _pieces(session, view, offset, position, aligned, key)
                new = await self._put_chunk(key, name, token, session, position, aligned, pieces)
                if new < aligned:
                    short_writes = short_writes + 1 if new == position else 0
                    if short_writes >= _SHORT_WRITES:
                        session.committed = None
                        raise TransportError(
                            f"the upload session of key {key!r} keeps persisting no bytes at "
                            f"offset {position}",
                            key=key,
                        )
                position = new
            session.tail = b"".join(_pieces(session, view, offset, position, end, key))
            session.tail_start = position
            session.committed = position
        return part

    async def _put_chunk(
        self,
        key: str,
        name: str,
        token: str,
        session: _Session,
        start: int,
        stop: int,
        pieces: Sequence[bytes | memoryview],
    ) -> int:
        """PUT bytes ``[start, stop)`` of the session; return its new committed offset."""
        api = self._api
        try:
            response, _ = await api.send(
                "PUT",
                api.upload_url,
                self._where(key, upload=True),
                params=self._session_params(name, token),
                headers={
                    "Content-Range": f"bytes {start}-{stop - 1}/*",
                },
                content=BodyPieces(*pieces),
                ok=(308,),
            )
        except BaseException:
            session.committed = None  # ask the session before sending more
            raise
        if response.status_code != 308:
            session.committed = None
            raise StoreError(
                f"the upload session of key {key!r} finished before its last part "
                f"(HTTP {response.status_code})",
                key=key,
            )
        committed = _committed(response.headers.get("range"))
        if not start <= committed <= stop:
            session.committed = None
            raise TransportError(
                f"the upload session of key {key!r} reports {committed} bytes after a chunk "
                f"of bytes {start}-{stop}",
                key=key,
            )
        return committed

    async def _finish_session(
        self,
        key: str,
        name: str,
        upload_id: str,
        token: str,
        parts: Sequence[CompletedPart],
        total: int,
        attrs: WriteAttributes,
    ) -> WriteResult:
        api = self._api
        session = self._known(upload_id)
        async with session.lock:
            await self._refresh(key, name, token, session)
            if session.done is None:
                assert session.committed is not None
                committed = session.committed
                tail_end = session.tail_start + len(session.tail)
                if committed < total and (session.tail_start > committed or tail_end != total):
                    raise InvalidOffsetError(
                        f"the upload session of key {key!r} has {committed} bytes, and the "
                        f"{total - committed} bytes after them are not held by this process",
                        key=key,
                    )
                body = session.tail[committed - session.tail_start :] if committed < total else b""
                headers = {
                    "Content-Range": (
                        f"bytes {committed}-{total - 1}/{total}" if body else f"bytes */{total}"
                    ),
                }
                crc = _combined_crc(parts)
                if crc is not None:
                    headers["X-Goog-Hash"] = f"crc32c={to_base64(crc)}"
                try:
                    response, answer = await api.send(
                        "PUT",
                        api.upload_url,
                        self._where(key, upload=True, create=attrs.if_none_match),
                        params=self._session_params(name, token),
                        headers=headers,
                        content=body,
                        ok=(308,),
                    )
                except BaseException:
                    session.committed = None
                    raise
                if response.status_code == 308:
                    session.committed = None
                    raise InvalidOffsetError(
                        f"the upload session of key {key!r} did not take the final {total} "
                        f"bytes (it has {_committed(response.headers.get('range'))})",
                        key=key,
                    )
                session.done = decode_json(answer, self._where(key))
            resource = session.done
        await self._check_crc(key, name, resource, parts)
        await self._patch_metadata(key, name, resource, attrs)
        self._sessions.pop(upload_id, None)
        return WriteResult(etag=str(resource["generation"]))

    async def _patch_metadata(
        self, key: str, name: str, resource: JSON, attrs: WriteAttributes
    ) -> None:
        """Record the final metadata (the sha256) on the object the session created.

        Conditional on the object's generation and metageneration: if another
        writer got there first, its object is left alone (this write did
        commit, and was then replaced).
        """
        recorded = resource.get("metadata") or {}
        wanted = dict(attrs.metadata)
        if all(recorded.get(k) == v for k, v in wanted.items()):
            return
        api = self._api
        params = api.params(
            ifGenerationMatch=str(resource["generation"]),
            ifMetagenerationMatch=str(resource.get("metageneration") or "") or None,
        )
        with gcs_errors(self._where(key)):
            try:
                await api.storage.patch_metadata(
                    api.bucket, name, {"metadata": wanted}, params=params, timeout=JSON_TIMEOUT
                )
            except Exception as exc:
                if getattr(exc, "status", None) not in (404, 412):
                    raise

    async def _cancel_session(self, key: str, name: str, token: str) -> None:
        api = self._api
        await api.send(
            "DELETE",
            api.upload_url,
            self._where(key, upload=True),
            params=self._session_params(name, token),
            content=b"",
            # 499: GCS's answer to a cancel; 404 / 410: gone already; 501: a service that
            # cannot cancel sessions (the emulator): the session, never visible, expires.
            ok=(404, 410, 499, 501),
        )


def _cleanup_failed(prefix: str, exc: StoreError | None) -> None:
    reason = str(exc) if exc is not None else f"it took more than {CLEANUP_TIMEOUT:g} s"
    logger.warning(
        "the temporary parts of a committed upload under %r could not be deleted (%s); "
        "a lifecycle rule on that prefix removes them",
        prefix,
        reason,
    )


def _committed(range_header: str | None) -> int:
    """The committed offset from a session's ``Range: bytes=0-N`` header (none: 0)."""
    if not range_header:
        return 0
    match = _RANGE.match(range_header.strip())
    if match is None:
        raise StoreError(f"GCS sent an unexpected Range header {range_header!r}")
    return int(match.group(1)) + 1


def _pieces(
    session: _Session, data: memoryview, offset: int, start: int, stop: int, key: str
) -> list[bytes | memoryview]:
    """Bytes ``[start, stop)`` of the object from the session's tail and the part ``data``.

    Raises:
        InvalidOffsetError: some of those bytes are in neither.
    """
    pieces: list[bytes | memoryview] = []
    position = start
    tail_end = session.tail_start + len(session.tail)
    if session.tail and session.tail_start <= position < tail_end:
        cut = min(stop, tail_end)
        pieces.append(session.tail[position - session.tail_start : cut - session.tail_start])
        position = cut
    if position < stop:
        if not offset <= position:
            raise InvalidOffsetError(
                f"a resumable upload session takes its bytes in order: the session of key "
                f"{key!r} has {position} bytes, and the part given starts at byte {offset} "
                "(send the parts in order, or use upload='composite')",
                key=key,
            )
        pieces.append(data[position - offset : stop - offset])
    return pieces
