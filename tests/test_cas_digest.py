"""Digest grammar, hashing helpers and descriptors (property tests for the grammar)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import asyncstore.cas
from asyncstore import InvalidArgumentError, InvalidDigestError
from asyncstore.cas import ALGORITHMS, Descriptor, Digest, Hasher, digest_of

pytestmark = pytest.mark.anyio

HEX64 = "a" * 64
OCI_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


def test_public_names_are_exported() -> None:
    public = {name for name in vars(asyncstore.cas) if not name.startswith("_")}
    assert set(asyncstore.cas.__all__) == public


def test_a_sha256_digest_is_a_str_with_its_parts() -> None:
    d = Digest("sha256:" + HEX64)
    assert isinstance(d, str)
    assert d == "sha256:" + HEX64
    assert (d.algorithm, d.encoded) == ("sha256", HEX64)
    assert json.dumps({"d": d}) == json.dumps({"d": "sha256:" + HEX64})
    assert repr(d) == f"Digest('sha256:{HEX64}')"
    assert Digest(d) is d
    assert Digest.parse(str(d)) == d
    assert Digest.from_hex("sha256", HEX64) == d


def test_a_sha512_digest_is_supported() -> None:
    d = Digest("sha512:" + "0" * 128)
    assert d.algorithm == "sha512"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "must be a str"),
        (42, "must be a str"),
        (b"sha256:" + HEX64.encode(), "must be a str"),
        ("", "no ':'"),
        ("sha256" + HEX64, "no ':'"),
        ("SHA256:" + HEX64, "algorithm 'SHA256' does not match"),
        ("sha256+:" + HEX64, "does not match"),
        (":" + HEX64, "algorithm '' does not match"),
        ("sha256:", "encoded part"),
        ("sha256:ab cd", "encoded part"),
        ("sha256:" + HEX64 + "\n", "encoded part"),
        ("md5:" + "a" * 32, "'md5' is not supported"),
        ("sha256.v2+b64:" + HEX64, "is not supported"),
        ("sha256:" + "a" * 63, "64 lowercase hex digits (got 63"),
        ("sha256:" + "A" * 64, "not all of them 0-9a-f"),
        ("sha512:" + HEX64, "128 lowercase hex digits"),
        ("sha256:" + "a" * 5000, "characters long"),
    ],
)
def test_a_malformed_digest_is_rejected_with_the_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidDigestError, match=re.escape(reason)):
        Digest(value)


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_any_input_is_a_digest_or_an_invalid_digest_error(value: object) -> None:
    try:
        d = Digest(value)
    except InvalidDigestError as exc:
        assert str(exc)
    else:
        assert OCI_GRAMMAR.fullmatch(d)


@given(st.from_regex(OCI_GRAMMAR, fullmatch=True))
def test_a_grammatical_digest_is_accepted_only_for_a_registered_algorithm(value: str) -> None:
    algorithm, _, encoded = value.partition(":")
    ok = algorithm in ALGORITHMS and re.fullmatch(f"[0-9a-f]{{{ALGORITHMS[algorithm]}}}", encoded)
    if ok:
        assert Digest(value) == value
    else:
        with pytest.raises(InvalidDigestError):
            Digest(value)


@given(st.binary(), st.sampled_from(sorted(ALGORITHMS)))
def test_digest_of_round_trips_through_the_parser(data: bytes, algorithm: str) -> None:
    d = digest_of(data, algorithm)
    assert Digest(str(d)) == d
    assert d.encoded == hashlib.new(algorithm, data).hexdigest()


def test_digest_of_an_unknown_algorithm_is_refused() -> None:
    with pytest.raises(InvalidDigestError, match="'md5' is not supported"):
        digest_of(b"x", "md5")


async def test_a_hasher_matches_hashlib_and_copies_independently() -> None:
    big = b"x" * (512 * 1024)  # hashed in a worker thread
    h = Hasher(("sha256", "sha512"))
    await h.update(b"abc")
    snapshot = h.copy()
    await h.update(big)
    assert h.size == 3 + len(big)
    assert h.digest("sha256") == digest_of(b"abc" + big)
    assert h.digest("sha512") == digest_of(b"abc" + big, "sha512")
    assert snapshot.digest() == digest_of(b"abc")
    assert snapshot.size == 3
    with pytest.raises(InvalidDigestError, match="not 'md5'"):
        h.digest("md5")
    with pytest.raises(InvalidDigestError, match="not supported"):
        Hasher(("crc32",))


def test_a_descriptor_round_trips_through_oci_json() -> None:
    d = Descriptor(
        Digest("sha256:" + HEX64), 5, "application/json", "application/x-sbom", {"a": "b"}
    )
    as_json = d.to_dict()
    assert as_json == {
        "mediaType": "application/json",
        "digest": "sha256:" + HEX64,
        "size": 5,
        "artifactType": "application/x-sbom",
        "annotations": {"a": "b"},
    }
    assert Descriptor.from_dict(json.loads(json.dumps(as_json))) == d
    plain = Descriptor.from_dict({"digest": "sha256:" + HEX64, "size": 0})
    assert plain.media_type == "application/octet-stream"
    assert plain.to_dict() == {
        "mediaType": "application/octet-stream",
        "digest": "sha256:" + HEX64,
        "size": 0,
    }


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        ([], InvalidArgumentError, "must be a JSON object"),
        ({"size": 1}, InvalidDigestError, "must be a str"),
        ({"digest": "sha256:" + HEX64, "size": -1}, InvalidArgumentError, "size must be"),
        ({"digest": "sha256:" + HEX64, "size": True}, InvalidArgumentError, "size must be"),
        (
            {"digest": "sha256:" + HEX64, "size": 1, "mediaType": "nope"},
            InvalidArgumentError,
            "type/subtype",
        ),
        (
            {"digest": "sha256:" + HEX64, "size": 1, "annotations": {"a": 1}},
            InvalidArgumentError,
            "annotations",
        ),
    ],
)
def test_a_malformed_descriptor_is_rejected(
    value: object, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=re.escape(reason)):
        Descriptor.from_dict(value)
