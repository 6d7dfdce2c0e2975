"""ContentStore benchmark on the local backend: push, dedupe, and verified vs unverified pulls.

Usage::

    python bench/cas.py [--small-count 100] [--small-mib 4] [--big-mib 1024]
                        [--concurrency 8] [--backend asyncio|trio]
                        [--out bench/results/cas.json] [--work bench/.work]

Two workloads go through `asyncstore.cas.ContentStore` over a `file://` store
in ``<work>/cas-store`` (emptied first):

* ``--small-count`` distinct blobs of ``--small-mib`` MiB (in memory), pushed
  ``--concurrency`` at a time, pushed again (every one a dedupe skip), then
  pulled three ways;
* one blob of ``--big-mib`` MiB from a file (generated once, like
  ``bench/local.py``'s source file): pushed with `put(path)` (streamed to a
  staging key, then copied to its blob key), pushed through a resumable
  upload session in 64 MiB appends (finish without re-reading), pushed again
  twice (with and without the digest known), then pulled.

The three pulls show what verification costs: ``raw read`` streams the blob's
bytes straight from the backend (no hashing at all); ``store.get(verify=False)``
goes through the core's engine, which hashes in any case but does not compare;
``cas.get`` is the verified read (the core's hash compared with the digest in
the key). MB/s is 10**6 bytes per second of wall time; CPU is user + sys of the
process over the case. The page cache is not dropped (that needs root), so reads
come from RAM: the figures are CPU-bound, not disk-bound.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
from _harness import (
    DEFAULT_WORK,
    RESULTS,
    MiB,
    cpu_seconds,
    file_sha256,
    machine_info,
    make_source,
    write_json,
)

from asyncstore import Store
from asyncstore.backends.local import LocalBackend
from asyncstore.cas import ContentStore, Digest

DEFAULT_OUT = RESULTS / "cas.json"
APPEND = 64 * MiB


def small_blob(base: bytes, index: int) -> bytes:
    return index.to_bytes(8, "big") + base[8:]


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def case(
        self, name: str, nbytes: int, run: Callable[[], Awaitable[Any]], **extra: Any
    ) -> Any:
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        result = await run()
        seconds = time.perf_counter() - t0
        row = {
            "case": name,
            "bytes": nbytes,
            "seconds": round(seconds, 4),
            "mb_per_s": round(nbytes / seconds / 1e6, 1),
            "cpu_seconds": round(cpu_seconds() - cpu0, 3),
            **extra,
        }
        self.rows.append(row)
        print(
            f"  {name:<44} {row['mb_per_s']:>9.1f} MB/s  {seconds:>7.2f} s  "
            f"cpu {row['cpu_seconds']:>6.2f} s",
            flush=True,
        )
        return result


async def in_parallel(count: int, limit: int, job: Callable[[int], Awaitable[None]]) -> None:
    limiter = anyio.CapacityLimiter(limit)

    async def one(index: int) -> None:
        async with limiter:
            await job(index)

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(one, index)


async def raw_read(store: Store, key: str) -> int:
    """Stream an object straight from the backend: no engine, no hashing."""
    total = 0
    async with await store.backend.read(key) as body:
        async for chunk in body:
            total += len(chunk)
    return total


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    work = pathlib.Path(args.work)
    root = work / "cas-store"
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))
    big_path = await anyio.to_thread.run_sync(make_source, work, args.big_mib)
    rec = Recorder()
    base = os.urandom(args.small_mib * MiB)
    small_total = args.small_count * len(base)

    async with Store(LocalBackend(root)) as store:
        cas = ContentStore(store)
        digests: list[Digest] = [Digest("sha256:" + "0" * 64)] * args.small_count

        print(f"{args.small_count} blobs of {args.small_mib} MiB, {args.concurrency} at a time")

        async def push(index: int) -> None:
            digests[index] = (await cas.put(small_blob(base, index))).digest

        await rec.case(
            f"push {args.small_count} x {args.small_mib} MiB",
            small_total,
            lambda: in_parallel(args.small_count, args.concurrency, push),
        )
        before = cas.statistics()
        await rec.case(
            "push again (dedupe)",
            small_total,
            lambda: in_parallel(args.small_count, args.concurrency, push),
        )
        skips = cas.statistics().blobs_deduplicated - before.blobs_deduplicated
        rec.rows[-1]["dedupe_skips"] = skips

        async def pull_raw(index: int) -> None:
            await raw_read(store, cas.blob_key(digests[index]))

        async def pull_engine(index: int) -> None:
            await store.get(cas.blob_key(digests[index]), verify=False)

        async def pull_verified(index: int) -> None:
            await cas.get(digests[index])

        for name, job in (
            ("pull: raw read (no hash)", pull_raw),
            ("pull: store.get(verify=False)", pull_engine),
            ("pull: cas.get (verified)", pull_verified),
        ):
            await rec.case(
                name,
                small_total,
                functools.partial(in_parallel, args.small_count, args.concurrency, job),
            )

        big = args.big_mib * MiB
        print(f"one blob of {args.big_mib} MiB from {big_path.name}")
        desc = await rec.case(f"push {args.big_mib} MiB: put(path)", big, lambda: cas.put(big_path))
        await cas.delete(desc.digest)

        async def session_push() -> Any:
            sid = await cas.start()
            offset = 0
            async with await anyio.open_file(big_path, "rb") as file:
                while chunk := await file.read(APPEND):
                    offset = await cas.append(sid, offset, chunk)
            return await cas.finish(sid, desc.digest)

        rereads = cas.statistics().finishes_reread
        await rec.case(f"push {args.big_mib} MiB: session, 64 MiB appends", big, session_push)
        rec.rows[-1]["finish_reread"] = cas.statistics().finishes_reread - rereads
        before = cas.statistics()
        await rec.case("push again, digest unknown (staged)", big, lambda: cas.put(big_path))
        await rec.case(
            "push again, expected= (hash only)",
            big,
            lambda: cas.put(big_path, expected=desc.digest),
        )
        rec.rows[-1]["dedupe_skips"] = (
            cas.statistics().blobs_deduplicated - before.blobs_deduplicated
        )

        key = cas.blob_key(desc.digest)
        await rec.case(
            f"pull {args.big_mib} MiB: raw read (no hash)", big, lambda: raw_read(store, key)
        )
        await rec.case(
            f"pull {args.big_mib} MiB: store.get(verify=False)",
            big,
            lambda: store.get(key, verify=False),
        )
        await rec.case(
            f"pull {args.big_mib} MiB: cas.get (verified)", big, lambda: cas.get(desc.digest)
        )
        out_file = work / "cas-pulled.bin"
        await rec.case(
            f"pull {args.big_mib} MiB: cas.fetch_to_file",
            big,
            lambda: cas.fetch_to_file(desc.digest, out_file),
        )
        await anyio.to_thread.run_sync(out_file.unlink)

        stats = cas.statistics()._asdict()

    await rec.case(
        f"hashlib.sha256 of {args.big_mib} MiB (the hash limit)",
        big,
        lambda: anyio.to_thread.run_sync(file_sha256, big_path),
    )
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))

    rows = {row["case"]: row for row in rec.rows}

    def overhead(verified: str, raw: str) -> float:
        return round(float(rows[verified]["seconds"]) / float(rows[raw]["seconds"]) - 1, 3)

    return {
        "cases": rec.rows,
        "verification_overhead_vs_raw": {
            "small": overhead("pull: cas.get (verified)", "pull: raw read (no hash)"),
            "big": overhead(
                f"pull {args.big_mib} MiB: cas.get (verified)",
                f"pull {args.big_mib} MiB: raw read (no hash)",
            ),
        },
        "verification_overhead_vs_engine": {
            "small": overhead("pull: cas.get (verified)", "pull: store.get(verify=False)"),
            "big": overhead(
                f"pull {args.big_mib} MiB: cas.get (verified)",
                f"pull {args.big_mib} MiB: store.get(verify=False)",
            ),
        },
        "content_store_statistics": stats,
        "settings": {
            "small_count": args.small_count,
            "small_mib": args.small_mib,
            "big_mib": args.big_mib,
            "concurrency": args.concurrency,
            "event_loop": args.backend,
            "chunk_size_mib": 8,
            "max_concurrency": 8,
        },
        "machine": machine_info(
            "asyncstore",
            "anyio",
            page_cache="not dropped (needs root): reads come from RAM",
            load_average_at_start=load_at_start,
            load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-count", type=int, default=100)
    parser.add_argument("--small-mib", type=int, default=4)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--work", default=str(DEFAULT_WORK))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    result = anyio.run(bench, args, backend=args.backend)
    print()
    print("verification overhead vs a raw read:  ", result["verification_overhead_vs_raw"])
    print("verification overhead vs the engine:  ", result["verification_overhead_vs_engine"])
    print("content store statistics:", result["content_store_statistics"])
    write_json(pathlib.Path(args.out), result)


if __name__ == "__main__":
    main()
