"""URL-parsing helpers shared by the cloud backends: prefix, option merging and values."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

from .._errors import ConfigurationError, InvalidKeyError, redact_url
from .._keys import validate_key

__all__ = [
    "MAX_TIMEOUT",
    "boolean",
    "bounded_int",
    "check_prefix",
    "merge_options",
    "seconds",
    "service_url",
]


def check_prefix(prefix: object, service: str) -> str:
    """Return ``prefix`` if it is a valid store prefix ("" or a valid key).

    Raises:
        ConfigurationError: naming the prefix and the rule it breaks.
    """
    if not isinstance(prefix, str):
        raise ConfigurationError(f"{service} prefix must be a str, not {prefix!r}", key="prefix")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidKeyError as exc:
            raise ConfigurationError(f"invalid {service} store prefix: {exc}", key=prefix) from exc
    return prefix


def merge_options(
    text: str,
    query: str,
    options: Mapping[str, object],
    names: Sequence[str],
    service: str,
) -> dict[str, object]:
    """The options of a store URL's query string and of keyword arguments, as one dict.

    A keyword left at None counts as not given.

    Raises:
        ConfigurationError: a malformed query, an unknown option, or one given twice
            (twice in the URL, or in the URL and as a keyword); the message names it.
    """
    values: dict[str, object] = {}
    try:
        pairs: list[tuple[str, str]] | None = parse_qsl(
            query, keep_blank_values=True, strict_parsing=bool(query)
        )
    except ValueError:
        pairs = None  # raised below, out of this block: parse_qsl's error quotes a secret
    if pairs is None:
        # Name an option given without a value; any other item may be a secret.
        bare = [item for item in query.split("&") if item in names]
        if bare:
            raise ConfigurationError(
                f"option {bare[0]!r} in {service} store URL {text!r} has no value: "
                f"give it as {bare[0]}=...",
                key=bare[0],
            )
        raise ConfigurationError(
            f"{service} store URL {text!r} has a malformed query string "
            "(every item must be name=value)",
            key=text,
        )
    for name, value in pairs:
        if name not in names:
            raise ConfigurationError(
                f"unknown option {name!r} in {service} store URL {text!r}; "
                f"the options are {', '.join(names)}",
                key=name,
            )
        if name in values:
            raise ConfigurationError(
                f"option {name!r} is given twice in {service} store URL {text!r}", key=name
            )
        values[name] = value
    for name, given in options.items():
        if name not in names:
            raise ConfigurationError(
                f"unknown option {name!r} for {service} store {text!r}; "
                f"the options are {', '.join(names)}",
                key=name,
            )
        if given is None:
            continue
        if name in values:
            raise ConfigurationError(
                f"option {name!r} is given both in the URL {text!r} and as a keyword argument",
                key=name,
            )
        values[name] = given
    return values


def boolean(name: str, value: object, where: str) -> bool:
    """A bool option: a bool, or "true" / "false" (any case) from a URL.

    Raises:
        ConfigurationError: naming the option and the store.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigurationError(
        f"option {name!r} of {where} must be true or false, not {value!r:.80}", key=name
    )


def bounded_int(name: str, value: object, where: str, low: int, high: int) -> int:
    """An integer option from ``low`` to ``high``, given as an int or as decimal digits.

    Raises:
        ConfigurationError: naming the option, the store and the bounds.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value):
        number = int(value)
    if number is None or not low <= number <= high:
        raise ConfigurationError(
            f"option {name!r} of {where} must be an integer from {low} to {high}, not {value!r}",
            key=name,
        )
    return number


#: The longest connect or read timeout a backend accepts, in seconds (one day).
MAX_TIMEOUT = 86400.0


def seconds(name: str, value: object, where: str) -> float:
    """A timeout option in seconds: a positive, finite number (or its decimal text).

    Raises:
        ConfigurationError: naming the option and the store.
    """
    # (an int too large for a float is out of range anyway: float() would overflow)
    numeric = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, int) and abs(value) > MAX_TIMEOUT)
    )
    decimal = isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", value)
    number = float(value) if numeric or decimal else None  # type: ignore[arg-type]
    if number is None or not 0 < number <= MAX_TIMEOUT:
        raise ConfigurationError(
            f"option {name!r} of {where} must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT:g}, not {value!r}",
            key=name,
        )
    return number


def service_url(name: str, value: object, where: str, credentials_from: str) -> str:
    """An endpoint option: ``http(s)://host[:port]``, returned as ``scheme://netloc``.

    Args:
        name: The option's name, for the messages.
        value: What was given.
        where: The store, for the messages.
        credentials_from: Where credentials come from instead, for the message
            that rejects ``user:password@`` in the URL.

    Raises:
        ConfigurationError: naming the option, with the value redacted.
    """
    if not isinstance(value, str):
        raise ConfigurationError(
            f"option {name!r} of {where} must be a URL string, not {value!r}", key=name
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsed only to reject a bad port
    except ValueError as exc:
        raise ConfigurationError(
            f"option {name!r} of {where} is not a valid URL: {redact_url(value)!r} ({exc})",
            key=name,
        ) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"option {name!r} of {where} must be an http:// or https:// URL with a host, "
            f"not {redact_url(value)!r}",
            key=name,
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"option {name!r} of {where} must not carry credentials; they come from "
            f"{credentials_from}",
            key=name,
        )
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ConfigurationError(
            f"option {name!r} of {where} must be scheme://host[:port] only, "
            f"not {redact_url(value)!r}",
            key=name,
        )
    return f"{parts.scheme}://{parts.netloc}"
