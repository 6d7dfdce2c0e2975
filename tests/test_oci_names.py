"""Repository-name and tag grammars (property tests), manifest inspection."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import asyncstore.oci
from asyncstore import InvalidArgumentError, InvalidDigestError
from asyncstore.oci import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    REPOSITORY_PATTERN,
    TAG_PATTERN,
    check_repository,
    check_tag,
    inspect_manifest,
)

pytestmark = pytest.mark.anyio

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_public_names_are_exported() -> None:
    public = {name for name in vars(asyncstore.oci) if not name.startswith("_")}
    assert set(asyncstore.oci.__all__) == public


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b_c__d-e--f/g9", "0/1/2", "x" * 255])
def test_valid_repository_names(name: str) -> None:
    assert check_repository(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "not valid"),
        ("Library", "not valid"),
        ("a/", "not valid"),
        ("/a", "not valid"),
        ("a//b", "not valid"),
        ("a/_layers", "not valid"),
        ("a___b", "not valid"),
        ("a-", "not valid"),
        ("a\n", "not valid"),
        ("../a", "not valid"),
        ("x" * 256, "the limit is 255"),
        (None, "must be a str"),
        (b"a", "must be a str"),
    ],
)
def test_invalid_repository_names(name: object, reason: str) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(reason)):
        check_repository(name)


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_x", "A-b.C_d", "9" * 128])
def test_valid_tags(tag: str) -> None:
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".hidden", "-x", "a/b", "a:b", "x" * 129, "v1\n", None, 1])
def test_invalid_tags(tag: object) -> None:
    with pytest.raises(InvalidArgumentError, match="tag"):
        check_tag(tag)


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none()))
def test_any_input_is_a_repository_name_or_an_invalid_argument_error(value: object) -> None:
    try:
        name = check_repository(value)
    except InvalidArgumentError:
        return
    assert REPOSITORY_PATTERN.fullmatch(name)


@given(st.from_regex(REPOSITORY_PATTERN, fullmatch=True))
def test_every_name_of_the_grammar_is_accepted_up_to_255_characters(name: str) -> None:
    if len(name) <= 255:
        assert check_repository(name) == name
    else:
        with pytest.raises(InvalidArgumentError):
            check_repository(name)


@given(st.one_of(st.text(), st.binary(), st.integers(), st.none()))
def test_any_input_is_a_tag_or_an_invalid_argument_error(value: object) -> None:
    try:
        tag = check_tag(value)
    except InvalidArgumentError:
        return
    assert TAG_PATTERN.fullmatch(tag)


@given(st.from_regex(TAG_PATTERN, fullmatch=True))
def test_every_tag_of_the_grammar_is_accepted(tag: str) -> None:
    assert check_tag(tag) == tag


def manifest(**fields: object) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": D2, "size": 3}],
    }
    doc.update(fields)
    return json.dumps(doc).encode()


def test_an_image_manifest_names_its_blobs_and_artifact_type() -> None:
    info = inspect_manifest(manifest(annotations={"k": "v"}), OCI_MANIFEST, D1)
    assert [b.digest for b in info.blobs] == [D1, D2]
    assert info.manifests == ()
    assert info.artifact_type == OCI_CONFIG
    assert info.annotations == {"k": "v"}
    assert info.subject is None


def test_an_explicit_artifact_type_and_subject_are_read() -> None:
    subject = {"mediaType": OCI_MANIFEST, "digest": D2, "size": 10}
    info = inspect_manifest(
        manifest(artifactType="application/x-sig", subject=subject), OCI_MANIFEST, D1
    )
    assert info.artifact_type == "application/x-sig"
    assert info.subject is not None
    assert info.subject.digest == D2


def test_an_index_names_its_manifests() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": D1, "size": 5}],
        }
    ).encode()
    info = inspect_manifest(body, OCI_INDEX, D2)
    assert [m.digest for m in info.manifests] == [D1]
    assert info.blobs == ()


def test_foreign_layers_are_not_required() -> None:
    layers = [{"mediaType": "application/x-foreign", "digest": D2, "size": 1, "urls": ["u"]}]
    assert [
        b.digest for b in inspect_manifest(manifest(layers=layers), OCI_MANIFEST, D1).blobs
    ] == [D1]


def test_an_unknown_media_type_is_stored_as_it_is() -> None:
    assert inspect_manifest(b"\x00not json", "application/x-custom", D1).blobs == ()


@pytest.mark.parametrize(
    ("body", "error", "reason"),
    [
        (b"not json", InvalidArgumentError, "not a JSON object"),
        (b"[1, 2]", InvalidArgumentError, "not a JSON object"),
        (manifest(mediaType=OCI_INDEX), InvalidArgumentError, "declares mediaType"),
        (manifest(layers={"a": 1}), InvalidArgumentError, "must be a list"),
        (manifest(layers=[{"digest": "sha256:bad", "size": 1}]), InvalidDigestError, "sha256:bad"),
        (manifest(annotations={"a": 1}), InvalidArgumentError, "annotations"),
        (manifest(artifactType=5), InvalidArgumentError, "artifactType"),
        (manifest(subject={"size": 1}), InvalidDigestError, "must be a str"),
        (json.dumps({"mediaType": OCI_MANIFEST}).encode(), InvalidArgumentError, "no config"),
    ],
)
def test_a_malformed_manifest_is_rejected(body: bytes, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=re.escape(reason)):
        inspect_manifest(body, OCI_MANIFEST, D1)
