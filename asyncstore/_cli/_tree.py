"""Trees of files and objects: what ``cp -r``, ``sync``, ``rm -r``, ``du`` and ``verify`` walk.

A tree is a mapping from relative names (``/``-separated) to `Item`\\ s. A
local tree is walked in a worker thread (symbolic links to files are
followed, links to directories are not, so a walk cannot loop); a store tree
is one recursive listing below a prefix, or below a glob's literal start.
"""

from __future__ import annotations

import dataclasses
import os
import stat as stat_module

import anyio.to_thread

from .. import InvalidKeyError, ObjectInfo, Store
from ._globs import Filter, Glob
from ._locations import has_glob

__all__ = [
    "Item",
    "as_prefix",
    "local_path",
    "local_tree",
    "object_item",
    "store_tree",
]


@dataclasses.dataclass(slots=True)
class Item:
    """One file or object of a tree.

    Attributes:
        rel: The name relative to the top of the tree, ``/``-separated.
        where: The local path, or the object's full key.
        size: Bytes.
        mtime: The source file's modification time: a local file's own, an
            object's as recorded by ``upload_file`` (None if not recorded or
            not listed).
        modified: When it last changed: a local file's mtime, an object's
            last-modified time (None if unknown).
        sha256: ``sha256:<hex>`` known without reading the bytes (an object's
            recorded digest), else None.
    """

    rel: str
    where: str
    size: int
    mtime: float | None = None
    modified: float | None = None
    sha256: str | None = None


def as_prefix(key: str) -> str:
    """``key`` as a "directory" prefix: ``""`` stays, anything else ends in ``/``."""
    return key if key == "" or key.endswith("/") else key + "/"


def object_item(rel: str, info: ObjectInfo) -> Item:
    """The `Item` of an object."""
    modified = info.last_modified.timestamp() if info.last_modified is not None else None
    return Item(rel, info.key, info.size, info.mtime, modified, info.sha256)


def _walk(root: str, filter: Filter) -> tuple[dict[str, Item], list[str]]:
    items: dict[str, Item] = {}
    problems: list[str] = []
    stack = [("", root)]
    while stack:
        rel_dir, directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            problems.append(f"cannot read the folder {directory!r}: {exc.strerror or exc}")
            continue
        for entry in entries:
            rel = rel_dir + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not filter.dir_excluded(rel):
                        stack.append((rel + "/", entry.path))
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                problems.append(f"cannot read {entry.path!r}: {exc.strerror or exc}")
                continue
            if not stat_module.S_ISREG(st.st_mode):
                continue  # a link to a directory, a socket, a fifo...
            if filter.excluded(rel):
                continue
            items[rel] = Item(rel, entry.path, st.st_size, st.st_mtime, st.st_mtime)
    return items, problems


async def local_tree(root: str, filter: Filter) -> tuple[dict[str, Item], list[str]]:
    """Every regular file below ``root`` that ``filter`` keeps, and what could not be read.

    A missing ``root`` is an empty tree.
    """
    if not await anyio.to_thread.run_sync(os.path.isdir, root):
        return {}, []
    return await anyio.to_thread.run_sync(_walk, root, filter)


async def store_tree(
    store: Store, key: str, filter: Filter, *, literal: bool = False
) -> dict[str, Item]:
    """Every object below ``key`` (a prefix, or a glob) that ``filter`` keeps.

    For a prefix, names are relative to it as a directory (``logs`` lists
    ``logs/...``). For a glob, the objects it matches and everything below
    the "directories" it matches are listed, named relative to the glob's
    literal directory. Keys ending in ``/`` (folder markers that some tools
    make) are skipped. With ``literal``, glob characters are taken as they are.
    """
    items: dict[str, Item] = {}
    if has_glob(key) and not literal:
        glob = Glob(key)
        base = glob.base
        async for entry in store.list(glob.prefix):
            if (
                isinstance(entry, ObjectInfo)
                and not entry.key.endswith("/")
                and glob.covers(entry.key)
            ):
                rel = entry.key[len(base) :]
                if not filter.excluded(rel):
                    items[rel] = object_item(rel, entry)
        return items
    base = as_prefix(key)
    async for entry in store.list(base):
        if isinstance(entry, ObjectInfo) and not entry.key.endswith("/"):
            rel = entry.key[len(base) :]
            if not filter.excluded(rel):
                items[rel] = object_item(rel, entry)
    return items


def local_path(root: str, rel: str, key: str) -> str:
    """Where the object ``key``, named ``rel`` in its tree, goes below the folder ``root``.

    Raises:
        InvalidKeyError: the name would not stay below ``root`` (an empty,
            ``.`` or ``..`` segment, a leading ``/``), or holds a NUL.
    """
    segments = rel.split("/")
    if (
        rel.startswith("/")
        or "\0" in rel
        or any(s in ("", ".", "..") for s in segments)
        or (os.sep != "/" and any(os.sep in s for s in segments))
    ):
        raise InvalidKeyError(
            f"key {key!r} cannot be written as a file below {root!r}: its name {rel!r} "
            "has an empty, '.' or '..' segment",
            key=key,
        )
    return os.path.join(root, *segments)
