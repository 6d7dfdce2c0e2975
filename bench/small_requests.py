"""The cost of one request: small GETs, HEADs and PUTs, asyncstore beside the other clients.

Usage::

    python bench/small_requests.py [--services s3,gcs,azure] [--ops get,head,put]
                             [--count 2000] [--workers 64] [--kib 16] [--repeat 5]
                             [--server responder|emulator] [--clients a,b,...]
                             [--out bench/results/requests.json]

Every client gets the same driver: ``--count`` operations on ``--kib`` KiB objects by
``--workers`` concurrent workers (so the lag is measured under the same load for all);
asyncstore also runs a ``gather`` case: ``--count`` GETs started at once, the way the loop
itself gathers (``asyncio.gather`` under asyncio, a nursery under trio), which its
store-wide bound on requests in flight must keep from swamping the event loop. The
``gather`` case is the first burst after start-up: the collector's first full pass over
the SDKs' objects (a one-time cost of a new process) tends to fall inside it.
``gather-steady`` is the same after one ``gc.collect()``, as in a service that has run for
a while; ``gather-frozen`` after ``gc.collect(); gc.freeze()`` (what a service can do once
it has started, so that no full pass ever walks the SDKs' long-lived objects again).
obstore runs the same ``gather`` on S3 (``asyncio.gather`` of its futures), side by side.

The server is a loopback responder (``bench/responders.py``) by default: it answers in tens
of microseconds, so what is measured is the client's own cost. ``--server emulator`` runs the
same cases against moto, the GCS emulator and Azurite, for the record. The objects are
written through asyncstore first, so that every client reads the same objects and
asyncstore's sha256 verification runs on every GET.

Each case runs in a fresh child process (its CPU and peak RSS are its own); the cases are
interleaved, ``--repeat`` times, and reported as medians with their range. Figures: req/s,
client CPU seconds per 1,000 requests, requests the server saw per operation and connections
it saw opened (responder only), max and p99 loop lag, peak RSS. A peer that crashes keeps
the figures it printed before the crash (the crash is reported); one that cannot run is
listed with the reason.

Clients (``service:op:client``):

* s3: ``asyncstore-asyncio`` and ``asyncstore-trio`` (the lean path), ``asyncstore-sdk``
  (``lean=false``: aiobotocore + aiohttp), ``aiobotocore``, ``obstore``; ``aioboto3`` and
  ``s3fs`` from ``bench/.venv-peers`` (they pin aiobotocore 2.x);
* gcs: ``asyncstore-asyncio``, ``asyncstore-trio``, ``gcloud-aio-storage``, ``gcsfs``;
* azure: ``asyncstore-asyncio``, ``asyncstore-trio``, ``azure-aio`` (the SDK), ``adlfs``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from _harness import (
    RESULTS,
    CaseFailed,
    LoopLag,
    emit_result,
    gcs_emulator,
    machine_info,
    measure,
    measure_asyncio,
    moto_server,
    peer_python,
    print_table,
    run_child,
    timed,
    write_json,
)
from _harness import azurite as azurite_server

DEFAULT_OUT = RESULTS / "requests.json"
BUCKET = "asyncstore-bench"
CONTAINER = "bench"
KEYS = 50  # distinct objects, read round-robin
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "benchkey",
    "AWS_SECRET_ACCESS_KEY": "benchsecret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CLIENTS = {
    "s3": (
        "asyncstore-asyncio",
        "asyncstore-trio",
        "asyncstore-sdk",
        "aiobotocore",
        "obstore",
        "aioboto3",
        "s3fs",
    ),
    "gcs": ("asyncstore-asyncio", "asyncstore-trio", "gcloud-aio-storage", "gcsfs"),
    "azure": ("asyncstore-asyncio", "asyncstore-trio", "azure-aio", "adlfs"),
}
PEER_VENV_CLIENTS = ("aioboto3", "s3fs")
#: Peers that only read (no HEAD/PUT case is written for them).
READ_ONLY: dict[str, set[str]] = {}


def keys() -> list[str]:
    return [f"small/{index:03d}" for index in range(KEYS)]


# -- the driver, in the child --------------------------------------------------------------------


async def drive_anyio(op: Callable[[str], Awaitable[Any]], args: argparse.Namespace) -> int:
    """``args.count`` calls of ``op`` by ``args.workers`` workers (anyio: asyncio or trio)."""
    import anyio

    names = keys()
    todo = iter(range(args.count))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index in todo:
            await op(names[index % KEYS])
            done += 1

    async with anyio.create_task_group() as tg:
        for _ in range(args.workers):
            tg.start_soon(worker)
    return done


async def drive_asyncio(op: Callable[[str], Awaitable[Any]], args: argparse.Namespace) -> int:
    """The same driver on plain asyncio (for the peers that run on nothing else)."""
    names = keys()
    todo = iter(range(args.count))
    done = 0

    async def worker() -> None:
        nonlocal done
        for index in todo:
            await op(names[index % KEYS])
            done += 1

    await asyncio.gather(*(worker() for _ in range(args.workers)))
    return done


def small_body(args: argparse.Namespace) -> bytes:
    return bytes(range(256)) * (args.kib * 4)


# -- asyncstore ----------------------------------------------------------------------------------


def asyncstore_url(service: str, args: argparse.Namespace, *, lean: bool = True) -> str:
    if service == "s3":
        extra = "" if lean else "&lean=false"
        return f"s3://{BUCKET}?endpoint={args.endpoint}&use_path_style=true{extra}"
    if service == "gcs":
        return f"gs://{BUCKET}?api_root={args.endpoint}"
    return f"az://{CONTAINER}?account_url={args.endpoint}/{AZURITE_ACCOUNT}"


def asyncstore_options(service: str) -> dict[str, Any]:
    return {"account_key": AZURITE_KEY} if service == "azure" else {}


def case_asyncstore(service: str, op: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from asyncstore import open_store

    loop = "trio" if client.endswith("-trio") else "asyncio"
    url = asyncstore_url(service, args, lean=client != "asyncstore-sdk")
    body = small_body(args)
    lag = LoopLag()

    async def run() -> dict[str, Any]:
        async with open_store(url, **asyncstore_options(service)) as store:
            await store.head(keys()[0])  # the client's one-time set-up is not part of the run
            if op == "gather-steady":  # start-up's garbage collected, as in a running service
                gc.collect()
            if op == "gather-frozen":  # what a service does after its start-up (see the docs)
                gc.collect()
                gc.freeze()
            if op == "get":
                operation: Callable[[str], Awaitable[Any]] = store.get
            elif op == "head":
                operation = store.head
            else:

                async def operation(key: str) -> Any:
                    return await store.put(key, body)

            if op.startswith("gather"):
                names = [keys()[i % KEYS] for i in range(args.count)]

                async def gather() -> int:
                    if loop == "asyncio":
                        await asyncio.gather(*(store.get(name) for name in names))
                        return len(names)
                    import trio

                    async with trio.open_nursery() as nursery:
                        for name in names:
                            nursery.start_soon(store.get, name)
                    return len(names)

                done = await timed(gather, lag)
            else:
                done = await timed(lambda: drive_anyio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure(lambda: anyio.run(run, backend=loop), lag)


# -- S3 peers ------------------------------------------------------------------------------------


def case_aiobotocore(op: str, args: argparse.Namespace) -> dict[str, Any]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    body = small_body(args)
    config = AioConfig(
        max_pool_connections=args.workers,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )

    async def run(lag: LoopLag) -> dict[str, Any]:
        async with get_session().create_client(
            "s3", endpoint_url=args.endpoint, config=config
        ) as client:

            async def operation(key: str) -> Any:
                if op == "get":
                    response = await client.get_object(Bucket=BUCKET, Key=key)
                    async with response["Body"] as stream:
                        return await stream.read()
                if op == "head":
                    return await client.head_object(Bucket=BUCKET, Key=key)
                return await client.put_object(Bucket=BUCKET, Key=key, Body=body)

            await client.head_object(Bucket=BUCKET, Key=keys()[0])
            done = await timed(lambda: drive_asyncio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


def case_aioboto3(op: str, args: argparse.Namespace) -> dict[str, Any]:
    import aioboto3  # bench/.venv-peers

    body = small_body(args)

    async def run(lag: LoopLag) -> dict[str, Any]:
        from aiobotocore.config import AioConfig

        config = AioConfig(max_pool_connections=args.workers, s3={"addressing_style": "path"})
        async with aioboto3.Session().client(
            "s3", endpoint_url=args.endpoint, config=config
        ) as client:

            async def operation(key: str) -> Any:
                if op == "get":
                    response = await client.get_object(Bucket=BUCKET, Key=key)
                    return await response["Body"].read()
                if op == "head":
                    return await client.head_object(Bucket=BUCKET, Key=key)
                return await client.put_object(Bucket=BUCKET, Key=key, Body=body)

            await client.head_object(Bucket=BUCKET, Key=keys()[0])
            done = await timed(lambda: drive_asyncio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


def case_s3fs(op: str, args: argparse.Namespace) -> dict[str, Any]:
    import s3fs  # bench/.venv-peers

    body = small_body(args)

    async def run(lag: LoopLag) -> dict[str, Any]:
        fs = s3fs.S3FileSystem(
            asynchronous=True,
            endpoint_url=args.endpoint,
            config_kwargs={"max_pool_connections": args.workers},
        )
        session = await fs.set_session()

        async def operation(key: str) -> Any:
            path = f"{BUCKET}/{key}"
            if op == "get":
                return await fs._cat_file(path)
            if op == "head":
                return await fs._info(path, refresh=True)
            return await fs._pipe_file(path, body)

        await fs._info(f"{BUCKET}/{keys()[0]}")
        done = await timed(lambda: drive_asyncio(operation, args), lag)
        await session.close()
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


def obstore_s3(endpoint: str, **client_options: str) -> Any:
    """obstore's S3Store for the bench bucket at ``endpoint`` (plain http, path style)."""
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": "true", **client_options},
    )


