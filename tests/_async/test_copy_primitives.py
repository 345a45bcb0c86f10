"""The primitives migration jobs are built on: resumable sharded scans and guarded copies."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow import (
    AsyncBackend,
    AsyncMemoryBackend,
    AsyncRedisBackend,
    AsyncSessionStore,
    ConfigError,
    CorruptRecord,
    ManualClock,
    SessionRecord,
)
from sessionflow._async.reconcile import same_content
from sessionflow._async.redis_nodes import COUNT_SAMPLE
from sessionflow._scan import GuardedWrite
from tests.conftest import POLICY, Servers


async def _scan_all(backend: AsyncBackend, *, count: int, worker: int = 0, workers: int = 1):
    keys: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await backend.scan(cursor, count=count, worker=worker, workers=workers)
        pages += 1
        keys += [r.key for r in page.records if not isinstance(r, CorruptRecord)]
        cursor = page.cursor
        if cursor is None:
            return keys, pages


async def test_scan_returns_every_record_and_tombstone(async_store: AsyncSessionStore) -> None:
    sessions = [await async_store.create({"i": i}) for i in range(120)]
    await async_store.delete(sessions[0])
    keys, pages = await _scan_all(async_store.backend, count=25)
    assert {s.key for s in sessions} <= set(keys)
    assert pages > 1
    found = []
    cursor = None
    while True:
        page = await async_store.backend.scan(cursor, count=1000)
        found += [
            r for r in page.records if not isinstance(r, CorruptRecord) and r.key == sessions[0].key
        ]
        cursor = page.cursor
        if cursor is None:
            break
    assert [r.tombstone for r in found] == [True]


async def test_scan_shares_split_the_records_without_overlap(
    async_store: AsyncSessionStore,
) -> None:
    created = {(await async_store.create({"i": i})).key for i in range(90)}
    shares = [
        set((await _scan_all(async_store.backend, count=40, worker=w, workers=3))[0])
        for w in range(3)
    ]
    assert created <= shares[0] | shares[1] | shares[2]
    assert not shares[0] & shares[1]
    assert not shares[1] & shares[2]
    assert not shares[0] & shares[2]
    assert all(created & share for share in shares)


async def test_a_scan_resumes_from_a_saved_cursor(async_store: AsyncSessionStore) -> None:
    created = {(await async_store.create({"i": i})).key for i in range(60)}
    first = await async_store.backend.scan(None, count=20)
    assert first.cursor is not None
    saved = str(first.cursor)  # what a checkpoint file would hold
    rest, _ = await _scan_all_from(async_store.backend, saved, count=20)
    seen = {r.key for r in first.records if not isinstance(r, CorruptRecord)} | set(rest)
    assert created <= seen


async def _scan_all_from(backend: AsyncBackend, cursor: str, *, count: int):
    keys: list[str] = []
    pages = 0
    current: str | None = cursor
    while current is not None:
        page = await backend.scan(current, count=count)
        pages += 1
        keys += [r.key for r in page.records if not isinstance(r, CorruptRecord)]
        current = page.cursor
    return keys, pages


@pytest.mark.parametrize(
    ("worker", "workers", "message"),
    [
        (3, 3, "worker must be in 0..2"),
        (-1, 2, "worker must be in 0..1"),
        (0, 0, "worker must be in"),
        (0, 1_000_001, "at most 1,000,000 workers"),  # past DynamoDB's parallel-scan segments
    ],
)
async def test_scan_rejects_a_bad_share(
    async_store: AsyncSessionStore, worker: int, workers: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        await async_store.backend.scan(None, worker=worker, workers=workers)


@pytest.mark.parametrize(
    ("count", "message"),
    [
        (0, "count must be a whole number from 1 to 10,000, not 0"),
        (-5, "count must be a whole number from 1 to 10,000, not -5"),
        (2.5, "count must be a whole number from 1 to 10,000, not 2.5"),
        (10_001, "count must be a whole number from 1 to 10,000, not 10001"),
    ],
)
async def test_scan_rejects_a_page_size_it_cannot_serve(
    async_store: AsyncSessionStore, count: Any, message: str
) -> None:
    """A page of 0 failed differently on every backend: an IndexError in memory, Redis's
    syntax error, DynamoDB's validation error; a huge one read a whole database at once."""
    await async_store.create({"n": 1})
    with pytest.raises(ConfigError, match=message):
        await async_store.backend.scan(None, count=count)


