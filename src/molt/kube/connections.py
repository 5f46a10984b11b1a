"""The API client's connections are reset, never drained, when Molt gives up on them.

The fence (``molt.kube.leader.Fence``) stops a replica from *sending* a write once its
lease can no longer be trusted, but a write sent just before that may still be in the
network. During a partition its bytes are unacknowledged, and TCP keeps them in the
sender's kernel and retransmits them, even after the socket is closed and the process has
exited, so they reach the API server when the partition heals: after the new leader has
taken over. A connection closed with ``SO_LINGER`` 0 is reset instead, and its
unacknowledged bytes are thrown away.

So every socket of the API client is made with ``SO_LINGER`` 0 (``reset_on_close``), and
when leadership is lost every connection is aborted at once (``abort_connections``), so
nothing the old leader sent can still land. For an HTTP client the reset costs nothing:
it closes a connection only when it has its answer or no longer wants one.
"""

from __future__ import annotations

import socket
import ssl
import struct

import aiohttp
from aiohttp import AddrInfoType
from kubernetes_asyncio import client

LINGER_RESET = struct.pack("ii", 1, 0)
"""``struct linger`` {l_onoff=1, l_linger=0}: close() sends an RST and drops unsent data."""

READ_BUFSIZE = 2**21
"""As kubernetes_asyncio sets it: a watch event can carry a 1.5 MiB object."""


def resetting_socket(addr_info: AddrInfoType) -> socket.socket:
    """A socket for ``addr_info`` whose close is an abort (RST), never a graceful FIN."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    return sock


def ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    """The TLS context kubernetes_asyncio's REST client builds from ``configuration``."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.disable_strict_ssl_verification:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


async def reset_on_close(api: client.ApiClient) -> None:
    """Give ``api`` an HTTP session whose sockets all have ``SO_LINGER`` 0 (before it
    has opened any connection)."""
    rest = api.rest_client
    previous: aiohttp.ClientSession = rest.pool_manager
    connector = aiohttp.TCPConnector(
        limit=api.configuration.connection_pool_maxsize,
        ssl=ssl_context(api.configuration),
        socket_factory=resetting_socket,
    )
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=True, read_bufsize=READ_BUFSIZE
    )
    await previous.close()


async def abort_connections(api: client.ApiClient) -> None:
    """Abort every connection of ``api`` now, those with a request in flight included;
    the client makes no more requests afterwards."""
    session: aiohttp.ClientSession = api.rest_client.pool_manager
    connector = session.connector
    if connector is not None:
        await connector.close(abort_ssl=True)
