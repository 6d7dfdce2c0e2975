"""Azure benchmark: asyncstore against Azurite, beside the Azure SDK's own transfers.

Usage::

    python bench/azure_blob.py [--size-mib 1024] [--small-count 2000] [--small-kib 16]
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
import importlib.util
import json
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

from _harness import (
    REPO,
    RESULTS,
    CaseFailed,
    LoopLag,
    MiB,
    add_ratios,
    add_transfer_options,
    asyncstore_gets_case,
    asyncstore_transfer_case,
    azurite,
    emit_result,
    file_sha256,
    fmt,
    machine_info,
    make_source,
    measure_asyncio,
    obstore_download,
    parse_cases,
    print_table,
    run_child,
    script_parser,
    summarise_case,
    timed,
    write_json,
    wrong_digests,
)

DEFAULT_OUT = RESULTS / "azure.json"
CONTAINER = "asyncstore-bench"
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
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


# -- the cases (run in a child process) ----------------------------------------------------------


def _asyncstore_store(client: str, args: argparse.Namespace) -> Callable[[], Any]:
    """The client's Store, made when called (in its event loop)."""
    from asyncstore import Store
    from asyncstore.backends.azure import AzureBackend

    http = client.split("-")[2]

    def make_store() -> Store:
        backend = AzureBackend(
            CONTAINER, connection_string=connection_string(args.endpoint), transport=http
        )
        return Store(backend, chunk_size=PART, max_concurrency=CONCURRENCY)

    return make_store


def case_asyncstore_large(direction: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    restored = args.work / f"restored-{client}.bin"
    make_store, library = _asyncstore_store(client, args), client.split("-")[1]
    return asyncstore_transfer_case(
        make_store, library, direction, "large/object.bin", args.src, restored
    )


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

    async def body(lag: LoopLag) -> dict[str, Any]:
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

            if direction == "upload":
                return (await timed(upload, lag)).figures()
            figures = (await timed(download, lag)).figures()
            # After the timing: the SDK does not hash.
            return {**figures, "sha256": file_sha256(restored)}

    return measure_asyncio(body, remove=restored)


def _small_keys(args: argparse.Namespace) -> list[str]:
    return [f"small/{index:05d}" for index in range(args.small_count)]


def case_asyncstore_small(client: str, args: argparse.Namespace) -> dict[str, Any]:
    make_store, library = _asyncstore_store(client, args), client.split("-")[1]
    return asyncstore_gets_case(make_store, library, _small_keys(args))


def case_sdk_small(args: argparse.Namespace) -> dict[str, Any]:
    keys = _small_keys(args)

    async def body(lag: LoopLag) -> dict[str, Any]:
        async with _sdk_service(args.endpoint) as service:
            container = service.get_container_client(CONTAINER)
            await container.get_blob_client(keys[0]).exists()  # set-up done

            async def get(key: str) -> int:
                downloader = await container.get_blob_client(key).download_blob()
                return len(await downloader.readall())

            done = await timed(lambda: asyncio.gather(*(get(key) for key in keys)), lag)
            return {**done.figures(), "bytes": sum(done.result)}

    return measure_asyncio(body)


# -- the peers: adlfs and obstore ----------------------------------------------------------------


def _peer_case(workload: str, args: argparse.Namespace, client: str, body: Any) -> dict[str, Any]:
    """Run ``body(restored, keys)`` (returns the coroutine function to time) under asyncio."""
    restored = args.work / f"restored-{client}.bin"

    async def main(lag: LoopLag) -> dict[str, Any]:
        operation = await body(restored, _small_keys(args))
        done = await timed(operation, lag)
        if workload == "download":
            return {**done.figures(), "sha256": file_sha256(restored)}
        if workload == "get-small":
            return {**done.figures(), "bytes": done.result}
        return done.figures()

    return measure_asyncio(main, remove=restored)


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
            await obstore_download(store, key, restored, PART, CONCURRENCY)

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


def child(name: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add Azurite's CPU use over it."""
    return run_child(
        __file__,
        name,
        [
            *("--endpoint", args.endpoint, "--src", str(args.src), "--work", str(args.work)),
            *("--small-count", str(args.small_count)),
        ],
        timeout=3600 if name.split(":")[1].startswith("asyncstore-") else PEER_TIMEOUT,
        server_pid=server_pid,
    )


def print_report(rows: list[dict[str, Any]], skipped: dict[str, str], title: str) -> None:
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
    for row in rows:
        small = row["workload"] == "get-small"
        lines.append(
            (
                row["case"],
                fmt(row["requests_per_s"] if small else row["mb_per_s"], ",.0f"),
                fmt(row["cpu_s_per_1000_requests"] if small else row["cpu_s_per_gib"], ".2f"),
                fmt(row["peak_rss_mib"], ".0f"),
                fmt(row.get("loop_lag_max_ms"), ".1f"),
                fmt(row.get("server_cpu_per_wall_s"), ".2f"),
                fmt(row.get("asyncstore_ratio"), ".2f"),
            )
        )
    notes = [
        *(f"skipped {peer}: {reason}" for peer, reason in skipped.items()),
        "asyncstore/this: the workload's first asyncstore row's rate / this row's (> 1: faster)",
    ]
    print_table(title, headers, lines, notes=notes)


def main() -> int:
    """Parse the arguments; run one case (``--case``) or the whole benchmark."""
    parser = script_parser(__doc__, CASES, DEFAULT_OUT)
    add_transfer_options(parser)
    args = parser.parse_args()
    args.work = args.work.resolve()

    if args.case:
        args.size = args.src.stat().st_size
        emit_result(run_case(args.case, args))
        return 0

    cases = parse_cases(parser, args.cases, CASES)
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
    with azurite() as (endpoint, pid):
        args.endpoint = endpoint
        print(
            f"Azurite at {endpoint}; creating {args.small_count} small objects ...",
            file=sys.stderr,
        )
        prepare(endpoint, args.small_count, args.small_kib)
        for attempt in range(args.repeat):
            for name in ordered:
                client = name.split(":")[1]
                if client in skipped:
                    continue
                print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                try:
                    runs[name].append(child(name, args, pid))
                except CaseFailed as error:
                    if client not in PEERS:
                        raise SystemExit(f"case {name} failed: {error}") from None
                    skipped[client] = f"{name} failed: {error}"
    size, count = args.size, args.small_count
    rows = [summarise_case(n, runs[n], size=size, small_count=count) for n in cases if runs.get(n)]
    add_ratios(rows)
    wrong = wrong_digests(rows, expected)
    if wrong:
        print(f"error: these cases got other bytes than the file's: {wrong}", file=sys.stderr)
        return 1
    azurite_version = None
    with contextlib.suppress(OSError, ValueError, KeyError):
        package = json.loads((REPO / "node_modules" / "azurite" / "package.json").read_text())
        azurite_version = package["version"]
    machine = machine_info(
        "asyncstore",
        "azure-storage-blob",
        "azure-core",
        "aiohttp",
        "httpx",
        "anyio",
        "trio",
        azurite=azurite_version,
    )
    title = (
        f"asyncstore Azure benchmark against Azurite {machine['azurite']}: "
        f"{args.size_mib} MiB large, {args.small_count} x {args.small_kib} KiB small; "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    print_report(rows, skipped, title)
    write_json(args.out, {"machine": machine, "skipped": skipped, "cases": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
