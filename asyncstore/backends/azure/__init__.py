"""Azure Blob Storage: ``az://container/prefix``, on the azure-storage-blob aio SDK.

The backend (`AzureBackend`) maps asyncstore's primitives onto block blobs:
one Put Blob for a small object, staged blocks committed by one Put Block
List for a large one (every block's MD5 verified by the service), ranged Get
Blob reads pinned to an ETag, List Blobs, Blob Batch deletes and Copy Blob.
Requests go through azure-core's pipeline: over azure-core's aiohttp
transport under asyncio (the cheaper of the two there) and over
`HttpxTransport`, an anyio-native transport on httpx, under trio.

Modules: ``_options`` (URLs, options, credentials), ``_transport`` (the httpx
transport), ``_settle`` (writes that finish despite a cancellation),
``_metadata`` (metadata names as C# identifiers), ``_translate`` (azure-core
exceptions into asyncstore's), ``_backend`` (the primitives).
"""

from __future__ import annotations

from urllib.parse import SplitResult

from . import _extra  # noqa: F401 - first: names the extra if a vendor module is missing
from ._backend import AzureBackend
from ._metadata import decode_name, encode_name
from ._options import AzureConfig, merge, parse_url, resolve
from ._transport import HttpxTransport

__all__ = [
    "AzureBackend",
    "AzureConfig",
    "HttpxTransport",
    "decode_name",
    "encode_name",
    "from_url",
]


def from_url(url: SplitResult, **options: object) -> AzureBackend:
    """Open ``az://container/prefix``, ``azure://...`` or ``abfs://container@NAME.dfs.core.windows.net/prefix``.

    Options (URL query or keyword arguments): ``account``, ``account_url``,
    ``anonymous``, ``transport`` (``auto`` / ``httpx`` / ``aiohttp``),
    ``concurrency``, ``part_size_mb``, ``connect_timeout`` / ``read_timeout``
    (seconds to wait for a connection, default 30, and for each read or write
    on one, default 120: ``az://container/p?connect_timeout=2&read_timeout=5``;
    exposed as the backend's ``timeouts``); keyword arguments only:
    ``connection_string``, ``account_key``, ``sas_token``, ``credential``.
    Without any of those, ``AZURE_STORAGE_CONNECTION_STRING`` is used, then
    DefaultAzureCredential (``pip install azure-identity``).

    Raises:
        ConfigurationError: a bad URL or option (naming it, never a secret),
            an unknown option, or no way to find the account or sign in.
    """
    container, prefix, found = parse_url(url)
    where = f"{url.scheme}://{container}/{prefix}" if prefix else f"{url.scheme}://{container}"
    merged = merge(found, options, where)
    return AzureBackend.from_config(resolve(container, prefix, merged, where=where))
