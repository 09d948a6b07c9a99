"""A small HTTP/1.1 server on httptools and asyncio protocols.

Why not a framework: the tracker's throughput is decided by per-request cost. Measured on this
project's machine (bench/, one core, wrk keep-alive): aiohttp answered 26k pixels/s, the same
handler on httptools directly 62k/s, a raw socket writing the GIF 139k/s. The tracker needs
routing by exact path, small bodies and keep-alive, so the layer below is kept this small.

Handlers are synchronous: nothing in a request waits for a broker round trip, so a request is
answered in the turn of the event loop that parsed its last byte, in order, which also makes
pipelining correct.

Responses are handed to the sockets at the end of the event loop's turn, all together, rather
than each between two requests: the kernel's part of a send costs half as much in a burst.
Measured with the pixel benchmark's load (50 connections, one core, five runs each): 6 us a
send instead of 12, 29 us of CPU a pixel instead of 36 (medians), and a lower p99. A response
waits at most for the other requests that arrived in the same turn. A connection alone on the
server is answered at once: with no burst to join, the extra turn cost more than it saved.

A response that says an event was accepted carries a `refusal`: it waits for the end of the
turn (even alone), where `commit` first writes the turn's records to the write-ahead log; if
that fails, the refusal (a 503) is sent in its place. With `machine` durability the commit is
an fsync in a thread: the turn's responses are held, in order, until it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Final, cast

import httptools

log = logging.getLogger(__name__)

REASONS: Final = {
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    302: b"Found",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


HASH: Final = ord("#")

# Request methods by their bytes, so that most requests need not decode their own.
METHODS: Final = {
    method.encode(): method
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
}


@dataclass(frozen=True, slots=True)
class Limits:
    max_url_bytes: int = 8192
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_body_bytes: int = (1 << 20) + 4096
    idle_timeout: float = 30.0
    # A request must arrive whole within this time once it has begun (slow-loris guard).
    request_timeout: float = 10.0
    # Connections open at once. Beyond it a new connection is answered 503 and closed: a flood
    # of connections must not use up the process's file descriptors and memory.
    max_connections: int = 10_000


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: bytes
    # Lower-cased names to raw values; decoded only when a handler asks for one.
    headers: dict[bytes, bytes]
    body: bytes
    peer: str | None

    def header(self, name: str) -> str | None:
        """The header `name` (lower case), repeated ones joined with ", "."""
        value = self.headers.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A response that never changes (the pixel's GIF): rendered once a second, not per request.
    # Only for module-level constants, since the cache is keyed by the object's identity.
    constant: bool = False
    # What to answer instead if the turn's records cannot be written to the log; a response
    # with one is sent only after the turn's commit.
    refusal: Response | None = None


Handler = Callable[[Request], Response]
# True: the turn's records are kept; False: they are not (answer the refusals); a future of
# either while an fsync runs.
Commit = Callable[[], "bool | asyncio.Future[bool]"]
# A connection's responses taken at the end of a turn and held for its commit, with the
# positions of those that have a refusal.
Held = tuple["Connection", list[bytes], list[tuple[int, Response, bool]]]


class HttpError(Exception):
    """A request the parser refused before a handler saw it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
# Seconds between two warnings that connections are being refused.
REFUSAL_LOG_INTERVAL: Final = 60.0


