"""The store commands: cp, ls, stat, cat, rm, digest.

Each is ``async def command(args, ui) -> exit status``, run by ``anyio.run``.
Local file work (stat, hashing, writing to stdout) happens in worker threads.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import mimetypes
import os
import sys
from collections.abc import AsyncIterator
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import anyio.to_thread

from .._errors import NotFoundError
from .._registry import open_store
from .._store import Store
from .._types import CommonPrefix, ObjectInfo
from ._digest import sha256_file, sha256_object
from ._parser import ENV_URL, UsageError
from ._ui import UI, transfer_line

__all__ = [
    "cat",
    "cp",
    "digest",
    "is_remote",
    "ls",
    "open_store_async",
    "remote_key",
    "rm",
    "stat",
]

#: Listing lines printed per write (one worker-thread call each).
LS_BATCH = 1000
#: Bytes read from stdin per worker-thread call (at most).
STDIN_BLOCK = 1024 * 1024
#: Exit status after a broken pipe, as for a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13


def is_remote(text: str) -> bool:
    """Whether a command-line location names a key (``:key``) rather than a local path."""
    return text.startswith(":")


def remote_key(text: str) -> str:
    """The key of ``:key`` (or of a bare key, for commands that only take keys)."""
    return text[1:] if is_remote(text) else text


def _missing_local_root(url: str) -> str | None:
    """The root directory of a ``file://`` URL if it does not exist (else None)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file" or parts.query or parts.fragment:
        return None  # not a local store, or a bad URL that open_store will name
    path = unquote(parts.path)
    if parts.netloc == "~" and path.startswith("/"):
        path = os.path.expanduser("~") + path
    elif parts.netloc not in ("", "localhost"):
        return None
    if not os.path.isabs(path) or os.path.isdir(path):
        return None
    return os.path.normpath(path)


def _open_blocking(url: str, write: bool) -> Store:
    if write or not url.lower().startswith("file:"):
        return open_store(url)
    # A command that only reads must not create a file:// store's root (issue 13,
    # defect 7). The CLI checks the root itself so the message is one line and
    # names the directory whatever the backend does; it also asks the local
    # backend not to create it (its ``create`` option).
    # TODO(issue 13, defect 7): once the local backend's own "open without
    # creating the root" option is settled, rely on it alone and drop this check.
    missing = _missing_local_root(url)
    if missing is not None:
        raise NotFoundError(
            f"the local store root {missing!r} does not exist (nothing to read)", key=missing
        )
    return open_store(url, create=False)


async def open_store_async(url: str, *, write: bool = True) -> Store:
    """``open_store(url)`` in a worker thread.

    Opening a store may scan installed entry points and import the backend's
    module: file-system work that must not run on the event loop. With
    ``write=False`` a ``file://`` store whose root does not exist is an error
    (NotFoundError naming the directory) instead of being created.
    """
    return await anyio.to_thread.run_sync(_open_blocking, url, write)


def store_url(args: argparse.Namespace) -> str | None:
    """The store of ``-s/--store``, else of ``$ASYNCSTORE_URL`` (None: neither)."""
    url: str | None = args.store or os.environ.get(ENV_URL) or None
    return url


async def _open(args: argparse.Namespace, *, write: bool = False) -> Store:
    url = store_url(args)
    if not url:
        raise UsageError(f"no store given: pass -s/--store URL or set ${ENV_URL}")
    return await open_store_async(url, write=write)


