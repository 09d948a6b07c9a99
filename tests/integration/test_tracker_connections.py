"""One client cannot hold every connection of the real tracker (issue 10, defect 3).

Clients bind to loopback addresses of their own (127.0.0.2, 127.0.0.3, ...), which Linux
routes without setup, so that the tracker sees distinct client addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import serve_tracker
from tests.kafka_helpers import TopicReader
from tests.processes import Tracker
from tests.services import KafkaService

MAX_CONNECTIONS = 12
PER_ADDRESS = 4


@pytest.fixture
def small_tracker(kafka: KafkaService, topic: str, tmp_path: Path) -> Iterator[Tracker]:
    limits = ["--max-connections", str(MAX_CONNECTIONS),
              "--max-connections-per-address", str(PER_ADDRESS)]  # fmt: skip
    yield from serve_tracker(kafka, topic, tmp_path, extra=limits)


Socket = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, address: str) -> Socket:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


async def pixel(port: int, address: str, event_id: str) -> bytes:
    """The status line of a pixel request sent from `address` on a connection of its own."""
    reader, writer = await connect(port, address)
    try:
        writer.write(
            b"GET /p.gif?type=click&event_id=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            % event_id.encode()
        )
        answer = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        # Refused with the request unread: the kernel may reset before the answer is read.
        return b"reset"
    finally:
        writer.close()
    return answer.partition(b"\r\n")[0]


async def test_a_client_is_served_while_another_holds_its_quota_and_idle_ones_make_room(
    kafka: KafkaService, topic: str, small_tracker: Tracker
) -> None:
    port = small_tracker.port
    held: list[Socket] = []
    try:
        # One address opens its whole quota and sends nothing; one more is refused 429.
        held += [await connect(port, "127.0.0.2") for _ in range(PER_ADDRESS)]
        reader, writer = await connect(port, "127.0.0.2")
        refused = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), refused
        assert b"Retry-After: 1" in refused

        async with TopicReader(kafka.bootstrap, topic) as topic_reader:
            # Another client is served at once.
            assert await pixel(port, "127.0.0.3", "well-behaved") == b"HTTP/1.1 200 OK"

            # Two more addresses fill the server with connections that send nothing.
            for address in ("127.0.0.4", "127.0.0.5"):
                held += [await connect(port, address) for _ in range(PER_ADDRESS)]
            assert len(held) == MAX_CONNECTIONS

            # A new client is served all the same: once the idle connections have been idle
            # since the tracker clock's last tick, the longest-idle one makes room for it.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            statuses: list[bytes] = []
            while not statuses or statuses[-1] != b"HTTP/1.1 200 OK":
                assert loop.time() < deadline, statuses
                statuses.append(await pixel(port, "127.0.0.6", f"newcomer-{len(statuses)}"))
                if statuses[-1] != b"HTTP/1.1 200 OK":
                    assert statuses[-1] in (b"HTTP/1.1 503 Service Unavailable", b"reset")
                    # Refused while every connection was fresh; the next tick changes that.
                    await asyncio.sleep(0.2)
            newcomer = f"newcomer-{len(statuses) - 1}"

            closed = await asyncio.wait_for(
                asyncio.wait(
                    [asyncio.ensure_future(reader.read()) for reader, _ in held],
                    return_when=asyncio.FIRST_COMPLETED,
                ),
                10,
            )
            done, pending = closed
            for task in pending:
                task.cancel()
            assert [task.result() for task in done] == [b""] * len(done), "closed, unanswered"

            records = await topic_reader.wait_for(
                lambda records: (
                    {"well-behaved", newcomer} <= {r.json()["event_id"] for r in records}
                ),
                timeout=20,
                message="both clients' events on the topic",
            )
        assert {r.json()["event_id"] for r in records} == {"well-behaved", newcomer}
    finally:
        for _, writer in held:
            with contextlib.suppress(OSError):
                writer.close()

    log = small_tracker.log()
    assert "ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS" in log
    assert "the longest-idle are closed" in log
