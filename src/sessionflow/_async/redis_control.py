"""The migration's control plane in Redis, shared by every process of a fleet.

Any redis-py client works (standalone, Sentinel master, Cluster): every key of one
migration carries the same hash tag, so the Lua scripts run on one slot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sessionflow._async.control import INITIAL_STAGE, MISMATCH_LOG_LENGTH
from sessionflow._control import ProcessBeat, RepairDepth, RepairItem, StageRecord
from sessionflow._errors import BackendError, ConfigError, StageChanged
from sessionflow._redis_failures import redis_failures
from sessionflow._stages import Stage

_WRITE_STAGE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if current ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'stage', ARGV[2], 'revision', current + 1,
           'changed_at', ARGV[3], 'note', ARGV[4])
return 1
"""

# Only over a readable, older revision: a malformed record is left for an operator to see.
_RESTORE_STAGE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if current ~= nil and current < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'stage', ARGV[2], 'revision', ARGV[1],
             'changed_at', ARGV[3], 'note', ARGV[4])
end
return redis.call('HGETALL', KEYS[1])
"""

_FINISH_REPAIRS = """
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""


class AsyncRedisControlPlane:
    """A control plane in Redis, shared by every process of the fleet.

    Args:
        client: a redis-py client (standalone, Sentinel master or Cluster). It must not
            decode responses.
        migration: the migration's name; several migrations may share one Redis.
        prefix: the key prefix; every key is ``<prefix>:{<migration>}:...``.
    """

    def __init__(self, client: Any, *, migration: str = "sessions", prefix: str = "sfm") -> None:  # noqa: ANN401 - any redis-py client
        if not migration or any(ch in migration for ch in "{}: "):
            raise ConfigError("migration name must be non-empty without braces, colons, spaces")
        self._client = client
        base = f"{prefix}:{{{migration}}}"
        self._stage_key = f"{base}:stage"
        self._beats_key = f"{base}:beats"
        self._repair_key = f"{base}:repair"
        self._mismatch_key = f"{base}:mismatches"
        self._document_prefix = f"{base}:doc:"
        self._write_stage = client.register_script(_WRITE_STAGE)
        self._restore_stage = client.register_script(_RESTORE_STAGE)
        self._finish_repairs = client.register_script(_FINISH_REPAIRS)

    async def read_stage(self) -> StageRecord:
        """See `AsyncControlPlane.read_stage`."""
        with redis_failures("control plane unreachable"):
            raw = await self._client.hgetall(self._stage_key)
        return _stage_record(raw)

    async def write_stage(
        self, stage: Stage, *, expected_revision: int, now: float, note: str = ""
    ) -> StageRecord:
        """See `AsyncControlPlane.write_stage`."""
        with redis_failures("control plane unreachable"):
            written = await self._write_stage(
                keys=[self._stage_key], args=[expected_revision, stage.value, repr(now), note]
            )
        if not written:
            raise StageChanged("the stage changed since it was read")
        return StageRecord(stage, expected_revision + 1, now, note)

    async def restore_stage(self, record: StageRecord) -> StageRecord:
        """See `AsyncControlPlane.restore_stage`."""
        args = [record.revision, record.stage.value, repr(record.changed_at), record.note]
        with redis_failures("control plane unreachable"):
            flat = await self._restore_stage(keys=[self._stage_key], args=args)
        return _stage_record(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def heartbeat(self, process: str, stage: Stage, now: float) -> None:
        """See `AsyncControlPlane.heartbeat`."""
        beat = json.dumps({"stage": stage.value, "seen_at": now})
        with redis_failures("control plane unreachable"):
            await self._client.hset(self._beats_key, process, beat)

    async def processes(self, now: float, max_age: float) -> list[ProcessBeat]:
        """See `AsyncControlPlane.processes`."""
        with redis_failures("control plane unreachable"):
            raw = await self._client.hgetall(self._beats_key)
            beats, stale = [], []
            for name, value in raw.items():
                data = json.loads(value)
                if data["seen_at"] < now - max_age:
                    stale.append(name)
                else:
                    beats.append(ProcessBeat(name.decode(), Stage(data["stage"]), data["seen_at"]))
            if stale:
                await self._client.hdel(self._beats_key, *stale)
        return sorted(beats, key=lambda beat: beat.process)

    async def enqueue_repairs(self, keys: Iterable[str], now: float) -> None:
        """See `AsyncControlPlane.enqueue_repairs`."""
        mapping = dict.fromkeys(keys, now)
        if not mapping:
            return
        with redis_failures("control plane unreachable"):
            await self._client.zadd(self._repair_key, mapping)

    async def repair_batch(self, limit: int) -> list[RepairItem]:
        """See `AsyncControlPlane.repair_batch`."""
        with redis_failures("control plane unreachable"):
            raw = await self._client.zrange(self._repair_key, 0, limit - 1, withscores=True)
        return [RepairItem(key.decode(), float(score)) for key, score in raw]

    async def finish_repairs(self, items: Sequence[RepairItem]) -> None:
        """See `AsyncControlPlane.finish_repairs`."""
        if not items:
            return
        args: list[str] = []
        for item in items:
            args += [item.key, repr(item.since)]
        with redis_failures("control plane unreachable"):
            await self._finish_repairs(keys=[self._repair_key], args=args)

    async def repair_depth(self) -> RepairDepth:
        """See `AsyncControlPlane.repair_depth`."""
        with redis_failures("control plane unreachable"):
            count = await self._client.zcard(self._repair_key)
            oldest = await self._client.zrange(self._repair_key, 0, 0, withscores=True)
        return RepairDepth(int(count), float(oldest[0][1]) if oldest else None)

    async def read_document(self, name: str) -> dict[str, Any] | None:
        """See `AsyncControlPlane.read_document`."""
        with redis_failures("control plane unreachable"):
            raw = await self._client.get(self._document_prefix + name)
        return None if raw is None else cast("dict[str, Any]", json.loads(raw))

    async def write_document(self, name: str, document: dict[str, Any]) -> None:
        """See `AsyncControlPlane.write_document`."""
        with redis_failures("control plane unreachable"):
            await self._client.set(self._document_prefix + name, json.dumps(document))

    async def delete_documents(self, prefix: str) -> None:
        """See `AsyncControlPlane.delete_documents`."""
        pattern = self._document_prefix + prefix + "*"
        with redis_failures("control plane unreachable"):
            names = [name async for name in self._client.scan_iter(match=pattern, count=500)]
            if names:
                await self._client.delete(*names)

    async def record_mismatch(self, entry: dict[str, Any]) -> None:
        """See `AsyncControlPlane.record_mismatch`."""
        with redis_failures("control plane unreachable"):
            await self._client.lpush(self._mismatch_key, json.dumps(entry))
            await self._client.ltrim(self._mismatch_key, 0, MISMATCH_LOG_LENGTH - 1)

    async def mismatches(self, limit: int = 50) -> list[dict[str, Any]]:
        """See `AsyncControlPlane.mismatches`."""
        with redis_failures("control plane unreachable"):
            raw = await self._client.lrange(self._mismatch_key, 0, limit - 1)
        return [json.loads(item) for item in raw]


def _stage_record(raw: dict[bytes, bytes]) -> StageRecord:
    """Parse the stage record's hash; raise `BackendError` if it is not one."""
    if not raw:
        return INITIAL_STAGE
    try:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return StageRecord(
            Stage(fields["stage"]),
            int(fields["revision"]),
            float(fields["changed_at"]),
            fields.get("note", ""),
        )
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise BackendError(f"the control record is malformed: {exc!r}") from exc
