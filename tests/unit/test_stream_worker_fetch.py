"""The worker's Kafka fetch wait: from flags and ADPULSE_WORKER_FETCH_WAIT into aiokafka."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
import uvloop
from prometheus_client import CollectorRegistry

from stream.aggregate import BatchResult
from stream.batch import DecodedBatch
from stream.batch_writer import BatchWriter
from stream.framework import BatchConsumer, BatchConsumerThread
from stream.worker import build_app
from stream.worker_metrics import WorkerMetrics
from stream.worker_settings import WorkerSettings, add_arguments, settings_from


class NoStore:
    async def apply_decoded(self, batch: DecodedBatch, now: object = None) -> BatchResult:
        raise AssertionError("nothing is written in these tests")

    async def send_decoded(
        self, batch: DecodedBatch, now: object = None
    ) -> asyncio.Future[BatchResult]:
        raise AssertionError("nothing is written in these tests")

    def resume_sending(self) -> None:
        raise AssertionError("nothing is written in these tests")

    def partitions_moved(self) -> None:
        pass


def parse(argv: list[str], env: dict[str, str]) -> WorkerSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from(parser.parse_args(argv), env)


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, WorkerSettings().fetch_wait),
        ([], {"ADPULSE_WORKER_FETCH_WAIT": "0.25"}, 0.25),
        (["--fetch-wait", "0.02"], {"ADPULSE_WORKER_FETCH_WAIT": "0.25"}, 0.02),
    ],
)
def test_fetch_wait_from_flag_else_environment_else_default(
    argv: list[str], env: dict[str, str], expected: float
) -> None:
    assert parse(argv, env).fetch_wait == expected


@pytest.mark.parametrize("text", ["0", "-1", "6", "soon"])
def test_fetch_wait_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ADPULSE_WORKER_FETCH_WAIT"):
        parse([], {"ADPULSE_WORKER_FETCH_WAIT": text})


async def test_consumer_is_built_with_the_fetch_wait(tmp_path: Path) -> None:
    # faust itself passes fetch_max_wait_ms=1500 (a 750 ms stall per fetch on Tansu).
    writer = BatchWriter(NoStore(), WorkerMetrics(CollectorRegistry()))
    app = build_app(WorkerSettings(fetch_wait=0.05), tmp_path, writer)
    consumer_service = app.consumer
    assert isinstance(consumer_service, BatchConsumer)
    thread = consumer_service.batch_thread
    assert isinstance(thread, BatchConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 50
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # faust's consumer thread made it; never started here


def test_the_consumer_thread_runs_uvloop(tmp_path: Path) -> None:
    """The fetch answers are read by uvloop's transport, as in the main thread, not by asyncio's
    Python selector loop that mode makes by default (bench/README.md)."""
    writer = BatchWriter(NoStore(), WorkerMetrics(CollectorRegistry()))
    app = build_app(WorkerSettings(), tmp_path, writer)
    consumer_service = app.consumer
    assert isinstance(consumer_service, BatchConsumer)
    thread = consumer_service.batch_thread
    try:
        assert isinstance(thread.thread_loop, uvloop.Loop)
    finally:
        thread.thread_loop.close()


async def test_the_consumer_thread_s_loop_is_closed_when_it_stops(tmp_path: Path) -> None:
    """mode closes only a thread loop it made itself; the worker's is closed by its stop."""
    writer = BatchWriter(NoStore(), WorkerMetrics(CollectorRegistry()))
    app = build_app(WorkerSettings(), tmp_path, writer)
    consumer_service = app.consumer
    assert isinstance(consumer_service, BatchConsumer)
    thread = consumer_service.batch_thread
    await thread.stop()
    assert thread.thread_loop.is_closed()
