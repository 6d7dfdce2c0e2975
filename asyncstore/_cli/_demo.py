"""``asyncstore demo``: a round trip through the local file-system store, verified.

1. Generate sample files under ``DIR/source`` if that folder is missing
   (small text and binary files in folders, a few of 1-20 MiB, one of 256 MiB).
2. Clear ``DIR/store`` and ``DIR/restored``; open ``file://DIR/store`` and
   upload every file under the key prefix ``demo/``, with progress bars.
3. List the store.
4. Download every object to ``DIR/restored``, then hash each source and
   restored file independently and compare both with the sha256 every
   TransferInfo reported (and with the listing's).
5. Print a table of the transfers, with totals. Any mismatch exits 1.

Transfers run a few files at a time in one task group; each transfer uses
the Store's default ``chunk_size`` and ``max_concurrency``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.to_thread
from rich import box
from rich.markup import escape
from rich.table import Table

from .. import ObjectInfo, Store, TransferInfo
from .._stream._tasks import task_group
from ._digest import sha256_file
from ._locations import StoreRef, Stores, shown_url
from ._samples import generate_samples, list_files, sample_plan
from ._ui import UI, human_bytes

__all__ = ["KEY_PREFIX", "demo"]

#: Where the demo puts its objects in the store.
KEY_PREFIX = "demo/"
#: Files transferred at once (each with the Store's own parts in flight).
FILES_AT_ONCE = 4


@dataclasses.dataclass(slots=True)
class _Entry:
    """One sample file and everything learnt about it on the way round."""

    relative: str
    size: int
    upload: TransferInfo | None = None
    download: TransferInfo | None = None
    listed: ObjectInfo | None = None
    source_sha256: str | None = None
    restored_sha256: str | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.relative


def _local(root: str, relative: str) -> str:
    return os.path.join(root, *relative.split("/"))


def _clear(*folders: str) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for folder in folders:
        os.makedirs(folder, exist_ok=True)


async def _each(
    entries: Sequence[_Entry], limit: int, job: Callable[[_Entry], Awaitable[None]]
) -> None:
    """Run ``job`` for every entry, at most ``limit`` at once, largest first."""
    limiter = anyio.CapacityLimiter(limit)

    async def run(entry: _Entry) -> None:
        async with limiter:
            await job(entry)

    async with task_group() as tg:
        for entry in sorted(entries, key=lambda e: -e.size):
            tg.start_soon(run, entry)


async def _generate(source: str, big_mib: int, ui: UI) -> None:
    total = sum(sample.size for sample in sample_plan(big_mib))
    await ui.note(f"generating sample files in {source} ({human_bytes(total)}) ...")
    started = time.perf_counter()
    async with ui.bars(overall=total, label="generate") as bars:
        await generate_samples(source, big_mib, bars.advance_overall)
    await ui.note(f"generated in {time.perf_counter() - started:.2f} s")


async def _upload_all(store: Store, source: str, entries: Sequence[_Entry], ui: UI) -> float:
    started = time.perf_counter()
    async with ui.bars(overall=sum(e.size for e in entries), label="upload") as bars:

        async def upload(entry: _Entry) -> None:
            entry.upload = await store.upload_file(
                _local(source, entry.relative),
                entry.key,
                progress=bars.track(entry.key, entry.size),
            )

        await _each(entries, FILES_AT_ONCE, upload)
    return time.perf_counter() - started


async def _download_all(store: Store, restored: str, entries: Sequence[_Entry], ui: UI) -> float:
    started = time.perf_counter()
    async with ui.bars(overall=sum(e.size for e in entries), label="download") as bars:

        async def download(entry: _Entry) -> None:
            entry.download = await store.download_file(
                entry.key,
                _local(restored, entry.relative),
                progress=bars.track(entry.key, entry.size),
            )

        await _each(entries, FILES_AT_ONCE, download)
    return time.perf_counter() - started


async def _list(store: Store, entries: Sequence[_Entry], ui: UI) -> None:
    by_key = {entry.key: entry for entry in entries}
    listed: list[ObjectInfo] = []
    async for item in store.list(KEY_PREFIX):
        if isinstance(item, ObjectInfo):  # always, without a delimiter
            listed.append(item)
    table = Table(title=f"store listing of {KEY_PREFIX}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("size", justify="right")
    table.add_column("last modified (UTC)")
    table.add_column("key", overflow="fold")
    with_sha = any(item.sha256 for item in listed)  # some backends list without metadata
    if with_sha:
        table.add_column("sha256 (recorded)", no_wrap=True)
    for item in listed:
        modified = item.last_modified.strftime("%Y-%m-%d %H:%M:%S") if item.last_modified else "-"
        row = [f"{item.size:,}", modified, escape(item.key)]
        if with_sha:
            row.append(item.sha256.removeprefix("sha256:")[:12] if item.sha256 else "-")
        table.add_row(*row)
        entry = by_key.get(item.key)
        if entry is None:
            await ui.note(f"note: unexpected object in the store: {item.key}")
        else:
            entry.listed = item
    await ui.emit(table)
    for entry in entries:
        if entry.listed is None:
            entry.problems.append("missing from the listing")


async def _verify(source: str, restored: str, entries: Sequence[_Entry]) -> None:
    async def check(entry: _Entry) -> None:
        entry.source_sha256 = await sha256_file(_local(source, entry.relative))
        entry.restored_sha256 = await sha256_file(_local(restored, entry.relative))
        expected = entry.source_sha256
        reported = {
            "restored file": entry.restored_sha256,
            "upload TransferInfo": entry.upload.sha256 if entry.upload else None,
            "download TransferInfo": entry.download.sha256 if entry.download else None,
        }
        if entry.listed is not None and entry.listed.sha256 is not None:
            reported["listing"] = entry.listed.sha256
        for what, value in reported.items():
            if value != expected:
                entry.problems.append(f"{what} has {value}, the source file {expected}")
        for info in (entry.upload, entry.download):
            if info is not None and info.bytes_transferred != entry.size:
                entry.problems.append(
                    f"{info.bytes_transferred} bytes transferred, the file has {entry.size}"
                )

    await _each(entries, os.cpu_count() or 2, check)


async def _report(entries: Sequence[_Entry], up_wall: float, down_wall: float, ui: UI) -> None:
    table = Table(title="transfers", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("dir", "key", "bytes", "MB/s", "seconds", "parts", "conc.", "sha256", "ok"):
        left = name in ("dir", "key", "sha256")
        table.add_column(name, justify="left" if left else "right", overflow="fold")
    for direction, wall in (("up", up_wall), ("down", down_wall)):
        total = 0
        for entry in sorted(entries, key=lambda e: e.key):
            info = entry.upload if direction == "up" else entry.download
            if info is None:
                continue
            total += info.bytes_transferred
            table.add_row(
                direction,
                escape(entry.key),
                f"{info.bytes_transferred:,}",
                f"{info.mb_per_s:,.1f}",
                f"{info.duration:.3f}",
                str(info.part_count),
                str(info.concurrency),
                info.sha256.removeprefix("sha256:")[:12],
                "[red]✗[/red]" if entry.problems else "[green]✓[/green]",
            )
        table.add_row(
            f"[bold]{direction}[/bold]",
            f"[bold]total: {len(entries)} files, {FILES_AT_ONCE} at a time[/bold]",
            f"[bold]{total:,}[/bold]",
            f"[bold]{total / max(wall, 1e-9) / 1e6:,.1f}[/bold]",
            f"[bold]{wall:.3f}[/bold]",
            end_section=True,
        )
    await ui.emit(table)


async def demo(args: argparse.Namespace, ui: UI) -> int:
    """Run the demo in ``args.dir``; return 0 when every file came back identical."""
    root = await anyio.to_thread.run_sync(os.path.abspath, args.dir)
    source, store_dir, restored = (
        os.path.join(root, name) for name in ("source", "store", "restored")
    )
    started = time.perf_counter()
    if not await anyio.to_thread.run_sync(os.path.isdir, source):
        await _generate(source, args.big_mib, ui)
    else:
        await ui.note(f"using the files already in {source}")
    entries = [_Entry(relative, size) for relative, size in await list_files(source)]
    await anyio.to_thread.run_sync(_clear, *([restored] if args.store else [store_dir, restored]))
    # -s/--store only: the demo never writes to $ASYNCSTORE_URL's store by accident.
    if args.store:
        ref = await anyio.to_thread.run_sync(args.resolver.default_store)
        shown = shown_url(args.store)
    else:
        shown = pathlib.Path(store_dir).as_uri()
        ref = StoreRef(shown)
    await ui.note(
        f"store: {shown}  ({len(entries)} files, {human_bytes(sum(e.size for e in entries))})"
    )
    async with Stores() as stores:
        store = await stores.open(ref, write=True)
        up_wall = await _upload_all(store, source, entries, ui)
        await _list(store, entries, ui)
        down_wall = await _download_all(store, restored, entries, ui)
    await _verify(source, restored, entries)
    await _report(entries, up_wall, down_wall, ui)
    failed = [entry for entry in entries if entry.problems]
    for entry in failed:
        for problem in entry.problems:
            await ui.error(f"demo: {entry.key}: {problem}")
    if failed:
        await ui.error(f"demo: {len(failed)} of {len(entries)} files did not round-trip intact")
        return 1
    await ui.emit(
        f"[green]all {len(entries)} files restored to {escape(restored)} byte-identical[/green] "
        f"(sha256 checked against the source, the restored file and every TransferInfo); "
        f"demo took {time.perf_counter() - started:.1f} s",
        markup=True,
    )
    return 0
