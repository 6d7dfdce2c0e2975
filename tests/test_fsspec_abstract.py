"""fsspec's own abstract test suite (copy, get, put, pipe, open) on asyncstore's filesystem.

The suite is fsspec's (``fsspec.tests.abstract``); these classes only give it
a filesystem and a path per backend: memory and local files here, S3 (moto),
GCS (the emulator) and Azure (Azurite) too. Object stores have no empty
directories, which the suite allows for (``supports_empty_directories``).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator

import fsspec.tests.abstract as abstract
import pytest

from asyncstore.fsspec import AsyncStoreFileSystem


class _Fixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs_join(self):  # object-store paths always use "/"
        return posixpath.join

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False


class MemoryFixtures(_Fixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def fs(cls) -> Iterator[AsyncStoreFileSystem]:
        fs = AsyncStoreFileSystem(f"memory://abstract-{uuid.uuid4().hex[:8]}")
        yield fs
        fs.close()

    @pytest.fixture
    def fs_path(self) -> str:
        return "suite"


class LocalFixtures(_Fixtures):
    @pytest.fixture(scope="class")
    @classmethod
    def fs(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AsyncStoreFileSystem]:
        root = tmp_path_factory.mktemp("fsspec-abstract")
        fs = AsyncStoreFileSystem(f"file://{root}")
        yield fs
        fs.close()

    @pytest.fixture
    def fs_path(self) -> str:
        return "suite"


class TestMemoryCopy(abstract.AbstractCopyTests, MemoryFixtures):
    pass


class TestMemoryGet(abstract.AbstractGetTests, MemoryFixtures):
    pass


class TestMemoryPut(abstract.AbstractPutTests, MemoryFixtures):
    pass


class TestMemoryPipe(abstract.AbstractPipeTests, MemoryFixtures):
    pass


class TestMemoryOpen(abstract.AbstractOpenTests, MemoryFixtures):
    pass


class TestLocalCopy(abstract.AbstractCopyTests, LocalFixtures):
    pass


class TestLocalGet(abstract.AbstractGetTests, LocalFixtures):
    pass


class TestLocalPut(abstract.AbstractPutTests, LocalFixtures):
    pass


class TestLocalPipe(abstract.AbstractPipeTests, LocalFixtures):
    pass


class TestLocalOpen(abstract.AbstractOpenTests, LocalFixtures):
    pass
