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
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import ResponseError

from sessionflow._async.redis_nodes import (
    cluster_primaries,
    keys_in_open_slots,
    pass_again,
    watch_source,
)
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
from sessionflow._conversation_records import owner_share_key
from sessionflow._errors import BackendError, CorruptRecord, SessionflowError
from sessionflow._redis_failures import redis_failures
from sessionflow._redis_layout import check_client
from sessionflow._scan import GuardedResult, GuardedWrite, check_scan, in_share

DELETE_CHUNK = 500
SCAN_KEYS = 100
"""Owner hashes a scan step asks each node for; a page's cursor carries those still to read."""

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


# KEYS: set, hash. ARGV: opponent, version, time, deleted 0/1, metadata JSON, replaces
# ('' for a guarded copy). Returns the verdict's name, or 'corrupt'.
_PUT_ENTRY = """
local current = redis.call('HGET', KEYS[2], ARGV[1])
local found, dead = 0, '0'
if current then
  local v, d = string.match(current, '^(%d+):[^:]+:([01]):')
  if not v then return 'corrupt' end
  found, dead = tonumber(v), d
end
local version = tonumber(ARGV[2])
if ARGV[6] ~= '' then
  if found ~= tonumber(ARGV[6]) then return 'newer_kept' end
elseif current and found >= version then
  if dead == '1' and ARGV[4] == '0' then return 'tombstone_kept' end
  return 'newer_kept'
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5])
if ARGV[4] == '0' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 'written'
"""


def _redis_errors() -> redis_failures:
    return redis_failures("Redis failed")


