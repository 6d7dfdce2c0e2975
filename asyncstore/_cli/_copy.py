"""``cp`` and ``mv``: files, objects and trees, between the local disk, stores and stdio.

``cp SRC... DST``:

- one file or object to a file, key, or stdout (``-``); from stdin (``-``) to a key;
- a key ending in ``/`` (or a local folder) as DST receives the source's base name;
- ``-r`` copies the *contents* of each SRC tree below DST (``cp -r photos
  s3://b/backup/`` makes ``backup/<path in photos>``), as ``aws s3 cp
  --recursive`` does; ``--include``/``--exclude`` filter what is copied;
- a glob in a key (``s3://b/logs/*.gz``) copies what it matches (with ``-r``,
  also everything below the "directories" it matches), named relative to the
  glob's literal directory;
- several SRCs (or a glob) need DST to be a folder or a prefix.

``mv`` is ``cp`` that deletes each source once its copy has succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import os

import anyio.to_thread

from .. import NotFoundError
from ._globs import Filter, Glob
from ._locations import Local, Location, Remote, Stdio, Stores, has_glob
from ._parser import UsageError
from ._progress import TransferView
from ._transfer import DEFAULT_MEMORY, Engine, Job, Outcome, TransferOptions
from ._tree import Item, as_prefix, local_path, local_tree, store_tree
from ._ui import UI, human_bytes

__all__ = ["cp", "mv", "plan_copy", "summary_record", "transfer_options"]


def transfer_options(args: argparse.Namespace) -> TransferOptions:
    """The `TransferOptions` of a command's arguments."""
    metadata = dict(args.metadata) if getattr(args, "metadata", None) else None
    return TransferOptions(
        jobs=getattr(args, "jobs", 16),
        chunk_size=getattr(args, "part_size", None),
        max_concurrency=getattr(args, "concurrency", None),
        content_type=getattr(args, "content_type", None),
        metadata=metadata,
        verify=not getattr(args, "no_verify", False),
        dry_run=getattr(args, "dry_run", False),
        memory=getattr(args, "memory", None) or DEFAULT_MEMORY,
    )


def summary_record(command: str, outcome: Outcome, **extra: object) -> dict[str, object]:
    """The last ``--json`` record of a transfer command (schema: docs/cli.md)."""
    return {
        "type": "summary",
        "command": command,
        "transferred": outcome.done,
        "bytes": outcome.bytes,
        "failed": outcome.failed,
        "seconds": round(outcome.seconds, 6),
        **extra,
    }


def _is_dir_like(path: str) -> bool:
    return path.endswith(os.sep) or path.endswith("/") or os.path.isdir(path)


def _basename(text: str) -> str:
    return text.rstrip("/").rsplit("/", 1)[-1]


async def _single_target(dst: Location, name: str, many: bool) -> Location:
    """Where one file or object called ``name`` goes."""
    if isinstance(dst, Local):
        if many or await anyio.to_thread.run_sync(_is_dir_like, dst.path):
            return Local(os.path.join(dst.path, name))
        return dst
    if isinstance(dst, Remote):
        if many or dst.key == "" or dst.key.endswith("/"):
            return Remote(dst.ref, as_prefix(dst.key) + name)
        return dst
    return dst


def _tree_target(dst: Location, rel: str, key: str) -> Location:
    if isinstance(dst, Local):
        return Local(local_path(dst.path, rel, key))
    if isinstance(dst, Remote):
        return Remote(dst.ref, as_prefix(dst.key) + rel)
    raise UsageError("a tree cannot be copied to '-' (stdout)")


