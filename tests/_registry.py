"""The registry server as the tests run it: ``python -m asyncstore.registry serve`` in a child.

`RegistryServer` starts the command on 127.0.0.1 and a free port (``--listen
127.0.0.1:0``), reads the URL it prints once it listens, and stops it with
SIGTERM (or kills it). Its stderr (the server's log) goes to a file the tests
can read. `run_conformance` runs the OCI conformance suite (the copy in
tests/tools/oci-conformance) against a URL and returns its counts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO / "tests" / "tools" / "oci-conformance" / "run.sh"
_READY = re.compile(r"asyncstore registry listening on (http://\S+)")


class RegistryServer:
    """``python -m asyncstore.registry serve STORE_URL ...`` in a child process.

    Attributes:
        url: ``http://127.0.0.1:<port>`` once started.
        log: The file the server's stderr goes to.
    """

    def __init__(
        self,
        store_url: str,
        *options: str,
        backend: str = "asyncio",
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.store_url = store_url
        self.options = list(options)
        self.backend = backend
        self.log = log
        self.env = env
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> str:
        command = [
            sys.executable,
            "-m",
            "asyncstore.registry",
            "serve",
            self.store_url,
            "--listen",
            "127.0.0.1:0",
            "--backend",
            self.backend,
            *self.options,
        ]
        with self.log.open("ab") as err:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **(self.env or {})},
            )
        assert self.process.stdout is not None
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.kill()
                    raise RuntimeError(f"the registry did not start in {timeout} s: {self.logs()}")
                byte = os.read(self.process.stdout.fileno(), 1)
                if not byte:
                    self.wait(10)
                    raise RuntimeError(f"the registry exited at start: {self.logs()}")
                line += byte
        match = _READY.search(line.decode())
        if match is None:
            self.kill()
            raise RuntimeError(f"unexpected first line {line!r}: {self.logs()}")
        self.url = match[1]
        return self.url

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, as clients such as skopeo name the registry."""
        return self.url.removeprefix("http://")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit; return the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
        return code

    def kill(self) -> None:
        """SIGKILL (a crash: nothing gets to clean up)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> RegistryServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.kill()


@dataclasses.dataclass
class ConformanceResult:
    passed: int
    failed: int
    skipped: int
    output: str


def run_conformance(
    url: str, report_dir: Path, *, timeout: float = 600, env: dict[str, str] | None = None
) -> ConformanceResult:
    """Run the OCI distribution-spec v1.1.1 conformance suite against ``url``."""
    result = subprocess.run(
        ["bash", str(CONFORMANCE), url],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "OCI_REPORT_DIR": str(report_dir),
            "CONFORMANCE_TIMEOUT": str(int(timeout)),
            **(env or {}),
        },
        check=False,
    )
    output = result.stdout + result.stderr
    counts = re.findall(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    skipped = re.findall(r"^skipped: (\d+)$", result.stdout, re.MULTILINE)
    if not counts:
        raise AssertionError(f"the conformance suite printed no counts:\n{output[-4000:]}")
    passed, failed = map(int, counts[-1])
    return ConformanceResult(passed, failed, int(skipped[-1]) if skipped else -1, output)
