"""Commands that look: ``ls``, ``du``, ``stat``, ``cat``, ``presign``, ``stores``.

They only read, so they never create anything (a ``file://`` root that does
not exist is an error). Arguments without a ``:``, URL or store name are keys
in the ``-s`` store, as before URLs were allowed in place.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import anyio.to_thread

from .. import CommonPrefix, InvalidArgumentError, ObjectInfo, Store
from ._config import config_path, load_stores
from ._globs import Glob
from ._locations import Remote, Stores, has_glob, shown_url
from ._parser import UsageError
from ._tree import as_prefix
from ._ui import UI, human_bytes, silence_stdout

__all__ = ["cat", "du", "info_record", "ls", "presign", "stat", "stores"]

#: Exit status after a broken pipe, as for a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13


def _timestamp(value: datetime.datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    return value.isoformat()


def info_record(info: ObjectInfo, url: str) -> dict[str, Any]:
    """The ``--json`` record of an object (``ls`` and ``stat``; schema: docs/cli.md)."""
    return {
        "type": "object",
        "url": url,
        "key": info.key,
        "size": info.size,
        "etag": info.etag,
        "last_modified": _iso(info.last_modified),
        "content_type": info.content_type,
        "sha256": info.sha256,
        "mtime": info.mtime,
        "mode": info.mode,
        "metadata": dict(info.metadata),
    }


async def _remotes(args: argparse.Namespace, texts: list[str]) -> list[Remote]:
    locations = await args.resolver.resolve_all(texts, bare_is_key=True)
    remotes: list[Remote] = []
    for text, location in zip(texts, locations, strict=False):
        if not isinstance(location, Remote):
            raise UsageError(f"{args.command}: {text!r} is not a key in a store")
        remotes.append(location)
    return remotes


# --------------------------------------------------------------------------- ls


async def _entries(
    store: Store, location: Remote, recursive: bool
) -> AsyncIterator[ObjectInfo | CommonPrefix]:
    """What ``ls`` shows for one location, in key order."""
    key = location.key
    if not has_glob(key):
        async for entry in store.list(key, delimiter=None if recursive else "/"):
            yield entry
        return
    glob = Glob(key)
    shown_dirs: set[str] = set()
    found = False
    async for entry in store.list(glob.prefix):
        if not isinstance(entry, ObjectInfo):
            continue
        if glob.matches(entry.key):
            found = True
            yield entry
            continue
        directory = glob.matched_dir(entry.key)
        if directory is None:
            continue
        found = True
        if recursive:
            yield entry
        elif directory not in shown_dirs:
            shown_dirs.add(directory)
            yield CommonPrefix(directory)
    if not found:  # glob characters are allowed in keys: list the name as it is
        async for entry in store.list(key, delimiter=None if recursive else "/"):
            yield entry


def _size_text(size: int, human: bool) -> str:
    return human_bytes(size) if human else str(size)


async def ls(args: argparse.Namespace, ui: UI) -> int:
    """List keys (``-l``: size, last modified, key), folders as ``PRE``; globs allowed."""
    remotes = await _remotes(args, args.locations or [":"])
    long = args.long or args.human
    async with Stores() as stores:
        for location in remotes:
            store = await stores.open(location.ref, write=False)
            async for entry in _entries(store, location, args.recursive):
                if isinstance(entry, CommonPrefix):
                    name = location.listed(entry.prefix)
                    text = f"{'PRE':>12}  {'':19}  {name}" if long else name
                    record = {"type": "prefix", "url": location.show(entry.prefix)}
                    await ui.result(text, {**record, "key": entry.prefix})
                    continue
                name = location.listed(entry.key)
                if long:
                    size = _size_text(entry.size, args.human)
                    text = f"{size:>12}  {_timestamp(entry.last_modified):19}  {name}"
                else:
                    text = name
                await ui.result(text, info_record(entry, location.show(entry.key)))
    return 0


# --------------------------------------------------------------------------- du


async def du(args: argparse.Namespace, ui: UI) -> int:
    """Size and object count below each location (and each first-level folder)."""
    remotes = await _remotes(args, args.locations or [":"])
    async with Stores() as stores:
        for location in remotes:
            store = await stores.open(location.ref, write=False)
            key = location.key
            glob = Glob(key) if has_glob(key) else None
            base = glob.base if glob else as_prefix(key)
            listing_prefix = glob.prefix if glob else base
            folders: dict[str, list[int]] = {}
            total = [0, 0]
            async for entry in store.list(listing_prefix):
                if not isinstance(entry, ObjectInfo):
                    continue
                if glob is not None and not glob.covers(entry.key):
                    continue
                total[0] += 1
                total[1] += entry.size
                rel = entry.key[len(base) :]
                head, slash, _ = rel.partition("/")
                if slash and not args.summarize:
                    counts = folders.setdefault(base + head + "/", [0, 0])
                    counts[0] += 1
                    counts[1] += entry.size
            rows = [] if args.summarize else sorted(folders.items())
            rows.append((key if glob else base, total))
            for index, (prefix, (objects, size)) in enumerate(rows):
                name = location.listed(prefix)
                is_total = index == len(rows) - 1
                text = f"{_size_text(size, args.human):>12}  {objects:>9} objects  {name}"
                await ui.result(
                    text,
                    {
                        "type": "du",
                        "url": location.show(prefix),
                        "key": prefix,
                        "objects": objects,
                        "bytes": size,
                        "total": is_total,
                    },
                )
    return 0


# --------------------------------------------------------------------------- stat


def _stat_lines(info: ObjectInfo, url: str) -> list[tuple[str, str]]:
    lines = [
        ("key", info.key),
        ("url", url),
        ("size", f"{info.size}"),
        ("etag", info.etag),
        ("last_modified", _timestamp(info.last_modified)),
        ("content_type", info.content_type or "-"),
        ("sha256", info.sha256 or "- (not recorded)"),
    ]
    if info.mtime is not None:
        mtime = datetime.datetime.fromtimestamp(info.mtime, datetime.timezone.utc)
        lines.append(("source_mtime", _timestamp(mtime)))
    if info.mode is not None:
        lines.append(("source_mode", f"{info.mode:04o}"))
    lines.extend((f"metadata.{name}", value) for name, value in sorted(info.metadata.items()))
    return lines


async def stat(args: argparse.Namespace, ui: UI) -> int:
    """Show an object's size, ETag, timestamps, content type, sha256 and metadata."""
    remotes = await _remotes(args, args.locations)
    async with Stores() as stores:
        for index, location in enumerate(remotes):
            store = await stores.open(location.ref, write=False)
            info = await store.head(location.key)
            url = location.show(info.key)
            if ui.json:
                await ui.record(info_record(info, url))
                continue
            if index:
                await ui.line("")
            for name, value in _stat_lines(info, url):
                await ui.line(f"{name:<16}{value}")
    return 0


