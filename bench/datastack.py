"""The data stack on S3: pandas Parquet, zarr arrays and Dask via asyncstore, s3fs and obstore.

Each case runs in a fresh interpreter (its own CPU time and peak RSS) against each
server of ``--servers`` on 127.0.0.1: ``moto`` (``asyncstore.testing.emulators``; it
reads a whole object for every ranged GET and saturates a core, so it favours fewer,
larger requests) and ``responder`` (``bench/responders.py s3``, which answers from
memory at almost no cost, so the clients' own costs show; a fresh one for each case,
since it keeps what is written to it). The server's CPU time over each case is
reported beside the client's.

* ``parquet_write:<client>`` / ``parquet_read:<client>``: ``DataFrame.to_parquet`` and
  ``pandas.read_parquet`` of a table of ``--size-mib`` MiB (default 256) of float64
  columns, one file, through an fsspec filesystem: asyncstore's
  (``asyncstore+s3://``, sha256 verified on the full read), s3fs, obstore's ``FsspecStore``;
* ``zarr_write:<client>`` / ``zarr_read:<client>``: an array of ``--chunks`` chunks
  (default 1,000, 64 KiB each, uncompressed) written and read whole, through
  asyncstore's ``ZarrStore``, zarr's ``FsspecStore`` over s3fs, zarr's ``ObjectStore``
  over obstore;
* ``dask:<client>``: the Dask example of docs/datastack.md (tests/test_dask_distributed.py)
  at ``--dask-rows`` rows (default 4 million) in 8 partitions: a ``LocalCluster`` of 2
  worker processes writes the partitioned Parquet dataset, reads it back with
  ``dask.dataframe.read_parquet``, computes a group-by and writes the result, through
  ``asyncstore+s3://`` or s3fs's ``s3://``; the cluster's start-up is not counted.

Usage: ``python bench/datastack.py [--servers moto,responder] [--size-mib 256]
[--chunks 1000] [--dask-rows 4000000] [--repeat 1] [--cases ...]``; prints a table and
writes ``bench/results/datastack.json``. The peers (s3fs, obstore) come from the
``bench`` extra in the project's venv (s3fs 2026.9 installs beside aiobotocore 3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
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
    *(
        f"{workload}_{op}:{client}"
        for workload, clients in CLIENTS.items()
        for op in ("write", "read")
        for client in clients
    ),
    "dask:asyncstore",
    "dask:s3fs",
]
SERVERS = ("moto", "responder")
DASK_PARTITIONS = 8
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


def _dask_partition(index: int, rows: int) -> Any:
    """Partition ``index`` of the Dask example's dataset (the same wherever it is made)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(index)
    start = index * rows
    return pd.DataFrame(
        {
            "id": np.arange(start, start + rows, dtype="int64"),
            "station": rng.integers(0, 100, rows).astype("int64"),
            "reading": rng.normal(20.0, 5.0, rows),
        }
    )


def run_dask(client: str, args: argparse.Namespace) -> dict[str, Any]:
    """The Dask example: write, read, group-by, write, on a 2-process LocalCluster."""
    import functools
    import warnings

    import dask.dataframe as dd
    import distributed

    # dask's read_parquet uses pandas 3.1's deprecated inplace=True: not ours to fix.
    warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning)
    rows = args.dask_rows // DASK_PARTITIONS
    scheme = "asyncstore+s3" if client == "asyncstore" else "s3"
    base = f"{scheme}://{BUCKET}/dask/{client}-{time.time_ns()}"
    options = {"endpoint_url": args.endpoint}
    make = functools.partial(_dask_partition, rows=rows)

    def run() -> dict[str, Any]:
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            distributed.Client(cluster) as dask_client,
        ):
            dask_client.run(lambda: None)  # the workers are up
            started = time.perf_counter()
            frame = dd.from_map(make, range(DASK_PARTITIONS), meta=make(0).iloc[:0])
            dask_client.compute(
                frame.to_parquet(f"{base}/readings", storage_options=options, compute=False)
            ).result()
            readings = dd.read_parquet(f"{base}/readings", storage_options=options)
            stats = readings.groupby("station")["reading"].agg(["count", "sum", "mean"])
            dask_client.compute(
                stats.to_parquet(f"{base}/stations", storage_options=options, compute=False)
            ).result()
            seconds = time.perf_counter() - started
            import pandas as pd

            got = pd.read_parquet(f"{base}/stations", storage_options=options)
            assert int(got["count"].sum()) == rows * DASK_PARTITIONS
            return {"seconds": seconds, "bytes": rows * DASK_PARTITIONS * 24}

    return measure(run)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    workload_op, client = name.split(":")
    if workload_op == "dask":
        return run_dask(client, args)
    workload, op = workload_op.split("_")
    endpoint = args.endpoint
    if workload == "parquet":
        import pandas as pd

        frame = _frame(args.size_mib)
        fs, bucket = _filesystem(client, endpoint)
        path = f"{bucket}/parquet/{client}.parquet"

        # Every client makes one request before the clock starts (the read case always
        # did): s3fs and obstore import and build their clients when made, asyncstore
        # opens its store (and imports its S3 stack) on first use.
        exists = fs.exists(path)

        def run() -> dict[str, Any]:
            if op == "write":
                started = time.perf_counter()
                frame.to_parquet(path, filesystem=fs, compression=None)
                return {"seconds": time.perf_counter() - started, "bytes": fs.size(path)}
            frame.to_parquet(path, filesystem=fs, compression=None) if not exists else None
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
    # A fresh prefix: nothing to delete first (the responder has no batch delete).
    path = f"zarr/{client}-{time.time_ns()}"

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


