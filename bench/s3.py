"""S3 benchmark: asyncstore against a local S3 server, beside the other Python clients.

Usage::

    python bench/s3.py [--size-mib 1024] [--small-count 2000] [--small-kib 16]
                       [--repeat 1] [--cases a,b,...] [--out bench/results/s3.json]

The server is moto's server mode on 127.0.0.1 (``tests/_moto.py``), started
once for the whole run in its own process. Two workloads:

* **large**: ``upload_file`` then ``download_file`` of one ``--size-mib`` MiB
  file (generated once under ``bench/.work``), parts / ranges of 16 MiB, 8 in
  flight, for every client;
* **small**: ``--small-count`` GETs of ``--small-kib`` KiB objects, all
  started at once (the connection pool, 64 connections, is the only limit).

Clients (each case runs in its own child process, so CPU time and peak RSS are
the client's alone):

* ``asyncstore-asyncio-aiohttp``, ``asyncstore-asyncio-httpx``,
  ``asyncstore-trio-httpx``: asyncstore's S3 backend with each HTTP session of
  aiobotocore (sha256 of every byte computed and verified, as always);
* ``aiobotocore-raw`` (small only): bare ``get_object`` + ``read()`` calls, the
  SDK's floor under asyncstore;
* ``boto3``: boto3's S3 transfer manager (threads; ``multipart_chunksize``
  16 MiB, ``max_concurrency`` 8) for large, a pool of 64 threads for small;
* ``aioboto3``, ``s3fs``, ``obstore``: reported as skipped unless installed.

Figures per case: MB/s (10**6 bytes per second) or requests/s; the client's
CPU seconds per GiB (or per 1,000 requests); its peak RSS; for the async
clients, the event loop's worst lag (a heartbeat task sleeps 5 ms in a loop
and records how late it wakes); and the moto server's CPU use over the case
(server CPU seconds / wall seconds): near 1.0 means the server, a single
Python process, is the bottleneck, not the client.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/_moto.py: the server helper the tests use

from _moto import FAKE_ENV, MotoServer  # noqa: E402

DEFAULT_WORK = REPO / "bench" / ".work"
DEFAULT_OUT = REPO / "bench" / "results" / "s3.json"
BUCKET = "asyncstore-bench"
HEARTBEAT = 0.005
RESULT_MARK = "BENCH-RESULT "
PART = 16 * MiB
CONCURRENCY = 8
POOL = 64
ASYNCSTORE = ("asyncstore-asyncio-aiohttp", "asyncstore-asyncio-httpx", "asyncstore-trio-httpx")
LARGE_CLIENTS = (*ASYNCSTORE, "boto3")
SMALL_CLIENTS = (*ASYNCSTORE, "aiobotocore-raw", "boto3")
PEERS = ("aioboto3", "s3fs", "obstore")
CASES = (
    *(f"{direction}:{client}" for client in LARGE_CLIENTS for direction in ("upload", "download")),
    *(f"get-small:{client}" for client in SMALL_CLIENTS),
)


# -- measuring -----------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MiB if sys.platform == "darwin" else peak / 1024


class LoopLag:
    """A heartbeat task's lateness: how long the event loop kept ready tasks waiting."""

    def __init__(self) -> None:
        self.lags: list[float] = []

    async def run(self) -> None:
        import anyio

        while True:
            before = time.perf_counter()
            await anyio.sleep(HEARTBEAT)
            self.lags.append(time.perf_counter() - before - HEARTBEAT)

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.lags)
        if not ordered:
            return {}
        return {
            "loop_lag_max_ms": ordered[-1] * 1e3,
            "loop_lag_p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
        }


