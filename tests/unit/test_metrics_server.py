"""Two workers' `/metrics` on one port (`--share-port`): once the old one stops serving, every
scrape reaches the new one's counters, and the port never stops answering."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry, Counter

from adpulse.cli.processes import free_port
from stream.metrics_server import serve_metrics, stop_serving
from tests.kafka_helpers import wait_until_sync


def registry(count: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("handover_total", "which worker answered", registry=registry).inc(count)
    return registry


def answer(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return "old" if "handover_total 1.0" in text else "new"


def test_the_old_worker_stops_serving_and_the_new_one_answers_every_scrape() -> None:
    port = free_port()
    old = serve_metrics("127.0.0.1", port, share_port=True, registry=registry(1))
    new = serve_metrics("127.0.0.1", port, share_port=True, registry=registry(2))
    try:
        seen: set[str] = set()

        def both() -> bool:
            seen.add(answer(port))
            return seen == {"old", "new"}

        # The kernel spreads connections between the two listeners (by source port).
        wait_until_sync(
            both,
            timeout=10,
            interval=0.0,
            message="scrapes reaching both workers",
        )
        stop_serving(old)
        wait_until_sync(
            lambda: old.socket.fileno() == -1, timeout=5, message="the old listener closed"
        )
        assert {answer(port) for _ in range(50)} == {"new"}
    finally:
        stop_serving(old)
        new.shutdown()
        new.server_close()
