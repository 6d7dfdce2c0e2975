"""The cost of one byte: one large object streamed from a loopback responder, client-bound.

Usage::

    python bench/responder_transfers.py [--services s3,gcs,azure] [--size-mib 256]
                                        [--repeat 3] [--out bench/results/transfers.json]

Each service's responder (``bench/responders.py``) serves the object from memory at
almost no cost, so the figures are the client's own: MB/s, client CPU seconds per GiB,
and the worst event-loop lag while the object streams. asyncstore streams it
(``async with store.stream(key)``), parallel ranged reads, and checks its sha256 (recorded
at upload) on every byte; obstore (S3) streams it with one GET and checks nothing. The
``sha256`` row is hashlib over the same bytes in memory, on one core: the ceiling of any
verified read on this machine, since a digest is computed in order on one thread.

The cases run interleaved, each in a fresh child process, ``--repeat`` times; medians.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time
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
    FAKE_AWS,
    asyncstore_options,
    asyncstore_url,
    obstore_s3,
    responder,
)

DEFAULT_OUT = RESULTS / "transfers.json"
KEY = "large/object"
MiB = 1 << 20
CLIENTS = {
    "s3": ("asyncstore-asyncio", "asyncstore-trio", "obstore"),
    "gcs": ("asyncstore-asyncio", "asyncstore-trio"),
    "azure": ("asyncstore-asyncio", "asyncstore-trio"),
}


# -- the cases, in the child ---------------------------------------------------------------------


def case_asyncstore(service: str, client: str, args: argparse.Namespace) -> dict[str, Any]:
    import anyio

    from asyncstore import open_store

    loop = "trio" if client.endswith("-trio") else "asyncio"
    lag = LoopLag()

    async def run() -> dict[str, Any]:
        async with open_store(asyncstore_url(service, args), **asyncstore_options(service)) as s:
            await s.head(KEY)  # the client's one-time set-up is not part of the run

            async def stream() -> int:
                got = 0
                async with s.stream(KEY) as body:
                    async for chunk in body:
                        got += len(chunk)
                return got

            done = await timed(stream, lag)
        return {**done.figures(), "bytes": done.result}

    return measure(lambda: anyio.run(run, backend=loop), lag)


def case_obstore(args: argparse.Namespace) -> dict[str, Any]:
    import obstore

    async def run(lag: LoopLag) -> dict[str, Any]:
        store = obstore_s3(args.endpoint)
        await obstore.head_async(store, KEY)

        async def stream() -> int:
            got = 0
            result = await obstore.get_async(store, KEY)
            async for chunk in result.stream(min_chunk_size=8 * MiB):
                got += len(chunk)
            return got

        done = await timed(stream, lag)
        return {**done.figures(), "bytes": done.result}

    return measure_asyncio(run)


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
    service, client = name.split(":")
    if client == "sha256":
        return case_sha256(args)
    if client == "obstore":
        return case_obstore(args)
    return case_asyncstore(service, client, args)


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
    service, client = name.split(":")
    rates = [r["bytes"] / r["seconds"] / 1e6 for r in runs]
    cpus = [r["cpu_seconds"] / (r["bytes"] / 2**30) for r in runs]
    row: dict[str, Any] = {
        "case": name,
        "service": service,
        "workload": f"{service}-download",
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
    parser.add_argument("--repeat", type=int, default=3)
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
        names = [f"{service}:{client}" for client in CLIENTS[service]]
        if service == args.services[0]:
            names.append("any:sha256")
        with responder(service) as (endpoint, pid):
            args.endpoint = endpoint
            prepare(service, args)
            for attempt in range(args.repeat):
                for name in names:
                    print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
                    options = ["--endpoint", endpoint, "--size-mib", str(args.size_mib)]
                    try:
                        result = run_child(__file__, name, options, timeout=900, server_pid=pid)
                    except CaseFailed as error:
                        raise SystemExit(f"case {name} failed: {error}") from None
                    if name != "any:sha256" and result["bytes"] != args.size_mib * MiB:
                        raise SystemExit(f"case {name} read {result['bytes']} bytes")
                    runs.setdefault(name, []).append(result)
    rows = [summarise(name, found) for name, found in runs.items()]
    sha = next(row for row in rows if row["client"] == "sha256")
    obstore = {row["service"]: row for row in rows if row["client"] == "obstore"}
    for row in rows:
        row["vs_sha256"] = row["mb_per_s"] / sha["mb_per_s"]
        if row["service"] in obstore and row is not obstore[row["service"]]:
            row["vs_obstore"] = row["mb_per_s"] / obstore[row["service"]]["mb_per_s"]
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
        )
        for row in rows
    ]
    print_table(
        f"one {args.size_mib} MiB object streamed from a loopback responder; "
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
        ),
        lines,
        notes=[
            "asyncstore verifies the recorded sha256 of every byte; obstore verifies nothing",
            "sha256: hashlib over the same bytes in memory, one core (a verified read's ceiling)",
        ],
    )
    write_json(
        args.out,
        {
            "machine": machine_info("anyio", "obstore", load_at_start=load_at_start),
            "settings": {"size_mib": args.size_mib, "repeat": args.repeat},
            "results": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
