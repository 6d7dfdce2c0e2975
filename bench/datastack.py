"""The data stack against moto: pandas Parquet and zarr arrays via asyncstore, s3fs and obstore.

Each case runs in a fresh interpreter (its own CPU time and peak RSS) against moto's
server on 127.0.0.1 (``asyncstore.testing.emulators``):

* ``parquet_write:<client>`` / ``parquet_read:<client>``: ``DataFrame.to_parquet`` and
  ``pandas.read_parquet`` of a table of ``--size-mib`` MiB (default 256) of float64
  columns, one file, through an fsspec filesystem: asyncstore's
  (``asyncstore+s3://``, sha256 verified on the full read), s3fs, obstore's ``FsspecStore``;
* ``zarr_write:<client>`` / ``zarr_read:<client>``: an array of ``--chunks`` chunks
  (default 1,000, 64 KiB each, uncompressed) written and read whole, through
  asyncstore's ``ZarrStore``, zarr's ``FsspecStore`` over s3fs, zarr's ``ObjectStore``
  over obstore.

The Dask example's wall time (tests/test_dask_distributed.py) is not measured here yet.

Usage: ``python bench/datastack.py [--size-mib 256] [--chunks 1000] [--cases ...]``;
prints a table and writes ``bench/results/datastack.json``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _harness import (
    REPO,
    CaseFailed,
    emit_result,
    machine_info,
    measure,
    print_table,
    run_child,
    script_parser,
    write_json,
)

from asyncstore.testing.emulators import FAKE_AWS_ENV as FAKE_ENV
from asyncstore.testing.emulators import moto_server

BUCKET = "datastack-bench"
MiB = 2**20
CLIENTS = {"parquet": ("asyncstore", "s3fs", "obstore"), "zarr": ("asyncstore", "s3fs", "obstore")}
CASES = [
    f"{workload}_{op}:{client}"
    for workload, clients in CLIENTS.items()
    for op in ("write", "read")
    for client in clients
]
OUT = REPO / "bench" / "results" / "datastack.json"


# -- in the child ----------------------------------------------------------------------------


def _filesystem(client: str, endpoint: str) -> tuple[Any, str]:
    """An fsspec filesystem of ``client`` and the path prefix it takes."""
    if client == "asyncstore":
        from asyncstore.fsspec import AsyncStoreS3FileSystem

        return AsyncStoreS3FileSystem(endpoint_url=endpoint), BUCKET
    if client == "s3fs":
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=endpoint), BUCKET
    from obstore.fsspec import FsspecStore

    fs = FsspecStore(
        "s3",
        config={"endpoint": endpoint, "region": "us-east-1"},
        client_options={"allow_http": True},
    )
    return fs, BUCKET


def _frame(size_mib: int) -> Any:
    import numpy as np
    import pandas as pd

    rows = size_mib * MiB // (8 * 8)
    rng = np.random.default_rng(0)
    return pd.DataFrame({f"c{i}": rng.random(rows) for i in range(8)})


def _zarr_store(client: str, endpoint: str, path: str, *, read_only: bool) -> Any:
    if client == "asyncstore":
        from asyncstore.zarr import ZarrStore

        return ZarrStore(f"s3://{BUCKET}/{path}", endpoint=endpoint, read_only=read_only)
    if client == "s3fs":
        import s3fs
        from zarr.storage import FsspecStore

        fs = s3fs.S3FileSystem(endpoint_url=endpoint, asynchronous=True)
        return FsspecStore(fs, path=f"{BUCKET}/{path}", read_only=read_only)
    from obstore.store import S3Store
    from zarr.storage import ObjectStore

    store = S3Store(
        BUCKET,
        prefix=path,
        endpoint=endpoint,
        region="us-east-1",
        client_options={"allow_http": True},
    )
    return ObjectStore(store, read_only=read_only)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    workload_op, client = name.split(":")
    workload, op = workload_op.split("_")
    endpoint = args.endpoint
    if workload == "parquet":
        import pandas as pd

        frame = _frame(args.size_mib)
        fs, bucket = _filesystem(client, endpoint)
        path = f"{bucket}/parquet/{client}.parquet"

        def run() -> dict[str, Any]:
            if op == "write":
                started = time.perf_counter()
                frame.to_parquet(path, filesystem=fs, compression=None)
                return {"seconds": time.perf_counter() - started, "bytes": fs.size(path)}
            frame.to_parquet(path, filesystem=fs, compression=None) if not fs.exists(path) else None
            started = time.perf_counter()
            back = pd.read_parquet(path, filesystem=fs)
            seconds = time.perf_counter() - started
            assert len(back) == len(frame)
            return {"seconds": seconds, "bytes": fs.size(path)}

        return measure(run)
    import numpy as np
    import zarr

    chunk = 8192  # float64: 64 KiB per chunk
    shape = (args.chunks * chunk,)
    data = np.random.default_rng(1).random(shape)
    path = f"zarr/{client}"

    def run_zarr() -> dict[str, Any]:
        if op == "write":
            store = _zarr_store(client, endpoint, path, read_only=False)
            array = zarr.create_array(
                store, shape=shape, chunks=(chunk,), dtype="f8", compressors=None, overwrite=True
            )
            started = time.perf_counter()
            array[:] = data
            return {"seconds": time.perf_counter() - started, "bytes": data.nbytes}
        store = _zarr_store(client, endpoint, path, read_only=False)
        array = zarr.create_array(
            store, shape=shape, chunks=(chunk,), dtype="f8", compressors=None, overwrite=True
        )
        array[:] = data
        reader = zarr.open_array(_zarr_store(client, endpoint, path, read_only=True), mode="r")
        started = time.perf_counter()
        back = reader[:]
        seconds = time.perf_counter() - started
        assert (back == data).all()
        return {"seconds": seconds, "bytes": data.nbytes}

    return measure(run_zarr)


# -- in the parent ---------------------------------------------------------------------------


def main() -> None:
    parser = script_parser(__doc__ or "", CASES, OUT)
    parser.add_argument("--size-mib", type=int, default=256, help="Parquet table size (256)")
    parser.add_argument("--chunks", type=int, default=1000, help="zarr chunks (1000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (1)")
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        emit_result(run_case(args.case, args))
        return
    import os

    import boto3

    cases = [c for c in args.cases.split(",") if c]
    rows: list[dict[str, Any]] = []
    env = {**os.environ, **FAKE_ENV}
    os.environ.update(FAKE_ENV)
    with moto_server() as server:
        boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(
            Bucket=BUCKET
        )
        options = [
            "--endpoint",
            server.url,
            "--size-mib",
            str(args.size_mib),
            "--chunks",
            str(args.chunks),
        ]
        for name in cases:
            runs = []
            for _ in range(args.repeat):
                try:
                    runs.append(run_child(__file__, name, options, env=env, timeout=1800))
                except CaseFailed as exc:
                    runs.append({"error": str(exc)})
            best = min(
                (r for r in runs if "error" not in r), key=lambda r: r["seconds"], default=runs[0]
            )
            rows.append({"case": name, **best})
    lines = []
    for row in rows:
        if "error" in row:
            lines.append([row["case"], "failed", "", "", row["error"][:60]])
            continue
        mbs = row["bytes"] / row["seconds"] / 1e6
        lines.append(
            [
                row["case"],
                f"{row['seconds']:.2f}",
                f"{mbs:,.0f}",
                f"{row['cpu_seconds']:.2f}",
                f"{row['peak_rss_mib']:,.0f}",
            ]
        )
    print_table(
        f"Data stack against moto: Parquet {args.size_mib} MiB, zarr {args.chunks} chunks "
        "of 64 KiB",
        ["case", "seconds", "MB/s", "CPU s", "peak RSS MiB"],
        lines,
        notes=["best of --repeat runs; moto on the same 2 cores is often the limit"],
    )
    write_json(
        args.out,
        {
            "machine": machine_info("pandas", "pyarrow", "zarr", "fsspec", "s3fs", "obstore"),
            "size_mib": args.size_mib,
            "chunks": args.chunks,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
