"""A local S3 server for tests and benchmarks: moto's server mode, in a child process.

``MotoServer`` starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 and an
ephemeral port in a child Python process, so the server's request handling
(and its GIL) never competes with the code under test. The child prints its
port on stdout once it is listening and exits when its stdin is closed, so a
crashed test session never leaves a server behind.

Run as a script it is that child::

    python tests/_moto.py        # prints "PORT <n>", serves until stdin closes
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

#: Fake credentials for the standard AWS chain (moto accepts any).
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Never read the developer's own AWS files.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoServer:
    """A moto S3 server in a child process; use as a context manager.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>`` once started.
    """

    def __init__(self) -> None:
        self.endpoint = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> str:
        """Start the server and wait until it answers; return its endpoint URL."""
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **FAKE_ENV},
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode().strip()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"moto server did not start: {line!r}")
        self.endpoint = f"http://127.0.0.1:{int(line.split()[1])}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        return self.endpoint

    def stop(self) -> None:
        """Stop the server (close its stdin, then terminate it if it lingers)."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def fake_aws_env() -> Iterator[None]:
    """Set :data:`FAKE_ENV` in ``os.environ``, restoring the previous values afterwards."""
    saved = {name: os.environ.get(name) for name in FAKE_ENV}
    os.environ.update(FAKE_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _serve() -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    try:
        sys.stdin.buffer.read()  # until the parent closes the pipe (or dies)
    finally:
        server.stop()


if __name__ == "__main__":
    _serve()
