"""Running the tracker: start, serve until SIGTERM or SIGINT, then stop in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
from pathlib import Path

from tracker.app import TrackerApp
from tracker.framework import FrameworkMismatch, check_framework
from tracker.http import HttpServer, Limits
from tracker.numbers import NumberDesk
from tracker.publisher import EventPublisher, PublisherSettings, TopicSpec
from tracker.settings import TrackerSettings
from tracker.spool import SpoolError
from tracker.wal import WriteAheadLog

log = logging.getLogger(__name__)

# How often a tracker whose broker does not answer says so again.
BROKER_WARNING_INTERVAL = 30.0

# The bootstrap file (`--kafka-file`) holds one `host:port[,...]` line; more is not an address.
MAX_BOOTSTRAP_FILE_BYTES = 4096


class BootstrapFileError(SpoolError):
    """The `--kafka-file` could not be read or does not hold bootstrap servers."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"cannot take the Kafka bootstrap servers from {path} (--kafka-file, "
            f"ADPULSE_KAFKA_FILE): {reason}"
        )
        self.path = path


def read_bootstrap_file(path: Path) -> str:
    """The `host:port[,...]` a bootstrap file holds (blocking: call it in a thread)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_BOOTSTRAP_FILE_BYTES + 1)
    except OSError as error:
        raise BootstrapFileError(path, error.strerror or str(error)) from error
    if len(raw) > MAX_BOOTSTRAP_FILE_BYTES:
        raise BootstrapFileError(path, f"longer than {MAX_BOOTSTRAP_FILE_BYTES} bytes")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BootstrapFileError(path, "not ASCII") from None
    servers = [server.strip() for server in text.split(",")]
    for server in servers:
        host, colon, port = server.rpartition(":")
        if not colon or not host or any(c.isspace() for c in host) or not port.isdigit():
            raise BootstrapFileError(path, f"{server!r} is not host:port")
        if not 0 < int(port) < 65536:
            raise BootstrapFileError(path, f"port {port} out of range")
    return ",".join(servers)


async def _follow_bootstrap_file(publisher: EventPublisher, path: Path) -> None:
    """On SIGHUP: read the bootstrap file again and move the publisher to what it names."""
    try:
        bootstrap = await asyncio.to_thread(read_bootstrap_file, path)
    except BootstrapFileError as error:
        log.error("%s; staying on %s", error, publisher.settings.bootstrap)
        return
    if bootstrap == publisher.settings.bootstrap:
        log.info("SIGHUP: %s still names %s", path, bootstrap)
        return
    publisher.move_to(bootstrap)


# Rejected records are kept a week: long enough to look into, short enough to stay small.
REJECTED_RETENTION_MS = 7 * 24 * 3600 * 1000


async def build_publisher(settings: TrackerSettings) -> EventPublisher:
    """The publisher over the spool's write-ahead log, opened (and scanned) in a thread; to the
    bootstrap servers of `--kafka-file` if set, else of `--kafka`."""
    bootstrap = settings.kafka
    if settings.kafka_file is not None:
        bootstrap = await asyncio.to_thread(read_bootstrap_file, settings.kafka_file)
    spool = await asyncio.to_thread(
        WriteAheadLog.open,
        settings.spool_dir,
        max_bytes=settings.spool_max_bytes,
        durability=settings.durability,
    )
    return EventPublisher(
        PublisherSettings(
            bootstrap=bootstrap,
            topics=(
                TopicSpec(settings.topic, settings.partitions),
                TopicSpec(settings.rejected_topic, 1, REJECTED_RETENTION_MS),
            ),
            request_timeout_ms=int(settings.kafka_timeout * 1000),
        ),
        spool,
    )


# Young objects that trigger a collection. Records wait in memory for the next produce cycle,
# hundreds at a time, so at the default 700 the collector ran every thousand requests or so.
GC_YOUNG_THRESHOLD = 7000


def _settle_heap() -> None:
    """Keep the garbage collector off the request path once startup is over: a full
    collection would walk everything startup imported and built (bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# File descriptors kept for everything but client connections: the broker, the spool, logs.
RESERVED_DESCRIPTORS = 256


def _connection_limit(wanted: int) -> int:
    """`wanted`, or fewer if the process may not open that many files even after raising its
    soft limit as far as the hard one allows: past that, accepting fails with EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as error:
            log.warning("could not raise the open-files limit to %d: %s", raised, error)
    if soft != resource.RLIM_INFINITY and soft < needed:
        allowed = max(1, soft - RESERVED_DESCRIPTORS)
        log.warning(
            "the open-files limit (%d, hard %d) allows %d client connections, not %d: "
            "raise it (ulimit -n) or lower ADPULSE_TRACKER_MAX_CONNECTIONS",
            soft,
            hard,
            allowed,
            wanted,
        )
        return allowed
    return wanted


async def _warn_while_broker_down(
    publisher: EventPublisher, settings: TrackerSettings, stop: asyncio.Event
) -> None:
    """A warning as soon as the broker is found not to answer, and every 30 s while it does not:
    a tracker started alone would otherwise say so only in /readyz."""
    loop = asyncio.get_running_loop()
    warned_at: float | None = None
    while not stop.is_set():
        state = publisher.readiness()
        if state["broker"] == "down" and state["last_error"]:
            if warned_at is None or loop.time() - warned_at >= BROKER_WARNING_INTERVAL:
                log.warning(
                    "the Kafka broker at %s (ADPULSE_KAFKA) does not answer (%s); accepted "
                    "events go to the spool in %s (%d records) and are sent once it answers",
                    publisher.settings.bootstrap,
                    state["last_error"],
                    settings.spool_dir,
                    state["spool_records"],
                )
                warned_at = loop.time()
        elif state["broker"] == "up" and warned_at is not None:
            log.info("the Kafka broker at %s answers again", publisher.settings.bootstrap)
            warned_at = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def serve(settings: TrackerSettings, stop: asyncio.Event | None = None) -> int:
    try:
        check_framework()
    except FrameworkMismatch as error:
        log.error("%s", error)
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        publisher = await build_publisher(settings)
    except BootstrapFileError as error:
        log.error("%s", error)
        return 2
    except SpoolError as error:
        log.error("cannot open the spool: %s", error)
        return 2
    flusher = await publisher.start()
    moves: set[asyncio.Task[None]] = set()
    if settings.kafka_file is not None:
        kafka_file = settings.kafka_file

        def on_hangup() -> None:
            task = asyncio.create_task(_follow_bootstrap_file(publisher, kafka_file))
            moves.add(task)
            task.add_done_callback(moves.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    numbers = None
    if settings.redis_url is not None:
        # Connects on first use: a Redis down at start-up costs the visitors their tracked
        # numbers (the pages keep their printed ones), never the tracker's start.
        numbers = NumberDesk.from_url(settings.redis_url, lease_seconds=settings.number_lease)
    app = TrackerApp(settings, publisher, numbers)
    limits = Limits(
        max_connections=_connection_limit(settings.max_connections),
        max_connections_per_address=settings.max_connections_per_address,
        # Behind a load balancer every connection comes from it: the clients' own addresses
        # are known only from X-Forwarded-For, which the balancer itself must limit.
        shared_networks=settings.trusted_proxies,
    )
    server = HttpServer(
        # The bound method: calling the app itself goes through its type's call slot, a
        # dearer call (bench/README.md, "Tracker").
        app.__call__,
        limits=limits,
        on_protocol_error=app.count_protocol_error,
        commit=publisher.commit,
        on_refused=app.count_refused,
    )
    # A turn's first accepted record asks for the end of the turn, where the server commits
    # the group to the log before it answers.
    publisher.schedule_commit = server.end_turn
    try:
        await server.start(settings.host, settings.port)
    except OSError as error:
        log.error(
            "cannot listen on %s:%d (%s); choose another with --port or ADPULSE_TRACKER_PORT",
            settings.host,
            settings.port,
            error.strerror or error,
        )
        await publisher.close(timeout=settings.shutdown_timeout)
        if numbers is not None:
            await numbers.close()
        return 2
    _settle_heap()
    if settings.api_token is None:
        log.warning("ADPULSE_API_TOKEN is not set: POST /v1/spend answers 401 to everyone")
    log.info(
        "tracker listening on http://%s:%d, producing to %s at %s (durability %s)",
        settings.host,
        server.port,
        settings.topic,
        publisher.settings.bootstrap,
        settings.durability,
    )
    warner = asyncio.create_task(
        _warn_while_broker_down(publisher, settings, stop), name="broker-warning"
    )
    died = await _until_stopped(stop, [flusher, warner, *server.tasks()])
    stop.set()
    await asyncio.gather(warner, return_exceptions=True)
    log.info("stopping: no new connections, flushing to Kafka")
    await server.stop_accepting()
    await publisher.close(timeout=settings.shutdown_timeout)
    await server.close(timeout=1.0)
    if numbers is not None:
        await numbers.close()
    if died is not None:
        log.critical("tracker stopped because its task %s ended", died.get_name())
        return 1
    log.info("tracker stopped")
    return 0


async def _until_stopped(
    stop: asyncio.Event, tasks: list[asyncio.Task[None]]
) -> asyncio.Task[None] | None:
    """Wait for `stop`; if a background task ends first (none should before shutdown), say
    why and return it, so that the process stops and exits non-zero rather than run on
    without it."""
    stopped = asyncio.create_task(stop.wait(), name="stop-signal")
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if stopped in done:
        return None
    stopped.cancel()
    died = next(task for task in tasks if task in done)
    error = None if died.cancelled() else died.exception()
    log.critical(
        "background task %s ended unexpectedly (%r): stopping the tracker", died.get_name(), error
    )
    return died
