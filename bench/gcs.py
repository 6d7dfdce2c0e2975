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
  upload mechanism of the GCS backend (``auto``, the default, and ``resumable``:
  the file in one streamed request to a session; ``composite``: parts in
  parallel, then composed) under asyncio and under trio; and
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
import functools
import hashlib
import importlib.util
import os
import sys
import urllib.request
from typing import Any

from _harness import (
    RESULTS,
    CaseFailed,
    LoopLag,
    MiB,
    add_ratios,
    add_transfer_options,
    asyncstore_gets_case,
    asyncstore_transfer_case,
    emit_result,
    file_sha256,
    gcs_emulator,
    machine_info,
    make_source,
    measure_asyncio,
    obstore_transfer,
    parse_cases,
    print_workload_table,
    run_child,
    script_parser,
    summarise_case,
    timed,
    write_json,
    wrong_digests,
)

DEFAULT_OUT = RESULTS / "gcs.json"
BUCKET = "asyncstore-bench"
PEER_TIMEOUT = 180  # seconds a peer case may take before it is reported as hung
PART = 16 * MiB
# The emulator serves one request at a time and listens with a backlog of 5: with more
# connections than that, SYNs are dropped and retried a second later, which measures
# TCP's back-off rather than the clients. 4 parts / ranges, 4 connections, for everyone.
CONCURRENCY = 4
POOL = 4
ASYNCSTORE = tuple(
    f"asyncstore-{loop}-{method}"
    for method in ("auto", "composite", "resumable")
    for loop in ("asyncio", "trio")
)
LARGE_CLIENTS = (*ASYNCSTORE, "gcloud-aio-storage", "gcsfs", "obstore")
SMALL_CLIENTS = ("asyncstore-asyncio", "asyncstore-trio", "gcloud-aio-storage", "gcsfs", "obstore")
PEERS = ("gcsfs", "obstore")
CASES = (
    *(f"{direction}:{client}" for client in LARGE_CLIENTS for direction in ("upload", "download")),
    *(f"get-small:{client}" for client in SMALL_CLIENTS),
)


# -- the cases (run in a child process) ----------------------------------------------------------


def _large_key(client: str) -> str:
    return f"large/{client}.bin"


