"""The cost of one byte when a process makes many transfers: mid-size objects, one after another.

Usage::

    python bench/repeated_transfers.py [--size-mib 24] [--count 10] [--repeat 3]
                                       [--cases upload_file,download_file,get,stream]
                                       [--baseline DIR] [--out bench/results/repeated.json]

A service rarely moves one large object and exits: it moves many, one after another, in
one process. Each case here is a fresh child process that makes ``--count`` transfers of
a ``--size-mib`` object with asyncstore against the loopback S3 responder
(``bench/responders.py``, which answers from memory, so the figures are the client's
own), and reports over all of them: MB/s, client CPU seconds per GiB, and minor page
faults per MiB moved (each one a fresh page the kernel had to provide and zero: 0.4-0.8
CPU s/GiB on this machine).

* ``upload_file``: a local file to the store (``Store.upload_file``);
* ``download_file``: the object to a local file (``Store.download_file``, verified);
* ``get``: the object into ``bytes`` (verified);
* ``stream``: the object's chunks (``async with store.stream(key)``, verified).

With ``--baseline DIR`` (say ``git archive <commit> asyncstore | tar -x -C DIR``) every
case also runs from that copy of the package, interleaved, as ``CASE@baseline``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _harness import RESULT_MARK, RESULTS, emit_result, machine_info, print_table, write_json
from small_requests import BUCKET, FAKE_AWS, responder

CASES = ("upload_file", "download_file", "get", "stream")
KEY = "repeated/object"
MiB = 1 << 20


def child(case: str, endpoint: str, args: argparse.Namespace) -> None:
    """In the child: ``--count`` transfers of ``case``; print the figures."""
    import anyio

    from asyncstore import open_store

    async def main() -> dict[str, Any]:
        work = pathlib.Path(tempfile.mkdtemp(prefix="asyncstore-repeated-"))
        source = work / "source.bin"
        source.write_bytes(os.urandom(MiB) * args.size_mib)
        async with open_store(f"s3://{BUCKET}", endpoint=endpoint) as store:
            await store.upload_file(source, KEY)  # the object, and the one-time set-up
            moved = 0
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for i in range(args.count):
                if case == "upload_file":
                    moved += (await store.upload_file(source, f"{KEY}-{i}")).bytes_transferred
                elif case == "download_file":
                    info = await store.download_file(KEY, work / "copy.bin")
                    moved += info.bytes_transferred
                elif case == "get":
                    moved += len(await store.get(KEY))
                else:
                    async with store.stream(KEY) as body:
                        async for chunk in body:
                            moved += len(chunk)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        return {
            "seconds": seconds,
            "bytes": moved,
            "mb_per_s": moved / seconds / 1e6,
            "cpu_s_per_gib": cpu / (moved / 2**30),
            "faults_per_mib": (after.ru_minflt - before.ru_minflt) / (moved / MiB),
        }

    emit_result(anyio.run(main))


def run_case(case: str, endpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    name, _, variant = case.partition("@")
    env = {**os.environ, **FAKE_AWS}
    if variant == "baseline":
        env["PYTHONPATH"] = str(args.baseline)  # the script's own directory comes first
    command = [sys.executable, __file__, "--child", name, "--endpoint", endpoint]
    command += ["--size-mib", str(args.size_mib), "--count", str(args.count)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return dict(json.loads(line.removeprefix(RESULT_MARK)))
    raise SystemExit(f"{case} failed: {done.stderr.strip()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--size-mib", type=int, default=24)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "repeated.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint, args)
        return
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    if args.baseline is not None:
        if not (args.baseline / "asyncstore" / "__init__.py").is_file():
            parser.error(f"--baseline {args.baseline}: no asyncstore package there")
        cases = [v for c in cases for v in (f"{c}@baseline", c)]
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    with responder("s3") as (endpoint, _):
        for round_ in range(args.repeat):
            for case in cases:
                print(f"run {round_ + 1}/{args.repeat}: {case} ...", flush=True)
                runs[case].append(run_case(case, endpoint, args))
    rows = []
    for case, results in runs.items():
        row: dict[str, Any] = {"case": case}
        for field in ("mb_per_s", "cpu_s_per_gib", "faults_per_mib"):
            values = [r[field] for r in results]
            row[field] = statistics.median(values)
            row[f"{field}_range"] = [min(values), max(values)]
        rows.append(row)
    print_table(
        f"{args.count} transfers of {args.size_mib} MiB in one process, loopback S3 responder; "
        f"medians of {args.repeat} interleaved runs (range)",
        ("case", "MB/s", "range", "CPU s/GiB", "range ", "faults/MiB"),
        [
            (
                r["case"],
                f"{r['mb_per_s']:,.0f}",
                "{:,.0f}-{:,.0f}".format(*r["mb_per_s_range"]),
                f"{r['cpu_s_per_gib']:.2f}",
                "{:.2f}-{:.2f}".format(*r["cpu_s_per_gib_range"]),
                f"{r['faults_per_mib']:.0f}",
            )
            for r in rows
        ],
    )
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "options": {k: str(v) for k, v in vars(args).items()},
            "rows": rows,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
