"""``molt run --debug-port``: a read-only view of the controller's watch caches.

``GET /debug/caches`` answers, per cache, the key and resourceVersion of every object it
holds (``KubeClusterState.digest``), so a person or a test can compare the controller's
view with a fresh LIST after an outage: a cache that missed an event shows as a key
missing, extra, or behind. Names and versions only, no spec, status or annotation.

Off by default, and bound to loopback unless told otherwise: object names are still
information about the cluster, and nothing here needs to be reachable from elsewhere
(``kubectl port-forward`` reaches it in a pod). It is served by aiohttp on the
controller's own event loop, so a digest is taken between two cache updates, never
during one (the metrics server runs in a thread and could not read the caches safely).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

CACHES_PATH = "/debug/caches"


class DebugServer:
    """Serves ``CACHES_PATH`` from ``digest`` on ``address:port`` (port 0: any free)."""

    def __init__(
        self, digest: Callable[[], dict[str, dict[str, Any]]], address: str, port: int
    ) -> None:
        self.digest = digest
        self.address = address
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; the port it listens on (the one asked for, or the one given for 0)."""
        app = web.Application()
        app.router.add_get(CACHES_PATH, self._caches)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        family, kind, _, _, where = socket.getaddrinfo(
            self.address, self.port, type=socket.SOCK_STREAM
        )[0]
        listener = socket.socket(family, kind)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(where)
        except OSError:
            listener.close()
            await self.stop()
            raise
        await web.SockSite(self._runner, listener).start()
        bound = int(listener.getsockname()[1])
        log.info("debug.serving", address=self.address, port=bound, path=CACHES_PATH)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _caches(self, request: web.Request) -> web.Response:
        return web.json_response(self.digest())
