"""``digest`` and ``verify``: sha256 of files and objects, and two trees compared by it.

An object's digest is computed from its bytes as read back (parallel ranged
reads, hashed in worker threads) and checked against the sha256 recorded at
upload, so ``digest`` and ``verify`` prove what is stored, not what was
meant to be. ``verify --recorded`` trusts the recorded digests instead
(objects without one are still read).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from .. import StoreError
from .._stream._tasks import task_group
from ._digest import sha256_file, sha256_object
from ._locations import Local, Location, Remote, Stores, has_glob
from ._parser import UsageError
from ._transfer import describe_error
from ._tree import Item, local_tree, store_tree
from ._ui import UI

__all__ = ["digest", "verify"]


async def _each(items: list[Any], jobs: int, job: Callable[[Any], Awaitable[None]]) -> None:
    slots = anyio.Semaphore(jobs)

    async def run(item: Any) -> None:
        async with slots:
            await job(item)

    async with task_group() as tg:
        for item in items:
            tg.start_soon(run, item)


# --------------------------------------------------------------------------- digest


async def digest(args: argparse.Namespace, ui: UI) -> int:
    """Print ``sha256:<hex>  NAME`` for files and objects (``-r``: every one of trees)."""
    locations = await args.resolver.resolve_all(args.locations)
    # (name, how to compute (sha256, recorded)) in output order
    targets: list[tuple[str, Callable[[], Awaitable[tuple[str, str | None]]], bool]] = []
    async with Stores() as stores:
        for text, location in zip(args.locations, locations, strict=False):
            if isinstance(location, Local):
                is_dir = await anyio.to_thread.run_sync(os.path.isdir, location.path)
                if is_dir and not args.recursive:
                    raise UsageError(f"digest: {text!r} is a folder: use -r for every file in it")
                if is_dir:
                    files, problems = await local_tree(location.path, args.filter)
                    if problems:
                        raise OSError(problems[0])
                    for rel in sorted(files):
                        targets.append((files[rel].where, _local(files[rel].where), False))
                else:
                    targets.append((location.path, _local(location.path), False))
            elif isinstance(location, Remote):
                store = await stores.open(location.ref, write=False)
                if args.recursive or has_glob(location.key):
                    items = await store_tree(store, location.key, args.filter)
                    for rel in sorted(items):
                        key = items[rel].where
                        targets.append((location.show(key), _remote(stores, location, key), True))
                else:
                    target = _remote(stores, location, location.key)
                    targets.append((location.show(), target, True))
            else:
                raise UsageError("digest: '-' is not supported; give paths or keys")
        results: dict[int, tuple[str, str | None] | BaseException] = {}

        async def compute(index: int) -> None:
            try:
                results[index] = await targets[index][1]()
            except (StoreError, OSError) as exc:
                results[index] = exc

        await _each(list(range(len(targets))), 8, compute)
    failed = 0
    for index, (name, _, remote) in enumerate(targets):
        result = results[index]
        if isinstance(result, BaseException):
            failed += 1
            await ui.error(describe_error(result))
            continue
        actual, recorded = result
        await ui.result(
            f"{actual}  {name}",
            {"type": "digest", "url": name, "sha256": actual, "recorded": recorded},
        )
        if recorded is None and remote:
            await ui.note(
                f"note: no sha256 was recorded for {name} at upload; nothing to verify against"
            )
    return 1 if failed else 0


def _local(path: str) -> Callable[[], Awaitable[tuple[str, str | None]]]:
    async def run() -> tuple[str, str | None]:
        return await sha256_file(path), None

    return run


def _remote(
    stores: Stores, location: Remote, key: str
) -> Callable[[], Awaitable[tuple[str, str | None]]]:
    async def run() -> tuple[str, str | None]:
        store = await stores.open(location.ref, write=False)
        return await sha256_object(store, key)

    return run


# --------------------------------------------------------------------------- verify


async def _tree(location: Location, stores: Stores, args: argparse.Namespace) -> dict[str, Item]:
    if isinstance(location, Local):
        if not await anyio.to_thread.run_sync(os.path.isdir, location.path):
            raise FileNotFoundError(2, "No such folder", location.path)
        files, problems = await local_tree(location.path, args.filter)
        if problems:
            raise OSError(problems[0])
        return files
    if isinstance(location, Remote):
        store = await stores.open(location.ref, write=False)
        return await store_tree(store, location.key, args.filter)
    raise UsageError("verify: '-' cannot be verified; give folders or prefixes")


async def _sha256(location: Location, stores: Stores, item: Item, recorded: bool) -> str:
    if isinstance(location, Local):
        return await sha256_file(item.where)
    assert isinstance(location, Remote)
    store = await stores.open(location.ref, write=False)
    if recorded:
        sha = item.sha256 or (await store.head(item.where)).sha256
        if sha is not None:
            return sha
    actual, _ = await sha256_object(store, item.where)
    return actual


async def verify(args: argparse.Namespace, ui: UI) -> int:
    """Compare two trees file by file, by sha256; exit 1 if anything differs or is missing."""
    src, dst = await args.resolver.resolve_all([args.src, args.dst])
    async with Stores() as stores:
        trees: dict[str, dict[str, Item]] = {}

        async def load(name: str, location: Location) -> None:
            trees[name] = await _tree(location, stores, args)

        async with task_group() as tg:
            tg.start_soon(load, "src", src)
            tg.start_soon(load, "dst", dst)
        src_items, dst_items = trees["src"], trees["dst"]
        rows: dict[str, dict[str, Any]] = {}

        async def check(rel: str) -> None:
            a, b = src_items.get(rel), dst_items.get(rel)
            row: dict[str, Any] = {
                "type": "verify",
                "path": rel,
                "status": "ok",
                "src_sha256": None,
                "dst_sha256": None,
                "error": None,
            }
            rows[rel] = row
            if a is None or b is None:
                row["status"] = "extra" if a is None else "missing"
                return
            try:
                row["src_sha256"] = await _sha256(src, stores, a, args.recorded)
                row["dst_sha256"] = await _sha256(dst, stores, b, args.recorded)
            except (StoreError, OSError) as exc:
                row["status"] = "error"
                row["error"] = describe_error(exc)
                return
            if a.size != b.size or row["src_sha256"] != row["dst_sha256"]:
                row["status"] = "differs"

        await _each(sorted(set(src_items) | set(dst_items)), args.jobs, check)
    counts = {"ok": 0, "differs": 0, "missing": 0, "extra": 0, "error": 0}
    for rel in sorted(rows):
        row = rows[rel]
        counts[row["status"]] += 1
        status = row["status"]
        if status == "error":
            await ui.error(row["error"])
        if status == "ok" and ui.quiet:
            continue
        detail = {
            "ok": row["src_sha256"],
            "differs": f"{row['src_sha256']} != {row['dst_sha256']}",
            "missing": f"not in {dst.show()}",
            "extra": f"not in {src.show()}",
            "error": row["error"],
        }[status]
        await ui.result(f"{status.upper():<8} {rel}  {detail}", row)
    problems = sum(n for name, n in counts.items() if name != "ok")
    if ui.json:
        await ui.record({"type": "summary", "command": "verify", **counts})
    else:
        await ui.note(
            f"verify: {counts['ok']} identical, {counts['differs']} differ, "
            f"{counts['missing']} missing, {counts['extra']} extra, {counts['error']} unreadable"
        )
    return 1 if problems else 0
