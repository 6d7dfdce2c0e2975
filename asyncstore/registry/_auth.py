"""Who may do what: htpasswd (bcrypt) Basic auth, static bearer tokens, read or read-write users.

Secrets never leave this module: error messages and log lines name users,
files and line numbers, never a password, a token or a hash. Every comparison
of a secret is constant-time (`hmac.compare_digest`, bcrypt's own check), and
an unknown user costs the same bcrypt check as a known one, so response times
do not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import anyio.to_thread

from .._errors import ConfigurationError
from ._http import RegistryError

__all__ = ["Access", "Authenticator", "Identity", "hash_token", "load_htpasswd", "load_tokens"]

log = logging.getLogger("asyncstore.registry")

Access = Literal["read", "write"]

_USER = re.compile(r"[A-Za-z0-9._@+-]{1,128}")
_BCRYPT = re.compile(rb"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}")
_TOKEN_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: Verified (user, password) pairs remembered, keyed by an HMAC with a per-process key.
_CACHE_SIZE = 1024
#: A bcrypt hash of a random password: what an unknown user's password is checked against.
_DUMMY_HASH = b"$2b$10$C6UzMDM.H6dfI/f/IKxGhu9GiqFyCbn3xSmXhSGkoR7Xc0RMUfvXK"

REALM = "asyncstore-registry"


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated user (or the anonymous one) and what it may do.

    Attributes:
        user: The user name (``""`` for anonymous requests).
        access: ``"read"`` (pull) or ``"write"`` (pull, push and delete).
    """

    user: str
    access: Access

    @property
    def can_write(self) -> bool:
        """Whether this identity may push and delete."""
        return self.access == "write"


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of a bearer token: what a token file may hold instead of the token."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what} file {str(path)!r}: {exc.strerror}", key=str(path)
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"the {what} file {str(path)!r} is not UTF-8 text", key=str(path)
        ) from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((number, line))
    return out


