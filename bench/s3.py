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
* ``obstore`` (in the project's venv): ``put_async`` with ``chunk_size`` 16 MiB
  and ``max_concurrency`` 8 for upload; for download, ``get_range_async`` of
  16 MiB ranges, 8 in flight, written with ``os.pwrite`` (obstore has no
  parallel download of its own); ``get_async`` + ``bytes_async`` for small
  (reqwest's pool has no connection cap: ``pool_max_idle_per_host`` 64);
* ``aioboto3``, ``s3fs``: they pin aiobotocore 2.x, which cannot share a venv
  with asyncstore's aiobotocore 3, so they run from ``bench/.venv-peers``,
  created on first use (``python -m venv`` + ``pip install s3fs aioboto3
  psutil``); their child processes never import asyncstore. aioboto3 uses its
  ``upload_file`` / ``download_file`` with a boto3 ``TransferConfig`` of
  16 MiB x 8; s3fs uses ``_put_file`` (``chunksize`` 16 MiB,
  ``max_concurrency`` 8) and ``_get_file`` (one streamed GET: s3fs has no
  parallel download) and ``_cat_file`` for small.

A peer that fails (cannot be installed, cannot reach moto) gets the reason in
the table instead of a figure.

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
import re
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
PEER_TIMEOUT = 300  # seconds a peer's case may take before it is reported as hung
PART = 16 * MiB
CONCURRENCY = 8
POOL = 64
ASYNCSTORE = ("asyncstore-asyncio-aiohttp", "asyncstore-asyncio-httpx", "asyncstore-trio-httpx")
PEER_VENV_CLIENTS = ("aioboto3", "s3fs")
LARGE_CLIENTS = (*ASYNCSTORE, "boto3", "obstore", *PEER_VENV_CLIENTS)
SMALL_CLIENTS = (*ASYNCSTORE, "aiobotocore-raw", "boto3", "obstore", *PEER_VENV_CLIENTS)
PEER_VENV = REPO / "bench" / ".venv-peers"
PEER_PACKAGES = ("s3fs", "aioboto3", "psutil")
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

    async def run_asyncio(self) -> None:
        """The same heartbeat without anyio (the peers' venv does not have it)."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(HEARTBEAT)
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


# -- the peers: obstore (project venv); aioboto3 and s3fs (bench/.venv-peers, no asyncstore) ------


def _obstore_store(args: argparse.Namespace) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=args.endpoint,
        region=os.environ["AWS_REGION"],
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        token=os.environ["AWS_SESSION_TOKEN"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "pool_max_idle_per_host": str(POOL)},
    )


def _asyncio_case(body: Callable[[LoopLag, dict[str, Any]], Any]) -> dict[str, Any]:
    """Run ``body(lag, holder)`` (a coroutine function) under asyncio with a heartbeat."""
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def main() -> None:
        heartbeat = asyncio.create_task(lag.run_asyncio())
        try:
            await body(lag, holder)
        finally:
            heartbeat.cancel()

    def run() -> dict[str, Any]:
        asyncio.run(main())
        return dict(holder)

    return {**_measure(run), **lag.figures()}


async def _timed(holder: dict[str, Any], work: Any) -> Any:
    await asyncio.sleep(0.05)
    started, cpu = time.perf_counter(), _cpu_seconds()
    result = await work
    holder["seconds"] = time.perf_counter() - started
    holder["cpu_seconds"] = _cpu_seconds() - cpu
    return result


def case_obstore_large(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    key = "large/obstore.bin"
    restored = args.work / "restored-obstore.bin"

    async def download(store: Any) -> None:
        size = (await obstore.head_async(store, key))["size"]
        gate = asyncio.Semaphore(CONCURRENCY)
        fd = os.open(restored, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:

            async def part(start: int) -> None:
                async with gate:
                    data = await obstore.get_range_async(
                        store, key, start=start, end=min(start + PART, size)
                    )
                    os.pwrite(fd, memoryview(data), start)

            await asyncio.gather(*(part(start) for start in range(0, size, PART)))
        finally:
            os.close(fd)

    async def body(lag: LoopLag, holder: dict[str, Any]) -> None:
        store = _obstore_store(args)
        await obstore.list_with_delimiter_async(store, "large/")  # set-up done
        if direction == "upload":
            work = obstore.put_async(
                store, key, args.src, chunk_size=PART, max_concurrency=CONCURRENCY
            )
            await _timed(holder, work)
        else:
            await _timed(holder, download(store))
            holder["sha256"] = file_sha256(restored)

    try:
        return _asyncio_case(body)
    finally:
        restored.unlink(missing_ok=True)


def case_obstore_small(args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    keys = _small_keys(args)

    async def get(store: Any, key: str) -> int:
        result = await obstore.get_async(store, key)
        return len(await result.bytes_async())

    async def body(lag: LoopLag, holder: dict[str, Any]) -> None:
        store = _obstore_store(args)
        await get(store, keys[0])  # set-up done
        sizes = await _timed(holder, asyncio.gather(*(get(store, key) for key in keys)))
        holder["bytes"] = sum(sizes)

    return _asyncio_case(body)


def _aiobotocore_config() -> Any:
    from aiobotocore.config import AioConfig

    return AioConfig(
        max_pool_connections=POOL,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def case_aioboto3(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import aioboto3
    from boto3.s3.transfer import TransferConfig

    key = "large/aioboto3.bin"
    restored = args.work / "restored-aioboto3.bin"
    config = TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY
    )
    keys = _small_keys(args)

    async def body(lag: LoopLag, holder: dict[str, Any]) -> None:
        session = aioboto3.Session()
        async with session.client(
            "s3", endpoint_url=args.endpoint, config=_aiobotocore_config()
        ) as client:
            await client.head_bucket(Bucket=BUCKET)  # set-up done

            async def get(key: str) -> int:
                response = await client.get_object(Bucket=BUCKET, Key=key)
                async with response["Body"] as stream:
                    return len(await stream.read())

            if workload == "upload":
                await _timed(holder, client.upload_file(str(args.src), BUCKET, key, Config=config))
            elif workload == "download":
                work = client.download_file(BUCKET, key, str(restored), Config=config)
                await _timed(holder, work)
            else:
                sizes = await _timed(holder, asyncio.gather(*(get(k) for k in keys)))
                holder["bytes"] = sum(sizes)

    try:
        return _asyncio_case(body)
    finally:
        restored.unlink(missing_ok=True)


def case_s3fs(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import s3fs

    key = f"{BUCKET}/large/s3fs.bin"
    restored = args.work / "restored-s3fs.bin"
    keys = [f"{BUCKET}/{k}" for k in _small_keys(args)]

    async def body(lag: LoopLag, holder: dict[str, Any]) -> None:
        fs = s3fs.S3FileSystem(
            asynchronous=True,
            endpoint_url=args.endpoint,
            max_concurrency=CONCURRENCY,
            config_kwargs={"max_pool_connections": POOL},
            skip_instance_cache=True,
        )
        session = await fs.set_session()
        try:
            await fs._info(f"{BUCKET}/{_small_keys(args)[0]}")  # set-up done
            if workload == "upload":
                await _timed(holder, fs._put_file(str(args.src), key, chunksize=PART))
            elif workload == "download":
                await _timed(holder, fs._get_file(key, str(restored)))
            else:
                sizes = await _timed(holder, asyncio.gather(*(fs._cat_file(k) for k in keys)))
                holder["bytes"] = sum(len(b) for b in sizes)
        finally:
            await session.close()

    try:
        return _asyncio_case(body)
    finally:
        restored.unlink(missing_ok=True)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its raw figures."""
    workload, client = name.split(":")
    if client == "aioboto3":
        return case_aioboto3(workload, args)
    if client == "s3fs":
        return case_s3fs(workload, args)
    if client == "obstore":
        if workload == "get-small":
            return case_obstore_small(args)
        return case_obstore_large(workload, args)
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


def peer_python() -> pathlib.Path:
    """The interpreter of ``bench/.venv-peers``, created (venv + pip install) on first use."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} (pip install {' '.join(PEER_PACKAGES)}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    probe = [str(python), "-c", "import " + ", ".join(PEER_PACKAGES)]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        install = [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES]
        subprocess.run(install, check=True)
    return python


def failure_reason(stderr: str, status: int) -> str:
    """A one-line reason from a child's traceback: its exception line, plus any HTTP status."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    reason = (errors or lines or [f"exit status {status}"])[-1][:200]
    statuses = re.findall(r"status: (\d{3})", stderr)
    return reason + (f" (HTTP {statuses[-1]})" if statuses else "")


class CaseFailed(Exception):
    """A case's child process failed; the message is the last line of its stderr."""


def child(name: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add the server's CPU use over it."""
    import psutil

    client = name.split(":")[1]
    python = str(peer_python()) if client in PEER_VENV_CLIENTS else sys.executable
    command = [
        python,
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
    limit = 3600 if name.split(":")[1].startswith("asyncstore-") else PEER_TIMEOUT
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise CaseFailed(f"no result after {limit} s (killed)") from None
    wall = time.perf_counter() - started
    server_cpu = sum(server.cpu_times()[:2]) - before
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise CaseFailed(failure_reason(done.stderr, done.returncode))
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


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Per workload: asyncstore-asyncio-aiohttp's rate / each row's rate (> 1: asyncstore wins)."""
    reference = {row["workload"]: row for row in rows if row["client"] == ASYNCSTORE[0]}
    for row in rows:
        base = reference.get(row["workload"])
        if base is not None:
            key = "requests_per_s" if row["workload"] == "get-small" else "mb_per_s"
            row["asyncstore_ratio"] = base[key] / row[key]


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(
    rows: list[dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    headers = (
        "workload",
        "client",
        "rate",
        "CPU",
        "peak RSS MiB",
        "lag max ms",
        "server CPU/s",
        "asyncstore/this",
    )
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
                _fmt(row.get("asyncstore_ratio"), ".2f"),
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
    print(f"asyncstore/this: {ASYNCSTORE[0]}'s rate / the row's rate (> 1: asyncstore is faster)")


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
    skipped: dict[str, str] = {}
    if importlib.util.find_spec("obstore") is None:
        skipped["obstore"] = "not installed (pip install -e '.[bench]')"
    if any(name.split(":")[1] in PEER_VENV_CLIENTS for name in cases):
        try:
            peer_python()
        except (OSError, subprocess.CalledProcessError) as error:
            for peer in PEER_VENV_CLIENTS:
                skipped[peer] = f"{PEER_VENV} could not be set up: {error}"
    cases = [name for name in cases if name.split(":")[1] not in skipped]
    print(f"preparing a {args.size_mib} MiB file in {args.work} ...", file=sys.stderr)
    args.src = make_source(args.work, args.size_mib)
    args.size = args.src.stat().st_size
    expected = file_sha256(args.src)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    load_at_start = list(os.getloadavg())
    failed: dict[str, str] = {}
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
                if client in failed:
                    continue
                print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                try:
                    if workload == "download" and f"upload:{client}" not in cases:
                        child(f"upload:{client}", args, server._process.pid)
                    runs[name].append(child(name, args, server._process.pid))
                except CaseFailed as error:
                    if client.startswith("asyncstore-"):
                        raise SystemExit(f"case {name} failed: {error}") from None
                    failed[client] = f"{name} failed: {error}"
                if workload == "download":  # free the server's memory
                    key = f"large/{client}.bin"
                    boto3.client("s3", endpoint_url=server.endpoint).delete_object(
                        Bucket=BUCKET, Key=key
                    )
    skipped.update(failed)
    rows = [summarise(name, runs[name], args) for name in cases if runs[name]]
    add_ratios(rows)
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
