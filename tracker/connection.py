"""One client connection of the tracker's HTTP server (`tracker.http`): parses requests with
httptools, calls the handler, and queues the responses, in order, for the server to send at the
end of the event loop's turn."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

from tracker.messages import HttpError, Request, Response, render

if TYPE_CHECKING:
    from tracker.http import HttpServer

# The server's logger, as before connections left tracker/http.py: what operators grep for.
log = logging.getLogger("tracker.http")

HASH: Final = ord("#")

# Request methods by their bytes, so that most requests need not decode their own.
METHODS: Final = {
    method.encode(): method
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
}
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# A connection's responses taken at the end of a turn and held for its commit, with the
# positions of those that have a refusal (the refusal, keep-alive, and whether it answers a HEAD,
# which takes the headers only).
Refusal = tuple[int, Response, bool, bool]
Held = tuple["Connection", list[bytes], list[Refusal]]


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
