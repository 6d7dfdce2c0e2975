"""moto's S3 server that counts the requests it serves, by kind, with the CPU each one cost.

``bench/cli.py --count-requests`` runs moto this way instead of with
``asyncstore.testing.emulators.moto_server``: the same server (werkzeug's threaded server
and moto's WSGI application, as ``ThreadedMotoServer`` builds them), in a child process,
with two additions:

* the request handler measures each request's thread CPU time (``time.thread_time``) from
  reading its request line to flushing its answer, so parsing, dispatch, body reading,
  hashing, storing and the response are all counted; what is not counted is the server's
  own loop (accepting connections, starting a thread per connection);
* the WSGI application is wrapped to classify each request (PutObject, UploadPart,
  CompleteMultipartUpload, ...; a PutObject of 5 MiB or more apart, since moto's cost
  of one grows with its bytes) and to note the headers that can send moto down a costlier
  path (checksums, ``Content-MD5``, ``aws-chunked``, ``Expect``), by kind.

Each line the parent writes to the child's stdin makes it write what it counted since the
last one to a JSON file, and start again; closing its stdin stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

# The child: stdlib, werkzeug and moto only.
_CHILD = r"""
import json, logging, sys, threading, time
from urllib.parse import parse_qs
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)

logging.getLogger("werkzeug").setLevel(logging.ERROR)
OUT = sys.argv[1]
lock = threading.Lock()
local = threading.local()
kinds, headers, connections = {}, {}, [0]
NOTED = (
    "CONTENT_MD5", "CONTENT_ENCODING", "TRANSFER_ENCODING", "EXPECT",
    "X_AMZ_SDK_CHECKSUM_ALGORITHM", "X_AMZ_CHECKSUM_ALGORITHM", "X_AMZ_CHECKSUM_CRC32",
    "X_AMZ_CHECKSUM_CRC32C", "X_AMZ_CHECKSUM_SHA1", "X_AMZ_CHECKSUM_SHA256",
    "X_AMZ_CHECKSUM_CRC64NVME", "X_AMZ_TRAILER",
)
#: Bodies from this size on are counted apart: a large PutObject costs moto per byte.
BIG = 5 * 1024 * 1024
VALUED = ("CONTENT_ENCODING", "TRANSFER_ENCODING", "EXPECT", "X_AMZ_SDK_CHECKSUM_ALGORITHM",
          "X_AMZ_CHECKSUM_ALGORITHM")


def kind_of(environ):
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    parts = environ.get("PATH_INFO", "").strip("/").split("/", 1)
    key = len(parts) > 1 and parts[1]
    copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
    if parts[0] == "moto-api":
        return None
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if "tagging" in query:
            return "PutObjectTagging"
        if key:
            return "CopyObject" if copy else "PutObject"
        return "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "delete" in query:
            return "DeleteObjects"
    if method == "GET":
        if not key:
            return "ListObjectsV2" if "list-type" in query else "ListObjects"
        return "GetObjectTagging" if "tagging" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return method


class App:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        kind = kind_of(environ)
        local.size = int(environ.get("CONTENT_LENGTH") or 0)
        if kind == "PutObject" and local.size >= BIG:
            kind = "PutObject (5 MiB or more)"
        local.kind = kind
        if kind is not None:
            seen = []
            for name in NOTED:
                value = environ.get("HTTP_" + name, environ.get(name))
                if value is not None:
                    shown = name.lower().replace("_", "-")
                    seen.append(f"{shown}: {value}" if name in VALUED else shown)
            with lock:
                for note in seen:
                    headers[f"{kind} {note}"] = headers.get(f"{kind} {note}", 0) + 1
        return self.app(environ, start_response)


class Handler(MotoRequestHandler):
    def handle(self):
        with lock:
            connections[0] += 1
        super().handle()

    def handle_one_request(self):
        local.kind = None
        cpu, wall = time.thread_time(), time.perf_counter()
        super().handle_one_request()
        if local.kind is None:
            return
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        with lock:
            row = kinds.setdefault(
                local.kind, {"count": 0, "bytes_in": 0, "cpu_s": 0.0, "wall_s": 0.0}
            )
            row["count"] += 1
            row["bytes_in"] += local.size
            row["cpu_s"] += cpu
            row["wall_s"] += wall


app = App(DomainDispatcherApplication(create_backend_app))
server = make_server("127.0.0.1", 0, app, True, request_handler=Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdout.write(f"PORT {server.server_address[1]}\n")
sys.stdout.flush()
for _ in sys.stdin:
    with lock:
        data = {"kinds": dict(kinds), "headers": dict(headers), "connections": connections[0]}
        kinds.clear(); headers.clear(); connections[0] = 0
    with open(OUT, "w") as out:
        json.dump(data, out)
    sys.stdout.write("DUMPED\n")
    sys.stdout.flush()
server.shutdown()
"""

#: Seconds given to the requests still being answered before counts are taken (a handler
#: counts its request after flushing the answer, so a client can see it before the count).
SETTLE = 0.3


class CountingMoto:
    """A running counting moto: its URL and pid, and `take` for the counts so far."""

    def __init__(self, process: subprocess.Popen[str], url: str, out: pathlib.Path) -> None:
        self.process = process
        self.url = url
        self._out = out

    @property
    def pid(self) -> int:
        return self.process.pid

    def take(self) -> dict[str, Any]:
        """What was counted since the last `take` (and start counting again)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        time.sleep(SETTLE)
        self.process.stdin.write("take\n")
        self.process.stdin.flush()
        if self.process.stdout.readline().strip() != "DUMPED":
            raise RuntimeError("the counting moto server did not answer")
        counts: dict[str, Any] = json.loads(self._out.read_text())
        return counts


@contextlib.contextmanager
def counting_moto(env: dict[str, str]) -> Iterator[CountingMoto]:
    """The counting moto server on 127.0.0.1 (a free port), stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="moto-counts-") as scratch:
        out = pathlib.Path(scratch) / "counts.json"
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            line = process.stdout.readline().strip()
            if not line.startswith("PORT "):
                raise RuntimeError(f"the counting moto server did not start: {line!r}")
            yield CountingMoto(process, f"http://127.0.0.1:{int(line.split()[1])}", out)
        finally:
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
