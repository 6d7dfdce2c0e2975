"""What the driver reads from a manifest body: subject, artifact type, referenced blobs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from .._errors import InvalidArgumentError
from ..cas import Descriptor
from ._names import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

__all__ = ["ManifestInfo", "inspect_manifest"]

_JSON_MANIFESTS = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST})


@dataclasses.dataclass(frozen=True, slots=True)
class ManifestInfo:
    """The parts of a manifest the storage driver acts on.

    Attributes:
        subject: The manifest this one refers to (for the referrers API), if any.
        artifact_type: ``artifactType``; for an image manifest without one, the
            config's media type.
        annotations: The manifest's annotations.
        blobs: Blobs it references (config and layers), that must be in the repository.
        manifests: Manifests it references (an index), that must be in the repository.
    """

    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    blobs: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()


def _descriptors(doc: Mapping[str, Any], field: str, what: str) -> list[Descriptor]:
    value = doc.get(field, [])
    if not isinstance(value, list):
        raise InvalidArgumentError(f"manifest {what}: '{field}' must be a list of descriptors")
    out = []
    for item in value:
        if isinstance(item, Mapping) and item.get("urls"):
            continue  # a foreign (non-distributable) layer: not expected in the registry
        out.append(Descriptor.from_dict(item))
    return out


def inspect_manifest(body: bytes, media_type: str, digest: str) -> ManifestInfo:
    """Read a manifest body pushed with ``media_type``.

    Bodies of the known manifest media types must be JSON objects whose
    ``mediaType`` (when present) equals ``media_type``. Other media types are
    stored as they are; a JSON object body still has its ``subject`` read.

    Raises:
        InvalidArgumentError: a malformed manifest of a known type, a
            ``mediaType`` that contradicts ``media_type``, or a malformed
            descriptor (InvalidDigestError for a malformed digest).
    """
    what = f"{digest} ({media_type})"
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        if media_type in _JSON_MANIFESTS:
            raise InvalidArgumentError(f"manifest {what} is not a JSON object", key=digest)
        return ManifestInfo()
    declared = doc.get("mediaType")
    if declared is not None and declared != media_type:
        raise InvalidArgumentError(
            f"manifest {what} declares mediaType {declared!r}, not the {media_type!r} "
            "it was pushed with",
            key=digest,
        )
    subject = Descriptor.from_dict(doc["subject"]) if doc.get("subject") is not None else None
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InvalidArgumentError(f"manifest {what}: artifactType must be a string", key=digest)
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise InvalidArgumentError(
            f"manifest {what}: annotations must map strings to strings", key=digest
        )
    blobs: list[Descriptor] = []
    manifests: list[Descriptor] = []
    if "config" in doc:
        config = Descriptor.from_dict(doc["config"])
        blobs.append(config)
        if artifact_type is None and media_type == OCI_MANIFEST:
            artifact_type = config.media_type
    elif media_type in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise InvalidArgumentError(f"manifest {what} has no config descriptor", key=digest)
    blobs.extend(_descriptors(doc, "layers", what))
    manifests.extend(_descriptors(doc, "manifests", what))
    return ManifestInfo(subject, artifact_type, dict(annotations), tuple(blobs), tuple(manifests))
