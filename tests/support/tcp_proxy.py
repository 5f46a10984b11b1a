"""A loopback TCP proxy that can partition one client from its server, as a network does.

``TcpProxy`` listens on a free 127.0.0.1 port and forwards bytes both ways to
``upstream``. ``blackhole()`` cuts it the way a network partition does, not the way a
crash does: nothing is forwarded in either direction and no connection is reset or
closed; a new connection is accepted (on loopback the kernel completes the handshake)
but never reaches the upstream, so it hangs. ``heal()`` lets traffic through again.

What a partition does to the bytes caught in it follows TCP:

- Bytes a side sent during the partition were never acknowledged by the other end, so
  they are retransmitted once the network heals: they are held here and delivered on
  ``heal()``, in order, followed by the sender's FIN if it closed (``close()``) meanwhile.
  A request sent into a partition therefore reaches the server late, after the heal,
  unless its sender aborted the connection first.
- A side that aborts its connection (an RST, ``SO_LINGER`` 0 or ``transport.abort()``)
  throws its unacknowledged bytes away: what it sent during the partition is dropped
  here and never delivered, and the other side's connection is aborted on heal.
- A connection opened during the partition is held until the heal; if its client has
  closed or aborted it by then, it never reaches the upstream (its SYN would have been
  lost and the connect would have failed).

    async with TcpProxy("127.0.0.1", 6443) as proxy:
        ...  # point the client at proxy.port
        proxy.blackhole()
        proxy.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

CHUNK = 65536


@dataclass
class Flow:
    """Bytes one way (client to upstream, or back) and what a partition did to them."""

    forwarded: int = 0
    held: int = 0
    """Bytes that arrived while blackholed (delivered on heal unless dropped)."""
    dropped: int = 0
    """Held bytes discarded because their sender aborted its connection."""
    delivered_late: int = 0
    """Held bytes delivered after a heal."""


@dataclass
class ProxyStats:
    """What crossed the proxy, and what a partition held or dropped."""

    connections: int = 0
    never_established: int = 0
    """Connections opened during a partition whose client gave up before the heal."""
    requests: Flow = field(default_factory=Flow)
    """Client to upstream."""
    answers: Flow = field(default_factory=Flow)
    """Upstream to client."""


_EOF = object()


@dataclass(eq=False)
class _Pipe:
    """One direction of one connection: a reader task fills ``pending``, a writer task
    drains it whenever the network is up."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter | None
    """The destination; None until the upstream connection exists."""
    flow: Flow
    pending: deque[bytes | object] = field(default_factory=deque)
    reset: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class TcpProxy:
    """Forward 127.0.0.1:``port`` to ``upstream``; ``blackhole()`` and ``heal()`` it."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.stats = ProxyStats()
        self._up = asyncio.Event()
        self._up.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    # -- control ------------------------------------------------------------------------

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def blackholed(self) -> bool:
        return not self._up.is_set()

    def blackhole(self) -> None:
        """Stop forwarding in both directions; hold every connection as it is."""
        self._up.clear()

    def heal(self) -> None:
        """Forward again, starting with what the partition held."""
        self._up.set()

    async def stop(self) -> None:
        """Close the listener and abort every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- connections --------------------------------------------------------------------

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        this = asyncio.current_task()
        assert this is not None
        self._tasks.add(this)  # type: ignore[arg-type]
        this.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]
        try:
            await self._connection(reader, writer)
        except asyncio.CancelledError:  # stop(): asyncio's server logs a cancelled handler
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self._writers.add(writer)
        outbound = _Pipe(reader, None, self.stats.requests)
        feeding = self._spawn(self._read(outbound))
        # A connection opened into a partition waits for the heal; one its client has
        # given up on by then never reaches the upstream.
        await self._up.wait()
        if outbound.reset or (outbound.pending and outbound.pending[-1] is _EOF):
            self.stats.never_established += 1
            feeding.cancel()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            feeding.cancel()
            return
        self._writers.add(up_writer)
        outbound.writer = up_writer
        inbound = _Pipe(up_reader, writer, self.stats.answers)
        tasks = [
            feeding,
            self._spawn(self._read(inbound)),
            self._spawn(self._write(outbound)),
            self._spawn(self._write(inbound)),
        ]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    async def _read(self, pipe: _Pipe) -> None:
        """Read from the source into ``pending`` until EOF or a reset."""
        while True:
            try:
                data = await pipe.reader.read(CHUNK)
            except OSError:  # ECONNRESET: the sender aborted
                self._drop(pipe)
                pipe.reset = True
                pipe.wake.set()
                return
            if self.blackholed:
                pipe.flow.held += len(data)
            pipe.pending.append(data if data else _EOF)
            pipe.wake.set()
            if not data:
                return

    def _drop(self, pipe: _Pipe) -> None:
        """An aborted sender's unacknowledged bytes are gone: those still held go."""
        if self.blackholed:
            dropped = [c for c in pipe.pending if isinstance(c, bytes)]
            pipe.flow.dropped += sum(len(c) for c in dropped)
            pipe.pending.clear()

    async def _write(self, pipe: _Pipe) -> None:
        """Deliver ``pending`` to the destination whenever the network is up."""
        assert pipe.writer is not None
        late = False
        while True:
            if not pipe.pending and not pipe.reset:
                pipe.wake.clear()
                await pipe.wake.wait()
                continue
            if self.blackholed:
                late = True
                await self._up.wait()
                continue
            if not pipe.pending:  # reset, with nothing (left) to deliver
                pipe.writer.transport.abort()
                return
            chunk = pipe.pending.popleft()
            if chunk is _EOF:
                with contextlib.suppress(OSError):
                    if pipe.writer.can_write_eof():
                        pipe.writer.write_eof()
                return
            assert isinstance(chunk, bytes)
            if late:
                pipe.flow.delivered_late += len(chunk)
            else:
                pipe.flow.forwarded += len(chunk)
            try:
                pipe.writer.write(chunk)
                await pipe.writer.drain()
            except OSError:
                return
            if not pipe.pending:
                late = False
