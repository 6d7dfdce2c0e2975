"""Deterministic test data: bytes, streams of chunks, and their digest."""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator

import anyio.to_thread

from .._backend import MiB

__all__ = ["pattern", "pattern_chunks", "sha256_of"]


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


async def pattern_chunks(size: int, chunk: int = MiB, seed: int = 0) -> AsyncIterator[bytes]:
    """``size`` deterministic bytes as an async stream, never more than one chunk in memory."""
    block = bytearray(random.Random(seed).randbytes(chunk))
    sent = 0
    counter = 0
    while sent < size:
        n = min(chunk, size - sent)
        block[:8] = counter.to_bytes(8, "big")
        counter += 1
        sent += n
        yield bytes(block[:n])


async def sha256_of(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
    """Hash a stream of chunks (in worker threads); return (``sha256:<hex>``, size)."""
    h = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        await anyio.to_thread.run_sync(h.update, chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size
