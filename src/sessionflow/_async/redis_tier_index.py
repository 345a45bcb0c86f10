"""The tier indexes as two sorted sets in the hot Redis (see `AsyncTierIndex`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sessionflow._redis_failures import redis_failures

# KEYS[1] index; ARGV[1] member; ARGV[2] score. Removes the member if its score is still
# at most ARGV[2] (a later access or change re-scored it: keep it).
_REMOVE_IF_NOT_NEWER = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


class AsyncRedisTierIndex:
    """The indexes as two sorted sets in the hot Redis: ``<prefix>:tier:access|dirty``.

    Args:
        client: a redis-py client (standalone, Sentinel master or Cluster).
        prefix: the hot backend's key prefix.
    """

    def __init__(self, client: Any, *, prefix: str = "sf") -> None:  # noqa: ANN401 - redis-py
        self._client = client
        self._access_key = f"{prefix}:tier:access"
        self._dirty_key = f"{prefix}:tier:dirty"
        self._remove = client.register_script(_REMOVE_IF_NOT_NEWER)

    async def accessed(self, key: str, last_access: float) -> None:
        """See `AsyncTierIndex.accessed`."""
        with redis_failures("the tier index is unreachable"):
            await self._client.zadd(self._access_key, {key: last_access}, gt=True)

    async def inactive(self, before: float, limit: int) -> list[tuple[str, float]]:
        """See `AsyncTierIndex.inactive`."""
        with redis_failures("the tier index is unreachable"):
            pairs = await self._client.zrangebyscore(
                self._access_key, "-inf", f"({before!r}", start=0, num=limit, withscores=True
            )
        return [(_text(key), float(score)) for key, score in pairs]

    async def forget(self, key: str, last_access: float) -> None:
        """See `AsyncTierIndex.forget`."""
        await self._remove_if_not_newer(self._access_key, key, last_access)

    async def changed(self, key: str, version: int) -> None:
        """See `AsyncTierIndex.changed`."""
        with redis_failures("the tier index is unreachable"):
            await self._client.zadd(self._dirty_key, {key: version}, gt=True)

    async def dirty(self, limit: int) -> list[tuple[str, int]]:
        """See `AsyncTierIndex.dirty`."""
        with redis_failures("the tier index is unreachable"):
            pairs = await self._client.zrange(self._dirty_key, 0, limit - 1, withscores=True)
        return [(_text(key), int(score)) for key, score in pairs]

    async def dirty_versions(self, keys: Sequence[str]) -> list[int | None]:
        """See `AsyncTierIndex.dirty_versions`: one ZMSCORE."""
        if not keys:
            return []
        with redis_failures("the tier index is unreachable"):
            scores = await self._client.zmscore(self._dirty_key, list(keys))
        return [None if score is None else int(score) for score in scores]

    async def flushed(self, key: str, version: int) -> None:
        """See `AsyncTierIndex.flushed`."""
        await self._remove_if_not_newer(self._dirty_key, key, version)

    async def sizes(self) -> tuple[int, int]:
        """See `AsyncTierIndex.sizes`."""
        with redis_failures("the tier index is unreachable"):
            return (
                int(await self._client.zcard(self._access_key)),
                int(await self._client.zcard(self._dirty_key)),
            )

    async def _remove_if_not_newer(self, index: str, key: str, score: float) -> None:
        with redis_failures("the tier index is unreachable"):
            await self._remove(keys=[index], args=[key, repr(float(score))])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
