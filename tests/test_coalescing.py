"""Auto-pipelining: concurrent reads of one event loop share a Redis round trip."""

from __future__ import annotations

import asyncio
from typing import Self

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
    backend = AsyncRedisBackend(client, prefix=prefix, auto_pipeline=True)
    yield backend
    await backend.aclose()
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
    backend = AsyncRedisBackend(client, auto_pipeline=True)
    store = AsyncSessionStore(backend)
    results = await asyncio.gather(
        *(store.get(new_session_id()) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, BackendError) for r in results)
    await backend.aclose()
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
    backend = AsyncRedisBackend(client, auto_pipeline=True)
    with pytest.raises(BackendError):
        await AsyncSessionStore(backend).get(new_session_id())
    await backend.aclose()
    await client.aclose()


class GatedRedis:
    """A stand-in client whose round trips wait for the test to let them answer."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.round_trips: list[list[str]] = []

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        self.round_trips.append([key])
        await self.gate.wait()
        return {b"key": key.encode()}

    def pipeline(self, *, transaction: bool) -> GatedPipeline:
        assert transaction is False
        return GatedPipeline(self)


class GatedPipeline:
    def __init__(self, client: GatedRedis) -> None:
        self.client = client
        self.keys: list[str] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def hgetall(self, key: str) -> None:
        self.keys.append(key)

    async def execute(self, *, raise_on_error: bool) -> list[dict[bytes, bytes]]:
        assert raise_on_error is False
        self.client.round_trips.append(self.keys)
        await self.client.gate.wait()
        return [{b"key": key.encode()} for key in self.keys]


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def read_in_turns(coalescer: AsyncReadCoalescer, *groups: str) -> list[asyncio.Future]:
    """Start reads of each group's keys (one key per letter) in a loop turn of its own."""
    reads = []
    for group in groups:
        reads += [asyncio.ensure_future(coalescer.hgetall(key)) for key in group]
        await turns(3)
    return reads


async def test_reads_gather_while_a_batch_is_in_flight() -> None:
    client = GatedRedis()
    coalescer = AsyncReadCoalescer(client)
    reads = await read_in_turns(coalescer, "a")
    assert client.round_trips == [["a"]]
    reads += await read_in_turns(coalescer, "bcd", "e")  # "e" a turn later: same batch
    assert client.round_trips == [["a"]]  # nothing else went while "a" was in Redis
    client.gate.set()
    replies = await asyncio.gather(*reads)
    assert [r[b"key"] for r in replies] == [b"a", b"b", b"c", b"d", b"e"]
    assert client.round_trips == [["a"], ["b", "c", "d", "e"]]
    assert (coalescer.batches, coalescer.reads) == (2, 5)


async def test_more_batches_in_flight_when_allowed() -> None:
    client = GatedRedis()
    coalescer = AsyncReadCoalescer(client, max_in_flight=2)
    reads = await read_in_turns(coalescer, "a", "bc", "d")
    assert client.round_trips == [["a"], ["b", "c"]]  # "d" waits for one of them
    client.gate.set()
    await asyncio.gather(*reads)
    assert client.round_trips == [["a"], ["b", "c"], ["d"]]


async def test_a_full_batch_goes_even_with_one_in_flight() -> None:
    client = GatedRedis()
    coalescer = AsyncReadCoalescer(client, max_batch=3)
    reads = await read_in_turns(coalescer, "a", "bcd")
    assert client.round_trips == [["a"], ["b", "c", "d"]]
    client.gate.set()
    await asyncio.gather(*reads)


def test_batches_in_flight_are_validated() -> None:
    with pytest.raises(ConfigError):
        AsyncReadCoalescer(object(), max_in_flight=0)
