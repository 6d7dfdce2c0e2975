"""Azure benchmark: asyncstore against Azurite, beside the Azure SDK's own transfers.

Usage::

    python bench/azure.py [--size-mib 1024] [--small-count 2000] [--small-kib 16]
                          [--repeat 1] [--cases a,b,...] [--out bench/results/azure.json]

Azurite (``node_modules/.bin/azurite-blob``, installed by ``make test``) is
started once for the run, in memory, on a free port of 127.0.0.1, and stopped
at the end. Two workloads:

* **large**: an upload and a download of one ``--size-mib`` MiB file
  (generated once under ``bench/.work``), in parts / ranges of 8 MiB, 8 in
  flight, for every client;
* **small**: ``--small-count`` GETs of ``--small-kib`` KiB objects, all
  started at once (the connection pool, 100 connections, is the only limit).

Clients (each case runs in its own child process, so CPU time and peak RSS are
the client's alone):

* ``asyncstore-asyncio-httpx``, ``asyncstore-trio-httpx``: asyncstore's Azure
  backend on its anyio transport (``HttpxTransport``); the sha256 of every byte
  is computed and, on download, verified;
* ``asyncstore-asyncio-aiohttp``: the same over azure-core's aiohttp transport;
* ``azure-sdk``: the azure-storage-blob aio SDK by itself (aiohttp):
  ``upload_blob`` from the open file and ``download_blob().readinto`` the
  file, with ``max_concurrency=8`` and 8 MiB blocks / chunks; for small,
  ``download_blob().readall()`` under ``asyncio.gather``;
* ``adlfs`` (``AzureBlobFileSystem`` on Azurite's connection string,
  ``max_concurrency`` 8): ``_put_file`` / ``_get_file`` (the Azure SDK's
  block upload and ranged download underneath), ``_cat_file`` for small;
* ``obstore`` (``AzureStore`` with ``endpoint`` Azurite's account URL, the
  well-known account key, ``allow_http``): ``put_async`` with ``chunk_size``
  8 MiB and ``max_concurrency`` 8; ``get_range_async`` of 8 MiB ranges, 8 in
  flight, written with ``os.pwrite`` (obstore has no parallel download);
  ``get_async`` + ``bytes_async`` for small.

A peer that fails against Azurite gets the reason in the table instead of a
figure.

Figures per case: MB/s (10**6 bytes per second) or requests/s; the client's
CPU seconds per GiB (or per 1,000 requests); its peak RSS; the event loop's
worst lag (a heartbeat task sleeps 5 ms in a loop and records how late it
wakes); and Azurite's CPU use over the case (server CPU seconds / wall
seconds): near 1.0 means the emulator, one Node.js process, is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# Run as a script, this file's folder comes first on sys.path, and this file is named
# azure.py: it would shadow the azure package (azure.core, azure.storage.blob).
if (
    sys.path
    and pathlib.Path(sys.path[0] or ".").resolve() == pathlib.Path(__file__).resolve().parent
):
    sys.path.pop(0)

MiB = 1024 * 1024
GiB = 1024 * MiB
REPO = pathlib.Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
DEFAULT_WORK = REPO / "bench" / ".work"
DEFAULT_OUT = REPO / "bench" / "results" / "azure.json"
CONTAINER = "asyncstore-bench"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HEARTBEAT = 0.005
RESULT_MARK = "BENCH-RESULT "
PEER_TIMEOUT = 300  # seconds a peer case may take before it is reported as hung
PART = 8 * MiB
CONCURRENCY = 8
POOL = 100
ASYNCSTORE = ("asyncstore-asyncio-httpx", "asyncstore-asyncio-aiohttp", "asyncstore-trio-httpx")
PEERS = ("adlfs", "obstore")
CLIENTS = (*ASYNCSTORE, "azure-sdk", *PEERS)
CASES = (
    *(f"upload:{client}" for client in CLIENTS),
    *(f"download:{client}" for client in CLIENTS),
    *(f"get-small:{client}" for client in CLIENTS),
)


def connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={endpoint};"
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


async def _timed(lag: LoopLag, work: Callable[[], Any], holder: dict[str, Any]) -> None:
    """Run ``work()`` beside the heartbeat; record its wall and CPU seconds."""
    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(lag.run)
        await anyio.sleep(0.05)  # let the heartbeat settle
        started, cpu = time.perf_counter(), _cpu_seconds()
        holder["result"] = await work()
        holder["seconds"] = time.perf_counter() - started
        holder["cpu_seconds"] = _cpu_seconds() - cpu
        tg.cancel_scope.cancel()


# -- the cases (run in a child process) ----------------------------------------------------------


def _asyncstore_store(client: str, args: argparse.Namespace) -> tuple[str, Any]:
    from asyncstore import Store
    from asyncstore.backends.azure import AzureBackend

    _, library, http = client.split("-")
    backend = AzureBackend(
        CONTAINER, connection_string=connection_string(args.endpoint), transport=http
    )
    return library, Store(backend, chunk_size=PART, max_concurrency=CONCURRENCY)


def case_asyncstore_large(direction: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    key = "large/object.bin"
    restored = args.work / f"restored-{client}.bin"
    lag = LoopLag()
    holder: dict[str, Any] = {}
    library, store = _asyncstore_store(client, args)

    async def transfer() -> None:
        async with store:
            await store.exists(key)  # the client's one-time set-up is not part of the transfer
            if direction == "upload":
                await _timed(lag, lambda: store.upload_file(args.src, key), holder)
            else:
                await _timed(lag, lambda: store.download_file(key, restored), holder)

    def run() -> dict[str, Any]:
        anyio.run(transfer, backend=library)
        info = holder["result"]
        return {
            "seconds": holder["seconds"],
            "cpu_seconds": holder["cpu_seconds"],
            "sha256": info.sha256,
            "parts": info.part_count,
            "peak_buffered_mib": info.peak_buffered / MiB,
        }

    try:
        return {**_measure(run), **lag.figures()}
    finally:
        restored.unlink(missing_ok=True)


class _Sink:
    """The file the SDK downloads into (it seeks to write ranges in parallel)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # as asyncstore does before its rename
        self.file.close()


