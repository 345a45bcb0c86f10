"""The Redis backend: a hash per session, compare-and-set through Lua, a per-user index."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import RedisError, ResponseError

from sessionflow import _redis_layout as layout
from sessionflow._async.redis_nodes import (
    cluster_primaries,
    estimate_keys,
    keys_in_open_slots,
    pass_again,
    watch_source,
)
from sessionflow._coalescing import AsyncReadCoalescer
from sessionflow._errors import (
    BackendError,
    CorruptRecord,
    SessionExists,
    SessionflowError,
    SessionNotFound,
    VersionConflict,
)
from sessionflow._ids import key_hint
from sessionflow._record import SessionRecord
from sessionflow._redis_failures import failure_reason, leaked_by_redis_py, redis_failures
from sessionflow._scan import GuardedResult, GuardedWrite, ScanPage, check_scan, in_share

if TYPE_CHECKING:
    from redis.asyncio import Redis as AsyncRedis

logger = logging.getLogger(__name__)


def _translated(exc: BaseException, key: str) -> SessionflowError:
    """Return sessionflow's error for a redis-py one: a wrong-typed key is a corrupt record."""
    if isinstance(exc, ResponseError):
        if "WRONGTYPE" in str(exc):
            return CorruptRecord(key_hint(key), "the Redis key is not a session hash")
        return BackendError(f"Redis refused a command: {exc}")
    return BackendError(f"Redis failed: {failure_reason(exc)}")


class _redis_errors(redis_failures):  # noqa: N801 - used like a function
    """Turn redis-py errors into sessionflow's: wrong-typed keys are corrupt records."""

    __slots__ = ()

    def translated(self, exc: BaseException) -> SessionflowError:
        """See `redis_failures.translated`; `what` is the session's key."""
        return _translated(exc, self.what)


