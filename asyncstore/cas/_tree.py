"""Directory trees: files as blobs, their sidecar metadata in one index per tree.

``<prefix>trees/<ref>/@tree.json`` lists every file of the tree with the
fields of the cache tool's sidecar (``FileMetadata``): path, sha256, size,
mtime and mode. It is written after every blob is stored, in one request:
the commit point of an upload, so a reader sees the previous tree or the new
one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

from .._errors import IntegrityError, InvalidArgumentError, NotFoundError
from .._stream._tasks import task_group
from ._blobs import Blobs
from ._digest import Digest
from ._layout import check_ref
from ._read import fetch_blob
from ._types import TreeFile, TreeSyncResult

__all__ = ["download_tree", "upload_tree"]

_FORMAT = 1
_READ = 8 * 1024 * 1024
_run = anyio.to_thread.run_sync


def _index_key(blobs: Blobs, ref: str) -> str:
    return f"{blobs.prefix}trees/{check_ref(ref, what='tree ref')}/@tree.json"


def _check_dir(local_dir: object, what: str) -> str:
    if not isinstance(local_dir, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"{what} must be a str or os.PathLike, not {type(local_dir).__name__}", key=what
        )
    return os.fspath(local_dir)


def _walk(root: str) -> list[tuple[str, str]]:
    """(``/``-separated relative path, absolute path) of every regular file, sorted."""
    if not os.path.isdir(root):
        raise InvalidArgumentError(f"cannot upload the tree {root!r}: not a directory", key=root)
    found: list[tuple[str, str]] = []
    for directory, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in names:
            path = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                found.append((rel, path))
    return sorted(found)


def _check_path(path: object, ref: str) -> str:
    if (
        not isinstance(path, str)
        or not path
        or path.startswith("/")
        or "\x00" in path
        or any(seg in ("", ".", "..") for seg in path.split("/"))
    ):
        raise IntegrityError(f"tree {ref!r}: its index lists an unsafe path {path!r}", key=ref)
    return path


async def _hash_file(path: str) -> tuple[Digest, os.stat_result] | None:
    """The sha256 and stat of a regular file (None if there is no regular file at ``path``)."""

    def opener() -> tuple[BinaryIO, os.stat_result] | None:
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed below, in a worker thread
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        st = os.fstat(file.fileno())
        if not stat.S_ISREG(st.st_mode):
            file.close()
            return None
        return file, st

    opened = await _run(opener)
    if opened is None:
        return None
    file, st = opened
    h = hashlib.sha256()

    def step() -> int:
        chunk = file.read(_READ)
        h.update(chunk)
        return len(chunk)

    try:
        while await _run(step):
            pass
    finally:
        with anyio.CancelScope(shield=True):
            await _run(file.close)
    return Digest("sha256:" + h.hexdigest()), st


def _entry(file: TreeFile) -> dict[str, Any]:
    return {
        "path": file.path,
        "sha256": str(file.digest),
        "size": file.size,
        "mtime_ns": file.mtime_ns,
        "mode": format(file.mode, "o"),
    }


async def upload_tree(
    blobs: Blobs, local_dir: str | os.PathLike[str], ref: str, *, max_concurrency: int
) -> TreeSyncResult:
    key = _index_key(blobs, ref)
    root = _check_dir(local_dir, "local_dir")
    listing = await _run(_walk, root)
    limiter = anyio.CapacityLimiter(max_concurrency)
    done: dict[str, tuple[TreeFile, bool]] = {}

    async def one(rel: str, path: str) -> None:
        async with limiter:
            hashed = await _hash_file(path)
            if hashed is None:
                return  # removed since the walk
            digest, st = hashed
            sent = False
            if not await blobs.usable(digest, st.st_size):
                await blobs.put(anyio.Path(path), expected=digest)
                sent = True
            done[rel] = (
                TreeFile(rel, digest, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777),
                sent,
            )

    async with task_group() as tg:
        for rel, path in listing:
            tg.start_soon(one, rel, path)
    files = tuple(done[rel][0] for rel, _ in listing if rel in done)
    index = {"format": _FORMAT, "ref": ref, "files": [_entry(f) for f in files]}
    await blobs.store.put(
        key, json.dumps(index, separators=(",", ":")).encode(), content_type="application/json"
    )
    sent = tuple(f.path for f in files if done[f.path][1])
    return TreeSyncResult(
        transferred=sent,
        skipped=tuple(f.path for f in files if not done[f.path][1]),
        bytes_transferred=sum(f.size for f in files if done[f.path][1]),
        files=files,
    )


async def read_index(blobs: Blobs, ref: str) -> tuple[TreeFile, ...]:
    key = _index_key(blobs, ref)
    try:
        raw = await blobs.store.get(key)
    except NotFoundError as exc:
        raise NotFoundError(f"no tree at ref {ref!r}", key=key) from exc
    try:
        doc = json.loads(raw)
        if doc["format"] != _FORMAT or doc["ref"] != ref:
            raise ValueError("unknown format or another ref")
        files = tuple(
            TreeFile(
                _check_path(e["path"], ref),
                Digest(e["sha256"]),
                int(e["size"]),
                int(e["mtime_ns"]),
                int(e["mode"], 8) & 0o7777,
            )
            for e in doc["files"]
        )
    except (ValueError, KeyError, TypeError, InvalidArgumentError) as exc:
        raise IntegrityError(
            f"tree {ref!r}: its index {key!r} is not valid ({exc})", key=key
        ) from exc
    return files


def _restore(path: str, file: TreeFile, st: os.stat_result) -> None:
    if st.st_mode & 0o7777 != file.mode:
        os.chmod(path, file.mode)
    if st.st_mtime_ns != file.mtime_ns:
        os.utime(path, ns=(file.mtime_ns, file.mtime_ns))


async def download_tree(
    blobs: Blobs, ref: str, local_dir: str | os.PathLike[str], *, max_concurrency: int
) -> TreeSyncResult:
    files = await read_index(blobs, ref)
    root = _check_dir(local_dir, "local_dir")
    limiter = anyio.CapacityLimiter(max_concurrency)
    sent: set[str] = set()

    async def one(file: TreeFile) -> None:
        dest = os.path.join(root, *file.path.split("/"))
        async with limiter:
            local = await _hash_file(dest) if await _same_size(dest, file.size) else None
            if local is not None and local[0] == file.digest:
                await _run(_restore, dest, file, local[1])
                return
            try:
                await fetch_blob(blobs, file.digest, dest, mtime_ns=file.mtime_ns, mode=file.mode)
            except BaseException:
                # A stale local file must not stay in place of the one that failed.
                with anyio.CancelScope(shield=True):
                    await _run(_remove_stale, dest)
                raise
            sent.add(file.path)

    async with task_group() as tg:
        for file in files:
            tg.start_soon(one, file)
    return TreeSyncResult(
        transferred=tuple(f.path for f in files if f.path in sent),
        skipped=tuple(f.path for f in files if f.path not in sent),
        bytes_transferred=sum(f.size for f in files if f.path in sent),
        files=files,
    )


async def _same_size(path: str, size: int) -> bool:
    def check() -> bool:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    return await _run(check)


def _remove_stale(path: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)
