"""Value types of the content-addressed layer: descriptors, statistics, reports."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._errors import InvalidArgumentError
from ._digest import Digest

__all__ = [
    "DEFAULT_MEDIA_TYPE",
    "ArtifactRecord",
    "ContentStoreStatistics",
    "Descriptor",
    "TreeFile",
    "TreeSyncResult",
    "UploadStatus",
    "check_media_type",
]

#: The media type of a blob stored without one.
DEFAULT_MEDIA_TYPE = "application/octet-stream"

# RFC 6838 type/subtype (restricted-name), with the suffix and parameters OCI media types use.
_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
    r"(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=[A-Za-z0-9!#$&^_.+-]+)*"
)


def check_media_type(value: object, *, what: str = "media type") -> str:
    """Return ``value`` if it is a ``type/subtype`` media type.

    Raises:
        InvalidArgumentError: naming the value.
    """
    if not isinstance(value, str) or not _MEDIA_TYPE.fullmatch(value):
        raise InvalidArgumentError(
            f"{what} must be a 'type/subtype' string such as "
            f"'application/vnd.oci.image.manifest.v1+json', not {value!r}",
            key=str(value)[:100],
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Descriptor:
    """What identifies a blob: its digest, size and media type (an OCI descriptor).

    Attributes:
        digest: The content's digest.
        size: Its size in bytes.
        media_type: Its media type (``application/octet-stream`` when none was given).
        artifact_type: For a manifest listed as a referrer: its artifact type.
        annotations: For a manifest listed as a referrer: its annotations.
    """

    digest: Digest
    size: int
    media_type: str = DEFAULT_MEDIA_TYPE
    artifact_type: str | None = None
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The descriptor as OCI JSON (``mediaType``, ``digest``, ``size``, ...)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_dict(cls, value: object) -> Descriptor:
        """Parse OCI descriptor JSON (as decoded by ``json.loads``).

        Raises:
            InvalidDigestError: the digest is malformed.
            InvalidArgumentError: a field is missing or of the wrong type.
        """
        if not isinstance(value, Mapping):
            raise InvalidArgumentError(
                f"a descriptor must be a JSON object, not {type(value).__name__}"
            )
        digest = Digest(value.get("digest"))
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgumentError(
                f"descriptor of {digest}: size must be an integer >= 0, not {size!r}",
                key=digest,
            )
        media_type = value.get("mediaType", DEFAULT_MEDIA_TYPE)
        check_media_type(media_type, what=f"mediaType of descriptor {digest}")
        artifact_type = value.get("artifactType")
        if artifact_type is not None:
            check_media_type(artifact_type, what=f"artifactType of descriptor {digest}")
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise InvalidArgumentError(
                f"descriptor of {digest}: annotations must map strings to strings",
                key=digest,
            )
        return cls(digest, size, media_type, artifact_type, dict(annotations))


class ContentStoreStatistics(NamedTuple):
    """Counters of one `ContentStore` since it was created.

    Attributes:
        blobs_written: Blobs whose bytes were written to the store.
        blobs_deduplicated: Puts (and session finishes) that found the blob
            already stored and skipped writing it.
        bytes_written: Bytes of the blobs written.
        bytes_deduplicated: Bytes not written thanks to deduplication.
        blobs_read: Verified whole-blob reads (get, stream, fetch_to_file).
        bytes_read: Bytes of those reads.
        digest_mismatches: Reads, puts and finishes rejected by a digest mismatch.
        finishes_reread: Session finishes that re-read the assembled content to
            compute its digest (no running hash in this process).
    """

    blobs_written: int = 0
    blobs_deduplicated: int = 0
    bytes_written: int = 0
    bytes_deduplicated: int = 0
    blobs_read: int = 0
    bytes_read: int = 0
    digest_mismatches: int = 0
    finishes_reread: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class UploadStatus:
    """The state of a resumable upload session.

    Attributes:
        id: The session id.
        size: Bytes appended so far (the offset the next append must give).
        scope: The scope given to ``start`` (None if none).
        created: When the session was started (seconds since the epoch).
        updated: When it last changed.
    """

    id: str
    size: int
    scope: str | None
    created: float
    updated: float


@dataclasses.dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """A committed artifact: the descriptors of its data and manifest blobs.

    Attributes:
        ref: The artifact's ``/``-separated reference.
        data: The data blob.
        manifest: The manifest blob.
    """

    ref: str
    data: Descriptor
    manifest: Descriptor


@dataclasses.dataclass(frozen=True, slots=True)
class TreeFile:
    """One file of a synced tree, as recorded in the tree's index (its sidecar metadata).

    Attributes:
        path: ``/``-separated path relative to the tree's root.
        digest: The sha256 of the content (the blob holding it).
        size: Size in bytes.
        mtime_ns: Modification time, in nanoseconds since the epoch.
        mode: Permission bits (``st_mode & 0o7777``).
    """

    path: str
    digest: Digest
    size: int
    mtime_ns: int
    mode: int


@dataclasses.dataclass(frozen=True, slots=True)
class TreeSyncResult:
    """What `upload_tree` or `download_tree` did.

    Attributes:
        transferred: Paths whose bytes were uploaded or downloaded.
        skipped: Paths whose content already matched (by sha256) and were not transferred.
        bytes_transferred: Bytes moved.
        files: Every file of the tree, as recorded in its index.
    """

    transferred: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_transferred: int
    files: tuple[TreeFile, ...]
