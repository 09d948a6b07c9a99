"""The tracker's request parsing without sockets: request targets and query strings."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote_plus

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.app import Invalid, _query
from tracker.http import Connection, HttpServer, Limits, Request, Response
from tracker.records import MAX_QUERY_PARAMETERS


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written.append(data)

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


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
        b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /c HTTP/1.1\r\n\r\n"
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
    _, transport = exchange(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", neighbours=0)
    assert [answer[:12] for answer in transport.written] == [b"HTTP/1.1 204"] * 2


def test_each_turn_of_the_loop_answers_what_arrived_in_it() -> None:
    _, transport = exchange(b"GET /a HTTP/1.1\r\n\r\n", b"GET /b HTTP/1.1\r\n\r\n")
    assert len(transport.written) == 2


def test_a_closing_connection_answers_before_it_closes() -> None:
    _, transport = exchange(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert transport.closed
    answer = b"".join(transport.written)
    assert answer.count(b"HTTP/1.1 204 No Content") == 2
    assert b"Connection: close" in answer


def test_a_refused_request_is_answered_after_those_before_it() -> None:
    _, transport = exchange(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nExpect: x\r\n\x00\r\n")
    assert transport.closed
    answer = b"".join(transport.written)
    assert answer.index(b"HTTP/1.1 204 ") < answer.index(b"HTTP/1.1 400 ")


def test_expect_100_continue_comes_before_the_response() -> None:
    _, transport = exchange(
        b"POST /b HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n", b"{}"
    )
    assert transport.written[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert transport.written[1].startswith(b"HTTP/1.1 202 ")


def test_methods_are_strings() -> None:
    seen, _ = serve(b"HEAD /p.gif HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/events HTTP/1.1\r\n\r\n")
    assert [request.method for request in seen] == ["HEAD", "POST"]


def reference_query(query: bytes) -> dict[str, str]:
    """`_query` as first written: every name and value unquoted if it needs it, first wins."""
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
    assert _query(query) == fields
    assert list(_query(query)) == list(fields)


QUERY_TEXT = st.text(alphabet="ab=&%+2F0é", max_size=30)


@given(QUERY_TEXT)
def test_query_matches_the_reference(text: str) -> None:
    query = text.encode()
    try:
        expected = reference_query(query)
    except UnicodeDecodeError:
        with pytest.raises(Invalid, match="query"):
            _query(query)
        return
    got = _query(query)
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
        _query(query)
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
        connection.data_received(b"GET /a HTTP/1.1\r\n\r\n")  # queued: not alone
        neighbour.connection_lost(None)
        connection.data_received(b"GET /b HTTP/1.1\r\n\r\n")  # alone now, but behind /a
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
        connection.data_received(b"GET /a HTTP/1.1\r\n\r\n")
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
        connection.data_received(b"GET /a HTTP/1.1\r\n\r\n")
        return transport

    transport = asyncio.run(connect())
    assert not transport.closed
    assert b"".join(transport.written).startswith(b"HTTP/1.1 204 ")
