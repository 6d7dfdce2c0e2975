"""Local stand-ins for the cloud services, on 127.0.0.1, for tests and benchmarks.

- `moto_server`: moto's S3 server (``ThreadedMotoServer``) in a child Python
  process, so that its request handling (and its GIL) never competes with the
  code under test; with `FAKE_AWS_ENV`, fake credentials for the standard AWS
  chain (`fake_aws_env` sets them in ``os.environ`` for a while);
- `gcs_emulator`: gcp-storage-emulator, in memory (`create_gcs_bucket` adds a
  bucket);
- `azurite`: Azurite's Blob service, in memory (`find_azurite` finds the
  ``azurite-blob`` that ``npm install azurite`` put in ``node_modules``).

Each is a context manager: it starts the server on a free port, waits until it
answers (at most ``timeout`` seconds, else `EmulatorError` with the end of the
server's log), yields a `LocalServer` (its URL and process), and stops it
(terminate, then kill); on Linux a server also stops when the process that
started it dies, cleanly or not. Only the standard library is imported: the servers are
separate programs (moto and the GCS emulator run as ``python -m`` / ``python -c``
in the interpreter given, by default this one; Azurite is a Node.js program).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "AZURITE_ACCOUNT",
    "FAKE_AWS_ENV",
    "EmulatorError",
    "LocalServer",
    "azurite",
    "create_gcs_bucket",
    "fake_aws_env",
    "find_azurite",
    "free_port",
    "gcs_emulator",
    "moto_server",
]

#: Fake credentials for the standard AWS chain (moto accepts any), and never the
#: developer's own AWS files or the instance metadata service.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: The account of Azurite's well-known development credentials.
AZURITE_ACCOUNT = "devstoreaccount1"
#: How often a starting server is asked whether it answers yet, in seconds.
_POLL = 0.1
#: How long a stopping server may take to exit before it is killed, in seconds.
_STOP = 10.0
#: How much of a server's log an `EmulatorError` quotes (its end).
_LOG_TAIL = 4000
#: prctl(2)'s option for the signal a child gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1

# The moto child: prints its port once it listens, serves until its stdin closes, so
# that a test session that dies never leaves a server behind.
_MOTO_CHILD = """\
import logging, sys
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
sys.stdout.write(f"PORT {server.get_host_and_port()[1]}\\n")
sys.stdout.flush()
try:
    sys.stdin.buffer.read()
finally:
    server.stop()
"""


class EmulatorError(RuntimeError):
    """A local server did not start (the message says why, with the end of its log)."""


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """A running local server.

    Attributes:
        url: Where it answers: ``http://127.0.0.1:<port>`` (for Azurite, the
            account's Blob endpoint, ``http://127.0.0.1:<port>/devstoreaccount1``).
        process: The server's process.
        log: The file its output goes to, if one was given.
    """

    url: str
    process: subprocess.Popen[bytes]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def fake_aws_env() -> Iterator[None]:
    """Set `FAKE_AWS_ENV` in ``os.environ``, restoring the previous values afterwards."""
    saved = {name: os.environ.get(name) for name in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP)


def _tail(log: Path | None) -> str:
    if log is None:
        return "(no log kept: pass log= to see the server's output)"
    try:
        return log.read_text(errors="replace")[-_LOG_TAIL:]
    except OSError as exc:
        return f"(its log {log} could not be read: {exc})"


def _answers(url: str) -> bytes | None:
    """The body of a GET of ``url``, also of an HTTP error; None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as error:  # an answer all the same (403: unsigned)
        return error.read() or b"(error)"
    except OSError:
        return None


def _wait(
    name: str, process: subprocess.Popen[bytes], ready: str, log: Path | None, timeout: float
) -> None:
    """Wait until a GET of ``ready`` answers; `EmulatorError` if the server exits or times out."""
    deadline = time.monotonic() + timeout
    while _answers(ready) is None:
        if process.poll() is not None:
            raise EmulatorError(
                f"{name} exited with status {process.returncode} while starting:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise EmulatorError(f"{name} did not answer within {timeout:g} s:\n{_tail(log)}")
        time.sleep(_POLL)


def _parent_death_guard() -> Callable[[], None] | None:
    """For the child, before it runs the server: on Linux, have the kernel send it SIGTERM
    when its parent dies, so that a test session killed outright leaves no server behind
    (moto learns it from its stdin instead; the GCS emulator and Azurite read none)."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def guard() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the guard was set
            os._exit(1)

    return guard


def _spawn(
    command: Sequence[str], log: Path | None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output (stdout and stderr) in ``log``, else discarded."""
    guard = _parent_death_guard()
    if log is None:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=guard,
        )
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=guard
        )


