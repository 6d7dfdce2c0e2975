"""The OCI distribution-spec v1.1.1 conformance suite against ``asyncstore registry serve``.

The suite is the prebuilt binary in tests/tools/oci-conformance (its README
says where it comes from). A conformant registry gets 74 passed, 0 failed and
5 skipped (the skips depend on the environment: no preloaded tag, no
automatic-crossmount setting). The server runs as the command does, in a child
process, under asyncio and under trio, on memory://, file:// and s3:// (moto), and
under asyncio on gs:// (gcp-storage-emulator) and az:// (Azurite).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _registry import RegistryServer, run_conformance
from _servers import BUCKET


def store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "file":
        return (tmp_path / "store").as_uri()
    s3 = request.getfixturevalue("s3")
    return f"s3://{BUCKET}/registry-{uuid.uuid4().hex[:8]}/?endpoint={s3.endpoint}"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_the_conformance_suite_passes(
    kind: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = store_url(kind, tmp_path, request)
    with RegistryServer(url, backend=backend, log=tmp_path / "server.log") as server:
        result = run_conformance(server.url, tmp_path / "report")
        code = server.stop()
    assert (result.passed, result.failed, result.skipped) == (74, 0, 5), result.output[-6000:]
    assert code == 0, server.logs()
    assert "Traceback" not in server.logs()


def test_automatic_mount_passes_the_crossmount_cases(tmp_path: Path) -> None:
    """With OCI_AUTOMATIC_CROSSMOUNT=1 the two automatic-mount cases run (one of them) and pass."""
    with RegistryServer("memory://", log=tmp_path / "server.log") as server:
        result = run_conformance(
            server.url, tmp_path / "report", env={"OCI_AUTOMATIC_CROSSMOUNT": "1"}
        )
    assert (result.passed, result.failed) == (75, 0), result.output[-6000:]


def test_without_automatic_mount_the_disabled_case_passes(tmp_path: Path) -> None:
    with RegistryServer("memory://", "--no-automatic-mount", log=tmp_path / "server.log") as server:
        result = run_conformance(
            server.url, tmp_path / "report", env={"OCI_AUTOMATIC_CROSSMOUNT": "0"}
        )
    assert (result.passed, result.failed) == (75, 0), result.output[-6000:]


@pytest.mark.parametrize("kind", ["gs", "az"])
def test_the_conformance_suite_passes_on_gcs_and_azure_emulators(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same server over gs:// (gcp-storage-emulator) and az:// (Azurite), under asyncio."""
    if kind == "gs":
        emulator = request.getfixturevalue("emulator")
        url = f"gs://{emulator.create_bucket()}/registry/?api_root={emulator.url}"
        env: dict[str, str] = {}
    else:
        azurite = request.getfixturevalue("azurite")
        container = f"registry{uuid.uuid4().hex[:12]}"
        azurite.service().create_container(container)
        url = f"az://{container}/registry"
        env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    with RegistryServer(url, env=env, log=tmp_path / "server.log") as server:
        result = run_conformance(server.url, tmp_path / "report")
        code = server.stop()
    assert (result.passed, result.failed, result.skipped) == (74, 0, 5), (
        result.output[-6000:] + server.logs()[-3000:]
    )
    assert code == 0, server.logs()
