"""`adpulse worker`: Kafka -> Redis in batches, on faust-streaming's lifecycle and rebalancing.

faust runs the process: the consumer group, its rebalances, signals and shutdown. Its per-event
path (a hand-off per record to the Conductor, which races it against flow control with two
tasks, then a queue per agent, an Event object and ack bookkeeping per record) is replaced by
`stream.batch_loop.BatchLoop` through the adapters in `stream.framework`: fetch raw aiokafka
records in batches, decode them straight from bytes (`stream.batch`), apply each batch with one
Lua call (`KpiStore.send_decoded`, pipelined in order), and only then commit the batch's
offsets. A batch loop is an order of magnitude faster than a faust agent batching with
`stream.take`, and two orders faster than one applying each event on its own (bench/README.md).
One loop per process, committing in fetch order: what an agent with concurrency=1 guarantees
(faust issue #606: more can commit past a record in flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import faust
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY

from stream.batch_loop import BatchLoop
from stream.batch_writer import BatchWriter
from stream.errors import StoreUnavailable
from stream.framework import (
    FrameworkMismatch,
    WorkerApp,
    check_framework,
    hand_on_batch_records,
)
from stream.keys import KeySpace
from stream.metrics_server import serve_metrics, stop_serving_on_hangup
from stream.store import KpiStore
from stream.worker_metrics import WorkerMetrics
from stream.worker_settings import WorkerSettings

logger = logging.getLogger(__name__)


def build_app(
    settings: WorkerSettings, data_dir: Path, writer: BatchWriter, log_id: str = ""
) -> WorkerApp:
    """The faust app: one group, the events topic subscribed, no per-event agent.

    Settings that matter on the embedded Tansu broker: a join takes about half the session
    timeout there, so the session is short (a killed worker's partitions move within it); no
    leader topic (faust would create ``<group>-__assignor-__leader``, unused here); no web server
    (two workers on one machine would clash on its port; /metrics is served by prometheus-client).
    """
    brokers = [f"kafka://{host.strip()}" for host in settings.kafka.split(",") if host.strip()]
    session = settings.session_timeout
    app = WorkerApp(
        settings.group,
        broker=brokers,
        broker_client_id=settings.client_id,
        autodiscover=False,
        datadir=str(data_dir),
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=session / 4,
        broker_rebalance_timeout=max(session * 2, settings.shutdown_timeout + session),
        broker_max_poll_records=settings.batch_size,
        stream_wait_empty=True,
    )
    app.batch_loop = BatchLoop(settings, writer, log_id)
    app.topics.add(app.topic(settings.topic, key_serializer="raw", value_serializer="raw"))
    return app


def run(settings: WorkerSettings, loop: asyncio.AbstractEventLoop) -> int:
    """Run the worker until SIGTERM/SIGINT; the exit code."""
    try:
        check_framework()
    except FrameworkMismatch as error:
        logger.error("%s", error)
        return 1
    hand_on_batch_records()
    try:
        server = serve_metrics(settings.host, settings.port, settings.share_port, REGISTRY)
    except OSError as error:
        logger.error("cannot serve /metrics on %s:%d: %s", settings.host, settings.port, error)
        return 1
    if settings.share_port:
        stop_serving_on_hangup(loop, server)
    metrics = WorkerMetrics(REGISTRY)
    store = KpiStore.from_url(
        settings.redis_url,
        retention=settings.retention,
        max_channels=settings.max_channels,
        zone=ZoneInfo(settings.timezone),
        max_campaigns=settings.max_campaigns,
    )
    keys = loop.run_until_complete(_active_keys(store))
    if store.cluster:
        logger.info("counting into the key space %r, in Redis Cluster parts", keys.prefix)
    else:
        logger.info("counting into the key space %r", keys.prefix)
    writer = BatchWriter(store, metrics, click_keys=settings.click_keys)
    if settings.click_keys is None:
        logger.info(
            "no ADPULSE_CLICK_KEY: conversions naming signed click ids count as unattributed "
            "(the trackers issue them only with a key)"
        )
    temporary = settings.data_dir is None
    data_dir = settings.data_dir or Path(tempfile.mkdtemp(prefix="adpulse-worker-"))
    log_id = loop.run_until_complete(_cluster_id(settings.kafka))
    app = build_app(settings, data_dir, writer, log_id)
    logger.info(
        "worker starting: kafka=%s topic=%s group=%s redis=%s batch=%d/%.3fs fetch-wait=%.3fs "
        "metrics=%s:%d",
        settings.kafka,
        settings.topic,
        settings.group,
        _without_password(settings.redis_url),
        settings.batch_size,
        settings.batch_within,
        settings.fetch_wait,
        settings.host,
        settings.port,
    )
    worker = faust.Worker(
        app,
        loop=loop,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
        loglevel=settings.log_level,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else 1
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0  # pragma: no cover - execute_from_commandline always raises


async def _active_keys(store: KpiStore) -> KeySpace:
    """The live key space (`keys.ACTIVE_PREFIX_KEY`), waiting while Redis is unreachable: a
    worker that guessed could count into a key space no reader reads. Also fits the buckets of
    remembered ids to the server's encoding limits, warning about a limit that costs memory, and
    in cluster mode sends the customer facts a stopped worker left (`keys`, "Customers across
    parts")."""
    delay = 0.1
    while True:
        try:
            keys = await store.follow_active_prefix()
            for warning in await store.check_encodings():
                logger.warning("%s", warning)
            await store.send_customer_facts()
            return keys
        except StoreUnavailable as error:
            if delay == 0.1:
                logger.warning("cannot read the live key space from Redis, retrying: %s", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _cluster_id(bootstrap: str) -> str:
    """The broker's cluster id, which names its log in the applied offsets (`keys`,
    "Redelivery"); empty when the broker does not say (then all its logs share one name)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="adpulse-worker-admin")
    try:
        await admin.start()
        described = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as error:
        logger.warning("cannot read the broker's cluster id (%s); offsets kept without it", error)
        return ""
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await admin.close()
    # Separators of the stored offsets' format; Kafka's cluster ids never hold them.
    return "".join(c for c in str(described.get("cluster_id") or "") if c not in "/:")[:64]


def _without_password(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{separator}{credentials.split(':')[0]}:***@{host}"


__all__: Sequence[str] = ("build_app", "run")
