"""The options of an S3 store, from an ``s3://`` URL and keyword arguments.

``s3://bucket/prefix?region=...&endpoint=...&use_path_style=true&concurrency=8&part_size_mb=16``

* bucket = the URL's host; prefix = its path without leading or trailing ``/``
  (percent-decoded, and following the key rules);
* ``region``: the bucket's region (default: the AWS configuration's, then ``us-east-1``);
* ``endpoint``: an ``http(s)://host[:port]`` URL for S3-compatible services;
* ``use_path_style``: ``true`` / ``false`` (default: botocore decides);
* ``concurrency``: the store's default parts / ranges in flight, 1..100;
* ``part_size_mb``: the store's default part / range size in MiB, 5..5120;
* ``connect_timeout`` / ``read_timeout``: seconds to wait for a connection
  (default 10) and for each read of a response (default 60);
* ``lean``: ``true`` (default) / ``false``: GET, HEAD, PUT and UploadPart go on
  asyncstore's own lean request path, or through aiobotocore like the rest.

Anything else is a `ConfigurationError` naming it. Credentials
never come from the URL: they come from the standard AWS chain.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import SplitResult, unquote

from ..._errors import ConfigurationError, redact_url
from .._url import boolean, merge_options, seconds, service_url
from .._url import bounded_int as _bounded_int
from .._url import check_prefix as _check_prefix


def _seconds(name: str) -> Callable[[object, str], float]:
    return lambda value, where: seconds(name, value, where)


__all__ = ["OPTION_NAMES", "S3Options", "parse_options"]

#: Every option of an S3 store, in the URL query or as a keyword argument.
OPTION_NAMES = (
    "region",
    "endpoint",
    "use_path_style",
    "concurrency",
    "part_size_mb",
    "connect_timeout",
    "read_timeout",
    "lean",
)

T = TypeVar("T")
_CONCURRENCY = (1, 100)
_PART_SIZE_MB = (5, 5120)
# S3's bucket naming rules (3-63 of a-z 0-9 . -), plus "_" of older buckets and other services.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclasses.dataclass(frozen=True, slots=True)
class S3Options:
    """Where an S3 store lives and how it is reached.

    Attributes:
        bucket: The bucket name.
        prefix: Key prefix under which the store's keys live ("" for the bucket's root).
        region: The region, or None to take it from the AWS configuration (then ``us-east-1``).
        endpoint: An endpoint URL for S3-compatible services, or None for AWS.
        use_path_style: Path-style addressing (True), virtual-hosted style
            (False), or None to let botocore choose.
        concurrency: The store's default transfers in flight, or None.
        part_size_mb: The store's default part / range size in MiB, or None.
        connect_timeout: Seconds to wait for a connection, or None (10).
        read_timeout: Seconds to wait for each read of a response, or None (60).
        lean: Whether the hot requests take the lean path (None: yes).
    """

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint: str | None = None
    use_path_style: bool | None = None
    concurrency: int | None = None
    part_size_mb: int | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    lean: bool | None = None

    def __post_init__(self) -> None:
        check_bucket(self.bucket)
        check_prefix(self.prefix)
        where = f"s3://{self.bucket}"
        checks = (
            ("region", _region),
            ("endpoint", _endpoint),
            ("use_path_style", _bool("use_path_style")),
            ("concurrency", _concurrency),
            ("part_size_mb", _part_size_mb),
            ("connect_timeout", _seconds("connect_timeout")),
            ("read_timeout", _seconds("read_timeout")),
            ("lean", _bool("lean")),
        )
        for name, check in checks:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check(value, where))

    @property
    def url(self) -> str:
        """The store's ``s3://bucket/prefix`` location (without options)."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def check_bucket(bucket: object) -> str:
    """Return ``bucket`` if it is a valid bucket name.

    Raises:
        ConfigurationError: naming the bucket and the rule it breaks.
    """
    if not isinstance(bucket, str) or not bucket:
        raise ConfigurationError(
            f"an S3 store needs a bucket: s3://bucket/prefix, not {bucket!r}", key="bucket"
        )
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigurationError(
            f"invalid S3 bucket name {bucket!r}: 3 to 63 lowercase letters, digits, "
            "'.', '-' or '_', starting and ending with a letter or digit",
            key=bucket,
        )
    return bucket


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid store prefix ("" or a valid key).

    Raises:
        ConfigurationError: naming the prefix and the rule it breaks.
    """
    return _check_prefix(prefix, "S3")


def _region(value: object, where: str) -> str:
    if not isinstance(value, str) or not _REGION.fullmatch(value):
        raise ConfigurationError(
            f"option 'region' of {where} must be a region name like 'eu-west-1', not {value!r}",
            key="region",
        )
    return value


def _endpoint(value: object, where: str) -> str:
    return service_url("endpoint", value, where, "the AWS credential chain")


def _bool(name: str) -> Callable[[object, str], bool]:
    return lambda value, where: boolean(name, value, where)


def _concurrency(value: object, where: str) -> int:
    return _bounded_int("concurrency", value, where, *_CONCURRENCY)


def _part_size_mb(value: object, where: str) -> int:
    return _bounded_int("part_size_mb", value, where, *_PART_SIZE_MB)


def parse_options(url: SplitResult, options: Mapping[str, object]) -> S3Options:
    """Read an ``s3://`` URL and keyword options into `S3Options`.

    Raises:
        ConfigurationError: a bad bucket, prefix or option value, an unknown
            option, an option given twice, or credentials in the URL.
    """
    text = redact_url(SplitResult(url.scheme, url.netloc, url.path, url.query, "").geturl())
    if url.scheme.lower() != "s3":
        raise ConfigurationError(f"not an s3:// URL: {text!r}", key=text)
    if "@" in url.netloc:
        raise ConfigurationError(
            "S3 store URLs must not carry credentials (s3://user:password@bucket): they come "
            "from the AWS credential chain (environment, shared config, instance role)",
            key="s3://***@" + url.netloc.rsplit("@", 1)[1],
        )
    if ":" in url.netloc:
        raise ConfigurationError(
            f"S3 store URL {text!r} names a port; give the endpoint with ?endpoint=http://host:port",
            key=text,
        )
    if url.fragment:
        raise ConfigurationError(f"S3 store URL {text!r} must not have a #fragment", key=text)
    bucket = check_bucket(url.netloc)
    prefix = check_prefix(unquote(url.path).strip("/"))
    values = merge_options(text, url.query, options, OPTION_NAMES, "S3")
    return S3Options(
        bucket,
        prefix,
        region=_option(values, "region", _region, text),
        endpoint=_option(values, "endpoint", _endpoint, text),
        use_path_style=_option(values, "use_path_style", _bool("use_path_style"), text),
        concurrency=_option(values, "concurrency", _concurrency, text),
        part_size_mb=_option(values, "part_size_mb", _part_size_mb, text),
        connect_timeout=_option(values, "connect_timeout", _seconds("connect_timeout"), text),
        read_timeout=_option(values, "read_timeout", _seconds("read_timeout"), text),
        lean=_option(values, "lean", _bool("lean"), text),
    )


def _option(
    values: Mapping[str, object], name: str, check: Callable[[object, str], T], where: str
) -> T | None:
    value = values.get(name)
    return None if value is None else check(value, where)
