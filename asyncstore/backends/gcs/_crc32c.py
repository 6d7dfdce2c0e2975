"""CRC32C of a whole object from the CRC32Cs of its parts, and GCS's base64 form.

The core computes a crc32c per part (google-crc32c, in C) while the parts
stream. GCS records one crc32c per object: for a composed object it computes
it itself, for a resumable upload it checks the one sent with the final
request. `combine` derives the object's value from the parts' values and
lengths without touching the bytes again (zlib's ``crc32_combine``, with the
Castagnoli polynomial): O(log length) per part.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

__all__ = ["combine", "combine_all", "from_base64", "to_base64"]

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (both reflected)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return p


def _x2n_table() -> list[int]:
    table = []
    p = 1 << 30  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()


def _x8nmodp(n: int) -> int:
    """x^(8n) modulo the polynomial: the shift of ``n`` bytes."""
    p = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def combine(crc1: int, crc2: int, len2: int) -> int:
    """The crc32c of ``A + B`` from crc32c(A), crc32c(B) and len(B)."""
    return _multmodp(_x8nmodp(len2), crc1) ^ crc2


def combine_all(parts: Iterable[tuple[int, int]]) -> int:
    """The crc32c of the concatenation of parts given as ``(crc32c, length)``."""
    crc = 0
    for value, length in parts:
        crc = combine(crc, value, length)
    return crc


def to_base64(value: int) -> str:
    """GCS's form of a crc32c: base64 of the big-endian 4 bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def from_base64(text: str) -> int | None:
    """The crc32c value of GCS's base64 form, or None if it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None
