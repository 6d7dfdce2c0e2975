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
from urllib.parse import urlsplit

from ._backend import Backend
from ._errors import ConfigurationError, redact_url
from ._store import Store
from ._stream._retry import RetryPolicy
from .backends._extras import missing_extra_message

__all__ = ["BackendFactory", "known_schemes", "open_store", "redact_url", "register_backend"]

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
    scheme = parts.scheme.lower()
    backend = _factory(scheme, url)(parts, **options)
    return Store(
        backend,
        chunk_size=chunk_size,
        max_concurrency=max_concurrency,
        retry=retry,
        timeout=timeout,
    )
