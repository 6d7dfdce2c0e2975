"""Running the registry: hypercorn under asyncio or trio, until a signal or a trigger."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import sniffio

from .._errors import ConfigurationError
from ._http import Receive, Scope, Send

__all__ = ["ServerOptions", "parse_listen", "serve"]

log = logging.getLogger("asyncstore.registry")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class ServerOptions:
    """How the HTTP server runs.

    Attributes:
        listen: ``host:port`` to listen on (port 0: any free port).
        read_timeout: Seconds a connection may stay silent while a request is
            expected or its body is read (None: no limit).
        keep_alive_timeout: Seconds an idle keep-alive connection is kept.
        shutdown_timeout: Seconds requests in flight get to finish after a
            shutdown signal before they are cancelled.
        backlog: Connections waiting to be accepted.
    """

    listen: str = "127.0.0.1:5000"
    read_timeout: float | None = 60.0
    keep_alive_timeout: float = 75.0
    shutdown_timeout: float = 30.0
    backlog: int = 1024


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a pair.

    Raises:
        ConfigurationError: not host:port, or a port outside 0-65535.
    """
    host, sep, port = str(listen).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigurationError(
            f"--listen must be host:port (for example 127.0.0.1:5000), not {listen!r}",
            key="listen",
        )
    return host, int(port)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted ones
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror}", key="listen"
        ) from None
    return sock


async def serve(
    app: ASGIApp,
    options: ServerOptions | None = None,
    *,
    ready: Callable[[str], Any] | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Serve ``app`` over HTTP/1.1 with hypercorn, on the running event loop (asyncio or trio).

    Returns once ``shutdown_trigger`` returns (default: SIGINT or SIGTERM) and
    the requests in flight have finished (or ``shutdown_timeout`` has passed).

    Args:
        app: An ASGI 3 application (for example a `RegistryApp`).
        options: Where to listen and the timeouts.
        ready: Called with the base URL (``http://host:port``) once the socket listens.
        shutdown_trigger: Awaited; serving stops when it returns.

    Raises:
        ConfigurationError: a bad ``listen`` or the address is in use.
    """
    options = options if options is not None else ServerOptions()
    host, port = parse_listen(options.listen)
    from hypercorn.config import Config

    sock = await anyio.to_thread.run_sync(_bind, host, port, options.backlog)
    bound_port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here
    config.read_timeout = options.read_timeout  # type: ignore[assignment]  # a float works
    config.keep_alive_timeout = options.keep_alive_timeout
    config.graceful_timeout = options.shutdown_timeout
    config.backlog = options.backlog
    config.accesslog = None
    config.errorlog = logging.getLogger("asyncstore.registry.server")
    config.include_server_header = False
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}"
    trigger = shutdown_trigger if shutdown_trigger is not None else _wait_for_signal
    log.info("asyncstore registry listening on %s", url)
    if ready is not None:
        ready(url)
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as trio_serve

        await trio_serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        await asyncio_serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]


async def _wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            return
