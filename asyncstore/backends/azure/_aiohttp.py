"""azure-core's aiohttp transport, without aiohttp's own hidden retry.

aiohttp's ClientSession sends a request again, at once and once, when its
connection fails with ``ClientOSError`` or ``ServerDisconnectedError`` and
the method is "idempotent" (GET, HEAD, PUT, DELETE, ...), whether or not the
server had already acted on it. For the Blob service that includes Put Block
List, the commit of an upload: a commit whose answer was lost was committed
again behind the SDK's back, and every Store attempt could be two requests
without backoff. The backend turns the SDK's retries off so that the Store's
`RetryPolicy` alone decides (with its backoff, its attempt count, and the
backend's recognition of a commit that already happened); this transport
turns aiohttp's off too. Imported only when aiohttp is used (asyncio).
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline.transport._aiohttp import AioHttpTransport

__all__ = ["AioHttpTransportNoRetry"]


class AioHttpTransportNoRetry(AioHttpTransport):
    """`AioHttpTransport` whose session never re-sends a request by itself."""

    #: The name `AzureBackend.describe` shows: azure-core's transport, as configured.
    _label = "AioHttpTransport"

    async def open(self) -> None:
        await super().open()  # type: ignore[no-untyped-call]
        session: Any = self.session
        # aiohttp has no public switch for it; its own test client sets this (3.9+).
        if session is not None and hasattr(session, "_retry_connection"):
            session._retry_connection = False
