"""Soak benchmark: 64 concurrent tasks of mixed puts, gets, lists and deletes, with a memory bound.

Usage::

    python bench/soak.py [--ops-per-task 24] [--tasks 64] [--max-size-mib 32]
                         [--cases memory:asyncio,s3:trio,...] [--margin-mib 256]
                         [--out bench/results/soak.json]

The workload is ``asyncstore.testing.soak`` (the one ``tests/test_soak.py`` runs
smaller): ``--tasks`` tasks at once, each doing ``--ops-per-task`` operations
(40% puts, 25% gets, 10% lists, 15% deletes, 5% each puts and gets of keys
every task writes), of sizes from 0 B to ``--max-size-mib`` (70% up to
64 KiB, 25% up to 4 MiB, 5% larger), every body streamed and hashed; then every
object a task reported written is read back with the right sha256, every
delete is checked to have taken effect and the listing is checked to hold
exactly the surviving keys. A failed check fails the case, and so does an upload the
case left pending (the backend's ``pending_uploads``, where it can list them).

Backends: ``memory``, ``local`` (a folder under ``--work``), ``s3`` (moto's
server), ``gcs`` (gcp-storage-emulator, in memory, 4
connections: it serves one request at a time) and ``azure`` (Azurite, in
memory, from ``./node_modules``), each under ``asyncio`` and ``trio``. The
servers start once, in their own processes; every case runs in its own child
process (the script re-invokes itself with ``--case``), so its peak RSS is its
own and not the server's.

The memory bound. The Store documents a peak of about ``chunk_size x
(max_concurrency + 2)`` per transfer, and each task runs one transfer at a
time, so a case's body buffers stay under ``formula = tasks x chunk_size x
(max_concurrency + 2)``. The check is::

    peak RSS <= formula + margin (+ held, for memory://)

where ``margin`` (``--margin-mib``, default 256 MiB) is fixed: the interpreter
and the SDKs it imports (the ``baseline`` column: RSS before the workload),
the tasks' 256 KiB generator blocks and allocator slack. ``held`` is what a
memory:// store keeps in the process: the most bytes its objects and open
uploads held at once, counted after every write. The part sizes: 5 MiB with 2
in flight for S3 (its minimum part), 2 MiB with 3 in flight elsewhere
(``--chunk-mib`` / ``--max-concurrency`` override both). A case over its bound
is reported FAIL and the script exits 1. Throughput (ops/s, MB/s of bodies
written + read) is reported, never checked.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from _harness import (
    RESULTS,
    CaseFailed,
    MiB,
    azurite,
    cpu_seconds,
    emit_result,
    fmt,
    gcs_emulator,
    machine_info,
    moto_server,
    parse_cases,
    peak_rss_mib,
    print_table,
    run_child,
    script_parser,
    write_json,
)

DEFAULT_OUT = RESULTS / "soak.json"
BACKENDS = ("memory", "local", "s3", "gcs", "azure")
LOOPS = ("asyncio", "trio")
CASES = tuple(f"{backend}:{loop}" for backend in BACKENDS for loop in LOOPS)
#: (chunk MiB, parts / ranges in flight) per backend: S3's minimum part is 5 MiB.
SETTINGS = {"s3": (5, 2)}
DEFAULT_SETTINGS = (2, 3)
BUCKET = "asyncstore-soak"
AZURITE_ACCOUNT = "devstoreaccount1"
GCS_CONNECTIONS = 4  # the emulator serves one request at a time, with a backlog of 5


# -- the case (run in a child process) ------------------------------------------------------------


def _counting_memory_backend() -> Any:
    """A MemoryBackend that records the most bytes it held at once (objects + open uploads)."""
    from asyncstore.backends.memory import MemoryBackend

    class CountingMemoryBackend(MemoryBackend):
        held_peak = 0

        def _note(self) -> None:
            held = sum(obj.info.size for obj in self._objects.values())
            held += sum(len(p) for up in self._uploads.values() for p in up.parts.values())
            self.held_peak = max(self.held_peak, held)

        async def put(self, *args: Any, **kwargs: Any) -> Any:
            result = await super().put(*args, **kwargs)
            self._note()
            return result

        async def upload_part(self, *args: Any, **kwargs: Any) -> Any:
            result = await super().upload_part(*args, **kwargs)
            self._note()
            return result

        async def complete_upload(self, *args: Any, **kwargs: Any) -> Any:
            result = await super().complete_upload(*args, **kwargs)
            self._note()
            return result

    return CountingMemoryBackend()


def make_backend(backend: str, args: argparse.Namespace) -> Any:
    """The case's backend, from the parent's server addresses (``--endpoint``, ``--where``)."""
    if backend == "memory":
        return _counting_memory_backend()
    if backend == "local":
        from asyncstore.backends.local import LocalBackend

        return LocalBackend(args.where)
    if backend == "s3":
        from asyncstore.backends.s3 import S3Backend

        return S3Backend(BUCKET, args.where, endpoint=args.endpoint)
    if backend == "gcs":
        from asyncstore.backends.gcs import GCSBackend

        return GCSBackend(
            BUCKET, args.where, api_root=args.endpoint, max_connections=GCS_CONNECTIONS
        )
    from asyncstore.backends.azure import AzureBackend
    from asyncstore.backends.azure._options import AZURITE_KEY

    return AzureBackend(args.where, account_url=args.endpoint, account_key=AZURITE_KEY)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the workload on one backend under one event loop; return its figures."""
    import anyio

    from asyncstore import ObjectInfo, Store, UploadNotFoundError
    from asyncstore.testing.soak import soak

    backend_name, loop = name.split(":")
    chunk_mib, concurrency = settings(backend_name, args)
    backend = make_backend(backend_name, args)
    holder: dict[str, Any] = {}

    async def main() -> None:
        async with Store(backend, chunk_size=chunk_mib * MiB, max_concurrency=concurrency) as store:
            holder["baseline"] = peak_rss_mib()
            cpu = cpu_seconds()
            holder["report"] = await soak(
                store,
                "soak",
                seed=args.seed,
                tasks=args.tasks,
                ops_per_task=args.ops_per_task,
                max_size=args.max_size_mib * MiB,
                # Azure: of two staged uploads of one key, the first to commit wins.
                lost_write_errors=(UploadNotFoundError,) if backend_name == "azure" else (),
                # The GCS emulator ignores ifGenerationMatch on reads (see tests/test_soak.py).
                shared_reads=backend_name != "gcs",
            )
            holder["cpu"] = cpu_seconds() - cpu
            # What the case left behind, then clean-up, through the store itself.
            try:
                pending = await backend.pending_uploads("")
            except NotImplementedError:
                pending = []
            for key, upload_id in pending:
                await store.abort_upload(key, upload_id)
            holder["incomplete_uploads"] = len(pending)
            await store.delete_many(
                [item.key async for item in store.list("") if isinstance(item, ObjectInfo)]
            )

    anyio.run(main, backend=loop)
    report = holder["report"]
    moved = report.bytes_written + report.bytes_read
    figures = report.as_dict()
    figures["ops_by_kind"] = figures.pop("ops")
    return {
        **figures,
        "incomplete_uploads": holder["incomplete_uploads"],
        "case": name,
        "backend": backend_name,
        "loop": loop,
        "tasks": report.tasks,
        "chunk_mib": chunk_mib,
        "max_concurrency": concurrency,
        "ops": report.total_ops,
        "ops_per_s": report.total_ops / report.seconds,
        "mb_per_s": moved / report.seconds / 1e6,
        "bytes_moved": moved,
        "cpu_seconds": holder["cpu"],
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": holder["baseline"],
        "held_mib": getattr(backend, "held_peak", 0) / MiB,
    }


