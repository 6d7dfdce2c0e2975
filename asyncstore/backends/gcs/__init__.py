"""The Google Cloud Storage backend: ``gs://bucket/prefix`` (also ``gcs://``).

Built on gcloud-aio-storage, with an httpx transport so that it runs under
asyncio and trio alike (see ``_http``). Keys are object names below the
store's prefix; the ETag of an object is its generation, and every
conditional request (``mode="create"``, ``if_match``, the ranges of a
download) is an ``ifGenerationMatch`` on it. Objects larger than one part go
through a parallel composite upload or a resumable session (``upload=``
option, see ``_uploads``). The sha256 the Store computes is recorded as the
object metadata entry ``asyncstore-sha256``.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import SplitResult

from . import _extra  # noqa: F401 - first: names the extra if a vendor module is missing
from ._backend import GCSBackend
from ._options import GCSOptions, parse_options

__all__ = ["GCSBackend", "GCSOptions", "from_url"]


def from_url(url: SplitResult, **options: object) -> GCSBackend:
    """Open ``gs://bucket/prefix?option=value`` (or ``gcs://...``).

    Options (in the query string or as keyword arguments): ``project``,
    ``api_root``, ``service_file``, ``upload`` (``composite`` or
    ``resumable``), ``concurrency``, ``part_size_mb``, ``max_connections``,
    ``connect_timeout`` and ``read_timeout`` (seconds); see
    [the GCS backend's page](../backends/gcs.md).

    Raises:
        ConfigurationError: a bad bucket, prefix or option, or an unknown option.
    """
    return GCSBackend(**dataclasses.asdict(parse_options(url, options)))
