"""Resumable upload sessions: state in the store, bytes in the backend's multipart upload.

A session is the folder ``<prefix>uploads/<id>/``:

* ``state.json`` is the source of truth: size, the multipart upload id and its
  parts, the tail, a lease. Every change is a conditional write
  (``if_match`` on the ETag read), so of two racing writers one wins and the
  other sees a precondition failure.
* ``data`` is the key of the multipart upload (created at the first part);
  once complete, it holds the assembled content until it is copied to its
  blob key.
* ``tail-<end>`` holds the last bytes of the session when they are fewer than
  the backend's minimum part size (S3: 5 MiB), until more arrive or the
  session finishes (the last part may be small).
* A session that has no parts and holds at most `INLINE_STATE` bytes keeps
  them in ``state.json`` itself (``inline``, base64), so a small append is one
  write (the state) rather than two (a tail object, then the state), and its
  finish has no tail to read or delete. Such a state is written as format 2;
  any other as format 1, which older versions read too.

An append or a finish first takes the session's *lease* (a conditional write
of the state), so a second append at the same offset fails with
InvalidOffsetError before it uploads anything: two appenders never write the
same part number. The holder renews the lease with every part it commits; a
lease older than ``session_lease`` seconds (a crashed holder) may be taken
over.

The running sha256 cannot be stored (hashlib state does not serialise), so a
copy of it at each committed size is kept in this process, keyed by session
id. A finish that finds the hash at the session's current size does not read
the content again; otherwise (the session was appended to by another process,
or the digest is not sha256) the assembled content is read once to hash it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import dataclasses
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc

from .._backend import CompletedPart
from .._errors import (
    AlreadyExistsError,
    DigestMismatchError,
    IntegrityError,
    InvalidArgumentError,
    InvalidOffsetError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    UploadNotFoundError,
)
from .._store import Store
from .._stream._source import PartReader, open_source
from .._stream._tasks import task_group
from .._types import CommonPrefix, ObjectInfo
from ._blobs import Blobs
from ._digest import Digest, Hasher, hash_bytes
from ._types import Descriptor, UploadStatus

__all__ = ["INLINE_STATE", "Sessions", "Verified", "read_with_etag"]

#: Awaited by a finish once the content is verified, while the blob is stored.
Verified = Callable[[], Awaitable[object]]
_T = TypeVar("_T")

_ID = re.compile(r"[0-9a-f]{32}")
_FORMAT = 1
#: The format of a state that holds its bytes inline (older readers refuse it).
_FORMAT_INLINE = 2
#: Most bytes a session without parts keeps inside its state.json (base64) rather
#: than in a tail object: each append then costs one write instead of two.
INLINE_STATE = 1024 * 1024
#: Recorded on the assembled content when its sha256 is not known at completion
#: (a sha512 session finished in another process); such content is rewritten, never copied.
_UNKNOWN_SHA256 = "sha256:" + "0" * 64
#: Sessions whose running hash is kept in memory, most recently used last.
_CACHE_SIZE = 1024
#: Bytes of state.json kept in memory, as this process last wrote them (see `Sessions._known`).
_STATE_CACHE_BYTES = 8 * 1024 * 1024
_CLAIM_ATTEMPTS = 5
#: Most seconds between two commits of the state during one append.
_COMMIT_INTERVAL = 1.0


async def read_with_etag(store: Store, key: str) -> tuple[bytes, str]:
    """Read a small object and the ETag of exactly the version read.

    Raises:
        NotFoundError: no object at ``key``.
    """
    stream = store.stream(key)
    try:
        data = b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()
    assert stream.info is not None
    return data, stream.info.etag


@dataclasses.dataclass
class _Tail:
    key: str
    size: int


@dataclasses.dataclass
class _Lease:
    owner: str
    expires: float
    action: str


@dataclasses.dataclass
class _State:
    id: str
    created: float
    updated: float
    scope: str | None = None
    size: int = 0
    upload_id: str | None = None
    parts: list[CompletedPart] = dataclasses.field(default_factory=list)
    tail: _Tail | None = None
    lease: _Lease | None = None
    completed: str | None = None  # the sha256 recorded when the multipart upload was completed
    inline: bytes | None = None  # the session's bytes, when it has no parts and few of them

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": _FORMAT if self.inline is None else _FORMAT_INLINE,
            "id": self.id,
            "created": self.created,
            "updated": self.updated,
            "scope": self.scope,
            "size": self.size,
            "upload_id": self.upload_id,
            "parts": [
                {
                    "number": p.number,
                    "offset": p.offset,
                    "size": p.size,
                    "etag": p.etag,
                    "checksums": {
                        k: base64.b64encode(v).decode("ascii") for k, v in p.checksums.items()
                    },
                }
                for p in self.parts
            ],
            "tail": dataclasses.asdict(self.tail) if self.tail else None,
            "lease": dataclasses.asdict(self.lease) if self.lease else None,
            "completed": self.completed,
        }
        if self.inline is not None:
            doc["inline"] = base64.b64encode(self.inline).decode("ascii")
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, session_id: str) -> _State:
        try:
            doc = json.loads(raw)
            if doc["format"] not in (_FORMAT, _FORMAT_INLINE) or doc["id"] != session_id:
                raise ValueError("format or id")
            inline = doc.get("inline")
            if inline is not None and (doc["parts"] or doc["tail"]):
                raise ValueError("inline bytes beside parts or a tail")
            state = cls(
                id=doc["id"],
                created=float(doc["created"]),
                updated=float(doc["updated"]),
                scope=doc["scope"],
                size=int(doc["size"]),
                upload_id=doc["upload_id"],
                parts=[
                    CompletedPart(
                        int(p["number"]),
                        int(p["offset"]),
                        int(p["size"]),
                        str(p["etag"]),
                        {k: base64.b64decode(v) for k, v in p["checksums"].items()},
                    )
                    for p in doc["parts"]
                ],
                tail=_Tail(**doc["tail"]) if doc["tail"] else None,
                lease=_Lease(**doc["lease"]) if doc["lease"] else None,
                completed=doc["completed"],
                inline=base64.b64decode(inline, validate=True) if inline is not None else None,
            )
            if state.inline is not None and len(state.inline) != state.size:
                raise ValueError(f"{len(state.inline)} inline bytes for a size of {state.size}")
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise IntegrityError(
                f"upload session {session_id}: its state.json is not a valid session state "
                f"({type(exc).__name__}: {exc})",
                key=session_id,
            ) from exc
        return state


class _Stale(Exception):
    """A state remembered by this process turned out to be out of date: read it again."""


@dataclasses.dataclass
class _Held:
    """A session whose lease this task holds: its state and the ETag of the last write.

    Also what must follow the next successful commit: the running hash to
    remember (when it covers exactly the committed bytes) and tail objects the
    state no longer names, to delete.
    """

    state: _State
    etag: str
    hasher: Hasher | None = None
    stale: list[str] = dataclasses.field(default_factory=list)
    next_commit: float = 0.0


class _ReadAhead:
    """A PartReader that reads the next part in the background while the caller stores this one.

    An error of the background read is raised by the `read_part` call that
    would have returned its part, so the caller sees it where a plain reader
    would have raised it: after the previous part was stored and recorded.
    The caller cancels ``tg`` once it is done (or failed) to stop a read in flight.
    """

    def __init__(self, inner: PartReader, tg: anyio.abc.TaskGroup) -> None:
        self._inner = inner
        self._tg = tg
        self._done: anyio.Event | None = None
        self._part: memoryview | None = None
        self._error: BaseException | None = None
        self.size = inner.size
        self.part_size = inner.part_size

    async def _fetch(self, done: anyio.Event) -> None:
        try:
            self._part = await self._inner.read_part()
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # handed to the caller of the next read_part
            self._error = exc
        finally:
            done.set()

    async def read_part(self) -> memoryview | None:
        if self._done is None:
            part = await self._inner.read_part()
        else:
            await self._done.wait()
            self._done = None
            error, self._error = self._error, None
            if error is not None:
                raise error
            part, self._part = self._part, None
        if part is not None:
            self._done = anyio.Event()
            self._tg.start_soon(self._fetch, self._done)
        return part

    def release(self, part: memoryview) -> None:
        self._inner.release(part)

    def seek(self, offset: int) -> bool:
        return False  # a part may be in flight

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Pushback:
    """A PartReader whose first part was already read (peeked at): it gives that part first."""

    def __init__(self, inner: PartReader, first: memoryview) -> None:
        self._inner = inner
        self._first: memoryview | None = first
        self.size = inner.size
        self.part_size = inner.part_size

    async def read_part(self) -> memoryview | None:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._inner.read_part()

    def release(self, part: memoryview) -> None:
        self._inner.release(part)

    def seek(self, offset: int) -> bool:
        return False  # a part was taken from the source already

    async def aclose(self) -> None:
        await self._inner.aclose()


def _small_view(chunk: object, limit: int) -> memoryview | None:
    """``chunk`` as bytes when it is an in-memory buffer of at most ``limit`` bytes."""
    if not isinstance(chunk, bytes | bytearray | memoryview):
        return None
    view = memoryview(chunk)
    if view.nbytes > limit:
        return None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _check_id(session_id: object) -> str:
    if not isinstance(session_id, str) or not _ID.fullmatch(session_id):
        raise UploadNotFoundError(
            f"upload session {session_id!r} does not exist (session ids are 32 hex digits)",
            key=str(session_id)[:80],
        )
    return session_id


def _check_scope(scope: object) -> str | None:
    if scope is not None and not isinstance(scope, str):
        raise InvalidArgumentError(
            f"scope must be a str or None, not {type(scope).__name__}", key="scope"
        )
    return scope


class Sessions:
    """The upload sessions of one ContentStore (see the module documentation)."""

    def __init__(self, blobs: Blobs, lease: float) -> None:
        self._blobs = blobs
        self._lease = lease
        self._hashers: collections.OrderedDict[str, tuple[int, Hasher]] = collections.OrderedDict()
        #: sid -> (state.json as this process last wrote it, its ETag), most recent last
        self._states: collections.OrderedDict[str, tuple[bytes, str]] = collections.OrderedDict()
        self._state_bytes = 0

    # -- keys, state ----------------------------------------------------------------------------

    @property
    def _store(self) -> Store:
        return self._blobs.store

    def _folder(self, sid: str) -> str:
        return f"{self._blobs.prefix}uploads/{sid}/"

    def _state_key(self, sid: str) -> str:
        return f"{self._folder(sid)}state.json"

    def _data_key(self, sid: str) -> str:
        return f"{self._folder(sid)}data"

    def _part_size(self) -> int:
        caps = self._store.capabilities
        return min(max(self._store.chunk_size, caps.min_part_size), caps.max_part_size)

    async def _read(self, sid: str) -> tuple[_State, str] | None:
        try:
            raw, etag = await read_with_etag(self._store, self._state_key(sid))
        except NotFoundError:
            return None
        return _State.from_bytes(raw, sid), etag

    async def _load(self, sid: str, scope: str | None) -> tuple[_State, str]:
        found = await self._read(sid)
        if found is None or found[0].scope != scope:
            where = f" in scope {scope!r}" if scope is not None else ""
            raise UploadNotFoundError(
                f"upload session {sid}{where} does not exist (never started, finished or aborted)",
                key=sid,
            )
        return found

    async def _save(self, state: _State, etag: str | None) -> str:
        """Write the state (conditionally on ``etag``); return the new ETag.

        Shielded: a cancellation must not land between the write reaching the
        store and its ETag reaching the caller, or the lease it holds could not
        be given back.
        """
        state.updated = time.time()
        mode: Any = "create" if etag is None else {"if_match": etag}
        raw = state.to_bytes()
        self._unknown(state.id)  # until the write is known to have happened
        with anyio.CancelScope(shield=True):
            result = await self._store.put(
                self._state_key(state.id),
                raw,
                content_type="application/json",
                mode=mode,
            )
        self._know(state.id, raw, result.etag)
        return result.etag

    def _know(self, sid: str, raw: bytes, etag: str) -> None:
        """Remember the state this process just wrote (see `_known`)."""
        self._unknown(sid)
        if len(raw) > _STATE_CACHE_BYTES // 8:
            return
        self._states[sid] = (raw, etag)
        self._state_bytes += len(raw)
        while self._state_bytes > _STATE_CACHE_BYTES:
            _, (dropped, _) = self._states.popitem(last=False)
            self._state_bytes -= len(dropped)

    def _unknown(self, sid: str) -> None:
        entry = self._states.pop(sid, None)
        if entry is not None:
            self._state_bytes -= len(entry[0])

    def _known(self, sid: str, scope: str | None) -> tuple[_State, str] | None:
        """The state this process last wrote for ``sid``, with its ETag; None if unknown.

        It may be out of date (another process may have written since), so it
        only serves writes made conditional on its ETag (``if_match``), which
        fail if it is: the caller then reads the state from the store.
        """
        entry = self._states.get(sid)
        if entry is None:
            return None
        state = _State.from_bytes(entry[0], sid)
        if state.scope != scope:
            return None
        return state, entry[1]

    def _forget(self, sid: str) -> None:
        self._hashers.pop(sid, None)
        self._unknown(sid)

    async def _commit(self, held: _Held, *, renew: bool = True) -> None:
        """Write the held state; raise if the lease was lost meanwhile."""
        if held.state.lease is not None and renew:
            held.state.lease.expires = time.time() + self._lease
        try:
            held.etag = await self._save(held.state, held.etag)
        except PreconditionFailedError:
            raise await self._lost(held.state.id) from None

    async def _lost(self, sid: str) -> StoreError:
        if await self._read(sid) is None:
            return UploadNotFoundError(
                f"upload session {sid} was aborted or finished by another caller", key=sid
            )
        return InvalidOffsetError(
            f"upload session {sid} was taken over by another caller (this one's lease expired)",
            key=sid,
        )

    async def _claim(
        self, sid: str, scope: str | None, action: str, offset: int | None = None
    ) -> _Held:
        for _ in range(_CLAIM_ATTEMPTS):
            state, etag = await self._load(sid, scope)
            _check_offset(sid, offset, state.size)
            now = time.time()
            if state.lease is not None and state.lease.expires > now:
                raise InvalidOffsetError(
                    f"upload session {sid}: another {state.lease.action} is in progress "
                    f"(at offset {state.size}); retry once it is done",
                    key=sid,
                )
            state.lease = _Lease(uuid.uuid4().hex, now + self._lease, action)
            try:
                etag = await self._save(state, etag)
            except PreconditionFailedError:
                continue  # changed meanwhile: look again (and report why)
            return _Held(state, etag)
        raise InvalidOffsetError(
            f"upload session {sid} kept changing while an {action} tried to claim it", key=sid
        )

    async def _release(self, held: _Held) -> None:
        """Give the lease back after a failure (best effort: it expires anyway)."""
        with anyio.CancelScope(shield=True):
            held.state.lease = None
            try:
                await self._commit(held, renew=False)
            except StoreError:
                return
            await self._committed(held)

    async def _committed(self, held: _Held) -> None:
        """After a successful commit: remember the hash, drop tails no longer named."""
        hasher = held.hasher
        if hasher is not None and hasher.size == held.state.size:
            self._remember(held.state.id, hasher)
        await self._delete_quietly(held.stale)

    # -- the running hashes -------------------------------------------------------------------

    def _cached(self, sid: str, size: int) -> Hasher | None:
        entry = self._hashers.get(sid)
        if entry is None or entry[0] != size:
            return None
        return entry[1].copy()

    def _remember(self, sid: str, hasher: Hasher | None) -> None:
        if hasher is None:
            self._hashers.pop(sid, None)
            return
        self._hashers[sid] = (hasher.size, hasher.copy())
        self._hashers.move_to_end(sid)
        while len(self._hashers) > _CACHE_SIZE:
            self._hashers.popitem(last=False)

    # -- operations -----------------------------------------------------------------------------

    async def start(self, scope: str | None) -> str:
        _check_scope(scope)
        sid = uuid.uuid4().hex
        now = time.time()
        await self._save(_State(sid, now, now, scope), None)
        self._remember(sid, Hasher())
        return sid

    async def status(self, session_id: str, scope: str | None) -> UploadStatus:
        sid = _check_id(session_id)
        state, _ = await self._load(sid, _check_scope(scope))
        return UploadStatus(sid, state.size, state.scope, state.created, state.updated)

    async def append(
        self, session_id: str, offset: int | None, chunk: object, scope: str | None
    ) -> int:
        sid = _check_id(session_id)
        _check_scope(scope)
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
            raise InvalidOffsetError(
                f"upload session {sid}: offset must be an int, not {type(offset).__name__}",
                key=sid,
            )
        if offset is not None and offset < 0:
            raise InvalidOffsetError(f"upload session {sid}: offset {offset} is negative", key=sid)
        small = _small_view(chunk, self._blobs.inline_limit)
        if small is not None:
            done = await self._append_small(sid, scope, offset, small)
            if done is not None:
                return done
        part_size = self._part_size()
        reader: PartReader
        reader, _ = await open_source(chunk, lambda size: part_size, key=self._data_key(sid))
        try:
            if small is None and reader.size is None:
                # A stream of unknown length (docker's PATCH without Content-Length):
                # when it ends within its first part, it may still be a small append.
                first = await reader.read_part()
                limit = self._blobs.inline_limit
                if first is None or (first.nbytes < part_size and first.nbytes <= limit):
                    whole = first if first is not None else memoryview(b"")
                    done = await self._append_small(sid, scope, offset, whole)
                    if done is not None:
                        return done
                if first is not None:
                    reader = _Pushback(reader, first)
            held = await self._claim(sid, scope, "append", offset)
            try:
                async with task_group() as tg:
                    # The next part is received while this one is stored.
                    ahead = _ReadAhead(reader, tg)
                    try:
                        await self._append(held, ahead, part_size)
                    finally:
                        tg.cancel_scope.cancel()
            except UploadNotFoundError as exc:
                # The multipart upload vanished under us: the session was aborted or finished.
                await self._release(held)
                if await self._read(sid) is None:
                    raise await self._lost(sid) from exc
                raise
            except BaseException:
                await self._release(held)
                raise
            return held.state.size
        finally:
            await reader.aclose()

    async def _append_small(
        self, sid: str, scope: str | None, offset: int | None, chunk: memoryview
    ) -> int | None:
        """Append a small in-memory chunk to a session that has no parts yet, optimistically.

        While the whole session fits `INLINE_STATE` its bytes are kept in the
        state itself, so the append is one conditional write of the state
        (``if_match`` on the ETag read). Up to ``inline_limit`` they are kept
        as one tail object: the new tail goes to a key of its own, then the
        state is written. Either way no lease is taken, and finishing writes
        the bytes straight to their blob key, with no multipart upload to
        complete and no copy. Of two racing appenders, the one whose state
        write loses (removing its tail, if it wrote one) gets InvalidOffsetError.

        The state is not read when this process wrote it last (the POST of
        docker's POST, PATCH, PUT): the write is conditional on the ETag it
        remembers, and only if that fails (another process wrote since) is the
        state read and the append made again.

        Returns:
            The new size, or None when the session does not qualify (it has
            parts, or would outgrow ``inline_limit``): take the leased path.
        """
        known = self._known(sid, scope)
        if known is not None and known[0].tail is None:
            try:
                return await self._append_small_to(sid, offset, chunk, *known, fresh=False)
            except _Stale:
                self._unknown(sid)
        state, etag = await self._load(sid, scope)
        return await self._append_small_to(sid, offset, chunk, state, etag, fresh=True)

    async def _append_small_to(
        self,
        sid: str,
        offset: int | None,
        chunk: memoryview,
        state: _State,
        etag: str,
        *,
        fresh: bool,
    ) -> int | None:
        """`_append_small` on ``state`` as read (``fresh``) or as remembered (raises _Stale)."""
        try:
            _check_offset(sid, offset, state.size)
            if state.lease is not None and state.lease.expires > time.time():
                raise InvalidOffsetError(
                    f"upload session {sid}: another {state.lease.action} is in progress "
                    f"(at offset {state.size}); retry once it is done",
                    key=sid,
                )
        except InvalidOffsetError:
            if not fresh:
                raise _Stale from None
            raise
        if state.parts or state.size + chunk.nbytes > self._blobs.inline_limit:
            return None  # the leased path reads the state again
        if not chunk.nbytes:
            if not fresh:
                raise _Stale  # the size to report must be the stored one
            return state.size
        old_tail = state.tail
        data = await self._read_tail(state) + chunk
        hasher = self._cached(sid, state.size) or (Hasher() if state.size == 0 else None)
        if hasher is not None:
            await hasher.update(chunk)
        end = state.size + chunk.nbytes
        tail_key: str | None = None
        try:
            if len(data) <= INLINE_STATE:
                state.inline, state.tail = data, None
            else:
                tail_key = f"{self._folder(sid)}tail-{end}-{uuid.uuid4().hex[:12]}"
                await self._store.put(tail_key, data)
                state.inline, state.tail = None, _Tail(tail_key, len(data))
            state.size = end
            state.lease = None
            try:
                await self._save(state, etag)
            except PreconditionFailedError:
                if not fresh:
                    raise _Stale from None
                if await self._read(sid) is None:
                    raise UploadNotFoundError(
                        f"upload session {sid} was aborted or finished by another caller",
                        key=sid,
                    ) from None
                raise InvalidOffsetError(
                    f"upload session {sid}: another append or finish changed it while a chunk "
                    f"at offset {state.size - chunk.nbytes} was being stored; ask for its "
                    "progress and resume",
                    key=sid,
                ) from None
        except BaseException:
            if tail_key is not None:
                await self._delete_quietly([tail_key])
            raise
        self._remember(sid, hasher)
        if old_tail is not None:
            await self._delete_quietly([old_tail.key])
        return end

    async def _append(self, held: _Held, reader: PartReader, part_size: int) -> None:
        state = held.state
        sid = state.id
        store = self._store
        min_part = store.capabilities.min_part_size
        hasher = self._cached(sid, state.size) or (Hasher() if state.size == 0 else None)
        held.hasher = hasher
        base = state.size - _held_size(state)  # where `pending` starts
        hashed = state.size  # the hasher covers [0, hashed)
        pending = bytearray()
        stale = held.stale  # tail objects to delete once the state no longer names them
        # The state is committed after a part at most once a second (each commit is a
        # durable write), and always at the end of the append.
        interval = min(_COMMIT_INTERVAL, self._lease / 4)
        held.next_commit = time.monotonic() + interval
        pending += await self._read_tail(state)

        async def commit_part(data: bytes | memoryview) -> None:
            nonlocal base, hashed, hasher
            size = len(data)
            if state.upload_id is None:
                state.upload_id = await store.create_upload(self._data_key(sid))
                await self._commit(held)
            number = len(state.parts) + 1
            if number > store.capabilities.max_parts:
                raise InvalidArgumentError(
                    f"upload session {sid} would need more than "
                    f"{store.capabilities.max_parts} parts",
                    key=sid,
                )
            # Hash (a copy, kept only if the part is stored) while the part uploads.
            trial = hasher.copy() if hasher is not None else None
            async with task_group() as tg:
                if trial is not None and base + size > hashed:
                    tg.start_soon(trial.update, memoryview(data)[hashed - base :])
                part = await store.upload_part(
                    self._data_key(sid), state.upload_id, number, data, offset=base
                )
            hasher = held.hasher = trial
            state.parts.append(part)
            base += size
            hashed = max(hashed, base)
            if state.tail is not None:
                stale.append(state.tail.key)
                state.tail = None
            state.inline = None
            state.size = base
            if time.monotonic() >= held.next_commit:
                await self._commit(held)
                await self._committed(held)
                held.next_commit = time.monotonic() + interval

        received = 0
        while (piece := await reader.read_part()) is not None:
            received += len(piece)
            if not pending and len(piece) == part_size:
                await commit_part(piece)
            else:
                pending += piece
                while len(pending) >= part_size:
                    await commit_part(bytes(pending[:part_size]))
                    del pending[:part_size]
            reader.release(piece)
        if received and pending:
            if len(pending) >= min_part:
                await commit_part(bytes(pending))
            else:
                end = base + len(pending)
                if hasher is not None:
                    await hasher.update(memoryview(pending)[hashed - base :])
                tail_key = f"{self._folder(sid)}tail-{end}"
                await store.put(tail_key, bytes(pending))
                if state.tail is not None:
                    stale.append(state.tail.key)
                state.tail = _Tail(tail_key, len(pending))
                state.inline = None
                state.size = end
        state.lease = None
        try:
            await self._commit(held, renew=False)
        except BaseException:
            if state.tail is not None and state.tail.key not in stale:
                await self._delete_quietly([state.tail.key])
            raise
        await self._committed(held)

    async def _read_tail(self, state: _State) -> bytes:
        """The bytes after the session's parts: inline, in its tail object, or none."""
        if state.inline is not None:
            return state.inline
        if state.tail is None:
            return b""
        data = await self._store.get(state.tail.key)
        if len(data) != state.tail.size:
            raise IntegrityError(
                f"upload session {state.id}: tail {state.tail.key!r} holds {len(data)} bytes, "
                f"not {state.tail.size}",
                key=state.tail.key,
            )
        return data

    async def _delete_quietly(self, keys: list[str]) -> None:
        if not keys:
            return
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(StoreError):  # what is left is for purge
                await self._store.delete_many(keys)
        keys.clear()

    async def finish(
        self,
        session_id: str,
        want: Digest,
        scope: str | None,
        ctype: str | None = None,
        verified: Verified | None = None,
    ) -> Descriptor:
        sid = _check_id(session_id)
        _check_scope(scope)
        known = self._known(sid, scope)
        if known is not None:
            # What this process last wrote: if its bytes hash to ``want``, they are
            # exactly what the client declared, so the blob is sound even if another
            # process wrote the state since; otherwise read the state and look again.
            state = known[0]
            leased = state.lease is not None and state.lease.expires > time.time()
            if not state.parts and not leased and state.tail is None:
                actual = await hash_bytes(state.inline or b"", want.algorithm)
                if actual == want:
                    return await self._finish_small(state, want, ctype, verified, checked=True)
        state, _ = await self._load(sid, scope)
        leased = state.lease is not None and state.lease.expires > time.time()
        if not state.parts and not leased:
            return await self._finish_small(state, want, ctype, verified)
        held = await self._claim(sid, scope, "finish")
        try:
            return await self._finish(held, want, ctype, verified)
        except DigestMismatchError:
            with anyio.CancelScope(shield=True):
                await self._discard(held.state)
            raise
        except BaseException:
            await self._release(held)
            raise

    @staticmethod
    async def _storing(store_blob: Awaitable[_T], verified: Verified | None) -> _T:
        """Await ``store_blob`` and, at the same time, ``verified`` (the content is verified).

        If either fails, the other is cancelled and the error is raised; the
        caller then keeps the session, so the finish can be retried.
        """
        if verified is None:
            return await store_blob
        results: list[_T] = []

        async def announce() -> None:
            await verified()

        async with task_group() as tg:
            tg.start_soon(announce)
            results.append(await store_blob)
        return results[0]

    async def _finish_small(
        self,
        state: _State,
        want: Digest,
        ctype: str | None,
        verified: Verified | None,
        *,
        checked: bool = False,
    ) -> Descriptor:
        """Finish a session that is all tail: hash it, write it to its blob key, remove the session.

        No lease is taken (the blob write is idempotent, by digest, and the
        session is only removed once the blob is stored), so this costs one
        write: the blob's. ``checked``: the bytes are known to hash to ``want``.
        """
        data = await self._read_tail(state)
        actual = want if checked else await hash_bytes(data, want.algorithm)
        if actual != want:
            with anyio.CancelScope(shield=True):
                await self._discard(state)
            raise self._mismatch(state.id, want, actual)
        descriptor = await self._storing(
            self._blobs.write_known(memoryview(data), want, ctype), verified
        )
        if state.upload_id is not None:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(StoreError):
                    await self._store.abort_upload(self._data_key(state.id), state.upload_id)
        await self._remove(state)
        return descriptor

    def _mismatch(self, sid: str, want: Digest, actual: Digest) -> DigestMismatchError:
        self._blobs.count(digest_mismatches=1)
        return DigestMismatchError(
            f"upload session {sid}: the content hashes to {actual}, not to {want}; "
            "the session is discarded and nothing was stored",
            expected=str(want),
            actual=str(actual),
            key=self._blobs.blob_key(want),
        )

    async def _finish(
        self, held: _Held, want: Digest, ctype: str | None, verified: Verified | None
    ) -> Descriptor:
        state = held.state
        sid = state.id
        store = self._store
        data_key = self._data_key(sid)
        hasher = self._cached(sid, state.size)
        known = hasher.digest("sha256") if hasher is not None else None
        if state.completed is None:
            if not state.parts:
                # Everything is in the tail (or nothing was sent): small, hash it here.
                data = await self._read_tail(state)
                actual = await hash_bytes(data, want.algorithm)
                if actual != want:
                    raise self._mismatch(sid, want, actual)
                descriptor = await self._storing(
                    self._blobs.write_known(memoryview(data), want, ctype), verified
                )
                if state.upload_id is not None:
                    with anyio.CancelScope(shield=True):
                        with contextlib.suppress(StoreError):
                            await store.abort_upload(data_key, state.upload_id)
                await self._remove(state)
                return descriptor
            if want.algorithm == "sha256" and known is not None and known != want:
                raise self._mismatch(sid, want, known)
            record = known or (want if want.algorithm == "sha256" else _UNKNOWN_SHA256)
            assert state.upload_id is not None
            # Nothing is committed to the state between here and the removal of the
            # session: a finish that crashes after completing is recovered from the
            # assembled object (below), and the tail object stays until the folder goes.
            try:
                parts = list(state.parts)
                if _held_size(state):
                    tail = await self._read_tail(state)
                    parts.append(
                        await store.upload_part(
                            data_key,
                            state.upload_id,
                            len(parts) + 1,
                            tail,
                            offset=state.size - len(tail),
                        )
                    )
                await store.complete_upload(data_key, state.upload_id, parts, sha256=record)
            except UploadNotFoundError:
                # A finish that crashed after completing, before removing the session:
                # the assembled object is there, with the sha256 recorded then.
                info = await self._assembled(data_key, state.size)
                if info is None:
                    raise
                record = info.sha256 or _UNKNOWN_SHA256
            state.completed = record
        recorded_ok = known is not None and known == state.completed
        if not (want.algorithm == "sha256" and recorded_ok):
            self._blobs.count(finishes_reread=1)
            algorithms = ("sha256",) if want.algorithm == "sha256" else ("sha256", want.algorithm)
            check = Hasher(algorithms)
            stream = store.stream(data_key, verify=False)
            async with stream:
                async for chunk in stream:
                    await check.update(chunk)
            actual = check.digest(want.algorithm)
            if actual != want:
                raise self._mismatch(sid, want, actual)
            recorded_ok = check.digest("sha256") == state.completed
        if recorded_ok:
            writing = self._blobs.promote(data_key, want, state.size)
        else:
            writing = self._rewrite(data_key, want, state.size)
        written = await self._storing(writing, verified)
        descriptor = self._blobs.stored(want, state.size, ctype, written=written)
        await self._remove(state)
        return descriptor

    async def _assembled(self, data_key: str, size: int) -> ObjectInfo | None:
        try:
            info = await self._store.head(data_key)
        except NotFoundError:
            return None
        return info if info.size == size else None

    async def _rewrite(self, data_key: str, want: Digest, size: int) -> bool:
        """Write the blob anew from the assembled content (whose recorded sha256 is unknown)."""
        if await self._blobs.usable(want, size):
            return False
        stream = self._store.stream(data_key, verify=False)
        try:
            async with stream:
                await self._store.put(self._blobs.blob_key(want), stream, mode="create")
        except AlreadyExistsError:
            return False
        return True

    async def _remove(self, state: _State) -> None:
        """Drop a finished session: the state first (the session is gone), then the rest.

        A session whose state names no tail object and no multipart upload left
        nothing else in its folder (its bytes were inline): the folder is not listed.
        Leftovers of failed writes, if any, are for `purge`.
        """
        with anyio.CancelScope(shield=True):
            self._forget(state.id)
            await self._store.delete(self._state_key(state.id))
            if state.tail is not None or state.upload_id is not None:
                await self._delete_folder(state.id)

    async def _discard(self, state: _State) -> None:
        """Drop an unfinished session: its multipart upload and objects, the state last."""
        self._forget(state.id)
        if state.upload_id is not None and state.completed is None:
            with contextlib.suppress(StoreError):
                await self._store.abort_upload(self._data_key(state.id), state.upload_id)
        await self._delete_folder(state.id)
        await self._store.delete(self._state_key(state.id))

    async def _delete_folder(self, sid: str) -> None:
        state_key = self._state_key(sid)
        keys = [
            entry.key
            async for entry in self._store.list(self._folder(sid))
            if isinstance(entry, ObjectInfo) and entry.key != state_key
        ]
        await self._delete_quietly(keys)

    async def abort(self, session_id: str, scope: str | None) -> None:
        sid = _check_id(session_id)
        _check_scope(scope)
        found = await self._read(sid)
        if found is not None and found[0].scope != scope:
            raise UploadNotFoundError(
                f"upload session {sid} does not exist in scope {scope!r}", key=sid
            )
        with anyio.CancelScope(shield=True):
            if found is not None:
                await self._discard(found[0])
            else:
                self._forget(sid)
                await self._delete_folder(sid)

    async def purge(self, older_than: float) -> int:
        if (
            not isinstance(older_than, (int, float))
            or isinstance(older_than, bool)
            or older_than < 0
        ):
            raise InvalidArgumentError(
                f"older_than must be a number of seconds >= 0, not {older_than!r}",
                key="older_than",
            )
        now = time.time()
        cutoff = now - older_than
        removed = 0
        prefix = self._blobs.prefix
        folders = [
            entry.prefix
            async for entry in self._store.list(f"{prefix}uploads/", delimiter="/")
            if isinstance(entry, CommonPrefix)
        ]
        for folder in folders:
            sid = folder[len(prefix) + len("uploads/") : -1]
            if not _ID.fullmatch(sid):
                continue
            try:
                found = await self._read(sid)
            except IntegrityError:
                found = None
            if found is not None:
                state = found[0]
                leased = state.lease is not None and state.lease.expires > now
                if state.updated < cutoff and not leased:
                    await self._discard(state)
                    removed += 1
                continue
            entries = [e async for e in self._store.list(folder) if isinstance(e, ObjectInfo)]
            if entries and all(_older(e, cutoff) for e in entries):
                await self._delete_quietly([e.key for e in entries])
                removed += 1
        async for entry in self._store.list(f"{prefix}staging/"):
            if isinstance(entry, ObjectInfo) and _older(entry, cutoff):
                await self._store.delete(entry.key)
                removed += 1
        return removed


def _held_size(state: _State) -> int:
    """How many of the session's bytes are not in its parts (inline or in the tail object)."""
    if state.inline is not None:
        return len(state.inline)
    return state.tail.size if state.tail is not None else 0


def _older(info: ObjectInfo, cutoff: float) -> bool:
    return info.last_modified is not None and info.last_modified.timestamp() < cutoff


def _check_offset(sid: str, offset: int | None, size: int) -> None:
    """Raise InvalidOffsetError unless ``offset`` (None: wherever it is) is the session's size."""
    if offset is not None and offset != size:
        raise InvalidOffsetError(
            f"upload session {sid}: a chunk at offset {offset} does not follow the "
            f"{size} bytes already received; resume at offset {size}",
            key=sid,
        )
