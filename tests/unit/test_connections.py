"""The API client's connections end in a reset: a request still unanswered when Molt gives
up on it (lost leadership) is thrown away by the kernel rather than retransmitted to the
API server after a partition heals."""

from __future__ import annotations

import asyncio
import socket
import struct

from kubernetes_asyncio import client

from molt.kube.connections import abort_connections, reset_on_close, resetting_socket


def test_sockets_are_made_to_reset_on_close() -> None:
    info = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0]
    with resetting_socket(info) as sock:
        linger = sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.calcsize("ii"))
        assert struct.unpack("ii", linger) == (1, 0)


async def test_aborting_a_request_in_flight_resets_its_connection() -> None:
    received = asyncio.Event()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reads the request, never answers, then reports how the client let go."""
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        try:
            rest = await reader.read()
            outcome.set_result(f"closed gracefully after {len(rest)} more bytes")
        except ConnectionResetError:
            outcome.set_result("reset")
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    api = client.ApiClient(configuration)
    try:
        await reset_on_close(api)
        request = asyncio.create_task(
            client.CoreV1Api(api).patch_node("n", {"metadata": {"labels": {"a": "b"}}})
        )
        await asyncio.wait_for(received.wait(), 10)
        await abort_connections(api)
        assert await asyncio.wait_for(outcome, 10) == "reset"
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
    finally:
        await api.close()
        server.close()
        await server.wait_closed()
