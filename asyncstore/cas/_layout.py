"""Where the content-addressed layer keeps things, under its prefix.

    blobs/<algorithm>/<hex[:2]>/<hex>     the blobs, by digest
    staging/<32 hex>                      a streamed put in progress (digest not known yet)
    uploads/<id>/state.json               an upload session's state (the source of truth)
    uploads/<id>/data                     the session's multipart upload, then its assembled content
    uploads/<id>/tail-<end offset>        bytes held back until a part reaches the minimum size
    artifacts/<ref>/@artifact.json        an artifact's commit record (data + manifest digests)
    trees/<ref>/@tree.json                a synced tree's index (one entry per file)

No key is the "directory" of another (the local backend cannot hold both
``a`` and ``a/b``): reference segments cannot contain ``@``, and session
ids and staging names are fixed-length hex.
"""

from __future__ import annotations

import re

from .._errors import InvalidArgumentError, InvalidKeyError
from ._digest import Digest

__all__ = [
    "MAX_REF_LENGTH",
    "blob_key",
    "check_prefix",
    "check_ref",
    "digest_from_key",
]

MAX_REF_LENGTH = 512
_REF_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_BLOB_KEY = re.compile(r"blobs/([a-z0-9]+)/([0-9a-f]{2})/([0-9a-f]+)")


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is ``""`` or a key prefix ending with ``/``.

    Raises:
        InvalidKeyError: naming the prefix and the rule it breaks.
    """
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"prefix must be a str, not {type(prefix).__name__}")
    if prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise InvalidKeyError(f"prefix {prefix!r} must be empty or end with '/'", key=prefix)
    for segment in prefix[:-1].split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(
                f"prefix {prefix!r} has an empty, '.' or '..' segment", key=prefix
            )
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in segment):
            raise InvalidKeyError(f"prefix {prefix!r} contains a control character", key=prefix)
    return prefix


def check_ref(ref: object, *, what: str = "artifact ref") -> str:
    """Return ``ref`` if it is a ``/``-separated reference such as ``stacks/t_123/web/42``.

    Segments are ``[A-Za-z0-9_][A-Za-z0-9._-]*``; at most 512 characters in all.

    Raises:
        InvalidArgumentError: naming the ref and the rule it breaks.
    """
    if not isinstance(ref, str):
        raise InvalidArgumentError(f"{what} must be a str, not {type(ref).__name__}")
    if not ref or len(ref) > MAX_REF_LENGTH:
        raise InvalidArgumentError(
            f"{what} {ref[:60]!r} must be 1 to {MAX_REF_LENGTH} characters long", key=ref[:60]
        )
    for segment in ref.split("/"):
        if not _REF_SEGMENT.fullmatch(segment):
            raise InvalidArgumentError(
                f"{what} {ref!r}: segment {segment!r} must match [A-Za-z0-9_][A-Za-z0-9._-]* "
                "(no empty segments, no leading '.' or '/')",
                key=ref,
            )
    return ref


def blob_key(prefix: str, digest: Digest) -> str:
    """The key of the blob with ``digest``."""
    encoded = digest.encoded
    return f"{prefix}blobs/{digest.algorithm}/{encoded[:2]}/{encoded}"


def digest_from_key(prefix: str, key: str) -> Digest | None:
    """The digest a blob key names, or None for a key that is not a blob key."""
    if not key.startswith(prefix):
        return None
    match = _BLOB_KEY.fullmatch(key[len(prefix) :])
    if match is None or not match.group(3).startswith(match.group(2)):
        return None
    try:
        return Digest(f"{match.group(1)}:{match.group(3)}")
    except InvalidArgumentError:
        return None