# --------------------------------------------------------------------------- cat


def _stdout_binary() -> BinaryIO:
    buffer: BinaryIO = sys.stdout.buffer
    return buffer


async def cat(args: argparse.Namespace, ui: UI) -> int:
    """Stream objects to stdout (parallel ranged reads, sha256 verified at the end)."""
    remotes = await _remotes(args, args.locations)
    out = _stdout_binary()
    await ui.flush()
    await anyio.to_thread.run_sync(sys.stdout.flush)
    try:
        async with Stores() as stores:
            for location in remotes:
                store = await stores.open(location.ref, write=False)
                async with store.stream(location.key, verify=not args.no_verify) as body:
                    async for chunk in body:
                        await anyio.to_thread.run_sync(out.write, chunk)
        await anyio.to_thread.run_sync(out.flush)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from
        # complaining about stdout once more when it flushes at exit.
        silence_stdout()
        return EXIT_BROKEN_PIPE
    return 0


# --------------------------------------------------------------------------- presign


async def presign(args: argparse.Namespace, ui: UI) -> int:
    """Print a URL granting GET (or PUT) of one key until it expires."""
    (location,) = await _remotes(args, [args.location])
    if location.key == "" or location.key.endswith("/") or has_glob(location.key):
        raise UsageError(f"presign: give one key, not {location.show()!r}")
    async with Stores() as stores:
        store = await stores.open(location.ref, write=args.method == "PUT")
        # A backend that can sign URLs has a public sign(key, method, expires_in).
        sign = getattr(store.backend, "sign", None)
        if sign is None:
            raise InvalidArgumentError(
                f"presign: {location.ref.scheme}:// stores cannot sign URLs "
                "(only the S3 backend can, so far)",
                key=location.key,
            )
        url: str = await sign(location.key, args.method, args.expires)
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=args.expires
    )
    await ui.result(
        url,
        {
            "type": "presign",
            "url": location.show(),
            "key": location.key,
            "method": args.method,
            "expires": expires.isoformat(),
            "signed_url": url,
        },
    )
    return 0


# --------------------------------------------------------------------------- stores


async def stores(args: argparse.Namespace, ui: UI) -> int:
    """List the named stores of the config file (URLs with secrets hidden)."""
    path = config_path()
    named = await anyio.to_thread.run_sync(load_stores, path)
    if not named:
        await ui.note(f"no named stores in {path}")
    for name, store in sorted(named.items()):
        shown = shown_url(store.url)
        options = ", ".join(sorted(store.options))
        await ui.result(
            f"{name:<16}{shown}" + (f"  (options: {options})" if options else ""),
            {"type": "store", "name": name, "url": shown, "options": sorted(store.options)},
        )
    return 0
