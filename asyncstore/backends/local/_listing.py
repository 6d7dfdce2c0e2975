"""Listing: a walk of the data files in key order, one directory per worker-thread call.

The walk starts at the deepest directory the prefix names and orders each
directory's entries so that the whole walk is in key order (UTF-8, like S3).
Temp files, the ``.asyncstore`` directory, names that are not keys and
symbolic links leading outside the root are skipped; a symbolic link loop is
walked once.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..._errors import InvalidKeyError
from ..._keys import MAX_KEY_BYTES, validate_prefix
from ..._types import CommonPrefix, ObjectInfo
from ._paths import RESERVED, inside
from ._sidecar import object_info
from ._translate import os_errors

__all__ = ["walk"]

_run = anyio.to_thread.run_sync


async def walk(
    prefix: str, delimiter: str | None, ready: Callable[[], Awaitable[str | None]]
) -> AsyncIterator[ObjectInfo | CommonPrefix]:
    """`LocalBackend.list`: the objects (and common prefixes) under ``prefix``, in key order.

    Args:
        prefix: The key prefix.
        delimiter: Groups keys into common prefixes, as `Backend.list` does.
        ready: Returns the real root, or None if it does not exist (yet).
    """
    validate_prefix(prefix)
    cut = prefix.rfind("/")
    base, name_filter = prefix[: cut + 1], prefix[cut + 1 :]
    dir_segments = prefix[:cut].split("/") if cut >= 0 else []
    for segment in dir_segments:
        if segment.startswith(RESERVED):
            raise InvalidKeyError(
                f"prefix {prefix!r} has the path segment {segment!r}; names starting "
                f"with {RESERVED!r} are reserved by the local backend",
                key=prefix,
            )
    root = await ready()
    if root is None:
        return  # nothing written yet: an empty store (and the root stays uncreated)
    with os_errors(prefix, "list"):
        start_real, entries = await _run(
            _scan_start, root, os.path.join(root, *dir_segments), base, name_filter
        )
    if start_real is None:
        return
    stack: list[Iterator[_Entry]] = [iter(entries)]
    ancestors: list[str] = [start_real]
    last_common: str | None = None
    yielded = 0
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            ancestors.pop()
            continue
        if entry.st is None:  # a directory
            if delimiter:
                below = entry.key + "/"
                found = below.find(delimiter, len(prefix))
                if found >= 0:
                    common = below[: found + len(delimiter)]
                    if common != last_common and await _run(_has_object, entry.real, root):
                        last_common = common
                        yield CommonPrefix(common)
                    continue
            if entry.real in ancestors:  # a symbolic link loop
                continue
            with os_errors(prefix, "list"):
                children = await _run(_scan, entry.real, entry.key + "/", "", root)
            stack.append(iter(children))
            ancestors.append(entry.real)
            continue
        if delimiter:
            found = entry.key.find(delimiter, len(prefix))
            if found >= 0:
                common = entry.key[: found + len(delimiter)]
                if common != last_common:
                    last_common = common
                    yield CommonPrefix(common)
                continue
        yielded += 1
        if yielded % 1000 == 0:
            await anyio.lowlevel.checkpoint()
        yield object_info(entry.key, entry.st, None)


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    order: str  # the name, with "/" appended for a directory: sorts like the full keys
    key: str
    real: str
    st: os.stat_result | None  # None for a directory


def _listable(name: str) -> bool:
    if name.startswith(RESERVED):
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # not UTF-8 on disk (surrogate escapes)
        return False
    return True


def _scan(directory: str, base: str, name_filter: str, root: str) -> list[_Entry]:
    """One directory's entries under ``base``, with stats, sorted in key order."""
    out: list[_Entry] = []
    try:
        scanner = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return out
    with scanner:
        for item in scanner:
            name = item.name
            if not name.startswith(name_filter) or not _listable(name):
                continue
            key = base + name
            try:
                if item.is_symlink():
                    real = os.path.realpath(item.path)
                    if not inside(root, real):
                        continue
                else:
                    real = os.path.join(directory, name)
                if item.is_dir():
                    out.append(_Entry(name + "/", key, real, None))
                elif item.is_file():
                    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
                        continue
                    st = item.stat()
                    if stat.S_ISREG(st.st_mode):
                        out.append(_Entry(name, key, real, st))
            except OSError:  # vanished meanwhile
                continue
    out.sort(key=lambda entry: entry.order)
    return out


def _scan_start(
    root: str, directory: str, base: str, name_filter: str
) -> tuple[str | None, list[_Entry]]:
    real = os.path.realpath(directory)
    if not inside(root, real) or not os.path.isdir(real):
        return None, []
    return real, _scan(real, base, name_filter, root)


def _has_object(directory: str, root: str) -> bool:
    """Whether a listing would find any object below ``directory``."""
    pending = [directory]
    seen = {directory}
    while pending:
        try:
            scanner = os.scandir(pending.pop())
        except OSError:
            continue
        with scanner:
            for item in scanner:
                if not _listable(item.name):
                    continue
                try:
                    real = item.path
                    if item.is_symlink():
                        real = os.path.realpath(item.path)
                        if not inside(root, real):
                            continue
                    if item.is_file():
                        return True
                    if item.is_dir() and real not in seen:
                        seen.add(real)
                        pending.append(real)
                except OSError:
                    continue
    return False
