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
The page cache is NOT dropped (that needs root): the source file is read from
memory, so the figures are CPU/memory-bound, not disk-bound. Writes are fsynced
by asyncstore and by the cp case alike.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO / "bench" / ".work"
DEFAULT_OUT = REPO / "bench" / "results" / "local.json"
HEARTBEAT = 0.005
RESULT_MARK = "BENCH-RESULT "
CASES = (
    "cp",
    "sha256",
    "upload-asyncio",
    "download-asyncio",
    "upload-trio",
    "download-trio",
)
PAGE_CACHE_NOTE = (
    "page cache not dropped (needs root): the source file is read from RAM; "
    "writes are fsynced by asyncstore and by the cp case alike"
)


# -- the source file -----------------------------------------------------------------------------


def make_source(work: pathlib.Path, size_mib: int) -> pathlib.Path:
    """Generate (once) a file of ``size_mib`` MiB of pseudo-random blocks, 1 MiB at a time."""
    path = work / f"source-{size_mib}MiB.bin"
    size = size_mib * MiB
    if path.exists() and path.stat().st_size == size:
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


# -- the cases (run in a child process) ----------------------------------------------------------


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MiB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _measure(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    baseline = _peak_rss_mib()
    cpu = _cpu_seconds()
    started = time.perf_counter()
    extra = run()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu,
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
        **extra,
    }


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

    try:
        return _measure(run)
    finally:
        dst.unlink(missing_ok=True)


def case_sha256(src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """hashlib.sha256 over the file, read in 8 MiB blocks (the Store's part size)."""

    def run() -> dict[str, Any]:
        hasher = hashlib.sha256()
        buffer = memoryview(bytearray(8 * MiB))
        with open(src, "rb", buffering=0) as file:
            while n := file.readinto(buffer):
                hasher.update(buffer[:n])
        return {"sha256": "sha256:" + hasher.hexdigest()}

    return _measure(run)


def case_transfer(name: str, src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """upload_file or download_file of the source, under the event loop named in ``name``."""
    import anyio

    import asyncstore

    direction, backend = name.split("-")
    key = f"bench/object-{backend}.bin"
    url = (work / "store").as_uri()
    restored = work / f"restored-{backend}.bin"
    lags: list[float] = []

    async def heartbeat() -> None:
        while True:
            before = time.perf_counter()
            await anyio.sleep(HEARTBEAT)
            lags.append(time.perf_counter() - before - HEARTBEAT)

    async def transfer() -> asyncstore.TransferInfo:
        async with asyncstore.open_store(url) as store, anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            await anyio.sleep(0.05)  # let the heartbeat settle
            if direction == "upload":
                info = await store.upload_file(src, key)
            else:
                info = await store.download_file(key, restored)
            tg.cancel_scope.cancel()
        return info

    holder: dict[str, asyncstore.TransferInfo] = {}

    def run() -> dict[str, Any]:
        holder["info"] = anyio.run(transfer, backend=backend)
        return {}

    try:
        result = _measure(run)
    finally:
        restored.unlink(missing_ok=True)
    info = holder["info"]
    ordered = sorted(lags)
    result.update(
        seconds=info.duration,  # the transfer itself, without the event loop's start-up
        sha256=info.sha256,
        part_count=info.part_count,
        concurrency=info.concurrency,
        peak_buffered_mib=info.peak_buffered / MiB,
        loop_lag_max_ms=ordered[-1] * 1e3 if ordered else None,
        loop_lag_p99_ms=ordered[int(len(ordered) * 0.99)] * 1e3 if ordered else None,
        heartbeats=len(ordered),
    )
    return result


def run_case(name: str, src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """Run one case in this process and return its raw figures."""
    if name == "cp":
        return case_cp(src, work)
    if name == "sha256":
        return case_sha256(src, work)
    return case_transfer(name, src, work)


# -- the parent: run every case in a subprocess, report ----------------------------------------


def child(name: str, src: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    """Run ``name`` in a fresh interpreter and return its figures."""
    command = [sys.executable, __file__, "--case", name, "--src", str(src), "--work", str(work)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"case {name} failed with exit status {done.returncode}")
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return result
    raise SystemExit(f"case {name} printed no result")


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine_info(work: pathlib.Path) -> dict[str, Any]:
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
        "asyncstore": _version("asyncstore"),
        "anyio": _version("anyio"),
        "trio": _version("trio"),
        "work_dir": str(work),
        "page_cache": PAGE_CACHE_NOTE,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summarise(name: str, runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """The median run (by throughput) of one case, with derived figures."""
    for run in runs:
        run["mb_per_s"] = size / run["seconds"] / 1e6
    median = sorted(runs, key=lambda r: r["mb_per_s"])[len(runs) // 2]
    row = {
        "case": name,
        "bytes": size,
        "mb_per_s": median["mb_per_s"],
        "cpu_s_per_gib": median["cpu_seconds"] / (size / GiB),
        "peak_rss_mib": median["peak_rss_mib"],
        "baseline_rss_mib": median["baseline_rss_mib"],
        "runs_mb_per_s": [r["mb_per_s"] for r in runs],
    }
    for field in (
        "seconds",
        "cpu_seconds",
        "loop_lag_max_ms",
        "loop_lag_p99_ms",
        "heartbeats",
        "part_count",
        "concurrency",
        "peak_buffered_mib",
        "sha256",
    ):
        if field in median:
            row[field] = median[field]
    if len(runs) > 1 and "loop_lag_max_ms" in median:
        row["loop_lag_max_ms"] = max(r["loop_lag_max_ms"] for r in runs)
    return row


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
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
            _fmt(row["mb_per_s"], ",.0f"),
            _fmt(row["cpu_s_per_gib"], ".2f"),
            _fmt(row["peak_rss_mib"], ".0f"),
            _fmt(row.get("loop_lag_max_ms"), ".1f"),
            _fmt(row.get("loop_lag_p99_ms"), ".2f"),
            _fmt(row.get("ratio_vs_cp"), ".2f"),
            _fmt(row.get("ratio_vs_sha256"), ".2f"),
        )
        for row in rows
    ]
    title = (
        f"asyncstore local benchmark: {rows[0]['bytes'] / MiB:,.0f} MiB, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, "
        f"anyio {machine['anyio']}, trio {machine['trio']}"
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
        print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        for line in lines:
            print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        print(f"note: {PAGE_CACHE_NOTE}")
        return
    table = Table(title=title, caption=f"note: {PAGE_CACHE_NOTE}")
    for header in headers:
        table.add_column(header, justify="left" if header == "case" else "right")
    for line in lines:
        table.add_row(*line)
    Console(width=max(shutil.get_terminal_size().columns, 120)).print(table)


def main() -> int:
    """Parse the arguments; run one case (``--case``) or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="JSON results")
    parser.add_argument("--work", type=pathlib.Path, default=DEFAULT_WORK, help="scratch folder")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is kept")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work: pathlib.Path = args.work.resolve()

    if args.case:
        result = run_case(args.case, args.src, work)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0

    cases = [name for name in args.cases.split(",") if name]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    print(f"preparing a {args.size_mib} MiB file in {work} ...", file=sys.stderr)
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
    rows = [summarise(name, runs[name], size) for name in cases]
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

    machine = machine_info(work)
    print_table(rows, machine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([{**row, **machine} for row in rows], indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
