"""A small HTTP/1.1 server on httptools and asyncio protocols.

Why not a framework: the tracker's throughput is decided by per-request cost, and a framework's
layers cost more than the tracker's own work (bench/README.md has the figures). The tracker needs
routing by exact path, small bodies and keep-alive, so the layer below is kept this small.

In three modules: `tracker.messages` (`Request`, `Response`, `render`), `tracker.connection`
(one connection: parsing, the handler, its responses in order) and this one, the server
(admission and limits, the end of the turn, the commit).

Handlers are synchronous: nothing in a request waits for a broker round trip, so a request is
answered in the turn of the event loop that parsed its last byte, in order, which also makes
pipelining correct.

Responses are handed to the sockets at the end of the event loop's turn, all together, rather
than each between two requests: the kernel's part of a send costs less in a burst, and so does
a pixel's CPU and its p99 (bench/README.md). A response waits at most for the other requests
that arrived in the same turn. A connection alone on the server is answered at once: with no
burst to join, the extra turn costs more than it saves.

A response that says an event was accepted carries a `refusal`: it waits for the end of the
turn (even alone), where `commit` first writes the turn's records to the write-ahead log; if
that fails, the refusal (a 503) is sent in its place. With `machine` durability the commit is
an fsync in a thread: the turn's responses are held, in order, until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final

from tracker.connection import Connection, Held
from tracker.enrich import IPNetwork
from tracker.messages import REASONS, Handler, HttpError, Request, Response, render

# Names imported from here before the messages and connections had modules of their own.
__all__ = [
    "REASONS",
    "Connection",
    "HttpError",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "address_key",
    "render",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = (1 << 20) + 4096
    idle_timeout: float = 30.0
    # A request must arrive whole within this time once it has begun (slow-loris guard).
    request_timeout: float = 10.0
    # Connections open at once. At the cap a new connection takes the place of the longest-idle
    # one, or is answered 503 and closed when none is idle: a flood of connections must not use
    # up the process's file descriptors and memory.
    max_connections: int = 10_000
    # Connections one client address (an IPv6 /64) may hold, so that one client cannot take
    # them all; addresses in `shared_networks` (proxies carrying many clients) are not held to it.
    max_connections_per_address: int = 1000
    shared_networks: tuple[IPNetwork, ...] = ()
    # The idle timeout while the connections open are past PRESSURE of `max_connections`.
    pressure_idle_timeout: float = 5.0


# True: the turn's records are kept; False: they are not (answer the refusals); a future of
# either while an fsync runs.
Commit = Callable[[], "bool | asyncio.Future[bool]"]


class Clock:
    """The Date header, rendered once a second rather than once a request."""

    def __init__(self) -> None:
        self.date = b""
        self.now = 0.0
        self.tick()

    def tick(self) -> None:
        self.now = time.monotonic()
        self.date = formatdate(usegmt=True).encode()


TOO_MANY_CONNECTIONS: Final = Response(
    503,
    b'{"error":"overloaded","reason":"too many open connections; retry later"}',
    "application/json",
    [("Retry-After", "1")],
)
TOO_MANY_FROM_ADDRESS: Final = Response(
    429,
    b'{"error":"too_many_connections",'
    b'"reason":"too many open connections from this address; close some or retry later"}',
    "application/json",
    [("Retry-After", "1")],
)
# Seconds between two warnings that connections are being refused or evicted.
REFUSAL_LOG_INTERVAL: Final = 60.0
# Share of `Limits.max_connections` from which idle connections time out sooner.
PRESSURE: Final = 0.9


def address_key(peer: str) -> str:
    """What a connection counts against: its address, or the /64 of an IPv6 one, since a
    single IPv6 host usually holds a whole /64. An IPv4-mapped address counts as the IPv4 one."""
    if ":" not in peer:
        return peer
    try:
        address = ipaddress.IPv6Address(peer)
    except ValueError:
        return peer
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))


def in_networks(peer: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


class HttpServer:
    """Serves `handler` on (host, port); `serve()` runs until `shutdown()`."""

    def __init__(
        self,
        handler: Handler,
        *,
        limits: Limits | None = None,
        on_protocol_error: Callable[[int], None] = lambda status: None,
        commit: Commit | None = None,
        on_refused: Callable[[Response], None] = lambda refusal: None,
    ) -> None:
        self.handler = handler
        self.commit = commit
        self.on_refused = on_refused
        self.limits = limits or Limits()
        self.on_protocol_error = on_protocol_error
        self.clock = Clock()
        self.connections: set[Connection] = set()
        self.refused_connections = 0
        self.evicted_connections = 0
        # Connections open by address (see `address_key`); an address leaves with its last one.
        self._per_address: dict[str, int] = {}
        # Idle connections, the longest-idle last, listed at the cap at most once a clock tick.
        self._idle: list[Connection] = []
        self._idle_listed_at: float | None = None
        self._warned_at: dict[str, float] = {}
        self.draining = False
        self.all_closed = asyncio.Event()
        self._rendered: dict[tuple[int, bool], tuple[bytes, bytes]] = {}
        # Connections with responses queued in this turn of the event loop.
        self._unsent: list[Connection] = []
        self._turn_ending = False
        # Turns whose responses wait for their commit, oldest first.
        self._held: deque[tuple[bool | asyncio.Future[bool], list[Held]]] = deque()
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, backlog: int = 2048) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        self._ticker = asyncio.create_task(self._tick(), name="http-clock")

    def admit(self, connection: Connection, transport: asyncio.Transport) -> None:
        """Count a new connection in; or answer it 429 when its address holds its share, or
        503 when the server is full and no connection is idle, and close it."""
        limits = self.limits
        peer = connection.peer
        key = None
        held = 0
        if peer is not None and not (
            limits.shared_networks and in_networks(peer, limits.shared_networks)
        ):
            key = address_key(peer)
            held = self._per_address.get(key, 0)
            if held >= limits.max_connections_per_address:
                self._refuse(connection, transport, TOO_MANY_FROM_ADDRESS)
                self._warn(
                    "address",
                    "%s holds %d connections, the most one address may "
                    "(ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS): new ones from it are "
                    "answered 429 (%d connections refused so far)",
                    key,
                    held,
                    self.refused_connections,
                )
                return
        if len(self.connections) >= limits.max_connections and not self._evict_idle():
            self._refuse(connection, transport, TOO_MANY_CONNECTIONS)
            self._warn(
                "full",
                "%d connections open, the most allowed (ADPULSE_TRACKER_MAX_CONNECTIONS), and "
                "none idle: new ones are answered 503 (%d connections refused so far)",
                len(self.connections),
                self.refused_connections,
            )
            return
        if key is not None:
            self._per_address[key] = held + 1
            connection.address = key
        self.connections.add(connection)

    def release(self, connection: Connection) -> None:
        """Count a connection out; once is enough, more is harmless."""
        self.connections.discard(connection)
        key = connection.address
        if key is not None:
            connection.address = None
            held = self._per_address[key] - 1
            if held:
                self._per_address[key] = held
            else:
                del self._per_address[key]
        if not self.connections:
            self.all_closed.set()

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection to make room for a new one; False if none is."""
        now = self.clock.now
        if not self._idle and self._idle_listed_at != now:
            self._idle_listed_at = now
            self._idle = sorted(
                (connection for connection in self.connections if connection.idle(now)),
                key=lambda connection: connection.last_active,
                reverse=True,
            )
        while self._idle:
            connection = self._idle.pop()
            if connection.idle(now):
                self.release(connection)
                connection._close()
                self.evicted_connections += 1
                self._warn(
                    "evict",
                    "%d connections open, the most allowed (ADPULSE_TRACKER_MAX_CONNECTIONS): "
                    "the longest-idle are closed to make room for new ones (%d so far)",
                    len(self.connections),
                    self.evicted_connections,
                )
                return True
        return False

    def _refuse(
        self, connection: Connection, transport: asyncio.Transport, answer: Response
    ) -> None:
        connection._closing = True
        transport.write(render(answer, self.clock.date, keep_alive=False))
        transport.close()
        self.refused_connections += 1
        self.on_protocol_error(answer.status)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """Log `message` unless one of its kind was logged within REFUSAL_LOG_INTERVAL."""
        now = self.clock.now
        if now - self._warned_at.get(kind, -REFUSAL_LOG_INTERVAL) > REFUSAL_LOG_INTERVAL:
            self._warned_at[kind] = now
            log.warning(message, *args)

    def queue_output(self, connection: Connection) -> None:
        """Flush `connection` once the requests that arrived in this turn are all answered."""
        if not self._turn_ending:
            self.end_turn()
        self._unsent.append(connection)

    def end_turn(self) -> None:
        """Commit and answer at the end of this turn (once, however often it is asked)."""
        if not self._turn_ending:
            self._turn_ending = True
            # Ready callbacks run after the I/O callbacks of the turn that scheduled them.
            asyncio.get_running_loop().call_soon(self._send_unsent)

    def _send_unsent(self) -> None:
        self._turn_ending = False
        connections = self._unsent
        self._unsent = []
        outcome = True if self.commit is None else self.commit()
        if outcome is True and not self._held:
            for connection in connections:
                connection.committed()
            return
        self._held.append((outcome, [connection.take_output() for connection in connections]))
        if isinstance(outcome, asyncio.Future):
            outcome.add_done_callback(self._release)
        self._release()

    def _release(self, _: object = None) -> None:
        """Answer the held turns whose commit is done, in order."""
        held = self._held
        while held:
            outcome, batch = held[0]
            if isinstance(outcome, asyncio.Future):
                if not outcome.done():
                    return
                kept = not outcome.cancelled() and outcome.exception() is None and outcome.result()
            else:
                kept = outcome
            held.popleft()
            for connection, output, refusals in batch:
                if not kept:
                    for index, refusal, keep_alive, head in refusals:
                        rendered = render(refusal, self.clock.date, keep_alive)
                        output[index] = (
                            rendered[: len(rendered) - len(refusal.body)] if head else rendered
                        )
                        self.on_refused(refusal)
                connection.release(output)

    def tasks(self) -> list[asyncio.Task[None]]:
        """The server's background tasks, for the caller to supervise."""
        return [] if self._ticker is None else [self._ticker]

    def rendered(self, response: Response, keep_alive: bool) -> bytes:
        key = (id(response), keep_alive)
        cached = self._rendered.get(key)
        date = self.clock.date
        if cached is None or cached[0] is not date:
            cached = (date, render(response, date, keep_alive))
            self._rendered[key] = cached
        return cached[1]

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1])

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.clock.tick()
            self.sweep()

    def sweep(self) -> None:
        """Close connections idle too long or too slow with a request; once a second."""
        now = self.clock.now
        self._idle = []
        limits = self.limits
        idle_timeout = limits.idle_timeout
        if len(self.connections) >= PRESSURE * limits.max_connections:
            # Near the cap, idle keep-alive connections give way sooner to new ones.
            idle_timeout = min(idle_timeout, limits.pressure_idle_timeout)
        for connection in list(self.connections):
            connection.expire(now, idle_timeout)

    async def stop_accepting(self) -> None:
        """Close the listening socket and idle keep-alive connections; answer what is in flight."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()

    async def close(self, timeout: float = 5.0) -> None:
        await self.stop_accepting()
        if self.connections:
            self.all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), timeout)
        for connection in list(self.connections):
            connection._close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.wait_closed()