async def test_guarded_copy_lands_on_an_empty_target_and_reads_back(
    async_store: AsyncSessionStore, clock: ManualClock, user: str
) -> None:
    source = AsyncSessionStore(AsyncMemoryBackend(clock), policy=POLICY, clock=clock)
    session = await source.create({"cart": ["laptop-123"]}, user_id=user)
    record = await source.backend.get(session.key)
    assert record is not None
    assert await async_store.backend.put_guarded(record) is GuardedWrite.WRITTEN
    copied = await async_store.get(session.id)
    assert copied is not None
    assert copied.to_dict() == {"cart": ["laptop-123"]}
    assert copied.version == session.version
    assert [s.handle for s in await async_store.list_user(user)] == [session.key]


async def test_guarded_copy_never_overwrites_the_same_or_a_newer_version(
    async_store: AsyncSessionStore,
) -> None:
    session = await async_store.create({"n": 1})
    old = await async_store.backend.get(session.key)
    assert old is not None
    session["n"] = 2
    await async_store.save(session)
    assert await async_store.backend.put_guarded(old) is GuardedWrite.NEWER_KEPT
    current = await async_store.backend.get(session.key)
    assert current is not None
    assert await async_store.backend.put_guarded(current) is GuardedWrite.NEWER_KEPT
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded["n"] == 2


async def test_guarded_copy_of_a_newer_version_lands(async_store: AsyncSessionStore) -> None:
    session = await async_store.create({"n": 1})
    current = await async_store.backend.get(session.key)
    assert current is not None
    newer = current._replace(
        version=current.version + 5,
        attributes={**current.attributes, "n": async_store.codec.encode("n", 9).stored},
    )
    assert await async_store.backend.put_guarded(newer) is GuardedWrite.WRITTEN
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert (loaded["n"], loaded.version) == (9, current.version + 5)


async def test_guarded_copy_never_resurrects_a_deleted_session(
    async_store: AsyncSessionStore,
) -> None:
    session = await async_store.create({"n": 1})
    live = await async_store.backend.get(session.key)
    assert live is not None
    await async_store.delete(session)
    much_newer = live._replace(version=live.version + 100)
    assert await async_store.backend.put_guarded(much_newer) is GuardedWrite.TOMBSTONE_KEPT
    assert await async_store.get(session.id) is None


