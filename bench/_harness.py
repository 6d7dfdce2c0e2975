"""What the benchmark scripts share: measuring a case, running it in a child process, reporting.

Every script in ``bench/`` but ``reliability.py`` runs each case in a fresh interpreter, so
that the case's CPU time and peak RSS are its own, and reports the cases as a table and as
JSON (``cas.py``, which runs in one process, uses the data and report pieces). This module is
the one copy of what they have in common; plain functions and two small dataclasses.

**In the child** (the script re-invoked with ``--case NAME``):

* `cpu_seconds`, `peak_rss_mib`: the process's rusage (user + sys CPU of all its threads;
  ``ru_maxrss`` in MiB).
* `LoopLag`: a heartbeat task that sleeps `HEARTBEAT` (5 ms) in a loop and records how late
  it wakes, i.e. how long any other task of the event loop would have waited; reported as
  ``loop_lag_max_ms`` and ``loop_lag_p99_ms``.
* `timed`: awaits one operation beside a `LoopLag` heartbeat, which beats `SETTLE` seconds
  first, and clocks the operation alone (`Timed`: its result, wall and CPU seconds).
* `measure`: calls the case (which usually starts an event loop) and returns its figures
  with the process's baseline and peak RSS; `measure_asyncio` for a case on asyncio alone.
* `asyncstore_transfer_case`, `asyncstore_gets_case`, `timed_transfer`: asyncstore's
  ``upload_file`` / ``download_file`` and its concurrent ``get`` calls, measured;
  `obstore_transfer`, `obstore_download`: obstore's upload and the ranged parallel
  download the scripts give it.
* `emit_result`: prints the figures as one marker line (`RESULT_MARK` + JSON) on stdout.

**In the parent**:

* `script_parser`, `add_transfer_options`, `parse_cases`: the options the scripts share.
* `run_child`: runs ``script --case NAME ...`` in a fresh interpreter, optionally adds a
  server process's CPU use over it, and returns the child's figures, or raises `CaseFailed`
  with a one-line reason (`failure_reason`).
* `make_source`, `file_sha256`: the source file under ``bench/.work`` (made once, never
  held in memory, shared by the scripts) and its digest.
* `summarise` (`summarise_case` for ``workload:client`` cases): the median run of a case,
  with its rate (MB/s or requests/s) and CPU per GiB (or per 1,000 requests);
  `add_ratios` for the ``asyncstore/this`` column; `wrong_digests`.
* `print_table` (plain columns; rich's where asked and installed), `print_workload_table`,
  `fmt`, `rate_cells`; `machine_info` and `write_json`: the JSON's machine block and file.
* `moto_server`, `gcs_emulator`, `azurite`: the local servers the scripts start (by
  ``asyncstore.testing.emulators``, which the tests use too).

Only the standard library is imported at the top: ``bench/s3.py`` runs some cases with the
interpreter of ``bench/.venv-peers``, which has neither anyio nor asyncstore. The scripts
import this file as ``_harness`` (run as a script, a file's own folder is on ``sys.path``).
No script here is named after a package it imports (the Azure one is ``azure_blob.py``, not
``azure.py``, which would shadow the ``azure`` namespace package), so none edits ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import hashlib
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB
BENCH = pathlib.Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_WORK = BENCH / ".work"
RESULTS = BENCH / "results"
#: The heartbeat's sleep, in seconds: each wake-up later than this is a lag.
HEARTBEAT = 0.005
#: Seconds the heartbeat runs before an operation's clock starts.
SETTLE = 0.05
#: The child prints its figures on one stdout line that starts with this, then JSON.
RESULT_MARK = "BENCH-RESULT "
#: How much of a failed child's stderr the parent echoes (its end: the traceback's last frames).
STDERR_TAIL = 10_000


# -- measuring, in the child ---------------------------------------------------------------------


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MiB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


@dataclass
class LoopLag:
    """A heartbeat task's lateness: how long the event loop kept ready tasks waiting.

    `run` sleeps `HEARTBEAT` seconds in a loop and records each wake-up's delay beyond it.
    A blocking call on the loop shows up, but so does the loop's thread waiting for the GIL
    or for a CPU while worker threads run.
    """

    lags: list[float] = field(default_factory=list)
    #: The event loop thread's CPU seconds between two beats (what the lag would be on an
    #: idle machine: on a loaded one the wall lag also counts waiting for a CPU).
    cpu_lags: list[float] = field(default_factory=list)

    async def run(self) -> None:
        """Beat until cancelled: with anyio's sleep (asyncio or trio), else asyncio's."""
        try:
            from anyio import sleep
        except ImportError:  # bench/.venv-peers: asyncio only
            from asyncio import sleep
        while True:
            before, cpu_before = time.perf_counter(), time.thread_time()
            await sleep(HEARTBEAT)
            self.lags.append(time.perf_counter() - before - HEARTBEAT)
            self.cpu_lags.append(time.thread_time() - cpu_before)

    def figures(self) -> dict[str, float]:
        """``loop_lag_max_ms``, ``loop_lag_p99_ms`` and the same of the loop thread's CPU
        between beats (``loop_cpu_max_ms``, ``loop_cpu_p99_ms``); nothing if it never woke."""
        ordered = sorted(self.lags)
        if not ordered:
            return {}
        cpu = sorted(self.cpu_lags)
        return {
            "loop_lag_max_ms": ordered[-1] * 1e3,
            "loop_lag_p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
            "loop_cpu_max_ms": cpu[-1] * 1e3,
            "loop_cpu_p99_ms": cpu[int(len(cpu) * 0.99)] * 1e3,
        }


@dataclass
class Timed(Generic[T]):
    """An operation's result, with the wall and CPU seconds it took."""

    result: T
    seconds: float
    cpu_seconds: float

    def figures(self) -> dict[str, float]:
        """``seconds`` and ``cpu_seconds``, as `measure` expects them from a case."""
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


