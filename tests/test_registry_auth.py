"""Registry authentication and access: htpasswd (bcrypt), bearer tokens, read or write users.

Every write endpoint is tried with no credentials, wrong ones and a read-only
user; no password or token may appear in any log line (at DEBUG), any error
body or any error message.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from pathlib import Path

import anyio.to_thread
import bcrypt
import httpx
import pytest
from _registry import RegistryServer
from _registry_app import digest, error_code, push_image, registry_client

import asyncstore.registry._auth as auth_module
from asyncstore import ConfigurationError
from asyncstore.registry import Authenticator, hash_token, load_htpasswd, load_tokens

pytestmark = pytest.mark.anyio

REPO = "library/app"
ALICE_PASSWORD = "alice-Secret-7f3a9c"  # write
BOB_PASSWORD = "bob-Secret-0d81e4"  # read
WRITE_TOKEN = "tok-write-5b2f8e1c9a7d"
READ_TOKEN = "tok-read-3c6a0f4e2b91"
SECRETS = (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    WRITE_TOKEN,
    READ_TOKEN,
    # and as Basic credentials travel
    base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode(),
    base64.b64encode(f"bob:{BOB_PASSWORD}".encode()).decode(),
)
SESSION = "0" * 32


def _bcrypt(password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return "$2y$" + hashed[4:]  # what htpasswd -B writes


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{_bcrypt(ALICE_PASSWORD)}\nbob:{_bcrypt(BOB_PASSWORD)}\n")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# users:tokens\nci:{WRITE_TOKEN}\nviewer:{hash_token(READ_TOKEN)}\n")
    return htpasswd, tokens


async def authenticator(files: tuple[Path, Path], **options: object) -> Authenticator:
    htpasswd, tokens = files
    users = await anyio.to_thread.run_sync(load_htpasswd, htpasswd)
    known = await anyio.to_thread.run_sync(load_tokens, tokens)
    return Authenticator(
        htpasswd=users, tokens=known, access={"bob": "read", "viewer": "read"}, **options
    )


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


WRITES = [
    ("POST", f"/v2/{REPO}/blobs/uploads/"),
    ("POST", f"/v2/{REPO}/blobs/uploads/?digest={digest(b'x')}"),
    ("PATCH", f"/v2/{REPO}/blobs/uploads/{SESSION}"),
    ("PUT", f"/v2/{REPO}/blobs/uploads/{SESSION}?digest={digest(b'x')}"),
    ("DELETE", f"/v2/{REPO}/blobs/uploads/{SESSION}"),
    ("PUT", f"/v2/{REPO}/manifests/v1"),
    ("DELETE", f"/v2/{REPO}/manifests/v1"),
    ("DELETE", f"/v2/{REPO}/blobs/{digest(b'x')}"),
]
READS = [
    ("GET", "/v2/"),
    ("GET", f"/v2/{REPO}/tags/list"),
    ("GET", f"/v2/{REPO}/manifests/v1"),
    ("HEAD", f"/v2/{REPO}/manifests/v1"),
    ("GET", f"/v2/{REPO}/blobs/{digest(b'x')}"),
    ("GET", f"/v2/{REPO}/blobs/uploads/{SESSION}"),
    ("GET", f"/v2/{REPO}/referrers/{digest(b'x')}"),
]


async def test_every_write_endpoint_refuses_missing_wrong_and_read_only_credentials(
    files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = await authenticator(files)
    async with registry_client(auth=auth) as (client, registry):
        for method, path in WRITES:
            for headers, status, code in [
                ({}, 401, "UNAUTHORIZED"),
                (basic("alice", "wrong"), 401, "UNAUTHORIZED"),
                (basic("mallory", ALICE_PASSWORD), 401, "UNAUTHORIZED"),
                (bearer("not-a-token-at-all"), 401, "UNAUTHORIZED"),
                ({"authorization": "Basic %%%"}, 401, "UNAUTHORIZED"),
                ({"authorization": "Digest x"}, 401, "UNAUTHORIZED"),
                (basic("bob", BOB_PASSWORD), 403, "DENIED"),
                (bearer(READ_TOKEN), 403, "DENIED"),
            ]:
                response = await client.request(method, path, headers=headers, content=b"{}")
                assert response.status_code == status, (method, path, headers)
                assert error_code(response) == code
                if status == 401:
                    assert response.headers["www-authenticate"] == (
                        'Basic realm="asyncstore-registry"'
                    )
                assert not any(secret in response.text for secret in SECRETS)
        assert [key async for key in registry.store.list()] == []  # nothing was written
        for user_headers in (basic("alice", ALICE_PASSWORD), bearer(WRITE_TOKEN)):
            for method, path in WRITES:
                response = await client.request(method, path, headers=user_headers, content=b"{}")
                assert response.status_code not in (401, 403), (method, path)
    for record in caplog.records:
        text = record.getMessage() + str(record.args)
        assert not any(secret in text for secret in SECRETS), text


async def test_reads_need_credentials_and_read_users_may_pull(files: tuple[Path, Path]) -> None:
    auth = await authenticator(files)
    async with registry_client(auth=auth) as (client, _):
        client.headers.update(basic("alice", ALICE_PASSWORD))
        await push_image(client, REPO, "v1")
        del client.headers["authorization"]
        for method, path in READS:
            response = await client.request(method, path)
            assert response.status_code == 401, (method, path)
        for headers in (basic("bob", BOB_PASSWORD), bearer(READ_TOKEN)):
            response = await client.get(f"/v2/{REPO}/manifests/v1", headers=headers)
            assert response.status_code == 200
            assert (await client.get("/v2/", headers=headers)).status_code == 200


async def test_anonymous_read_lets_pulls_through_and_asks_writers_to_log_in(
    files: tuple[Path, Path],
) -> None:
    auth = await authenticator(files, anonymous="read")
    async with registry_client(auth=auth) as (client, _):
        assert (await client.get("/v2/")).status_code == 200
        assert (await client.get(f"/v2/{REPO}/tags/list")).status_code == 404  # no repo yet
        response = await client.post(f"/v2/{REPO}/blobs/uploads/")
        assert response.status_code == 401
        assert "www-authenticate" in response.headers
        wrong = await client.get("/v2/", headers=basic("alice", "wrong"))
        assert wrong.status_code == 401  # wrong credentials are never anonymous


async def test_default_access_read_makes_unlisted_users_readers(files: tuple[Path, Path]) -> None:
    auth = await authenticator(files, default_access="read")
    async with registry_client(auth=auth) as (client, _):
        response = await client.post(
            f"/v2/{REPO}/blobs/uploads/", headers=basic("alice", ALICE_PASSWORD)
        )
        assert response.status_code == 403


async def test_tokens_only_challenge_with_bearer(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci:{WRITE_TOKEN}\n")
    known = await anyio.to_thread.run_sync(load_tokens, tokens)
    async with registry_client(auth=Authenticator(tokens=known)) as (client, _):
        response = await client.get("/v2/")
        assert response.headers["www-authenticate"] == 'Bearer realm="asyncstore-registry"'
        assert (await client.get("/v2/", headers=bearer(WRITE_TOKEN))).status_code == 200
        refused = await client.get("/v2/", headers=basic("ci", WRITE_TOKEN))
        assert refused.status_code == 401


async def test_an_unknown_user_costs_a_bcrypt_check_and_a_known_pair_is_checked_once(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = auth_module._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth_module, "_checkpw", counting)
    auth = await authenticator(files)
    with pytest.raises(auth_module.RegistryError):
        await auth.identify(basic("nobody", "pw")["authorization"])
    assert len(calls) == 1  # checked against the dummy hash, as long as a real check
    for _ in range(3):
        identity = await auth.identify(basic("alice", ALICE_PASSWORD)["authorization"])
        assert identity is not None and identity.can_write
    assert len(calls) == 2  # then remembered
    with pytest.raises(auth_module.RegistryError):
        await auth.identify(basic("alice", ALICE_PASSWORD + "x")["authorization"])
    assert len(calls) == 3
    assert ALICE_PASSWORD not in repr(auth)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "line 1: the hash of user 'alice' is not"),
        ("alice:plaintext-password\n", "line 1: the hash of user 'alice' is not bcrypt"),
        ("# comment\n\nno-colon-here\n", "line 3: expected user:bcrypt-hash"),
    ],
)
def test_a_bad_htpasswd_line_is_a_configuration_error_that_hides_the_hash(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=message) as info:
        load_htpasswd(path)
    assert "plaintext-password" not in str(info.value)
    assert "W6ph5Mm5" not in str(info.value)


def test_a_bad_token_line_or_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("ci:short\n")
    with pytest.raises(ConfigurationError, match="line 1") as info:
        load_tokens(path)
    assert "short" not in str(info.value).split("line 1")[1].split("(")[0]
    with pytest.raises(ConfigurationError, match="cannot read the htpasswd file"):
        load_htpasswd(tmp_path / "missing")


def test_the_command_refuses_wrong_credentials_and_logs_no_secret_at_debug(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    htpasswd, tokens = files
    log = tmp_path / "server.log"
    options = ["--htpasswd", str(htpasswd), "--tokens", str(tokens), "--access", "bob=read"]
    with RegistryServer("memory://", *options, "--log-level", "debug", log=log) as server:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/v2/").status_code == 401
            assert client.get("/v2/", headers=basic("alice", BOB_PASSWORD)).status_code == 401
            assert client.get("/v2/", headers=bearer(READ_TOKEN + "x")).status_code == 401
            assert client.get("/v2/", headers=basic("alice", ALICE_PASSWORD)).status_code == 200
            pushed = client.post(f"/v2/{REPO}/blobs/uploads/", headers=basic("bob", BOB_PASSWORD))
            assert pushed.status_code == 403
        assert server.stop() == 0
    text = log.read_text()
    assert "authentication failed for user 'alice'" in text
    assert not any(secret in text for secret in SECRETS), text


def test_the_command_rejects_a_bad_htpasswd_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text("alice:not-bcrypt-secret\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asyncstore.registry",
            "serve",
            "memory://",
            "--htpasswd",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "not bcrypt" in done.stderr
    assert "not-bcrypt-secret" not in done.stderr + done.stdout
