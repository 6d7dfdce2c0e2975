"""Sidecars: what a data file cannot hold (content type, metadata, the recorded sha256).

A sidecar is a small JSON file in the mirror tree under
``<root>/.asyncstore/meta``, written atomically, and believed only while the
inode it records is that of the data file (the inode check, described in the
package documentation). The ETag and the `ObjectInfo` of an object are made
here too, from the data file's stat and its sidecar.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time

from ..._backend import WriteAttributes
from ..._errors import InvalidKeyError, StoreError
from ..._stream._files import pwrite_all
from ..._types import ObjectInfo
from ._paths import Paths, create_exclusive, meta_dir, new_temp_name

__all__ = [
    "META_ATTEMPTS",
    "Record",
    "etag",
    "load_sidecar",
    "object_info",
    "write_sidecar",
]

_SIDECAR_FORMAT = 1
#: Attempts at a consistent data file + sidecar pair before giving up on the metadata.
META_ATTEMPTS = 5
#: A data file or sidecar changed this recently (seconds) may be mid-commit.
_FRESH = 2.0

Record = dict[str, object]


def etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def _fresh(timestamp: float) -> bool:
    return abs(time.time() - timestamp) < _FRESH


def object_info(key: str, st: os.stat_result, record: Record | None) -> ObjectInfo:
    content_type: str | None = None
    metadata: dict[str, str] = {}
    if record is not None:
        value = record.get("content_type")
        content_type = value if isinstance(value, str) else None
        raw = record.get("metadata")
        if isinstance(raw, dict):
            metadata = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=etag(st),
        last_modified=datetime.datetime.fromtimestamp(
            st.st_mtime_ns / 1e9, tz=datetime.timezone.utc
        ),
        content_type=content_type,
        metadata=metadata,
    )


def _read_record(path: str) -> tuple[Record | None, os.stat_result | None]:
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            raw = file.read()
    except OSError:
        return None, None
    try:
        record = json.loads(raw)
    except ValueError:
        return None, st
    return (record if isinstance(record, dict) else None), st


def load_sidecar(p: Paths, st: os.stat_result) -> tuple[Record | None, bool]:
    """The sidecar of ``p`` if it describes the data file ``st``; and whether to retry."""
    try:
        meta_dir(p)
    except InvalidKeyError:
        return None, False  # a planted symbolic link: the object is shown without metadata
    record, meta_st = _read_record(p.meta)
    # The sidecar belongs to the inode it records, whatever happened to the bytes since:
    # a file changed in place (same inode, new mtime or size) keeps its recorded
    # sha256, so that a whole read reports the corruption (DigestMismatchError).
    if record is not None and record.get("inode") == st.st_ino:
        return record, False
    # No (matching) sidecar: a writer may be between its two renames. Only then is
    # a retry worth it; an old mismatch (crash, file placed by hand) is final.
    retry = _fresh(st.st_ctime) or (meta_st is not None and _fresh(meta_st.st_mtime))
    return None, retry


def write_sidecar(p: Paths, st: os.stat_result, attrs: WriteAttributes) -> None:
    directory = meta_dir(p)
    previous, _ = _read_record(p.meta)
    version = previous.get("version") if previous is not None else 0
    record: Record = {
        "format": _SIDECAR_FORMAT,
        "key": p.key,
        "version": (version if isinstance(version, int) else 0) + 1,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "size": st.st_size,
        "inode": st.st_ino,
        "mtime_ns": st.st_mtime_ns,
        "content_type": attrs.content_type,
        "metadata": dict(attrs.metadata),
    }
    payload = json.dumps(record, sort_keys=True).encode("utf-8")
    tmp = os.path.join(directory, new_temp_name())
    fd = create_exclusive(
        directory,
        tmp,
        os.O_WRONLY,
        lambda: StoreError(
            f"cannot write the metadata of key {p.key!r}: {directory!r} is not a directory",
            key=p.key,
        ),
    )
    try:
        try:
            pwrite_all(fd, memoryview(payload), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p.meta)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
