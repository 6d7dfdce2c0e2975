"""Dask distributed over asyncstore: 2 worker processes, Parquet on S3 (moto), checked with pandas.

The same steps as the example in docs/datastack.md: a LocalCluster with two
worker processes makes a partitioned Parquet dataset of 2 million rows on
``asyncstore+s3://``, reads it back with ``dask.dataframe.read_parquet`` on
the workers, computes a group-by, writes the result back, and the numbers
are checked against pandas on the same data. The workers get the filesystem
by pickling (without credentials: each resolves them from its environment).
Bounded: 2 million rows (~50 MB in memory), every wait limited.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from _servers import BUCKET, S3Server

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

ROWS_PER_PARTITION = 250_000
PARTITIONS = 8
WAIT = 240  # seconds; the whole test takes ~30 s on 2 cores


def make_partition(index: int) -> pd.DataFrame:
    """Partition ``index`` of the dataset: the same rows wherever it is made."""
    rng = np.random.default_rng(index)
    start = index * ROWS_PER_PARTITION
    return pd.DataFrame(
        {
            "id": np.arange(start, start + ROWS_PER_PARTITION, dtype="int64"),
            "station": rng.integers(0, 100, ROWS_PER_PARTITION).astype("int64"),
            "reading": rng.normal(20.0, 5.0, ROWS_PER_PARTITION),
        }
    )


@pytest.fixture(scope="module")
def client(s3: S3Server) -> Iterator[distributed.Client]:
    # The workers are new processes: they inherit the fake AWS credentials that the
    # s3 fixture put in the environment, and find asyncstore+s3 through entry points.
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit="2GiB",
            host="127.0.0.1",
        ) as cluster,
        distributed.Client(cluster, timeout=WAIT) as client,
    ):
        yield client


# dask's read_parquet calls reset_index and set_index with inplace=True, deprecated by pandas 3.1: a
# dependency's deprecation, filtered by its message only. No ResourceWarning is filtered.
@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame:DeprecationWarning")
def test_dask_groupby_over_parquet_on_s3_matches_pandas(
    client: distributed.Client, s3: S3Server
) -> None:
    options = {"endpoint_url": s3.endpoint}
    base = f"asyncstore+s3://{BUCKET}/dask-{uuid.uuid4().hex[:8]}"
    meta = make_partition(0).iloc[:0]

    frame = dd.from_map(make_partition, range(PARTITIONS), meta=meta)
    client.compute(
        frame.to_parquet(f"{base}/readings", storage_options=options, compute=False)
    ).result(timeout=WAIT)
    written = s3.keys(base.split(f"{BUCKET}/", 1)[1] + "/readings/")
    assert len([k for k in written if k.endswith(".parquet")]) == PARTITIONS

    readings = dd.read_parquet(f"{base}/readings", storage_options=options)
    stats = readings.groupby("station")["reading"].agg(["count", "sum", "mean", "max"])
    client.compute(
        stats.to_parquet(f"{base}/stations", storage_options=options, compute=False)
    ).result(timeout=WAIT)

    got = pd.read_parquet(f"{base}/stations", storage_options=options).sort_index()
    local = pd.concat(make_partition(i) for i in range(PARTITIONS))
    assert len(local) == PARTITIONS * ROWS_PER_PARTITION
    expected = local.groupby("station")["reading"].agg(["count", "sum", "mean", "max"])
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_names=False, rtol=1e-9)
    assert int(got["count"].sum()) == PARTITIONS * ROWS_PER_PARTITION
