"""Where a key lives under the root: its data file, its sidecar, and the checks on both.

Keys become paths here (reserved segments, segment length, no way out of the
root, not even through a symbolic link), and the directories on the way are
made and pruned here, race-free against a concurrent delete.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat
import uuid
from collections.abc import Callable, Sequence

from ..._errors import InvalidKeyError, StoreError
from ..._keys import validate_key

__all__ = [
    "META",
    "O_CLOEXEC",
    "O_NOFOLLOW",
    "O_NONBLOCK",
    "RESERVED",
    "Paths",
    "collision",
    "create_exclusive",
    "directory_conflict",
    "inside",
    "key_segments",
    "make_paths",
    "meta_dir",
    "new_temp_name",
    "prune_dirs",
    "real_object",
    "real_parent",
]

#: Path segments starting with this are reserved for the backend's own files.
RESERVED = ".asyncstore"
META = (".asyncstore", "meta")
#: Longest key segment: the file system's 255 bytes, less the sidecar's ".json".
_MAX_SEGMENT = 250
#: How often a missing parent directory is re-created when a concurrent delete removes it.
_MKDIR_ATTEMPTS = 10

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@dataclasses.dataclass(frozen=True, slots=True)
class Paths:
    """Where one key lives under a (real) root."""

    key: str
    root: str  # realpath of the backend's root
    parent: str  # lexical directory of the data file
    name: str  # last key segment
    meta: str  # sidecar path

    @property
    def data(self) -> str:
        return os.path.join(self.parent, self.name)

    @property
    def meta_root(self) -> str:
        return os.path.join(self.root, *META)


def key_segments(key: str) -> list[str]:
    validate_key(key)
    segments = key.split("/")
    for segment in segments:
        if segment.startswith(RESERVED):
            raise InvalidKeyError(
                f"key {key!r} has the path segment {segment!r}; names starting with "
                f"{RESERVED!r} are reserved by the local backend",
                key=key,
            )
        if len(segment.encode("utf-8")) > _MAX_SEGMENT:
            raise InvalidKeyError(
                f"key {key!r} has a path segment longer than {_MAX_SEGMENT} bytes, "
                "which the local backend cannot store",
                key=key,
            )
        if os.sep != "/" and os.sep in segment:
            raise InvalidKeyError(f"key {key!r} contains {os.sep!r}", key=key)
    return segments


def make_paths(key: str, root: str, segments: Sequence[str]) -> Paths:
    parent = os.path.join(root, *segments[:-1])
    meta_dirs = [segment + ".d" for segment in segments[:-1]]
    meta = os.path.join(root, *META, *meta_dirs, segments[-1] + ".json")
    return Paths(key=key, root=root, parent=parent, name=segments[-1], meta=meta)


def inside(root: str, path: str) -> bool:
    base = root if root.endswith(os.sep) else root + os.sep
    return path == root or path.startswith(base)


def real_parent(p: Paths) -> str:
    real = os.path.realpath(p.parent)
    if not inside(p.root, real):
        raise InvalidKeyError(
            f"key {p.key!r} resolves outside the store's root directory {p.root!r} "
            "(through a symbolic link)",
            key=p.key,
        )
    return real


def real_object(p: Paths) -> str:
    real = os.path.realpath(p.data)
    if not inside(p.root, real):
        raise InvalidKeyError(
            f"key {p.key!r} resolves outside the store's root directory {p.root!r} "
            "(through a symbolic link)",
            key=p.key,
        )
    return real


def meta_dir(p: Paths) -> str:
    """The directory of the sidecar of ``p``, if it is reached through no symbolic link.

    The metadata tree is the backend's own: a symbolic link planted in it (or
    as ``.asyncstore`` itself) would make sidecar writes and deletes land
    wherever it points, outside the root included, so none is followed.

    Raises:
        InvalidKeyError: a directory on the way to the sidecar is a symbolic link.
    """
    directory = os.path.dirname(p.meta)
    if os.path.realpath(directory) != directory:
        raise InvalidKeyError(
            f"the metadata of key {p.key!r} would be reached through a symbolic link under "
            f"{os.path.join(p.root, RESERVED)!r}, which the local backend never follows",
            key=p.key,
        )
    return directory


def collision(p: Paths) -> InvalidKeyError:
    """The error for a key whose parent path runs into an existing object."""
    segments = p.key.split("/")
    for count in range(1, len(segments)):
        path = os.path.join(p.root, *segments[:count])
        try:
            st = os.stat(path)
        except OSError:
            break
        if not stat.S_ISDIR(st.st_mode):
            used = "/".join(segments[:count])
            return InvalidKeyError(
                f"key {p.key!r} cannot be stored: {used!r} is an object, not a directory",
                key=p.key,
            )
    return InvalidKeyError(
        f"key {p.key!r} cannot be stored: one of its parent paths is not a directory",
        key=p.key,
    )


def directory_conflict(key: str) -> InvalidKeyError:
    return InvalidKeyError(
        f"key {key!r} cannot be stored: {key + '/'!r} is a directory holding other keys",
        key=key,
    )


def new_temp_name() -> str:
    return f"{RESERVED}-{uuid.uuid4().hex}.part"


def prune_dirs(path: str, stop: str) -> None:
    """Remove empty directories from ``path`` up to (not including) ``stop``."""
    while path != stop and inside(stop, path):
        try:
            os.rmdir(path)
        except OSError:  # not empty, gone, busy: another writer is there
            return
        path = os.path.dirname(path)


def _file_in_the_way(directory: str) -> bool:
    """Whether ``directory`` or one of its parents exists as something other than a directory."""
    path = directory
    while path and path != os.path.dirname(path):
        if os.path.lexists(path) and not os.path.isdir(path):
            return True
        path = os.path.dirname(path)
    return False


def create_exclusive(
    directory: str, path: str, flags: int, on_collision: Callable[[], StoreError]
) -> int:
    """Create ``path`` with O_EXCL, making ``directory`` first (again, if a delete pruned it)."""
    for attempt in itertools.count(1):
        try:
            # makedirs races with a concurrent delete's pruning too: a parent it just
            # made can vanish before it makes the child (FileNotFoundError). Retry both.
            os.makedirs(directory, exist_ok=True)
            return os.open(path, flags | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o666)
        except (FileExistsError, NotADirectoryError) as exc:
            # A file where a directory should be is a key collision; anything else
            # (makedirs saw EEXIST, then a prune removed the directory) is the race.
            if _file_in_the_way(directory) or attempt >= _MKDIR_ATTEMPTS:
                raise on_collision() from exc
        except FileNotFoundError:
            if attempt >= _MKDIR_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
