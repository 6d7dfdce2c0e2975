"""Local benchmark: asyncstore upload_file / download_file against cp and hashlib.

Usage::

    python bench/local.py [--size-mib 1024] [--out bench/results/local.json] [--repeat 1]

A file of ``--size-mib`` MiB is generated once (never held in memory) under
``bench/.work`` (or ``--work``), then every case runs in its own subprocess
(the script re-invokes itself with ``--case NAME``), so peak RSS and CPU time
are those of that case alone:

* ``cp``                 shutil.copyfile + fsync of the copy: the copy limit
* ``sha256``             hashlib.sha256 over the file: the hashing limit
* ``upload-asyncio``     Store.upload_file to a file:// store, under asyncio
* ``download-asyncio``   Store.download_file back (sha256 verified), under asyncio
* ``upload-trio``        the same two under trio
* ``download-trio``

For each case: MB/s (10**6 bytes per second), CPU seconds per GiB (user + sys
of the child process, all threads, over the operation only), peak RSS of the
child, and for the asyncstore cases the event loop's worst lag: a heartbeat
task beside the transfer sleeps 5 ms in a loop and records how late it wakes.
The page cache is NOT dropped (that needs root). Instead every case reads its
input once, untimed, before it starts: the source file for cp, sha256 and the
uploads, the stored object for a download. So every case reads from memory, as
cp does, and the figures are CPU/memory-bound, not disk-bound. (An upload writes
its large parts with O_DIRECT, leaving the stored object out of the page cache:
without this, a download would read from the disk while it writes to it.)
Writes are fsynced by asyncstore and by the cp case alike.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys
from typing import Any

from _harness import (
    RESULTS,
    CaseFailed,
    LoopLag,
    MiB,
    add_transfer_options,
    emit_result,
    fmt,
    machine_info,
    make_source,
    measure,
    parse_cases,
    print_table,
    run_child,
    script_parser,
    summarise,
    timed_transfer,
    write_json,
)

DEFAULT_OUT = RESULTS / "local.json"
CASES = (
    "cp",
    "sha256",
    "upload-asyncio",
    "download-asyncio",
    "upload-trio",
    "download-trio",
)
PAGE_CACHE_NOTE = (
    "page cache not dropped (needs root): each case's input (the source file, or the "
    "stored object for a download) is read once, untimed, first, so all read from RAM; "
    "writes are fsynced by asyncstore and by the cp case alike"
)


# -- the cases (run in a child process) ----------------------------------------------------------


def case_cp(src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """shutil.copyfile (sendfile on Linux) and an fsync of the copy."""
    dst = work / "cp-copy.bin"

    def run() -> dict[str, Any]:
        shutil.copyfile(src, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return {}

    return measure(run, remove=dst)


def case_sha256(src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """hashlib.sha256 over the file, read in 8 MiB blocks (the Store's part size)."""

    def run() -> dict[str, Any]:
        hasher = hashlib.sha256()
        buffer = memoryview(bytearray(8 * MiB))
        with open(src, "rb", buffering=0) as file:
            while n := file.readinto(buffer):
                hasher.update(buffer[:n])
        return {"sha256": "sha256:" + hasher.hexdigest()}

    return measure(run)


def case_transfer(name: str, src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """upload_file or download_file of the source, under the event loop named in ``name``."""
    import anyio

    import asyncstore

    direction, backend = name.split("-")
    key = f"bench/object-{backend}.bin"
    url = (work / "store").as_uri()
    restored = work / f"restored-{backend}.bin"
    lag = LoopLag()

    async def transfer() -> dict[str, Any]:
        async with asyncstore.open_store(url) as store:
            done = await timed_transfer(store, direction, key, src, restored, lag)
        info = done.result
        return {
            "seconds": info.duration,  # the transfer itself, without the event loop's start-up
            "cpu_seconds": done.cpu_seconds,
            "sha256": info.sha256,
            "part_count": info.part_count,
            "concurrency": info.concurrency,
            "peak_buffered_mib": info.peak_buffered / MiB,
            "heartbeats": len(lag.lags),
        }

    return measure(lambda: anyio.run(transfer, backend=backend), lag, remove=restored)


def warm(path: pathlib.Path) -> None:
    """Read ``path`` once, so that the timed case reads it from the page cache."""
    buffer = memoryview(bytearray(8 * MiB))
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


def run_case(name: str, src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """Run one case in this process and return its raw figures."""
    if name.startswith("download-"):
        warm(work / "store" / "bench" / f"object-{name.split('-')[1]}.bin")
    else:
        warm(src)
    if name == "cp":
        return case_cp(src, work)
    if name == "sha256":
        return case_sha256(src, work)
    return case_transfer(name, src, work)


# -- the parent: run every case in a subprocess, report ----------------------------------------


def child(name: str, src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter and return its figures."""
    try:
        return run_child(__file__, name, ["--src", str(src), "--work", str(work)], timeout=1800)
    except CaseFailed as error:
        raise SystemExit(f"case {name} failed: {error}") from None


def print_report(rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    """A rich table when rich is installed, else plain columns."""
    headers = (
        "case",
        "MB/s",
        "CPU s/GiB",
        "peak RSS MiB",
        "loop lag max ms",
        "lag p99 ms",
        "vs cp",
        "vs sha256",
    )
    lines = [
        (
            row["case"],
            fmt(row["mb_per_s"], ",.0f"),
            fmt(row["cpu_s_per_gib"], ".2f"),
            fmt(row["peak_rss_mib"], ".0f"),
            fmt(row.get("loop_lag_max_ms"), ".1f"),
            fmt(row.get("loop_lag_p99_ms"), ".2f"),
            fmt(row.get("ratio_vs_cp"), ".2f"),
            fmt(row.get("ratio_vs_sha256"), ".2f"),
        )
        for row in rows
    ]
    title = (
        f"asyncstore local benchmark: {rows[0]['bytes'] / MiB:,.0f} MiB, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, "
        f"anyio {machine['anyio']}, trio {machine['trio']}"
    )
    print_table(title, headers, lines, notes=[f"note: {PAGE_CACHE_NOTE}"], rich=True)


def main() -> int:
    """Parse the arguments; run one case (``--case``) or the whole benchmark."""
    parser = script_parser(__doc__, CASES, DEFAULT_OUT)
    add_transfer_options(parser, small=False)
    args = parser.parse_args()
    work: pathlib.Path = args.work.resolve()

    if args.case:
        emit_result(run_case(args.case, args.src, work))
        return 0

    cases = parse_cases(parser, args.cases, CASES)
    src = make_source(work, args.size_mib)
    size = src.stat().st_size
    shutil.rmtree(work / "store", ignore_errors=True)
    for name in cases:  # a download needs the object its upload case writes
        upload = name.replace("download-", "upload-")
        if name.startswith("download-") and upload not in cases:
            child(upload, src, work)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for attempt in range(args.repeat):
        for name in cases:
            print(f"run {attempt + 1}/{args.repeat}: {name} ...", file=sys.stderr)
            runs[name].append(child(name, src, work))

    shutil.rmtree(work / "store", ignore_errors=True)  # keep only the source, for next time
    rows = [{"case": name, **summarise(runs[name], size)} for name in cases]
    by_case = {row["case"]: row for row in rows}
    for row in rows:
        if row["case"] in ("cp", "sha256"):
            continue
        for limit in ("cp", "sha256"):
            if limit in by_case:
                row[f"ratio_vs_{limit}"] = row["mb_per_s"] / by_case[limit]["mb_per_s"]
    digests = {row["sha256"] for row in rows if "sha256" in row}
    if len(digests) > 1:
        print(f"error: the cases disagree on the file's sha256: {sorted(digests)}", file=sys.stderr)
        return 1

    machine = machine_info(
        "asyncstore", "anyio", "trio", work_dir=str(work), page_cache=PAGE_CACHE_NOTE
    )
    print_report(rows, machine)
    write_json(args.out, [{**row, **machine} for row in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
