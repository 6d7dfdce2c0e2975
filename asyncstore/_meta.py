"""asyncstore's reserved metadata entries and the user-metadata rules.

The core records a few facts with every object, as metadata entries whose
names start with ``asyncstore-``: the sha256 computed while the bytes
streamed, and, for ``upload_file``, the source file's mtime and mode. A
backend stores them like any other metadata (translating names where its
service needs to); the Store moves them into `ObjectInfo`
fields and never shows them in ``ObjectInfo.metadata``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._errors import InvalidArgumentError
from ._types import ObjectInfo

__all__ = ["MODE", "MTIME", "RESERVED_PREFIX", "SHA256", "check_user_metadata", "public_info"]

RESERVED_PREFIX = "asyncstore-"
SHA256 = "asyncstore-sha256"
MTIME = "asyncstore-mtime"
MODE = "asyncstore-mode"

#: Total bytes of user metadata (names + values); S3's limit, the smallest of the services.
MAX_METADATA_BYTES = 2048
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SHA256_VALUE = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_user_metadata(metadata: Mapping[str, str] | None, *, key: str) -> dict[str, str]:
    """Validate user metadata and return a plain copy.

    Names are lowercase ASCII tokens (``[a-z0-9][a-z0-9_.-]*``), values printable
    ASCII, together at most 2 KiB; names starting with ``asyncstore-`` are reserved.

    Raises:
        InvalidArgumentError: naming the key and the offending entry.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata for key {key!r} must be a mapping of str to str, "
            f"not {type(metadata).__name__}",
            key=key,
        )
    total = 0
    out: dict[str, str] = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgumentError(
                f"metadata name {name!r} for key {key!r} must be lowercase ASCII letters, "
                "digits, '_', '.' or '-'",
                key=key,
            )
        if name.startswith(RESERVED_PREFIX):
            raise InvalidArgumentError(
                f"metadata name {name!r} for key {key!r} is reserved by asyncstore", key=key
            )
        if not isinstance(value, str) or not all(0x20 <= ord(c) < 0x7F for c in value):
            raise InvalidArgumentError(
                f"metadata value for {name!r} on key {key!r} must be printable ASCII text",
                key=key,
            )
        total += len(name) + len(value)
        out[name] = value
    if total > MAX_METADATA_BYTES:
        raise InvalidArgumentError(
            f"metadata for key {key!r} is {total} bytes; the limit is {MAX_METADATA_BYTES}",
            key=key,
        )
    return out


def is_sha256_digest(value: object) -> bool:
    """Whether ``value`` is ``sha256:`` followed by 64 lowercase hex digits."""
    return isinstance(value, str) and _SHA256_VALUE.fullmatch(value) is not None


def public_info(info: ObjectInfo) -> ObjectInfo:
    """Move the reserved entries of ``info.metadata`` into their ObjectInfo fields."""
    raw = info.metadata
    if not any(name.startswith(RESERVED_PREFIX) for name in raw):
        return info
    user = {k: v for k, v in raw.items() if not k.startswith(RESERVED_PREFIX)}
    sha = raw.get(SHA256)
    mtime = raw.get(MTIME)
    mode = raw.get(MODE)
    return ObjectInfo(  # not dataclasses.replace: this runs for every read and head
        info.key,
        info.size,
        info.etag,
        info.last_modified,
        info.content_type,
        user,
        sha if is_sha256_digest(sha) else info.sha256,
        _parse_float(mtime) if mtime is not None else info.mtime,
        _parse_mode(mode) if mode is not None else info.mode,
    )


def _parse_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _parse_mode(value: str) -> int | None:
    try:
        return int(value, 8) & 0o7777
    except ValueError:
        return None