@contextlib.contextmanager
def moto_server(*, python: str = sys.executable, timeout: float = 60.0) -> Iterator[LocalServer]:
    """moto's S3 server on 127.0.0.1 and a free port, in a child process.

    The child gets `FAKE_AWS_ENV`; the caller's clients need it too (`fake_aws_env`).
    It exits when this context ends, or when the parent dies (its stdin closes).

    Args:
        python: The interpreter to run it (moto[server] installed).
        timeout: Seconds to wait for it to answer.

    Raises:
        EmulatorError: It did not start.
    """
    process = subprocess.Popen(
        [python, "-c", _MOTO_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **FAKE_AWS_ENV},
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = process.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("PORT "):
            raise EmulatorError(f"moto's server did not start: {line!r}")
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        _wait("moto's server", process, url + "/moto-api/", None, timeout)
        yield LocalServer(url, process)
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(_STOP)
        except subprocess.TimeoutExpired:
            _stop(process)
        process.stdout.close()


@contextlib.contextmanager
def gcs_emulator(
    *, log: Path | None = None, python: str = sys.executable, timeout: float = 60.0
) -> Iterator[LocalServer]:
    """gcp-storage-emulator on 127.0.0.1 and a free port, in memory.

    It keeps every object in memory, deleted ones too: start one per group of
    tests rather than one for a long session.

    Args:
        log: A file for its output (else it is discarded).
        python: The interpreter to run it (gcp-storage-emulator installed).
        timeout: Seconds to wait for it to answer.

    Raises:
        EmulatorError: It did not start.
    """
    port = free_port()
    command = [
        python,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host=127.0.0.1",
        f"--port={port}",
        "--in-memory",
        "--quiet",
    ]
    url = f"http://127.0.0.1:{port}"
    process = _spawn(command, log)
    try:
        _wait("gcp-storage-emulator", process, url + "/", log, timeout)
        yield LocalServer(url, process, log)
    finally:
        _stop(process)


def create_gcs_bucket(url: str, name: str, project: str = "test") -> None:
    """Create bucket ``name`` in the GCS emulator at ``url`` (deleted objects are not kept)."""
    body = {"name": name, "softDeletePolicy": {"retentionDurationSeconds": "0"}}
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project={project}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60):
        pass


def find_azurite(*roots: Path) -> Path | None:
    """``node_modules/.bin/azurite-blob`` under one of ``roots`` (else the working
    directory), or ``azurite-blob`` on the PATH; None if there is none."""
    for root in roots or (Path.cwd(),):
        candidate = root / "node_modules" / ".bin" / "azurite-blob"
        if candidate.exists():
            return candidate
    found = shutil.which("azurite-blob")
    return Path(found) if found else None


def _azurite_command(binary: Path, port: int, storage: Sequence[str]) -> list[str]:
    return [
        str(binary),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        "--silent",
        *storage,
    ]


@contextlib.contextmanager
def azurite(
    binary: Path | str | None = None, *, log: Path | None = None, timeout: float = 60.0
) -> Iterator[LocalServer]:
    """Azurite's Blob service on 127.0.0.1 and a free port, in memory.

    An Azurite too old for ``--inMemoryPersistence`` keeps its data in a
    temporary folder instead (removed afterwards). The yielded URL is the
    development account's Blob endpoint; its key is Azurite's well-known one.

    Args:
        binary: ``azurite-blob`` (default: `find_azurite`).
        log: A file for its output (else a temporary one, removed afterwards).
        timeout: Seconds to wait for it to answer.

    Raises:
        EmulatorError: It is not installed, or did not start.
    """
    found = Path(binary) if binary is not None else find_azurite()
    if found is None or not found.exists():
        raise EmulatorError(
            f"Azurite is not installed{f' at {found}' if found else ''}: "
            "npm install azurite (this project's `make test` puts it in ./node_modules)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    try:
        for storage in (["--inMemoryPersistence"], ["--location", str(workdir)]):
            port = free_port()
            output = log if log is not None else workdir / f"azurite-{port}.log"
            url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
            process = _spawn(_azurite_command(found, port, storage), output, cwd=workdir)
            try:
                try:
                    _wait("Azurite", process, url + "?comp=list", output, timeout)
                except EmulatorError:
                    if storage[0] == "--inMemoryPersistence" and "inMemoryPersistence" in _tail(
                        output
                    ):
                        continue  # an older Azurite: keep the data in the folder instead
                    raise
                yield LocalServer(url, process, log)
                return
            finally:
                _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
