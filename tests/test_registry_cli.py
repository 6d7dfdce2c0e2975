"""``python -m asyncstore.registry serve``: its options reach the server, bad ones are refused.

`asyncstore.registry._cli` is what the ``asyncstore`` command wires to
``asyncstore registry serve`` (add_arguments and run); these tests run it as
the module entry point, in a child process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _registry import RegistryServer
from _registry_app import digest

from asyncstore.registry._cli import add_arguments, parse_size


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncstore.registry", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_add_arguments_gives_every_option_with_its_default() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["memory://"])
    assert args.store_url == "memory://"
    assert args.listen == "127.0.0.1:5000"
    assert (args.read_only, args.delete, args.automatic_mount) == (False, True, True)
    assert args.max_manifest_size == 4 * 1024 * 1024
    assert args.max_upload_size is None
    assert args.reference_cache == 1.0
    assert parser.parse_args(["memory://", "--reference-cache", "off"]).reference_cache is None
    assert (args.htpasswd, args.tokens, args.access, args.anonymous) == (None, None, [], "none")
    args = parser.parse_args(
        ["s3://b/p", "--no-delete", "--max-upload-size", "1GiB", "--access", "bob=read"]
    )
    assert args.delete is False
    assert args.max_upload_size == 1024**3
    assert args.access == [("bob", "read")]


@pytest.mark.parametrize(
    ("text", "value"),
    [("4194304", 4194304), ("4MiB", 4 * 1024**2), ("512KiB", 512 * 1024), ("1G", 10**9)],
)
def test_sizes_take_bytes_and_units(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["memory://", "--listen", "nowhere"], "--listen must be host:port"),
        (["memory://", "--listen", "127.0.0.1:99999"], "--listen must be host:port"),
        (["memory://", "--max-manifest-size", "lots"], "is not a size"),
        (["memory://", "--max-upload-size", "0"], "at least 1 byte"),
        (["memory://", "--read-timeout", "-1"], "positive"),
        (["memory://", "--reference-cache", "-1"], "--reference-cache"),
        (["memory://", "--access", "bob=admin"], "USER=read or USER=write"),
        ([], "STORE_URL"),
    ],
)
def test_a_bad_option_is_refused_naming_it(args: list[str], message: str) -> None:
    done = serve(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_a_bad_store_url_exits_2_with_the_secret_redacted() -> None:
    done = serve("nosuch://user:hunter2@host/x")
    assert done.returncode == 2
    assert "nosuch" in done.stderr
    assert "hunter2" not in done.stderr


def test_access_without_auth_is_refused() -> None:
    done = serve("memory://", "--access", "bob=read")
    assert done.returncode == 2
    assert "--access needs --htpasswd or --tokens" in done.stderr


def test_an_address_in_use_exits_2(tmp_path: Path) -> None:
    with RegistryServer("memory://", log=tmp_path / "log") as server:
        done = serve("memory://", "--listen", server.address)
    assert done.returncode == 2
    assert f"cannot listen on {server.address}" in done.stderr


def test_the_options_reach_the_server(tmp_path: Path) -> None:
    options = (
        "--read-only",
        "--max-manifest-size",
        "1KiB",
        "--tags-page-size",
        "2",
        "--backend",
        "trio",
    )
    with (
        RegistryServer("memory://", *options, log=tmp_path / "log") as server,
        httpx.Client(base_url=server.url) as client,
    ):
        response = client.post("/v2/a/blobs/uploads/", params={"digest": digest(b"")})
        assert response.status_code == 405
        assert "read-only" in response.text
    with (
        RegistryServer(
            "memory://", "--max-manifest-size", "1KiB", "--no-delete", log=tmp_path / "log"
        ) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        big = client.put("/v2/a/manifests/v1", content=b"{" + b" " * 2000 + b"}")
        assert big.status_code == 413
        assert client.delete(f"/v2/a/blobs/{digest(b'')}").status_code == 405
