"""The cost of one byte: one large object streamed to and from a loopback responder.

Usage::

    python bench/responder_transfers.py [--services s3,gcs,azure] [--size-mib 256]
                                        [--directions download,upload[,upload-file]]
                                        [--repeat 3] [--out bench/results/transfers.json]

Each service's responder (``bench/responders.py``) serves the object from memory, and
takes uploads (counting their bytes, keeping none of a large one), at almost no cost, so
the figures are the client's own: MB/s, client CPU seconds per GiB, and the worst
event-loop lag while the object streams.

* **download**: asyncstore streams it (``async with store.stream(key)``), parallel ranged
  reads, and checks its sha256 (recorded at upload) on every byte; obstore (S3) streams
  it with one GET and checks nothing.
* **upload**: the same number of bytes, from memory, with each client's own way to write
  a large object: asyncstore's ``put`` (parts in parallel, sha256 computed and recorded,
  plus the per-part checksum the service checks); obstore's ``put_async`` (multipart,
  5 MiB parts, 12 at once, no hash); the vendor's async SDK (aiobotocore's one
  ``put_object``, gcloud-aio-storage's ``upload``, the Azure SDK's ``upload_blob`` with
  8 blocks at once).
* **upload-file** (GCS only, when named in ``--directions``): a file of the same size
  (just written, so in the page cache) with ``upload_file``: by default one streamed
  request to a resumable session, or (``-composite`` clients) a parallel composite
  upload; gcloud-aio-storage's ``upload`` of the open file (one streamed request).

The ``sha256`` row is hashlib over the same bytes in memory, on one core: the ceiling of
any verified transfer on this machine, since a digest is computed in order on one thread.

The cases run interleaved, each in a fresh child process, ``--repeat`` times; medians.
``--warmup`` rounds (1) run first and are not counted: a fresh responder runs every
client's first uploads 30-40% slower while its heap grows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from _harness import (
    RESULTS,
    CaseFailed,
    LoopLag,
    emit_result,
    machine_info,
    measure,
    measure_asyncio,
    print_table,
    run_child,
    timed,
    write_json,
)
from small_requests import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    BUCKET,
    CONTAINER,
    FAKE_AWS,
    asyncstore_options,
    asyncstore_url,
    obstore_s3,
    responder,
    server_stats,
)

DEFAULT_OUT = RESULTS / "transfers.json"
KEY = "large/object"
UPLOAD_KEY = "large/upload"
MiB = 1 << 20
CLIENTS = {
    ("s3", "download"): ("asyncstore-asyncio", "asyncstore-trio", "obstore"),
    ("gcs", "download"): ("asyncstore-asyncio", "asyncstore-trio"),
    ("azure", "download"): ("asyncstore-asyncio", "asyncstore-trio"),
    ("s3", "upload"): ("asyncstore-asyncio", "asyncstore-trio", "obstore", "aiobotocore"),
    ("gcs", "upload"): ("asyncstore-asyncio", "asyncstore-trio", "gcloud-aio-storage"),
    ("azure", "upload"): ("asyncstore-asyncio", "asyncstore-trio", "azure-aio"),
    # A file (upload_file): GCS's default sends it in one request to a resumable
    # session; "-composite" asks for a parallel composite upload instead.
    ("gcs", "upload-file"): (
        "asyncstore-asyncio",
        "asyncstore-trio",
        "asyncstore-asyncio-composite",
        "asyncstore-trio-composite",
        "gcloud-aio-storage",
    ),
}
#: The vendor's own async client, per service (the uploads' second peer).
VENDOR = {"s3": "aiobotocore", "gcs": "gcloud-aio-storage", "azure": "azure-aio"}


# -- the cases, in the child ---------------------------------------------------------------------


def upload_body(args: argparse.Namespace) -> bytes:
    """The bytes every client uploads, made before the clock starts."""
    return os.urandom(MiB) * args.size_mib


@contextlib.contextmanager
def upload_file(args: argparse.Namespace) -> Iterator[pathlib.Path]:
    """A file of ``--size-mib`` MiB, just written (so in the page cache); removed after."""
    with tempfile.TemporaryDirectory(prefix="asyncstore-bench-") as folder:
        path = pathlib.Path(folder) / "upload.bin"
        path.write_bytes(upload_body(args))
        yield path


def case_asyncstore(
    service: str, direction: str, client: str, args: argparse.Namespace
) -> dict[str, Any]:
    import anyio

    from asyncstore import open_store

    loop = "trio" if "-trio" in client else "asyncio"
    lag = LoopLag()
    data = upload_body(args) if direction == "upload" else b""
    url = asyncstore_url(service, args)
    if client.endswith("-composite"):
        url += "&upload=composite"

    async def run(path: pathlib.Path | None) -> dict[str, Any]:
        async with open_store(url, **asyncstore_options(service)) as s:
            await s.head(KEY)  # the client's one-time set-up is not part of the run

            async def stream() -> int:
                got = 0
                async with s.stream(KEY) as body:
                    async for chunk in body:
                        got += len(chunk)
                return got

            async def upload() -> int:
                if path is not None:
                    return (await s.upload_file(path, UPLOAD_KEY)).bytes_transferred
                return (await s.put(UPLOAD_KEY, data)).size

            done = await timed(stream if direction == "download" else upload, lag)
        return {**done.figures(), "bytes": done.result}

    if direction == "upload-file":
        with upload_file(args) as path:
            return measure(lambda: anyio.run(run, path, backend=loop), lag)
    return measure(lambda: anyio.run(run, None, backend=loop), lag)


def case_obstore(direction: str, args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    data = upload_body(args) if direction == "upload" else b""

    async def run(lag: LoopLag) -> dict[str, Any]:
        store = obstore_s3(args.endpoint)
        await obstore.head_async(store, KEY)

        async def stream() -> int:
            got = 0
            result = await obstore.get_async(store, KEY)
            async for chunk in result.stream(min_chunk_size=8 * MiB):
                got += len(chunk)
            return got

        async def upload() -> int:
            await obstore.put_async(store, UPLOAD_KEY, data)
            return len(data)

        done = await timed(upload if direction == "upload" else stream, lag)
        return {**done.figures(), "bytes": done.result}

    return measure_asyncio(run)


def case_vendor(service: str, direction: str, args: argparse.Namespace) -> dict[str, Any]:
    """An upload with the vendor's own async client (one object, from memory or a file)."""
    data = upload_body(args) if direction == "upload" else b""

    async def run(lag: LoopLag, path: pathlib.Path | None) -> dict[str, Any]:
        async with vendor_upload(service, args.endpoint) as upload:
            await upload(KEY + ".warm", b"x")  # the client's one-time set-up is not timed

            async def once() -> int:
                if path is None:
                    await upload(UPLOAD_KEY, data)
                    return len(data)
                with open(path, "rb") as file:  # gcloud-aio-storage streams an open file
                    await upload(UPLOAD_KEY, file)
                return path.stat().st_size

            done = await timed(once, lag)
        return {**done.figures(), "bytes": done.result}

    if direction == "upload-file":
        with upload_file(args) as path:
            return measure_asyncio(lambda lag: run(lag, path))
    return measure_asyncio(lambda lag: run(lag, None))