class AsyncRedisBackend:
    """Stores sessions in Redis through a ready redis-py client.

    Works unchanged on a standalone server, a Sentinel-managed master
    (``Sentinel.master_for(...)``) and a Cluster (``RedisCluster``): every script touches
    one session key, and the key's hash tag pins it to one slot.

    Args:
        client: a redis-py client created with ``decode_responses=False`` (attribute values
            are bytes).
        prefix: the prefix of every key this backend writes.
        auto_pipeline: coalesce concurrent `get` calls of the event loop into one round
            trip (async flavour only): over one multiplexed connection on a standalone
            server (TCP, TLS or a Unix socket), through redis-py's pipelines on Sentinel
            and Cluster. Close the backend (`aclose`) before the client to close that
            connection.
    """

    def __init__(
        self,
        client: AsyncRedis | AsyncRedisCluster,
        *,
        prefix: str = "sf",
        auto_pipeline: bool = False,
    ) -> None:
        layout.check_client(client, prefix)
        self._client = client
        self._prefix = prefix
        self._key_start = f"{prefix}:{{"
        self._create = client.register_script(layout.CREATE_SCRIPT)
        self._save = client.register_script(layout.SAVE_SCRIPT)
        self._touch = client.register_script(layout.TOUCH_SCRIPT)
        self._delete = client.register_script(layout.DELETE_SCRIPT)
        self._put_guarded = client.register_script(layout.PUT_GUARDED_SCRIPT)
        self._evict = client.register_script(layout.EVICT_SCRIPT)
        self.coalescer = AsyncReadCoalescer(client) if auto_pipeline else None

    async def aclose(self) -> None:
        """Close the auto-pipelining connection, if any; the client stays open (it is yours)."""
        if self.coalescer is not None:
            await self.coalescer.aclose()

    @property
    def client(self) -> AsyncRedis | AsyncRedisCluster:
        """The redis-py client this backend uses."""
        return self._client

    def redis_key(self, key: str) -> str:
        """Return the Redis key that holds the session with storage key `key`."""
        return self._key_start + key + "}"

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`; the user index is written first: no session is unindexed."""
        redis_key = self.redis_key(record.key)
        with _redis_errors(record.key):
            if record.user_id is not None:
                await self._index(record)
            args: list[layout.ScriptArg] = [
                layout.expire_at_ms(record.expires_at),
                *layout.metadata_fields(record),
                *layout.attribute_fields(record.attributes, record.attributes),
            ]
            created = await self._create(keys=[redis_key], args=args)
        if not created:
            raise SessionExists("a record with this key exists")

    async def _index(self, record: SessionRecord) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            self._queue_index(pipe, record)
            await pipe.execute()

    def _queue_index(self, pipe: Any, record: SessionRecord) -> int:  # noqa: ANN401 - a pipeline
        """Queue the user index update of `record` on `pipe`; return the commands queued."""
        assert record.user_id is not None  # noqa: S101 - callers check
        index = layout.user_index_key(self._prefix, record.user_id)
        pipe.zadd(index, {record.key: record.created_at})
        # The index lives as long as its longest-lived session, and no longer.
        pipe.pexpireat(index, layout.expire_at_ms(record.absolute_expires_at), gt=True)
        pipe.pexpireat(index, layout.expire_at_ms(record.absolute_expires_at), nx=True)
        return 3

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`."""
        # The hottest path: errors are translated inline rather than through a context.
        try:
            if self.coalescer is None:
                reply = await self._client.hgetall(self.redis_key(key))
            else:
                reply = await self.coalescer.hgetall(self.redis_key(key))
            fields = cast("dict[bytes, bytes]", reply)
        except RedisError as exc:
            raise _translated(exc, key) from exc
        except (AttributeError, TypeError) as exc:
            if leaked_by_redis_py(exc):
                raise _translated(exc, key) from exc
            raise
        if not fields:
            return None
        return layout.parse_hash(key, fields)

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`: one pipelined round trip (per node on a Cluster)."""
        if not keys:
            return []
        with _redis_errors(keys[0]):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(self.redis_key(key))
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        results: list[SessionRecord | CorruptRecord | None] = []
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, Exception):
                error = _translated(reply, key)
                if not isinstance(error, CorruptRecord):
                    raise error from reply
                results.append(error)
            elif not reply:
                results.append(None)
            else:
                try:
                    results.append(layout.parse_hash(key, reply))
                except CorruptRecord as exc:
                    results.append(exc)
        return results

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],
        removed: Collection[str],
    ) -> None:
        """See `AsyncBackend.save`: writes the metadata and only the changed attributes."""
        pairs = [
            *layout.metadata_fields(record),
            *layout.attribute_fields(record.attributes, changed),
        ]
        args: list[layout.ScriptArg] = [
            str(expected_version),
            layout.expire_at_ms(record.expires_at),
            len(pairs),
            *pairs,
            *(layout.attribute_field(name) for name in removed),
        ]
        with _redis_errors(record.key):
            reply = await self._save(keys=[self.redis_key(record.key)], args=args)
        code = int(reply[0])
        if code == 1:
            return
        if code == 0:
            raise SessionNotFound("session not found or deleted")
        if code == -1:
            raise VersionConflict(
                "session changed since it was read", current_version=int(reply[1])
            )
        raise CorruptRecord(key_hint(record.key), "session hash has no version field")

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """See `AsyncBackend.touch`."""
        args: list[layout.ScriptArg] = [
            repr(last_access),
            repr(idle_expires_at),
            layout.expire_at_ms(idle_expires_at),
        ]
        with _redis_errors(key):
            touched = await self._touch(keys=[self.redis_key(key)], args=args)
        return bool(touched)

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`."""
        args: list[layout.ScriptArg] = [
            layout.expire_at_ms(tombstone_expires_at),
            "" if expected_version is None else str(expected_version),
            repr(tombstone_expires_at),
        ]
        with _redis_errors(key):
            reply = await self._delete(keys=[self.redis_key(key)], args=args)
        code = int(reply[0])
        if code == -1:
            raise VersionConflict(
                "session changed since it was read", current_version=int(reply[1])
            )
        if code == -2:  # noqa: PLR2004
            raise CorruptRecord(key_hint(key), "the Redis key is not a session hash; left as is")
        if code != 1:
            return None
        try:
            old = layout.parse_hash(key, layout.pairs_to_mapping(reply[1]))
        except CorruptRecord:
            return None
        if old.user_id is not None:
            await self.forget_user_keys(old.user_id, [key])
        return old

    async def user_keys(self, user_id: str) -> list[str]:
        """See `AsyncBackend.user_keys`."""
        index = layout.user_index_key(self._prefix, user_id)
        with _redis_errors(index):
            members = cast("list[bytes]", await self._client.zrange(index, 0, -1))
        return [member.decode() for member in members]

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """See `AsyncBackend.forget_user_keys`."""
        if not keys:
            return
        index = layout.user_index_key(self._prefix, user_id)
        with _redis_errors(index):
            await self._client.zrem(index, *keys)

    async def scan(
        self,
        cursor: str | None = None,
        *,
        count: int = 500,
        worker: int = 0,
        workers: int = 1,
    ) -> ScanPage:
        """See `AsyncBackend.scan`: SCAN node by node (each primary of a Cluster in turn).

        The cursor records the node and its SCAN cursor. Every worker walks all keys and
        reads only its share; the records themselves are fetched in one pipeline a page.
        A pass during which the server restarted or failed over (a SCAN cursor is only good
        on the instance that gave it), or a Cluster's slots moved (keys may have gone to a
        node already scanned), is followed by another, until one runs from start to end
        on an unchanged source; such a pass ends with the keys of the slots still
        migrating, read from both their nodes.
        """
        check_scan(count, worker, workers)
        position: dict[str, Any] = (
            {"node": 0, "cursor": 0} if cursor is None else json.loads(cursor)
        )
        node_index, node_cursor = int(position["node"]), int(position["cursor"])
        pattern = f"{self._prefix}:{{*"
        with _redis_errors(pattern):
            await watch_source(self._client, position, first_page=cursor is None)
            if isinstance(self._client, AsyncRedisCluster):
                nodes = await cluster_primaries(self._client)
                if node_index >= len(nodes):  # the cluster shrank since the checkpoint
                    return await self._after_pass([], position, worker, workers)
                cluster: Any = self._client  # the sync client's methods are untyped
                cursors, names = await cluster.execute_command(
                    "SCAN", node_cursor, "MATCH", pattern, "COUNT", count,
                    target_nodes=nodes[node_index],
                )  # fmt: skip
                next_cursor, node_count = int(next(iter(cursors.values()))), len(nodes)
            else:
                next_cursor, names = await self._client.scan(
                    node_cursor, match=pattern, count=count
                )
                node_count = 1
        records = await self._records_named(names, worker, workers)
        if next_cursor == 0:
            node_index, next_cursor = node_index + 1, 0
        if node_index >= node_count:
            return await self._after_pass(records, position, worker, workers)
        return ScanPage(
            records, json.dumps({**position, "node": node_index, "cursor": next_cursor})
        )

    async def _records_named(
        self, names: list[bytes], worker: int, workers: int
    ) -> list[SessionRecord | CorruptRecord]:
        """Read the sessions stored under these Redis names that are this worker's share."""
        keys = [layout.key_from_redis_key(name) for name in names]
        keys = [key for key in keys if in_share(key, worker, workers)]
        return [r for r in await self.get_many(keys) if r is not None]

    async def _after_pass(
        self,
        records: list[SessionRecord | CorruptRecord],
        position: dict[str, Any],
        worker: int,
        workers: int,
    ) -> ScanPage:
        """End the scan, or start another pass if the source changed during this one.

        A pass that held ends with the sessions of the slots migrating now, read from
        both their nodes: SCAN may have missed the ones that moved during the pass.
        """
        again = pass_again(position)
        if again is not None:
            return ScanPage(records, json.dumps({**again, "node": 0, "cursor": 0}))
        if position.get("open"):
            prefix = f"{self._prefix}:{{".encode()
            with _redis_errors("getkeysinslot"):
                names = await keys_in_open_slots(self._client, position["open"])
            named = [name for name in names if name.startswith(prefix)]
            records = records + await self._records_named(named, worker, workers)
        return ScanPage(records, None)

    async def approximate_count(self) -> int:
        """Estimate the records a scan finds (tombstones too), for progress bars.

        Sampled, not counted (`estimate_keys`): within a few percent when sessions are a
        fair share of the database, looser when they are a small part of it.
        """
        with _redis_errors("dbsize"):
            return await estimate_keys(self._client, f"{self._prefix}:{{".encode())

    async def evict(self, key: str, *, version: int, last_access: float) -> bool:
        """See `AsyncEvictable.evict`: a Lua check of version and last access, then DEL."""
        with _redis_errors(key):
            evicted = await self._evict(
                keys=[self.redis_key(key)], args=[version, repr(float(last_access))]
            )
        return bool(evicted)

    async def instance(self) -> str:
        """See `AsyncEvictable.instance`: the run id (on a cluster, every master's)."""
        with _redis_errors("info"):
            if isinstance(self._client, AsyncRedisCluster):
                cluster: Any = self._client
                per_node = await cluster.info("server", target_nodes=AsyncRedisCluster.PRIMARIES)
                return ",".join(sorted(str(node["run_id"]) for node in per_node.values()))
            info = await self._client.info("server")
        return str(info["run_id"])

    async def memory_usage(self, keys: Sequence[str]) -> list[int]:
        """Bytes Redis holds for each of these sessions (``MEMORY USAGE``; 0 if absent).

        For sizing: the key, its value and their allocation overhead, not the indexes.
        """
        with _redis_errors("memory usage"):
            return [int(await self._client.memory_usage(self.redis_key(key)) or 0) for key in keys]

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`: every record's compare-and-set in one pipeline.

        One round trip for the batch (one per node on a Cluster); a key's commands run in
        their order. A record whose command Redis refused gets its error in its place.
        """
        if not records:
            return []
        counts: list[int] = []
        with _redis_errors("a guarded batch"):
            async with self._client.pipeline(transaction=False) as pipe:
                for record in records:
                    queued = 0
                    if record.user_id is not None and not record.tombstone:
                        queued = self._queue_index(pipe, record)
                    keys, args = self._put_guarded_call(record)
                    pipe.execute_command("EVAL", layout.PUT_GUARDED_SCRIPT, 1, *keys, *args)
                    counts.append(queued + 1)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        results: list[GuardedResult] = []
        position = 0
        for record, count in zip(records, counts, strict=True):
            mine = replies[position : position + count]
            position += count
            failed = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if failed is not None:
                results.append(_translated(failed, record.key))
            else:
                try:
                    results.append(_guarded_verdict(record, mine[-1]))
                except CorruptRecord as exc:
                    results.append(exc)
        return results

    def _put_guarded_call(self, record: SessionRecord) -> tuple[list[str], list[Any]]:
        """Return the keys and arguments of the guarded-copy script for `record`."""
        return [self.redis_key(record.key)], [
            record.version,
            "1" if record.tombstone else "0",
            layout.expire_at_ms(record.expires_at),
            *layout.record_fields(record),
        ]

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`: a Lua compare-and-set on the version."""
        with _redis_errors(record.key):
            if record.user_id is not None and not record.tombstone:
                await self._index(record)
            keys, args = self._put_guarded_call(record)
            reply = await self._put_guarded(keys=keys, args=args)
        return _guarded_verdict(record, reply)


def _guarded_verdict(record: SessionRecord, reply: Any) -> GuardedWrite:  # noqa: ANN401
    """Read the guarded-copy script's reply; raise `CorruptRecord` for a key not a session."""
    code = int(reply)
    if code == -2:  # noqa: PLR2004
        raise CorruptRecord(key_hint(record.key), "the Redis key is not a session; left as is")
    return (GuardedWrite.WRITTEN, GuardedWrite.NEWER_KEPT, GuardedWrite.TOMBSTONE_KEPT)[code]