async def plan_copy(
    sources: list[Location],
    dst: Location,
    *,
    recursive: bool,
    filter: Filter,
    stores: Stores,
    move: bool = False,
) -> tuple[list[Job], list[str]]:
    """The jobs of ``cp``/``mv`` (listing the source trees), and the files that cannot be read.

    Raises:
        UsageError: a combination that cannot be done (both sides local, a
            tree to stdout, a folder without ``-r``, ...).
        NotFoundError: a tree or glob that matches nothing.
    """
    command = "mv" if move else "cp"
    many = (
        len(sources) > 1
        or recursive
        or any(isinstance(s, Remote) and has_glob(s.key) for s in sources)
    )
    if isinstance(dst, Stdio) and (many or not isinstance(sources[0], Remote)):
        raise UsageError(f"{command}: '-' (stdout) takes exactly one object from a store")
    if move and isinstance(dst, Stdio):
        raise UsageError("mv: the destination cannot be '-' (stdout)")
    jobs: list[Job] = []
    problems: list[str] = []
    for src in sources:
        if isinstance(src, Stdio):
            if len(sources) > 1 or not isinstance(dst, Remote) or move:
                raise UsageError(f"{command}: '-' (stdin) can only be copied to one key")
            if dst.key == "" or dst.key.endswith("/"):
                raise UsageError(
                    f"{command}: stdin has no name: give the whole key, not {dst.show()!r}"
                )
            jobs.append(Job(src, dst))
            continue
        if isinstance(src, Local):
            if not isinstance(dst, Remote):
                raise UsageError(
                    f"{command}: {src.show()!r} and {dst.show()!r} are both local; "
                    "write keys as :key, URLs (s3://bucket/key) or name:key"
                )
            if await anyio.to_thread.run_sync(os.path.isdir, src.path):
                if not recursive:
                    raise UsageError(f"{command}: {src.path!r} is a folder: use -r to copy a tree")
                files, unreadable = await local_tree(src.path, filter)
                problems += unreadable
                for item in files.values():
                    target = _tree_target(dst, item.rel, item.rel)
                    jobs.append(
                        Job(Local(item.where), target, item.size, move=move, label=item.rel)
                    )
                continue
            name = os.path.basename(src.path.rstrip(os.sep))
            size = await anyio.to_thread.run_sync(_size_or_none, src.path)
            jobs.append(Job(src, await _single_target(dst, name, many), size, move=move))
            continue
        # A key, a prefix or a glob in a store.
        store = await stores.open(src.ref, write=move)
        if has_glob(src.key):
            glob = Glob(src.key)
            items = await store_tree(store, src.key, filter)
            if not recursive:
                items = {rel: item for rel, item in items.items() if glob.matches(item.where)}
            if not items and await store.exists(src.key):
                # No match, but a key of that very name: glob characters are allowed in keys.
                target = await _single_target(dst, _basename(src.key), len(sources) > 1)
                jobs.append(Job(src, target, (await store.head(src.key)).size, move=move))
                continue
            if not items:
                raise NotFoundError(f"{command}: nothing matches {src.show()!r}", key=src.key)
            for item in items.values():
                target = _tree_target(dst, item.rel, item.where)
                jobs.append(job_for(src, item, target, move))
            continue
        if recursive:
            items = await store_tree(store, src.key, filter)
            if items:
                for item in items.values():
                    target = _tree_target(dst, item.rel, item.where)
                    jobs.append(job_for(src, item, target, move))
                continue
            if src.key == "" or src.key.endswith("/"):
                raise NotFoundError(
                    f"{command}: no objects below {src.show()!r}", key=src.key or "/"
                )
        elif src.key == "" or src.key.endswith("/"):
            raise UsageError(f"{command}: {src.show()!r} is a prefix: use -r to copy a tree")
        info = await store.head(src.key)
        target = await _single_target(dst, _basename(src.key), many)
        jobs.append(Job(src, target, info.size, move=move))
    return jobs, problems


def job_for(src: Remote, item: Item, target: Location, move: bool) -> Job:
    """The job of one object of a listed tree."""
    return Job(Remote(src.ref, item.where), target, item.size, move=move, label=item.rel)


def _size_or_none(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None  # the upload names the problem


def _remove_empty_folders(root: str) -> None:
    if not os.path.isdir(root):
        return
    for folder, _dirs, _files in os.walk(root, topdown=False):
        with contextlib.suppress(OSError):  # not empty (something left or excluded), or gone
            os.rmdir(folder)


async def _copy_command(args: argparse.Namespace, ui: UI, *, move: bool) -> int:
    command = "mv" if move else "cp"
    resolver = args.resolver
    locations = await resolver.resolve_all([*args.src, args.dst])
    sources, dst = locations[:-1], locations[-1]
    options = transfer_options(args)
    async with Stores() as stores:
        jobs, problems = await plan_copy(
            sources, dst, recursive=args.recursive, filter=args.filter, stores=stores, move=move
        )
        for problem in problems:
            await ui.error(problem)
        engine = Engine(ui, stores, options, command=command)
        if isinstance(dst, Stdio):
            outcome = await engine.run(jobs, view=TransferView(ui, command))  # never drawn
        else:
            outcome = await engine.run(jobs, label=command)
        outcome.failed += len(problems)
    if move and not options.dry_run:
        for src in sources:
            if isinstance(src, Local) and args.recursive:
                await anyio.to_thread.run_sync(_remove_empty_folders, src.path)
    if ui.json and not isinstance(dst, Stdio):
        await ui.record(summary_record(command, outcome, dry_run=options.dry_run))
    elif (len(jobs) > 1 or outcome.failed) and not options.dry_run:
        rate = outcome.bytes / max(outcome.seconds, 1e-9) / 1e6
        failed = f"; {outcome.failed} failed" if outcome.failed else ""
        await ui.note(
            f"{command}: {outcome.done} files ({human_bytes(outcome.bytes)}) in "
            f"{outcome.seconds:.2f} s, {rate:.1f} MB/s{failed}"
        )
    if outcome.failed:
        if len(jobs) + len(problems) > 1:
            total = len(jobs) + len(problems)
            await ui.error(f"{command}: {outcome.failed} of {total} files failed")
        return 1
    return 0


async def cp(args: argparse.Namespace, ui: UI) -> int:
    """Copy files, objects and trees (see the module docstring)."""
    return await _copy_command(args, ui, move=False)


async def mv(args: argparse.Namespace, ui: UI) -> int:
    """Move files, objects and trees: copy, then delete each source that was copied."""
    return await _copy_command(args, ui, move=True)
