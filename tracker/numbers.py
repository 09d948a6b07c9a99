"""The tracker's side of tracked phone numbers: leases for visitors, attribution of calls.

The registry and the leases are in Redis (layout in `adpulse.core.phone`; on a Redis Cluster,
``redis+cluster://``, all under one hash tag); the tracker talks to it only when `--redis-url`
is set. Every call here is one round trip with a short timeout, and fails with
`NumbersUnavailable` rather than hang a visitor's page or a webhook: the clients retry nothing,
and the timeout bounds the whole call (a cluster client's topology refresh included).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from adpulse.core.options import cluster_node_url
from adpulse.core.phone import LEASE_GRACE_MS, LEASE_SCRIPT, POOL, NumberEntry, NumberKeys

log = logging.getLogger(__name__)

T = TypeVar("T")

# A visitor's page waits for the number; a Redis that does not answer within this is down.
REDIS_TIMEOUT_SECONDS: Final = 1.0
# A cluster whose client finds no node for the slot fails outside RedisError; a call over its
# timeout is TimeoutError, an OSError.
_UNAVAILABLE: Final = (RedisError, RedisClusterException, OSError)


def _no_retry() -> Retry:
    """A client's retries would multiply the timeout a visitor waits (each attempt has its own
    socket timeout, a cluster's refreshes the topology in between): one attempt only."""
    return Retry(NoBackoff(), 0)


class NumbersUnavailable(Exception):
    """Redis did not answer a number lease or a call's attribution."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Lease:
    """A number shown to a visitor; `how` is one of the script's answers (see LEASE_SCRIPT)."""

    number: str
    how: str


@dataclass(frozen=True, slots=True)
class CallSource:
    """Whom a call counts for: `source` is lease, pool, static or unknown (tracker.metrics)."""

    channel: str | None
    campaign: str | None
    click_id: str | None
    source: str


UNKNOWN: Final = CallSource(None, None, None, "unknown")


class NumberDesk:
    """Leases and call attribution over one Redis client (`from_url`), or a Redis Cluster's
    with `NumberKeys.in_cluster()` (every key in one slot)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        lease_seconds: float,
        keys: NumberKeys | None = None,
    ) -> None:
        self.client = client
        self.keys = keys or NumberKeys()
        self.lease_ms = int(lease_seconds * 1000)
        self._lease = client.register_script(LEASE_SCRIPT)
        # The script builds its keys from the prefix; the one it is given routes a cluster's
        # call to their slot (one instance ignores it).
        self._routing = [self.keys.registry]

    @classmethod
    def from_url(cls, url: str, *, lease_seconds: float) -> NumberDesk:
        """A desk on the Redis at `url`: ``redis+cluster://`` (`parse_store_url`) is a Redis
        Cluster, whose keys carry the numbers' hash tag (`adpulse.core.phone`)."""
        node = cluster_node_url(url)
        if node is not None:
            cluster = RedisCluster.from_url(
                node,
                decode_responses=True,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                retry=_no_retry(),
            )
            return cls(cluster, lease_seconds=lease_seconds, keys=NumberKeys.in_cluster())
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=_no_retry(),
        )
        return cls(client, lease_seconds=lease_seconds)

    async def lease(self, channel: str, campaign: str, visitor: str, now_ms: int) -> Lease | None:
        """The number for `visitor` (a click id, "" for none) of `channel`: the one it holds,
        else the pool's least recently leased, else the static number; None if there is none."""
        answer = await self._bounded(
            "number lease",
            self._lease(
                keys=self._routing,
                args=[
                    self.keys.prefix,
                    channel,
                    campaign,
                    visitor,
                    now_ms,
                    self.lease_ms,
                    LEASE_GRACE_MS,
                ],
            ),
        )
        if not answer:
            return None
        return Lease(str(answer[0]), str(answer[1]))

    async def attribute(self, number: str, started_ms: int) -> CallSource:
        """Whom a call to `number` that started at `started_ms` counts for: the lease held then,
        else the number's pool channel or static registration, else nobody (`UNKNOWN`)."""
        lease, registered = await self._bounded("call attribution", self._read_number(number))
        if lease and int(lease.get("since", 0)) <= started_ms <= int(lease.get("until", 0)):
            return CallSource(
                lease.get("channel") or None,
                lease.get("campaign") or None,
                lease.get("visitor") or None,
                "lease",
            )
        if registered is None:
            return UNKNOWN
        entry = NumberEntry.decode(number, registered)
        if entry.kind == POOL:
            return CallSource(entry.channel, None, None, "pool")
        return CallSource(entry.channel, entry.campaign or None, None, "static")

    async def _read_number(self, number: str) -> list[Any]:
        """The lease of `number` and its registry entry, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.lease(number))
            pipe.hget(self.keys.registry, number)
            return await pipe.execute()

    @staticmethod
    async def _bounded(what: str, call: Awaitable[T]) -> T:
        """`call`'s answer within `REDIS_TIMEOUT_SECONDS` all told, else NumbersUnavailable."""
        try:
            return await asyncio.wait_for(call, REDIS_TIMEOUT_SECONDS)
        except TimeoutError as error:
            raise NumbersUnavailable(
                f"{what} failed: no answer within {REDIS_TIMEOUT_SECONDS:g}s"
            ) from error
        except _UNAVAILABLE as error:
            raise NumbersUnavailable(f"{what} failed: {error}") from error

    async def close(self) -> None:
        await self.client.aclose()
