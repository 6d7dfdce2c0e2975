"""An OCI registry over any asyncstore backend: the distribution-spec v1.1 HTTP API.

How it fits together. `RegistryApp` is an ASGI application that answers the
distribution spec's endpoints (``/v2/``, blobs, uploads, manifests, tags,
referrers) by calling `asyncstore.oci.RegistryStorage`, so a registry runs
on memory://, file://, s3://, gs:// or az:// alike. Request bodies stream into
the store's upload sessions as they arrive and blob downloads stream out of
it, so no blob is ever held in memory. `Authenticator` adds htpasswd (bcrypt)
Basic auth and bearer tokens with read or read-write users, and `serve` runs
the app with hypercorn under asyncio or trio. The command is
``asyncstore registry serve STORE_URL`` (or ``python -m asyncstore.registry serve``).

This module is an adapter over the public API; ``import asyncstore`` never
imports it. It needs the ``registry`` extra: ``pip install 'asyncstore[registry]'``.
"""

from ._app import RegistryApp, RegistryConfig
from ._auth import Authenticator, Identity, hash_token, load_htpasswd, load_tokens
from ._http import RegistryError
from ._server import ServerOptions, serve

__all__ = [
    "Authenticator",
    "Identity",
    "RegistryApp",
    "RegistryConfig",
    "RegistryError",
    "ServerOptions",
    "hash_token",
    "load_htpasswd",
    "load_tokens",
    "serve",
]
