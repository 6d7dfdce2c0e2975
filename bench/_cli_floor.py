"""The least work any client can ask of moto for a first sync of a tree (``bench/cli.py``'s
``floor`` row): not a tool, a measuring stick.

It sends what every sync of a new tree must send, and nothing else: one ListObjectsV2 of
the destination prefix, then one PutObject per file (the file's bytes read whole, sent in
one request), ``--workers`` at once, each on a new connection (moto closes every connection
after its answer anyway). It computes nothing: no signature (moto does not check them; a
dummy ``Authorization`` header names the service and region it routes by), no checksum, no
sha256, no multipart upload. Standard library only, so its own CPU stays small.

    python bench/_cli_floor.py TREE http://127.0.0.1:PORT BUCKET PREFIX [--workers 16]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import os
import urllib.parse

_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tree")
    parser.add_argument("endpoint")
    parser.add_argument("bucket")
    parser.add_argument("prefix")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    where = urllib.parse.urlsplit(args.endpoint)
    assert where.hostname is not None
    assert where.port is not None

    def request(method: str, target: str, body: bytes = b"") -> None:
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=600)
        try:
            headers = {
                "x-amz-date": "20260101T000000Z",
                "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
                "authorization": _AUTH,
            }
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        if response.status >= 300:
            raise RuntimeError(f"{method} {target}: HTTP {response.status}")

    prefix = urllib.parse.quote(args.prefix)
    request("GET", f"/{args.bucket}?list-type=2&prefix={prefix}%2F")
    files = [
        os.path.join(folder, name) for folder, _, names in os.walk(args.tree) for name in names
    ]
    files.sort(key=lambda path: -os.path.getsize(path))  # largest first, as the tools do

    def put(path: str) -> None:
        with open(path, "rb") as file:
            body = file.read()
        rel = os.path.relpath(path, args.tree).replace(os.sep, "/")
        request("PUT", f"/{args.bucket}/{prefix}/{urllib.parse.quote(rel)}", body)

    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for _ in pool.map(put, files):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
