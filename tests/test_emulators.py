"""asyncstore.testing.emulators: a server that does not start is a clear EmulatorError.

The servers that do start are every server-backed test's fixtures (tests/_servers.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncstore.testing import emulators
from asyncstore.testing.emulators import EmulatorError, LocalServer

FALSE = shutil.which("false") or "/bin/false"


def test_azurite_that_is_not_installed_is_an_emulator_error(tmp_path: Path) -> None:
    missing = tmp_path / "node_modules" / ".bin" / "azurite-blob"
    with (
        pytest.raises(EmulatorError, match=r"Azurite is not installed at .*azurite-blob"),
        emulators.azurite(missing),
    ):
        pass


def test_find_azurite_looks_under_the_roots_given(tmp_path: Path) -> None:
    binary = tmp_path / "node_modules" / ".bin" / "azurite-blob"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    assert emulators.find_azurite(tmp_path / "elsewhere", tmp_path) == binary


def test_a_gcs_emulator_that_exits_is_an_emulator_error_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "emulator.log"
    script = tmp_path / "fails.py"
    script.write_text("import sys; print('no such emulator here'); sys.exit(3)\n")
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    python.chmod(0o755)
    with (
        pytest.raises(EmulatorError, match=r"(?s)exited with status 3.*no such emulator here"),
        emulators.gcs_emulator(log=log, python=str(python)),
    ):
        pass


def test_an_emulator_that_never_answers_times_out(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexec sleep 60\n")
    python.chmod(0o755)
    with (
        pytest.raises(EmulatorError, match=r"did not answer within 0\.5 s"),
        emulators.gcs_emulator(python=str(python), timeout=0.5),
    ):
        pass


def test_a_moto_server_that_does_not_start_is_an_emulator_error() -> None:
    with (
        pytest.raises(EmulatorError, match="moto's server did not start"),
        emulators.moto_server(python=FALSE),
    ):
        pass


def test_fake_aws_env_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mine")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with emulators.fake_aws_env():
        assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
        assert os.environ["AWS_SESSION_TOKEN"] == "testing"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "mine"
    assert "AWS_SESSION_TOKEN" not in os.environ


def test_a_local_server_knows_its_port() -> None:
    process = subprocess.Popen([FALSE])
    process.wait()
    server = LocalServer("http://127.0.0.1:4321/devstoreaccount1", process)
    assert (server.port, server.pid) == (4321, process.pid)


def test_the_emulators_module_imports_only_the_standard_library() -> None:
    """bench/ runs it where asyncstore's dependencies may be missing: nothing else at the top."""
    code = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('emulators', {emulators.__file__!r})\n"
        "module = sys.modules['emulators'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "third = [m for m in sys.modules if m.split('.')[0] in "
        "{'anyio', 'asyncstore', 'pytest', 'moto', 'httpx', 'boto3'}]\n"
        "assert not third, third\n"
    )
    subprocess.run([sys.executable, "-I", "-c", code], check=True)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie left for a parent that does not reap counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_gcs_emulator_stops_when_the_process_that_started_it_dies() -> None:
    """A test session killed outright (no clean-up runs) leaves no emulator behind."""
    code = (
        "import os, sys\n"
        "from asyncstore.testing.emulators import gcs_emulator\n"
        "with gcs_emulator() as server:\n"
        "    print(server.pid, flush=True)\n"
        "    os._exit(0)  # dies as a killed process does: no finally, no atexit\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    pid = int(done.stdout.split()[0])
    for _ in range(600):  # bounded: SIGTERM ends it at once; 60 s only guards a hang
        if _gone(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        raise AssertionError(f"the emulator (pid {pid}) outlived the process that started it")