def _measure(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    baseline = _peak_rss_mib()
    cpu = _cpu_seconds()
    started = time.perf_counter()
    extra = run()
    seconds = time.perf_counter() - started
    return {
        "seconds": extra.pop("seconds", seconds),
        "cpu_seconds": extra.pop("cpu_seconds", _cpu_seconds() - cpu),
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
        **extra,
    }


# -- the cases (run in a child process) ----------------------------------------------------------


def _asyncstore_parts(client: str) -> tuple[str, str]:
    _, library, http = client.split("-")
    return library, http


def case_asyncstore_large(direction: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from asyncstore import Store, TransferInfo
    from asyncstore.backends.s3 import S3Backend

    library, http = _asyncstore_parts(client)
    key = f"large/{client}.bin"
    restored = args.work / f"restored-{client}.bin"
    lag = LoopLag()
    holder: dict[str, TransferInfo] = {}

    async def transfer() -> None:
        backend = S3Backend(BUCKET, endpoint=args.endpoint, http_client=http)
        async with Store(backend, chunk_size=PART, max_concurrency=CONCURRENCY) as store:
            await store.exists(key)  # the client's one-time set-up is not part of the transfer
            async with anyio.create_task_group() as tg:
                tg.start_soon(lag.run)
                await anyio.sleep(0.05)
                cpu = _cpu_seconds()
                if direction == "upload":
                    holder["info"] = await store.upload_file(args.src, key)
                else:
                    holder["info"] = await store.download_file(key, restored)
                holder["cpu"] = _cpu_seconds() - cpu
                tg.cancel_scope.cancel()

    def run() -> dict[str, Any]:
        anyio.run(transfer, backend=library)
        info = holder["info"]
        return {
            "seconds": info.duration,
            "cpu_seconds": holder["cpu"],
            "sha256": info.sha256,
            "parts": info.part_count,
        }

    try:
        return {**_measure(run), **lag.figures()}
    finally:
        restored.unlink(missing_ok=True)


def _boto3_client() -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=POOL,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=os.environ["BENCH_ENDPOINT"], config=config)


def case_boto3_large(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    client = _boto3_client()
    client.head_bucket(Bucket=BUCKET)  # set-up (credentials, models) done
    config = TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY
    )
    key = "large/boto3.bin"
    restored = args.work / "restored-boto3.bin"

    def run() -> dict[str, Any]:
        if direction == "upload":
            client.upload_file(str(args.src), BUCKET, key, Config=config)
        else:
            client.download_file(BUCKET, key, str(restored), Config=config)
        return {}

    try:
        return _measure(run)
    finally:
        restored.unlink(missing_ok=True)


def _small_keys(args: argparse.Namespace) -> list[str]:
    return [f"small/{index:05d}" for index in range(args.small_count)]


def case_asyncstore_small(client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from asyncstore import Store
    from asyncstore.backends.s3 import S3Backend

    library, http = _asyncstore_parts(client)
    keys = _small_keys(args)
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def gets() -> None:
        backend = S3Backend(BUCKET, endpoint=args.endpoint, http_client=http, max_connections=POOL)
        async with Store(backend) as store:
            await store.exists(keys[0])  # the client's one-time set-up is not part of the run
            sizes: list[int] = []

            async def get(key: str) -> None:
                sizes.append(len(await store.get(key)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(lag.run)
                started, cpu = time.perf_counter(), _cpu_seconds()
                async with anyio.create_task_group() as requests:
                    for key in keys:
                        requests.start_soon(get, key)
                holder["seconds"] = time.perf_counter() - started
                holder["cpu_seconds"] = _cpu_seconds() - cpu
                tg.cancel_scope.cancel()
            holder["bytes"] = sum(sizes)

    def run() -> dict[str, Any]:
        anyio.run(gets, backend=library)
        return dict(holder)

    return {**_measure(run), **lag.figures()}


def case_aiobotocore_small(args: argparse.Namespace) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    keys = _small_keys(args)
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def gets() -> None:
        config = AioConfig(
            max_pool_connections=POOL,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        async with get_session().create_client(
            "s3", endpoint_url=args.endpoint, config=config
        ) as client:

            async def get(key: str) -> int:
                response = await client.get_object(Bucket=BUCKET, Key=key)
                async with response["Body"] as body:
                    return len(await body.read())

            await client.head_bucket(Bucket=BUCKET)  # set-up (credentials, models) done
            heartbeat = asyncio.create_task(lag.run())
            started, cpu = time.perf_counter(), _cpu_seconds()
            sizes = await asyncio.gather(*(get(key) for key in keys))
            holder["seconds"] = time.perf_counter() - started
            holder["cpu_seconds"] = _cpu_seconds() - cpu
            heartbeat.cancel()
            holder["bytes"] = sum(sizes)

    def run() -> dict[str, Any]:
        asyncio.run(gets())
        return dict(holder)

    return {**_measure(run), **lag.figures()}


def case_boto3_small(args: argparse.Namespace) -> dict[str, Any]:
    client = _boto3_client()
    client.head_bucket(Bucket=BUCKET)  # set-up (credentials, models) done
    keys = _small_keys(args)

    def get(key: str) -> int:
        return len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def run() -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(POOL) as pool:
            return {"bytes": sum(pool.map(get, keys))}

    return _measure(run)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its raw figures."""
    workload, client = name.split(":")
    if workload == "get-small":
        if client.startswith("asyncstore-"):
            return case_asyncstore_small(client, args)
        if client == "aiobotocore-raw":
            return case_aiobotocore_small(args)
        return case_boto3_small(args)
    if client.startswith("asyncstore-"):
        return case_asyncstore_large(workload, client, args)
    return case_boto3_large(workload, args)


# -- the parent: the server, the data, every case in a subprocess, the report --------------------


def make_source(work: pathlib.Path, size_mib: int) -> pathlib.Path:
    """Generate (once) a file of ``size_mib`` MiB of pseudo-random blocks, 1 MiB at a time."""
    path = work / f"source-{size_mib}MiB.bin"
    if path.exists() and path.stat().st_size == size_mib * MiB:
        return path
    work.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    block = bytearray(os.urandom(MiB))
    with open(partial, "wb") as file:
        for index in range(size_mib):
            block[:16] = index.to_bytes(8, "little") * 2
            file.write(block)
    partial.rename(path)
    return path


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(8 * MiB):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def child(name: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add the server's CPU use over it."""
    import psutil

    command = [
        sys.executable,
        __file__,
        "--case",
        name,
        "--endpoint",
        args.endpoint,
        "--src",
        str(args.src),
        "--work",
        str(args.work),
        "--small-count",
        str(args.small_count),
    ]
    server = psutil.Process(server_pid)
    before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - started
    server_cpu = sum(server.cpu_times()[:2]) - before
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"case {name} failed with exit status {done.returncode}")
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            # The child's wall time includes its start-up; the case's own seconds are shorter,
            # so this slightly understates the server's load during the transfer itself.
            result["server_cpu_seconds"] = server_cpu
            result["server_cpu_per_wall_s"] = server_cpu / max(result["seconds"], 1e-9)
            result["child_wall_seconds"] = wall
            return result
    raise SystemExit(f"case {name} printed no result")


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    packages = ("asyncstore", "aiobotocore", "botocore", "boto3", "aiohttp", "httpx", "anyio")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in (*packages, "trio", "moto")},
        "server": "moto server mode (ThreadedMotoServer, werkzeug), one child process",
        "load_average_1_5_15_at_end": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summarise(name: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The median run (by throughput) of one case, with derived figures."""
    workload, client = name.split(":")
    small = workload == "get-small"
    for run in runs:
        run["rate"] = (args.small_count if small else args.size) / run["seconds"]
    median = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    row: dict[str, Any] = {"workload": workload, "client": client}
    if small:
        row["requests_per_s"] = median["rate"]
        row["cpu_s_per_1000_requests"] = median["cpu_seconds"] / args.small_count * 1000
    else:
        row["mb_per_s"] = median["rate"] / 1e6
        row["cpu_s_per_gib"] = median["cpu_seconds"] / (args.size / GiB)
    for field in (
        "seconds",
        "cpu_seconds",
        "peak_rss_mib",
        "baseline_rss_mib",
        "loop_lag_max_ms",
        "loop_lag_p99_ms",
        "server_cpu_seconds",
        "server_cpu_per_wall_s",
        "sha256",
        "parts",
        "bytes",
    ):
        if field in median:
            row[field] = median[field]
    row["runs"] = [r["rate"] for r in runs]
    return row


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(
    rows: list[dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    headers = ("workload", "client", "rate", "CPU", "peak RSS MiB", "lag max ms", "server CPU/s")
    lines = []
    for row in rows:
        small = row["workload"] == "get-small"
        rate = f"{row['requests_per_s']:,.0f} req/s" if small else f"{row['mb_per_s']:,.0f} MB/s"
        cpu = (
            f"{row['cpu_s_per_1000_requests']:.2f} s/1k req"
            if small
            else f"{row['cpu_s_per_gib']:.2f} s/GiB"
        )
        lines.append(
            (
                row["workload"],
                row["client"],
                rate,
                cpu,
                _fmt(row.get("peak_rss_mib"), ".0f"),
                _fmt(row.get("loop_lag_max_ms"), ".1f"),
                _fmt(row.get("server_cpu_per_wall_s"), ".2f"),
            )
        )
    print(
        f"asyncstore S3 benchmark against moto: large = {args.size / MiB:,.0f} MiB file, "
        f"parts/ranges of {PART // MiB} MiB x {CONCURRENCY}; small = {args.small_count} GETs "
        f"of {args.small_kib} KiB, pool of {POOL}"
    )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    print(
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    for line in lines:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    for peer, reason in skipped.items():
        print(f"skipped {peer}: {reason}")
    print("server CPU/s: moto's CPU seconds per second of the case; ~1.0 = the server is the limit")


def prepare_small(args: argparse.Namespace) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=args.endpoint)
    body = os.urandom(args.small_kib * 1024)

    def put(key: str) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(put, _small_keys(args)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large object size (1024)")
    parser.add_argument("--small-count", type=int, default=2000, help="small GETs (2000)")
    parser.add_argument("--small-kib", type=int, default=16, help="small object size (16)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is kept")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="JSON results")
    parser.add_argument("--work", type=pathlib.Path, default=DEFAULT_WORK, help="scratch folder")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work = args.work.resolve()
    os.environ.update(FAKE_ENV)

    if args.case:
        os.environ["BENCH_ENDPOINT"] = args.endpoint
        print(RESULT_MARK + json.dumps(run_case(args.case, args)), flush=True)
        return 0

    cases = [name for name in args.cases.split(",") if name]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    skipped = {peer: "not installed" for peer in PEERS if importlib.util.find_spec(peer) is None}
    for peer in set(PEERS) - set(skipped):
        skipped[peer] = "installed, but no case written for it yet"
    print(f"preparing a {args.size_mib} MiB file in {args.work} ...", file=sys.stderr)
    args.src = make_source(args.work, args.size_mib)
    args.size = args.src.stat().st_size
    expected = file_sha256(args.src)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    load_at_start = list(os.getloadavg())
    with MotoServer() as server:
        assert server._process is not None
        args.endpoint = server.endpoint
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=BUCKET)
        if any(name.startswith("get-small:") for name in cases):
            print(f"preparing {args.small_count} objects ...", file=sys.stderr)
            prepare_small(args)
        for attempt in range(args.repeat):
            for name in cases:
                workload, client = name.split(":")
                if workload == "download" and f"upload:{client}" not in cases:
                    child(f"upload:{client}", args, server._process.pid)
                print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                runs[name].append(child(name, args, server._process.pid))
                if workload == "download":  # free the server's memory
                    key = f"large/{client}.bin"
                    boto3.client("s3", endpoint_url=server.endpoint).delete_object(
                        Bucket=BUCKET, Key=key
                    )
    rows = [summarise(name, runs[name], args) for name in cases]
    wrong = [row for row in rows if "sha256" in row and row["sha256"] != expected]
    if wrong:
        print(f"error: digests differ from {expected}: {wrong}", file=sys.stderr)
        return 1
    machine = {**machine_info(), "load_average_1_5_15_at_start": load_at_start}
    print_table(rows, skipped, args)
    print(f"load average at start {load_at_start}, at end {machine['load_average_1_5_15_at_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine,
        "settings": {
            "large_bytes": args.size,
            "part_size": PART,
            "concurrency": CONCURRENCY,
            "small_count": args.small_count,
            "small_bytes": args.small_kib * 1024,
            "pool": POOL,
        },
        "skipped": skipped,
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