async def timed(work: Callable[[], Awaitable[T]], lag: LoopLag) -> Timed[T]:
    """Await ``work()`` beside ``lag``'s heartbeat; its result, wall and CPU seconds.

    The heartbeat starts first and beats for `SETTLE` seconds; then the clock starts and
    ``work()`` is called, so nothing of it runs before (``asyncio.gather`` and obstore's
    calls start at once: pass a function, not their awaitable); the heartbeat is cancelled
    when it is done. Any event loop anyio runs on (asyncio, trio); plain asyncio where
    anyio is not installed.
    """
    try:
        import anyio
    except ImportError:  # bench/.venv-peers: asyncio only
        heartbeat = asyncio.create_task(lag.run())
        try:
            await asyncio.sleep(SETTLE)
            return await _clock(work)
        finally:
            heartbeat.cancel()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lag.run)
        await anyio.sleep(SETTLE)
        done = await _clock(work)
        tg.cancel_scope.cancel()
    return done


async def _clock(work: Callable[[], Awaitable[T]]) -> Timed[T]:
    started, cpu = time.perf_counter(), cpu_seconds()
    result = await work()
    return Timed(result, time.perf_counter() - started, cpu_seconds() - cpu)


def measure(
    run: Callable[[], dict[str, Any]],
    lag: LoopLag | None = None,
    *,
    remove: pathlib.Path | None = None,
) -> dict[str, Any]:
    """Call ``run()`` and return its figures with this process's memory.

    ``seconds`` and ``cpu_seconds`` are those of the whole call, unless ``run()`` returns
    its own (a case that clocks its operation alone, with `timed`); ``baseline_rss_mib`` is
    the peak RSS before the call (the interpreter and what it imported), ``peak_rss_mib``
    the peak after it; then ``lag``'s figures, if a heartbeat ran. ``remove`` is a file the
    case writes (a download's copy): it is deleted afterwards, whatever happened.
    """
    try:
        baseline = peak_rss_mib()
        cpu = cpu_seconds()
        started = time.perf_counter()
        extra = run()
        seconds = time.perf_counter() - started
        return {
            "seconds": extra.pop("seconds", seconds),
            "cpu_seconds": extra.pop("cpu_seconds", cpu_seconds() - cpu),
            "peak_rss_mib": peak_rss_mib(),
            "baseline_rss_mib": baseline,
            **extra,
            **(lag.figures() if lag is not None else {}),
        }
    finally:
        if remove is not None:
            remove.unlink(missing_ok=True)


def measure_asyncio(
    body: Callable[[LoopLag], Coroutine[Any, Any, dict[str, Any]]],
    *,
    remove: pathlib.Path | None = None,
) -> dict[str, Any]:
    """`measure` ``asyncio.run(body(lag))``, ``lag`` a fresh `LoopLag` for ``body``'s `timed`.

    For the clients that run on asyncio alone; ``body`` returns the case's figures.
    """
    lag = LoopLag()
    return measure(lambda: asyncio.run(body(lag)), lag, remove=remove)


