"""The S3 backend: Amazon S3 and S3-compatible services, through aiobotocore.

Open it with a URL (needs the ``s3`` extra: ``pip install 'asyncstore[s3]'``)::

    async with open_store("s3://bucket/prefix?region=eu-west-1") as store:
        ...

or build it directly: ``Store(S3Backend("bucket", "prefix", region="eu-west-1"))``.
It runs under asyncio and trio (aiobotocore's httpx session is anyio-native).
How it maps the backend contract onto S3 requests, where the sha256 is
recorded and which options exist: see ``docs/backends/s3.md``.
"""

from __future__ import annotations

from urllib.parse import SplitResult

from . import _extra  # noqa: F401 - first: names the extra if a vendor module is missing
from ._backend import ETAG_TAG, S3_CAPABILITIES, SHA256_TAG, S3Backend
from ._client import HttpClient
from ._options import OPTION_NAMES, S3Options, parse_options

__all__ = [
    "ETAG_TAG",
    "OPTION_NAMES",
    "S3_CAPABILITIES",
    "SHA256_TAG",
    "HttpClient",
    "S3Backend",
    "S3Options",
    "from_url",
]


def from_url(url: SplitResult, **options: object) -> S3Backend:
    """Open ``s3://bucket/prefix?region=...&endpoint=...&use_path_style=...``.

    The options (in the query string, or as keyword arguments, not both):

    * ``region``: the bucket's region (default: the AWS configuration's, then ``us-east-1``);
    * ``endpoint``: ``http(s)://host[:port]`` of an S3-compatible service;
    * ``use_path_style``: ``true`` / ``false``: path-style or virtual-hosted addressing;
    * ``concurrency``: the store's default parts / ranges in flight (1..100);
    * ``part_size_mb``: the store's default part / range size in MiB (5..5120);
    * ``connect_timeout`` / ``read_timeout``: seconds to wait for a connection
      (default 10) and for each read of a response (default 60);
    * ``lean``: ``true`` (default) or ``false``: whether GET, HEAD, PUT and
      UploadPart take asyncstore's lean request path (see ``_lean.py``).

    ``concurrency`` and ``part_size_mb`` are exposed as the backend's
    ``default_max_concurrency`` and ``default_chunk_size``. Credentials come
    from the standard AWS chain, never from the URL.

    Raises:
        ConfigurationError: naming the bad bucket, prefix or option.
    """
    parsed = parse_options(url, options)
    return S3Backend(
        parsed.bucket,
        parsed.prefix,
        region=parsed.region,
        endpoint=parsed.endpoint,
        use_path_style=parsed.use_path_style,
        concurrency=parsed.concurrency,
        part_size_mb=parsed.part_size_mb,
        connect_timeout=parsed.connect_timeout,
        read_timeout=parsed.read_timeout,
        lean=parsed.lean is not False,
    )
