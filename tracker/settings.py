"""The tracker's one settings object, each setting declared once in its fields.

The declarations (`adpulse.core.options`) give the flags, the ADPULSE_* variables, the defaults
and `--help`; `settings_from` resolves them and combines the few that build one value together
(the event rules, the redirect policy, the per-address connection cap).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from adpulse.core.channels import (
    DEFAULT_CHANNEL_RULES,
    ChannelRules,
    known_channels,
    parse_channel_list,
    parse_channel_rules,
)
from adpulse.core.event import EventRules, parse_fx_rates
from adpulse.core.options import (
    API_TOKEN,
    CLICK_KEY,
    CURRENCY,
    HASH_KEY,
    KAFKA,
    LOG_LEVEL,
    TOPIC,
    Secret,
    Setting,
    SettingError,
    declarations,
    declare,
    declared,
    is_given,
    option,
    parse_int,
    parse_list,
    parse_port,
    parse_positive_float,
    parse_store_url,
    resolve_all,
)
from adpulse.core.options import (
    add_arguments as add_setting_arguments,
)
from adpulse.core.orders import NO_CODES, parse_status_map
from adpulse.core.phone import PHONE_REGION
from tracker.enrich import IPNetwork, parse_trusted_proxies
from tracker.redirect import RedirectPolicy
from tracker.wal import Durability

# By default one client address may hold this share of the connections: ten addresses are
# needed to fill the server, and an office behind one NAT still has room to spare.
ADDRESS_SHARE = 10


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


def parse_lease(text: str) -> float:
    seconds = parse_positive_float(text)
    if not 60 <= seconds <= 86400:
        raise ValueError("from 60 seconds to a day (86400)")
    return seconds


def parse_qualified_seconds(text: str) -> int:
    seconds = parse_int(text)
    if not 0 <= seconds <= 3600:
        raise ValueError("from 0 to 3600 seconds")
    return seconds


def parse_max_connections(text: str) -> int:
    count = parse_int(text)
    if not 1 <= count <= 1_000_000:
        raise ValueError("from 1 to 1000000 connections")
    return count


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    host: str = option("--host", "ADPULSE_TRACKER_HOST", "127.0.0.1", str, "address to listen on")
    port: int = option("--port", "ADPULSE_TRACKER_PORT", 8080, parse_port, "port to listen on")
    kafka: str = declare(KAFKA)
    kafka_file: Path | None = option(
        "--kafka-file",
        "ADPULSE_KAFKA_FILE",
        None,
        Path,
        "a file holding the bootstrap servers, read at start instead of `--kafka` and again on "
        "SIGHUP: the tracker then moves its producer to the broker it names and sends there "
        "what the old one had not acknowledged, without pausing requests (the dev stack's "
        "broker replacement); only who may write the file and signal the process can move it",
    )
    topic: str = declare(TOPIC)
    partitions: int = option(
        "--partitions",
        "ADPULSE_PARTITIONS",
        8,
        parse_partitions,
        "partitions when the tracker creates the topic",
    )
    api_token: Secret | None = declare(API_TOKEN)
    cors_origins: tuple[str, ...] = option(
        "--cors-origins",
        "ADPULSE_CORS_ORIGINS",
        ("*",),
        parse_list,
        "comma-separated origins allowed to post events from browsers, `*` for any; a "
        "`POST /v1/events` with another `Origin` is answered 403 (requests without `Origin`, "
        "from servers, are allowed)",
    )
    trusted_proxies: tuple[IPNetwork, ...] = option(
        "--trusted-proxies",
        "ADPULSE_TRUSTED_PROXIES",
        (),
        parse_trusted_proxies,
        "comma-separated networks whose `X-Forwarded-For` is believed",
    )
    spool_dir: Path = option(
        "--spool-dir",
        "ADPULSE_SPOOL_DIR",
        Path(".adpulse/spool"),
        Path,
        "the spool: the write-ahead log of accepted events not yet acknowledged by Kafka",
    )
    spool_max_bytes: int = option(
        "--spool-max-bytes",
        "ADPULSE_SPOOL_MAX_BYTES",
        1 << 30,
        parse_spool_size,
        "spool capacity in bytes; when full, event endpoints answer 503",
        shown_default="1 GiB",
    )
    durability: Durability = option(
        "--durability",
        "ADPULSE_DURABILITY",
        Durability.PROCESS,
        parse_durability,
        "when an accepted event counts as kept: `process` (written to the spool's write-ahead "
        "log, in the page cache, before its 2xx: survives a crash of the tracker) or `machine` "
        "(also fsynced: survives a power loss)",
    )
    shutdown_timeout: float = option(
        "--shutdown-timeout",
        "ADPULSE_SHUTDOWN_TIMEOUT",
        15.0,
        parse_positive_float,
        "seconds to flush to Kafka on SIGTERM before spooling the rest",
    )
    kafka_timeout: float = option(
        "--kafka-timeout",
        "ADPULSE_KAFKA_TIMEOUT",
        5.0,
        parse_positive_float,
        "seconds a produce may wait for the broker before its records go to the spool",
    )
    max_connections: int = option(
        "--max-connections",
        "ADPULSE_TRACKER_MAX_CONNECTIONS",
        10_000,
        parse_max_connections,
        "client connections open at once; at the cap a new one takes the place of the "
        "longest-idle keep-alive connection (idle since the last second), or is answered 503 "
        "with `Retry-After` and closed when none is idle; past 90 % of it, idle connections time "
        "out after 5 s instead of 30. The tracker raises its open-files limit to fit, as far as "
        "the hard limit allows, and warns if it cannot",
    )
    max_connections_per_address: int = option(
        "--max-connections-per-address",
        "ADPULSE_TRACKER_MAX_CONNECTIONS_PER_ADDRESS",
        10_000 // ADDRESS_SHARE,
        parse_max_connections,
        "client connections one address (an IPv6 /64) may hold; a new one beyond is answered "
        "429 with `Retry-After` and closed. It counts the connection's peer, so it does not "
        "apply to `--trusted-proxies`: behind a load balancer, limit connections per client "
        "there. Raise it for large offices or carrier NAT behind one address",
        shown_default=f"1/{ADDRESS_SHARE} of --max-connections",
    )
    event_rules: EventRules = field(
        default_factory=lambda: EventRules(known_channels=known_channels(DEFAULT_CHANNEL_RULES))
    )
    channel_rules: ChannelRules = option(
        "--channel-rules",
        "ADPULSE_CHANNEL_RULES",
        DEFAULT_CHANNEL_RULES,
        parse_channel_rules,
        "channel grouping rules replacing the built-in ones: "
        "`channel: medium=RE; source=RE; click_id=gclid|msclkid`, one rule per line; "
        "`defaults` inserts the built-in rules",
        shown_default="built-in",
    )
    redirect_policy: RedirectPolicy = field(default_factory=RedirectPolicy)
    # Tracked phone numbers and calls (issue 14).
    redis_url: str | None = option(
        "--redis-url",
        "ADPULSE_TRACKER_REDIS_URL",
        None,
        parse_store_url,
        "the Redis of the phone-number registry and leases (`adpulse numbers`; usually the "
        "KPI store's `ADPULSE_REDIS_URL`, `redis+cluster://host:port` for a Redis Cluster); "
        "without it `GET /v1/number` answers 204 and calls count as `unattributed`",
    )
    number_lease: float = option(
        "--number-lease",
        "ADPULSE_NUMBER_LEASE",
        1800.0,
        parse_lease,
        "seconds a pooled number stays leased to a visitor, renewed while the visitor's pages "
        "ask again; a call within it counts for the visit's channel, campaign and click",
        shown_default="1800 (30 minutes)",
    )
    call_qualified_seconds: int = option(
        "--call-qualified-seconds",
        "ADPULSE_CALL_QUALIFIED_SECONDS",
        60,
        parse_qualified_seconds,
        "an answered call at least this long is a lead (the same caller within a day is one)",
    )
    hash_key: Secret | None = declare(HASH_KEY)
    click_key: Secret | None = declare(CLICK_KEY)
    phone_region: str | None = declare(PHONE_REGION)
    log_level: str = declare(LOG_LEVEL)

    @property
    def rejected_topic(self) -> str:
        return f"{self.topic}.rejected"


# Settings that `settings_from` combines into `event_rules` and `redirect_policy`.
FX_RATES = Setting(
    "--fx-rates",
    "ADPULSE_FX_RATES",
    None,
    parse_fx_rates,
    "exchange rates into the reporting currency, e.g. `EUR=1.08,GBP=1.27` (reporting units "
    "per unit); events in other currencies are refused",
    name="fx_rates",
)
STATUS_MAP = Setting(
    "--status-map",
    "ADPULSE_STATUS_MAP",
    NO_CODES,
    parse_status_map,
    "numeric order status codes of an affiliate network, e.g. "
    "`1=approved,2=pending,3=declined,5=pending`; a conversion's `status` may be a code or a "
    "name (approved, pending, declined, refunded)",
    shown_default="none",
    name="status_codes",
)
CHANNELS = Setting(
    "--channels",
    "ADPULSE_CHANNELS",
    (),
    parse_channel_list,
    "comma-separated channels clients may name besides the built-in ones and the rules' (at "
    "most 1000); others count as `unlisted` unless sent with the API token",
    name="channels",
)
REDIRECT_HOSTS = Setting(
    "--redirect-hosts",
    "ADPULSE_REDIRECT_HOSTS",
    (),
    parse_list,
    "comma-separated hosts click redirects may go to; `*.example.com` allows subdomains",
    name="redirect_hosts",
)
REDIRECT_SECRET: Setting[Secret | None] = Setting(
    None,
    "ADPULSE_REDIRECT_SECRET",
    None,
    Secret,
    "HMAC key for signed redirect links: `sig=hex(HMAC-SHA256(secret, to))`",
    secret=True,
    name="redirect_secret",
)
SETTINGS: tuple[Setting[Any], ...] = (
    *declarations(TrackerSettings),
    CURRENCY,
    FX_RATES,
    STATUS_MAP,
    CHANNELS,
    REDIRECT_HOSTS,
    REDIRECT_SECRET,
)
"""Every setting of `adpulse tracker`, in the order of --help and the README."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_arguments(parser, SETTINGS)


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> TrackerSettings:
    """The tracker's settings: each flag, else its ADPULSE_* variable, else the default."""
    values = resolve_all(args, env, SETTINGS)
    currency: str = values.pop("currency")
    rates: dict[str, Decimal] = values.pop("fx_rates") or {}
    status_codes: Mapping[str, str] = values.pop("status_codes")
    hash_key: Secret | None = values["hash_key"]
    listed: tuple[str, ...] = values.pop("channels")
    hosts: tuple[str, ...] = values.pop("redirect_hosts")
    redirect_secret: Secret | None = values.pop("redirect_secret")
    channel_rules = values["channel_rules"]
    try:
        event_rules = EventRules(
            reporting_currency=currency,
            fx_rates=rates,
            status_codes=status_codes,
            hash_key=hash_key.reveal().encode() if hash_key else None,
            known_channels=known_channels(channel_rules, listed),
        )
    except ValueError as error:
        raise SettingError("ADPULSE_CURRENCY", currency, str(error)) from error
    per_address = declared(TrackerSettings, "max_connections_per_address")
    if not is_given(args, env, per_address):
        values[per_address.name] = max(1, values["max_connections"] // ADDRESS_SHARE)
    return TrackerSettings(
        **values,
        event_rules=event_rules,
        redirect_policy=RedirectPolicy(
            hosts=frozenset(host.lower().rstrip(".") for host in hosts),
            secret=redirect_secret.reveal().encode() if redirect_secret else None,
        ),
    )