def emit_result(result: dict[str, Any]) -> None:
    """Print a case's figures for the parent: `RESULT_MARK` and JSON, on one line."""
    print(RESULT_MARK + json.dumps(result), flush=True)


# -- asyncstore's cases, in the child ------------------------------------------------------------


async def timed_transfer(
    store: Any, direction: str, key: str, src: pathlib.Path, restored: pathlib.Path, lag: LoopLag
) -> Timed[Any]:
    """`timed` ``store.upload_file(src, key)`` or ``store.download_file(key, restored)``."""
    if direction == "upload":
        return await timed(lambda: store.upload_file(src, key), lag)
    return await timed(lambda: store.download_file(key, restored), lag)


def asyncstore_transfer_case(
    make_store: Callable[[], Any],
    loop: str,
    direction: str,
    key: str,
    src: pathlib.Path,
    restored: pathlib.Path,
) -> dict[str, Any]:
    """An upload (``src`` to ``key``) or a download (to ``restored``), measured under ``loop``.

    ``make_store()`` (called in the event loop) gives an unopened Store; a first
    ``exists(key)`` does the client's one-time set-up, untimed. The figures: ``seconds``
    (``TransferInfo.duration``, the transfer alone), ``cpu_seconds``, ``sha256``, ``parts``,
    ``peak_buffered_mib``, with `measure`'s memory and the heartbeat's lag.
    """
    import anyio

    lag = LoopLag()

    async def transfer() -> dict[str, Any]:
        async with make_store() as store:
            await store.exists(key)
            done = await timed_transfer(store, direction, key, src, restored, lag)
        info = done.result
        return {
            "seconds": info.duration,
            "cpu_seconds": done.cpu_seconds,
            "sha256": info.sha256,
            "parts": info.part_count,
            "peak_buffered_mib": info.peak_buffered / MiB,
        }

    return measure(lambda: anyio.run(transfer, backend=loop), lag, remove=restored)


def asyncstore_gets_case(
    make_store: Callable[[], Any], loop: str, keys: list[str]
) -> dict[str, Any]:
    """``store.get`` of every key, all started at once in one task group, measured under ``loop``.

    ``make_store()`` as for `asyncstore_transfer_case`; the figures: ``seconds``,
    ``cpu_seconds`` and ``bytes`` (all the bodies), with `measure`'s memory and the lag.
    """
    import anyio

    lag = LoopLag()

    async def gets() -> dict[str, Any]:
        async with make_store() as store:
            await store.exists(keys[0])  # the client's one-time set-up is not part of the run
            sizes: list[int] = []

            async def get(key: str) -> None:
                sizes.append(len(await store.get(key)))

            async def all_gets() -> None:
                async with anyio.create_task_group() as requests:
                    for key in keys:
                        requests.start_soon(get, key)

            done = await timed(all_gets, lag)
        return {**done.figures(), "bytes": sum(sizes)}

    return measure(lambda: anyio.run(gets, backend=loop), lag)


# -- a peer's, in the child -----------------------------------------------------------------------


async def obstore_download(
    store: Any, key: str, path: pathlib.Path, part_size: int, concurrency: int
) -> None:
    """Download ``key`` to ``path`` with obstore, which has no parallel download of its own.

    ``get_range_async`` of ``part_size`` ranges, ``concurrency`` in flight (asyncio), each
    written at its offset with ``os.pwrite``.
    """
    import obstore

    size = (await obstore.head_async(store, key))["size"]
    gate = asyncio.Semaphore(concurrency)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:

        async def part(start: int) -> None:
            async with gate:
                end = min(start + part_size, size)
                data = await obstore.get_range_async(store, key, start=start, end=end)
                os.pwrite(fd, memoryview(data), start)

        await asyncio.gather(*(part(start) for start in range(0, size, part_size)))
    finally:
        os.close(fd)


async def obstore_transfer(
    store: Any,
    direction: str,
    key: str,
    src: pathlib.Path,
    restored: pathlib.Path,
    part_size: int,
    concurrency: int,
    lag: LoopLag,
) -> dict[str, Any]:
    """obstore's upload of ``src`` or download to ``restored``, `timed`: the case's figures.

    The upload is ``put_async`` with ``chunk_size`` ``part_size`` and ``max_concurrency``
    ``concurrency``; the download is `obstore_download`, and its figures have the copy's
    ``sha256`` (hashed after the timing: obstore does not hash).
    """
    import obstore

    if direction == "upload":
        upload = functools.partial(
            obstore.put_async, store, key, src, chunk_size=part_size, max_concurrency=concurrency
        )
        return (await timed(upload, lag)).figures()
    download = functools.partial(obstore_download, store, key, restored, part_size, concurrency)
    figures = (await timed(download, lag)).figures()
    return {**figures, "sha256": file_sha256(restored)}


