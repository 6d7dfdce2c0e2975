"""Key and list-prefix validation, the same for every backend.

Keys are ``/``-separated UTF-8 strings of at most 1024 bytes: not empty, no
leading or trailing ``/``, no empty (``//``), ``.`` or ``..`` segments, no NUL
or other control characters. These rules keep a key portable across S3, GCS,
Azure and a file system, and make "resolves outside the root" impossible for
the local backend before it even looks at the disk.
"""

from __future__ import annotations

from ._errors import InvalidKeyError

__all__ = ["MAX_KEY_BYTES", "validate_key", "validate_prefix"]

MAX_KEY_BYTES = 1024


def _check_chars(value: str, what: str) -> None:
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise InvalidKeyError(
                f"{what} {value!r} contains the control character {ch!r}", key=value
            )
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"{what} {value!r} is not valid Unicode text", key=value) from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"{what} {value[:40]!r}... is {len(encoded)} bytes long; the limit is {MAX_KEY_BYTES}",
            key=value,
        )


def _check_segments(value: str, segments: list[str], what: str) -> None:
    for segment in segments:
        if segment == "":
            raise InvalidKeyError(f"{what} {value!r} has an empty path segment ('//')", key=value)
        if segment in (".", ".."):
            raise InvalidKeyError(f"{what} {value!r} has a {segment!r} path segment", key=value)


def validate_key(key: object) -> str:
    """Return ``key`` if it is an acceptable object key.

    Raises:
        InvalidKeyError: naming the key and the rule it breaks.
    """
    if (  # the common key, checked by C string methods alone (every call checks its key)
        type(key) is str
        and key.isascii()
        and key.isprintable()  # for ASCII: no control character
        and 0 < len(key) <= MAX_KEY_BYTES
        and key[0] not in "/."
        and key[-1] != "/"
        and "//" not in key
        and "/." not in key
    ):
        return key
    # The rest: a key with a non-ASCII character or a segment that starts with "." may be
    # fine; anything else breaks a rule, which the checks below name.
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, not {type(key).__name__}: {key!r}")
    if key == "":
        raise InvalidKeyError("key must not be empty", key=key)
    _check_chars(key, "key")
    if key.startswith("/"):
        raise InvalidKeyError(f"key {key!r} must not start with '/'", key=key)
    if key.endswith("/"):
        raise InvalidKeyError(f"key {key!r} must not end with '/'", key=key)
    _check_segments(key, key.split("/"), "key")
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is an acceptable list prefix ("" lists everything).

    A prefix follows the key rules, except that it may be empty, may end with
    ``/``, and its last segment may be partial (``"logs/2024-"``).

    Raises:
        InvalidKeyError: naming the prefix and the rule it breaks.
    """
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
    if prefix == "":
        return prefix
    _check_chars(prefix, "prefix")
    if prefix.startswith("/"):
        raise InvalidKeyError(f"prefix {prefix!r} must not start with '/'", key=prefix)
    segments = prefix.split("/")
    if prefix.endswith("/"):
        segments = segments[:-1]
    _check_segments(prefix, segments, "prefix")
    return prefix