async def test_guarded_copy_of_a_tombstone_deletes_an_older_live_record(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    source = AsyncSessionStore(AsyncMemoryBackend(clock), policy=POLICY, clock=clock)
    session = await source.create({"n": 1})
    record = await source.backend.get(session.key)
    assert record is not None
    assert await async_store.backend.put_guarded(record) is GuardedWrite.WRITTEN
    await source.delete(session)
    tombstone = await source.backend.get(session.key)
    assert tombstone is not None
    assert tombstone.tombstone
    assert await async_store.backend.put_guarded(tombstone) is GuardedWrite.WRITTEN
    assert await async_store.get(session.id) is None
    assert await async_store.backend.put_guarded(record) is GuardedWrite.TOMBSTONE_KEPT


async def _copied(source: AsyncSessionStore, count: int) -> list[SessionRecord]:
    records = []
    for i in range(count):
        session = await source.create({"i": i})
        record = await source.backend.get(session.key)
        assert record is not None
        records.append(record)
    return records


async def test_guarded_batch_gives_each_record_its_own_verdict(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    source = AsyncSessionStore(AsyncMemoryBackend(clock), policy=POLICY, clock=clock)
    fresh = await _copied(source, 130)  # more than one DynamoDB transaction holds
    kept = await async_store.create({"n": 1})
    stale = await async_store.backend.get(kept.key)
    assert stale is not None
    kept["n"] = 2
    await async_store.save(kept)
    deleted = await async_store.create({"n": 1})
    live = await async_store.backend.get(deleted.key)
    assert live is not None
    await async_store.delete(deleted)
    batch = [*fresh[:60], stale, live._replace(version=live.version + 9), *fresh[60:]]

    results = await async_store.backend.put_guarded_many(batch)

    assert results[:60] == [GuardedWrite.WRITTEN] * 60
    assert results[60:62] == [GuardedWrite.NEWER_KEPT, GuardedWrite.TOMBSTONE_KEPT]
    assert results[62:] == [GuardedWrite.WRITTEN] * 70
    for record in fresh:
        landed = await async_store.backend.get(record.key)
        assert landed is not None
        assert same_content(landed, record)
    current = await async_store.get(kept.id)
    assert current is not None
    assert current["n"] == 2
    assert await async_store.get(deleted.id) is None


async def test_guarded_batch_writes_a_repeated_key_in_order(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    source = AsyncSessionStore(AsyncMemoryBackend(clock), policy=POLICY, clock=clock)
    session = await source.create({"n": 1})
    first = await source.backend.get(session.key)
    session["n"] = 2
    await source.save(session)
    second = await source.backend.get(session.key)
    assert first is not None
    assert second is not None

    results = await async_store.backend.put_guarded_many([first, second, first])

    assert results == [GuardedWrite.WRITTEN, GuardedWrite.WRITTEN, GuardedWrite.NEWER_KEPT]
    landed = await async_store.backend.get(session.key)
    assert landed is not None
    assert same_content(landed, second)
    assert await async_store.backend.put_guarded_many([]) == []


# -- the record estimate a backfill's progress bar starts from -----------------------------


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_redis_estimates_its_sessions_not_every_key_of_the_database(
    servers: Servers, prefix: str, kind: str
) -> None:
    """DBSIZE counted every key, so a database shared with other data (common for
    sessions) gave a backfill's bar a total many times too big, and an ETA as wrong."""
    async with AsyncExitStack() as stack:
        client: AsyncRedis | AsyncRedisCluster = await stack.enter_async_context(
            AsyncRedis(port=servers.redis.port)
            if kind == "redis"
            else AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port)
        )
        backend = AsyncRedisBackend(client, prefix=prefix)
        store = AsyncSessionStore(backend, policy=POLICY)
        sessions = [await store.create({"i": i}) for i in range(SESSIONS)]
        await store.delete(sessions[0])  # a tombstone is a record a backfill copies too
        others = [f"{prefix}-other:{i}" for i in range(SESSIONS)]
        for name in others:
            await client.set(name, b"not a session")
        try:
            keys = await _database_size(client)
            estimate = await backend.approximate_count()
        finally:
            for name in others:
                await client.delete(name)
    # RANDOMKEY draws: the estimate is DBSIZE x the share of sessions among the draws; its
    # relative standard deviation is sqrt((1 - p) / (p x draws)). Other tests' keys in the
    # same servers only widen the bound; without them DBSIZE alone is twice the truth.
    share = SESSIONS / keys
    draws = COUNT_SAMPLE * (1 if kind == "redis" else 3)
    spread = math.sqrt((1 - share) / (share * draws))
    assert abs(estimate - SESSIONS) <= 6 * spread * SESSIONS + 1, (estimate, keys)


SESSIONS = 300


async def _database_size(client: AsyncRedis | AsyncRedisCluster) -> int:
    if isinstance(client, AsyncRedisCluster):
        sizes: Any = await client.dbsize(target_nodes=AsyncRedisCluster.PRIMARIES)  # type: ignore[call-arg]
        return int(sizes if isinstance(sizes, int) else sum(sizes.values()))
    return int(await client.dbsize())