class AsyncRedisConversations:
    """See `AsyncConversationBackend`; on a Redis server or Cluster (redis-py client)."""

    def __init__(self, client: Any, *, prefix: str = "sf") -> None:  # noqa: ANN401 - redis-py
        check_client(client, prefix)
        self._client = client
        self._prefix = prefix
        self._record = client.register_script(_RECORD)
        self._delete = client.register_script(_DELETE)
        self._put_entry = client.register_script(_PUT_ENTRY)

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

    async def get_entries(
        self, pairs: Sequence[tuple[str, str]]
    ) -> builtins.list[Conversation | CorruptRecord | None]:
        """See `AsyncMigratableConversations.get_entries`: one pipeline (per node on a Cluster)."""
        if not pairs:
            return []
        with _redis_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for owner, opponent in pairs:
                    pipe.hget(self.keys(owner)[1], opponent)
                replies: builtins.list[Any] = await pipe.execute(raise_on_error=False)
        found: builtins.list[Conversation | CorruptRecord | None] = []
        for (owner, opponent), reply in zip(pairs, replies, strict=True):
            if isinstance(reply, ResponseError):
                found.append(CorruptRecord(f"{owner}/{opponent}", f"wrong type: {reply}"))
            elif isinstance(reply, Exception):
                raise BackendError(f"Redis failed: {reply}") from reply
            elif reply is None:
                found.append(None)
            else:
                found.append(_decoded_or_error(owner, opponent, reply))
        return found

    async def put_entry(self, entry: Conversation, *, replaces: int | None = None) -> GuardedWrite:
        """See `AsyncMigratableConversations.put_entry`: one Lua script on the owner's slot."""
        keys, args = self._put_call(entry, replaces)
        with _redis_errors():
            reply = await self._put_entry(keys=keys, args=args)
        verdict = _verdict(entry, reply)
        if isinstance(verdict, CorruptRecord):
            raise verdict
        return verdict

    async def put_entries(self, entries: Sequence[Conversation]) -> builtins.list[GuardedResult]:
        """See `AsyncMigratableConversations.put_entries`: every script in one pipeline.

        One round trip for the batch (one per node on a Cluster); scripts run in order.
        """
        results: builtins.list[GuardedResult] = []
        calls: builtins.list[tuple[int, tuple[tuple[str, str], builtins.list[Any]]]] = []
        for index, entry in enumerate(entries):
            try:
                calls.append((index, self._put_call(entry, None)))
                results.append(GuardedWrite.WRITTEN)
            except SessionflowError as exc:  # refused before it reached Redis
                results.append(exc)
        if not calls:
            return results
        with _redis_errors():
            async with self._client.pipeline(transaction=False) as pipe:
                for _, (keys, args) in calls:
                    pipe.execute_command("EVAL", _PUT_ENTRY, len(keys), *keys, *args)
                replies: builtins.list[Any] = await pipe.execute(raise_on_error=False)
        for (index, _), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise BackendError(f"Redis failed: {reply}") from reply
            results[index] = _verdict(entries[index], reply)
        return results

    def _put_call(
        self, entry: Conversation, replaces: int | None
    ) -> tuple[tuple[str, str], builtins.list[Any]]:
        """Return the keys and arguments of `_PUT_ENTRY` for `entry`; refuse bad entries."""
        metadata = b"{}" if entry.deleted else encode_metadata(entry.metadata)
        args: builtins.list[Any] = [
            check_id("opponent", entry.opponent),
            str(entry.version),
            repr(check_timestamp(entry.timestamp)),
            "1" if entry.deleted else "0",
            metadata,
            "" if replaces is None else str(replaces),
        ]
        return self.keys(check_id("owner", entry.owner)), args

    async def scan_entries(
        self, cursor: str | None = None, *, count: int = 500, worker: int = 0, workers: int = 1
    ) -> tuple[builtins.list[Conversation | CorruptRecord], str | None]:
        """See `AsyncMigratableConversations.scan_entries`: SCAN for owners, HSCAN each.

        Node by node on a Cluster. An owner's hash is read `count` fields at a time
        (HSCAN), never whole, so an owner with millions of entries costs a page of memory.
        The cursor holds the node, its SCAN cursor, the owners found and not yet read, and
        the HSCAN cursor of the first of them.
        """
        check_scan(count, worker, workers)
        position: dict[str, Any] = (
            {"node": 0, "scan": 0, "pending": [], "field": 0}
            if cursor is None
            else orjson.loads(cursor)
        )
        entries: builtins.list[Conversation | CorruptRecord] = []
        with _redis_errors():
            nodes = await cluster_primaries(self._client)
            await watch_source(self._client, position, first_page=cursor is None)
            node_count = len(nodes) or 1
            while len(entries) < count:
                if position["pending"]:
                    entries += await self._read_owner(position, count - len(entries))
                elif position["node"] < node_count:
                    await self._find_owners(position, nodes, worker, workers)
                elif position["open"] and not (position["disturbed"] or position.get("swept")):
                    # SCAN may have missed owners that moved with a migrating slot
                    names = await keys_in_open_slots(self._client, position["open"])
                    position["pending"] = self._owners(names, worker, workers)
                    position["field"], position["swept"] = 0, True
                else:
                    break
        if position["pending"] or position["node"] < node_count:
            return entries, orjson.dumps(position).decode()
        again = pass_again(position)
        if again is None:
            return entries, None
        return entries, orjson.dumps(
            {**again, "node": 0, "scan": 0, "pending": [], "field": 0}
        ).decode()

    async def _find_owners(
        self, position: dict[str, Any], nodes: builtins.list[Any], worker: int, workers: int
    ) -> None:
        pattern = f"{self._prefix}:conv:{{*}}:data"
        if nodes:
            cluster: Any = self._client  # the sync client's methods are untyped
            cursors, names = await cluster.execute_command(
                "SCAN", position["scan"], "MATCH", pattern, "COUNT", SCAN_KEYS,
                target_nodes=nodes[position["node"]],
            )  # fmt: skip
            following = int(next(iter(cursors.values())))
        else:
            following, names = await self._client.scan(
                position["scan"], match=pattern, count=SCAN_KEYS
            )
        position["pending"] = self._owners(names, worker, workers)
        position["field"] = 0
        if int(following) == 0:
            position["node"], position["scan"] = position["node"] + 1, 0
        else:
            position["scan"] = int(following)

    def _owners(self, names: builtins.list[bytes], worker: int, workers: int) -> builtins.list[str]:
        """Return the owners whose entry hashes these Redis names are (this worker's, sorted)."""
        head, tail = f"{self._prefix}:conv:{{".encode(), b"}:data"
        owners = [
            name[len(head) : -len(tail)].decode()
            for name in names
            if name.startswith(head) and name.endswith(tail)
        ]
        return sorted(
            owner for owner in owners if in_share(owner_share_key(owner), worker, workers)
        )

    async def _read_owner(
        self, position: dict[str, Any], count: int
    ) -> builtins.list[Conversation | CorruptRecord]:
        owner = position["pending"][0]
        try:
            following, fields = await self._client.hscan(
                self.keys(owner)[1], position["field"], count=count
            )
        except ResponseError as exc:  # not a hash: the whole key is one bad record
            position["pending"].pop(0)
            return [CorruptRecord(owner, f"wrong type: {exc}")]
        if int(following) == 0:
            position["pending"].pop(0)
            position["field"] = 0
        else:
            position["field"] = int(following)
        return [
            _decoded_or_error(owner, opponent.decode(errors="replace"), raw)
            for opponent, raw in fields.items()
        ]


def _verdict(entry: Conversation, reply: bytes) -> GuardedWrite | CorruptRecord:
    if reply == b"corrupt":
        return CorruptRecord(f"{entry.owner}/{entry.opponent}", "not a conversation entry")
    return GuardedWrite(reply.decode())


def _decoded_or_error(owner: str, opponent: str, raw: bytes) -> Conversation | CorruptRecord:
    try:
        return _decode(owner, opponent, raw)
    except CorruptRecord as exc:
        return exc


def _decode(owner: str, opponent: str, raw: bytes) -> Conversation:
    try:
        version, when, deleted, metadata = raw.split(b":", 3)
        if deleted == b"0":
            return Conversation(owner, opponent, float(when), int(version), orjson.loads(metadata))
        return Conversation(owner, opponent, float(when), int(version), {}, deleted=True)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptRecord(f"{owner}/{opponent}", "not a conversation entry") from exc
