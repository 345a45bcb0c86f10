"""Auto-pipelining: concurrent reads of one event loop share a Redis round trip."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sessionflow import (
    AsyncRedisBackend,
    AsyncSessionStore,
    BackendError,
    ConfigError,
    RedisBackend,
    new_session_id,
)
from sessionflow._coalescing import AsyncReadCoalescer
from sessionflow.local_servers import free_port
from tests.conftest import Servers


@pytest.fixture(params=["redis", "redis-cluster"])
async def pipelined(request, servers: Servers, prefix: str):
    if request.param == "redis":
        client = AsyncRedis(port=servers.redis.port)
    else:
        client = AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port)
    yield AsyncRedisBackend(client, prefix=prefix, auto_pipeline=True)
    await client.aclose()


async def test_concurrent_reads_share_round_trips(pipelined: AsyncRedisBackend) -> None:
    store = AsyncSessionStore(pipelined)
    sessions = [await store.create({"i": i}) for i in range(200)]
    coalescer = pipelined.coalescer
    assert coalescer is not None
    before = coalescer.batches
    loaded = await asyncio.gather(*(store.get(s.id, touch=False) for s in sessions))
    assert [s["i"] for s in loaded if s is not None] == list(range(200))
    assert coalescer.batches - before <= 5  # 200 reads, a handful of round trips


async def test_a_corrupt_record_fails_only_its_own_read(pipelined: AsyncRedisBackend) -> None:
    store = AsyncSessionStore(pipelined)
    good = [await store.create({"i": i}) for i in range(5)]
    bad = await store.create()
    client = pipelined.client
    await client.delete(pipelined.redis_key(bad.key))
    await client.set(pipelined.redis_key(bad.key), b"not a hash")
    results = await asyncio.gather(*(store.get(s.id, touch=False) for s in [*good, bad]))
    assert [r is not None for r in results] == [True] * 5 + [False]
    assert store.stats.unreadable_records == 1


async def test_a_cancelled_reader_does_not_disturb_the_batch(
    pipelined: AsyncRedisBackend,
) -> None:
    store = AsyncSessionStore(pipelined)
    sessions = [await store.create({"i": i}) for i in range(10)]
    tasks = [asyncio.ensure_future(store.get(s.id, touch=False)) for s in sessions]
    await asyncio.sleep(0)  # every read has joined the batch
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r["i"] for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5, 6, 7, 8, 9]


async def test_a_failed_round_trip_reaches_every_reader() -> None:
    client = AsyncRedis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store = AsyncSessionStore(AsyncRedisBackend(client, auto_pipeline=True))
    results = await asyncio.gather(
        *(store.get(new_session_id()) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, BackendError) for r in results)
    await client.aclose()


def test_the_sync_flavour_refuses_auto_pipelining(servers: Servers) -> None:
    client = redis.Redis(port=servers.redis.port)
    with pytest.raises(ConfigError, match="event loop"):
        RedisBackend(client, auto_pipeline=True)
    client.close()


def test_batch_size_is_validated() -> None:
    with pytest.raises(ConfigError):
        AsyncReadCoalescer(object(), max_batch=0)


def refuse_pipelines(monkeypatch: pytest.MonkeyPatch, backend: AsyncRedisBackend) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a read alone needs no pipeline")

    monkeypatch.setattr(backend.client, "pipeline", refuse)


async def test_a_read_alone_goes_without_a_pipeline(
    pipelined: AsyncRedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AsyncSessionStore(pipelined)
    session = await store.create({"i": 1})
    coalescer = pipelined.coalescer
    assert coalescer is not None
    before = (coalescer.batches, coalescer.reads)
    refuse_pipelines(monkeypatch, pipelined)
    loaded = await store.get(session.id, touch=False)
    assert loaded is not None
    assert loaded["i"] == 1
    assert (coalescer.batches, coalescer.reads) == (before[0] + 1, before[1] + 1)


async def test_a_corrupt_record_read_alone_is_unreadable_not_an_error(
    pipelined: AsyncRedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AsyncSessionStore(pipelined)
    bad = await store.create()
    await pipelined.client.delete(pipelined.redis_key(bad.key))
    await pipelined.client.set(pipelined.redis_key(bad.key), b"not a hash")
    refuse_pipelines(monkeypatch, pipelined)
    assert await store.get(bad.id, touch=False) is None
    assert store.stats.unreadable_records == 1


async def test_a_failed_read_alone_reaches_its_reader() -> None:
    client = AsyncRedis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    store = AsyncSessionStore(AsyncRedisBackend(client, auto_pipeline=True))
    with pytest.raises(BackendError):
        await store.get(new_session_id())
    await client.aclose()