# -- running a case in a child process, in the parent --------------------------------------------


class CaseFailed(Exception):
    """A case's child process failed; the message is a one-line reason."""


def failure_reason(stderr: str, status: int) -> str:
    """A one-line reason from a child's traceback: its exception line, plus any HTTP status."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    reason = (errors or lines or [f"exit status {status}"])[-1][:200]
    statuses = re.findall(r"status: (\d{3})", stderr)
    return reason + (f" (HTTP {statuses[-1]})" if statuses else "")


def _process_cpu(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run_child(
    script: str,
    name: str,
    options: Sequence[str] = (),
    *,
    python: str = sys.executable,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Run ``python script --case NAME *options`` and return the figures it prints.

    With ``server_pid``, add the CPU that process (a local server) used while the child
    ran: ``server_cpu_seconds`` and ``server_cpu_per_wall_s`` (per second of the case's
    own ``seconds``; the child's start-up is counted too, so this slightly understates the
    server's load during the operation itself).

    A child that printed its result and then crashed (obstore 0.12 sometimes aborts at
    interpreter exit) keeps its figures, with the crash in ``crashed``. Raises `CaseFailed`
    if the child printed no result (exiting with an error: its stderr's end is echoed to
    ours) or runs longer than ``timeout`` seconds (it is killed).
    """
    server = None
    if server_pid is not None:
        import psutil

        server = psutil.Process(server_pid)
        before = _process_cpu(server)
    command = [python, script, "--case", name, *options]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise CaseFailed(f"no result after {timeout} s (killed)") from None
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            break
    else:
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-STDERR_TAIL:])
            raise CaseFailed(failure_reason(done.stderr, done.returncode))
        raise CaseFailed("printed no result")
    if done.returncode != 0:  # crashed after printing its figures (obstore at exit): keep them
        result["crashed"] = failure_reason(done.stderr, done.returncode)
    if server is not None:
        server_cpu = _process_cpu(server) - before
        result["server_cpu_seconds"] = server_cpu
        result["server_cpu_per_wall_s"] = server_cpu / max(result["seconds"], 1e-9)
    return result


#: The virtualenv of the peers that cannot share asyncstore's (s3fs and aioboto3 pin
#: aiobotocore 2.x); their cases never import asyncstore.
PEER_VENV = BENCH / ".venv-peers"
PEER_PACKAGES = ("s3fs", "aioboto3", "psutil")


def peer_python() -> pathlib.Path:
    """The interpreter of `PEER_VENV`, created (venv + pip install) on first use."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEER_VENV} (pip install {' '.join(PEER_PACKAGES)}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    probe = [str(python), "-c", "import " + ", ".join(PEER_PACKAGES)]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        install = [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES]
        subprocess.run(install, check=True)
    return python


def script_parser(doc: str, cases: Sequence[str], out: pathlib.Path) -> argparse.ArgumentParser:
    """The options every script has: ``--cases``, ``--out``, ``--work``, and the child's ``--case``.

    The description is the first paragraph of ``doc`` (the script's docstring).
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(cases), help="comma-separated subset")
    parser.add_argument("--out", type=pathlib.Path, default=out, help="JSON results")
    parser.add_argument("--work", type=pathlib.Path, default=DEFAULT_WORK, help="scratch folder")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    return parser


def add_transfer_options(parser: argparse.ArgumentParser, *, small: bool = True) -> None:
    """``--size-mib``, ``--repeat`` and the child's ``--src``; with ``small``, the small GETs.

    ``small`` adds ``--small-count``, ``--small-kib`` and the child's ``--endpoint``.
    """
    parser.add_argument("--size-mib", type=int, default=1024, help="the file's size in MiB (1024)")
    if small:
        parser.add_argument("--small-count", type=int, default=2000, help="small GETs (2000)")
        parser.add_argument("--small-kib", type=int, default=16, help="small object size (16)")
        parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the median is kept")
    parser.add_argument("--src", type=pathlib.Path, help=argparse.SUPPRESS)


