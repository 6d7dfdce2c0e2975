"""The asyncstore.testing conformance suite, run on the built-in backends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import pytest

from asyncstore import MemoryBackend, Store
from asyncstore.testing import StoreConformance


class TestMemoryBackend(StoreConformance):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with Store(MemoryBackend()) as store:
            yield store

    async def leftovers(self, store: Store) -> list[str]:
        assert isinstance(store.backend, MemoryBackend)
        return [f"{key} ({upload_id})" for key, upload_id in await store.backend.pending_uploads()]


def _temp_files(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, name), root)
        for d, _, names in os.walk(root)
        for name in names
        if name.startswith(".asyncstore-")
    )


class TestLocalBackend(StoreConformance):
    skip = {  # noqa: RUF012 - a ClassVar of the base class
        "test_a_key_can_also_be_a_prefix": (
            "a file-system path cannot be both a file and a directory; "
            "the local backend rejects the second key with InvalidKeyError"
        ),
    }

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        from asyncstore.backends.local import LocalBackend

        self.root = tmp_path / "root"
        async with Store(LocalBackend(self.root)) as store:
            yield store

    async def leftovers(self, store: Store) -> list[str]:
        return await anyio.to_thread.run_sync(_temp_files, self.root)