@contextlib.contextmanager
def _server(kind: str) -> Iterator[tuple[str, int]]:
    """The S3 server ``kind`` on 127.0.0.1, with the bucket: (endpoint, pid)."""
    if kind == "moto":
        import boto3

        with moto_server() as server:
            boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(
                Bucket=BUCKET
            )
            yield server.url, server.pid
        return
    script = pathlib.Path(__file__).with_name("responders.py")
    # Objects up to 1100 MiB are kept (the responder's default): every case's data fits.
    process = subprocess.Popen(
        [sys.executable, str(script), "s3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the S3 responder did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", process.pid  # every bucket exists
    finally:
        process.kill()
        process.wait()


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median time (the lower middle one of an even count), with every time."""
    done = sorted((r for r in runs if "error" not in r), key=lambda r: r["seconds"])
    if not done:
        return runs[0]
    times = [r["seconds"] for r in done]
    return {
        **done[(len(done) - 1) // 2],
        "seconds_min": times[0],
        "seconds_max": times[-1],
        "seconds_runs": [r.get("seconds") for r in runs],
        "failed_runs": len(runs) - len(done),
    }


def main() -> None:
    parser = script_parser(__doc__ or "", CASES, OUT)
    parser.add_argument("--size-mib", type=int, default=256, help="Parquet table size (256)")
    parser.add_argument("--chunks", type=int, default=1000, help="zarr chunks (1000)")
    parser.add_argument(
        "--dask-rows", type=int, default=4_000_000, help="rows of the Dask example (4000000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case, interleaved; the median is shown"
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="comma-separated: moto, responder (both)"
    )
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        emit_result(run_case(args.case, args))
        return
    cases = [c for c in args.cases.split(",") if c]
    servers = [s for s in args.servers.split(",") if s]
    for name in (*cases, *servers):
        if name not in (*CASES, *SERVERS):
            parser.error(f"unknown case or server {name!r}")
    rows: list[dict[str, Any]] = []
    env = {**os.environ, **FAKE_ENV}
    os.environ.update(FAKE_ENV)
    for kind in servers:
        # Interleaved: round r runs every case once, so that a change in the machine's
        # load falls on every client alike. The responder keeps every object written to
        # it (a run's Parquet files alone came to several GB, and later cases slowed for
        # every client): a fresh one per case. moto: one for the whole run.
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        fresh = kind == "responder"
        with contextlib.ExitStack() as whole_run:
            shared = None if fresh else whole_run.enter_context(_server(kind))
            for _ in range(args.repeat):
                for name in cases:
                    with _server(kind) if fresh else contextlib.nullcontext(shared) as server:
                        assert server is not None
                        endpoint, pid = server
                        options = [
                            *("--endpoint", endpoint, "--size-mib", str(args.size_mib)),
                            *("--chunks", str(args.chunks), "--dask-rows", str(args.dask_rows)),
                        ]
                        try:
                            runs[name].append(
                                run_child(
                                    __file__, name, options, env=env, timeout=1800, server_pid=pid
                                )
                            )
                        except CaseFailed as exc:
                            runs[name].append({"error": str(exc)})
        for name in cases:
            rows.append({"case": name, "server": kind, **_median_run(runs[name])})
    lines = []
    for row in rows:
        if "error" in row:
            lines.append([row["case"], row["server"], "failed", "", "", "", "", row["error"][:60]])
            continue
        mbs = row["bytes"] / row["seconds"] / 1e6
        lines.append(
            [
                row["case"],
                row["server"],
                f"{row['seconds']:.2f}",
                f"{row['seconds_min']:.2f}-{row['seconds_max']:.2f}",
                "" if row["case"].startswith("dask") else f"{mbs:,.0f}",
                f"{row['cpu_seconds']:.2f}",
                f"{row['server_cpu_seconds']:.2f}",
                f"{row['peak_rss_mib']:,.0f}",
            ]
        )
    print_table(
        f"Data stack on S3: Parquet {args.size_mib} MiB, zarr {args.chunks} chunks of 64 KiB, "
        f"Dask {args.dask_rows:,} rows",
        ["case", "server", "seconds", "range", "MB/s", "CPU s", "server CPU s", "peak RSS MiB"],
        lines,
        left=("case", "server"),
        notes=[
            f"median of {args.repeat} run(s), the cases interleaved; range: fastest-slowest; "
            "CPU s: the client process (Dask: the driver only); server CPU s: over the whole "
            "child, start-up included",
            "moto reads the whole object for each ranged GET and is often the limit",
            f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        ],
    )
    write_json(
        args.out,
        {
            "machine": machine_info(
                "pandas", "pyarrow", "zarr", "fsspec", "s3fs", "obstore", "dask", "distributed"
            ),
            "load_average": os.getloadavg(),
            "size_mib": args.size_mib,
            "chunks": args.chunks,
            "dask_rows": args.dask_rows,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
