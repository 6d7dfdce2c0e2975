"""Behaviour suites every backend runs, and the tools they are made of.

Like ``trio.testing.check_one_way_stream``, the suites let any backend prove it
honours the contract, as pytest test classes to subclass:

- `StoreConformance`: the Store's behaviour over a backend (content, ranges,
  listing, deletes and copies, conditional writes, concurrency, files,
  integrity, cancellation, caller-driven multipart uploads, bad keys).
- `FaultConformance`: a network backend's behaviour under faults, through
  `FaultProxy` (a fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of the
  service or its emulator): 64 MiB transfers through resets, stalls, 5xx
  bursts, refused connections and lost answers complete with the right bytes,
  or fail with a clear error, and leave nothing behind.

Subclass `StoreConformance` in a pytest module, provide a ``store`` fixture
that yields a fresh `Store` over your backend, and implement
`StoreConformance.leftovers`:

    import pytest
    from asyncstore import Store
    from asyncstore.testing import StoreConformance

    class TestMyBackend(StoreConformance):
        @pytest.fixture
        async def store(self):
            async with Store(MyBackend(...)) as store:
                yield store

        async def leftovers(self, store):
            return [...]  # incomplete uploads / temp files the backend still holds

`FaultConformance` asks for the service's port, a place to write and a place
holding its test object (three fixtures), and for a few hooks: how to make the
backend for an endpoint, which requests are parts, commits and aborts, and what
the service holds (see the class). The fault tests of S3, GCS and Azure in the
project's ``tests/test_faults_*.py`` are examples.

Every test is an anyio test: give your test session an ``anyio_backend``
fixture parametrised over ``"asyncio"`` and ``"trio"`` to run each under both.
A backend that cannot show a behaviour (an emulator gap) names the test in
``skip`` (or, in `FaultConformance`, ``xfail``) with the reason.

The building blocks are public too: `pattern`, `pattern_chunks` and
`sha256_of` make and hash deterministic data; `FaultProxy` and `Fault` break
requests; `ReadLog` and `UploadLog` record what the client received and how
each attempt ended. `asyncstore.testing.emulators` (standard library only)
starts the local servers the project's tests and benchmarks run against: moto,
the GCS emulator and Azurite.

The suites need pytest (``pip install asyncstore[dev]``).
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401 - the suites' fixtures and marks
except ImportError as exc:  # pragma: no cover
    raise ImportError("asyncstore.testing needs pytest: pip install 'asyncstore[dev]'") from exc

from ._conformance import BAD_KEYS, StoreConformance
from ._data import pattern, pattern_chunks, sha256_of
from ._faultproxy import (
    Attempt,
    Fault,
    FaultProxy,
    ReadLog,
    Received,
    Seen,
    UploadLog,
    assert_only_failed_parts_were_sent_again,
    assert_resumed_after_what_arrived,
    method_is,
    target_has,
    unanswered_listener,
)
from ._faults import FaultConformance, FaultSpec

__all__ = [
    "BAD_KEYS",
    "Attempt",
    "Fault",
    "FaultConformance",
    "FaultProxy",
    "FaultSpec",
    "ReadLog",
    "Received",
    "Seen",
    "StoreConformance",
    "UploadLog",
    "assert_only_failed_parts_were_sent_again",
    "assert_resumed_after_what_arrived",
    "method_is",
    "pattern",
    "pattern_chunks",
    "sha256_of",
    "target_has",
    "unanswered_listener",
]
