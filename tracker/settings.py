"""The tracker's one settings object, built from flags and ADPULSE_* variables in one place."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from adpulse.core.channels import (
    DEFAULT_CHANNEL_RULES,
    ChannelRules,
    known_channels,
    parse_channel_list,
    parse_channel_rules,
)
from adpulse.core.event import EventRules, parse_fx_rates
from adpulse.core.options import (
    SettingError,
    parse_int,
    parse_list,
    parse_log_level,
    parse_port,
    parse_positive_float,
    resolve,
)
from tracker.enrich import IPNetwork, parse_trusted_proxies
from tracker.redirect import RedirectPolicy
from tracker.wal import Durability

DEFAULT_PORT = 8080
DEFAULT_TOPIC = "adpulse.events"
# By default one client address may hold this share of the connections: ten addresses are
# needed to fill the server, and an office behind one NAT still has room to spare.
ADDRESS_SHARE = 10


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    kafka: str = "localhost:9092"
    topic: str = DEFAULT_TOPIC
    partitions: int = 8
    api_token: str | None = None
    redirect_policy: RedirectPolicy = field(default_factory=RedirectPolicy)
    cors_origins: tuple[str, ...] = ("*",)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    spool_dir: Path = Path(".adpulse/spool")
    spool_max_bytes: int = 1 << 30
    durability: Durability = Durability.PROCESS
    shutdown_timeout: float = 15.0
    kafka_timeout: float = 5.0
    max_connections: int = 10_000
    max_connections_per_address: int = 10_000 // ADDRESS_SHARE
    event_rules: EventRules = field(
        default_factory=lambda: EventRules(known_channels=known_channels(DEFAULT_CHANNEL_RULES))
    )
    channel_rules: ChannelRules = DEFAULT_CHANNEL_RULES
    log_level: str = "INFO"

    @property
    def rejected_topic(self) -> str:
        return f"{self.topic}.rejected"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", help="address to listen on (ADPULSE_TRACKER_HOST, default 127.0.0.1)")
    add(
        "--port",
        help=f"port to listen on (ADPULSE_TRACKER_PORT, default {DEFAULT_PORT})",
    )
    add(
        "--kafka",
        help="Kafka bootstrap servers, host:port[,...] (ADPULSE_KAFKA, default localhost:9092)",
    )
    add(
        "--topic",
        help=f"topic for valid events (ADPULSE_TOPIC, default {DEFAULT_TOPIC}); "
        "invalid ones go to TOPIC.rejected",
    )
    add(
        "--partitions",
        help="partitions when the tracker creates the topic (ADPULSE_PARTITIONS, default 8)",
    )
    add(
        "--redirect-hosts",
        help="comma-separated hosts click redirects may go to; "
        "*.example.com allows subdomains (ADPULSE_REDIRECT_HOSTS)",
    )
    add(
        "--cors-origins",
        help="comma-separated origins allowed to POST events from browsers, "
        "* for any (ADPULSE_CORS_ORIGINS, default *)",
    )
    add(
        "--trusted-proxies",
        help="comma-separated networks whose X-Forwarded-For is believed "
        "(ADPULSE_TRUSTED_PROXIES, default none)",
    )
    add(
        "--spool-dir",
        help="directory for the on-disk spool used while Kafka is "
        "unreachable (ADPULSE_SPOOL_DIR, default .adpulse/spool)",
    )
    add(
        "--spool-max-bytes",
        help="spool capacity; when full, event endpoints answer 503 "
        "(ADPULSE_SPOOL_MAX_BYTES, default 1 GiB)",
    )
    add(
        "--durability",
        help="when an accepted event counts as kept: process (written to the spool's "
        "write-ahead log, survives a crash of the tracker) or machine (also fsynced, survives "
        "a power loss) (ADPULSE_DURABILITY, default process)",
    )
    add("--currency", help="reporting currency, ISO 4217 (ADPULSE_CURRENCY, default USD)")
    add(
        "--fx-rates",
        help="exchange rates into the reporting currency, e.g. EUR=1.08,GBP=1.27 "
        "(ADPULSE_FX_RATES); events in other currencies are refused",
    )
    add(
        "--channel-rules",
        help="channel grouping rules replacing the defaults "
        "(ADPULSE_CHANNEL_RULES; see the README)",
    )
    add(
        "--channels",
        help="comma-separated channels clients may name besides the defaults and the rules' "
        "(ADPULSE_CHANNELS); others count as 'unlisted' unless sent with the API token",
    )
    add(
        "--shutdown-timeout",
        help="seconds to flush to Kafka on SIGTERM before "
        "spooling the rest (ADPULSE_SHUTDOWN_TIMEOUT, default 15)",
    )
    add(
        "--kafka-timeout",
        help="seconds a produce may wait for the broker before its records go to the spool "
        "(ADPULSE_KAFKA_TIMEOUT, default 5)",
    )
    add(
        "--max-connections",
        help="client connections open at once; beyond it new ones are answered 503 "
        "(ADPULSE_TRACKER_MAX_CONNECTIONS, default 10000)",
    )
    add(
        "--max-connections-per-address",
        help="client connections one address (an IPv6 /64) may hold; beyond it new ones are "
        "answered 429; not applied to --trusted-proxies "
        f"(ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS, default 1/{ADDRESS_SHARE} of "
        "--max-connections)",
    )
    add("--log-level", help="DEBUG, INFO, WARNING or ERROR (ADPULSE_LOG_LEVEL, default INFO)")
    # Secrets come from the environment only, so they never show in `ps`.
    parser.epilog = (
        "Secrets are read from the environment only: ADPULSE_API_TOKEN (bearer token for "
        "POST /v1/spend, without it the endpoint answers 401; on POST /v1/events it lets a caller "
        "name channels not yet known) and ADPULSE_REDIRECT_SECRET "
        "(HMAC key for signed redirect links, sig=hex(HMAC-SHA256(secret, to)))."
    )


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> TrackerSettings:
    """The tracker's settings: each flag, else its ADPULSE_* variable, else the default."""
    defaults = TrackerSettings()
    currency = resolve(args, env, "currency", "ADPULSE_CURRENCY", "USD", str.upper)
    rates: dict[str, Decimal] = resolve(
        args, env, "fx_rates", "ADPULSE_FX_RATES", {}, parse_fx_rates
    )
    channel_rules = resolve(
        args,
        env,
        "channel_rules",
        "ADPULSE_CHANNEL_RULES",
        DEFAULT_CHANNEL_RULES,
        parse_channel_rules,
    )
    no_channels: tuple[str, ...] = ()
    listed = resolve(args, env, "channels", "ADPULSE_CHANNELS", no_channels, parse_channel_list)
    try:
        event_rules = EventRules(
            reporting_currency=currency,
            fx_rates=rates,
            known_channels=known_channels(channel_rules, listed),
        )
    except ValueError as error:
        raise SettingError("ADPULSE_CURRENCY", currency, str(error)) from error
    secret = env.get("ADPULSE_REDIRECT_SECRET") or None
    no_hosts: tuple[str, ...] = ()
    hosts = resolve(args, env, "redirect_hosts", "ADPULSE_REDIRECT_HOSTS", no_hosts, parse_list)
    partitions = resolve(
        args, env, "partitions", "ADPULSE_PARTITIONS", defaults.partitions, parse_partitions
    )
    max_connections = resolve(
        args,
        env,
        "max_connections",
        "ADPULSE_TRACKER_MAX_CONNECTIONS",
        defaults.max_connections,
        parse_max_connections,
    )
    return TrackerSettings(
        host=resolve(args, env, "host", "ADPULSE_TRACKER_HOST", defaults.host, str),
        port=resolve(args, env, "port", "ADPULSE_TRACKER_PORT", defaults.port, parse_port),
        kafka=resolve(args, env, "kafka", "ADPULSE_KAFKA", defaults.kafka, str),
        topic=resolve(args, env, "topic", "ADPULSE_TOPIC", defaults.topic, str),
        partitions=partitions,
        api_token=env.get("ADPULSE_API_TOKEN") or None,
        redirect_policy=RedirectPolicy(
            hosts=frozenset(host.lower().rstrip(".") for host in hosts),
            secret=secret.encode() if secret else None,
        ),
        cors_origins=resolve(args, env, "cors_origins", "ADPULSE_CORS_ORIGINS", ("*",), parse_list),
        trusted_proxies=resolve(
            args, env, "trusted_proxies", "ADPULSE_TRUSTED_PROXIES", (), parse_trusted_proxies
        ),
        spool_dir=resolve(args, env, "spool_dir", "ADPULSE_SPOOL_DIR", defaults.spool_dir, Path),
        spool_max_bytes=resolve(
            args,
            env,
            "spool_max_bytes",
            "ADPULSE_SPOOL_MAX_BYTES",
            defaults.spool_max_bytes,
            parse_spool_size,
        ),
        durability=resolve(
            args, env, "durability", "ADPULSE_DURABILITY", defaults.durability, parse_durability
        ),
        shutdown_timeout=resolve(
            args,
            env,
            "shutdown_timeout",
            "ADPULSE_SHUTDOWN_TIMEOUT",
            defaults.shutdown_timeout,
            parse_positive_float,
        ),
        kafka_timeout=resolve(
            args,
            env,
            "kafka_timeout",
            "ADPULSE_KAFKA_TIMEOUT",
            defaults.kafka_timeout,
            parse_positive_float,
        ),
        max_connections=max_connections,
        max_connections_per_address=resolve(
            args,
            env,
            "max_connections_per_address",
            "ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS",
            max(1, max_connections // ADDRESS_SHARE),
            parse_max_connections,
        ),
        event_rules=event_rules,
        channel_rules=channel_rules,
        log_level=resolve(args, env, "log_level", "ADPULSE_LOG_LEVEL", "INFO", parse_log_level),
    )


def parse_partitions(text: str) -> int:
    partitions = parse_int(text)
    if not 1 <= partitions <= 1024:
        raise ValueError("a topic has from 1 to 1024 partitions")
    return partitions


def parse_spool_size(text: str) -> int:
    size = parse_int(text)
    if size < 1 << 20:
        raise ValueError("the spool needs at least 1 MiB (1048576 bytes)")
    return size


def parse_durability(text: str) -> Durability:
    try:
        return Durability(text.strip().lower())
    except ValueError:
        raise ValueError("process or machine") from None


def parse_max_connections(text: str) -> int:
    count = parse_int(text)
    if not 1 <= count <= 1_000_000:
        raise ValueError("from 1 to 1000000 connections")
    return count
