"""Repository names, tags and media types, as the OCI distribution and image specs define them."""

from __future__ import annotations

import re

from .._errors import InvalidArgumentError

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
    "check_repository",
    "check_tag",
]

#: A repository name (distribution spec): ``/``-separated path components.
REPOSITORY_PATTERN = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
#: A tag (distribution spec): at most 128 characters.
TAG_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
#: Clients limit ``<host>/<name>`` to 255 characters; so does this driver, for the name alone.
MAX_REPOSITORY_LENGTH = 255

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
#: The media type of the empty JSON object ``{}`` (config of artifacts that have none).
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def check_repository(name: object) -> str:
    """Return ``name`` if it is a valid repository name.

    Raises:
        InvalidArgumentError: naming the value and the rule (never TypeError).
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"a repository name must be a str, not {type(name).__name__}", key="repository"
        )
    if len(name) > MAX_REPOSITORY_LENGTH:
        raise InvalidArgumentError(
            f"repository name {name[:40]!r}... is {len(name)} characters; "
            f"the limit is {MAX_REPOSITORY_LENGTH}",
            key=name[:80],
        )
    if not REPOSITORY_PATTERN.fullmatch(name):
        raise InvalidArgumentError(
            f"repository name {name!r} is not valid: lowercase components "
            "[a-z0-9]+ joined by '.', '_', '__' or '-', separated by '/'",
            key=name,
        )
    return name


def check_tag(tag: object) -> str:
    """Return ``tag`` if it is a valid tag.

    Raises:
        InvalidArgumentError: naming the value and the rule (never TypeError).
    """
    if not isinstance(tag, str):
        raise InvalidArgumentError(f"a tag must be a str, not {type(tag).__name__}", key="tag")
    if not TAG_PATTERN.fullmatch(tag):
        raise InvalidArgumentError(
            f"tag {tag[:140]!r} is not valid: [a-zA-Z0-9_] then up to 127 of [a-zA-Z0-9._-]",
            key=tag[:140],
        )
    return tag