def parse_cases(parser: argparse.ArgumentParser, text: str, known: Sequence[str]) -> list[str]:
    """The ``--cases`` option's comma-separated names; an argparse error for unknown ones."""
    cases = [name for name in text.split(",") if name]
    unknown = sorted(set(cases) - set(known))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(known)}")
    return cases


# -- the data ------------------------------------------------------------------------------------


def make_source(work: pathlib.Path, size_mib: int) -> pathlib.Path:
    """``work/source-<N>MiB.bin``: ``size_mib`` MiB of pseudo-random 1 MiB blocks.

    Made once, 1 MiB at a time (never held in memory), fsynced, and reused by later runs
    of any script with the same size.
    """
    path = work / f"source-{size_mib}MiB.bin"
    if path.exists() and path.stat().st_size == size_mib * MiB:
        return path
    print(f"preparing a {size_mib} MiB file in {work} ...", file=sys.stderr)
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
    """A file's sha256, as asyncstore writes it (``sha256:<hex>``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(8 * MiB):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


# -- the report ----------------------------------------------------------------------------------

#: The figures of a case's median run that `summarise` copies into its row, when present.
FIELDS = (
    "seconds",
    "cpu_seconds",
    "peak_rss_mib",
    "baseline_rss_mib",
    "loop_lag_max_ms",
    "loop_lag_p99_ms",
    "heartbeats",
    "server_cpu_seconds",
    "server_cpu_per_wall_s",
    "parts",
    "part_count",
    "concurrency",
    "peak_buffered_mib",
    "sha256",
    "bytes",
)


def summarise(
    runs: list[dict[str, Any]], amount: float, *, requests: bool = False
) -> dict[str, Any]:
    """One case's row: its median run by rate, with the derived figures.

    ``amount`` is what one run moved: bytes, or with ``requests`` a count of requests.
    The rate is ``mb_per_s`` (10**6 bytes per second) and the CPU ``cpu_s_per_gib``, or
    ``requests_per_s`` and ``cpu_s_per_1000_requests``; ``runs_<rate>`` lists every run's
    rate. For bytes, ``bytes`` is the amount. The median run's `FIELDS` follow, but
    ``loop_lag_max_ms`` is the worst of all runs.
    """
    rate = "requests_per_s" if requests else "mb_per_s"
    for run in runs:
        run[rate] = amount / run["seconds"] / (1 if requests else 1e6)
    median = sorted(runs, key=lambda r: r[rate])[len(runs) // 2]
    row: dict[str, Any] = {rate: median[rate], f"runs_{rate}": [r[rate] for r in runs]}
    if requests:
        row["cpu_s_per_1000_requests"] = median["cpu_seconds"] / amount * 1000
    else:
        row["cpu_s_per_gib"] = median["cpu_seconds"] / (amount / GiB)
    row.update({name: median[name] for name in FIELDS if name in median})
    if not requests:
        row["bytes"] = amount
    lags = [r["loop_lag_max_ms"] for r in runs if "loop_lag_max_ms" in r]
    if lags:
        row["loop_lag_max_ms"] = max(lags)
    return row


def summarise_case(
    name: str, runs: list[dict[str, Any]], *, size: int, small_count: int
) -> dict[str, Any]:
    """The row of a backend script's ``workload:client`` case (`summarise`, after its names).

    The ``get-small`` workload is measured in requests (``small_count`` of them a run), the
    others in bytes (``size`` a run).
    """
    workload, client = name.split(":")
    small = workload == "get-small"
    summary = summarise(runs, small_count if small else size, requests=small)
    return {"case": name, "workload": workload, "client": client, **summary}


def wrong_digests(rows: list[dict[str, Any]], expected: str) -> list[str]:
    """The cases whose ``sha256`` is not ``expected`` (the source file's)."""
    return [row["case"] for row in rows if "sha256" in row and row["sha256"] != expected]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``asyncstore_ratio``: the workload's first asyncstore row's rate / each row's rate.

    Rows have ``workload`` and ``client``; above 1, asyncstore was faster.
    """
    reference: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["client"].startswith("asyncstore-"):
            reference.setdefault(row["workload"], row)
    for row in rows:
        base = reference.get(row["workload"])
        if base is not None:
            rate = "requests_per_s" if "requests_per_s" in row else "mb_per_s"
            row["asyncstore_ratio"] = base[rate] / row[rate]


def fmt(value: Any, spec: str) -> str:
    """``format(value, spec)``, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def rate_cells(row: dict[str, Any], mb_spec: str = ",.0f") -> tuple[str, str]:
    """A row's rate and CPU cells with their units (MB/s and s/GiB, or req/s and s/1k req)."""
    if "requests_per_s" in row:
        return (
            f"{row['requests_per_s']:,.0f} req/s",
            f"{row['cpu_s_per_1000_requests']:.2f} s/1k req",
        )
    return f"{row['mb_per_s']:{mb_spec}} MB/s", f"{row['cpu_s_per_gib']:.2f} s/GiB"


def print_table(
    title: str,
    headers: Sequence[str],
    lines: Sequence[Sequence[str]],
    *,
    left: Collection[str] = ("case",),
    notes: Iterable[str] = (),
    rich: bool = False,
    width: int = 120,
) -> None:
    """Print a title, the table and notes under it.

    The columns named in ``left`` are left-aligned, the others right-aligned. With
    ``rich`` and rich installed, a rich table (at least ``width`` columns wide) with the
    notes as its caption; else plain columns.
    """
    notes = list(notes)
    if rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title, caption="\n".join(notes) or None)
            for header in headers:
                table.add_column(header, justify="left" if header in left else "right")
            for line in lines:
                table.add_row(*line)
            Console(width=max(shutil.get_terminal_size().columns, width)).print(table)
            return
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    aligned = [str.ljust if header in left else str.rjust for header in headers]
    print(title)
    for line in (headers, *lines):
        print("  ".join(a(c, w) for a, c, w in zip(aligned, line, widths, strict=True)).rstrip())
    for note in notes:
        print(note)


