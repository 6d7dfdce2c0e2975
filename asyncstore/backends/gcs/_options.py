"""The options of a GCS store, from a ``gs://`` URL, keyword arguments and the environment.

``gs://bucket/prefix?project=...&api_root=...&service_file=...&upload=auto``
(``gcs://`` is the same):

* bucket = the URL's host; prefix = its path without leading or trailing ``/``
  (percent-decoded, and following the key rules);
* ``project``: the project billed for the requests (sent as ``userProject``,
  which requester-pays buckets need);
* ``api_root``: ``http(s)://host[:port]`` of the JSON API (default:
  ``STORAGE_EMULATOR_HOST`` when set, else ``https://storage.googleapis.com``);
* ``service_file``: a service-account (or other credentials) JSON file; default:
  Application Default Credentials;
* ``upload``: how objects larger than one part are uploaded: ``auto`` (the
  default: a file in one streamed request to a resumable session, anything
  else as a composite upload), ``composite`` (parallel composite upload: parts
  in parallel as temporary objects, then composed) or ``resumable`` (one
  resumable upload session: a file in one streamed request, other sources in
  parts, in order);
* ``concurrency``: the store's default parts / ranges in flight, 1..100;
* ``part_size_mb``: the store's default part / range size in MiB, 1..5120;
* ``max_connections``: the most HTTP connections open at once, 1..1000 (default 64);
* ``connect_timeout`` / ``read_timeout``: seconds to wait for a connection
  (default 30) and for each read or write of a request's bytes (default 120);
* ``lean``: ``true`` (default) / ``false``: the backend's own requests (reads,
  writes, uploads) go on asyncstore's lean HTTP client, or through httpx.

Anything else is a `ConfigurationError` naming it. Credentials never come from
the URL.

``STORAGE_EMULATOR_HOST`` is honoured the way Google's own clients honour it:
when it is set and no ``api_root`` is given, every request goes to that host
(``http://`` is assumed when it names no scheme) without credentials.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar
from urllib.parse import SplitResult, unquote

from ..._errors import ConfigurationError, redact_url
from .._url import boolean, merge_options, seconds, service_url
from .._url import bounded_int as _bounded_int
from .._url import check_prefix as _check_prefix

__all__ = [
    "DEFAULT_API_ROOT",
    "DEFAULT_MAX_CONNECTIONS",
    "EMULATOR_ENV",
    "OPTION_NAMES",
    "GCSOptions",
    "UploadMethod",
    "parse_options",
    "resolve_api_root",
]

#: Every option of a GCS store, in the URL query or as a keyword argument.
OPTION_NAMES = (
    "project",
    "api_root",
    "service_file",
    "upload",
    "concurrency",
    "part_size_mb",
    "max_connections",
    "connect_timeout",
    "read_timeout",
    "lean",
)
#: The environment variable Google's clients read to talk to an emulator.
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
DEFAULT_API_ROOT = "https://storage.googleapis.com"

UploadMethod = Literal["auto", "composite", "resumable"]
_UPLOAD_METHODS: tuple[UploadMethod, ...] = ("auto", "composite", "resumable")
_CONCURRENCY = (1, 100)
_PART_SIZE_MB = (1, 5120)
_MAX_CONNECTIONS = (1, 1000)
#: HTTP connections open at once unless ``max_connections`` says otherwise.
DEFAULT_MAX_CONNECTIONS = 64
# Bucket names: 3-63 characters (up to 222 with dots, 63 per dot-separated
# component) of a-z 0-9 - _ ., starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
# Project ids: 6-30 of a-z 0-9 -, starting with a letter; older ones may be
# domain-scoped ("example.com:project").
_PROJECT = re.compile(r"^(?:[a-z0-9][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class GCSOptions:
    """Where a GCS store lives and how it is reached.

    Attributes:
        bucket: The bucket name.
        prefix: Key prefix under which the store's keys live ("" for the bucket's root).
        project: The project billed for requests (``userProject``), or None.
        api_root: The JSON API root given explicitly, or None (see `resolve_api_root`).
        service_file: Path of a credentials JSON file, or None for Application
            Default Credentials.
        upload: How objects of more than one part are uploaded: ``"auto"`` (the
            default: files by a resumable session in one request, the rest as
            composite uploads), ``"composite"`` or ``"resumable"``.
        concurrency: The store's default transfers in flight, or None.
        part_size_mb: The store's default part / range size in MiB, or None.
        max_connections: The most HTTP connections open at once.
        connect_timeout: Seconds to wait for a connection, or None (30).
        read_timeout: Seconds to wait for each read or write of a request's
            bytes, or None (120).
        lean: Whether the backend's own requests take the lean HTTP client.
    """

    bucket: str
    prefix: str = ""
    project: str | None = None
    api_root: str | None = None
    service_file: str | None = None
    upload: UploadMethod = "auto"
    concurrency: int | None = None
    part_size_mb: int | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    connect_timeout: float | None = None
    read_timeout: float | None = None
    lean: bool = True

    def __post_init__(self) -> None:
        check_bucket(self.bucket)
        check_prefix(self.prefix)
        where = self.url
        checks: tuple[tuple[str, Callable[[object, str], object]], ...] = (
            ("project", _project),
            ("api_root", _api_root),
            ("service_file", _service_file),
            ("upload", _upload),
            ("concurrency", _concurrency),
            ("part_size_mb", _part_size_mb),
            ("max_connections", _max_connections),
            ("connect_timeout", _connect_timeout),
            ("read_timeout", _read_timeout),
            ("lean", _lean),
        )
        for name, check in checks:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check(value, where))

    @property
    def url(self) -> str:
        """The store's ``gs://bucket/prefix`` location (without options)."""
        return f"gs://{self.bucket}/{self.prefix}" if self.prefix else f"gs://{self.bucket}"