@contextlib.asynccontextmanager
async def vendor_upload(
    service: str, endpoint: str
) -> AsyncIterator[Callable[[str, bytes], Awaitable[Any]]]:
    """``upload(key, data)`` through the vendor's async SDK for ``service``."""
    if service == "s3":
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            request_checksum_calculation="when_required", s3={"addressing_style": "path"}
        )
        async with get_session().create_client(
            "s3", endpoint_url=endpoint, config=config
        ) as client:
            yield lambda key, data: client.put_object(Bucket=BUCKET, Key=key, Body=data)
    elif service == "gcs":
        import aiohttp
        from gcloud.aio.storage import Storage

        async with aiohttp.ClientSession() as session:
            storage = Storage(session=session, api_root=endpoint, api_is_dev=True)
            yield lambda key, data: storage.upload(BUCKET, key, data, timeout=900)
    else:
        from azure.core.credentials import AzureNamedKeyCredential
        from azure.storage.blob.aio import ContainerClient

        async with ContainerClient(
            f"{endpoint}/{AZURITE_ACCOUNT}",
            CONTAINER,
            credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
        ) as container:

            async def upload(key: str, data: bytes) -> Any:
                blob = container.get_blob_client(key)
                return await blob.upload_blob(data, overwrite=True, max_concurrency=8)

            yield upload


def case_sha256(args: argparse.Namespace) -> dict[str, Any]:
    import hashlib

    block = os.urandom(8 * MiB)
    blocks = args.size_mib // 8
    digest = hashlib.sha256()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(blocks):
        digest.update(block)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "bytes": blocks * len(block),
    }


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    service, direction, client = name.split(":")
    if client == "sha256":
        return case_sha256(args)
    if client == "obstore":
        return case_obstore(direction, args)
    if client == VENDOR.get(service):
        return case_vendor(service, direction, args)
    return case_asyncstore(service, direction, client, args)


# -- the parent ------------------------------------------------------------------------------------


