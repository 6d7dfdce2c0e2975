"""The Azure backend's lean request path: its Shared Key signatures are the SDK's, byte for byte.

Azurite checks every signature the backend's suites send; here the string to sign and the
Authorization header are compared with azure-storage-blob's own ``SharedKeyCredentialPolicy``
over requests of every shape the lean path sends (ranges, conditions, metadata, Content-MD5,
Put Block's query, blob names with spaces, ``+``, ``%`` and non-ASCII letters), so that a
drift shows here, named, rather than as a 403 from the service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

from asyncstore.backends.azure._lean import SharedKeySigner
from asyncstore.backends.azure._options import AZURITE_ACCOUNT, AZURITE_KEY

ACCOUNT_URL = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}"
DATE = "Sun, 06 Dec 2026 20:00:00 GMT"

CASES: dict[str, dict[str, Any]] = {
    "ranged GET pinned to an ETag": {
        "method": "GET",
        "name": "p/big.bin",
        "headers": {"x-ms-range": "bytes=0-8388607", "if-match": '"0x8DC1"'},
    },
    "HEAD": {"method": "HEAD", "name": "p/k", "headers": {}},
    "Put Blob with metadata, type, MD5 and a create condition": {
        "method": "PUT",
        "name": "p/dir/file name+plus%percent-é.txt",
        "headers": {
            "x-ms-blob-type": "BlockBlob",
            "x-ms-meta-asyncstore_sha256": "sha256:" + "ab" * 32,
            "x-ms-meta-a_b": "1",
            "x-ms-meta-z1": "2",
            "x-ms-meta-colour": "blue",
            "x-ms-blob-content-type": "text/plain; charset=utf-8",
            "content-md5": "1B2M2Y8AsgTpgAmY7PhCfg==",
            "if-none-match": "*",
        },
        "length": 5,
    },
    "Put Block with its id in the query": {
        "method": "PUT",
        "name": "p/k",
        "query": {"comp": "block", "blockid": "ZjAxMjM0NTY3ODlhYmNkZWYtMDAwMDE+/="},
        "headers": {"x-ms-content-crc64": "AAAAAAAAAAA="},
        "length": 8 * 1024 * 1024,
    },
    "an empty Put Blob": {
        "method": "PUT",
        "name": "p/empty",
        "headers": {"x-ms-blob-type": "BlockBlob"},
        "length": 0,
    },
}


def sdk_authorization(case: dict[str, Any], version: str) -> str:
    """The Authorization header azure-storage-blob's policy computes for the same request."""
    path = f"/{AZURITE_ACCOUNT}/data/" + quote(case["name"], safe="/~")
    query = case.get("query", {})
    url = "http://127.0.0.1:10000" + path + ("?" + urlencode(query) if query else "")
    headers = {**case["headers"], "x-ms-version": version, "x-ms-date": DATE}
    length = case.get("length", 0)
    if case["method"] in ("PUT", "POST") or length:
        headers["Content-Length"] = str(length)
    request = PipelineRequest(
        HttpRequest(case["method"], url, headers=headers), PipelineContext(None)
    )
    SharedKeyCredentialPolicy(AZURITE_ACCOUNT, AZURITE_KEY).on_request(request)
    return str(request.http_request.headers["Authorization"])


@pytest.mark.parametrize("case", list(CASES))
def test_shared_key_signatures_are_the_sdks(case: str) -> None:
    spec = CASES[case]
    version = "2026-10-06"
    signer = SharedKeySigner(AZURITE_ACCOUNT, AZURITE_KEY)
    path = f"/{AZURITE_ACCOUNT}/data/" + quote(spec["name"], safe="/~")
    headers = {**spec["headers"], "x-ms-version": version, "x-ms-date": DATE}
    to_sign = signer.string_to_sign(
        spec["method"], path, spec.get("query", {}), headers, spec.get("length", 0)
    )
    assert signer.authorization(to_sign) == sdk_authorization(spec, version), to_sign