def render(response: Response, date: bytes, keep_alive: bool) -> bytes:
    reason = REASONS.get(response.status, b"Unknown")
    parts = [b"HTTP/1.1 %d %s\r\nDate: %s\r\n" % (response.status, reason, date)]
    if response.content_type is not None:
        parts.append(b"Content-Type: %s\r\n" % response.content_type.encode())
    for name, value in response.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(b"Content-Length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(response.body)
    return b"".join(parts)


class Connection(asyncio.Protocol):
    """One client connection: parses requests, calls the handler, writes responses in order."""

    __slots__ = (
        "_body",
        "_clock",
        "_close_after_write",
        "_closing",
        "_header_bytes",
        "_headers",
        "_holds",
        "_limits",
        "_output",
        "_paused",
        "_refusals",
        "_server",
        "_started",
        "_transport",
        "_url",
        "last_active",
        "parser",
        "peer",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        # Read on every callback; one attribute away instead of two.
        self._clock = server.clock
        self._limits = server.limits
        self._transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: str | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        # Responses not yet handed to the transport; see `_send`.
        self._output: list[bytes] = []
        # Where in `_output` the responses waiting for this turn's commit are.
        self._refusals: list[tuple[int, Response, bool]] = []
        # Batches of this connection's responses held for a commit (an fsync) in progress.
        self._holds = 0
        self._close_after_write = False
        self._closing = False
        self._paused = False
        self._started: float | None = None
        self.last_active = server.clock.now

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        if len(self._server.connections) >= self._limits.max_connections:
            self._server.refuse(self, self._transport)
            return
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if not self._server.connections:
            self._server.all_closed.set()
        self._transport = None
        self._output = []
        self._refusals = []

    def data_received(self, data: bytes) -> None:
        self.last_active = self._clock.now
        try:
            self.parser.feed_data(data)
        except HttpError as error:
            self._fail(error.status, error.reason)
        except httptools.HttpParserCallbackError as error:
            # httptools wraps what a callback raised; a limit we enforce is the usual cause.
            cause = error.__context__
            if isinstance(cause, HttpError):
                self._fail(cause.status, cause.reason)
            else:
                self._fail(400, "malformed HTTP request")
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            self._fail(400, f"malformed HTTP request: {error}")

    def eof_received(self) -> bool | None:
        # The client half-closed after its last request: answer what came before the transport
        # closes (returning None lets it close), or once their commit is done.
        self.flush()
        if self._refusals or self._holds:
            self._closing = True
            self._close_after_write = True
            return True
        return None

    def pause_writing(self) -> None:
        # The client does not read its responses: stop reading its requests until it does.
        if self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and self._paused:
            self._paused = False
            self._transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._started = self._clock.now

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_url_bytes:
            raise HttpError(414, "the URL is longer than 8 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        headers = self._headers
        limits = self._limits
        if self._header_bytes > limits.max_header_bytes or len(headers) >= limits.max_headers:
            raise HttpError(431, "request headers are too large")
        key = name.lower()
        if key in headers:
            headers[key] += b", " + value
        else:
            headers[key] = value
            if key == b"expect" and value.lower() == b"100-continue" and self._transport:
                # curl and others wait for this before sending a body over 1 KiB. Said here
                # rather than once the headers are complete: a callback fewer for every
                # request, and the client has sent all its headers before it waits anyway.
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if sum(map(len, self._body)) > self._limits.max_body_bytes:
            raise HttpError(413, "the request body is larger than 1 MiB")

    def on_message_complete(self) -> None:
        self._started = None
        if self._transport is None or self._closing:
            return
        parser = self.parser
        url = self._url
        # `HASH not in url` rather than `b"#" not in url`: for a bytes operand CPython first
        # tries it as an int and formats the TypeError it then discards (0.14 against 0.02 us).
        if url[:1] == b"/" and HASH not in url:
            # The origin form ("/p.gif?..."), nearly every request: split here for half of what
            # parse_url costs (0.44 us against 0.80). llhttp has refused the targets parse_url
            # would; tests/unit/test_tracker_http.py compares the two.
            raw_path, _, query = url.partition(b"?")
            path = raw_path.decode("latin-1")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._fail(400, "the request target is not a valid URL")
                return
            path = parsed.path.decode("latin-1") if parsed.path else "/"
            query = parsed.query or b""
        method = parser.get_method()
        # Positional: with keywords, building the request cost 0.2 us more.
        request = Request(
            METHODS.get(method) or method.decode("ascii", "replace"),
            path,
            query,
            self._headers,
            b"".join(self._body) if self._body else b"",
            self.peer,
        )
        keep_alive = parser.should_keep_alive() and not self._server.draining
        try:
            response = self._server.handler(request)
        except Exception:
            log.exception("handler failed on %s %s", request.method, request.path)
            response = Response(500, b'{"error":"internal_error"}', "application/json")
        if request.method == "HEAD":
            # The headers of the GET, Content-Length included, and no body.
            rendered = render(response, self._server.clock.date, keep_alive)
            self._send(rendered[: len(rendered) - len(response.body)])
        elif response.refusal is not None:
            if response.constant:
                self._hold(
                    self._server.rendered(response, keep_alive), response.refusal, keep_alive
                )
            else:
                rendered = render(response, self._server.clock.date, keep_alive)
                self._hold(rendered, response.refusal, keep_alive)
        elif response.constant:
            self._send(self._server.rendered(response, keep_alive))
        else:
            self._send(render(response, self._server.clock.date, keep_alive))
        if not keep_alive:
            self._close()

    # helpers

    def _fail(self, status: int, reason: str) -> None:
        if self._transport is None or self._closing:
            return
        body = b'{"error":"bad_request","reason":%s}' % _json_string(reason)
        response = Response(status, body, "application/json")
        self._send(render(response, self._server.clock.date, keep_alive=False))
        self._server.on_protocol_error(status)
        self._close()

    def _send(self, data: bytes) -> None:
        """Queue `data` for the transport; the server hands it over at the end of this turn."""
        if not self._output:
            if (
                len(self._server.connections) == 1
                and self._transport is not None
                and not self._holds
            ):
                # Alone, there is no burst to wait for: a turn of its own would cost more.
                self._transport.write(data)
                return
            self._server.queue_output(self)
        self._output.append(data)

    def _hold(self, data: bytes, refusal: Response, keep_alive: bool) -> None:
        """Queue an acceptance, which leaves only after the turn's commit."""
        if not self._output:
            self._server.queue_output(self)
        self._refusals.append((len(self._output), refusal, keep_alive))
        self._output.append(data)

    def flush(self) -> None:
        """Hand the queued responses to the transport, in order, unless some wait for this
        turn's commit: the end of the turn hands those over."""
        if self._output and not self._refusals and not self._holds:
            output = self._output
            self._output = []
            self._write(output)

    def _write(self, output: list[bytes]) -> None:
        # A transport closing on its own (reset by the client) takes nothing more.
        if output and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(output))

    def committed(self) -> None:
        """The turn's commit is done: hand everything queued over."""
        if self._refusals:
            self._refusals = []
        output = self._output
        self._output = []
        self._write(output)
        if self._close_after_write:
            self._close()

    def take_output(self) -> Held:
        """This turn's responses, to be held until their commit is done."""
        held = (self, self._output, self._refusals)
        self._output = []
        self._refusals = []
        self._holds += 1
        return held

    def release(self, output: list[bytes]) -> None:
        """Responses held for a commit, now final."""
        self._holds -= 1
        self._write(output)
        if self._close_after_write and not self._holds:
            self._close()

    def _close(self) -> None:
        self.flush()
        self._closing = True
        if self._output or self._holds:
            # Acceptances waiting for their commit: closed once they are written.
            self._close_after_write = True
            return
        if self._transport is not None:
            self._transport.close()

    def expire(self, now: float) -> None:
        """Close the connection if it idled too long or dribbles a request (slow loris)."""
        limits = self._server.limits
        if self._started is not None and now - self._started > limits.request_timeout:
            self._fail(408, "the request did not arrive in time")
        elif self._started is None and now - self.last_active > limits.idle_timeout:
            self._close()

    def close_if_idle(self) -> None:
        if self._started is None:
            self._close()


def _json_string(text: str) -> bytes:
    import orjson

    return orjson.dumps(text)


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
        self._refusals_logged = -REFUSAL_LOG_INTERVAL
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

    def refuse(self, connection: Connection, transport: asyncio.Transport) -> None:
        """Answer a connection over `limits.max_connections` 503 and close it."""
        connection._closing = True
        transport.write(render(TOO_MANY_CONNECTIONS, self.clock.date, keep_alive=False))
        transport.close()
        self.refused_connections += 1
        self.on_protocol_error(503)
        if self.clock.now - self._refusals_logged > REFUSAL_LOG_INTERVAL:
            self._refusals_logged = self.clock.now
            log.warning(
                "%d connections open, the most allowed (ADPULSE_TRACKER_MAX_CONNECTIONS): "
                "new ones are answered 503 (%d so far)",
                len(self.connections),
                self.refused_connections,
            )

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
                    for index, refusal, keep_alive in refusals:
                        output[index] = render(refusal, self.clock.date, keep_alive)
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
            now = self.clock.now
            for connection in list(self.connections):
                connection.expire(now)

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
