"""Where an Azure store lives and how it signs in: URLs, options, credentials.

URLs (``az://`` and ``azure://`` are the same; ``abfs://`` is accepted for
the names other tools use):

    az://container/prefix?account=NAME
    az://container/prefix                                  (account from the connection string)
    abfs://container@NAME.dfs.core.windows.net/prefix     (the Blob endpoint of that account)

Options, in the URL query or as keyword arguments: ``account``,
``account_url``, ``anonymous``, ``transport``, ``concurrency``,
``part_size_mb``, ``connect_timeout``, ``read_timeout``, ``lean``. Secrets are
keyword arguments only (``connection_string``, ``account_key``,
``sas_token``, ``credential``): in a URL they would end up in logs and shell
histories, so they are rejected there.

How the store signs in, first match wins:

1. ``connection_string=`` (alone);
2. ``account_key=``, ``sas_token=`` or ``credential=`` (an azure-core credential
   object), or ``anonymous=True`` (public containers);
3. the ``AZURE_STORAGE_CONNECTION_STRING`` environment variable, unless an
   ``account_url`` is given or the URL names another account;
4. ``DefaultAzureCredential`` from ``azure-identity`` (an optional install).

No secret is ever part of a message, a repr or `describe`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from azure.core.pipeline.transport import AsyncHttpTransport

from ..._errors import ConfigurationError, redact_url
from .._url import boolean
from .._url import bounded_int as _check_int
from .._url import check_prefix as _check_prefix
from .._url import seconds as _seconds

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "CONNECTION_STRING_ENV",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "KEYWORD_ONLY",
    "OPTION_NAMES",
    "AzureConfig",
    "merge",
    "parse_connection_string",
    "parse_url",
    "resolve",
]

#: The environment variable read for a connection string.
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
#: Options that may appear in the URL query or as keyword arguments.
OPTION_NAMES = (
    "account",
    "account_url",
    "anonymous",
    "transport",
    "concurrency",
    "part_size_mb",
    "connect_timeout",
    "read_timeout",
    "lean",
)
#: Options that carry secrets: keyword arguments only.
KEYWORD_ONLY = ("connection_string", "account_key", "sas_token", "credential")
#: Azurite's well-known development account (public; the same in every install).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
TRANSPORTS = ("auto", "httpx", "aiohttp")
#: Seconds to wait for a connection, and for each read (or write) on one, by default.
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_READ_TIMEOUT = 120.0

_SCHEMES = ("az", "azure", "abfs")
_CONTAINER = re.compile(r"\A[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
_SPECIAL_CONTAINERS = ("$root", "$web", "$logs")
_ACCOUNT = re.compile(r"\A[a-z0-9]{3,24}\Z")
_ENDPOINT_HOST = re.compile(
    r"\A(?P<account>[a-z0-9]{3,24})\.(?:dfs|blob)\.(?P<suffix>[a-z0-9.-]+)\Z"
)
_CONCURRENCY = (1, 256)
_PART_SIZE_MB = (1, 4000)


@dataclasses.dataclass(frozen=True, slots=True)
class AzureConfig:
    """A resolved Azure store: where it is and how to sign in (secrets hidden from repr).

    Attributes:
        container: The container name.
        prefix: Key prefix under which the store's keys live ("" for the container's root).
        account: The storage account name, when known.
        account_url: The Blob service endpoint (``https://NAME.blob.core.windows.net``,
            or Azurite's ``http://127.0.0.1:10000/devstoreaccount1``); None when a
            connection string gives it.
        auth: How requests are signed: ``"connection-string"``, ``"account-key"``,
            ``"sas"``, ``"credential"``, ``"anonymous"`` or ``"default-credential"``.
        transport: ``"auto"``, ``"httpx"``, ``"aiohttp"`` (asyncio only), or an
            azure-core ``AsyncHttpTransport`` object (which the store then owns and closes).
        concurrency: The store's default parts / ranges in flight, or None.
        part_size_mb: The store's default part / range size in MiB, or None.
        connect_timeout: Seconds to wait for a connection, or None (30).
        read_timeout: Seconds to wait for each read or write on a connection, or
            None (120): a stalled response fails with a TimeoutError, which the
            Store retries.
        lean: Whether Get Blob, Get Blob Properties, Put Blob and Put Block take
            asyncstore's lean request path (account key, SAS or anonymous access).
    """

    container: str
    prefix: str = ""
    account: str | None = None
    account_url: str | None = None
    auth: str = "default-credential"
    transport: str | AsyncHttpTransport[Any, Any] = "auto"
    concurrency: int | None = None
    part_size_mb: int | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    lean: bool = True
    connection_string: str | None = dataclasses.field(default=None, repr=False)
    account_key: str | None = dataclasses.field(default=None, repr=False)
    sas_token: str | None = dataclasses.field(default=None, repr=False)
    credential: Any = dataclasses.field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The store's ``az://container/prefix`` location (without options)."""
        base = f"az://{self.container}"
        return f"{base}/{self.prefix}" if self.prefix else base

    @property
    def timeouts(self) -> tuple[float, float]:
        """(connect, read) seconds for the transports the backend makes (defaults filled in)."""
        return (
            self.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            self.read_timeout or DEFAULT_READ_TIMEOUT,
        )

    def secrets(self) -> list[str]:
        """The secret strings of this configuration (to scrub them from messages)."""
        found: list[str] = []
        if self.account_key:
            found.append(self.account_key)
        if self.sas_token:
            found.append(self.sas_token)
        if self.connection_string:
            fields = parse_connection_string(self.connection_string, strict=False)
            found.extend(
                value
                for name, value in fields.items()
                if name.lower() in ("accountkey", "sharedaccesssignature") and value
            )
        return found


def parse_connection_string(text: str, *, strict: bool = True) -> dict[str, str]:
    """The ``Name=value`` fields of an Azure Storage connection string.

    Raises:
        ConfigurationError: a field is not ``Name=value`` (its value is never shown).
    """
    fields: dict[str, str] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            if strict:
                raise ConfigurationError(
                    "the Azure connection string is malformed: every field must be "
                    "Name=value, separated by ';'",
                    key="connection_string",
                )
            continue
        fields[name.strip()] = value.strip()
    return fields


def _connection_account(fields: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The account name and Blob endpoint a connection string names."""
    lower = {name.lower(): value for name, value in fields.items()}
    if lower.get("usedevelopmentstorage", "").lower() == "true":
        return AZURITE_ACCOUNT, f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"
    account = lower.get("accountname") or None
    endpoint = lower.get("blobendpoint") or None
    if endpoint is None and account is not None:
        protocol = lower.get("defaultendpointsprotocol", "https")
        suffix = lower.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    return account, endpoint


def _check_connection_string(text: str) -> tuple[str | None, str]:
    fields = parse_connection_string(text)
    account, endpoint = _connection_account(fields)
    if endpoint is None:
        raise ConfigurationError(
            "the Azure connection string names no account: it needs AccountName=... "
            "(or BlobEndpoint=..., or UseDevelopmentStorage=true)",
            key="connection_string",
        )
    return account, _check_account_url(endpoint, "the connection string's BlobEndpoint")


def check_container(container: object) -> str:
    """Return ``container`` if it is a valid container name.

    Raises:
        ConfigurationError: naming the container and the rule it breaks.
    """
    if not isinstance(container, str) or not container:
        raise ConfigurationError(
            f"an Azure store needs a container: az://container/prefix, not {container!r}",
            key="container",
        )
    if container not in _SPECIAL_CONTAINERS and not _CONTAINER.match(container):
        raise ConfigurationError(
            f"invalid Azure container name {container!r}: 3 to 63 lowercase letters, digits "
            "and single '-', starting and ending with a letter or digit",
            key=container,
        )
    return container


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid store prefix ("" or a valid key).

    Raises:
        ConfigurationError: naming the prefix and the rule it breaks.
    """
    return _check_prefix(prefix, "Azure")


def _check_account(value: object, where: str) -> str:
    if not isinstance(value, str) or not _ACCOUNT.match(value):
        raise ConfigurationError(
            f"option 'account' of {where} must be a storage account name "
            f"(3 to 24 lowercase letters and digits), not {value!r}",
            key="account",
        )
    return value


def _check_account_url(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(
            f"option 'account_url' of {where} must be a URL string, not {type(value).__name__}",
            key="account_url",
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsed only to reject a bad port
    except ValueError as exc:
        raise ConfigurationError(
            f"option 'account_url' of {where} is not a valid URL ({exc})", key="account_url"
        ) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"option 'account_url' of {where} must be an http:// or https:// URL with a host",
            key="account_url",
        )
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigurationError(
            f"option 'account_url' of {where} must be scheme://host[:port][/account] only: "
            "no credentials, query string (pass a SAS token as sas_token=) or fragment",
            key="account_url",
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _account_from_url(account_url: str) -> str | None:
    parts = urlsplit(account_url)
    match = _ENDPOINT_HOST.match(parts.hostname or "")
    if match:
        return match["account"]
    segment = parts.path.strip("/").split("/")[0]  # Azurite: http://host:port/account
    return segment if _ACCOUNT.match(segment) else None


def _check_secret(name: str, value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"option {name!r} of {where} must be a non-empty str (not shown here)", key=name
        )
    return value.strip()


def parse_url(url: SplitResult) -> tuple[str, str, dict[str, str]]:
    """Read an ``az://``, ``azure://`` or ``abfs://`` URL.

    Returns:
        The container, the prefix, and the options found in the URL (its query,
        and ``account`` / ``account_url`` from an ``abfs://container@host`` form).

    Raises:
        ConfigurationError: a bad scheme, container, host, prefix or query string.
    """
    scheme = url.scheme.lower()
    shown = SplitResult(url.scheme, url.netloc.rpartition("@")[2], url.path, "", "").geturl()
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"not an Azure URL (az://, azure://, abfs://): {shown!r}", key=shown
        )
    if url.fragment:
        raise ConfigurationError(f"Azure store URL {shown!r} must not have a #fragment", key=shown)
    found: dict[str, str] = {}
    container, at, host = url.netloc.rpartition("@")
    if not at:
        container, host = host, ""
    if ":" in container:
        raise ConfigurationError(
            f"Azure store URLs must not carry credentials ({scheme}://user:secret@...): "
            "pass them as keyword arguments (account_key=, sas_token=, connection_string=)",
            key=f"{scheme}://***@{host}" if host else f"{scheme}://***",
        )
    if host:
        match = _ENDPOINT_HOST.match(host.lower())
        if not match:
            raise ConfigurationError(
                f"Azure store URL {url.scheme}://{container}@{host}/... must name the account "
                "as NAME.dfs.core.windows.net or NAME.blob.core.windows.net (or another "
                "cloud's suffix); for an emulator or custom endpoint use account_url=",
                key=host,
            )
        found["account"] = match["account"]
        if match["suffix"] != "core.windows.net":  # another cloud: its endpoint, not the default
            found["account_url"] = f"https://{match['account']}.blob.{match['suffix']}"
    check_container(container)
    prefix = check_prefix(unquote(url.path).strip("/"))
    try:
        query: list[tuple[str, str]] | None = parse_qsl(
            url.query, keep_blank_values=True, strict_parsing=bool(url.query)
        )
    except ValueError:
        query = None  # raised below, out of this block: parse_qsl's error quotes a secret
    if query is None:
        raise ConfigurationError(
            f"Azure store URL {shown!r} has a malformed query string "
            "(every item must be name=value)",
            key=shown,
        )
    for name, value in query:
        if name in KEYWORD_ONLY:
            raise ConfigurationError(
                f"option {name!r} carries a secret and must not be in the store URL {shown!r} "
                "(URLs end up in logs); pass it as a keyword argument",
                key=name,
            )
        if name not in OPTION_NAMES:
            raise ConfigurationError(
                f"unknown option {name!r} in Azure store URL {shown!r}; the options are "
                f"{', '.join(OPTION_NAMES + KEYWORD_ONLY)}",
                key=name,
            )
        if name in found:
            raise ConfigurationError(
                f"option {name!r} is given twice in Azure store URL {shown!r}", key=name
            )
        found[name] = value
    return container, prefix, found


def _identity_available() -> bool:
    return importlib.util.find_spec("azure.identity") is not None


@dataclasses.dataclass(frozen=True, slots=True)
class _Store:
    """What every way of signing in starts from: the checked options of one store.

    Attributes:
        where: The store, for messages.
        common: The AzureConfig fields that do not depend on how it signs in.
        account: The account name, from ``account`` or ``account_url``, or None.
        account_url: The ``account_url`` option, checked, or None.
    """

    where: str
    common: Mapping[str, Any]
    account: str | None
    account_url: str | None

    def config(self, **fields: Any) -> AzureConfig:
        return AzureConfig(**self.common, **fields)

    def endpoint(self) -> str:
        """``account_url``, or the public cloud's endpoint of the account."""
        if self.account_url is not None:
            return self.account_url
        if self.account is None:
            raise ConfigurationError(
                f"Azure store {self.where!r} needs an account: "
                "az://container/prefix?account=NAME, or account_url=",
                key="account",
            )
        return f"https://{self.account}.blob.core.windows.net"


def resolve(
    container: str,
    prefix: str,
    options: Mapping[str, object],
    *,
    environ: Mapping[str, str] | None = None,
    where: str | None = None,
) -> AzureConfig:
    """Check every option and decide how the store signs in.

    The options every mode shares are checked first (`_check_options`); then
    the one way of signing in that was given is resolved by its own function,
    in the order of the module's documentation: a connection string, an account
    key, a SAS token, a credential object, anonymous access, the environment's
    connection string, DefaultAzureCredential.

    Args:
        container: The container name.
        prefix: The key prefix.
        options: Options from the URL and keyword arguments, merged.
        environ: The environment to read ``AZURE_STORAGE_CONNECTION_STRING``
            from (default: ``os.environ``).
        where: The store, for messages (default: ``az://container/prefix``).

    Raises:
        ConfigurationError: an unknown option, a bad value, options that
            contradict each other, no way to find the account, or
            ``azure-identity`` missing when DefaultAzureCredential is needed.
    """
    check_container(container)
    check_prefix(prefix)
    where = where or (f"az://{container}/{prefix}" if prefix else f"az://{container}")
    given = {name: value for name, value in options.items() if value is not None}
    store = _check_options(container, prefix, options, given, where)
    anonymous = boolean("anonymous", given.get("anonymous", False), where)
    chosen = [name for name in KEYWORD_ONLY if name in given] + (["anonymous"] if anonymous else [])
    if len(chosen) > 1:
        raise ConfigurationError(
            f"Azure store {where!r} takes one way to sign in; got {', '.join(chosen)}",
            key=chosen[1],
        )
    if "connection_string" in given:
        return _with_connection_string(store, given["connection_string"])
    if "account_key" in given:
        return _with_account_key(store, given["account_key"])
    if "sas_token" in given:
        return _with_sas_token(store, given["sas_token"])
    if "credential" in given:
        return _with_credential(store, given["credential"])
    if anonymous:
        return store.config(account=store.account, account_url=store.endpoint(), auth="anonymous")
    from_env = _from_environment(store, os.environ if environ is None else environ)
    if from_env is not None:
        return from_env
    return _with_default_credential(store)


def _check_options(
    container: str,
    prefix: str,
    options: Mapping[str, object],
    given: Mapping[str, object],
    where: str,
) -> _Store:
    """Check the options that do not depend on how the store signs in."""
    unknown = sorted(set(options) - set(OPTION_NAMES) - set(KEYWORD_ONLY))
    if unknown:
        raise ConfigurationError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for Azure store {where!r}; the options are {', '.join(OPTION_NAMES + KEYWORD_ONLY)}",
            key=unknown[0],
        )
    account = _check_account(given["account"], where) if "account" in given else None
    account_url = (
        _check_account_url(given["account_url"], where) if "account_url" in given else None
    )
    boolean("anonymous", given.get("anonymous", False), where)
    transport = given.get("transport", "auto")
    if not isinstance(transport, AsyncHttpTransport) and transport not in TRANSPORTS:
        raise ConfigurationError(
            f"option 'transport' of {where} must be one of {', '.join(TRANSPORTS)} or an "
            f"azure-core AsyncHttpTransport object, not {transport!r}",
            key="transport",
        )
    concurrency = (
        _check_int("concurrency", given["concurrency"], where, *_CONCURRENCY)
        if "concurrency" in given
        else None
    )
    part_size_mb = (
        _check_int("part_size_mb", given["part_size_mb"], where, *_PART_SIZE_MB)
        if "part_size_mb" in given
        else None
    )
    timeouts: dict[str, float] = {
        name: _seconds(name, given[name], where)
        for name in ("connect_timeout", "read_timeout")
        if name in given
    }
    if timeouts and not isinstance(transport, str):
        raise ConfigurationError(
            f"Azure store {where!r}: {' and '.join(timeouts)} cannot be combined with a "
            "transport object, which has its own timeouts (HttpxTransport(connect_timeout=..., "
            "read_timeout=...))",
            key=next(iter(timeouts)),
        )
    common: dict[str, Any] = {
        "container": container,
        "prefix": prefix,
        "transport": transport,
        "concurrency": concurrency,
        "part_size_mb": part_size_mb,
        "lean": boolean("lean", given.get("lean", True), where),
        **timeouts,
    }
    if account_url is not None:
        url_account = _account_from_url(account_url)
        if account is not None and url_account is not None and url_account != account:
            raise ConfigurationError(
                f"Azure store {where!r} names the account {account!r}, but its account_url "
                f"is for {url_account!r}",
                key="account",
            )
        account = account or url_account
    return _Store(where, common, account, account_url)


def _with_connection_string(store: _Store, value: object) -> AzureConfig:
    """``connection_string=``: the account and endpoint come from it (no account_url)."""
    where = store.where
    text = _check_secret("connection_string", value, where)
    if store.account_url is not None:
        raise ConfigurationError(
            f"Azure store {where!r}: give either connection_string or account_url, not both",
            key="account_url",
        )
    cs_account, endpoint = _check_connection_string(text)
    if store.account is not None and cs_account is not None and cs_account != store.account:
        raise ConfigurationError(
            f"Azure store {where!r} names the account {store.account!r}, but the connection "
            f"string is for {cs_account!r}",
            key="account",
        )
    return store.config(
        account=cs_account or store.account,
        account_url=endpoint,
        auth="connection-string",
        connection_string=text,
    )


def _with_account_key(store: _Store, value: object) -> AzureConfig:
    """``account_key=``: Shared Key signing, which needs the account's name."""
    account_url = store.endpoint()
    key = _check_secret("account_key", value, store.where)
    if store.account is None:  # so account_url was given, and names no account
        raise ConfigurationError(
            f"Azure store {store.where!r}: an account key needs the account name, and "
            f"option 'account_url' ({redact_url(account_url)!r}) names none: give "
            "option 'account', or an account_url like https://NAME.blob.core."
            "windows.net or http://host:port/NAME",
            key="account_url",
        )
    return store.config(
        account=store.account, account_url=account_url, auth="account-key", account_key=key
    )


def _with_sas_token(store: _Store, value: object) -> AzureConfig:
    """``sas_token=``: a shared access signature (a leading ``?`` is dropped)."""
    account_url = store.endpoint()
    token = _check_secret("sas_token", value, store.where).lstrip("?")
    return store.config(account=store.account, account_url=account_url, auth="sas", sas_token=token)


def _with_credential(store: _Store, credential: object) -> AzureConfig:
    """``credential=``: an azure-core credential object (the caller keeps and closes it)."""
    account_url = store.endpoint()
    where = store.where
    if isinstance(credential, str):
        raise ConfigurationError(
            f"option 'credential' of {where} must be a credential object "
            "(for a key or SAS token use account_key= or sas_token=)",
            key="credential",
        )
    if not _is_credential(credential):
        raise ConfigurationError(
            f"option 'credential' of {where} must be an azure-core credential "
            "(a token credential with get_token, AzureNamedKeyCredential or "
            f"AzureSasCredential), not {type(credential).__name__}",
            key="credential",
        )
    return store.config(
        account=store.account, account_url=account_url, auth="credential", credential=credential
    )


def _from_environment(store: _Store, env: Mapping[str, str]) -> AzureConfig | None:
    """``AZURE_STORAGE_CONNECTION_STRING``, unless account_url or another account is given."""
    env_text = env.get(CONNECTION_STRING_ENV, "").strip()
    if not env_text or store.account_url is not None:
        return None
    try:
        env_account, endpoint = _check_connection_string(env_text)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{CONNECTION_STRING_ENV} is set but unusable: {exc}", key=CONNECTION_STRING_ENV
        ) from exc
    if store.account is not None and env_account != store.account:
        return None
    return store.config(
        account=env_account,
        account_url=endpoint,
        auth="connection-string",
        connection_string=env_text,
    )


def _with_default_credential(store: _Store) -> AzureConfig:
    """No secret given: DefaultAzureCredential, from azure-identity (an optional install)."""
    where = store.where
    if store.account_url is None and store.account is None:
        raise ConfigurationError(
            f"Azure store {where!r} needs an account: az://container/prefix?account=NAME, "
            f"abfs://container@NAME.dfs.core.windows.net/prefix, account_url=, "
            f"connection_string= or {CONNECTION_STRING_ENV}",
            key="account",
        )
    account_url = store.endpoint()
    if not _identity_available():
        raise ConfigurationError(
            f"Azure store {where!r} has no credential (account_key=, sas_token=, credential=, "
            f"connection_string= or {CONNECTION_STRING_ENV}) and DefaultAzureCredential "
            "needs azure-identity, which is not installed: pip install azure-identity",
            key="credential",
        )
    return store.config(account=store.account, account_url=account_url, auth="default-credential")


def merge(
    url_options: Mapping[str, str], keywords: Mapping[str, object], where: str
) -> dict[str, object]:
    """The URL's options and the keyword arguments together (each option given once).

    Raises:
        ConfigurationError: an option is both in the URL and a keyword argument.
    """
    merged: dict[str, object] = dict(url_options)
    for name, value in keywords.items():
        if value is None:  # a keyword left at None is an option not given
            continue
        if name in merged:
            raise ConfigurationError(
                f"option {name!r} is given both in the URL {where!r} and as a keyword argument",
                key=name,
            )
        merged[name] = value
    return merged


def _is_credential(value: object) -> bool:
    """Whether ``value`` is a credential the Blob client takes (other than a str)."""
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential

    if isinstance(value, (AzureNamedKeyCredential, AzureSasCredential)):
        return True
    if isinstance(value, dict):
        return {"account_name", "account_key"} <= set(value)
    return callable(getattr(value, "get_token", None)) or callable(
        getattr(value, "get_token_info", None)
    )
