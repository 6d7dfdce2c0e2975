"""Metadata names between asyncstore and Azure, which wants C# identifiers.

Azure metadata names must be C# identifiers (a letter or ``_``, then letters,
digits and ``_``), compared case-insensitively. asyncstore's user metadata
names are lowercase ``[a-z0-9][a-z0-9_.-]*``, and its reserved names are
``asyncstore-<name>``. The translation is reversible and keeps common names
readable:

| asyncstore name                  | stored in Azure as              | rule                  |
|----------------------------------|---------------------------------|-----------------------|
| `owner`, `created_by`            | `owner`, `created_by`           | already an identifier |
| `asyncstore-sha256`              | `asyncstore_sha256`             | reserved entry        |
| `content-hash`                   | `_content__hash`                | escaped               |
| `x.y`, `1st`                     | `_x_dy`, `_1st`                 | escaped               |
| `my_key-2`, `asyncstore_x`       | `_my_ukey__2`, `_asyncstore_ux` | escaped               |

An escaped name is ``_`` followed by the name with ``_`` written ``_u``,
``-`` written ``__`` and ``.`` written ``_d``. User names never start with
``_``, so the leading ``_`` marks an escaped name; names that are already
identifiers (and do not start with ``asyncstore_``) are stored unchanged.
Every stored name is lowercase, so no two of them collide in Azure's
case-insensitive comparison.

Reading goes the other way. A name that is not the canonical encoding of
some asyncstore name (written by another tool: ``Owner``, ``_x``, ``a_b_c``
with an invalid escape...) is reported exactly as Azure returns it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

from ..._errors import InvalidArgumentError
from ..._meta import RESERVED_PREFIX

__all__ = ["decode_metadata", "decode_name", "encode_metadata", "encode_name"]

_STORED_RESERVED = "asyncstore_"
_PLAIN = re.compile(r"\A[a-z][a-z0-9_]*\Z")
_USER = re.compile(r"\A[a-z0-9][a-z0-9_.-]*\Z")
_RESERVED_REST = re.compile(r"\A[a-z0-9][a-z0-9_.-]*\Z")
_ESCAPE = {"_": "_u", "-": "__", ".": "_d"}
_UNESCAPE = {"u": "_", "_": "-", "d": "."}


def _escape(text: str) -> str:
    return "".join(_ESCAPE.get(ch, ch) for ch in text)


def _unescape(text: str) -> str | None:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        if ch != "_":
            out.append(ch)
            continue
        code = next(chars, "")
        if code not in _UNESCAPE:
            return None
        out.append(_UNESCAPE[code])
    return "".join(out)


def encode_name(name: str, *, key: str | None = None) -> str:
    """The Azure metadata name for an asyncstore one (user or reserved).

    Raises:
        InvalidArgumentError: the name is neither a user metadata name nor a reserved one.
    """
    if name.startswith(RESERVED_PREFIX):
        rest = name[len(RESERVED_PREFIX) :]
        if _RESERVED_REST.match(rest):
            return _STORED_RESERVED + _escape(rest)
    elif _USER.match(name):
        if _PLAIN.match(name) and not name.startswith(_STORED_RESERVED):
            return name
        return "_" + _escape(name)
    where = f" for key {key!r}" if key is not None else ""
    raise InvalidArgumentError(
        f"metadata name {name!r}{where} cannot be stored in Azure: use lowercase ASCII "
        "letters, digits, '_', '.' or '-'",
        key=key,
    )


@functools.lru_cache(maxsize=1024)  # each read decodes the same few names
def decode_name(stored: str) -> str:
    """The asyncstore name for a stored Azure metadata name (foreign names as they are)."""
    if stored.startswith(_STORED_RESERVED):
        rest = _unescape(stored[len(_STORED_RESERVED) :])
        if rest is not None and _RESERVED_REST.match(rest):
            name = RESERVED_PREFIX + rest
            if encode_name(name) == stored:
                return name
        return stored
    if stored.startswith("_"):
        user = _unescape(stored[1:])
        if user is not None and _USER.match(user) and encode_name(user) == stored:
            return user
    return stored


def encode_metadata(metadata: Mapping[str, str], *, key: str | None = None) -> dict[str, str]:
    """Azure metadata for asyncstore metadata (reserved entries included)."""
    return {encode_name(name, key=key): value for name, value in metadata.items()}


def decode_metadata(stored: Mapping[str, str] | None) -> dict[str, str]:
    """asyncstore metadata (reserved entries included) for Azure metadata."""
    return {decode_name(name): value for name, value in (stored or {}).items()}
