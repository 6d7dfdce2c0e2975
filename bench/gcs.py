"""GCS benchmark: asyncstore against gcp-storage-emulator, beside gcloud-aio-storage used directly.

Usage::

    python bench/gcs.py [--size-mib 1024] [--small-count 2000] [--small-keys 100]
                        [--small-kib 16] [--repeat 1] [--cases a,b,...]
                        [--out bench/results/gcs.json]

The server is ``gcp-storage-emulator`` (in memory) on 127.0.0.1, started by
this script: a fresh one for each large upload + download pair (it keeps every
object, and deleted ones, in memory), and one for the small GETs. Two workloads:

* **large**: ``upload_file`` then ``download_file`` of one ``--size-mib`` MiB
  file (generated once under ``bench/.work``), parts / ranges of 16 MiB, 4 in
  flight over at most 4 connections (see ``POOL``), for asyncstore with each
  multipart mechanism of the GCS backend (``composite``, ``resumable``) under
  asyncio and under trio; and
  gcloud-aio-storage's own ``upload()`` (an open file: one resumable session,
  one streamed PUT) and ``download_stream()`` (written to a file);
* **small**: ``--small-count`` GETs of ``--small-kib`` KiB objects (over
  ``--small-keys`` keys: the emulator rewrites all its metadata on every write,
  so thousands of distinct objects take minutes to create), all started at
  once; asyncstore's ``get`` (sha256 verified, a metadata request then a
  pinned media request) and gcloud-aio-storage's ``download()``.

Each case runs in its own child process, so CPU time and peak RSS are the
client's alone. Figures: MB/s (10**6 bytes per second) or requests/s; client
CPU seconds per GiB (or per 1,000 requests); peak RSS; the event loop's worst
lag (a heartbeat task sleeps 5 ms in a loop and records how late it wakes);
and the emulator's CPU seconds per second of the case: near 1.0 means the
emulator, a single-threaded Python HTTP/1.0 server, is the bottleneck.

Peers (each run like the others, 16 MiB parts / ranges, 4 at a time):

* ``gcsfs`` (``token="anon"``, ``endpoint_url`` the emulator): ``_put_file``
  with ``chunksize`` 16 MiB (one resumable session, chunks sent one after
  another), ``_get_file`` (one streamed GET), ``_cat_file`` for small;
* ``obstore`` (``GCSStore`` with ``base_url`` the emulator, ``skip_signature``,
  ``allow_http``): ``put_async`` with ``chunk_size`` 16 MiB and
  ``max_concurrency`` 4; ``get_range_async`` of 16 MiB ranges, 4 in flight,
  written with ``os.pwrite``; ``get_async`` + ``bytes_async`` for small.

A peer that fails against the emulator gets the reason in the table instead of
a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import importlib.util
import json
import os
import pathlib
import platform
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO / "bench" / ".work"
DEFAULT_OUT = REPO / "bench" / "results" / "gcs.json"
BUCKET = "asyncstore-bench"
HEARTBEAT = 0.005
RESULT_MARK = "BENCH-RESULT "
PEER_TIMEOUT = 180  # seconds a peer case may take before it is reported as hung
PART = 16 * MiB
# The emulator serves one request at a time and listens with a backlog of 5: with more
# connections than that, SYNs are dropped and retried a second later, which measures
# TCP's back-off rather than the clients. 4 parts / ranges, 4 connections, for everyone.
CONCURRENCY = 4
POOL = 4
ASYNCSTORE = tuple(
    f"asyncstore-{loop}-{method}"
    for method in ("composite", "resumable")
    for loop in ("asyncio", "trio")
)
LARGE_CLIENTS = (*ASYNCSTORE, "gcloud-aio-storage", "gcsfs", "obstore")
SMALL_CLIENTS = ("asyncstore-asyncio", "asyncstore-trio", "gcloud-aio-storage", "gcsfs", "obstore")
PEERS = ("gcsfs", "obstore")
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


def _large_key(client: str) -> str:
    return f"large/{client}.bin"


def case_asyncstore_large(direction: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from asyncstore import Store, TransferInfo
    from asyncstore.backends.gcs import GCSBackend

    _, library, method = client.split("-")
    key = _large_key(client)
    restored = args.work / f"restored-{client}.bin"
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def transfer() -> None:
        backend = GCSBackend(BUCKET, upload=method, max_connections=POOL)  # type: ignore[arg-type]
        async with Store(backend, chunk_size=PART, max_concurrency=CONCURRENCY) as store:
            await store.exists(key)  # the client's one-time set-up is not part of the transfer
            async with anyio.create_task_group() as tg:
                tg.start_soon(lag.run)
                await anyio.sleep(0.05)
                cpu = _cpu_seconds()
                info: TransferInfo
                if direction == "upload":
                    info = await store.upload_file(args.src, key)
                else:
                    info = await store.download_file(key, restored)
                holder["cpu"] = _cpu_seconds() - cpu
                holder["info"] = info
                tg.cancel_scope.cancel()

    def run() -> dict[str, Any]:
        anyio.run(transfer, backend=library)
        info = holder["info"]
        return {
            "seconds": info.duration,
            "cpu_seconds": holder["cpu"],
            "sha256": info.sha256,
            "parts": info.part_count,
            "peak_buffered_mib": info.peak_buffered / MiB,
        }

    try:
        return {**_measure(run), **lag.figures()}
    finally:
        restored.unlink(missing_ok=True)


def case_gcloud_large(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    import aiofiles
    import aiohttp
    from gcloud.aio.storage import Storage

    key = _large_key("gcloud-aio-storage")
    restored = args.work / "restored-gcloud-aio-storage.bin"
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def transfer() -> None:
        connector = aiohttp.TCPConnector(limit=POOL)
        async with aiohttp.ClientSession(connector=connector) as session:
            storage = Storage(session=session, api_root=args.endpoint)
            await storage.list_objects(BUCKET, params={"prefix": "none/"})  # set-up done
            heartbeat = asyncio.create_task(lag.run())
            await asyncio.sleep(0.05)
            started, cpu = time.perf_counter(), _cpu_seconds()
            if direction == "upload":
                with open(args.src, "rb") as file:  # streamed by aiohttp; upload() needs a file
                    await storage.upload(BUCKET, key, file, timeout=3600)
            else:
                digest = hashlib.sha256()
                stream = await storage.download_stream(BUCKET, key, timeout=3600)
                async with aiofiles.open(restored, "wb") as out:
                    while chunk := await stream.read(PART):
                        await out.write(chunk)
                        digest.update(chunk)
                holder["sha256"] = "sha256:" + digest.hexdigest()
            holder["seconds"] = time.perf_counter() - started
            holder["cpu_seconds"] = _cpu_seconds() - cpu
            heartbeat.cancel()

    def run() -> dict[str, Any]:
        asyncio.run(transfer())
        return dict(holder)

    try:
        return {**_measure(run), **lag.figures()}
    finally:
        restored.unlink(missing_ok=True)


def _small_keys(args: argparse.Namespace) -> list[str]:
    keys = [f"small/{index:05d}" for index in range(args.small_keys)]
    return [keys[index % len(keys)] for index in range(args.small_count)]


def case_asyncstore_small(client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from asyncstore import Store
    from asyncstore.backends.gcs import GCSBackend

    library = client.split("-")[1]
    keys = _small_keys(args)
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def gets() -> None:
        async with Store(GCSBackend(BUCKET, max_connections=POOL)) as store:
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


def case_gcloud_small(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from gcloud.aio.storage import Storage

    keys = _small_keys(args)
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def gets() -> None:
        connector = aiohttp.TCPConnector(limit=POOL)
        async with aiohttp.ClientSession(connector=connector) as session:
            storage = Storage(session=session, api_root=args.endpoint)
            await storage.download(BUCKET, keys[0])  # set-up done

            async def get(key: str) -> int:
                return len(await storage.download(BUCKET, key, timeout=600))

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


# -- the peers: gcsfs and obstore ----------------------------------------------------------------


def _asyncio_case(body: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """Run ``body(holder)`` (a coroutine function) under asyncio with a heartbeat."""
    lag = LoopLag()
    holder: dict[str, Any] = {}

    async def main() -> None:
        heartbeat = asyncio.create_task(lag.run())
        try:
            await body(holder)
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


def case_gcsfs(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import gcsfs

    path = f"{BUCKET}/{_large_key('gcsfs')}"
    restored = args.work / "restored-gcsfs.bin"
    keys = [f"{BUCKET}/{key}" for key in _small_keys(args)]

    async def body(holder: dict[str, Any]) -> None:
        fs = gcsfs.GCSFileSystem(
            token="anon", endpoint_url=args.endpoint, asynchronous=True, skip_instance_cache=True
        )
        session = await fs._set_session()
        try:
            await fs._ls(BUCKET)  # set-up done
            if workload == "upload":
                await _timed(holder, fs._put_file(str(args.src), path, chunksize=PART))
            elif workload == "download":
                await _timed(holder, fs._get_file(path, str(restored)))
                holder["sha256"] = file_sha256(restored)
            else:
                sizes = await _timed(holder, asyncio.gather(*(fs._cat_file(k) for k in keys)))
                holder["bytes"] = sum(len(b) for b in sizes)
        finally:
            await session.close()

    try:
        return _asyncio_case(body)
    finally:
        restored.unlink(missing_ok=True)


def case_obstore(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore
    from obstore.store import GCSStore

    key = _large_key("obstore")
    restored = args.work / "restored-obstore.bin"
    keys = _small_keys(args)

    async def download(store: Any) -> None:
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

    async def get(store: Any, name: str) -> int:
        return len(await (await obstore.get_async(store, name)).bytes_async())

    async def body(holder: dict[str, Any]) -> None:
        store = GCSStore(
            BUCKET,
            base_url=args.endpoint,
            skip_signature=True,
            client_options={"allow_http": True, "pool_max_idle_per_host": str(POOL)},
        )
        await obstore.list_with_delimiter_async(store, "none/")  # set-up done
        if workload == "upload":
            work = obstore.put_async(
                store, key, args.src, chunk_size=PART, max_concurrency=CONCURRENCY
            )
            await _timed(holder, work)
        elif workload == "download":
            await _timed(holder, download(store))
            holder["sha256"] = file_sha256(restored)
        else:
            gate = asyncio.Semaphore(POOL)  # reqwest's pool has no cap; the emulator needs one

            async def capped(name: str) -> int:
                async with gate:
                    return await get(store, name)

            sizes = await _timed(holder, asyncio.gather(*(capped(k) for k in keys)))
            holder["bytes"] = sum(sizes)

    try:
        return _asyncio_case(body)
    finally:
        restored.unlink(missing_ok=True)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its raw figures."""
    workload, client = name.split(":")
    if client == "gcsfs":
        return case_gcsfs(workload, args)
    if client == "obstore":
        return case_obstore(workload, args)
    if workload == "get-small":
        if client.startswith("asyncstore-"):
            return case_asyncstore_small(client, args)
        return case_gcloud_small(args)
    if client.startswith("asyncstore-"):
        return case_asyncstore_large(workload, client, args)
    return case_gcloud_large(workload, args)