def settings(backend: str, args: argparse.Namespace) -> tuple[int, int]:
    chunk, concurrency = SETTINGS.get(backend, DEFAULT_SETTINGS)
    return args.chunk_mib or chunk, args.max_concurrency or concurrency


# -- the parent: servers, one child per case, the bound, the report --------------------------------


class Servers:
    """The servers the chosen cases need, started once; where each case writes.

    Each case cleans up after itself through the store it soaked (and counts the uploads it
    left pending there); a folder, an Azure container, is made and removed here.
    """

    def __init__(self, stack: ExitStack, backends: set[str], work: pathlib.Path) -> None:
        self.work = work
        self.s3: str | None = None
        self.gcs: str | None = None
        self.azure: str | None = None
        if "s3" in backends:
            import boto3

            self.s3, _ = stack.enter_context(moto_server())
            boto3.client("s3", endpoint_url=self.s3, region_name="us-east-1").create_bucket(
                Bucket=BUCKET
            )
        if "gcs" in backends:
            self.gcs, _ = stack.enter_context(gcs_emulator(BUCKET))
        if "azure" in backends:
            self.azure, _ = stack.enter_context(azurite())

    @contextmanager
    def place(self, backend: str) -> Iterator[list[str]]:
        """The case's arguments (endpoint, where), then clean-up."""
        name = f"soak-{uuid.uuid4().hex[:8]}"
        if backend == "memory":
            yield []
        elif backend == "local":
            folder = self.work / name
            try:
                yield ["--where", str(folder)]
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        elif backend in ("s3", "gcs"):
            yield ["--endpoint", str(getattr(self, backend)), "--where", name]
        else:
            from azure.storage.blob import BlobServiceClient

            from asyncstore.backends.azure._options import AZURITE_KEY

            assert self.azure is not None
            service = BlobServiceClient(
                self.azure, credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
            )
            service.create_container(name)
            try:
                yield ["--endpoint", self.azure, "--where", name]
            finally:
                service.delete_container(name)
                service.close()


