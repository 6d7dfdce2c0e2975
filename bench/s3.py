"""S3 benchmark: asyncstore against a local S3 server, beside the other Python clients.

Usage::

    python bench/s3.py [--size-mib 1024] [--small-count 2000] [--small-kib 16]
                       [--repeat 1] [--cases a,b,...] [--out bench/results/s3.json]

The server is moto's server mode on 127.0.0.1 (started by
``asyncstore.testing.emulators``, as in the tests), once for the whole run in its
own process. Two workloads:

* **large**: ``upload_file`` then ``download_file`` of one ``--size-mib`` MiB
  file (generated once under ``bench/.work``), parts / ranges of 16 MiB, 8 in
  flight, for every client;
* **small**: ``--small-count`` GETs of ``--small-kib`` KiB objects (written through
  asyncstore, so its sha256 verification runs), all started at once. For the cost of
  one request with the same 64-worker driver for every client, against a loopback
  responder as well as moto, see ``bench/small_requests.py``.

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
import functools
import importlib.util
import os
import subprocess
import sys
from typing import Any

from _harness import (
    PEER_VENV,
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
    machine_info,
    make_source,
    measure,
    measure_asyncio,
    moto_server,
    obstore_transfer,
    parse_cases,
    peer_python,
    print_workload_table,
    run_child,
    script_parser,
    summarise_case,
    timed,
    write_json,
    wrong_digests,
)

DEFAULT_OUT = RESULTS / "s3.json"
BUCKET = "asyncstore-bench"
PEER_TIMEOUT = 300  # seconds a peer's case may take before it is reported as hung
PART = 16 * MiB
CONCURRENCY = 8
POOL = 64
ASYNCSTORE = ("asyncstore-asyncio-aiohttp", "asyncstore-asyncio-httpx", "asyncstore-trio-httpx")
PEER_VENV_CLIENTS = ("aioboto3", "s3fs")
LARGE_CLIENTS = (*ASYNCSTORE, "boto3", "obstore", *PEER_VENV_CLIENTS)
SMALL_CLIENTS = (*ASYNCSTORE, "aiobotocore-raw", "boto3", "obstore", *PEER_VENV_CLIENTS)
CASES = (
    *(f"{direction}:{client}" for client in LARGE_CLIENTS for direction in ("upload", "download")),
    *(f"get-small:{client}" for client in SMALL_CLIENTS),
)


# -- the cases (run in a child process) ----------------------------------------------------------


def _asyncstore_parts(client: str) -> tuple[str, str]:
    _, library, http = client.split("-")
    return library, http


def case_asyncstore_large(direction: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    from asyncstore import Store
    from asyncstore.backends.s3 import S3Backend

    library, http = _asyncstore_parts(client)

    def make_store() -> Store:
        backend = S3Backend(BUCKET, endpoint=args.endpoint, http_client=http)
        return Store(backend, chunk_size=PART, max_concurrency=CONCURRENCY)

    restored = args.work / f"restored-{client}.bin"
    key = f"large/{client}.bin"
    return asyncstore_transfer_case(make_store, library, direction, key, args.src, restored)


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

    return measure(run, remove=restored)


def _small_keys(args: argparse.Namespace) -> list[str]:
    return [f"small/{index:05d}" for index in range(args.small_count)]


def case_asyncstore_small(client: str, args: argparse.Namespace) -> dict[str, Any]:
    from asyncstore import Store
    from asyncstore.backends.s3 import S3Backend

    library, http = _asyncstore_parts(client)

    def make_store() -> Store:
        return Store(
            S3Backend(BUCKET, endpoint=args.endpoint, http_client=http, max_connections=POOL)
        )

    return asyncstore_gets_case(make_store, library, _small_keys(args))


def _aiobotocore_config() -> Any:
    from aiobotocore.config import AioConfig

    return AioConfig(
        max_pool_connections=POOL,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def case_aiobotocore_small(args: argparse.Namespace) -> dict[str, Any]:
    from aiobotocore.session import get_session

    keys = _small_keys(args)

    async def body(lag: LoopLag) -> dict[str, Any]:
        async with get_session().create_client(
            "s3", endpoint_url=args.endpoint, config=_aiobotocore_config()
        ) as client:

            async def get(key: str) -> int:
                response = await client.get_object(Bucket=BUCKET, Key=key)
                async with response["Body"] as stream:
                    return len(await stream.read())

            await client.head_bucket(Bucket=BUCKET)  # set-up (credentials, models) done
            done = await timed(lambda: asyncio.gather(*(get(key) for key in keys)), lag)
        return {**done.figures(), "bytes": sum(done.result)}

    return measure_asyncio(body)


def case_boto3_small(args: argparse.Namespace) -> dict[str, Any]:
    client = _boto3_client()
    client.head_bucket(Bucket=BUCKET)  # set-up (credentials, models) done
    keys = _small_keys(args)

    def get(key: str) -> int:
        return len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def run() -> dict[str, Any]:
        with concurrent.futures.ThreadPoolExecutor(POOL) as pool:
            return {"bytes": sum(pool.map(get, keys))}

    return measure(run)


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


def case_obstore_large(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    key = "large/obstore.bin"
    restored = args.work / "restored-obstore.bin"

    async def body(lag: LoopLag) -> dict[str, Any]:
        store = _obstore_store(args)
        await obstore.list_with_delimiter_async(store, "large/")  # set-up done
        return await obstore_transfer(
            store, direction, key, args.src, restored, PART, CONCURRENCY, lag
        )

    return measure_asyncio(body, remove=restored)


def case_obstore_small(args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    keys = _small_keys(args)

    async def get(store: Any, key: str) -> int:
        result = await obstore.get_async(store, key)
        return len(await result.bytes_async())

    async def body(lag: LoopLag) -> dict[str, Any]:
        store = _obstore_store(args)
        await get(store, keys[0])  # set-up done
        done = await timed(lambda: asyncio.gather(*(get(store, key) for key in keys)), lag)
        return {**done.figures(), "bytes": sum(done.result)}

    return measure_asyncio(body)


def case_aioboto3(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import aioboto3
    from boto3.s3.transfer import TransferConfig

    key = "large/aioboto3.bin"
    restored = args.work / "restored-aioboto3.bin"
    config = TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY
    )
    keys = _small_keys(args)

    async def body(lag: LoopLag) -> dict[str, Any]:
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
                work = functools.partial(
                    client.upload_file, str(args.src), BUCKET, key, Config=config
                )
                return (await timed(work, lag)).figures()
            if workload == "download":
                work = functools.partial(
                    client.download_file, BUCKET, key, str(restored), Config=config
                )
                return (await timed(work, lag)).figures()
            done = await timed(lambda: asyncio.gather(*(get(k) for k in keys)), lag)
            return {**done.figures(), "bytes": sum(done.result)}

    return measure_asyncio(body, remove=restored)


def case_s3fs(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    import s3fs

    key = f"{BUCKET}/large/s3fs.bin"
    restored = args.work / "restored-s3fs.bin"
    keys = [f"{BUCKET}/{k}" for k in _small_keys(args)]

    async def body(lag: LoopLag) -> dict[str, Any]:
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
                work = functools.partial(fs._put_file, str(args.src), key, chunksize=PART)
                return (await timed(work, lag)).figures()
            if workload == "download":
                return (await timed(lambda: fs._get_file(key, str(restored)), lag)).figures()
            done = await timed(lambda: asyncio.gather(*(fs._cat_file(k) for k in keys)), lag)
            return {**done.figures(), "bytes": sum(len(b) for b in done.result)}
        finally:
            await session.close()

    return measure_asyncio(body, remove=restored)


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


# -- the parent: the server, the data, every case in a subprocess, the report --------------------


def child(name: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter; add the server's CPU use over it."""
    client = name.split(":")[1]
    return run_child(
        __file__,
        name,
        [
            *("--endpoint", args.endpoint, "--src", str(args.src), "--work", str(args.work)),
            *("--small-count", str(args.small_count)),
        ],
        python=str(peer_python()) if client in PEER_VENV_CLIENTS else sys.executable,
        timeout=3600 if client.startswith("asyncstore-") else PEER_TIMEOUT,
        server_pid=server_pid,
    )