def prepare(service: str, args: argparse.Namespace) -> None:
    """Write the object through asyncstore (so that its sha256 is recorded)."""
    import anyio

    from asyncstore import open_store

    async def write() -> None:
        async with open_store(asyncstore_url(service, args), **asyncstore_options(service)) as s:
            data = os.urandom(MiB) * args.size_mib  # one request: responders keep no composes
            await s.put(KEY, data, chunk_size=len(data) + MiB)

    anyio.run(write)


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    service, direction, client = name.split(":")
    rates = [r["bytes"] / r["seconds"] / 1e6 for r in runs]
    cpus = [r["cpu_seconds"] / (r["bytes"] / 2**30) for r in runs]
    row: dict[str, Any] = {
        "case": name,
        "service": service,
        "direction": direction,
        "workload": f"{service}-{direction}",
        "client": client,
        "runs": len(runs),
        "mb_per_s": statistics.median(rates),
        "mb_per_s_range": [min(rates), max(rates)],
        "cpu_s_per_gib": statistics.median(cpus),
    }
    for figure in ("loop_lag_max_ms", "loop_lag_p99_ms"):
        values = [r[figure] for r in runs if figure in r]
        if values:
            row[figure] = statistics.median(values)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", default="s3,gcs,azure", type=lambda s: s.split(","))
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--directions", default="download,upload", type=lambda s: s.split(","))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed rounds first (a fresh responder's heap)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(FAKE_AWS)
    if args.case:
        emit_result(run_case(args.case, args))
        return 0
    if args.size_mib % 8:
        parser.error("--size-mib must be a multiple of 8")
    runs: dict[str, list[dict[str, Any]]] = {}
    load_at_start = list(os.getloadavg())
    for service in args.services:
        names = [
            f"{service}:{direction}:{client}"
            for direction in args.directions
            for client in CLIENTS.get((service, direction), ())
        ]
        if service == args.services[0]:
            names.append("any:-:sha256")
        keep = str(max(1100, args.size_mib + 1))  # the object downloaded is kept, whatever its size
        with responder(service, "--keep-max-mib", keep) as (endpoint, pid):
            args.endpoint = endpoint
            prepare(service, args)
            # The object downloaded is kept; uploads are counted, not kept (a responder
            # growing its heap by each upload's size charged its page faults to the run).
            server_stats(endpoint, "/__keep?mib=1")
            for attempt in range(-args.warmup, args.repeat):
                for name in names:
                    what = "warm-up" if attempt < 0 else f"run {attempt + 1}/{args.repeat}"
                    print(f"{what}: {name} ...", file=sys.stderr)
                    options = ["--endpoint", endpoint, "--size-mib", str(args.size_mib)]
                    try:
                        result = run_child(__file__, name, options, timeout=900, server_pid=pid)
                    except CaseFailed as error:
                        raise SystemExit(f"case {name} failed: {error}") from None
                    if name != "any:-:sha256" and result["bytes"] != args.size_mib * MiB:
                        raise SystemExit(f"case {name} moved {result['bytes']} bytes")
                    if attempt >= 0:
                        runs.setdefault(name, []).append(result)
    rows = [summarise(name, found) for name, found in runs.items()]
    sha = next(row for row in rows if row["client"] == "sha256")
    peers = {
        (row["workload"], row["client"]): row
        for row in rows
        if row["client"] in ("obstore", *VENDOR.values())
    }
    for row in rows:
        row["vs_sha256"] = row["mb_per_s"] / sha["mb_per_s"]
        if not row["client"].startswith("asyncstore"):
            continue
        for peer, figure in (("obstore", "vs_obstore"), (VENDOR[row["service"]], "vs_vendor")):
            if (row["workload"], peer) in peers:
                row[figure] = row["mb_per_s"] / peers[row["workload"], peer]["mb_per_s"]
    lines = [
        (
            row["case"],
            f"{row['mb_per_s']:,.0f}",
            "{:,.0f}-{:,.0f}".format(*row["mb_per_s_range"]),
            f"{row['cpu_s_per_gib']:.2f}",
            f"{row['loop_lag_max_ms']:.1f}" if "loop_lag_max_ms" in row else "-",
            f"{row['loop_lag_p99_ms']:.1f}" if "loop_lag_p99_ms" in row else "-",
            f"{row['vs_sha256']:.2f}",
            f"{row['vs_obstore']:.2f}" if "vs_obstore" in row else "-",
            f"{row['vs_vendor']:.2f}" if "vs_vendor" in row else "-",
        )
        for row in rows
    ]
    print_table(
        f"one {args.size_mib} MiB object streamed to and from a loopback responder; "
        f"medians of {args.repeat} interleaved runs",
        (
            "case",
            "MB/s",
            "range",
            "CPU s/GiB",
            "lag max ms",
            "lag p99 ms",
            "vs sha256",
            "vs obstore",
            "vs vendor",
        ),
        lines,
        notes=[
            "asyncstore verifies the recorded sha256 of every byte read, and computes and "
            "records it on every upload; obstore does neither",
            "vendor: aiobotocore (S3), gcloud-aio-storage (GCS), the azure aio SDK (Azure)",
            "sha256: hashlib over the same bytes in memory, one core (a verified read's ceiling)",
        ],
    )
    write_json(
        args.out,
        {
            "machine": machine_info("anyio", "obstore", load_at_start=load_at_start),
            "settings": {
                "size_mib": args.size_mib,
                "repeat": args.repeat,
                "directions": args.directions,
            },
            "results": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
