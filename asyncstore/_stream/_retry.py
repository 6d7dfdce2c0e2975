"""Retries with exponential backoff and full jitter, for TransportError only."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from .._errors import ConfigurationError, TransportError

__all__ = ["RetryPolicy", "call_with_retry", "exhausted"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the Store retries a request that failed with a `TransportError`.

    Each part of an upload and each range of a download is retried on its own;
    a download range resumes from the last byte received.

    Attributes:
        attempts: Total attempts per request, the first included (1 disables retries).
        backoff_base: Seconds before the first retry; doubles with each attempt.
        backoff_cap: The most seconds to wait between two attempts.
        jitter: Wait a random time between 0 and the backoff ("full jitter"),
            so that many clients do not retry in step.
    """

    attempts: int = 5
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    jitter: bool = True

    def __post_init__(self) -> None:
        attempts = self.attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.attempts must be an integer >= 1, not {attempts!r}",
                key="attempts",
            )
        for name in ("backoff_base", "backoff_cap"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 <= value < math.inf
            ):
                raise ConfigurationError(
                    f"RetryPolicy.{name} must be a finite number of seconds >= 0, not {value!r}",
                    key=name,
                )
        if not isinstance(self.jitter, bool):
            raise ConfigurationError(
                f"RetryPolicy.jitter must be True or False, not {self.jitter!r}", key="jitter"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling) if self.jitter else ceiling


def exhausted(exc: TransportError, what: str, key: str | None, attempts: int) -> TransportError:
    """The error to raise when ``exc`` was the last of ``attempts`` attempts."""
    where = f" for key {key!r}" if key is not None else ""
    new = type(exc)(f"{what}{where} failed after {attempts} attempt(s): {exc}", key=key)
    new.attempts = attempts
    return new


async def call_with_retry(
    policy: RetryPolicy, what: str, key: str | None, fn: Callable[[], Awaitable[T]]
) -> T:
    """Await ``fn()``, retrying TransportError per ``policy``; other errors pass through.

    Raises:
        TransportError: the last failure, naming ``what``, the key and the attempt count.
    """
    attempt = 1
    while True:
        try:
            return await fn()
        except TransportError as exc:
            if attempt >= policy.attempts:
                raise exhausted(exc, what, key, attempt) from exc
            await anyio.sleep(policy.delay(attempt))
            attempt += 1