def case_asyncstore_large(direction: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    from asyncstore import Store
    from asyncstore.backends.gcs import GCSBackend

    _, library, method = client.split("-")

    def make_store() -> Store:
        backend = GCSBackend(BUCKET, upload=method, max_connections=POOL)  # type: ignore[arg-type]
        return Store(backend, chunk_size=PART, max_concurrency=CONCURRENCY)

    restored = args.work / f"restored-{client}.bin"
    key = _large_key(client)
    return asyncstore_transfer_case(make_store, library, direction, key, args.src, restored)


def case_gcloud_large(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    import aiofiles
    import aiohttp
    from gcloud.aio.storage import Storage

    key = _large_key("gcloud-aio-storage")
    restored = args.work / "restored-gcloud-aio-storage.bin"

    async def body(lag: LoopLag) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=POOL)
        async with aiohttp.ClientSession(connector=connector) as session:
            storage = Storage(session=session, api_root=args.endpoint)
            await storage.list_objects(BUCKET, params={"prefix": "none/"})  # set-up done

            async def upload() -> None:
                with open(args.src, "rb") as file:  # streamed by aiohttp; upload() needs a file
                    await storage.upload(BUCKET, key, file, timeout=3600)

            async def download() -> str:
                digest = hashlib.sha256()
                stream = await storage.download_stream(BUCKET, key, timeout=3600)
                async with aiofiles.open(restored, "wb") as out:
                    while chunk := await stream.read(PART):
                        await out.write(chunk)
                        digest.update(chunk)
                return "sha256:" + digest.hexdigest()

            if direction == "upload":
                return (await timed(upload, lag)).figures()
            done = await timed(download, lag)
            return {**done.figures(), "sha256": done.result}

    return measure_asyncio(body, remove=restored)


def _small_keys(args: argparse.Namespace) -> list[str]:
    keys = [f"small/{index:05d}" for index in range(args.small_keys)]
    return [keys[index % len(keys)] for index in range(args.small_count)]


def case_asyncstore_small(client: str, args: argparse.Namespace) -> dict[str, Any]:
    from asyncstore import Store
    from asyncstore.backends.gcs import GCSBackend

    def make_store() -> Store:
        return Store(GCSBackend(BUCKET, max_connections=POOL))

    return asyncstore_gets_case(make_store, client.split("-")[1], _small_keys(args))


def case_gcloud_small(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from gcloud.aio.storage import Storage

    keys = _small_keys(args)

    async def body(lag: LoopLag) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=POOL)
        async with aiohttp.ClientSession(connector=connector) as session:
            storage = Storage(session=session, api_root=args.endpoint)
            await storage.download(BUCKET, keys[0])  # set-up done

            async def get(key: str) -> int:
                return len(await storage.download(BUCKET, key, timeout=600))

            done = await timed(lambda: asyncio.gather(*(get(key) for key in keys)), lag)
            return {**done.figures(), "bytes": sum(done.result)}

    return measure_asyncio(body)


# -- the peers: gcsfs and obstore ----------------------------------------------------------------


def case_gcsfs(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    # gcsfs 2025.x+ asks a gRPC endpoint for the bucket type first (60 s timeout
    # against a loopback server): the plain JSON-API filesystem, as against GCS.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    path = f"{BUCKET}/{_large_key('gcsfs')}"
    restored = args.work / "restored-gcsfs.bin"
    keys = [f"{BUCKET}/{key}" for key in _small_keys(args)]

    async def body(lag: LoopLag) -> dict[str, Any]:
        fs = gcsfs.GCSFileSystem(
            token="anon", endpoint_url=args.endpoint, asynchronous=True, skip_instance_cache=True
        )
        session = await fs._set_session()
        try:
            await fs._ls(BUCKET)  # set-up done
            if workload == "upload":
                work = functools.partial(fs._put_file, str(args.src), path, chunksize=PART)
                return (await timed(work, lag)).figures()
            if workload == "download":
                figures = (await timed(lambda: fs._get_file(path, str(restored)), lag)).figures()
                return {**figures, "sha256": file_sha256(restored)}
            done = await timed(lambda: asyncio.gather(*(fs._cat_file(k) for k in keys)), lag)
            return {**done.figures(), "bytes": sum(len(b) for b in done.result)}
        finally:
            await session.close()

    return measure_asyncio(body, remove=restored)


def case_obstore(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore
    from obstore.store import GCSStore

    key = _large_key("obstore")
    restored = args.work / "restored-obstore.bin"
    keys = _small_keys(args)

    async def get(store: Any, name: str) -> int:
        return len(await (await obstore.get_async(store, name)).bytes_async())

    async def body(lag: LoopLag) -> dict[str, Any]:
        store = GCSStore(
            BUCKET,
            base_url=args.endpoint,
            skip_signature=True,
            client_options={"allow_http": True, "pool_max_idle_per_host": str(POOL)},
        )
        await obstore.list_with_delimiter_async(store, "none/")  # set-up done
        if workload in ("upload", "download"):
            return await obstore_transfer(
                store, workload, key, args.src, restored, PART, CONCURRENCY, lag
            )
        gate = asyncio.Semaphore(POOL)  # reqwest's pool has no cap; the emulator needs one

        async def capped(name: str) -> int:
            async with gate:
                return await get(store, name)

        done = await timed(lambda: asyncio.gather(*(capped(k) for k in keys)), lag)
        return {**done.figures(), "bytes": sum(done.result)}

    return measure_asyncio(body, remove=restored)


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


# -- the parent: the emulator, the data, every case in a subprocess, the report ------------------


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


def child(name: str, args: argparse.Namespace, endpoint: str, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add the emulator's CPU use over it."""
    return run_child(
        __file__,
        name,
        [
            *("--endpoint", endpoint, "--src", str(args.src), "--work", str(args.work)),
            *("--small-count", str(args.small_count), "--small-keys", str(args.small_keys)),
        ],
        timeout=3600 if name.split(":")[1].startswith("asyncstore-") else PEER_TIMEOUT,
        env={**os.environ, "STORAGE_EMULATOR_HOST": endpoint},
        server_pid=server_pid,
    )


def print_report(
    rows: list[dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    title = (
        f"asyncstore GCS benchmark against gcp-storage-emulator: large = "
        f"{args.size / MiB:,.0f} MiB file, parts/ranges of {PART // MiB} MiB x {CONCURRENCY}; "
        f"small = {args.small_count} GETs of {args.small_kib} KiB over {args.small_keys} keys; "
        f"{POOL} connections"
    )
    notes = [
        *(f"skipped {peer}: {reason}" for peer, reason in skipped.items()),
        "asyncstore/this: the workload's first asyncstore row's rate / this row's (> 1: faster)",
        "server CPU/s: the emulator's CPU seconds per second of the case; "
        "~1.0 = the emulator (one thread) is the limit",
    ]
    print_workload_table(title, rows, notes, mb_spec=",.1f")


def main() -> int:
    parser = script_parser(__doc__, CASES, DEFAULT_OUT)
    add_transfer_options(parser)
    parser.add_argument("--small-keys", type=int, default=100, help="distinct small keys (100)")
    args = parser.parse_args()
    args.work = args.work.resolve()

    if args.case:
        emit_result(run_case(args.case, args))
        return 0

    cases = parse_cases(parser, args.cases, CASES)
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
            with gcs_emulator(BUCKET) as (endpoint, pid):
                for name in pair:
                    if name not in cases and name.startswith("download:"):
                        continue
                    print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                    result = attempt_case(name, endpoint, pid)
                    if name in cases and result is not None:
                        runs[name].append(result)
        small = [name for name in cases if name.startswith("get-small:")]
        if small:
            with gcs_emulator(BUCKET) as (endpoint, pid):
                print(f"preparing {args.small_keys} small objects ...", file=sys.stderr)
                prepare_small(endpoint, args)
                for name in small:
                    print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                    result = attempt_case(name, endpoint, pid)
                    if result is not None:
                        runs[name].append(result)
    skipped.update(failed)
    size, count = args.size, args.small_count
    rows = [summarise_case(n, runs[n], size=size, small_count=count) for n in cases if runs[n]]
    add_ratios(rows)
    wrong = wrong_digests(rows, expected)
    if wrong:
        print(f"error: these cases got other bytes than the file's: {wrong}", file=sys.stderr)
        return 1
    machine = machine_info(
        "asyncstore",
        "anyio",
        "trio",
        "httpx",
        "aiohttp",
        "gcloud-aio-storage",
        "gcp-storage-emulator",
    )
    print_report(rows, skipped, args)
    write_json(
        args.out,
        {
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
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
