"""The in-memory backend: a real backend with the same semantics as the others.

Objects live in a dict for the lifetime of the backend (or, with
``memory://name``, of the process, shared by every store opened with that
name). Each object is kept as the list of the segments it was written in, so
committing a multipart upload never copies the whole object.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from urllib.parse import SplitResult

import anyio.lowlevel

from .._backend import (
    Backend,
    Capabilities,
    CompletedPart,
    IteratorReadStream,
    MiB,
    ReadStream,
    WriteAttributes,
    WriteResult,
)
from .._errors import (
    AlreadyExistsError,
    ConfigurationError,
    InvalidRangeError,
    NotFoundError,
    PreconditionFailedError,
    UploadNotFoundError,
    redact_url,
)
from .._types import CommonPrefix, ObjectInfo

__all__ = ["MemoryBackend", "from_url"]

_READ_PIECE = 4 * MiB
_generations = itertools.count(1)


@dataclasses.dataclass(slots=True)
class _Object:
    segments: tuple[bytes, ...]
    starts: tuple[int, ...]  # offset of each segment, for bisect
    info: ObjectInfo

    def pieces(self, start: int, end: int) -> Iterator[bytes]:
        index = max(bisect.bisect_right(self.starts, start) - 1, 0)
        pos = start
        while pos < end and index < len(self.segments):
            seg, seg_start = self.segments[index], self.starts[index]
            stop = min(end, seg_start + len(seg))
            while pos < stop:
                piece_end = min(stop, pos + _READ_PIECE)
                yield seg[pos - seg_start : piece_end - seg_start]
                pos = piece_end
            index += 1


@dataclasses.dataclass(slots=True)
class _Upload:
    key: str
    attrs: WriteAttributes
    parts: dict[int, bytes] = dataclasses.field(default_factory=dict)


class MemoryBackend(Backend):
    """Objects in process memory. ``Store(backend=MemoryBackend())`` is the quickest store."""

    capabilities = Capabilities(parallel_parts=True)

    def __init__(self) -> None:
        self._objects: dict[str, _Object] = {}
        self._uploads: dict[str, _Upload] = {}

    def describe(self) -> str:
        return f"memory ({len(self._objects)} objects)"

    def _get(self, key: str) -> _Object:
        try:
            return self._objects[key]
        except KeyError:
            raise NotFoundError(f"no object at key {key!r}", key=key) from None

    def _check(self, key: str, attrs: WriteAttributes) -> None:
        current = self._objects.get(key)
        if attrs.if_none_match and current is not None:
            raise AlreadyExistsError(f"key {key!r} already exists", key=key)
        if attrs.if_match is not None and (current is None or current.info.etag != attrs.if_match):
            raise PreconditionFailedError(
                f"key {key!r} does not have ETag {attrs.if_match!r}", key=key
            )

    def _commit(self, key: str, segments: Sequence[bytes], attrs: WriteAttributes) -> WriteResult:
        self._check(key, attrs)
        starts = tuple(itertools.accumulate((len(s) for s in segments[:-1]), initial=0))
        info = ObjectInfo(
            key=key,
            size=sum(len(s) for s in segments),
            etag=f"{next(_generations):016x}",
            last_modified=datetime.datetime.now(datetime.timezone.utc),
            content_type=attrs.content_type,
            metadata=dict(attrs.metadata),
        )
        self._objects[key] = _Object(tuple(segments), starts, info)
        return WriteResult(etag=info.etag)

    async def head(self, key: str) -> ObjectInfo:
        await anyio.lowlevel.checkpoint()
        return self._get(key).info

    async def read(
        self, key: str, start: int = 0, end: int | None = None, *, if_match: str | None = None
    ) -> ReadStream:
        await anyio.lowlevel.checkpoint()
        obj = self._get(key)
        if if_match is not None and obj.info.etag != if_match:
            raise PreconditionFailedError(
                f"key {key!r} changed: ETag is {obj.info.etag!r}, not {if_match!r}", key=key
            )
        size = obj.info.size
        if start > size:
            raise InvalidRangeError(
                f"range start {start} is past the end of key {key!r} ({size} bytes)", key=key
            )
        stop = size if end is None else min(end, size)
        return IteratorReadStream(obj.info, _yield_pieces(obj.pieces(start, stop)))

    async def put(
        self,
        key: str,
        data: memoryview,
        attrs: WriteAttributes,
        checksums: Mapping[str, bytes],
    ) -> WriteResult:
        await anyio.lowlevel.checkpoint()
        return self._commit(key, [bytes(data)], attrs)

    async def create_upload(self, key: str, attrs: WriteAttributes) -> str:
        await anyio.lowlevel.checkpoint()
        upload_id = uuid.uuid4().hex
        self._uploads[upload_id] = _Upload(key, attrs)
        return upload_id

    def _upload(self, key: str, upload_id: str) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise UploadNotFoundError(f"no upload {upload_id!r} for key {key!r}", key=key)
        return upload

    async def upload_part(
        self,
        key: str,
        upload_id: str,
        number: int,
        offset: int,
        data: memoryview,
        checksums: Mapping[str, bytes],
    ) -> CompletedPart:
        await anyio.lowlevel.checkpoint()
        upload = self._upload(key, upload_id)
        upload.parts[number] = bytes(data)
        return CompletedPart(number, offset, len(data), etag=str(number), checksums=checksums)

    async def complete_upload(
        self, key: str, upload_id: str, parts: Sequence[CompletedPart], attrs: WriteAttributes
    ) -> WriteResult:
        await anyio.lowlevel.checkpoint()
        upload = self._upload(key, upload_id)
        try:
            segments = [upload.parts[part.number] for part in parts]
        except KeyError as exc:
            raise UploadNotFoundError(
                f"upload {upload_id!r} for key {key!r} has no part {exc.args[0]}", key=key
            ) from None
        result = self._commit(key, segments, attrs)
        del self._uploads[upload_id]
        return result

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._uploads.pop(upload_id, None)

    async def pending_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        """``(key, upload id)`` of the multipart uploads under ``prefix`` not yet finished."""
        await anyio.lowlevel.checkpoint()
        return sorted(
            (upload.key, upload_id)
            for upload_id, upload in self._uploads.items()
            if upload.key.startswith(prefix)
        )

    async def list(
        self, prefix: str = "", *, delimiter: str | None = None
    ) -> AsyncIterator[ObjectInfo | CommonPrefix]:
        keys = sorted(k for k in self._objects if k.startswith(prefix))
        last_prefix: str | None = None
        for count, key in enumerate(keys):
            if count % 1000 == 0:
                await anyio.lowlevel.checkpoint()
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    if common != last_prefix:
                        last_prefix = common
                        yield CommonPrefix(common)
                    continue
            obj = self._objects.get(key)
            if obj is not None:
                yield obj.info

    async def delete(self, key: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._objects.pop(key, None)

    async def copy(self, src: str, dst: str) -> WriteResult:
        await anyio.lowlevel.checkpoint()
        obj = self._get(src)
        attrs = WriteAttributes(obj.info.content_type, obj.info.metadata)
        return self._commit(dst, obj.segments, attrs)


async def _yield_pieces(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        await anyio.lowlevel.checkpoint()
        yield piece


_named: dict[str, MemoryBackend] = {}


def from_url(url: SplitResult, **options: object) -> MemoryBackend:
    """Open ``memory://`` (a fresh, private store) or ``memory://name`` (shared in-process)."""
    if options:
        raise ConfigurationError(
            f"memory:// takes no options; got {', '.join(sorted(options))}",
            key=sorted(options)[0],
        )
    if url.path not in ("", "/") or url.query:
        raise ConfigurationError(
            f"memory URL {redact_url(url.geturl())!r} takes only a name: "
            "memory:// or memory://name",
            key=redact_url(url.geturl()),
        )
    if not url.netloc:
        return MemoryBackend()
    return _named.setdefault(url.netloc, MemoryBackend())
