"""asyncstore's OCI registry against Debian's docker-registry 2.8.2, side by side, in one run.

Servers, each a fresh child process on 127.0.0.1 and a free port:

* ``asyncstore-file``: ``python -m asyncstore.registry serve file://<dir>`` (asyncio);
* ``asyncstore-file-trio``: the same under ``--backend trio``;
* ``asyncstore-s3``: the same over ``s3://`` on moto (``asyncstore.testing.emulators``,
  its own process);
* ``docker-registry``: ``docker-registry serve`` (Debian's package, the CNCF reference
  registry) with filesystem storage and deletes on;
* ``asyncstore-file-nocache`` (not run unless named in ``--servers``): file:// with
  ``--reference-cache 0``, every tag and link read from the store.
* any asyncstore server name with ``@baseline`` appended (for example
  ``asyncstore-file@baseline``): the same server run from the ``asyncstore``
  package in ``--baseline DIR`` (say ``git archive <commit> asyncstore | tar -x -C
  DIR``), so that two versions are measured in one interleaved run.

Each row records the 1-minute load average (``os.getloadavg``) before and after its
case: the machine may be shared.

Sections (``--sections``, default all):

* ``skopeo``: ``skopeo copy`` of an OCI layout (one ``--big-mib`` layer, 256 MiB by
  default, plus ``--small-layers`` small ones) into the registry and back; wall time
  of push and pull, the server's CPU seconds and peak RSS; the digests must match.
* ``manifests``: ``--requests`` concurrent manifest HEAD and GET requests (half each,
  by tag, over as many connections), ``--rounds`` times: requests/s and latency
  percentiles, the server's CPU per 1,000 requests.
* ``memory``: ``--pushes`` concurrent pushes of distinct ``--push-mib`` layers (256 MiB),
  docker's way (POST, one streamed PATCH, PUT ?digest=): the server's peak RSS, against
  the bound of docs/registry.md.

The table is printed and the figures go to ``--out`` (JSON). Needs ``skopeo`` and
``docker-registry`` (``apt-get install skopeo docker-registry``); a missing one is reported
and its rows skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import importlib.util
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from _harness import REPO, machine_info, print_table, write_json

from asyncstore.testing.emulators import FAKE_AWS_ENV as FAKE_ENV
from asyncstore.testing.emulators import LocalServer, free_port, moto_server

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SERVERS = ("asyncstore-file", "asyncstore-file-trio", "asyncstore-s3", "docker-registry")
#: Servers that are run only when named in --servers.
EXTRA_SERVERS = ("asyncstore-file-nocache",)
SECTIONS = ("skopeo", "manifests", "memory", "frameworks")
#: The framework section: the same manifest GET served by each ASGI framework and server.
VARIANTS = (
    "plain-asgi+hypercorn-asyncio",
    "plain-asgi+hypercorn-trio",
    "plain-asgi+uvicorn",
    "starlette+hypercorn-asyncio",
    "starlette+uvicorn",
)


# --------------------------------------------------------------------------- servers


class Server:
    """A registry in a child process: its URL, its process, what it used."""

    def __init__(self, name: str, url: str, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.url = url
        self.process = process
        self.ps = psutil.Process(process.pid)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def peak_rss_mib(self) -> float:
        """VmHWM: the peak resident set of the process since it started."""
        status = pathlib.Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match[1]) / 1024 if match else float("nan")

    def rss_mib(self) -> float:
        return float(self.ps.memory_info().rss) / MiB


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/v2/", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


#: Where the ``@baseline`` servers' asyncstore package is (``--baseline``).
BASELINE: pathlib.Path | None = None


@contextmanager
def asyncstore_server(name: str, store_url: str, *extra: str) -> Iterator[Server]:
    command = [
        sys.executable,
        "-m",
        "asyncstore.registry",
        "serve",
        store_url,
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "warning",
        *extra,
    ]
    # ``python -m`` puts the working directory first on sys.path: its asyncstore runs.
    cwd = BASELINE if name.endswith("@baseline") else REPO
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=cwd)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            raise RuntimeError(f"{name} did not start: {line!r}")
        server = Server(name, match[1], process)
        _wait_http(server.url)
        yield server
    finally:
        process.terminate()
        process.wait(60)


@contextmanager
def docker_registry(root: pathlib.Path) -> Iterator[Server]:
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n"
        "  delete: {enabled: true}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server = Server("docker-registry", f"http://127.0.0.1:{port}", process)
        _wait_http(server.url)
        yield server
    finally:
        process.terminate()
        process.wait(60)


@contextmanager
def server_named(name: str, work: pathlib.Path, moto: LocalServer | None) -> Iterator[Server]:
    folder = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    try:
        if name == "docker-registry":
            with docker_registry(folder) as server:
                yield server
        elif name.removesuffix("@baseline") == "asyncstore-s3":
            assert moto is not None
            prefix = f"registry-{os.urandom(4).hex()}"
            url = f"s3://bench-registry/{prefix}/?endpoint={moto.url}"
            with asyncstore_server(name, url) as server:
                yield server
        else:
            base = name.removesuffix("@baseline")
            extra: tuple[str, ...] = ("--backend", "trio") if base.endswith("trio") else ()
            if base.endswith("nocache"):
                extra = ("--reference-cache", "0")
            with asyncstore_server(name, (folder / "store").as_uri(), *extra) as server:
                yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- the image


def _stored_gzip(data_blocks: Iterator[bytes], out: pathlib.Path) -> tuple[str, int]:
    """Write the blocks as a gzip stream of stored (level 0) blocks; return its digest, size.

    Real gzip, so skopeo keeps the layer as it is instead of compressing it; level 0, so
    making it is fast and the registry moves as many bytes as the layer's size says.
    """
    digest = hashlib.sha256()
    size = 0
    with out.open("wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=0, mtime=0) as gz:
        for block in data_blocks:
            gz.write(block)
    with out.open("rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
            size += len(block)
    return "sha256:" + digest.hexdigest(), size


def make_image(work: pathlib.Path, big_mib: int, small_layers: int) -> pathlib.Path:
    """An OCI image layout: one big layer and ``small_layers`` small ones (made once)."""
    layout = work / f"image-{big_mib}-{small_layers}"
    if (layout / "index.json").exists():
        return layout
    tmp = work / "image.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = tmp / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    rng = random.Random(20241206)
    layers = []

    def add(blocks: Iterator[bytes]) -> dict[str, Any]:
        staging = tmp / "layer.tmp"
        d, size = _stored_gzip(blocks, staging)
        staging.rename(blobs / d.split(":")[1])
        return {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": size,
        }

    layers.append(add(rng.randbytes(MiB) for _ in range(big_mib)))
    for i in range(small_layers):
        layers.append(add(iter([rng.randbytes(rng.randint(1_000, 100_000)), b"%d" % i])))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (tmp / "index.json").write_text(json.dumps(index))
    (tmp / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    tmp.rename(layout)
    return layout


# --------------------------------------------------------------------------- sections


def skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"skopeo {args[0]} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def section_skopeo(server: Server, layout: pathlib.Path, work: pathlib.Path) -> dict[str, Any]:
    ref = f"docker://{server.address}/bench/image:1"
    cpu0, t0 = server.cpu(), time.perf_counter()
    skopeo("copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:1", ref)
    push_s, cpu1 = time.perf_counter() - t0, server.cpu()
    back = work / f"back-{server.name}"
    shutil.rmtree(back, ignore_errors=True)
    t1 = time.perf_counter()
    skopeo("copy", "--quiet", "--src-tls-verify=false", ref, f"oci:{back}:1")
    pull_s, cpu2 = time.perf_counter() - t1, server.cpu()
    pushed = hashlib.sha256(skopeo("inspect", "--raw", f"oci:{layout}:1").encode()).hexdigest()
    pulled = hashlib.sha256(skopeo("inspect", "--raw", f"oci:{back}:1").encode()).hexdigest()
    shutil.rmtree(back, ignore_errors=True)
    return {
        "push_s": push_s,
        "pull_s": pull_s,
        "push_server_cpu_s": cpu1 - cpu0,
        "pull_server_cpu_s": cpu2 - cpu1,
        "server_peak_rss_mib": server.peak_rss_mib(),
        "same_manifest_digest": pushed == pulled,
    }


def _with_digest(location: str, digest: str) -> str:
    """``location`` with ``digest=`` added, its own query (docker's ``_state``) left byte-exact."""
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


async def _manifest_requests(url: str, requests: int, rounds: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        # a small image to ask for
        config = b'{"architecture":"amd64"}'
        d = "sha256:" + hashlib.sha256(config).hexdigest()
        r = await client.post(
            "/v2/bench/small/blobs/uploads/", params={"digest": d}, content=config
        )
        location = r.headers.get("location", "")
        if r.status_code == 202:  # a registry that wants POST then PUT
            r = await client.put(_with_digest(location, d), content=config)
        r.raise_for_status()
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": d,
                    "size": len(config),
                },
                "layers": [],
            }
        ).encode()
        r = await client.put(
            "/v2/bench/small/manifests/v1", content=body, headers={"content-type": OCI_MANIFEST}
        )
        r.raise_for_status()
        accept = {"accept": OCI_MANIFEST}

        async def one(i: int) -> float:
            start = time.perf_counter()
            if i % 2:
                response = await client.head("/v2/bench/small/manifests/v1", headers=accept)
            else:
                response = await client.get("/v2/bench/small/manifests/v1", headers=accept)
            if response.status_code != 200:
                raise RuntimeError(f"manifest request answered {response.status_code}")
            return time.perf_counter() - start

        await asyncio.gather(*(one(i) for i in range(min(requests, 100))))  # warm up
        latencies: list[float] = []
        wall = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            latencies += await asyncio.gather(*(one(i) for i in range(requests)))
            wall += time.perf_counter() - t0
    return _latency_figures(latencies, wall)


