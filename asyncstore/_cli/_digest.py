"""sha256 of local files and of objects, computed off the event loop."""

from __future__ import annotations

import hashlib
import io
import os

import anyio.to_thread

from .. import DigestMismatchError, Store

__all__ = ["BLOCK_SIZE", "sha256_file", "sha256_object"]

#: Bytes read and hashed per worker-thread call: large enough that the thread
#: hop is noise, small enough that cancellation is honoured quickly.
BLOCK_SIZE = 4 * 1024 * 1024


def _open(path: str | os.PathLike[str]) -> io.BufferedReader:
    return open(path, "rb")


def _hash_block(file: io.BufferedReader, hasher: hashlib._Hash, buffer: memoryview) -> int:
    n = file.readinto(buffer)
    if n:
        hasher.update(buffer[:n])
    return n


async def sha256_file(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a local file, read and hashed in worker threads, block by block.

    Raises:
        OSError: the file cannot be opened or read.
    """
    file = await anyio.to_thread.run_sync(_open, path)
    try:
        hasher = hashlib.sha256()
        buffer = memoryview(bytearray(BLOCK_SIZE))
        while await anyio.to_thread.run_sync(_hash_block, file, hasher, buffer):
            pass
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(file.close)
    return "sha256:" + hasher.hexdigest()


async def sha256_object(store: Store, key: str) -> tuple[str, str | None]:
    """Read ``key`` back and return ``(sha256 of its bytes, sha256 recorded at upload)``.

    The bytes are hashed (in worker threads) as they stream in parallel ranges.

    Raises:
        NotFoundError: the key does not exist.
        DigestMismatchError: a sha256 was recorded and the bytes do not match it.
    """
    hasher = hashlib.sha256()
    # The Store would verify too (verify=True), but it does not hand back the
    # digest it computed; hashing once here and comparing ourselves avoids
    # hashing every byte twice.
    async with store.stream(key, verify=False) as body:
        async for chunk in body:
            await anyio.to_thread.run_sync(hasher.update, chunk)
        recorded = body.info.sha256 if body.info is not None else None
    actual = "sha256:" + hasher.hexdigest()
    if recorded is not None and recorded != actual:
        raise DigestMismatchError(
            f"key {key!r} is corrupt: its bytes hash to {actual}, "
            f"but {recorded} was recorded at upload",
            expected=recorded,
            actual=actual,
            key=key,
        )
    return actual, recorded
