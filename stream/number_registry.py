"""The tracked phone numbers in Redis: what `adpulse numbers` and `adpulse rebuild` write.

The layout is `adpulse.core.phone`'s (the tracker reads it); this module writes the registry
side of it (the registry hash, the static slots and the pools), never the leases, which are the
tracker's. Here, not in the command, because the rebuild restores the numbers from the registry
topic (`stream.registry`) with the same writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from adpulse.core.phone import POOL, NumberEntry, NumberKeys, static_field

if TYPE_CHECKING:
    import redis.asyncio as redis
    from redis.asyncio.cluster import RedisCluster


class NumberRegistry:
    """The registry's writes, each a MULTI/EXEC so the tracker never sees half of one.

    `client` must decode responses (as `KpiStore.from_url`'s does). On a Redis Cluster `keys`
    must be `NumberKeys.in_cluster()`'s, whose keys share one slot: the MULTI/EXEC needs it.
    """

    def __init__(self, client: redis.Redis | RedisCluster, keys: NumberKeys | None = None) -> None:
        self.client = client
        self.keys = keys or NumberKeys()

    async def entries(self) -> list[NumberEntry]:
        found = await self.client.hgetall(self.keys.registry)
        # The client decodes responses: str, whatever redis-py's types allow.
        return [
            NumberEntry.decode(str(number), str(text)) for number, text in sorted(found.items())
        ]

    async def register(self, entries: Sequence[NumberEntry]) -> dict[str, NumberEntry]:
        """Write `entries`; returns the earlier entry of each number that had one.

        An entry registered already as it is stays untouched: a pooled number keeps its lease
        (a rebuild re-registers every number while visitors hold some).
        """
        keys = self.keys
        numbers = [new.number for new in entries]
        wanted = {new.number: new for new in entries}
        before = await self.client.hmget(keys.registry, numbers) if numbers else []
        moved = {
            number: NumberEntry.decode(number, str(text))
            for number, text in zip(numbers, before, strict=True)
            if text is not None
        }
        async with self.client.pipeline(transaction=True) as pipe:
            for old in moved.values():
                if old != wanted[old.number]:
                    self._unlink(pipe, old)
            for new in entries:
                pipe.hset(keys.registry, new.number, new.encode())
                if new.kind == POOL:
                    # Never leased yet: first in line for the next visitor.
                    pipe.zadd(keys.pool(new.channel), {new.number: 0}, nx=True)
                else:
                    pipe.hset(keys.static, static_field(new.channel, new.campaign), new.number)
            await pipe.execute()
        return moved

    async def remove(self, number: str) -> bool:
        text = await self.client.hget(self.keys.registry, number)
        if text is None:
            return False
        async with self.client.pipeline(transaction=True) as pipe:
            self._unlink(pipe, NumberEntry.decode(number, str(text)))
            pipe.hdel(self.keys.registry, number)
            await pipe.execute()
        return True

    def _unlink(self, pipe: Any, old: NumberEntry) -> None:
        """Take `old` out of its pool or its static slot (its lease record stays, so a call
        that started within it still counts for that visit)."""
        if old.kind == POOL:
            pipe.zrem(self.keys.pool(old.channel), old.number)
        else:
            # Only if the slot still names this number (a later add may have taken it).
            pipe.eval(
                "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then "
                "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0",
                1,
                self.keys.static,
                static_field(old.channel, old.campaign),
                old.number,
            )
