"""A small HTTP/1.1 server on httptools and asyncio protocols.

Why not a framework: the tracker's throughput is decided by per-request cost, and a framework's
layers cost more than the tracker's own work (bench/README.md has the figures). The tracker needs
routing by exact path, small bodies and keep-alive, so the layer below is kept this small.

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
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, cast

import httptools

from tracker.enrich import IPNetwork

log = logging.getLogger(__name__)

# Every standard status's reason phrase, looked up once here rather than per response.
REASONS: Final = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


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
    # The answer is not known yet (it waits for Redis): once this future is done, its result
    # is called, in the turn that sends the response it returns (so the events it submits are
    # in that turn's commit). The connection reads no further request until it is sent, so
    # answers stay in order.
    later: asyncio.Future[Callable[[], Response]] | None = None


Handler = Callable[[Request], Response]
# True: the turn's records are kept; False: they are not (answer the refusals); a future of
# either while an fsync runs.
Commit = Callable[[], "bool | asyncio.Future[bool]"]
# A connection's responses taken at the end of a turn and held for its commit, with the
# positions of those that have a refusal (the refusal, keep-alive, and whether it answers a HEAD,
# which takes the headers only).
Refusal = tuple[int, Response, bool, bool]
Held = tuple["Connection", list[bytes], list[Refusal]]


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
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


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


def render(response: Response, date: bytes, keep_alive: bool) -> bytes:
    # A status outside the standard's list goes out without a reason, which RFC 9112 allows.
    reason = REASONS.get(response.status, b"")
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
        "_parked",
        "_paused",
        "_refusals",
        "_server",
        "_started",
        "_transport",
        "_upgrade",
        "_url",
        "address",
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
        self._refusals: list[Refusal] = []
        # Batches of this connection's responses held for a commit (an fsync) in progress.
        self._holds = 0
        self._close_after_write = False
        self._closing = False
        self._paused = False
        self._started: float | None = None
        # The request in hand asked to upgrade the protocol; see `_ignore_upgrade`.
        self._upgrade = False
        # While a response waits for its answer (`Response.later`): the requests parsed after
        # it, answered in order once it is sent; None when nothing waits.
        self._parked: deque[tuple[Request, bool]] | None = None
        self.last_active = server.clock.now
        # What the connection counts against in the server's tally per address, if anything.
        self.address: str | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self._server.admit(self, self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.release(self)
        self._transport = None
        self._output = []
        self._refusals = []

    def data_received(self, data: bytes) -> None:
        self.last_active = self._clock.now
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._ignore_upgrade(data, upgrade.args[0])
        except (HttpError, httptools.HttpParserError) as error:
            self._refuse(error)

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
            if self._parked is None:
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
            if key == b"host":
                raise HttpError(400, "a request has one Host header (RFC 9112)")
            headers[key] += b", " + value
        else:
            headers[key] = value

    def on_headers_complete(self) -> None:
        headers = self._headers
        if b"host" not in headers:
            self._check_version()
        if b"expect" in headers:
            self._expect(headers[b"expect"])
        if self.parser.should_upgrade():
            if self.parser.get_method() == b"CONNECT":
                raise HttpError(400, "CONNECT is for proxies, and this server is not one")
            self._upgrade = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        if sum(map(len, self._body)) > self._limits.max_body_bytes:
            raise HttpError(413, "the request body is larger than 1 MiB")

    def on_message_complete(self) -> None:
        self._started = None
        if self._transport is None or self._closing or self._upgrade:
            return
        parser = self.parser
        url = self._url
        # `HASH not in url` (an int) rather than `b"#" not in url`: for a bytes operand CPython
        # first tries it as an int and formats the TypeError it then discards.
        if url[:1] == b"/" and HASH not in url:
            # The origin form ("/p.gif?..."), nearly every request: split here, cheaper than
            # parse_url. llhttp has refused the targets parse_url would;
            # tests/unit/test_tracker_http.py compares the two.
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
        # Positional: building the request with keywords costs more.
        request = Request(
            METHODS.get(method) or method.decode("ascii", "replace"),
            path,
            query,
            self._headers,
            b"".join(self._body) if self._body else b"",
            self.peer,
        )
        keep_alive = parser.should_keep_alive() and not self._server.draining
        if self._parked is not None:
            # Pipelined behind a response that waits for its answer.
            self._parked.append((request, keep_alive))
            return
        self._respond(request, keep_alive)

    def _respond(self, request: Request, keep_alive: bool) -> None:
        try:
            response = self._server.handler(request)
        except Exception:
            # Known limit: a handler that fails after it submitted a record answers 500 while
            # the record stays in the turn and is committed (and sent), so a client's retry is
            # a second event: handlers do only counting and logging after they submit.
            log.exception("handler failed on %s %s", request.method, request.path)
            response = Response(500, b'{"error":"internal_error"}', "application/json")
        if response.later is not None:
            self._wait_for(response.later, request, keep_alive)
            return
        self._answer(request, response, keep_alive)

    def _answer(self, request: Request, response: Response, keep_alive: bool) -> None:
        if request.method == "HEAD":
            # The headers of the GET, Content-Length included, and no body; an acceptance still
            # waits for the commit like the GET's would.
            rendered = render(response, self._server.clock.date, keep_alive)
            rendered = rendered[: len(rendered) - len(response.body)]
            if response.refusal is None:
                self._send(rendered)
            else:
                self._hold(rendered, response.refusal, keep_alive, head=True)
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

    def _wait_for(
        self, later: asyncio.Future[Callable[[], Response]], request: Request, keep_alive: bool
    ) -> None:
        """Answer `request` with `later`'s response once it is done; until then read no more
        requests, and park those already parsed."""
        self._parked = deque()
        if self._transport is not None and not self._paused:
            self._transport.pause_reading()
        later.add_done_callback(lambda done: self._answered(done, request, keep_alive))

    def _answered(
        self, later: asyncio.Future[Callable[[], Response]], request: Request, keep_alive: bool
    ) -> None:
        parked = self._parked or deque()
        self._parked = None
        if self._transport is None or self._closing:
            return
        response = None
        if not later.cancelled():
            try:
                response = later.result()()
            except Exception:
                log.exception("handler failed on %s %s", request.method, request.path)
        if response is None:
            response = Response(500, b'{"error":"internal_error"}', "application/json")
        self._answer(request, response, keep_alive and not self._server.draining)
        while parked and self._parked is None and not self._closing:
            self._respond(*parked.popleft())
        if self._parked is not None:
            # Another response waits: the rest stay parked behind it.
            self._parked.extend(parked)
        elif self._transport is not None and not self._paused and not self._closing:
            self._transport.resume_reading()

    def _check_version(self) -> None:
        """Refuse a request without Host unless it is HTTP/1.0, the one version where Host is
        optional (RFC 9112, 3.2); a request line without a version reads as HTTP/0.9."""
        version = self.parser.get_http_version()
        if version == "1.1":
            raise HttpError(400, "an HTTP/1.1 request needs a Host header (RFC 9112)")
        if version == "0.9":
            raise HttpError(400, "the request line has no HTTP version; use HTTP/1.1")
        if version != "1.0":
            raise HttpError(505, f"HTTP/{version} is not supported; use HTTP/1.1")

    def _expect(self, expectation: bytes) -> None:
        if expectation.lower() != b"100-continue" or self._transport is None:
            return
        length = self._headers.get(b"content-length")
        if length is not None and int(length) > self._limits.max_body_bytes:
            # Refused before the client sends a body that would be refused anyway.
            raise HttpError(413, "the request body is larger than 1 MiB")
        # curl and others wait for this before sending a body over 1 KiB.
        self._send(CONTINUE)

    def _ignore_upgrade(self, data: bytes, offset: int) -> None:
        """Serve a request that asked to upgrade as a plain one, as RFC 9110 (7.8) allows.

        llhttp hands everything after such a request's headers, its body included, to the new
        protocol (from `offset` in `data`), and the request was held back when it completed.
        So a new parser reads the request again without its Upgrade header, then the rest.
        """
        if not self._upgrade:
            self._fail(400, "protocol upgrades are not supported")
            return
        while self._upgrade:
            self._upgrade = False
            parser = self.parser
            version = parser.get_http_version().encode()
            lines = [b"%s %s HTTP/%s" % (parser.get_method(), self._url, version)]
            lines += [b"%s: %s" % item for item in self._headers.items() if item[0] != b"upgrade"]
            data = b"\r\n".join(lines) + b"\r\n\r\n" + data[offset:]
            self.parser = httptools.HttpRequestParser(self)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                offset = upgrade.args[0]
            except (HttpError, httptools.HttpParserError) as error:
                self._refuse(error)
                return

    def _refuse(self, error: HttpError | httptools.HttpParserError) -> None:
        if isinstance(error, HttpError):
            self._fail(error.status, error.reason)
        elif isinstance(error, httptools.HttpParserCallbackError):
            # httptools wraps what a callback raised; a limit we enforce is the usual cause.
            cause = error.__context__
            if isinstance(cause, HttpError):
                self._fail(cause.status, cause.reason)
            else:
                self._fail(400, "malformed HTTP request")
        else:
            self._fail(400, f"malformed HTTP request: {error}")

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

    def _hold(
        self, data: bytes, refusal: Response, keep_alive: bool, *, head: bool = False
    ) -> None:
        """Queue an acceptance, which leaves only after the turn's commit."""
        if not self._output:
            self._server.queue_output(self)
        self._refusals.append((len(self._output), refusal, keep_alive, head))
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

    def expire(self, now: float, idle_timeout: float) -> None:
        """Close the connection if it idled too long or dribbles a request (slow loris)."""
        if self._started is not None and now - self._started > self._limits.request_timeout:
            self._fail(408, "the request did not arrive in time")
        elif self._started is None and now - self.last_active > idle_timeout:
            self._close()

    def idle(self, now: float) -> bool:
        """Open, with nothing in hand or unsent, and quiet since before the clock's last tick."""
        return (
            self._started is None
            and self._parked is None
            and self.last_active < now
            and not self._output
            and not self._closing
            and self._transport is not None
        )

    def close_if_idle(self) -> None:
        if self._started is None and self._parked is None:
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
