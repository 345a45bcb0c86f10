"""The stage record lost under a running fleet: a control Redis restarted without persistence.

A process that ran stage `live` must not fall back to `off` because the record vanished:
at `live` the new store is the authority, and an `off` process would read and write the
old store alone, hiding every session written since the cutover. A running process keeps
the stage it ran and writes its record back (only over an older revision), so processes
started afterwards read the right stage too.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from sessionflow import (
    AsyncMemoryBackend,
    AsyncMigratingBackend,
    AsyncRedisBackend,
    AsyncSessionStore,
    BackendError,
    ManualClock,
    Stage,
)
from sessionflow._async.control import AsyncMemoryControlPlane
from sessionflow._async.redis_control import AsyncRedisControlPlane
from sessionflow._control import StageRecord
from sessionflow.local_servers import RedisServer


def _client(server: RedisServer) -> AsyncRedis:
    """A client that resends a command once after a restart closed its connection."""
    return AsyncRedis(
        port=server.port, retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError]
    )


WALK = [Stage.DUALWRITE, Stage.SHADOW, Stage.CUTOVER, Stage.LIVE]


async def _walk_to_live(control: AsyncRedisControlPlane | AsyncMemoryControlPlane) -> None:
    for revision, stage in enumerate(WALK):
        await control.write_stage(stage, expected_revision=revision, now=100.0 + revision)


async def test_a_running_process_keeps_its_stage_and_restores_a_record_lost_in_a_restart() -> None:
    with RedisServer() as server:
        client = _client(server)
        control = AsyncRedisControlPlane(client)
        await _walk_to_live(control)
        clock = ManualClock(start=1_000.0)
        backend = AsyncMigratingBackend(
            AsyncRedisBackend(client), AsyncMemoryBackend(), control, stage_ttl=1, clock=clock
        )
        store = AsyncSessionStore(backend, clock=clock)
        assert await backend.stage() is Stage.LIVE
        session = await store.create({"cart": ["written at live"]})

        server.restart()  # persistence is off: the stage record is gone
        assert (await control.read_stage()).revision == 0
        clock.advance(2)

        assert await backend.stage() is Stage.LIVE
        assert backend.stats.stage_records_restored == 1
        restored = await control.read_stage()
        assert (restored.stage, restored.revision) == (Stage.LIVE, len(WALK))
        read = await store.get(session.id)
        assert read is not None
        assert read["cart"] == ["written at live"]

        started_later = AsyncMigratingBackend(
            AsyncRedisBackend(client), AsyncMemoryBackend(), control, clock=clock
        )
        assert await started_later.stage() is Stage.LIVE
        await client.aclose()


async def test_a_record_is_restored_only_over_an_older_revision() -> None:
    """Restores race: the highest revision any process ran wins, never an older one."""
    with RedisServer() as server:
        client = _client(server)
        control = AsyncRedisControlPlane(client)
        await _walk_to_live(control)
        behind = StageRecord(Stage.CUTOVER, 3, 103.0)
        assert (await control.restore_stage(behind)).revision == len(WALK)
        assert (await control.read_stage()).stage is Stage.LIVE
        await client.delete(*await client.keys("*"))
        assert await control.restore_stage(behind) == behind
        ahead = StageRecord(Stage.LIVE, 4, 104.0)
        assert await control.restore_stage(ahead) == ahead
        assert await control.read_stage() == ahead
        await client.aclose()


async def test_the_memory_control_plane_restores_the_same_way() -> None:
    control = AsyncMemoryControlPlane()
    await _walk_to_live(control)
    assert (await control.restore_stage(StageRecord(Stage.SHADOW, 2, 0.0))).stage is Stage.LIVE
    ahead = StageRecord(Stage.RAMPDOWN, 9, 9.0)
    assert await control.restore_stage(ahead) == ahead


@pytest.mark.parametrize(
    "fields",
    [
        {"stage": "sideways", "revision": "1", "changed_at": "1"},
        {"stage": "live", "revision": "one", "changed_at": "1"},
        {"revision": "1", "changed_at": "1"},
    ],
    ids=["unknown-stage", "bad-revision", "no-stage"],
)
async def test_a_malformed_record_is_a_backend_error_and_the_last_stage_stays(fields) -> None:
    with RedisServer() as server:
        client = _client(server)
        control = AsyncRedisControlPlane(client)
        await _walk_to_live(control)
        clock = ManualClock(start=1_000.0)
        backend = AsyncMigratingBackend(
            AsyncMemoryBackend(), AsyncMemoryBackend(), control, stage_ttl=1, clock=clock
        )
        assert await backend.stage() is Stage.LIVE
        await client.delete("sfm:{sessions}:stage")
        await client.hset("sfm:{sessions}:stage", mapping=fields)
        with pytest.raises(BackendError, match="control record"):
            await control.read_stage()
        clock.advance(2)
        assert await backend.stage() is Stage.LIVE
        assert backend.stats.stage_read_errors == 1
        await client.aclose()