def case_obstore(service: str, op: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    body = small_body(args)

    async def run(lag: LoopLag) -> dict[str, Any]:
        store = obstore_s3(args.endpoint, pool_max_idle_per_host=str(args.workers))

        async def operation(key: str) -> Any:
            if op == "get":
                result = await obstore.get_async(store, key)
                return await result.bytes_async()
            if op == "head":
                return await obstore.head_async(store, key)
            return await obstore.put_async(store, key, body)

        await obstore.head_async(store, keys()[0])
        if op == "gather":
            names = [keys()[i % KEYS] for i in range(args.count)]

            async def gather() -> int:
                await asyncio.gather(*(operation_get(name) for name in names))
                return len(names)

            async def operation_get(key: str) -> Any:
                result = await obstore.get_async(store, key)
                return await result.bytes_async()

            done = await timed(gather, lag)
        else:
            done = await timed(lambda: drive_asyncio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


# -- GCS peers -----------------------------------------------------------------------------------


def case_gcloud_aio(op: str, args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from gcloud.aio.storage import Storage

    body = small_body(args)

    async def run(lag: LoopLag) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=args.workers)
        async with aiohttp.ClientSession(connector=connector) as session:
            storage = Storage(session=session, api_root=args.endpoint, api_is_dev=True)

            async def operation(key: str) -> Any:
                if op == "get":
                    return await storage.download(BUCKET, key)
                if op == "head":
                    return await storage.download_metadata(BUCKET, key)
                return await storage.upload(BUCKET, key, body)

            await storage.download_metadata(BUCKET, keys()[0])
            done = await timed(lambda: drive_asyncio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


def case_gcsfs(op: str, args: argparse.Namespace) -> dict[str, Any]:
    # gcsfs 2025.x+ asks a gRPC endpoint for the bucket type first (60 s timeout
    # against a loopback server): the plain JSON-API filesystem, as against GCS.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    import gcsfs

    body = small_body(args)

    async def run(lag: LoopLag) -> dict[str, Any]:
        fs = gcsfs.GCSFileSystem(endpoint_url=args.endpoint, token="anon", asynchronous=True)
        session = await fs._set_session()

        async def operation(key: str) -> Any:
            path = f"{BUCKET}/{key}"
            if op == "get":
                return await fs._cat_file(path)
            if op == "head":
                return await fs._info(path)
            return await fs._pipe_file(path, body)

        await fs._info(f"{BUCKET}/{keys()[0]}")
        done = await timed(lambda: drive_asyncio(operation, args), lag)
        await session.close()
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


# -- Azure peers ---------------------------------------------------------------------------------


def case_azure_aio(op: str, args: argparse.Namespace) -> dict[str, Any]:
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.storage.blob.aio import ContainerClient

    body = small_body(args)

    async def run(lag: LoopLag) -> dict[str, Any]:
        async with ContainerClient(
            f"{args.endpoint}/{AZURITE_ACCOUNT}",
            CONTAINER,
            credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
        ) as container:

            async def operation(key: str) -> Any:
                blob = container.get_blob_client(key)
                if op == "get":
                    return await (await blob.download_blob()).readall()
                if op == "head":
                    return await blob.get_blob_properties()
                return await blob.upload_blob(body, overwrite=True)

            await container.get_blob_client(keys()[0]).get_blob_properties()
            done = await timed(lambda: drive_asyncio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


def case_adlfs(op: str, args: argparse.Namespace) -> dict[str, Any]:
    import adlfs

    body = small_body(args)
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={args.endpoint}/{AZURITE_ACCOUNT};"
    )

    async def run(lag: LoopLag) -> dict[str, Any]:
        fs = adlfs.AzureBlobFileSystem(connection_string=connection, asynchronous=True)

        async def operation(key: str) -> Any:
            path = f"{CONTAINER}/{key}"
            if op == "get":
                return await fs._cat_file(path)
            if op == "head":
                return await fs._info(path)
            return await fs._pipe_file(path, body, overwrite=True)

        await fs._info(f"{CONTAINER}/{keys()[0]}")
        done = await timed(lambda: drive_asyncio(operation, args), lag)
        return {**done.figures(), "operations": done.result}

    return measure_asyncio(run)


# -- the case table ------------------------------------------------------------------------------


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    service, op, client = name.split(":")
    if client.startswith("asyncstore-"):
        return case_asyncstore(service, op, client, args)
    if client == "aiobotocore":
        return case_aiobotocore(op, args)
    if client == "aioboto3":
        return case_aioboto3(op, args)
    if client == "s3fs":
        return case_s3fs(op, args)
    if client == "obstore":
        return case_obstore(service, op, args)
    if client == "gcloud-aio-storage":
        return case_gcloud_aio(op, args)
    if client == "gcsfs":
        return case_gcsfs(op, args)
    if client == "azure-aio":
        return case_azure_aio(op, args)
    if client == "adlfs":
        return case_adlfs(op, args)
    raise SystemExit(f"unknown case {name!r}")


def case_names(args: argparse.Namespace) -> list[str]:
    names = []
    for service in args.services:
        wanted = args.clients or CLIENTS[service]
        for op in args.ops:
            for client in CLIENTS[service]:
                if client in wanted and op not in READ_ONLY.get(client, set()):
                    names.append(f"{service}:{op}:{client}")
        if "get" in args.ops:
            for op in ("gather", "gather-steady", "gather-frozen"):
                for client in ("asyncstore-asyncio", "asyncstore-trio"):
                    if client in wanted:
                        names.append(f"{service}:{op}:{client}")
            if service == "s3" and "obstore" in wanted:
                names.append("s3:gather:obstore")
    return names


# -- the parent ------------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(service: str) -> Iterator[tuple[str, int]]:
    """moto, gcp-storage-emulator or Azurite on 127.0.0.1, with the bench's bucket: (endpoint,
    pid). An Azure endpoint is the account URL's host part (the account is in the path)."""
    if service == "s3":
        with moto_server() as (url, pid):
            import boto3

            boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
            yield url, pid
    elif service == "gcs":
        with gcs_emulator(BUCKET) as (url, pid):
            yield url, pid
    else:
        with azurite_server() as (account_url, pid):
            from azure.storage.blob import BlobServiceClient

            BlobServiceClient(
                account_url,
                credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
            ).create_container(CONTAINER)
            yield account_url.rsplit("/", 1)[0], pid


@contextlib.contextmanager
def responder(service: str, *options: str) -> Iterator[tuple[str, int]]:
    """``bench/responders.py SERVICE [OPTIONS]`` in a child process: (endpoint, pid)."""
    script = pathlib.Path(__file__).with_name("responders.py")
    process = subprocess.Popen(
        [sys.executable, str(script), service, *options], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the {service} responder did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", process.pid
    finally:
        process.kill()
        process.wait()


def server_stats(endpoint: str, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(endpoint + path, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
    return json.loads(text) if text else {}


def prepare(service: str, args: argparse.Namespace) -> None:
    """Write the objects through asyncstore (so that their sha256 is recorded)."""
    import anyio

    from asyncstore import open_store

    body = small_body(args)

    async def write() -> None:
        async with open_store(asyncstore_url(service, args), **asyncstore_options(service)) as s:
            for key in keys():  # the responder has every bucket and container
                await s.put(key, body)

    anyio.run(write)


def child(name: str, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    client = name.split(":")[2]
    options = [
        *("--endpoint", args.endpoint, "--count", str(args.count)),
        *("--workers", str(args.workers), "--kib", str(args.kib)),
    ]
    python = str(peer_python()) if client in PEER_VENV_CLIENTS else sys.executable
    return run_child(__file__, name, options, python=python, timeout=900, server_pid=server_pid)


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    service, op, client = name.split(":")
    rates = [r["operations"] / r["seconds"] for r in runs]
    cpus = [r["cpu_seconds"] / r["operations"] * 1000 for r in runs]
    row: dict[str, Any] = {
        "case": name,
        "service": service,
        "op": op,
        "workload": f"{service}-{op}",
        "client": client,
        "runs": len(runs),
        "requests_per_s": statistics.median(rates),
        "requests_per_s_range": [min(rates), max(rates)],
        "cpu_s_per_1000_requests": statistics.median(cpus),
        "cpu_s_per_1000_requests_range": [min(cpus), max(cpus)],
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
    }
    lags = [r["loop_lag_max_ms"] for r in runs if "loop_lag_max_ms" in r]
    if lags:
        row["loop_lag_max_ms"] = statistics.median(lags)
        row["loop_lag_max_ms_range"] = [min(lags), max(lags)]
        for name in ("loop_lag_p99_ms", "loop_cpu_max_ms", "loop_cpu_p99_ms"):
            row[name] = statistics.median(r[name] for r in runs if name in r)
    seen = [r for r in runs if "server_requests" in r]
    if seen:
        row["requests_per_op"] = statistics.median(
            r["server_requests"] / r["operations"] for r in seen
        )
        row["connections"] = statistics.median(r["server_connections"] for r in seen)
    if any("crashed" in r for r in runs):
        row["crashed"] = [r["crashed"] for r in runs if "crashed" in r]
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's rate and CPU relative to obstore's and to the vendor SDK's, same service/op."""
    by_key = {(row["service"], row["op"], row["client"]): row for row in rows}
    peers = {"s3": ("obstore", "aioboto3"), "gcs": ("gcloud-aio-storage",), "azure": ("azure-aio",)}
    for row in rows:
        for peer in peers[row["service"]]:
            other = by_key.get((row["service"], row["op"], peer))
            if other is not None and other is not row:
                row[f"rate_vs_{peer}"] = row["requests_per_s"] / other["requests_per_s"]
                row[f"cpu_vs_{peer}"] = (
                    row["cpu_s_per_1000_requests"] / other["cpu_s_per_1000_requests"]
                )


def print_report(
    rows: list[dict[str, Any]], skipped: dict[str, str], args: argparse.Namespace
) -> None:
    headers = (
        "case",
        "req/s",
        "range",
        "CPU s/1k",
        "req/op",
        "conns",
        "lag max ms",
        "lag p99 ms",
        "loop CPU max",
        "RSS MiB",
        "vs obstore",
        "vs SDK",
    )
    lines = []
    for row in rows:
        vendor = next(
            (row[k] for k in row if k.startswith("rate_vs_") and "obstore" not in k), None
        )
        lo, hi = row["requests_per_s_range"]
        lines.append(
            (
                row["case"],
                f"{row['requests_per_s']:,.0f}",
                f"{lo:,.0f}-{hi:,.0f}",
                f"{row['cpu_s_per_1000_requests']:.3f}",
                "-" if "requests_per_op" not in row else f"{row['requests_per_op']:.2f}",
                "-" if "connections" not in row else f"{row['connections']:.0f}",
                "-" if "loop_lag_max_ms" not in row else f"{row['loop_lag_max_ms']:.1f}",
                "-" if "loop_lag_p99_ms" not in row else f"{row['loop_lag_p99_ms']:.1f}",
                "-" if "loop_cpu_max_ms" not in row else f"{row['loop_cpu_max_ms']:.1f}",
                f"{row['peak_rss_mib']:.0f}",
                "-" if "rate_vs_obstore" not in row else f"{row['rate_vs_obstore']:.2f}",
                "-" if vendor is None else f"{vendor:.2f}",
            )
        )
    title = (
        f"{args.count} operations on {args.kib} KiB objects by {args.workers} workers, "
        f"server: {args.server}; medians of {args.repeat} interleaved runs"
    )
    notes = [f"skipped {name}: {why}" for name, why in skipped.items()]
    notes += [
        f"{row['case']}: {len(row['failed_runs'])} run(s) failed ({row['failed_runs'][0]})"
        for row in rows
        if "failed_runs" in row
    ]
    notes += [
        f"{row['case']}: {len(row['crashed'])} run(s) crashed after printing ({row['crashed'][0]})"
        for row in rows
        if "crashed" in row
    ]
    notes.append("gather: the same GETs started at once (the store's bound keeps the loop live)")
    notes.append("gather-steady: the same after gc.collect() (start-up's garbage collected)")
    notes.append("gather-frozen: the same after gc.collect(); gc.freeze() (after start-up)")
    print_table(title, headers, lines, notes=notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", default="s3", type=lambda s: s.split(","))
    parser.add_argument("--ops", default="get,head,put", type=lambda s: s.split(","))
    parser.add_argument("--clients", default="", type=lambda s: [c for c in s.split(",") if c])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--kib", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--server", choices=("responder", "emulator"), default="responder")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(FAKE_AWS)
    if args.case:
        emit_result(run_case(args.case, args))
        return 0
    server = responder if args.server == "responder" else emulator
    names = case_names(args)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    failures: dict[str, list[str]] = {}
    if any(name.split(":")[2] in PEER_VENV_CLIENTS for name in names):
        try:
            peer_python()
        except (OSError, subprocess.CalledProcessError) as error:
            skipped.update(
                dict.fromkeys(PEER_VENV_CLIENTS, f"bench/.venv-peers could not be set up: {error}")
            )
    load_at_start = list(os.getloadavg())
    for service in args.services:
        with server(service) as (endpoint, pid):
            args.endpoint = endpoint
            prepare(service, args)
            for attempt in range(args.repeat):
                for name in names:
                    client = name.split(":")[2]
                    if not name.startswith(service + ":") or client in skipped:
                        continue
                    print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                    counted = args.server == "responder"
                    if counted:
                        server_stats(endpoint, "/__reset", "POST")
                    try:
                        result = child(name, args, pid)
                    except CaseFailed as error:
                        if client.startswith("asyncstore-"):
                            raise SystemExit(f"case {name} failed: {error}") from None
                        # A peer's failed run is reported; its other runs still count.
                        failures.setdefault(name, []).append(str(error))
                        continue
                    if counted:
                        stats = server_stats(endpoint, "/__stats")
                        result["server_requests"] = stats["requests"]
                        result["server_connections"] = stats["connections"] - 1  # ours
                    runs[name].append(result)
    rows = [summarise(name, runs[name]) for name in names if runs[name]]
    for row in rows:
        if row["case"] in failures:
            row["failed_runs"] = failures[row["case"]]
    for name, errors in failures.items():
        if not runs[name]:
            skipped[name] = f"every run failed: {errors[0]}"
    add_ratios(rows)
    print_report(rows, skipped, args)
    write_json(
        args.out,
        {
            "machine": {
                **machine_info(
                    "asyncstore",
                    "aiobotocore",
                    "botocore",
                    "obstore",
                    "anyio",
                    "trio",
                    load_average_1_5_15_at_end=list(os.getloadavg()),
                ),
                "load_average_1_5_15_at_start": load_at_start,
            },
            "settings": {
                "count": args.count,
                "workers": args.workers,
                "object_bytes": args.kib * 1024,
                "repeat": args.repeat,
                "server": args.server,
            },
            "skipped": skipped,
            "results": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
