"""pandas and pyarrow through asyncstore's fsspec filesystem, and digest checks end to end.

pandas finds the filesystem by protocol (``asyncstore+s3://``, or
``asyncstore://`` with a ``root`` in ``storage_options``); pyarrow takes it
wrapped as ``PyFileSystem(FSSpecHandler(fs))``. A corrupted object makes the
pandas read fail with asyncstore's DigestMismatchError, whether the reader
reads it whole (Parquet, small) or in order (CSV, larger than the whole-read
threshold).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from _servers import BUCKET, S3Server
from pyarrow.fs import FSSpecHandler, PyFileSystem

from asyncstore import DigestMismatchError
from asyncstore.fsspec import AsyncStoreFileSystem, AsyncStoreS3FileSystem


def _frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64"),
            "group": rng.integers(0, 7, rows).astype("int64"),
            "value": rng.random(rows),
            "name": [f"row-{i}" for i in range(rows)],
        }
    )


@pytest.fixture
def s3_options(s3: S3Server) -> Iterator[dict[str, str]]:
    yield {"endpoint_url": s3.endpoint}
    AsyncStoreS3FileSystem(endpoint_url=s3.endpoint).close()  # the cached instance's clients


def _url() -> str:
    return f"asyncstore+s3://{BUCKET}/pandas-{uuid.uuid4().hex[:8]}"


def test_parquet_round_trip_through_storage_options(
    s3_options: dict[str, str], s3: S3Server
) -> None:
    frame = _frame(50_000)
    url = f"{_url()}/table.parquet"
    frame.to_parquet(url, storage_options=s3_options)
    key = url.split(f"{BUCKET}/", 1)[1]
    assert s3.keys(key) == [key]
    back = pd.read_parquet(url, storage_options=s3_options)
    pd.testing.assert_frame_equal(back, frame)
    columns = pd.read_parquet(url, columns=["value"], storage_options=s3_options)
    pd.testing.assert_frame_equal(columns, frame[["value"]])


def test_csv_round_trip_through_storage_options(s3_options: dict[str, str]) -> None:
    frame = _frame(20_000, seed=1)
    url = f"{_url()}/table.csv"
    frame.to_csv(url, index=False, storage_options=s3_options)
    back = pd.read_csv(url, storage_options=s3_options)
    pd.testing.assert_frame_equal(back, frame)


def test_pyarrow_dataset_over_fsspec_handler(s3: S3Server) -> None:
    fs = AsyncStoreS3FileSystem(endpoint_url=s3.endpoint, skip_instance_cache=True)
    base = f"{BUCKET}/arrow-{uuid.uuid4().hex[:8]}"
    arrow_fs = PyFileSystem(FSSpecHandler(fs))
    table = pa.Table.from_pandas(_frame(30_000, seed=2), preserve_index=False)
    ds.write_dataset(table, base, filesystem=arrow_fs, format="parquet", partitioning=["group"])
    written = sorted(fs.find(base))
    assert len(written) == 7  # one file per group
    dataset = ds.dataset(base, filesystem=arrow_fs, format="parquet", partitioning=["group"])
    back = dataset.to_table().to_pandas().sort_values("id", ignore_index=True)
    expected = table.to_pandas()
    pd.testing.assert_frame_equal(back[expected.columns.tolist()], expected, check_dtype=False)
    only_3 = dataset.to_table(filter=ds.field("group") == 3).to_pandas()
    assert len(only_3) == int((expected["group"] == 3).sum())
    fs.close()


def _corrupt_in_place(path: Path) -> None:
    """Flip one byte of a local store's data file, keeping its inode, size and mtime."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        byte = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_corrupted_parquet_file_fails_the_pandas_read(tmp_path: Path) -> None:
    options = {"root": f"file://{tmp_path}"}
    frame = _frame(20_000, seed=3)
    frame.to_parquet("asyncstore://t.parquet", storage_options=options)
    pd.testing.assert_frame_equal(
        pd.read_parquet("asyncstore://t.parquet", storage_options=options), frame
    )
    _corrupt_in_place(tmp_path / "t.parquet")
    with pytest.raises(DigestMismatchError) as info:
        pd.read_parquet("asyncstore://t.parquet", storage_options=options)
    assert info.value.key == "t.parquet"
    AsyncStoreFileSystem(**options).close()


def test_a_corrupted_large_parquet_file_fails_the_pandas_read(tmp_path: Path) -> None:
    # Above the whole-read threshold, read_parquet reads the footer, then the column
    # chunks from offset 4: the spans cover the file, and its sha256 is checked.
    options = {"root": f"file://{tmp_path}", "full_read_threshold": 64 * 1024}
    frame = _frame(50_000, seed=5)
    frame.to_parquet("asyncstore://t.parquet", storage_options=options)
    assert (tmp_path / "t.parquet").stat().st_size > 4 * 64 * 1024
    pd.testing.assert_frame_equal(
        pd.read_parquet("asyncstore://t.parquet", storage_options=options), frame
    )
    _corrupt_in_place(tmp_path / "t.parquet")
    with pytest.raises(DigestMismatchError) as info:
        pd.read_parquet("asyncstore://t.parquet", storage_options=options)
    assert info.value.key == "t.parquet"
    AsyncStoreFileSystem(**options).close()


def test_a_corrupted_csv_read_in_order_fails_the_pandas_read(tmp_path: Path) -> None:
    # Above the whole-read threshold, the file is read in ranges: verified in order.
    options = {"root": f"file://{tmp_path}", "full_read_threshold": 64 * 1024}
    frame = _frame(20_000, seed=4)
    frame.to_csv("asyncstore://t.csv", index=False, storage_options=options)
    assert (tmp_path / "t.csv").stat().st_size > 4 * 64 * 1024
    _corrupt_in_place(tmp_path / "t.csv")
    with pytest.raises(DigestMismatchError):
        pd.read_csv("asyncstore://t.csv", storage_options=options)
    AsyncStoreFileSystem(**options).close()
