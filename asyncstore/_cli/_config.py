"""Named stores: ``~/.config/asyncstore/stores.toml`` (``$XDG_CONFIG_HOME`` respected).

Each table names a store; ``url`` is required, every other entry is passed to
`asyncstore.open_store` as a keyword argument (``timeout``, ``max_concurrency``,
a backend option such as ``region`` or ``connection_string``)::

    [photos]
    url = "s3://my-photos/originals?region=eu-west-1"

    [backup]
    url = "file://~/backup"
    timeout = 300

Then ``asyncstore ls photos:2024/`` lists ``s3://my-photos/originals/2024/``,
and ``-s photos`` makes it the store of ``:key`` arguments. Credentials come
from each service's standard chain (environment, profile files, instance
roles); the file holds one only if its owner writes it there.

The file is read (in a worker thread) only when a command names a store this
way, and an unreadable or malformed file is an error naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from .. import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = ["NAME", "NamedStore", "config_path", "load_stores"]

#: What a store name looks like (so that ``name:key`` is told apart from a path).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True)
class NamedStore:
    """One store of the config file: its name, URL and `open_store` keyword arguments."""

    name: str
    url: str
    options: Mapping[str, Any]


def config_path() -> str:
    """Where the named stores are read from: ``$XDG_CONFIG_HOME/asyncstore/stores.toml``.

    ``$XDG_CONFIG_HOME`` defaults to ``~/.config`` when unset or empty.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "asyncstore", "stores.toml")


def load_stores(path: str | None = None) -> dict[str, NamedStore]:
    """Read the named stores (blocking: call it in a worker thread).

    A missing file means no named stores.

    Raises:
        ConfigurationError: the file cannot be read, is not TOML, or a store in
            it has no ``url`` string or a bad name (the message names the file).
    """
    path = path or config_path()
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}", key=path) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the named stores in {path}: {exc.strerror or exc}", key=path
        ) from exc
    stores: dict[str, NamedStore] = {}
    for name, table in document.items():
        if not isinstance(table, dict):
            raise ConfigurationError(
                f'{path}: {name!r} must be a table ([{name}] with url = "...")', key=path
            )
        if not NAME.fullmatch(name):
            raise ConfigurationError(
                f"{path}: the store name {name!r} may hold only letters, digits, '_', '.' "
                "and '-', and must start with a letter or digit",
                key=path,
            )
        url = table.get("url")
        if not isinstance(url, str) or "://" not in url:
            raise ConfigurationError(
                f'{path}: the store {name!r} needs url = "scheme://..."', key=path
            )
        options = {k: v for k, v in table.items() if k != "url"}
        stores[name] = NamedStore(name, url, options)
    return stores