# -- the emulator --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def emulator() -> Iterator[tuple[str, int]]:
    """A fresh gcp-storage-emulator (in memory) with the bench bucket: (endpoint, pid)."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(endpoint + "/", timeout=1) as response:
                    if response.read() == b"OK":
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("gcp-storage-emulator did not start") from None
                time.sleep(0.1)
        body = json.dumps(
            {"name": BUCKET, "softDeletePolicy": {"retentionDurationSeconds": "0"}}
        ).encode()
        request = urllib.request.Request(
            f"{endpoint}/storage/v1/b?project=bench",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30):
            pass
        yield endpoint, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def prepare_small(endpoint: str, args: argparse.Namespace) -> None:
    body = os.urandom(args.small_kib * 1024)
    for key in sorted(set(_small_keys(args))):
        url = (
            f"{endpoint}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name="
            + urllib.request.quote(key, safe="")
        )
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(request, timeout=60):
            pass


# -- the parent: the data, every case in a subprocess, the report --------------------------------


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
            block[:16] = index.to_bytes(8, "little") * 2  # no two blocks alike
            file.write(block)
        file.flush()
        os.fsync(file.fileno())
    partial.rename(path)
    return path


def file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(8 * MiB):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def failure_reason(stderr: str, status: int) -> str:
    """A one-line reason from a child's traceback: its exception line, plus any HTTP status."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    reason = (errors or lines or [f"exit status {status}"])[-1][:200]
    statuses = re.findall(r"status: (\d{3})", stderr)
    return reason + (f" (HTTP {statuses[-1]})" if statuses else "")