def resolve_api_root(api_root: str | None) -> tuple[str, bool]:
    """The JSON API root to use, and whether requests go without credentials.

    An explicit ``api_root`` wins (anonymous only if it is plain ``http://``:
    a token is never sent in clear text); else ``STORAGE_EMULATOR_HOST``
    (always anonymous, like Google's clients); else the public endpoint.

    Raises:
        ConfigurationError: ``STORAGE_EMULATOR_HOST`` is not a usable host URL.
    """
    if api_root is not None:
        return api_root, api_root.startswith("http://")
    host = os.environ.get(EMULATOR_ENV, "").strip()
    if host:
        if "://" not in host:
            host = "http://" + host
        try:
            return _api_root(host, f"${EMULATOR_ENV}"), True
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{EMULATOR_ENV}={redact_url(os.environ.get(EMULATOR_ENV))!r} is not a host[:port] "
                f"or http(s)://host[:port] URL",
                key=EMULATOR_ENV,
            ) from exc
    return DEFAULT_API_ROOT, False


def check_bucket(bucket: object) -> str:
    """Return ``bucket`` if it is a valid GCS bucket name.

    Raises:
        ConfigurationError: naming the bucket and the rule it breaks.
    """
    if not isinstance(bucket, str) or not bucket:
        raise ConfigurationError(
            f"a GCS store needs a bucket: gs://bucket/prefix, not {bucket!r}", key="bucket"
        )
    rule = (
        "3 to 63 lowercase letters, digits, '-', '_' or '.' (up to 222 with dots, "
        "63 between two dots), starting and ending with a letter or digit"
    )
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigurationError(f"invalid GCS bucket name {bucket!r}: {rule}", key=bucket)
    components = bucket.split(".")
    if any(len(c) > 63 for c in components) or ("." not in bucket and len(bucket) > 63):
        raise ConfigurationError(f"invalid GCS bucket name {bucket!r}: {rule}", key=bucket)
    if bucket.startswith("goog") or "google" in bucket:
        raise ConfigurationError(
            f"invalid GCS bucket name {bucket!r}: names may not start with 'goog' "
            "or contain 'google'",
            key=bucket,
        )
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise ConfigurationError(
        f"invalid GCS bucket name {bucket!r}: an IP address is not a bucket name", key=bucket
    )


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid store prefix ("" or a valid key).

    Raises:
        ConfigurationError: naming the prefix and the rule it breaks.
    """
    return _check_prefix(prefix, "GCS")


def _project(value: object, where: str) -> str:
    if not isinstance(value, str) or not _PROJECT.fullmatch(value):
        raise ConfigurationError(
            f"option 'project' of {where} must be a project id like 'my-project-123', "
            f"not {value!r}",
            key="project",
        )
    return value


def _api_root(value: object, where: str) -> str:
    return service_url(
        "api_root", value, where, "Application Default Credentials or the service_file option"
    )


def _service_file(value: object, where: str) -> str:
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str) or not path or "\x00" in path:
        raise ConfigurationError(
            f"option 'service_file' of {where} must be the path of a credentials JSON file, "
            f"not {value!r}",
            key="service_file",
        )
    return path


def _lean(value: object, where: str) -> bool:
    return boolean("lean", value, where)


def _upload(value: object, where: str) -> UploadMethod:
    for method in _UPLOAD_METHODS:
        if value == method:
            return method
    raise ConfigurationError(
        f"option 'upload' of {where} must be 'auto', 'composite' or 'resumable', not {value!r}",
        key="upload",
    )


def _concurrency(value: object, where: str) -> int:
    return _bounded_int("concurrency", value, where, *_CONCURRENCY)


def _part_size_mb(value: object, where: str) -> int:
    return _bounded_int("part_size_mb", value, where, *_PART_SIZE_MB)


def _max_connections(value: object, where: str) -> int:
    return _bounded_int("max_connections", value, where, *_MAX_CONNECTIONS)


def _connect_timeout(value: object, where: str) -> float:
    return seconds("connect_timeout", value, where)


def _read_timeout(value: object, where: str) -> float:
    return seconds("read_timeout", value, where)


def _option(
    values: Mapping[str, object], name: str, check: Callable[[object, str], T], where: str
) -> T | None:
    value = values.get(name)
    return None if value is None else check(value, where)


def parse_options(url: SplitResult, options: Mapping[str, object]) -> GCSOptions:
    """Read a ``gs://`` (or ``gcs://``) URL and keyword options into `GCSOptions`.

    Raises:
        ConfigurationError: a bad bucket, prefix or option value, an unknown
            option, an option given twice, or credentials, a port or a fragment in the URL.
    """
    scheme = url.scheme.lower()
    text = redact_url(SplitResult(url.scheme, url.netloc, url.path, url.query, "").geturl())
    if scheme not in ("gs", "gcs"):
        raise ConfigurationError(f"not a gs:// or gcs:// URL: {text!r}", key=text)
    if "@" in url.netloc:
        raise ConfigurationError(
            "GCS store URLs must not carry credentials (gs://user:secret@bucket): they come "
            "from Application Default Credentials or the service_file option",
            key=f"{scheme}://***@" + url.netloc.rsplit("@", 1)[1],
        )
    if ":" in url.netloc:
        raise ConfigurationError(
            f"GCS store URL {text!r} names a port; give the endpoint with "
            "?api_root=http://host:port (or set STORAGE_EMULATOR_HOST)",
            key=text,
        )
    if url.fragment:
        raise ConfigurationError(f"GCS store URL {text!r} must not have a #fragment", key=text)
    bucket = check_bucket(url.netloc)
    prefix = check_prefix(unquote(url.path).strip("/"))
    where = f"gs://{bucket}"
    values = merge_options(text, url.query, options, OPTION_NAMES, "GCS")
    return GCSOptions(
        bucket,
        prefix,
        project=_option(values, "project", _project, where),
        api_root=_option(values, "api_root", _api_root, where),
        service_file=_option(values, "service_file", _service_file, where),
        upload=_option(values, "upload", _upload, where) or "auto",
        concurrency=_option(values, "concurrency", _concurrency, where),
        part_size_mb=_option(values, "part_size_mb", _part_size_mb, where),
        max_connections=_option(values, "max_connections", _max_connections, where)
        or DEFAULT_MAX_CONNECTIONS,
        connect_timeout=_option(values, "connect_timeout", _connect_timeout, where),
        read_timeout=_option(values, "read_timeout", _read_timeout, where),
        lean=_option(values, "lean", _lean, where) is not False,
    )
