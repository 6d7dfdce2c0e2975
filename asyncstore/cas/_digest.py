"""Digests in the OCI form ``algorithm:encoded``, and incremental hashing.

The grammar is the one of the OCI image spec (``descriptor.md``):

    digest                ::= algorithm ":" encoded
    algorithm             ::= algorithm-component (algorithm-separator algorithm-component)*
    algorithm-component   ::= [a-z0-9]+
    algorithm-separator   ::= [+._-]
    encoded               ::= [a-zA-Z0-9=_-]+

On top of the grammar, only registered algorithms are accepted: ``sha256``
(64 lowercase hex digits, required by OCI) and ``sha512`` (128).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any

import anyio.to_thread

from .._errors import InvalidDigestError

__all__ = ["ALGORITHMS", "Digest", "Hasher", "digest_of", "hash_bytes"]

#: The supported algorithms and the length of their lowercase-hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}

_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_ENCODED = re.compile(r"[a-zA-Z0-9=_-]+")
_HEX = re.compile(r"[0-9a-f]+")
#: Longest digest string considered at all (sha512 is 135 characters).
_MAX_LENGTH = 1024
#: Updates at least this large are hashed in a worker thread (as in the core).
_THREAD_THRESHOLD = 256 * 1024


def _unsupported(algorithm: object) -> InvalidDigestError | None:
    """The error for an algorithm name that is not supported (of any type), else None."""
    if isinstance(algorithm, str) and algorithm in ALGORITHMS:
        return None
    return InvalidDigestError(
        f"algorithm {algorithm!r:.80} is not supported (supported: {', '.join(ALGORITHMS)})",
        key=str(algorithm)[:80],
    )


def _shown(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _check(value: object) -> str:
    """Return ``value`` if it is a supported digest string, else raise with the reason."""
    if not isinstance(value, str):
        raise InvalidDigestError(
            f"a digest must be a str like 'sha256:<64 hex digits>', not {type(value).__name__}"
        )
    shown = _shown(value)
    if len(value) > _MAX_LENGTH:
        raise InvalidDigestError(f"digest {shown} is {len(value)} characters long", key=None)
    algorithm, sep, encoded = value.partition(":")
    if not sep:
        raise InvalidDigestError(
            f"digest {shown} has no ':' between the algorithm and the encoded part", key=value
        )
    if not _ALGORITHM.fullmatch(algorithm):
        raise InvalidDigestError(
            f"digest {shown}: algorithm {algorithm!r} does not match [a-z0-9]+([+._-][a-z0-9]+)*",
            key=value,
        )
    if not _ENCODED.fullmatch(encoded):
        raise InvalidDigestError(
            f"digest {shown}: the encoded part must be one or more of [a-zA-Z0-9=_-]",
            key=value,
        )
    length = ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidDigestError(
            f"digest {shown}: algorithm {algorithm!r} is not supported "
            f"(supported: {', '.join(ALGORITHMS)})",
            key=value,
        )
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        alphabet = "" if _HEX.fullmatch(encoded) else ", not all of them 0-9a-f"
        raise InvalidDigestError(
            f"digest {shown}: a {algorithm} digest is {length} lowercase hex digits "
            f"(got {len(encoded)} characters{alphabet})",
            key=value,
        )
    return value


class Digest(str):
    """A validated digest string, ``algorithm:encoded`` (``sha256:9f86d0...``).

    A `Digest` is a `str`: it compares, hashes, formats and serialises as the
    digest string itself, so it can be used wherever a digest string is
    expected. Constructing one validates it:

        >>> d = Digest("sha256:" + "ab" * 32)
        >>> d.algorithm, len(d.encoded)
        ('sha256', 64)

    Raises:
        InvalidDigestError: the value is not a str, does not follow the OCI
            grammar, names an unsupported algorithm, or has an encoded part of
            the wrong length or alphabet; the message says which.
    """

    __slots__ = ()

    def __new__(cls, value: object) -> Digest:
        if isinstance(value, Digest):
            return value
        return super().__new__(cls, _check(value))

    @classmethod
    def parse(cls, value: object) -> Digest:
        """Validate ``value`` and return it as a `Digest` (same as ``Digest(value)``)."""
        return cls(value)

    @classmethod
    def from_hex(cls, algorithm: str, encoded: str) -> Digest:
        """Build a digest from its two halves, validating both."""
        return cls(f"{algorithm}:{encoded}")

    @property
    def algorithm(self) -> str:
        """The algorithm, e.g. ``"sha256"``."""
        return self.partition(":")[0]

    @property
    def encoded(self) -> str:
        """The encoded part: the lowercase hex digest."""
        return self.partition(":")[2]

    def __repr__(self) -> str:
        return f"Digest({str(self)!r})"


def digest_of(data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> Digest:
    """The digest of ``data`` (hashed on the calling thread: use for small data).

    Raises:
        InvalidDigestError: ``algorithm`` is not a supported algorithm name.
    """
    error = _unsupported(algorithm)
    if error is not None:
        raise error
    return Digest(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")


async def hash_bytes(data: bytes | bytearray | memoryview, algorithm: str = "sha256") -> Digest:
    """The digest of ``data``, hashed in a worker thread if it is large (256 KiB or more).

    The async form of `digest_of`, for data that may be big enough to block
    the event loop while it is hashed.

    Raises:
        InvalidDigestError: ``algorithm`` is not a supported algorithm name.
    """
    view = memoryview(data)
    if view.nbytes < _THREAD_THRESHOLD:
        return digest_of(view, algorithm)
    return await anyio.to_thread.run_sync(digest_of, view, algorithm)


class Hasher:
    """Incremental digests of a stream in one or more algorithms, fed in stream order.

    Updates of 256 KiB or more run in a worker thread (hashlib releases the GIL).
    A hasher can be copied, so a snapshot can be kept at a committed size.
    """

    def __init__(self, algorithms: tuple[str, ...] = ("sha256",)) -> None:
        names: tuple[str, ...] | None = None
        if not isinstance(algorithms, str):
            with contextlib.suppress(TypeError):  # not iterable
                names = tuple(algorithms)
        if names is None:
            raise InvalidDigestError(
                f"algorithms must be a sequence of algorithm names such as ('sha256',), "
                f"not {algorithms!r:.80}",
                key="algorithms",
            )
        for name in names:
            error = _unsupported(name)
            if error is not None:
                raise error
        self._hashes: dict[str, Any] = {name: hashlib.new(name) for name in names}
        self.size = 0

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms this hasher computes."""
        return tuple(self._hashes)

    def update_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ``data`` on the calling thread."""
        for h in self._hashes.values():
            h.update(data)
        self.size += len(memoryview(data))

    async def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ``data``, in a worker thread if it is large."""
        view = memoryview(data)
        if view.nbytes < _THREAD_THRESHOLD:
            self.update_nowait(view)
            return

        def work() -> None:
            for h in self._hashes.values():
                h.update(view)
            self.size += view.nbytes  # here, so size and state can never disagree

        await anyio.to_thread.run_sync(work)

    def digest(self, algorithm: str = "sha256") -> Digest:
        """The digest of everything fed so far."""
        try:
            h = self._hashes[algorithm]
        except (KeyError, TypeError):  # TypeError: not even hashable
            raise InvalidDigestError(
                f"this hasher computes {', '.join(self._hashes)}, not {algorithm!r:.80}",
                key=str(algorithm)[:80],
            ) from None
        return Digest(f"{algorithm}:{h.hexdigest()}")

    def copy(self) -> Hasher:
        """An independent hasher in the same state."""
        twin = Hasher(())
        twin._hashes = {name: h.copy() for name, h in self._hashes.items()}
        twin.size = self.size
        return twin
