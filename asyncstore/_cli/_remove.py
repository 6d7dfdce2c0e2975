"""``rm``: delete keys; with ``-r`` every key below prefixes; globs; ``--dry-run``.

A key that does not exist is not an error (as with the Store's delete). Keys
are deleted in batches of `BATCH` (one request each where the service has a
batch delete).
"""

from __future__ import annotations

import argparse

from .. import StoreError
from ._globs import Glob
from ._locations import Remote, Stores, has_glob
from ._parser import UsageError
from ._transfer import describe_error
from ._tree import store_tree
from ._ui import UI

__all__ = ["BATCH", "delete_keys", "rm"]

#: Keys deleted per request.
BATCH = 1000


async def delete_keys(
    ui: UI, stores: Stores, location: Remote, keys: list[str], *, dry_run: bool
) -> int:
    """Delete ``keys`` of ``location``'s store, report each; return how many failed."""
    failed = 0
    if dry_run:
        for key in keys:
            if not ui.quiet:
                await ui.result(
                    f"(dry run) delete {location.show(key)}", _record(location, key, "dry-run")
                )
        return 0
    store = await stores.open(location.ref, write=True)
    for first in range(0, len(keys), BATCH):
        batch = keys[first : first + BATCH]
        try:
            await store.delete_many(batch)
        except StoreError as exc:
            failed += len(batch)
            message = describe_error(exc)
            await ui.error(message)
            if ui.json:
                for key in batch:
                    await ui.record(_record(location, key, "failed", message))
            continue
        if not ui.quiet:
            for key in batch:
                await ui.result(f"deleted {location.show(key)}", _record(location, key, "ok"))
    return failed


def _record(location: Remote, key: str, status: str, error: str | None = None) -> dict[str, object]:
    return {
        "type": "delete",
        "url": location.show(key),
        "key": key,
        "status": status,
        "error": error,
    }


async def rm(args: argparse.Namespace, ui: UI) -> int:
    """Delete keys (``-r``: everything below each prefix)."""
    locations = await args.resolver.resolve_all(args.locations, bare_is_key=True)
    failed = deleted = 0
    async with Stores() as stores:
        plans: list[tuple[Remote, list[str]]] = []
        for text, location in zip(args.locations, locations, strict=False):
            if not isinstance(location, Remote):
                raise UsageError(f"rm: {text!r} is not a key in a store")
            if args.recursive or has_glob(location.key):
                store = await stores.open(location.ref, write=False)
                items = await store_tree(store, location.key, args.filter)
                if has_glob(location.key) and not args.recursive:
                    glob = Glob(location.key)
                    keys = sorted(i.where for i in items.values() if glob.matches(i.where))
                    if not keys and await store.exists(location.key):
                        keys = [location.key]  # glob characters are allowed in keys
                else:
                    keys = sorted(item.where for item in items.values())
                    if not keys and has_glob(location.key):
                        literal = await store_tree(store, location.key, args.filter, literal=True)
                        keys = sorted(item.where for item in literal.values())
            elif location.key == "" or location.key.endswith("/"):
                raise UsageError(f"rm: {location.show()!r} is a prefix: use -r to delete below it")
            else:
                keys = [location.key]
            plans.append((location, keys))
        for location, keys in plans:
            failed += await delete_keys(ui, stores, location, keys, dry_run=args.dry_run)
            deleted += len(keys)
    if ui.json:
        await ui.record(
            {
                "type": "summary",
                "command": "rm",
                "deleted": 0 if args.dry_run else deleted - failed,
                "failed": failed,
                "dry_run": args.dry_run,
            }
        )
    return 1 if failed else 0
