"""asyncstore as an fsspec filesystem: pandas, pyarrow, Dask, xarray and zarr over any Store.

    import fsspec, pandas as pd
    df = pd.read_parquet("asyncstore+s3://bucket/table.parquet")

or, to serve the plain protocols with asyncstore (so existing code and
``storage_options`` work unchanged):

    import asyncstore.fsspec
    asyncstore.fsspec.register(("s3", "gs", "az"))

The filesystem (`AsyncStoreFileSystem`) is an ``fsspec.asyn.AsyncFileSystem``
over asyncstore's public API: every full read is verified against the sha256
recorded at upload, writes stream as multipart uploads through the core, and
clients are made lazily on whichever event loop uses them (fsspec's own IO
thread for the synchronous API, or the caller's loop when
``asynchronous=True``). It needs the ``fsspec`` extra:
``pip install 'asyncstore[fsspec]'``.
"""

from __future__ import annotations

try:
    import fsspec as _fsspec  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "asyncstore.fsspec needs fsspec, which is not installed: pip install 'asyncstore[fsspec]'"
    ) from exc

from ._file import AsyncStoreFile
from ._filesystem import (
    AsyncStoreAzureFileSystem,
    AsyncStoreFileSystem,
    AsyncStoreGCSFileSystem,
    AsyncStoreMemoryFileSystem,
    AsyncStoreS3FileSystem,
    register,
)

__all__ = [
    "AsyncStoreAzureFileSystem",
    "AsyncStoreFile",
    "AsyncStoreFileSystem",
    "AsyncStoreGCSFileSystem",
    "AsyncStoreMemoryFileSystem",
    "AsyncStoreS3FileSystem",
    "register",
]