class CaseFailed(Exception):
    """A case's child process failed; the message is the last line of its stderr."""


def child(name: str, args: argparse.Namespace, endpoint: str, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add the emulator's CPU use over it."""
    import psutil

    command = [
        sys.executable,
        __file__,
        "--case",
        name,
        "--endpoint",
        endpoint,
        "--src",
        str(args.src),
        "--work",
        str(args.work),
        "--small-count",
        str(args.small_count),
        "--small-keys",
        str(args.small_keys),
    ]
    server = psutil.Process(server_pid)
    before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    env = {**os.environ, "STORAGE_EMULATOR_HOST": endpoint}
    limit = 3600 if name.split(":")[1].startswith("asyncstore-") else PEER_TIMEOUT
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=limit, check=False, env=env
        )
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
            # so this slightly understates the emulator's load during the transfer itself.
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
    """What the figures depend on: CPUs, Python, library versions."""
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{
            package: _version(package)
            for package in (
                "asyncstore",
                "anyio",
                "trio",
                "httpx",
                "aiohttp",
                "gcloud-aio-storage",
                "gcp-storage-emulator",
            )
        },
    }


def summarise(name: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The median run (by rate) of one case, with derived figures."""
    workload, client = name.split(":")
    small = workload == "get-small"
    for run in runs:
        if small:
            run["requests_per_s"] = args.small_count / run["seconds"]
        else:
            run["mb_per_s"] = args.size / run["seconds"] / 1e6
    rate = "requests_per_s" if small else "mb_per_s"
    median = sorted(runs, key=lambda r: r[rate])[len(runs) // 2]
    row: dict[str, Any] = {"case": name, "workload": workload, "client": client}
    row[rate] = median[rate]
    row[f"runs_{rate}"] = [r[rate] for r in runs]
    if small:
        row["cpu_s_per_1000_requests"] = median["cpu_seconds"] / args.small_count * 1000
    else:
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
        "parts",
        "peak_buffered_mib",
        "sha256",
        "bytes",
    ):
        if field in median:
            row[field] = median[field]
    return row


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
    reference: dict[str, dict[str, Any]] = {}
    for row in rows:  # the first asyncstore row of each workload is the reference of the ratios
        if row["client"].startswith("asyncstore-"):
            reference.setdefault(row["workload"], row)
    for row in rows:
        key = "requests_per_s" if row["workload"] == "get-small" else "mb_per_s"
        base = reference.get(row["workload"])
        if base is not None:
            row["asyncstore_ratio"] = base[key] / row[key]
        small = row["workload"] == "get-small"
        rate = f"{row['requests_per_s']:,.0f} req/s" if small else f"{row['mb_per_s']:,.1f} MB/s"
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
        f"asyncstore GCS benchmark against gcp-storage-emulator: large = "
        f"{args.size / MiB:,.0f} MiB file, parts/ranges of {PART // MiB} MiB x {CONCURRENCY}; "
        f"small = {args.small_count} GETs of {args.small_kib} KiB over {args.small_keys} keys; "
        f"{POOL} connections"
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
    print("asyncstore/this: the workload's first asyncstore row's rate / this row's (> 1: faster)")
    print(
        "server CPU/s: the emulator's CPU seconds per second of the case; "
        "~1.0 = the emulator (one thread) is the limit"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="large object size (1024)")
    parser.add_argument("--small-count", type=int, default=2000, help="small GETs (2000)")
    parser.add_argument("--small-keys", type=int, default=100, help="distinct small keys (100)")
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
        print(RESULT_MARK + json.dumps(run_case(args.case, args)), flush=True)
        return 0

    cases = [name for name in args.cases.split(",") if name]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    skipped = {peer: "not installed" for peer in PEERS if importlib.util.find_spec(peer) is None}
    cases = [name for name in cases if name.split(":")[1] not in skipped]
    failed: dict[str, str] = {}

    def attempt_case(name: str, endpoint: str, pid: int) -> dict[str, Any] | None:
        client = name.split(":")[1]
        if client in failed:
            return None
        try:
            return child(name, args, endpoint, pid)
        except CaseFailed as error:
            if client not in PEERS:
                raise SystemExit(f"case {name} failed: {error}") from None
            failed[client] = f"{name} failed: {error}"
            return None

    print(f"preparing a {args.size_mib} MiB file in {args.work} ...", file=sys.stderr)
    args.src = make_source(args.work, args.size_mib)
    args.size = args.src.stat().st_size
    expected = file_sha256(args.src)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    clients = [c for c in LARGE_CLIENTS if any(n.endswith(":" + c) for n in cases)]
    for attempt in range(args.repeat):
        for client in clients:  # a fresh emulator per upload + download pair
            pair = [f"{direction}:{client}" for direction in ("upload", "download")]
            if not any(name in cases for name in pair):
                continue
            with emulator() as (endpoint, pid):
                for name in pair:
                    if name not in cases and name.startswith("download:"):
                        continue
                    print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                    result = attempt_case(name, endpoint, pid)
                    if name in cases and result is not None:
                        runs[name].append(result)
        small = [name for name in cases if name.startswith("get-small:")]
        if small:
            with emulator() as (endpoint, pid):
                print(f"preparing {args.small_keys} small objects ...", file=sys.stderr)
                prepare_small(endpoint, args)
                for name in small:
                    print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                    result = attempt_case(name, endpoint, pid)
                    if result is not None:
                        runs[name].append(result)
    skipped.update(failed)
    rows = [summarise(name, runs[name], args) for name in cases if runs[name]]
    wrong = [row for row in rows if "sha256" in row and row["sha256"] != expected]
    if wrong:
        print(f"error: digests differ from {expected}: {wrong}", file=sys.stderr)
        return 1
    machine = machine_info()
    print_table(rows, skipped, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine,
        "settings": {
            "large_bytes": args.size,
            "part_size": PART,
            "concurrency": CONCURRENCY,
            "small_count": args.small_count,
            "small_keys": args.small_keys,
            "small_bytes": args.small_kib * 1024,
            "pool": POOL,
            "server": "gcp-storage-emulator, in memory, one thread, HTTP/1.0",
        },
        "skipped": skipped,
        "results": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