def _sdk_service(endpoint: str) -> Any:
    from azure.storage.blob.aio import BlobServiceClient

    return BlobServiceClient.from_connection_string(
        connection_string(endpoint),
        max_single_put_size=PART,
        max_block_size=PART,
        max_single_get_size=PART,
        max_chunk_get_size=PART,
        connection_data_block_size=256 * 1024,
    )


def case_sdk_large(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    key = "large/object.bin"
    restored = args.work / "restored-azure-sdk.bin"
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def transfer() -> None:
        async with _sdk_service(args.endpoint) as service:
            blob = service.get_blob_client(CONTAINER, key)
            await blob.exists()  # set-up done

            async def upload() -> None:
                with open(args.src, "rb") as file:
                    await blob.upload_blob(
                        file, length=args.size, overwrite=True, max_concurrency=CONCURRENCY
                    )

            async def download() -> None:
                sink = _Sink(restored)
                try:
                    downloader = await blob.download_blob(max_concurrency=CONCURRENCY)
                    await downloader.readinto(sink)
                finally:
                    sink.close()

            await _timed(lag, upload if direction == "upload" else download, holder)

    def run() -> dict[str, Any]:
        asyncio.run(transfer())
        out = {"seconds": holder["seconds"], "cpu_seconds": holder["cpu_seconds"]}
        if direction == "download":
            out["sha256"] = file_sha256(restored)  # after the timing: the SDK does not hash
        return out

    try:
        return {**_measure(run), **lag.figures()}
    finally:
        restored.unlink(missing_ok=True)


def _small_keys(args: argparse.Namespace) -> list[str]:
    return [f"small/{index:05d}" for index in range(args.small_count)]


def case_asyncstore_small(client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    keys = _small_keys(args)
    lag = LoopLag()
    holder: dict[str, Any] = {}
    library, store = _asyncstore_store(client, args)

    async def gets() -> None:
        async with store:
            await store.exists(keys[0])  # the client's one-time set-up is not part of the run
            sizes: list[int] = []

            async def get(key: str) -> None:
                sizes.append(len(await store.get(key)))

            async def all_gets() -> int:
                async with anyio.create_task_group() as requests:
                    for key in keys:
                        requests.start_soon(get, key)
                return sum(sizes)

            await _timed(lag, all_gets, holder)

    def run() -> dict[str, Any]:
        anyio.run(gets, backend=library)
        return {
            "seconds": holder["seconds"],
            "cpu_seconds": holder["cpu_seconds"],
            "bytes": holder["result"],
        }

    return {**_measure(run), **lag.figures()}


def case_sdk_small(args: argparse.Namespace) -> dict[str, Any]:
    keys = _small_keys(args)
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def gets() -> None:
        async with _sdk_service(args.endpoint) as service:
            container = service.get_container_client(CONTAINER)
            await container.get_blob_client(keys[0]).exists()  # set-up done

            async def get(key: str) -> int:
                downloader = await container.get_blob_client(key).download_blob()
                return len(await downloader.readall())

            async def all_gets() -> int:
                return sum(await asyncio.gather(*(get(key) for key in keys)))

            await _timed(lag, all_gets, holder)

    def run() -> dict[str, Any]:
        asyncio.run(gets())
        return {
            "seconds": holder["seconds"],
            "cpu_seconds": holder["cpu_seconds"],
            "bytes": holder["result"],
        }

    return {**_measure(run), **lag.figures()}


# -- the peers: adlfs and obstore ----------------------------------------------------------------


def _peer_case(workload: str, args: argparse.Namespace, client: str, body: Any) -> dict[str, Any]:
    """Run ``body(restored, keys)`` (returns the coroutine function to time) under asyncio."""
    restored = args.work / f"restored-{client}.bin"
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def main() -> None:
        await _timed(lag, await body(restored, _small_keys(args)), holder)

    def run() -> dict[str, Any]:
        asyncio.run(main())
        out = {"seconds": holder["seconds"], "cpu_seconds": holder["cpu_seconds"]}
        if workload == "download":
            out["sha256"] = file_sha256(restored)
        elif workload == "get-small":
            out["bytes"] = holder["result"]
        return out

    try:
        return {**_measure(run), **lag.figures()}
    finally:
        restored.unlink(missing_ok=True)


def case_adlfs(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import adlfs

    path = f"{CONTAINER}/large/adlfs.bin"

    async def body(restored: pathlib.Path, keys: list[str]) -> Any:
        fs = adlfs.AzureBlobFileSystem(
            connection_string=connection_string(args.endpoint),
            asynchronous=True,
            max_concurrency=CONCURRENCY,
            skip_instance_cache=True,
        )
        await fs._info(f"{CONTAINER}/{keys[0]}")  # set-up done

        async def upload() -> None:
            await fs._put_file(str(args.src), path, overwrite=True)

        async def download() -> None:
            await fs._get_file(path, str(restored))

        async def gets() -> int:
            paths = [f"{CONTAINER}/{key}" for key in keys]
            return sum(len(b) for b in await asyncio.gather(*map(fs._cat_file, paths)))

        return {"upload": upload, "download": download, "get-small": gets}[workload]

    return _peer_case(workload, args, "adlfs", body)


def case_obstore(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore
    from obstore.store import AzureStore

    key = "large/obstore.bin"

    async def body(restored: pathlib.Path, keys: list[str]) -> Any:
        store = AzureStore(
            CONTAINER,
            account_name=ACCOUNT,
            account_key=KEY,
            endpoint=args.endpoint,
            client_options={"allow_http": True},
        )
        await obstore.head_async(store, keys[0])  # set-up done

        async def upload() -> None:
            await obstore.put_async(
                store, key, args.src, chunk_size=PART, max_concurrency=CONCURRENCY
            )

        async def download() -> None:
            size = (await obstore.head_async(store, key))["size"]
            gate = asyncio.Semaphore(CONCURRENCY)
            fd = os.open(restored, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:

                async def part(start: int) -> None:
                    async with gate:
                        end = min(start + PART, size)
                        data = await obstore.get_range_async(store, key, start=start, end=end)
                        os.pwrite(fd, memoryview(data), start)

                await asyncio.gather(*(part(start) for start in range(0, size, PART)))
            finally:
                os.close(fd)

        async def get(name: str) -> int:
            return len(await (await obstore.get_async(store, name)).bytes_async())

        async def gets() -> int:
            return sum(await asyncio.gather(*map(get, keys)))

        return {"upload": upload, "download": download, "get-small": gets}[workload]

    return _peer_case(workload, args, "obstore", body)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its raw figures."""
    workload, client = name.split(":")
    if client == "adlfs":
        return case_adlfs(workload, args)
    if client == "obstore":
        return case_obstore(workload, args)
    if workload == "get-small":
        if client.startswith("asyncstore-"):
            return case_asyncstore_small(client, args)
        return case_sdk_small(args)
    if client.startswith("asyncstore-"):
        return case_asyncstore_large(workload, client, args)
    return case_sdk_large(workload, args)


# -- the parent: Azurite, the data, every case in a subprocess, the report -----------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}?comp=list", timeout=1)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


class Azurite:
    """Azurite's Blob service in memory on a free port, for the length of a ``with`` block."""

    def __init__(self) -> None:
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="azurite-bench-"))
        port = _free_port()
        self.endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
        command = [
            str(AZURITE_BIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
            "--inMemoryPersistence",
        ]
        self.proc = subprocess.Popen(
            command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def __enter__(self) -> Azurite:
        deadline = time.monotonic() + 60
        while not _answers(self.endpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit("Azurite did not start (run `make test` to install it)")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


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


def prepare(endpoint: str, small_count: int, small_kib: int) -> None:
    """Create the container and the small objects (with asyncstore, 64 at a time)."""
    import anyio

    from asyncstore import Store
    from asyncstore.backends.azure import AzureBackend

    async def run() -> None:
        from azure.storage.blob.aio import BlobServiceClient

        async with BlobServiceClient.from_connection_string(connection_string(endpoint)) as service:
            await service.create_container(CONTAINER)
        backend = AzureBackend(CONTAINER, connection_string=connection_string(endpoint))
        body = os.urandom(small_kib * 1024)
        limiter = anyio.CapacityLimiter(64)
        async with Store(backend) as store:

            async def put(index: int) -> None:
                async with limiter:
                    await store.put(f"small/{index:05d}", body)

            async with anyio.create_task_group() as tg:
                for index in range(small_count):
                    tg.start_soon(put, index)

    anyio.run(run)


def failure_reason(stderr: str, status: int) -> str:
    """A one-line reason from a child's traceback: its exception line, plus any HTTP status."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    reason = (errors or lines or [f"exit status {status}"])[-1][:200]
    statuses = re.findall(r"status: (\d{3})", stderr)
    return reason + (f" (HTTP {statuses[-1]})" if statuses else "")


class CaseFailed(Exception):
    """A case's child process failed; the message is its one-line reason."""


def child(name: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add Azurite's CPU use over it."""
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
    limit = 3600 if name.split(":")[1].startswith("asyncstore-") else PEER_TIMEOUT
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise CaseFailed(f"no result after {limit} s (killed)") from None
    server_cpu = sum(server.cpu_times()[:2]) - before
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise CaseFailed(failure_reason(done.stderr, done.returncode))
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            # Over the child's whole life (start-up included): slightly understates the load.
            result["server_cpu_seconds"] = server_cpu
            result["server_cpu_per_wall_s"] = server_cpu / max(result["seconds"], 1e-9)
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
    packages = ("asyncstore", "azure-storage-blob", "azure-core", "aiohttp", "httpx", "anyio")
    azurite = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        package = json.loads((REPO / "node_modules" / "azurite" / "package.json").read_text())
        azurite = package["version"]
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in (*packages, "trio")},
        "azurite": azurite,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summarise(name: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The median run of one case (by throughput), with the derived figures."""
    workload, client = name.split(":")
    small = workload == "get-small"
    for run in runs:
        run["rate"] = (args.small_count if small else args.size) / run["seconds"]
    median = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    row: dict[str, Any] = {"case": name, "workload": workload, "client": client}
    if small:
        row["requests_per_s"] = median["rate"]
        row["cpu_s_per_1000_requests"] = median["cpu_seconds"] / args.small_count * 1000
        row["bytes"] = median.get("bytes")
        row["runs_requests_per_s"] = [r["rate"] for r in runs]
    else:
        row["mb_per_s"] = median["rate"] / 1e6
        row["cpu_s_per_gib"] = median["cpu_seconds"] / (args.size / GiB)
        row["bytes"] = args.size
        row["runs_mb_per_s"] = [r["rate"] / 1e6 for r in runs]
    for field in (
        "seconds",
        "cpu_seconds",
        "peak_rss_mib",
        "baseline_rss_mib",
        "loop_lag_max_ms",
        "loop_lag_p99_ms",
        "server_cpu_per_wall_s",
        "parts",
        "peak_buffered_mib",
        "sha256",
    ):
        if field in median:
            row[field] = median[field]
    if len(runs) > 1 and "loop_lag_max_ms" in median:
        row["loop_lag_max_ms"] = max(r.get("loop_lag_max_ms", 0.0) for r in runs)
    return row


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], skipped: dict[str, str], title: str) -> None:
    headers = (
        "case",
        "MB/s or req/s",
        "CPU s/GiB or /1k req",
        "peak RSS MiB",
        "loop lag max ms",
        "server CPU",
        "asyncstore/this",
    )
    lines = []
    reference: dict[str, dict[str, Any]] = {}
    for row in rows:  # the first asyncstore row of each workload is the reference of the ratios
        if row["case"].split(":")[1].startswith("asyncstore-"):
            reference.setdefault(row["workload"], row)
    for row in rows:
        small = row["workload"] == "get-small"
        key = "requests_per_s" if small else "mb_per_s"
        if row["workload"] in reference:
            row["asyncstore_ratio"] = reference[row["workload"]][key] / row[key]
        lines.append(
            (
                row["case"],
                _fmt(row["requests_per_s"] if small else row["mb_per_s"], ",.0f"),
                _fmt(row["cpu_s_per_1000_requests"] if small else row["cpu_s_per_gib"], ".2f"),
                _fmt(row["peak_rss_mib"], ".0f"),
                _fmt(row.get("loop_lag_max_ms"), ".1f"),
                _fmt(row.get("server_cpu_per_wall_s"), ".2f"),
                _fmt(row.get("asyncstore_ratio"), ".2f"),
            )
        )
    print(title)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    for line in lines:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    for peer, reason in skipped.items():
        print(f"{peer}: skipped ({reason})")
    print("asyncstore/this: the workload's first asyncstore row's rate / this row's (> 1: faster)")


def main() -> int:
    """Parse the arguments; run one case (``--case``) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large file size (1024)")
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

    if args.case:
        args.size = args.src.stat().st_size
        result = run_case(args.case, args)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0

    cases = [name for name in args.cases.split(",") if name]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    if not AZURITE_BIN.exists():
        raise SystemExit(f"Azurite is not installed at {AZURITE_BIN}: run `make test` first")
    print(f"preparing a {args.size_mib} MiB file in {args.work} ...", file=sys.stderr)
    args.src = make_source(args.work, args.size_mib)
    args.size = args.src.stat().st_size
    expected = file_sha256(args.src)
    skipped = {peer: "not installed" for peer in PEERS if importlib.util.find_spec(peer) is None}
    cases = [name for name in cases if name.split(":")[1] not in skipped]
    # A download reads the object an upload wrote: uploads go first.
    ordered = sorted(
        cases, key=lambda name: ("upload", "download", "get-small").index(name.split(":")[0])
    )
    if any(n.startswith("download:") for n in ordered) and not any(
        n.startswith("upload:") for n in ordered
    ):
        ordered.insert(0, "upload:asyncstore-asyncio-httpx")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ordered}
    with Azurite() as server:
        args.endpoint = server.endpoint
        print(
            f"Azurite at {server.endpoint}; creating {args.small_count} small objects ...",
            file=sys.stderr,
        )
        prepare(server.endpoint, args.small_count, args.small_kib)
        for attempt in range(args.repeat):
            for name in ordered:
                client = name.split(":")[1]
                if client in skipped:
                    continue
                print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                try:
                    runs[name].append(child(name, args, server.proc.pid))
                except CaseFailed as error:
                    if client not in PEERS:
                        raise SystemExit(f"case {name} failed: {error}") from None
                    skipped[client] = f"{name} failed: {error}"
    rows = [summarise(name, runs[name], args) for name in cases if runs.get(name)]
    wrong = [row["case"] for row in rows if "sha256" in row and row["sha256"] != expected]
    if wrong:
        print(f"error: these cases got other bytes than the file's: {wrong}", file=sys.stderr)
        return 1
    machine = machine_info()
    title = (
        f"asyncstore Azure benchmark against Azurite {machine['azurite']}: "
        f"{args.size_mib} MiB large, {args.small_count} x {args.small_kib} KiB small; "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    print_table(rows, skipped, title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "skipped": skipped, "cases": rows}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
