"""``registry serve``: the command's options and its runner.

The ``asyncstore`` command wires ``asyncstore registry serve`` to `add_arguments`
and `run`; ``python -m asyncstore.registry serve`` uses the same two functions.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Any

import anyio

from .. import ContentStore, RegistryStorage, StoreError, open_store
from .._errors import ConfigurationError, redact_url
from ._app import RegistryApp, RegistryConfig
from ._auth import Access, Authenticator, load_htpasswd, load_tokens
from ._server import ServerOptions, parse_listen, serve

__all__ = ["add_arguments", "run"]

log = logging.getLogger("asyncstore.registry")

_SIZE = re.compile(r"([0-9]+)\s*([kmgt]i?b?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str) -> int:
    """A byte count: ``4194304``, ``4MiB``, ``512KiB``, ``1G`` (SI) or ``1GiB`` (binary)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (for example 4MiB or 4194304)")
    number, unit = int(match[1]), (match[2] or "").lower()
    factor = 1024 ** " kmgt".index(unit[0]) if "i" in unit else _UNITS[unit[:1]]
    value = number * factor
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be at least 1 byte")
    return value


def _seconds(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a positive number")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be a positive number")
    return value


def _access(text: str) -> tuple[str, Access]:
    user, sep, level = text.rpartition("=")
    if not sep or not user or level not in ("read", "write"):
        raise argparse.ArgumentTypeError(f"{text!r} is not USER=read or USER=write")
    return user, level  # type: ignore[return-value]


def _listen(text: str) -> str:
    try:
        parse_listen(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``STORE_URL`` and every option of ``registry serve`` to ``parser``."""
    parser.add_argument(
        "store_url",
        metavar="STORE_URL",
        help="where the registry keeps everything: memory://, file:///srv/registry, "
        "s3://bucket/prefix, gs://..., az://...",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:5000",
        type=_listen,
        metavar="HOST:PORT",
        help="address to listen on (default: 127.0.0.1:5000; port 0 picks a free port)",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="refuse every push and delete (405 UNSUPPORTED)"
    )
    parser.add_argument(
        "--delete",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="allow deleting manifests, tags and blobs (default: on)",
    )
    parser.add_argument(
        "--automatic-mount",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a mount request without from= mounts any stored blob of that digest (default: on)",
    )
    parser.add_argument(
        "--max-manifest-size",
        type=parse_size,
        default=4 * 1024 * 1024,
        metavar="SIZE",
        help="largest manifest accepted, 413 above it (default: 4MiB)",
    )
    parser.add_argument(
        "--max-upload-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="largest blob accepted, 413 above it (default: no limit)",
    )
    parser.add_argument(
        "--prefix", default="", help="key prefix for everything the registry stores ('' or a/)"
    )
    parser.add_argument(
        "--chunk-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="part size of uploads into the store and of reads (default: the store's, 8MiB); "
        "memory use is about 2 parts per upload in flight",
    )
    parser.add_argument(
        "--tags-page-size",
        type=int,
        default=10_000,
        metavar="N",
        help="most tags in one answer of tags/list (a Link header gives the next page)",
    )
    parser.add_argument(
        "--reference-cache",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how long a resolved tag, manifest revision or blob link is trusted without "
        "reading the store again (default: 1; this server's own writes are seen at once, "
        "other servers' writes to the same store after at most this long; 0: always read)",
    )
    timeouts = parser.add_argument_group("timeouts (seconds)")
    timeouts.add_argument(
        "--read-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a connection silent this long while a request or body is due is closed "
        "(default: 60; 'none' for no limit)",
    )
    timeouts.add_argument(
        "--keep-alive-timeout",
        type=_positive_seconds,
        default=75.0,
        metavar="SECONDS",
        help="idle keep-alive connections are closed after this (default: 75)",
    )
    timeouts.add_argument(
        "--storage-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="most time one storage call may take, retries included (default: no limit)",
    )
    timeouts.add_argument(
        "--upload-lease",
        type=_positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="an upload whose server died is taken over by another request after this "
        "(renewed with every part stored; default: 60)",
    )
    timeouts.add_argument(
        "--shutdown-timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, requests in flight get this long to finish (default: 30)",
    )
    auth = parser.add_argument_group("authentication and access")
    auth.add_argument(
        "--htpasswd",
        metavar="FILE",
        help="Basic auth: an htpasswd file of bcrypt hashes (htpasswd -B)",
    )
    auth.add_argument(
        "--tokens",
        metavar="FILE",
        help="Bearer auth: lines user:token or user:sha256:<hex of the token>",
    )
    auth.add_argument(
        "--access",
        action="append",
        type=_access,
        default=[],
        metavar="USER=read|write",
        help="what a user may do (repeatable); users not listed get --default-access",
    )
    auth.add_argument(
        "--default-access",
        choices=["read", "write"],
        default="write",
        help="access of authenticated users not named by --access (default: write)",
    )
    auth.add_argument(
        "--anonymous",
        choices=["none", "read"],
        default="none",
        help="with --htpasswd/--tokens: what requests without credentials may do (default: none)",
    )
    parser.add_argument(
        "--backend",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="log level of the registry's messages (default: info)",
    )


def _authenticator(args: argparse.Namespace) -> Authenticator | None:
    if args.htpasswd is None and args.tokens is None:
        if args.access:
            raise ConfigurationError("--access needs --htpasswd or --tokens", key="access")
        return None
    return Authenticator(
        htpasswd=load_htpasswd(args.htpasswd) if args.htpasswd is not None else None,
        tokens=load_tokens(args.tokens) if args.tokens is not None else None,
        access=dict(args.access),
        default_access=args.default_access,
        anonymous=args.anonymous,
    )


async def _main(args: argparse.Namespace, auth: Authenticator | None, ready: Any) -> None:
    config = RegistryConfig(
        read_only=args.read_only,
        delete=args.delete,
        max_manifest_size=args.max_manifest_size,
        max_upload_size=args.max_upload_size,
        automatic_mount=args.automatic_mount,
        tags_page_size=args.tags_page_size,
    )
    options = ServerOptions(
        listen=args.listen,
        read_timeout=args.read_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )
    async with open_store(
        args.store_url, timeout=args.storage_timeout, chunk_size=args.chunk_size
    ) as store:
        content = ContentStore(store, args.prefix, session_lease=args.upload_lease)
        registry = RegistryStorage(
            store, content=content, reference_cache=args.reference_cache or 0.0
        )
        app = RegistryApp(registry, config, auth=auth)
        await serve(app, options, ready=ready)
    log.info("registry stopped; the store is closed")


def run(args: argparse.Namespace) -> int:
    """Run the registry the parsed ``args`` describe until SIGINT or SIGTERM.

    Returns:
        The exit code: 0 after a clean shutdown, 2 for a configuration or storage
        error (printed to stderr, secrets redacted), 130 if interrupted while starting.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("asyncstore.registry").setLevel(args.log_level.upper())

    def ready(url: str) -> None:
        print(f"asyncstore registry listening on {url}", flush=True)

    try:
        auth = _authenticator(args)
        anyio.run(_main, args, auth, ready, backend=args.backend)
    except StoreError as exc:
        message = str(exc).replace(args.store_url, redact_url(args.store_url))
        print(f"asyncstore registry: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
