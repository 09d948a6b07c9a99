"""The tracker's HTTP layer without sockets: request targets, query strings, protocol rules,
status lines and the connection limits."""

from __future__ import annotations

import ast
import asyncio
import ipaddress
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote_plus

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracker.http
from tracker.answers import Invalid
from tracker.endpoints import parse_query
from tracker.http import Connection, HttpServer, Limits, Request, Response, address_key, render
from tracker.records import MAX_QUERY_PARAMETERS


class Transport:
    def __init__(self, peer: str = "127.0.0.1") -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.peer = peer
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written.append(data)

    def get_extra_info(self, name: str) -> object:
        return (self.peer, 40000)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def exchange(*chunks: bytes, neighbours: int = 1) -> tuple[list[Request], Transport]:
    """Feed `chunks` to a connection, each in its own turn of the event loop, with `neighbours`
    idle connections open beside it; the requests its handler saw and the transport it
    answered on. Checks that nothing is sent before the end of a turn when not alone."""
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(204 if request.method != "POST" else 202)

    async def feed() -> Transport:
        server = HttpServer(handler)
        for _ in range(neighbours):
            Connection(server).connection_made(Transport())  # type: ignore[arg-type]
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            written = len(transport.written)
            connection.data_received(chunk)
            if neighbours and not transport.closed:
                assert len(transport.written) == written
            await asyncio.sleep(0)
        return transport

    transport = asyncio.run(feed())
    return seen, transport


def serve(raw: bytes) -> tuple[list[Request], bytes]:
    """Feed `raw` to a connection; the requests its handler saw and what it answered."""
    seen, transport = exchange(raw)
    return seen, b"".join(transport.written)