def child(name: str, args: argparse.Namespace, servers: Servers) -> dict[str, Any]:
    """Run case ``name`` in a fresh interpreter; its figures, or its failure."""
    backend = name.split(":")[0]
    with servers.place(backend) as where:
        options = [
            *where,
            *("--tasks", str(args.tasks), "--ops-per-task", str(args.ops_per_task)),
            *("--max-size-mib", str(args.max_size_mib), "--seed", str(args.seed)),
            *("--chunk-mib", str(args.chunk_mib), "--max-concurrency", str(args.max_concurrency)),
        ]
        try:
            return run_child(__file__, name, options)
        except CaseFailed as error:
            return {"case": name, "failed": str(error)}


def check_bound(row: dict[str, Any], margin_mib: int) -> None:
    """Add the formula, the bound and the verdict to a case's row."""
    if "failed" in row:
        row["ok"] = False
        return
    formula = row["tasks"] * row["chunk_mib"] * (row["max_concurrency"] + 2)
    row["formula_mib"] = formula
    row["margin_mib"] = margin_mib
    row["bound_mib"] = formula + margin_mib + row["held_mib"]
    row["within_bound"] = row["peak_rss_mib"] <= row["bound_mib"]
    row["ok"] = row["within_bound"] and not row.get("incomplete_uploads")


def print_report(
    rows: list[dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]
) -> None:
    """A rich table when rich is installed, else plain columns."""
    headers = (
        "case",
        "chunk x (conc+1)",
        "ops",
        "ops/s",
        "MB/s",
        "peak RSS MiB",
        "baseline MiB",
        "held MiB",
        "formula MiB",
        "bound MiB",
        "result",
    )
    lines = []
    for row in rows:
        if "failed" in row:
            lines.append((row["case"], *["-"] * 9, f"FAIL: {row['failed']}"))
            continue
        verdict = "pass" if row["ok"] else "FAIL"
        if row.get("incomplete_uploads"):
            verdict += f" ({row['incomplete_uploads']} uploads left)"
        lines.append(
            (
                row["case"],
                f"{row['chunk_mib']} MiB x {row['max_concurrency'] + 1}",
                str(row["ops"]),
                fmt(row["ops_per_s"], ",.0f"),
                fmt(row["mb_per_s"], ",.0f"),
                fmt(row["peak_rss_mib"], ",.0f"),
                fmt(row["baseline_rss_mib"], ",.0f"),
                fmt(row["held_mib"] or None, ",.0f"),
                fmt(row["formula_mib"], ",.0f"),
                fmt(row["bound_mib"], ",.0f"),
                verdict,
            )
        )
    title = (
        f"asyncstore soak: {args.tasks} tasks x {args.ops_per_task} ops, objects up to "
        f"{args.max_size_mib} MiB; {machine['cpu_count']} CPUs, Python {machine['python']}"
    )
    note = (
        f"bound = tasks x chunk x (max_concurrency + 2) + {args.margin_mib} MiB margin "
        "(+ held: the bytes a memory:// store keeps in the process)"
    )
    print_table(title, headers, lines, left=("case", "result"), notes=[note], rich=True, width=140)


def main() -> int:
    """Parse the arguments; run one case (``--case``) or the whole benchmark."""
    parser = script_parser(__doc__, CASES, DEFAULT_OUT)
    parser.add_argument("--tasks", type=int, default=64, help="concurrent tasks (64)")
    parser.add_argument("--ops-per-task", type=int, default=24, help="operations per task (24)")
    parser.add_argument("--max-size-mib", type=int, default=32, help="largest object (32)")
    parser.add_argument("--seed", type=int, default=1, help="the workload's seed (1)")
    parser.add_argument("--chunk-mib", type=int, default=0, help="part size (per backend)")
    parser.add_argument("--max-concurrency", type=int, default=0, help="parts in flight")
    parser.add_argument("--margin-mib", type=int, default=256, help="fixed margin (256)")
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--where", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        emit_result(run_case(args.case, args))
        return 0

    cases = parse_cases(parser, args.cases, CASES)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with ExitStack() as stack:
        servers = Servers(stack, {name.split(":")[0] for name in cases}, work)
        for name in cases:
            print(f"{name} ...", file=sys.stderr)
            row = child(name, args, servers)
            check_bound(row, args.margin_mib)
            rows.append(row)
    machine = machine_info("asyncstore", "anyio", "trio")
    print_report(rows, args, machine)
    write_json(args.out, [{**row, **machine} for row in rows])
    failed = [row["case"] for row in rows if not row["ok"]]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
