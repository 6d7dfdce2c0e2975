"""Real clients against ``asyncstore registry serve``: skopeo and podman (Debian's), oras-py.

skopeo copies an OCI image layout with several layers, one of 64 MiB, into the
registry (through htpasswd Basic auth, as docker and podman log in) and back,
with identical digests; then ``inspect``, ``list-tags`` across pages and
``delete``. podman (as root, without a daemon, on its vfs storage driver in a
private root) pushes an image it pulled and pulls it back, through auth.
oras-py pushes and pulls an artifact monolithically and in chunks. `make test`
installs skopeo and podman (Debian) where it runs as root; without them (and
not on CI) their tests are skipped with the reason.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import bcrypt
import httpx
import pytest
from _registry import RegistryServer

MiB = 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PASSWORD = "skopeo-Secret-91ab"


def need_skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("skopeo is not installed: make test installs it (apt-get install skopeo)")
        pytest.skip("skopeo is not installed (apt-get install skopeo; make test does it as root)")
    return path


def skopeo(*args: str) -> str:
    done = subprocess.run(
        [need_skopeo(), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"skopeo {' '.join(args[:1])}: {done.stderr[-2000:]}"
    return done.stdout


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(name: str, data: bytes) -> bytes:
    """A tar archive holding one file: a real layer, which podman unpacks."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_layout(root: Path, layer_sizes: list[int]) -> tuple[Path, str]:
    """An OCI image layout (tag ``1``) of gzip layers (stored, so skopeo sends them as they are)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    rng = random.Random(14)

    def write(data: bytes) -> str:
        d = _sha256(data)
        (blobs / d.split(":")[1]).write_bytes(data)
        return d

    layers = []
    for number, size in enumerate(layer_sizes):
        data = gzip.compress(_tar(f"file-{number}.bin", rng.randbytes(size)), 0, mtime=0)
        layers.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": write(data),
                "size": len(data),
            }
        )
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": write(config),
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    digest = write(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root, digest


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    path.write_text(f"pusher:$2y${hashed[4:]}\n")
    return path


@pytest.mark.parametrize("store", ["memory", "file"])
def test_skopeo_copies_an_image_in_and_out_with_identical_digests(
    store: str, tmp_path: Path, htpasswd: Path
) -> None:
    need_skopeo()
    layout, manifest_digest = make_layout(tmp_path / "image", [64 * MiB, 1000, 200_000, 5])
    url = "memory://" if store == "memory" else (tmp_path / "store").as_uri()
    log = tmp_path / "server.log"
    creds = f"pusher:{PASSWORD}"
    with RegistryServer(url, "--htpasswd", str(htpasswd), log=log) as server:
        ref = f"docker://{server.address}/test/img:1"
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:1", ref)
        back = tmp_path / "back"
        skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, ref, f"oci:{back}:1")
        raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, ref)
        assert _sha256(raw.encode()) == manifest_digest
        inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds, ref))
        assert inspected["Digest"] == manifest_digest
        assert len(inspected["Layers"]) == 4
        assert server.stop() == 0
    assert _sha256(skopeo("inspect", "--raw", f"oci:{back}:1").encode()) == manifest_digest
    original = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    copied = {p.name: p.read_bytes() for p in (back / "blobs" / "sha256").iterdir()}
    assert copied == original
    assert PASSWORD not in log.read_text()


def test_skopeo_lists_tags_across_pages_and_deletes(tmp_path: Path) -> None:
    need_skopeo()
    layout, manifest_digest = make_layout(tmp_path / "image", [1000])
    log = tmp_path / "server.log"
    with RegistryServer("memory://", "--tags-page-size", "2", log=log) as server:
        ref = f"docker://{server.address}/test/img"
        skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"{ref}:1")
        manifest = (layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes()
        with httpx.Client(base_url=server.url) as client:
            for tag in ("2", "3", "latest", "v1.0"):
                response = client.put(
                    f"/v2/test/img/manifests/{tag}",
                    content=manifest,
                    headers={"content-type": OCI_MANIFEST},
                )
                assert response.status_code == 201
            first_page = client.get("/v2/test/img/tags/list")
            assert len(first_page.json()["tags"]) == 2
            assert "link" in first_page.headers
        listed = json.loads(skopeo("list-tags", "--tls-verify=false", ref))
        assert sorted(listed["Tags"]) == ["1", "2", "3", "latest", "v1.0"]
        skopeo("delete", "--tls-verify=false", f"{ref}@{manifest_digest}")
        with httpx.Client(base_url=server.url) as client:
            assert client.get(f"/v2/test/img/manifests/{manifest_digest}").status_code == 404
            assert client.get("/v2/test/img/manifests/1").status_code == 404
            assert client.get("/v2/test/img/tags/list").json()["tags"] == []


@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_oras_pushes_and_pulls_an_artifact(chunked: bool, tmp_path: Path) -> None:
    import oras.client

    payload = tmp_path / "payload.bin"
    data = random.Random(7).randbytes(3 * MiB + 123)
    payload.write_bytes(data)
    notes = tmp_path / "notes.txt"
    notes.write_text("release notes\n")
    with RegistryServer("memory://", log=tmp_path / "server.log") as server:
        client = oras.client.OrasClient(hostname=server.address, insecure=True)
        target = f"{server.address}/test/artifact:v1"
        response = client.push(
            files=[str(payload), str(notes)],
            target=target,
            do_chunked=chunked,
            chunk_size=MiB,
            disable_path_validation=True,
        )
        assert response.status_code == 201
        out = tmp_path / "out"
        pulled = client.pull(target=target, outdir=str(out))
        assert sorted(Path(p).name for p in pulled) == ["notes.txt", "payload.bin"]
        assert (out / "payload.bin").read_bytes() == data
        assert (out / "notes.txt").read_text() == "release notes\n"
        if chunked:  # oras sent PATCHes with Content-Range: the log has no errors
            assert "Traceback" not in server.logs()


def test_basic_auth_challenge_is_what_clients_answer(htpasswd: Path, tmp_path: Path) -> None:
    with (
        RegistryServer("memory://", "--htpasswd", str(htpasswd), log=tmp_path / "l") as server,
        httpx.Client(base_url=server.url) as client,
    ):
        first = client.get("/v2/")
        assert first.status_code == 401
        assert first.headers["www-authenticate"].startswith("Basic realm=")
        token = base64.b64encode(f"pusher:{PASSWORD}".encode()).decode()
        again = client.get("/v2/", headers={"authorization": f"Basic {token}"})
        assert again.status_code == 200


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed: make test installs it (apt-get install {tool})")
        pytest.skip(f"{tool} is not installed (apt-get install {tool}; make test does it as root)")
    return path


def test_podman_pushes_and_pulls_through_basic_auth(
    tmp_path: Path, htpasswd: Path, request: pytest.FixtureRequest
) -> None:
    podman_path = need("podman")
    layout, _ = make_layout(tmp_path / "image", [300_000, 2000])
    short = Path(tempfile.mkdtemp(prefix="pm-"))  # podman wants a runroot under 50 characters
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    base = [
        podman_path,
        "--root",
        str(tmp_path / "podman-root"),
        "--runroot",
        str(short / "run"),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
    ]

    def podman(*args: str) -> str:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"podman {args[0]}: {done.stderr[-2000:]}"
        return done.stdout

    creds = f"pusher:{PASSWORD}"
    with RegistryServer("memory://", "--htpasswd", str(htpasswd), log=tmp_path / "l") as server:
        image = f"{server.address}/test/podman:1"
        podman("pull", f"oci:{layout}:1")
        image_id = podman("images", "--quiet", "--no-trunc").split()[0].removeprefix("sha256:")
        podman("push", "--tls-verify=false", "--creds", creds, image_id, f"docker://{image}")
        podman("rmi", "--all", "--force")
        podman("pull", "--tls-verify=false", "--creds", creds, f"docker://{image}")
        pulled = json.loads(podman("image", "inspect", image))
        assert pulled[0]["Id"] == image_id
        with httpx.Client(base_url=server.url, auth=("pusher", PASSWORD)) as client:
            tags = client.get("/v2/test/podman/tags/list").json()["tags"]
        assert tags == ["1"]
        assert server.stop() == 0