def load_htpasswd(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read an htpasswd file of bcrypt hashes (``htpasswd -B``): ``user:$2y$...`` lines.

    Raises:
        ConfigurationError: unreadable file, a malformed line or a hash that is not
            bcrypt (naming the file and the line number, never the hash).
    """
    p = Path(path)
    users: dict[str, bytes] = {}
    for number, line in _lines(p, "htpasswd"):
        user, sep, hashed = line.partition(":")
        if not sep or not _USER.fullmatch(user):
            raise ConfigurationError(
                f"htpasswd file {str(p)!r}, line {number}: expected user:bcrypt-hash", key=str(p)
            )
        raw = hashed.encode("ascii", "replace")
        if not _BCRYPT.fullmatch(raw):
            raise ConfigurationError(
                f"htpasswd file {str(p)!r}, line {number}: the hash of user {user!r} is not "
                "bcrypt (make it with htpasswd -B)",
                key=str(p),
            )
        users[user] = raw
    return users


def load_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a bearer-token file: ``user:token`` or ``user:sha256:<hex of the token>`` lines.

    Returns:
        The ``sha256:<hex>`` of each token, mapped to its user.

    Raises:
        ConfigurationError: unreadable file or a malformed line (naming the line, not the token).
    """
    p = Path(path)
    tokens: dict[str, str] = {}
    for number, line in _lines(p, "token"):
        user, sep, token = line.partition(":")
        if not sep or not _USER.fullmatch(user) or len(token) < 16:
            raise ConfigurationError(
                f"token file {str(p)!r}, line {number}: expected user:token "
                "(a token of at least 16 characters) or user:sha256:<hex>",
                key=str(p),
            )
        digest = token if _TOKEN_DIGEST.fullmatch(token) else hash_token(token)
        tokens[digest] = user
    return tokens


class Authenticator:
    """Checks the ``Authorization`` header of each request and says what its user may do.

    Args:
        htpasswd: User name to bcrypt hash (see `load_htpasswd`); Basic auth.
        tokens: ``sha256:<hex>`` of a token to its user (see `load_tokens`); Bearer auth.
        access: Per-user access; users not listed get ``default_access``.
        default_access: Access of authenticated users not in ``access``.
        anonymous: What requests without credentials may do: ``"none"`` or ``"read"``.
    """

    def __init__(
        self,
        *,
        htpasswd: Mapping[str, bytes] | None = None,
        tokens: Mapping[str, str] | None = None,
        access: Mapping[str, Access] | None = None,
        default_access: Access = "write",
        anonymous: Literal["none", "read"] = "none",
    ) -> None:
        self._htpasswd = dict(htpasswd or {})
        self._tokens = [
            (hashlib.sha256(digest.encode()).digest(), digest, user)
            for digest, user in (tokens or {}).items()
        ]
        self._access = dict(access or {})
        for user, level in self._access.items():
            if level not in ("read", "write"):
                raise ConfigurationError(
                    f"access of user {user!r} must be 'read' or 'write', not {level!r}",
                    key="access",
                )
        if default_access not in ("read", "write"):
            raise ConfigurationError(
                f"default access must be 'read' or 'write', not {default_access!r}",
                key="default_access",
            )
        if anonymous not in ("none", "read"):
            raise ConfigurationError(
                f"anonymous access must be 'none' or 'read', not {anonymous!r}", key="anonymous"
            )
        self._default: Access = default_access
        self._anonymous = anonymous
        self._key = os.urandom(32)
        self._verified: collections.OrderedDict[bytes, str] = collections.OrderedDict()

    def __repr__(self) -> str:
        return (
            f"<Authenticator {len(self._htpasswd)} htpasswd users, {len(self._tokens)} tokens, "
            f"anonymous={self._anonymous}>"
        )

    @property
    def challenge(self) -> tuple[bytes, bytes]:
        """The ``WWW-Authenticate`` header of a 401 answer."""
        scheme = "Basic" if self._htpasswd or not self._tokens else "Bearer"
        return b"www-authenticate", f'{scheme} realm="{REALM}"'.encode()

    def _identity(self, user: str) -> Identity:
        return Identity(user, self._access.get(user, self._default))

    def anonymous(self) -> Identity | None:
        """The identity of a request without credentials, or None if it must authenticate."""
        return Identity("", "read") if self._anonymous == "read" else None

    def _unauthorized(self, message: str) -> RegistryError:
        return RegistryError(401, "UNAUTHORIZED", message, headers=[self.challenge])

    async def identify(self, authorization: str | None) -> Identity | None:
        """The identity the ``Authorization`` header proves; None without one.

        Raises:
            RegistryError: 401 UNAUTHORIZED for malformed or wrong credentials.
        """
        if authorization is None or not authorization.strip():
            return None
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic" and self._htpasswd:
            return await self._basic(value)
        if scheme == "bearer" and self._tokens:
            return self._bearer(value)
        raise self._unauthorized(f"{scheme[:20]!r} credentials are not accepted here")

    async def _basic(self, value: str) -> Identity:
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            raise self._unauthorized("malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise self._unauthorized("malformed Basic credentials")
        mac = hmac.digest(self._key, user.encode() + b"\0" + password.encode(), "sha256")
        if mac in self._verified:
            self._verified.move_to_end(mac)
            return self._identity(user)
        stored = self._htpasswd.get(user)
        ok = await anyio.to_thread.run_sync(_checkpw, password.encode(), stored or _DUMMY_HASH)
        if not ok or stored is None:
            log.info("authentication failed for user %r (Basic)", user[:128])
            raise self._unauthorized("wrong user name or password")
        self._verified[mac] = user
        while len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return self._identity(user)

    def _bearer(self, value: str) -> Identity:
        presented = hashlib.sha256(hash_token(value).encode()).digest()
        found: str | None = None
        for stored, _digest, user in self._tokens:  # every entry, so time does not tell which
            if hmac.compare_digest(presented, stored):
                found = user
        if found is None:
            log.info("authentication failed (Bearer token not known)")
            raise self._unauthorized("the bearer token is not valid")
        return self._identity(found)


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:  # a password over bcrypt's 72-byte limit (bcrypt >= 5 refuses it)
        return False