#: The columns of `print_workload_table`.
WORKLOAD_HEADERS = (
    "workload",
    "client",
    "rate",
    "CPU",
    "peak RSS MiB",
    "lag max ms",
    "server CPU/s",
    "asyncstore/this",
)


def print_workload_table(
    title: str, rows: list[dict[str, Any]], notes: Iterable[str], mb_spec: str = ",.0f"
) -> None:
    """The table of `summarise_case` rows, one per ``workload:client`` case (`WORKLOAD_HEADERS`)."""
    lines = [
        (
            row["workload"],
            row["client"],
            *rate_cells(row, mb_spec),
            fmt(row.get("peak_rss_mib"), ".0f"),
            fmt(row.get("loop_lag_max_ms"), ".1f"),
            fmt(row.get("server_cpu_per_wall_s"), ".2f"),
            fmt(row.get("asyncstore_ratio"), ".2f"),
        )
        for row in rows
    ]
    print_table(title, WORKLOAD_HEADERS, lines, left=("workload", "client"), notes=notes)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine_info(*packages: str, **extra: Any) -> dict[str, Any]:
    """What the figures depend on: CPUs, Python, the platform, ``packages``' versions.

    A package that is not installed has None. ``extra`` entries follow; ``date`` (UTC) last.
    """
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
        **{package: _version(package) for package in packages},
        **extra,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: pathlib.Path, document: Any) -> None:
    """Write the results (indented, with a final newline) and say where, on stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


# -- the emulators -------------------------------------------------------------------------------
#
# Started by asyncstore.testing.emulators, the module the tests use too (standard library only,
# imported when a server is started: the peers' interpreter has no asyncstore).


@contextmanager
def moto_server() -> Iterator[tuple[str, int]]:
    """moto's S3 server in a child process: (its URL, its pid).

    Sets fake AWS credentials in ``os.environ`` first, for the script's own clients and the
    case processes it starts (they inherit them).
    """
    from asyncstore.testing.emulators import FAKE_AWS_ENV
    from asyncstore.testing.emulators import moto_server as start

    os.environ.update(FAKE_AWS_ENV)
    with start() as server:
        yield server.url, server.pid


@contextmanager
def gcs_emulator(bucket: str) -> Iterator[tuple[str, int]]:
    """gcp-storage-emulator, in memory on a free port, with ``bucket``: (its URL, its pid)."""
    from asyncstore.testing.emulators import create_gcs_bucket
    from asyncstore.testing.emulators import gcs_emulator as start

    with start() as server:
        create_gcs_bucket(server.url, bucket, project="bench")
        yield server.url, server.pid


@contextmanager
def azurite() -> Iterator[tuple[str, int]]:
    """Azurite's Blob service, in memory on a free port: (its account URL, its pid).

    From ``node_modules`` (``make test`` installs it there).
    """
    from asyncstore.testing.emulators import azurite as start
    from asyncstore.testing.emulators import find_azurite

    with start(find_azurite(REPO)) as server:
        yield server.url, server.pid