def section_manifests(server: Server, requests: int, rounds: int) -> dict[str, Any]:
    """``requests`` concurrent connections asking for a manifest by tag.

    With wrk installed (a C load generator, so the client is not the limit): GETs over
    ``requests`` connections for 10 s. The httpx figures (half HEAD, half GET, ``rounds``
    waves of ``requests`` at once) are kept beside them as ``httpx_*``.
    """
    cpu0 = server.cpu()
    result = asyncio.run(_manifest_requests(server.url, requests, rounds))
    result["server_cpu_per_1000_requests_s"] = (server.cpu() - cpu0) / result["requests"] * 1000
    if shutil.which("wrk") is not None:
        httpx_figures = {f"httpx_{k}": v for k, v in result.items()}
        cpu0 = server.cpu()
        result = _wrk(server.url, requests, 10)
        result["server_cpu_per_1000_requests_s"] = (server.cpu() - cpu0) / result["requests"] * 1000
        result.update(httpx_figures)
        result["client"] = "wrk"
    else:
        result["client"] = "httpx"
    result["server_peak_rss_mib"] = server.peak_rss_mib()
    return result


def _wrk(url: str, connections: int, seconds: int) -> dict[str, Any]:
    script = (
        "wrk.method = 'GET'\n"
        f"wrk.headers['Accept'] = '{OCI_MANIFEST}'\n"
        "wrk.path = '/v2/bench/small/manifests/v1'\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        done = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "60s",
                "--latency",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=True,
        )
    finally:
        os.unlink(f.name)
    out = done.stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([0-9.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if match is None:
            return float("nan")
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    total = re.search(r"([0-9]+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: ([0-9]+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors is not None:
        raise RuntimeError(f"wrk: socket errors: {socket_errors[1]}")
    if total is None or rate is None:
        raise RuntimeError(f"wrk printed no figures: {out[-400:]}")
    if errors is not None:
        raise RuntimeError(f"wrk: {errors[1]} answers were not 200")
    return {
        "requests": int(total[1]),
        "req_per_s": float(rate[1]),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "max_ms": float("nan"),
    }


async def _pushes(url: str, pushes: int, size_mib: int) -> dict[str, Any]:
    import httpx

    async def body(block: bytes) -> AsyncIterator[bytes]:
        for _ in range(size_mib):
            yield block

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def push(n: int) -> None:
            block = os.urandom(MiB)
            digest = hashlib.sha256()
            for _ in range(size_mib):
                digest.update(block)
            d = "sha256:" + digest.hexdigest()
            r = await client.post(f"/v2/bench/push{n}/blobs/uploads/")
            r.raise_for_status()
            r = await client.patch(
                r.headers["location"],
                content=body(block),
                headers={"content-type": "application/octet-stream"},
            )
            r.raise_for_status()
            r = await client.put(_with_digest(r.headers["location"], d))
            if r.status_code != 201:
                raise RuntimeError(f"push {n} answered {r.status_code}: {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(push(n) for n in range(pushes)))
        return {"seconds": time.perf_counter() - t0}


def section_memory(server: Server, pushes: int, size_mib: int) -> dict[str, Any]:
    idle = server.rss_mib()
    cpu0 = server.cpu()
    result = asyncio.run(_pushes(server.url, pushes, size_mib))
    result["server_cpu_s"] = server.cpu() - cpu0
    result["server_idle_rss_mib"] = idle
    result["server_peak_rss_mib"] = server.peak_rss_mib()
    result["mb_per_s"] = pushes * size_mib * MiB / 1e6 / result["seconds"]
    return result


# --------------------------------------------------------------------------- frameworks


def serve_variant(variant: str, port: int) -> None:
    """Child: serve a registry with one tagged manifest on memory://, as ``variant`` says."""
    import anyio

    from asyncstore import MemoryBackend, Store
    from asyncstore.oci import OCI_MANIFEST as MANIFEST
    from asyncstore.oci import RegistryStorage
    from asyncstore.registry import RegistryApp, ServerOptions, serve

    framework, server = variant.split("+")

    async def main() -> None:
        async with Store(MemoryBackend()) as store:
            registry = RegistryStorage(store)
            config = await registry.put_blob("bench/small", b'{"architecture":"amd64"}')
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST,
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": str(config.digest),
                        "size": config.size,
                    },
                    "layers": [],
                }
            ).encode()
            await registry.put_manifest("bench/small", body, MANIFEST, tags=["v1"])
            app: Any = RegistryApp(registry)
            if framework == "starlette":
                app = _starlette_app(registry)
            if server == "uvicorn":
                import uvicorn

                config_ = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
                print("READY", flush=True)
                await uvicorn.Server(config_).serve()
                return
            await serve(
                app,
                ServerOptions(listen=f"127.0.0.1:{port}"),
                ready=lambda url: print("READY", flush=True),
            )

    anyio.run(main, backend="trio" if server.endswith("trio") else "asyncio")


def _starlette_app(registry: Any) -> Any:
    """The manifest GET/HEAD of RegistryApp written as a Starlette route (for the comparison)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from asyncstore import NotFoundError

    async def manifest(request: Request) -> Response:
        name, reference = request.path_params["name"], request.path_params["reference"]
        try:
            if request.method == "HEAD":
                descriptor = await registry.stat_manifest(name, reference)
                body = b""
            else:
                body, descriptor = await registry.get_manifest(name, reference)
        except NotFoundError as exc:
            return JSONResponse(
                {"errors": [{"code": "MANIFEST_UNKNOWN", "message": str(exc)}]}, 404
            )
        headers = {
            "docker-content-digest": str(descriptor.digest),
            "docker-distribution-api-version": "registry/2.0",
            "content-length": str(descriptor.size),
        }
        return Response(body, headers=headers, media_type=descriptor.media_type)

    routes = [
        Route("/v2/{name:path}/manifests/{reference}", manifest, methods=["GET", "HEAD"]),
        Route("/v2/", lambda request: JSONResponse({})),
    ]
    return Starlette(routes=routes)


@contextmanager
def variant_server(variant: str) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-variant", variant, "--port", str(port)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"READY":
            raise RuntimeError(f"{variant} did not start")
        server = Server(variant, f"http://127.0.0.1:{port}", process)
        _wait_http(server.url)
        yield server
    finally:
        process.terminate()
        process.wait(60)


async def _gets(url: str, requests: int, rounds: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    accept = {"accept": OCI_MANIFEST}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one(i: int) -> float:
            start = time.perf_counter()
            if i % 2:
                response = await client.head("/v2/bench/small/manifests/v1", headers=accept)
            else:
                response = await client.get("/v2/bench/small/manifests/v1", headers=accept)
            if response.status_code != 200:
                raise RuntimeError(f"manifest request answered {response.status_code}")
            return time.perf_counter() - start

        await asyncio.gather(*(one(i) for i in range(min(requests, 100))))
        latencies: list[float] = []
        wall = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            latencies += await asyncio.gather(*(one(i) for i in range(requests)))
            wall += time.perf_counter() - t0
    return _latency_figures(latencies, wall)


def _latency_figures(latencies: list[float], wall: float) -> dict[str, Any]:
    latencies = sorted(latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "req_per_s": len(latencies) / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000,
    }


def section_frameworks(variant: str, requests: int, rounds: int) -> dict[str, Any]:
    with variant_server(variant) as server:
        cpu0 = server.cpu()
        result = asyncio.run(_gets(server.url, requests, rounds))
        result["server_cpu_per_1000_requests_s"] = (server.cpu() - cpu0) / result["requests"] * 1000
        result["server_peak_rss_mib"] = server.peak_rss_mib()
    return result


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--small-layers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pushes", type=int, default=16)
    parser.add_argument("--push-mib", type=int, default=256)
    parser.add_argument("--work", type=pathlib.Path, default=REPO / "bench" / ".work" / "registry")
    parser.add_argument(
        "--out", type=pathlib.Path, default=REPO / "bench" / "results" / "registry.json"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case (median kept)")
    parser.add_argument(
        "--baseline",
        type=pathlib.Path,
        help="a folder holding another version's asyncstore package, for the @baseline servers",
    )
    parser.add_argument("--serve-variant", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_variant:
        serve_variant(args.serve_variant, args.port)
        return 0
    sections = [s for s in args.sections.split(",") if s]
    servers = [s for s in args.servers.split(",") if s]
    for name in sections:
        if name not in SECTIONS:
            parser.error(f"unknown section {name!r} (known: {', '.join(SECTIONS)})")
    for name in servers:
        base = name.removesuffix("@baseline")
        if base not in SERVERS + EXTRA_SERVERS or (base != name and base == "docker-registry"):
            known = ", ".join(SERVERS + EXTRA_SERVERS)
            parser.error(f"unknown server {name!r} (known: {known}, each asyncstore one @baseline)")
        if base != name and (args.baseline is None or not (args.baseline / "asyncstore").is_dir()):
            parser.error(f"{name} needs --baseline DIR, a folder holding an asyncstore package")
    global BASELINE
    BASELINE = args.baseline.resolve() if args.baseline is not None else None
    missing = [tool for tool in ("skopeo", "docker-registry") if shutil.which(tool) is None]
    if "docker-registry" in missing:
        print("docker-registry is not installed (apt-get install docker-registry): skipped")
        servers = [s for s in servers if s != "docker-registry"]
    if "skopeo" in missing and "skopeo" in sections:
        print("skopeo is not installed (apt-get install skopeo): section skipped")
        sections.remove("skopeo")
    if "frameworks" in sections:
        for package in ("uvicorn", "starlette"):
            if importlib.util.find_spec(package) is None:
                print(f"{package} is not installed (pip install {package}): frameworks skipped")
                sections.remove("frameworks")
                break
    args.work.mkdir(parents=True, exist_ok=True)
    layout = (
        make_image(args.work, args.big_mib, args.small_layers) if "skopeo" in sections else None
    )
    results: dict[str, dict[str, Any]] = {section: {} for section in sections}
    os.environ.update(FAKE_ENV)
    with moto_server() as moto:
        import boto3

        boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(
            Bucket="bench-registry"
        )
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for attempt in range(args.repeat):  # interleaved, so a busy minute hits every server
            for section in sections:
                names = VARIANTS if section == "frameworks" else servers
                for name in names:
                    if section == "memory" and name.startswith("asyncstore-s3"):
                        continue  # moto keeps every byte in its own memory: 4 GiB for nothing
                    print(f"-- {section}: {name} (run {attempt + 1})", flush=True)
                    row = run_case(section, name, args, layout, moto)
                    runs.setdefault(section, {}).setdefault(name, []).append(row)
                    print(f"   {row}", flush=True)
        for section, by_name in runs.items():
            for name, rows in by_name.items():
                results[section][name] = {**median_row(section, rows), "runs": rows}
    report(results, args)
    write_json(
        args.out,
        {
            "machine": machine_info("asyncstore", "hypercorn", "httpx"),
            "options": {k: str(v) for k, v in vars(args).items()},
            "results": results,
        },
    )
    print(f"\nJSON written to {args.out}")
    return 0


def run_case(
    section: str, name: str, args: argparse.Namespace, layout: Any, moto: LocalServer
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    try:
        if section == "frameworks":
            row = section_frameworks(name, args.requests, args.rounds)
        else:
            with server_named(name, args.work, moto) as server:
                if section == "skopeo":
                    row = section_skopeo(server, layout, args.work)
                elif section == "manifests":
                    row = section_manifests(server, args.requests, args.rounds)
                else:
                    row = section_memory(server, args.pushes, args.push_mib)
    except Exception as exc:  # a failing server is a row, not the end
        row = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    row["load_1min"] = [load_before, os.getloadavg()[0]]
    return row


def median_row(section: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median figure of merit (rows that failed sort last)."""

    def merit(row: dict[str, Any]) -> float:
        if "error" in row:
            return float("inf")
        if section == "skopeo":
            return float(row["push_s"] + row["pull_s"])
        if section == "memory":
            return float(row["seconds"])
        return -float(row["req_per_s"])

    ordered = sorted(rows, key=merit)
    return dict(ordered[(len(ordered) - 1) // 2])


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    def cell(row: dict[str, Any], key: str, spec: str) -> str:
        return format(row[key], spec) if key in row else row.get("error", "-")[:40]

    def load(row: dict[str, Any]) -> str:
        before, after = row.get("load_1min", (float("nan"), float("nan")))
        return f"{before:.1f}/{after:.1f}"

    if "skopeo" in results:
        print_table(
            f"skopeo copy of one {args.big_mib} MiB layer + {args.small_layers} small layers",
            [
                "server",
                "push s",
                "pull s",
                "push CPU s",
                "pull CPU s",
                "peak RSS MiB",
                "same",
                "load",
            ],
            [
                [
                    name,
                    cell(row, "push_s", ".2f"),
                    cell(row, "pull_s", ".2f"),
                    cell(row, "push_server_cpu_s", ".2f"),
                    cell(row, "pull_server_cpu_s", ".2f"),
                    cell(row, "server_peak_rss_mib", ".0f"),
                    str(row.get("same_manifest_digest", "-")),
                    load(row),
                ]
                for name, row in results["skopeo"].items()
            ],
            left=("server",),
        )
    if "manifests" in results:
        print_table(
            f"{args.requests} concurrent manifest HEAD/GETs x {args.rounds} rounds",
            ["server", "req/s", "p50 ms", "p99 ms", "CPU s/1000 req", "peak RSS MiB", "load"],
            [
                [
                    name,
                    cell(row, "req_per_s", ",.0f"),
                    cell(row, "p50_ms", ".1f"),
                    cell(row, "p99_ms", ".1f"),
                    cell(row, "server_cpu_per_1000_requests_s", ".3f"),
                    cell(row, "server_peak_rss_mib", ".0f"),
                    load(row),
                ]
                for name, row in results["manifests"].items()
            ],
            left=("server",),
        )
    if "frameworks" in results:
        print_table(
            f"{args.requests} concurrent manifest HEAD/GETs x {args.rounds} rounds, memory://",
            ["framework+server", "req/s", "p50 ms", "p99 ms", "CPU s/1000 req", "peak RSS MiB"],
            [
                [
                    name,
                    cell(row, "req_per_s", ",.0f"),
                    cell(row, "p50_ms", ".1f"),
                    cell(row, "p99_ms", ".1f"),
                    cell(row, "server_cpu_per_1000_requests_s", ".3f"),
                    cell(row, "server_peak_rss_mib", ".0f"),
                ]
                for name, row in results["frameworks"].items()
            ],
            left=("framework+server",),
        )
    if "memory" in results:
        print_table(
            f"{args.pushes} concurrent pushes of {args.push_mib} MiB (POST, PATCH, PUT)",
            ["server", "seconds", "MB/s", "server CPU s", "idle RSS MiB", "peak RSS MiB"],
            [
                [
                    name,
                    cell(row, "seconds", ".1f"),
                    cell(row, "mb_per_s", ",.0f"),
                    cell(row, "server_cpu_s", ".1f"),
                    cell(row, "server_idle_rss_mib", ".0f"),
                    cell(row, "server_peak_rss_mib", ".0f"),
                ]
                for name, row in results["memory"].items()
            ],
            left=("server",),
        )


if __name__ == "__main__":
    sys.exit(main())
