"""Object operations shared by the backend and its uploads: write resources, deletion.

Both `GCSBackend` (``put``, ``delete``, ``delete_many``) and `Uploads`
(composite parts, the clean-up of their temporaries) need them, so they live
here, below both: this module imports neither.
"""

from __future__ import annotations

import base64
import contextlib
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from ..._backend import WriteAttributes
from ..._errors import StoreError
from ..._stream._tasks import task_group
from ._api import JSON_TIMEOUT, GCSApi, decode_json
from ._crc32c import to_base64
from ._translate import Answer, Where, gcs_errors, status_error

__all__ = ["BATCH_CONCURRENCY", "BATCH_SIZE", "batch_statuses", "delete_names", "write_resource"]

#: Objects per batch request of ``delete_many`` (the JSON API allows 100).
BATCH_SIZE = 100
#: Batch requests of one ``delete_many`` in flight at once.
BATCH_CONCURRENCY = 4


def write_resource(
    name: str, attrs: WriteAttributes, checksums: Mapping[str, bytes] | None = None
) -> dict[str, Any]:
    """The object resource of a write: name, content type, metadata, checksums."""
    resource: dict[str, Any] = {"name": name, "metadata": dict(attrs.metadata)}
    if attrs.content_type:
        resource["contentType"] = attrs.content_type
    if checksums:
        crc = checksums.get("crc32c")
        if crc is not None:
            resource["crc32c"] = to_base64(int.from_bytes(crc, "big"))
        md5 = checksums.get("md5")
        if md5 is not None:
            resource["md5Hash"] = base64.b64encode(md5).decode("ascii")
    return resource


def _key(api: GCSApi, name: str) -> str:
    return name[len(api.root) :]


async def delete_names(api: GCSApi, names: Sequence[str], *, key: str | None = None) -> None:
    """Delete objects by name; missing ones are not an error.

    One object is one DELETE; more go in batch requests of up to `BATCH_SIZE`,
    `BATCH_CONCURRENCY` of them at once. ``key`` names the store key in errors
    (default: the one the name gives).
    """
    if not names:
        return
    if len(names) == 1:
        where = Where(api.bucket, key if key is not None else _key(api, names[0]))
        with gcs_errors(where):
            try:
                await api.storage.delete(
                    api.bucket, names[0], params=api.params(), timeout=JSON_TIMEOUT
                )
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
        return
    batches = [names[i : i + BATCH_SIZE] for i in range(0, len(names), BATCH_SIZE)]
    limiter = anyio.CapacityLimiter(BATCH_CONCURRENCY)

    async def run(batch: Sequence[str]) -> None:
        async with limiter:
            await _delete_batch(api, batch)

    async with task_group() as tg:
        for batch in batches:
            tg.start_soon(run, batch)


async def _delete_batch(api: GCSApi, names: Sequence[str]) -> None:
    boundary = "asyncstore-" + uuid.uuid4().hex
    query = f"?userProject={api.project}" if api.project else ""
    parts = [
        f"--{boundary}\r\nContent-Type: application/http\r\n"
        f"Content-Transfer-Encoding: binary\r\nContent-ID: <{index}>\r\n\r\n"
        f"DELETE {api.object_path(name)}{query} HTTP/1.1\r\n\r\n"
        for index, name in enumerate(names, 1)
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    response, body = await api.send(
        "POST",
        api.batch_url,
        Where(api.bucket, None),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        content=body,
    )
    statuses = batch_statuses(response, body, len(names))
    for name, (status, message) in zip(names, statuses, strict=True):
        if status < 300 or status == 404:
            continue
        raise status_error(status, message, Where(api.bucket, _key(api, name)))


def batch_statuses(response: Answer, body: bytes, count: int) -> list[tuple[int, str]]:
    """The status and message of each inner response of a batch response, in request order."""
    content_type = response.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise StoreError(f"GCS sent a batch response without a boundary: {content_type!r}")
    text = body.decode("utf-8", "replace")
    found: dict[int, tuple[int, str]] = {}
    position = 0
    for part in text.split("--" + match.group(1)):
        status = re.search(r"HTTP/1\.[01] (\d{3})", part)
        if status is None:
            continue
        ident = re.search(r"Content-ID:\s*<response-(?:[^>]*?)(\d+)>", part, re.IGNORECASE)
        index = int(ident.group(1)) - 1 if ident else position
        position += 1
        rest = part[status.end() :]
        message = ""
        brace = rest.find("{")
        if brace >= 0:
            with contextlib.suppress(StoreError):
                error = decode_json(rest[brace:].strip().encode(), Where("", None)).get("error")
                if isinstance(error, dict):
                    message = str(error.get("message", ""))
        found[index] = (int(status.group(1)), message)
    if len(found) < count:
        raise StoreError(f"GCS answered {len(found)} of the {count} requests of a batch delete")
    return [found[index] for index in range(count)]
