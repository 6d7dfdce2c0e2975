"""``sync SRC DST``: make DST hold what SRC holds, transferring only what differs.

SRC and DST are each a local folder or a prefix in a store (any direction:
local → store, store → local, store → store). Both trees are listed (with
the same ``--include``/``--exclude`` rules), then each file of SRC is
compared with its namesake in DST:

1. a different size, or no namesake: transfer;
2. ``--checksum``: compare sha256 digests, hashing local files and reading
   back objects that have none recorded;
3. both sides know a sha256 without reading (objects whose listing carries
   the digest recorded at upload): compare them;
4. both sides know the source file's modification time (a local file; an
   object written by ``upload_file`` whose listing carries it): equal within
   a millisecond, or transfer;
5. otherwise the store's last-modified time stands in: an object written
   after the local file last changed is up to date (local → store); a local
   file written after the object is up to date (store → local), and if it is
   older the object's recorded mtime is fetched (one HEAD) and rule 4 decides.
   Where a listing carries whole seconds (S3), a write in the same second as
   the file's last change cannot be ordered, so one HEAD fetches the recorded
   mtime and rule 4 decides;
   store → store, a destination written after the source is up to date.

``--delete`` then deletes what DST holds and SRC does not (but not what the
filters exclude), only if every transfer succeeded. Each transfer is atomic,
so a sync interrupted at any point leaves only whole files and objects, and
running it again finishes the job.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Literal

import anyio
import anyio.to_thread

from .. import NotFoundError, StoreError
from .._stream._tasks import task_group
from ._copy import summary_record, transfer_options
from ._digest import sha256_file, sha256_object
from ._globs import Filter
from ._locations import Local, Location, Remote, Stores, has_glob
from ._parser import UsageError
from ._remove import delete_keys
from ._transfer import Engine, Job, Outcome, describe_error
from ._tree import Item, as_prefix, local_path, local_tree, object_item, store_tree
from ._ui import UI, human_bytes

__all__ = ["MTIME_TOLERANCE", "differs", "sync"]

#: Modification times this close (seconds) are equal.
MTIME_TOLERANCE = 1e-3

Direction = Literal["up", "down", "across"]


def _latest(modified: float) -> float:
    """The latest moment an object with this last-modified time can have been written.

    S3 listings and HTTP ``Last-Modified`` headers carry whole seconds: the
    write happened somewhere in the second that follows.
    """
    return modified + 1.0 if modified.is_integer() else modified


def differs(src: Item, dst: Item, direction: Direction) -> bool | None:
    """Whether ``src`` must be transferred over ``dst`` (rules 1 and 3-5 of the module).

    Returns None when only the object's recorded mtime can tell: store → local,
    or local → store when the listing's whole-second last-modified time cannot
    order the write and the file's last change.
    """
    if src.size != dst.size:
        return True
    if src.sha256 is not None and dst.sha256 is not None:
        return src.sha256 != dst.sha256
    if src.mtime is not None and dst.mtime is not None:
        return abs(src.mtime - dst.mtime) > MTIME_TOLERANCE
    if direction == "up":  # the object's listing has no recorded mtime
        if dst.modified is None or src.mtime is None:
            return True
        if src.mtime <= dst.modified + MTIME_TOLERANCE:
            return False  # the object was written after the file last changed
        # Within the listing's whole second the order is unknown: one HEAD decides.
        return None if src.mtime < _latest(dst.modified) else True
    if direction == "down":
        written_after = (
            src.modified is not None
            and dst.mtime is not None
            and _latest(src.modified) <= dst.mtime + MTIME_TOLERANCE
        )
        return False if written_after else None
    return (
        src.modified is None
        or dst.modified is None
        or (dst.modified + MTIME_TOLERANCE < src.modified)
    )


class _Side:
    """One side of a sync: where it is, and how to read a digest of one of its items."""

    def __init__(self, location: Location, stores: Stores) -> None:
        self.location = location
        self.stores = stores

    def at(self, rel: str, item: Item | None = None) -> Local | Remote:
        location = self.location
        if isinstance(location, Local):
            if item is not None:
                return Local(item.where)
            return Local(local_path(location.path, rel, rel))
        if isinstance(location, Remote):
            return Remote(location.ref, item.where if item else as_prefix(location.key) + rel)
        raise AssertionError("stdio has no tree")  # pragma: no cover

    async def sha256(self, item: Item) -> str:
        if isinstance(self.location, Local):
            return await sha256_file(item.where)
        if item.sha256 is not None:
            return item.sha256
        assert isinstance(self.location, Remote)
        store = await self.stores.open(self.location.ref, write=False)
        info = await store.head(item.where)
        if info.sha256 is not None:
            return info.sha256
        actual, _ = await sha256_object(store, item.where)
        return actual

    async def head(self, item: Item) -> Item:
        assert isinstance(self.location, Remote)
        store = await self.stores.open(self.location.ref, write=False)
        return object_item(item.rel, await store.head(item.where))


async def _tree(
    location: Location, stores: Stores, filter: Filter, *, source: bool, dry_run: bool
) -> tuple[dict[str, Item], list[str]]:
    if isinstance(location, Local):
        if source and not await anyio.to_thread.run_sync(os.path.isdir, location.path):
            if await anyio.to_thread.run_sync(os.path.exists, location.path):
                raise UsageError(f"sync: {location.path!r} is a file; sync takes folders")
            raise FileNotFoundError(2, "No such folder", location.path)
        return await local_tree(location.path, filter)
    assert isinstance(location, Remote)
    if has_glob(location.key):
        raise UsageError(f"sync: {location.show()!r}: sync takes a prefix, not a glob")
    write = not source and not dry_run
    try:
        store = await stores.open(location.ref, write=write)
    except NotFoundError:
        if source:
            raise
        return {}, []  # a dry run to a file:// store that does not exist yet
    return await store_tree(store, location.key, filter), []


async def _compare(
    src_items: dict[str, Item],
    dst_items: dict[str, Item],
    src: _Side,
    dst: _Side,
    direction: Direction,
    *,
    checksum: bool,
    jobs: int,
    ui: UI,
) -> tuple[list[tuple[str, str]], int, int]:
    """``[(rel, reason)]`` to transfer, how many are up to date, how many comparisons failed."""
    todo: list[tuple[str, str]] = []
    later: list[str] = []
    for rel, item in src_items.items():
        other = dst_items.get(rel)
        if other is None:
            todo.append((rel, "new"))
            continue
        if item.size != other.size:
            todo.append((rel, "changed"))
            continue
        decision = None if checksum else differs(item, other, direction)
        if decision is None:
            later.append(rel)
        elif decision:
            todo.append((rel, "changed"))
    failed = 0
    if later:
        how = "by sha256" if checksum else "by the mtime recorded with each object"
        await ui.note(f"sync: comparing {len(later)} files {how} ...")
        slots = anyio.Semaphore(jobs)

        async def look(rel: str) -> None:
            nonlocal failed
            async with slots:
                try:
                    if checksum:
                        a, b = await src.sha256(src_items[rel]), await dst.sha256(dst_items[rel])
                        changed = a != b
                    elif direction == "up":  # the object's recorded mtime decides
                        head = await dst.head(dst_items[rel])
                        changed = differs(src_items[rel], head, "up") is not False
                    else:  # store → local: the object's recorded mtime decides
                        head = await src.head(src_items[rel])
                        changed = differs(head, dst_items[rel], "down") is not False
                except (StoreError, OSError) as exc:
                    failed += 1
                    await ui.error(describe_error(exc))
                    return
                if changed:
                    todo.append((rel, "changed"))

        async with task_group() as tg:
            for rel in later:
                tg.start_soon(look, rel)
    same = len(src_items) - len(todo) - failed
    return sorted(todo), same, failed


def _remove_files(paths: list[str], root: str) -> list[tuple[str, OSError | None]]:
    results: list[tuple[str, OSError | None]] = []
    for path in paths:
        try:
            os.remove(path)
            results.append((path, None))
        except FileNotFoundError:
            results.append((path, None))
        except OSError as exc:
            results.append((path, exc))
            continue
        parent = os.path.dirname(path)
        top = os.path.abspath(root)
        while os.path.abspath(parent).startswith(top + os.sep):
            try:
                os.rmdir(parent)  # only if it is now empty
            except OSError:
                break
            parent = os.path.dirname(parent)
    return results


async def _delete(
    ui: UI,
    stores: Stores,
    dst: Location,
    rels: list[str],
    dst_items: dict[str, Item],
    dry_run: bool,
) -> tuple[int, int]:
    """Delete DST's extra files; return (deleted, failed)."""
    if isinstance(dst, Remote):
        keys = [dst_items[rel].where for rel in rels]
        failed = await delete_keys(ui, stores, dst, keys, dry_run=dry_run)
        return (0 if dry_run else len(keys) - failed), failed
    assert isinstance(dst, Local)
    paths = [dst_items[rel].where for rel in rels]
    if dry_run:
        for path in paths:
            if not ui.quiet:
                await ui.result(
                    f"(dry run) delete {path}",
                    {
                        "type": "delete",
                        "url": path,
                        "key": None,
                        "status": "dry-run",
                        "error": None,
                    },
                )
        return 0, 0
    failed = 0
    for path, error in await anyio.to_thread.run_sync(_remove_files, paths, dst.path):
        message = describe_error(error) if error is not None else None
        if message is not None:
            failed += 1
            await ui.error(message)
        if ui.json or (message is None and not ui.quiet):
            await ui.result(
                f"deleted {path}",
                {
                    "type": "delete",
                    "url": path,
                    "key": None,
                    "status": "failed" if message else "ok",
                    "error": message,
                },
            )
    return len(paths) - failed, failed


