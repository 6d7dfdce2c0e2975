"""OCI registry storage over the content-addressed layer.

How it fits together. `RegistryStorage` is the storage side of an OCI
distribution-spec registry (what a registry's HTTP handlers call): blobs,
chunked upload sessions, manifests, tags and referrers, per repository. Blob
and manifest bytes are stored once, by digest, in an `asyncstore.cas.ContentStore`;
repositories hold small link objects that say which blobs, manifests and tags
they have, so a cross-repository mount copies no bytes and deleting from one
repository never touches another's. Repository names, tags and digests are
validated with the grammars of the OCI specs before any request is made.
"""

from ._manifest import ManifestInfo, inspect_manifest
from ._names import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_REPOSITORY_LENGTH,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    REPOSITORY_PATTERN,
    TAG_PATTERN,
    check_repository,
    check_tag,
)
from ._registry import RegistryStorage, TagList

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MAX_REPOSITORY_LENGTH",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "REPOSITORY_PATTERN",
    "TAG_PATTERN",
    "ManifestInfo",
    "RegistryStorage",
    "TagList",
    "check_repository",
    "check_tag",
    "inspect_manifest",
]
