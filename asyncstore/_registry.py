"""Store URLs: the scheme registry and `open_store`.

Schemes resolve through backends registered with `register_backend`
and the ``asyncstore.backends`` entry-point group (name = scheme, value = a
callable ``(urllib.parse.SplitResult, **options) -> Backend``). Schemes of
the optional backends map to the extra that provides them, so a missing
extra is reported with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, urlsplit

import anyio.to_thread

from ._backend import Backend
from ._errors import ConfigurationError, redact_url
from ._opening import Opening
from ._store import Store
from ._stream._retry import RetryPolicy
from .backends._extras import missing_extra_message

__all__ = [
    "BackendFactory",
    "known_schemes",
    "open_store",
    "open_store_async",
    "redact_url",
    "register_backend",
]

#: ``(url, **options) -> Backend``: how a scheme's backend is made.
BackendFactory = Callable[..., Backend]

#: The extra that provides each optional scheme.
EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "azure": "azure", "abfs": "azure"}

_registered: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make ``scheme://`` URLs open backends made by ``factory(url, **options)``."""
    if not scheme or not scheme.isascii() or not scheme.replace("+", "").isalnum():
        raise ConfigurationError(f"invalid URL scheme {scheme!r}", key=scheme)
    _registered[scheme.lower()] = factory


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group="asyncstore.backends")}


def known_schemes() -> list[str]:
    """The schemes that can be opened in this installation."""
    return sorted(set(_registered) | set(_entry_points()))


def _factory(scheme: str, url: str) -> BackendFactory:
    if scheme in _registered:
        return _registered[scheme]
    entry = _entry_points().get(scheme)
    extra = EXTRAS.get(scheme)
    if entry is None:
        if extra is not None:
            raise ConfigurationError(
                missing_extra_message(f"{scheme}:// stores", extra), key=redact_url(url)
            )
        raise ConfigurationError(
            f"unknown URL scheme {scheme!r} in {redact_url(url)!r}; "
            f"known schemes: {', '.join(known_schemes())}",
            key=redact_url(url),
        )
    try:
        factory: BackendFactory = entry.load()
    except ImportError as exc:
        # A vendor module of the extra is missing (not one of asyncstore's own): name
        # the extra, as the backend package does; the module is the error's cause.
        missing = getattr(exc, "name", None) or ""
        if extra is not None and not missing.startswith("asyncstore"):
            raise ConfigurationError(
                missing_extra_message(f"{scheme}:// stores", extra), key=redact_url(url)
            ) from exc
        hint = f"pip install 'asyncstore[{extra}]'" if extra else f"reinstall {entry.value}"
        raise ConfigurationError(
            f"{scheme}:// stores cannot be opened: {exc}; {hint}", key=redact_url(url)
        ) from exc
    return factory


def _resolve(url: object) -> tuple[BackendFactory, SplitResult]:
    """The backend factory of a store URL's scheme, and the URL's parts.

    Blocks: the first call scans the entry points, and loading one imports a module.

    Raises:
        ConfigurationError: a URL not of the form scheme://..., unparseable, or of an
            unknown scheme or one whose extra is missing.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"store URL must look like scheme://..., not {redact_url(str(url))!r}; "
            f"known schemes: {', '.join(known_schemes())}",
            key=redact_url(str(url)),
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"invalid store URL: {exc}", key=redact_url(url)) from exc
    return _factory(parts.scheme.lower(), url), parts


def open_store(
    url: str,
    *,
    chunk_size: int | None = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    **options: Any,
) -> Store:
    """Open a store from a URL: ``memory://``, ``file:///abs/path``, ``s3://bucket/prefix``, ...

    Use the result as an async context manager:

        async with open_store("file:///srv/data") as store:
            ...

    The first store of a scheme in a process finds the backend (a scan of the
    installed entry points) and imports its module, which reads files and
    blocks for as long as that takes (tens to hundreds of milliseconds for the
    cloud SDKs). In async code, `open_store_async` does that work in a worker
    thread instead.

    Args:
        url: The store URL; its scheme picks the backend.
        chunk_size: Default part / range size of the store's transfers.
        max_concurrency: Default parts / ranges in flight per transfer.
        retry: Retry policy for TransportErrors.
        timeout: Seconds one call of the store may take in all (see `Store`).
        **options: Backend options (see each backend's page).

    Raises:
        ConfigurationError: unknown scheme (naming the known ones), missing
            extra (naming the ``pip install`` that fixes it), or a bad URL or option.
    """
    factory, parts = _resolve(url)
    backend = factory(parts, **options)
    return Store(
        backend,
        chunk_size=chunk_size,
        max_concurrency=max_concurrency,
        retry=retry,
        timeout=timeout,
    )


def open_store_async(
    url: str,
    *,
    chunk_size: int | None = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    **options: Any,
) -> Opening[Store]:
    """`open_store` for async code: the backend is found and imported in a worker thread.

    The event loop never waits for the entry-point scan or for the import of a
    backend's SDK, which `open_store` does in the caller's thread the first
    time a scheme is opened. Await it, or use it as an async context manager:

        async with open_store_async("s3://bucket/prefix") as store:
            ...

        store = await open_store_async("s3://bucket/prefix")
        try:
            ...
        finally:
            await store.aclose()

    Takes the same arguments as `open_store`.

    Raises:
        ConfigurationError: as `open_store`, when awaited or entered.
    """

    async def opening() -> Store:
        factory, parts = await anyio.to_thread.run_sync(_resolve, url)
        return Store(
            factory(parts, **options),
            chunk_size=chunk_size,
            max_concurrency=max_concurrency,
            retry=retry,
            timeout=timeout,
        )

    return Opening(opening)
