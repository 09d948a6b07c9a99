"""The soak bench's load client: pre-built bursts and pipelined responses read in chunks."""

from __future__ import annotations

import asyncio
import importlib

# By name at run time: mypy checks bench/ as scripts, not as a package.
soak = importlib.import_module("bench.soak")
LOAD_REQUESTS, burst, read_statuses = soak.LOAD_REQUESTS, soak.burst, soak.read_statuses

OK = b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nContent-Length: 3\r\n\r\nGIF"
REFUSED = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


def test_a_burst_is_the_requests_in_turn_whatever_its_size() -> None:
    for first, count in [(0, 1), (5, 7), (3, 400), (1, 5000)]:
        expected = b"".join(LOAD_REQUESTS[(first + n) % len(LOAD_REQUESTS)] for n in range(count))
        assert burst(first, count) == expected


async def test_pipelined_responses_split_anywhere_are_counted_with_their_status() -> None:
    stream = OK * 3 + REFUSED + OK * 2 + REFUSED
    reader = asyncio.StreamReader()
    # Fed in pieces that cut heads and bodies apart.
    for start in range(0, len(stream), 17):
        reader.feed_data(stream[start : start + 17])
    reader.feed_eof()
    buffer = bytearray()
    assert await read_statuses(reader, buffer, 4) == 1
    assert await read_statuses(reader, buffer, 3) == 1
    assert buffer == b""