async def sync(args: argparse.Namespace, ui: UI) -> int:
    """Make DST hold what SRC holds (see the module docstring)."""
    src_loc, dst_loc = await args.resolver.resolve_all([args.src, args.dst])
    for location in (src_loc, dst_loc):
        if not isinstance(location, (Local, Remote)):
            raise UsageError("sync: '-' cannot be synced; give folders or prefixes")
    if isinstance(src_loc, Local) and isinstance(dst_loc, Local):
        raise UsageError(
            f"sync: {args.src!r} and {args.dst!r} are both local; "
            "write keys as URLs (s3://bucket/prefix), :prefix or name:prefix"
        )
    direction: Direction = (
        "up" if isinstance(src_loc, Local) else "down" if isinstance(dst_loc, Local) else "across"
    )
    options = transfer_options(args)
    started = time.perf_counter()
    async with Stores() as stores:
        trees: dict[str, tuple[dict[str, Item], list[str]]] = {}

        async def list_side(name: str, location: Location, source: bool) -> None:
            trees[name] = await _tree(
                location, stores, args.filter, source=source, dry_run=options.dry_run
            )

        async with task_group() as tg:
            tg.start_soon(list_side, "src", src_loc, True)
            tg.start_soon(list_side, "dst", dst_loc, False)
        (src_items, src_problems), (dst_items, dst_problems) = trees["src"], trees["dst"]
        for problem in src_problems + dst_problems:
            await ui.error(problem)
        src_side, dst_side = _Side(src_loc, stores), _Side(dst_loc, stores)
        todo, same, compare_failed = await _compare(
            src_items,
            dst_items,
            src_side,
            dst_side,
            direction,
            checksum=args.checksum,
            jobs=options.jobs,
            ui=ui,
        )
        jobs: list[Job] = []
        for rel, reason in todo:
            try:  # a key that cannot be a local file name fails alone
                target = dst_side.at(rel, dst_items.get(rel))
            except StoreError as exc:
                compare_failed += 1
                await ui.error(describe_error(exc))
                continue
            source = src_side.at(rel, src_items[rel])
            jobs.append(Job(source, target, src_items[rel].size, reason=reason, label=rel))
        engine = Engine(ui, stores, options, command="sync")
        outcome = await engine.run(jobs, label="sync")
        failed = outcome.failed + compare_failed + len(src_problems) + len(dst_problems)
        deleted = 0
        extra = sorted(set(dst_items) - set(src_items)) if args.delete else []
        if extra and failed:
            await ui.error(
                f"sync: not deleting {len(extra)} files from {dst_loc.show()!r}: "
                f"{failed} files failed"
            )
        elif extra:
            deleted, delete_failed = await _delete(
                ui, stores, dst_loc, extra, dst_items, options.dry_run
            )
            failed += delete_failed
    outcome.seconds = time.perf_counter() - started
    outcome.failed = failed
    await _summary(ui, outcome, same, deleted, options.dry_run)
    return 1 if failed else 0


async def _summary(ui: UI, outcome: Outcome, same: int, deleted: int, dry_run: bool) -> None:
    if ui.json:
        await ui.record(
            summary_record("sync", outcome, skipped=same, deleted=deleted, dry_run=dry_run)
        )
        return
    if dry_run:
        return
    rate = outcome.bytes / max(outcome.seconds, 1e-9) / 1e6
    failed = f", {outcome.failed} failed" if outcome.failed else ""
    await ui.note(
        f"sync: {outcome.done} transferred ({human_bytes(outcome.bytes)}), {same} up to date, "
        f"{deleted} deleted{failed} in {outcome.seconds:.2f} s ({rate:.1f} MB/s)"
    )
