"""Artifacts: a data blob and a manifest blob, committed together under a reference.

Commit order of `put_artifact`: the data blob, then the manifest blob (both
by digest, deduplicated), then the commit record
``<prefix>artifacts/<ref>/@artifact.json`` naming both descriptors. The
record is one small object written in one request, so it is replaced
atomically on every backend: it is the commit point. A reader reads the
record first and then the two blobs it names, verified against their
digests; blobs are never overwritten with other bytes, so a reader that
raced a writer still gets the complete previous pair.
"""

from __future__ import annotations

import json

from .._errors import IntegrityError, InvalidArgumentError, NotFoundError
from ._blobs import Blobs
from ._layout import check_ref
from ._read import read_blob
from ._types import ArtifactRecord, Descriptor

__all__ = [
    "artifact_exists",
    "delete_artifact",
    "get_artifact",
    "put_artifact",
    "read_record",
]

_FORMAT = 1


def _record_key(blobs: Blobs, ref: str) -> str:
    return f"{blobs.prefix}artifacts/{check_ref(ref)}/@artifact.json"


async def put_artifact(blobs: Blobs, ref: str, data: object, manifest: object) -> ArtifactRecord:
    key = _record_key(blobs, ref)
    data_desc = await blobs.put(data)
    manifest_desc = await blobs.put(manifest)
    record = {
        "format": _FORMAT,
        "ref": ref,
        "data": data_desc.to_dict(),
        "manifest": manifest_desc.to_dict(),
    }
    body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    await blobs.store.put(key, body, content_type="application/json")
    return ArtifactRecord(ref, data_desc, manifest_desc)


async def read_record(blobs: Blobs, ref: str) -> ArtifactRecord:
    key = _record_key(blobs, ref)
    try:
        raw = await blobs.store.get(key)
    except NotFoundError as exc:
        raise NotFoundError(f"no artifact at ref {ref!r}", key=key) from exc
    try:
        doc = json.loads(raw)
        if doc["format"] != _FORMAT or doc["ref"] != ref:
            raise ValueError("unknown format or another ref")
        return ArtifactRecord(
            ref, Descriptor.from_dict(doc["data"]), Descriptor.from_dict(doc["manifest"])
        )
    except (ValueError, KeyError, TypeError, InvalidArgumentError) as exc:
        raise IntegrityError(
            f"artifact {ref!r}: its commit record {key!r} is not valid ({exc})", key=key
        ) from exc


async def _blob(blobs: Blobs, ref: str, what: str, desc: Descriptor) -> bytes:
    try:
        return await read_blob(blobs, desc.digest)
    except NotFoundError as exc:
        raise NotFoundError(
            f"artifact {ref!r}: its {what} blob {desc.digest} is missing", key=ref
        ) from exc


async def get_artifact(blobs: Blobs, ref: str) -> tuple[bytes, bytes]:
    record = await read_record(blobs, ref)
    manifest = await _blob(blobs, ref, "manifest", record.manifest)
    data = await _blob(blobs, ref, "data", record.data)
    return data, manifest


async def artifact_exists(blobs: Blobs, ref: str) -> bool:
    return await blobs.store.exists(_record_key(blobs, ref))


async def delete_artifact(blobs: Blobs, ref: str) -> None:
    key = _record_key(blobs, ref)
    if not await blobs.store.exists(key):
        raise NotFoundError(f"no artifact at ref {ref!r}", key=key)
    await blobs.store.delete(key)