def parse_url_parts(target: bytes) -> tuple[str, bytes]:
    parsed = httptools.parse_url(target)
    return (parsed.path.decode("latin-1") if parsed.path else "/", parsed.query or b"")


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/p.gif?type=click&cb=1", "/p.gif", b"type=click&cb=1"),
        (b"/p.gif", "/p.gif", b""),
        (b"/p.gif?", "/p.gif", b""),
        (b"/p.gif?a=1?b=2", "/p.gif", b"a=1?b=2"),
        (b"/p.gif?a=1#top", "/p.gif", b"a=1"),
        (b"//p.gif?a", "//p.gif", b"a"),
        (b"/%70.gif?a=%20", "/%70.gif", b"a=%20"),
        (b"http://example.com/p.gif?a=1", "/p.gif", b"a=1"),
        (b"*", "*", b""),
    ],
)
def test_request_targets(target: bytes, path: str, query: bytes) -> None:
    seen, _ = serve(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [(request.path, request.query) for request in seen] == [(path, query)]
    assert parse_url_parts(target) == (path, query)


URL_BYTES = st.sampled_from([bytes([byte]) for byte in range(33, 127)] + [b"/", b"?", b"#"] * 5)


@settings(max_examples=500)
@given(st.lists(URL_BYTES, max_size=40))
def test_origin_form_targets_split_as_parse_url_does(parts: list[bytes]) -> None:
    # The usual target is split without parse_url; whatever llhttp lets through must come out
    # as parse_url would have it, or be refused the same way.
    target = b"/" + b"".join(parts)
    seen, answer = serve(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        expected = parse_url_parts(target)
    except httptools.HttpParserInvalidURLError:
        assert not seen
        assert answer.startswith(b"HTTP/1.1 400 ")
        return
    if seen:
        assert (seen[0].path, seen[0].query) == expected
    else:
        assert answer.startswith(b"HTTP/1.1 400 ")


def test_pipelined_responses_leave_together_in_order() -> None:
    seen, transport = exchange(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [request.path for request in seen] == ["/a", "/b", "/c"]
    assert len(transport.written) == 1
    statuses = [line for line in transport.written[0].split(b"\r\n") if line.startswith(b"HTTP/")]
    assert statuses == [
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 202 Accepted",
        b"HTTP/1.1 204 No Content",
    ]


def test_a_lone_connection_is_answered_at_once() -> None:
    _, transport = exchange(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", neighbours=0
    )
    assert [answer[:12] for answer in transport.written] == [b"HTTP/1.1 204"] * 2


def test_each_turn_of_the_loop_answers_what_arrived_in_it() -> None:
    _, transport = exchange(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert len(transport.written) == 2


def test_a_closing_connection_answers_before_it_closes() -> None:
    _, transport = exchange(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert transport.closed
    answer = b"".join(transport.written)
    assert answer.count(b"HTTP/1.1 204 No Content") == 2
    assert b"Connection: close" in answer


def test_a_refused_request_is_answered_after_those_before_it() -> None:
    _, transport = exchange(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nExpect: x\r\n\x00\r\n"
    )
    assert transport.closed
    answer = b"".join(transport.written)
    assert answer.index(b"HTTP/1.1 204 ") < answer.index(b"HTTP/1.1 400 ")


def test_expect_100_continue_comes_before_the_response() -> None:
    _, transport = exchange(
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n", b"{}"
    )
    assert transport.written[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert transport.written[1].startswith(b"HTTP/1.1 202 ")


def test_methods_are_strings() -> None:
    seen, _ = serve(
        b"HEAD /p.gif HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/events HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [request.method for request in seen] == ["HEAD", "POST"]


def reference_query(query: bytes) -> dict[str, str]:
    """`parse_query` as first written: every name and value unquoted if it needs it, first wins."""
    fields: dict[str, str] = {}
    for pair in query.decode("utf-8").split("&"):
        key, _, value = pair.partition("=")
        if not value:
            continue
        if "%" in key or "+" in key:
            key = unquote_plus(key, errors="strict")
        if "%" in value or "+" in value:
            value = unquote_plus(value, errors="strict")
        if key not in fields:
            fields[key] = value
    return fields


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        (b"", {}),
        (b"type=click&channel=email", {"type": "click", "channel": "email"}),
        (b"a=1&a=2&b=3", {"a": "1", "b": "3"}),
        (b"a=&a=2", {"a": "2"}),
        (b"a&b=&c==&=d", {"c": "=", "": "d"}),
        (b"campaign=Black+Friday%202026", {"campaign": "Black Friday 2026"}),
        (b"utm%5Fsource=x&utm_source=y", {"utm_source": "x"}),
        (b"b=2&a=1&b=3", {"b": "2", "a": "1"}),
    ],
)
def test_query_fields(query: bytes, fields: dict[str, str]) -> None:
    assert parse_query(query) == fields
    assert list(parse_query(query)) == list(fields)


QUERY_TEXT = st.text(alphabet="ab=&%+2F0é", max_size=30)


@given(QUERY_TEXT)
def test_query_matches_the_reference(text: str) -> None:
    query = text.encode()
    try:
        expected = reference_query(query)
    except UnicodeDecodeError:
        with pytest.raises(Invalid, match="query"):
            parse_query(query)
        return
    got = parse_query(query)
    assert got == expected
    assert list(got) == list(expected)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"a=\xff", "the query string is not valid UTF-8"),
        (b"a=%ff", "a query parameter is not valid UTF-8 once decoded"),
        (b"&".join(b"k%d=v" % i for i in range(MAX_QUERY_PARAMETERS + 1)), "more than 64"),
    ],
)
def test_query_refusals(query: bytes, reason: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_query(query)
    assert refused.value.field == "query"
    assert reason in refused.value.reason


def test_an_answer_never_overtakes_one_still_queued() -> None:
    async def feed() -> Transport:
        server = HttpServer(lambda request: Response(204 if request.path == "/a" else 202))
        neighbour = Connection(server)
        neighbour.connection_made(Transport())  # type: ignore[arg-type]
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # queued: not alone
        neighbour.connection_lost(None)
        connection.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # alone now, but behind /a
        await asyncio.sleep(0)
        return transport

    transport = asyncio.run(feed())
    answer = b"".join(transport.written)
    assert answer.index(b"HTTP/1.1 204 ") < answer.index(b"HTTP/1.1 202 ")


def test_a_client_that_half_closes_still_gets_its_answer() -> None:
    async def feed() -> Transport:
        server = HttpServer(lambda request: Response(204))
        Connection(server).connection_made(Transport())  # type: ignore[arg-type]
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        # Both in one read, as when a client sends its request and shuts down its side.
        connection.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        if not connection.eof_received():
            transport.close()
        await asyncio.sleep(0)
        return transport

    transport = asyncio.run(feed())
    assert transport.closed
    assert b"".join(transport.written).startswith(b"HTTP/1.1 204 ")


def test_connections_over_the_limit_are_answered_503_and_closed() -> None:
    refusals: list[int] = []

    async def connect() -> tuple[HttpServer, list[Transport]]:
        server = HttpServer(
            lambda request: Response(204),
            limits=Limits(max_connections=2),
            on_protocol_error=refusals.append,
        )
        transports = []
        for _ in range(3):
            transport = Transport()
            Connection(server).connection_made(transport)  # type: ignore[arg-type]
            transports.append(transport)
        return server, transports

    server, (first, second, third) = asyncio.run(connect())
    assert not first.closed
    assert not second.closed
    assert third.closed
    answer = b"".join(third.written)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"Retry-After: 1\r\n" in answer
    assert b"Connection: close\r\n" in answer
    assert b"too many open connections" in answer
    assert len(server.connections) == 2
    assert refusals == [503]
    assert server.refused_connections == 1


def test_a_connection_is_taken_again_once_another_has_closed() -> None:
    async def connect() -> Transport:
        server = HttpServer(lambda request: Response(204), limits=Limits(max_connections=1))
        first = Connection(server)
        first.connection_made(Transport())  # type: ignore[arg-type]
        first.connection_lost(None)
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        return transport

    transport = asyncio.run(connect())
    assert not transport.closed
    assert b"".join(transport.written).startswith(b"HTTP/1.1 204 ")


# --- status lines --------------------------------------------------------------------------


def statuses_sent() -> set[int]:
    """Every status written as a literal in the tracker's code: the first argument of
    Response, HttpError, `_fail` and `json_answer`, and every `status=` keyword."""
    found = {100}  # the interim answer to Expect, written out whole
    for source in Path(tracker.http.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            arguments = [keyword.value for keyword in node.keywords if keyword.arg == "status"]
            if name in ("Response", "HttpError", "_fail", "json_answer") and node.args:
                arguments.append(node.args[0])
            for argument in arguments:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, int):
                    found.add(argument.value)
    return found


def test_the_status_scan_finds_what_the_tracker_sends() -> None:
    # The preflight's 403, the 405 of a wrong method, the limits' 429 and 503, the HTTP layer's.
    assert {200, 202, 204, 302, 400, 401, 403, 404, 405, 408, 413, 429, 503, 505} <= (
        statuses_sent()
    )


@pytest.mark.parametrize("status", sorted(statuses_sent()))
def test_every_status_the_tracker_sends_has_its_standard_reason(status: int) -> None:
    first_line = render(Response(status), b"date", keep_alive=True).split(b"\r\n")[0]
    assert first_line == f"HTTP/1.1 {status} {HTTPStatus(status).phrase}".encode()


# --- protocol rules (issue 10, defect 7) ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"GET /a HTTP/1.1\r\n\r\n", 400, b"needs a Host header"),
        (b"GET /a HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400, b"needs a Host header"),
        (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, b"one Host header"),
        (b"GET /a\r\n\r\n", 400, b"no HTTP version"),
        (b"GET /a HTTP/2.0\r\n\r\n", 505, b"HTTP/2.0 is not supported"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, b"CONNECT"),
    ],
)
def test_requests_http_1_1_refuses(raw: bytes, status: int, reason: bytes) -> None:
    seen, answer = serve(raw)
    assert not seen
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert answer.count(b"\r\nDate: ") == 1, "one answer"
    assert reason in answer


def test_http_1_0_may_leave_out_host() -> None:
    seen, answer = serve(b"GET /a HTTP/1.0\r\n\r\n")
    assert [request.path for request in seen] == ["/a"]
    assert answer.startswith(b"HTTP/1.1 204 ")


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
    ],
)
def test_an_upgrade_request_is_served_once_as_a_plain_one(upgrade: bytes) -> None:
    body = b'{"type": "click"}'
    seen, transport = exchange(
        b"POST /b HTTP/1.1\r\nHost: x\r\n" + upgrade + b"Content-Length: %d\r\n\r\n" % len(body),
        body[:5],
        body[5:]
        + b"GET /c HTTP/1.1\r\nHost: x\r\n"
        + upgrade
        + b"\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert [(request.method, request.path, request.body) for request in seen] == [
        ("POST", "/b", body),
        ("GET", "/c", b""),
        ("GET", "/d", b""),
    ]
    assert all(b"upgrade" not in request.headers for request in seen)
    assert seen[0].headers[b"content-length"] == b"%d" % len(body)
    answer = b"".join(transport.written)
    statuses = [line for line in answer.split(b"\r\n") if line.startswith(b"HTTP/")]
    assert statuses == [
        b"HTTP/1.1 202 Accepted",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 204 No Content",
    ]
    assert not transport.closed


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 2000000\r\nExpect: 100-continue\r\n",
        b"Expect: 100-continue\r\nContent-Length: 2000000\r\n",
    ],
)
def test_expect_100_continue_over_the_body_limit_is_refused_413_without_a_continue(
    headers: bytes,
) -> None:
    seen, answer = serve(b"POST /b HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert not seen
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


def test_expect_100_continue_comes_whatever_the_header_order() -> None:
    _, transport = exchange(
        b"POST /b HTTP/1.1\r\nExpect: 100-continue\r\nHost: x\r\nContent-Length: 2\r\n\r\n", b"{}"
    )
    assert transport.written[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert transport.written[1].startswith(b"HTTP/1.1 202 ")


# --- connection limits (issue 10, defect 3) -------------------------------------------------


def open_connection(server: HttpServer, peer: str) -> tuple[Connection, Transport]:
    connection = Connection(server)
    transport = Transport(peer)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def status_of(transport: Transport) -> bytes:
    return b"".join(transport.written)[:12]


def test_one_address_holds_at_most_its_share_and_others_are_still_served() -> None:
    refusals: list[int] = []

    async def connect() -> None:
        server = HttpServer(
            lambda request: Response(204),
            limits=Limits(max_connections=10, max_connections_per_address=3),
            on_protocol_error=refusals.append,
        )
        held = [open_connection(server, "192.0.2.7") for _ in range(3)]
        _, refused = open_connection(server, "192.0.2.7")
        assert refused.closed
        assert b"".join(refused.written).startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert b"Retry-After: 1\r\n" in b"".join(refused.written)
        connection, transport = open_connection(server, "192.0.2.8")
        connection.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0)
        assert status_of(transport) == b"HTTP/1.1 204"
        # A connection closed gives its address room for another.
        held[0][0].connection_lost(None)
        _, again = open_connection(server, "192.0.2.7")
        assert not again.closed
        assert server._per_address == {"192.0.2.7": 3, "192.0.2.8": 1}
        for other, _ in [*held[1:], (connection, transport)]:
            other.connection_lost(None)
        assert server._per_address == {"192.0.2.7": 1}

    asyncio.run(connect())
    assert refusals == [429]


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself() -> None:
    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") == "192.0.2.7"


def test_trusted_proxies_are_not_held_to_the_share_of_one_address() -> None:
    async def connect() -> list[Transport]:
        server = HttpServer(
            lambda request: Response(204),
            limits=Limits(
                max_connections=10,
                max_connections_per_address=2,
                shared_networks=(ipaddress.ip_network("10.0.0.0/8"),),
            ),
        )
        return [open_connection(server, "10.1.2.3")[1] for _ in range(5)]

    assert not any(transport.closed for transport in asyncio.run(connect()))


def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    async def connect() -> None:
        server = HttpServer(lambda request: Response(204), limits=Limits(max_connections=3))
        server.clock.now = 100.0
        _, long_transport = open_connection(server, "192.0.2.1")
        server.clock.now = 101.0
        busy, busy_transport = open_connection(server, "192.0.2.2")
        busy.data_received(b"GET /a HTTP/1.1\r\nHo")  # a request half in: not idle
        _, short_transport = open_connection(server, "192.0.2.3")
        server.clock.now = 102.0
        _, first = open_connection(server, "192.0.2.4")
        assert not first.closed
        assert long_transport.closed, "the longest-idle connection made room"
        assert not busy_transport.closed
        assert not short_transport.closed
        _, second = open_connection(server, "192.0.2.5")
        assert short_transport.closed
        assert not second.closed
        # Now only the busy connection and two fresh ones: nothing to evict.
        _, third = open_connection(server, "192.0.2.6")
        assert third.closed
        assert status_of(third) == b"HTTP/1.1 503"
        assert server.evicted_connections == 2
        assert len(server.connections) == 3

    asyncio.run(connect())


def test_near_the_cap_idle_connections_time_out_sooner() -> None:
    async def connect() -> None:
        limits = Limits(max_connections=10, idle_timeout=30.0, pressure_idle_timeout=5.0)
        server = HttpServer(lambda request: Response(204), limits=limits)
        server.clock.now = 100.0
        opened = [open_connection(server, f"192.0.2.{n}")[1] for n in range(8)]
        server.clock.now = 110.0
        server.sweep()
        assert not any(transport.closed for transport in opened), "8 of 10: no pressure"
        opened.append(open_connection(server, "192.0.2.9")[1])
        server.sweep()
        assert all(transport.closed for transport in opened[:8]), "9 of 10: 5 s is enough"
        assert not opened[8].closed

    asyncio.run(connect())


def test_a_response_that_waits_is_sent_in_order_and_parks_the_requests_behind_it() -> None:
    """`Response.later`: the answer of /slow comes once its future is done; /fast, pipelined
    behind it, is handled only then, and answered after it; reading pauses meanwhile."""
    seen: list[str] = []

    async def feed() -> tuple[Transport, list[str], bool]:
        answer: asyncio.Future[Callable[[], Response]] = asyncio.Future()

        def handler(request: Request) -> Response:
            seen.append(request.path)
            if request.path == "/slow":
                return Response(200, later=answer)
            return Response(204)

        server = HttpServer(handler)
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await asyncio.sleep(0)
        waiting = (list(seen), transport.reading, list(transport.written))
        assert waiting == (["/slow"], False, [])
        answer.set_result(lambda: Response(200, b"number", "text/plain"))
        for _ in range(3):
            await asyncio.sleep(0)
        return transport, list(seen), transport.reading

    transport, handled, reading = asyncio.run(feed())
    assert handled == ["/slow", "/fast"]
    assert reading
    answer = b"".join(transport.written)
    assert answer.index(b"HTTP/1.1 200 ") < answer.index(b"HTTP/1.1 204 ")
    assert b"number" in answer


def test_a_response_whose_answer_fails_is_a_500() -> None:
    async def feed() -> bytes:
        answer: asyncio.Future[Callable[[], Response]] = asyncio.Future()
        server = HttpServer(lambda request: Response(200, later=answer))
        connection = Connection(server)
        transport = Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        answer.set_exception(RuntimeError("redis fell over"))
        for _ in range(3):
            await asyncio.sleep(0)
        return b"".join(transport.written)

    assert asyncio.run(feed()).startswith(b"HTTP/1.1 500 ")
