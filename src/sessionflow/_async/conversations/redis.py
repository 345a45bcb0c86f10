"""Conversation lists in Redis: a sorted set per owner scored by time, entries in a hash.

Keys (one hash tag per owner, so both land on one Cluster slot):

- ``{prefix}:conv:{<owner>}``: sorted set, member opponent, score the last message time;
  live entries only.
- ``{prefix}:conv:{<owner>}:data``: hash, field opponent, value
  ``<version>:<timestamp>:<deleted 0/1>:<metadata JSON>``; tombstones stay here.

Writes are Lua scripts, atomic per owner.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
from redis.exceptions import RedisError

from sessionflow._conversation import (
    DEFAULT_PAGE,
    Conversation,
    ConversationPage,
    check_id,
    check_limit,
    check_timestamp,
    decode_cursor,
    encode_cursor,
    encode_metadata,
)
from sessionflow._errors import BackendError, CorruptRecord
from sessionflow._redis_layout import check_client

DELETE_CHUNK = 500

# KEYS: set, hash. ARGV: opponent, metadata JSON, timestamp. Returns {version, timestamp}.
_RECORD = """
local current = redis.call('HGET', KEYS[2], ARGV[1])
local version, when = 1, ARGV[3]
if current then
  local v, t = string.match(current, '^(%d+):([^:]+):')
  version = tonumber(v) + 1
  if tonumber(t) > tonumber(when) then when = t end
end
redis.call('HSET', KEYS[2], ARGV[1], version .. ':' .. when .. ':0:' .. ARGV[2])
redis.call('ZADD', KEYS[1], when, ARGV[1])
return {version, when}
"""

# KEYS: set, hash. ARGV: opponents. Returns how many live entries became tombstones.
_DELETE = """
local deleted = 0
for i, opponent in ipairs(ARGV) do
  local current = redis.call('HGET', KEYS[2], opponent)
  if current then
    local v, t, d = string.match(current, '^(%d+):([^:]+):(%d):')
    if d == '0' then
      redis.call('HSET', KEYS[2], opponent, (tonumber(v) + 1) .. ':' .. t .. ':1:{}')
      deleted = deleted + 1
    end
  end
  redis.call('ZREM', KEYS[1], opponent)
end
return deleted
"""


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise BackendError(f"Redis failed: {exc}") from exc


class AsyncRedisConversations:
    """See `AsyncConversationBackend`; on a Redis server or Cluster (redis-py client)."""

    def __init__(self, client: Any, *, prefix: str = "sf") -> None:  # noqa: ANN401 - redis-py
        check_client(client, prefix)
        self._client = client
        self._prefix = prefix
        self._record = client.register_script(_RECORD)
        self._delete = client.register_script(_DELETE)

    def keys(self, owner: str) -> tuple[str, str]:
        """Return the sorted set and the hash that hold `owner`'s entries."""
        base = f"{self._prefix}:conv:{{{owner}}}"
        return base, base + ":data"

    async def record(
        self, owner: str, opponent: str, metadata: Mapping[str, Any], timestamp: float
    ) -> Conversation:
        """See `AsyncConversationBackend.record`."""
        encoded = encode_metadata(metadata)
        args = [check_id("opponent", opponent), encoded, repr(check_timestamp(timestamp))]
        with _redis_errors():
            version, when = await self._record(keys=self.keys(check_id("owner", owner)), args=args)
        return Conversation(owner, opponent, float(when), int(version), orjson.loads(encoded))

    async def get(
        self, owner: str, opponent: str, *, include_deleted: bool = False
    ) -> Conversation | None:
        """See `AsyncConversationBackend.get`."""
        _, data = self.keys(check_id("owner", owner))
        with _redis_errors():
            raw = await self._client.hget(data, check_id("opponent", opponent))
        if raw is None:
            return None
        entry = _decode(owner, opponent, raw)
        return None if entry.deleted and not include_deleted else entry

    async def list(
        self, owner: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """See `AsyncConversationBackend.list`: a score range, then the entries' data.

        Members with the same time come in reverse byte order; a cursor remembers the last
        (time, opponent) returned, so ties split across pages are neither lost nor repeated.
        Scores are not fetched: an entry's time is in its data, as written with its score.
        """
        check_limit(limit)
        ranked, data = self.keys(check_id("owner", owner))
        with _redis_errors():
            if cursor is None:
                found = await self._client.zrange(
                    ranked, "+inf", "-inf", byscore=True, desc=True, offset=0, num=limit + 1
                )
            else:
                found = await self._after(ranked, cursor, limit + 1)
            page = found[:limit]
            values = await self._client.hmget(data, page) if page else []
        items = [
            _decode(owner, member.decode(), raw)
            for member, raw in zip(page, values, strict=True)
            if raw is not None  # deleted since the range was read
        ]
        next_cursor = None
        if len(found) > limit:
            if items:
                last_time, last = repr(items[-1].timestamp), items[-1].opponent
            else:  # every entry of the page went meanwhile: resume after the last of them
                with _redis_errors():
                    score = await self._client.zscore(ranked, page[-1])
                last_time, last = repr(float(score or 0.0)), page[-1].decode()
            next_cursor = encode_cursor({"t": last_time, "o": last})
        return ConversationPage(items, next_cursor)

    async def _after(self, ranked: str, cursor: str, count: int) -> builtins.list[bytes]:
        position = decode_cursor(cursor, "t", "o")
        score, last = str(position["t"]), str(position["o"]).encode()
        ties = await self._client.zrange(ranked, score, score, byscore=True, desc=True)
        after_ties = [member for member in ties if member < last]
        lower = await self._client.zrange(
            ranked, f"({score}", "-inf", byscore=True, desc=True, offset=0,
            num=max(count - len(after_ties), 1),
        )  # fmt: skip
        found: builtins.list[bytes] = (after_ties + lower)[:count]
        return found

    async def delete(self, owner: str, opponent: str) -> bool:
        """See `AsyncConversationBackend.delete`."""
        keys = self.keys(check_id("owner", owner))
        with _redis_errors():
            return bool(await self._delete(keys=keys, args=[check_id("opponent", opponent)]))

    async def delete_all(self, owner: str) -> int:
        """See `AsyncConversationBackend.delete_all`: `DELETE_CHUNK` entries per script call."""
        keys = self.keys(check_id("owner", owner))
        deleted = 0
        with _redis_errors():
            while True:
                chunk = await self._client.zrange(keys[0], 0, DELETE_CHUNK - 1)
                if not chunk:
                    return deleted
                deleted += int(await self._delete(keys=keys, args=chunk))


def _decode(owner: str, opponent: str, raw: bytes) -> Conversation:
    try:
        version, when, deleted, metadata = raw.split(b":", 3)
        if deleted == b"0":
            return Conversation(owner, opponent, float(when), int(version), orjson.loads(metadata))
        return Conversation(owner, opponent, float(when), int(version), {}, deleted=True)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptRecord(f"{owner}/{opponent}", "not a conversation entry") from exc