def _timestamp(value: datetime.datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _local_target(path: str, key: str) -> str:
    """Where ``cp :key PATH`` writes: into PATH when it is (or ends like) a folder."""
    if path.endswith(os.sep) or os.path.isdir(path):
        return os.path.join(path, key.rsplit("/", 1)[-1])
    return path


def _key_target(dst: str, name: str) -> str:
    """Where ``cp SRC :dst`` writes: ``dst`` plus SRC's base name when ``dst`` ends in '/'."""
    return dst + name if dst == "" or dst.endswith("/") else dst


def _guess_type(path: str) -> str | None:
    content_type, _ = mimetypes.guess_type(path)
    return content_type


async def cp(args: argparse.Namespace, ui: UI) -> int:
    """Copy a local file to a key (upload), a key to a local file (download), or key to key."""
    src, dst = args.src, args.dst
    if not is_remote(src) and not is_remote(dst):
        raise UsageError(
            f"cp: neither {src!r} nor {dst!r} is a store key; write keys as :path/to/key"
        )
    if src == "-" and is_remote(dst):
        return await _cp_from_stdin(args, ui, remote_key(dst))
    if dst == "-" and is_remote(src):
        return await cat(argparse.Namespace(**{**vars(args), "key": src}), ui)
    async with await _open(args, write=is_remote(dst)) as store:
        if is_remote(src) and is_remote(dst):
            src_key = remote_key(src)
            dst_key = _key_target(remote_key(dst), src_key.rsplit("/", 1)[-1])
            await store.copy(src_key, dst_key)
            await ui.emit(f"copied :{src_key} -> :{dst_key}")
            return 0
        if is_remote(dst):
            if await anyio.to_thread.run_sync(os.path.isdir, src):
                raise IsADirectoryError(errno.EISDIR, "cp copies one file; this is a folder", src)
            key = _key_target(remote_key(dst), os.path.basename(src))
            content_type = await anyio.to_thread.run_sync(_guess_type, src)
            async with ui.bars() as bars:
                info = await store.upload_file(
                    src, key, content_type=content_type, progress=bars.track(f":{key}")
                )
            await ui.emit(transfer_line("uploaded", src, f":{key}", info))
            return 0
        key = remote_key(src)
        path = await anyio.to_thread.run_sync(_local_target, dst, key)
        async with ui.bars() as bars:
            info = await store.download_file(key, path, progress=bars.track(path))
        await ui.emit(transfer_line("downloaded", f":{key}", path, info))
        return 0


def _stdin_binary() -> BinaryIO:
    buffer: BinaryIO = sys.stdin.buffer
    return buffer


async def _stdin_chunks() -> AsyncIterator[bytes]:
    stdin = _stdin_binary()
    while chunk := await anyio.to_thread.run_sync(stdin.read, STDIN_BLOCK):
        yield chunk


async def _cp_from_stdin(args: argparse.Namespace, ui: UI, key: str) -> int:
    """``cp - :key``: upload stdin, streamed in parts (its size is not known in advance)."""
    if key == "" or key.endswith("/"):
        raise UsageError(f"cp - :{key}: stdin has no name; give the whole key")
    async with await _open(args, write=True) as store, ui.bars() as bars:
        result = await store.put(key, _stdin_chunks(), progress=bars.track(f":{key}"))
    await ui.emit(f"uploaded - -> :{key}: {result.size} bytes, {result.sha256}")
    return 0


async def ls(args: argparse.Namespace, ui: UI) -> int:
    """List keys under a prefix: size, last modified (UTC), key; folders as ``PRE``."""
    prefix = remote_key(args.prefix)
    lines: list[str] = []
    async with await _open(args) as store:
        async for entry in store.list(prefix, delimiter=None if args.recursive else "/"):
            if isinstance(entry, CommonPrefix):
                lines.append(f"{'PRE':>12}  {'':19}  {entry.prefix}")
            else:
                lines.append(f"{entry.size:>12}  {_timestamp(entry.last_modified):19}  {entry.key}")
            if len(lines) == LS_BATCH:
                await ui.emit("\n".join(lines))
                lines.clear()
    if lines:
        await ui.emit("\n".join(lines))
    return 0


def _stat_lines(info: ObjectInfo) -> list[tuple[str, str]]:
    lines = [
        ("key", info.key),
        ("size", f"{info.size}"),
        ("etag", info.etag),
        ("last_modified", _timestamp(info.last_modified)),
        ("content_type", info.content_type or "-"),
        ("sha256", info.sha256 or "- (not recorded)"),
    ]
    if info.mtime is not None:
        mtime = datetime.datetime.fromtimestamp(info.mtime, datetime.timezone.utc)
        lines.append(("source_mtime", _timestamp(mtime)))
    if info.mode is not None:
        lines.append(("source_mode", f"{info.mode:04o}"))
    lines.extend((f"metadata.{name}", value) for name, value in sorted(info.metadata.items()))
    return lines


async def stat(args: argparse.Namespace, ui: UI) -> int:
    """Show an object's size, ETag, timestamps, content type, sha256 and metadata."""
    async with await _open(args) as store:
        info = await store.head(remote_key(args.key))
    for name, value in _stat_lines(info):
        await ui.emit(f"{name:<16}{value}")
    return 0


def _stdout_binary() -> BinaryIO:
    buffer: BinaryIO = sys.stdout.buffer
    return buffer


async def cat(args: argparse.Namespace, ui: UI) -> int:
    """Stream an object to stdout (parallel ranged reads, sha256 verified at the end)."""
    out = _stdout_binary()
    await anyio.to_thread.run_sync(sys.stdout.flush)
    try:
        async with await _open(args) as store, store.stream(remote_key(args.key)) as body:
            async for chunk in body:
                await anyio.to_thread.run_sync(out.write, chunk)
        await anyio.to_thread.run_sync(out.flush)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from
        # complaining about stdout once more when it flushes at exit.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return 0


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (tests)
        pass


async def rm(args: argparse.Namespace, ui: UI) -> int:
    """Delete one or more objects."""
    keys = [remote_key(key) for key in args.keys]
    async with await _open(args) as store:
        if len(keys) == 1:
            await store.delete(keys[0])
        else:
            await store.delete_many(keys)
    return 0


async def digest(args: argparse.Namespace, ui: UI) -> int:
    """Print ``sha256:<hex>  NAME`` for a local file or an object (verified when recorded)."""
    target: str = args.target
    if not is_remote(target):
        await ui.emit(f"{await sha256_file(target)}  {target}")
        return 0
    key = remote_key(target)
    async with await _open(args) as store:
        actual, recorded = await sha256_object(store, key)
    await ui.emit(f"{actual}  :{key}")
    if recorded is None:
        await ui.note(
            f"note: no sha256 was recorded for :{key} at upload; nothing to verify against"
        )
    return 0