def print_report(
    rows: list[dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    title = (
        f"asyncstore S3 benchmark against moto: large = {args.size / MiB:,.0f} MiB file, "
        f"parts/ranges of {PART // MiB} MiB x {CONCURRENCY}; small = {args.small_count} GETs "
        f"of {args.small_kib} KiB, pool of {POOL}"
    )
    notes = [
        *(f"skipped {peer}: {reason}" for peer, reason in skipped.items()),
        "server CPU/s: moto's CPU seconds per second of the case; ~1.0 = the server is the limit",
        "asyncstore/this: the workload's first asyncstore row's rate / this row's (> 1: faster)",
    ]
    print_workload_table(title, rows, notes)


def prepare_small(args: argparse.Namespace) -> None:
    """Write the small objects through asyncstore, so that their sha256 is recorded and every
    client reads the same objects (asyncstore's verification runs on each GET)."""
    import anyio

    from asyncstore import Store
    from asyncstore.backends.s3 import S3Backend

    body = os.urandom(args.small_kib * 1024)

    async def write() -> None:
        limiter = anyio.CapacityLimiter(32)
        async with (
            Store(S3Backend(BUCKET, endpoint=args.endpoint)) as store,
            anyio.create_task_group() as tg,
        ):

            async def put(key: str) -> None:
                async with limiter:
                    await store.put(key, body)

            for key in _small_keys(args):
                tg.start_soon(put, key)

    anyio.run(write)


def main() -> int:
    parser = script_parser(__doc__, CASES, DEFAULT_OUT)
    add_transfer_options(parser)
    args = parser.parse_args()
    args.work = args.work.resolve()

    if args.case:  # the parent's environment, fake AWS credentials included, is ours
        os.environ["BENCH_ENDPOINT"] = args.endpoint
        emit_result(run_case(args.case, args))
        return 0

    cases = parse_cases(parser, args.cases, CASES)
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
    args.src = make_source(args.work, args.size_mib)
    args.size = args.src.stat().st_size
    expected = file_sha256(args.src)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    load_at_start = list(os.getloadavg())
    failed: dict[str, str] = {}
    with moto_server() as (endpoint, server_pid):
        args.endpoint = endpoint
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
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
                        child(f"upload:{client}", args, server_pid)
                    runs[name].append(child(name, args, server_pid))
                except CaseFailed as error:
                    if client.startswith("asyncstore-"):
                        raise SystemExit(f"case {name} failed: {error}") from None
                    failed[client] = f"{name} failed: {error}"
                if workload == "download":  # free the server's memory
                    key = f"large/{client}.bin"
                    boto3.client("s3", endpoint_url=endpoint).delete_object(Bucket=BUCKET, Key=key)
    skipped.update(failed)
    size, count = args.size, args.small_count
    rows = [summarise_case(n, runs[n], size=size, small_count=count) for n in cases if runs[n]]
    add_ratios(rows)
    wrong = wrong_digests(rows, expected)
    if wrong:
        print(f"error: these cases got other bytes than the file's: {wrong}", file=sys.stderr)
        return 1
    packages = ("asyncstore", "aiobotocore", "botocore", "boto3", "aiohttp", "httpx", "anyio")
    machine = {
        **machine_info(
            *packages,
            "trio",
            "moto",
            server="moto server mode (ThreadedMotoServer, werkzeug), one child process",
            load_average_1_5_15_at_end=list(os.getloadavg()),
        ),
        "load_average_1_5_15_at_start": load_at_start,
    }
    print_report(rows, skipped, args)
    print(f"load average at start {load_at_start}, at end {machine['load_average_1_5_15_at_end']}")
    write_json(
        args.out,
        {
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
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
