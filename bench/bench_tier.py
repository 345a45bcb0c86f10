"""Hybrid tier benchmarks, on a real Redis and DynamoDB Local started here.

    python bench/bench_tier.py [--parts hot,promotion,sweeper,writes,memory] [--json out.json]

1. Hot hit: `get` of a hot session through the tier against redis-py's `hgetall` of the
   same key, one request at a time, alternating rounds; p50 and p95 of each.
2. Cold read plus promotion: `get` of a session only the cold tier holds (a DynamoDB read,
   the guarded copy into Redis, the access index, and, by default, the cold re-read that
   catches a write racing the promotion) against boto3's `get_item` of other cold sessions
   in the same run; p50 and p95; with and without the re-read, and with background
   promotions (the answer after the cold read; copy, re-read and index after it): once
   with the next request sent when the promotion finished (as `get_item` is measured: one
   request's work at a time), once back to back (promotions overlap the next requests).
3. Sweeper: time to demote the same number of idle sessions out of 10k and out of 100k
   hot sessions (the rest recently used); the ratio shows whether the cost follows the
   sessions moved or all keys.
4. DynamoDB writes per session under each durability policy for the case study's
   workload: sessions of one hour with 15 page views each (one save per view, 80 s
   apart), flushes and sweeps every 300 s, demotion after 1800 s idle. Every DynamoDB
   write request is counted at the client (a transaction counts its items).
5. Redis memory before and after demoting the idle part of a hot set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aioboto3
from _results import write_results
from hdrh.histogram import HdrHistogram
from redis.asyncio import Redis

from sessionflow import (
    AsyncDynamoDBBackend,
    AsyncRedisBackend,
    AsyncRedisTierIndex,
    AsyncSessionStore,
    AsyncTieredBackend,
    Durability,
    ManualClock,
    SessionPolicy,
    dynamodb_client_config,
    new_session_id,
    storage_key,
)
from sessionflow._dynamodb_layout import PARTITION_KEY
from sessionflow._redis_clients import redis_client
from sessionflow._redis_layout import expire_at_ms, record_fields
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisServer

HOUR = 3600.0
DEMOTE_AFTER = 1800.0
SYNC_INTERVAL = 300.0
POLICY = SessionPolicy(idle_timeout=2 * HOUR, absolute_timeout=12 * HOUR, touch_interval=60)


def attributes(index: int) -> dict[str, object]:
    """The case study's session hash: who, where, how many views, a cart."""
    return {
        "user_id": str(12345 + index),
        "username": f"user_{index}",
        "current_page": "/products/laptop",
        "page_views": 15,
        "cart": {"items": ["laptop-123|2|999.99", "mouse-456|1|29.99"], "total": "1029.97"},
    }


def move_to(clock: ManualClock, when: float) -> None:
    clock.advance(max(0.0, when - clock.now()))


def summary(histogram: HdrHistogram) -> dict[str, int]:
    return {
        "p50_us": histogram.get_value_at_percentile(50),
        "p95_us": histogram.get_value_at_percentile(95),
        "p99_us": histogram.get_value_at_percentile(99),
    }


async def timed(histogram: HdrHistogram, call: Callable[[], Awaitable[Any]]) -> Any:
    began = time.perf_counter()
    result = await call()
    histogram.record_value(max(1, int((time.perf_counter() - began) * 1e6)))
    return result


class Servers:
    def __init__(self, redis_url: str, endpoint: str) -> None:
        self.redis_url = redis_url
        self.endpoint = endpoint
        self.aws = aioboto3.Session(**DUMMY_AWS)

    def dynamodb(self) -> Any:
        return self.aws.client(
            "dynamodb", endpoint_url=self.endpoint, config=dynamodb_client_config()
        )


def tier(
    redis: Redis,
    ddb: Any,
    table: str,
    prefix: str,
    durability: Durability = Durability.WRITE_THROUGH,
    clock: ManualClock | None = None,
) -> AsyncTieredBackend:
    return AsyncTieredBackend(
        AsyncRedisBackend(redis, prefix=prefix),
        AsyncDynamoDBBackend(ddb, table_name=table),
        AsyncRedisTierIndex(redis, prefix=prefix),
        durability=durability,
        demote_after=DEMOTE_AFTER,
        clock=clock,
    )


async def hot_hits(servers: Servers, requests: int, rounds: int) -> dict[str, Any]:
    async with redis_client(servers.redis_url) as redis, servers.dynamodb() as ddb:
        backend = tier(redis, ddb, "tier_bench", "hot")
        store = AsyncSessionStore(backend)
        sessions = [await store.create(attributes(i)) for i in range(200)]
        names = [backend.hot.redis_key(s.key) for s in sessions]  # type: ignore[attr-defined]
        keys = [s.key for s in sessions]
        histograms = {name: HdrHistogram(1, 10_000_000, 3) for name in ("tier", "raw")}
        for _ in range(rounds):  # alternate so drift hits both alike
            for i in range(requests):
                await timed(histograms["raw"], lambda i=i: redis.hgetall(names[i % len(names)]))
            for i in range(requests):
                await timed(histograms["tier"], lambda i=i: backend.get(keys[i % len(keys)]))
        out = {name: summary(h) for name, h in histograms.items()}
        out["p50_ratio"] = out["tier"]["p50_us"] / out["raw"]["p50_us"]
        out["p95_ratio"] = out["tier"]["p95_us"] / out["raw"]["p95_us"]
        return out


async def promotions(servers: Servers, requests: int) -> dict[str, Any]:
    async with redis_client(servers.redis_url) as redis, servers.dynamodb() as ddb:
        backend = tier(redis, ddb, "tier_bench", "promo")
        cold_store = AsyncSessionStore(backend.cold)
        keys: list[str] = []
        for start in range(0, 5 * requests + 50, 100):  # cold-only sessions, fresh per read
            made = await asyncio.gather(
                *(cold_store.create(attributes(i)) for i in range(start, start + 100))
            )
            keys.extend(s.key for s in made)
        warm, keys = keys[:50], keys[50:]
        for key in warm:  # JIT and connection warm-up, unmeasured
            await ddb.get_item(TableName="tier_bench", Key={PARTITION_KEY: {"S": key}})
        histograms = {
            name: HdrHistogram(1, 10_000_000, 3)
            for name in (
                "get_item",
                "promotion",
                "promotion without re-read",
                "background promotion",
                "background promotion, back to back",
            )
        }
        raw_keys, with_keys, without_keys, background_keys, overlapped_keys = (
            keys[i::5] for i in range(5)
        )
        for block in range(0, requests, 50):  # interleave blocks of each kind
            for key in raw_keys[block : block + 50]:
                await timed(
                    histograms["get_item"],
                    lambda key=key: ddb.get_item(
                        TableName="tier_bench", Key={PARTITION_KEY: {"S": key}}
                    ),
                )
            backend.recheck_promotions = True
            for key in with_keys[block : block + 50]:
                await timed(histograms["promotion"], lambda key=key: backend.get(key))
            backend.recheck_promotions = False
            for key in without_keys[block : block + 50]:
                await timed(
                    histograms["promotion without re-read"], lambda key=key: backend.get(key)
                )
            backend.recheck_promotions, backend.background_promotions = True, True
            for key in background_keys[block : block + 50]:
                await timed(histograms["background promotion"], lambda key=key: backend.get(key))
                await backend.settle()  # unmeasured: the promotion's work, after the answer
            for key in overlapped_keys[block : block + 50]:
                await timed(
                    histograms["background promotion, back to back"],
                    lambda key=key: backend.get(key),
                )
            await backend.settle()  # the block's promotions finish before the next kind runs
            backend.background_promotions = False
        assert backend.stats.promotions == 4 * requests, backend.stats
        out = {name: summary(h) for name, h in histograms.items()}
        raw_p95 = out["get_item"]["p95_us"]
        out["p95_ratio"] = out["promotion"]["p95_us"] / raw_p95
        out["p95_ratio_without_re_read"] = out["promotion without re-read"]["p95_us"] / raw_p95
        out["p95_ratio_background"] = out["background promotion"]["p95_us"] / raw_p95
        out["p95_ratio_background_back_to_back"] = (
            out["background promotion, back to back"]["p95_us"] / raw_p95
        )
        return out


async def seed_hot(
    redis: Redis, backend: AsyncTieredBackend, count: int, last_access: float
) -> list[str]:
    """Write `count` hot sessions and their access-index entries straight into Redis."""
    template = await AsyncSessionStore(
        backend.hot, policy=POLICY, clock=ManualClock(last_access)
    ).create(attributes(0))
    record = await backend.hot.get(template.key)
    assert record is not None
    fields = record_fields(record)
    mapping = dict(zip(fields[::2], fields[1::2], strict=True))
    expire_ms = expire_at_ms(record.expires_at)
    access_key = backend.index._access_key  # type: ignore[attr-defined]  # noqa: SLF001
    keys = []
    for start in range(0, count, 2000):
        pipe = redis.pipeline(transaction=False)
        batch = {}
        for _ in range(start, min(count, start + 2000)):
            key = storage_key(new_session_id())
            name = backend.hot.redis_key(key)  # type: ignore[attr-defined]
            pipe.hset(name, mapping=mapping)
            pipe.pexpireat(name, expire_ms)
            batch[key] = last_access
            keys.append(key)
        pipe.zadd(access_key, batch)
        await pipe.execute()
    return keys


async def sweeper(servers: Servers, sizes: list[int], to_demote: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes:
        async with redis_client(servers.redis_url) as redis, servers.dynamodb() as ddb:
            await redis.flushdb()
            clock = ManualClock(1_900_000_000.0)
            backend = tier(redis, ddb, "tier_bench", f"sweep{size}", clock=clock)
            idle_since = clock.now() - DEMOTE_AFTER - 60
            await seed_hot(redis, backend, to_demote, idle_since)
            await seed_hot(redis, backend, size - to_demote, clock.now())
            hot_before, _ = await backend.index.sizes()
            report = await backend.sweep(batch_size=100)
            assert report.demoted == to_demote, report
            out[str(size)] = {
                "hot_sessions": hot_before,
                "demoted": report.demoted,
                "seconds": round(report.seconds, 3),
                "demotions_per_s": round(report.demoted / report.seconds),
            }
    small, large = (out[str(s)]["seconds"] for s in (min(sizes), max(sizes)))
    out["time_ratio"] = round(large / small, 3)
    return out


class WriteCounter:
    """Counts DynamoDB write requests as the client sends them (a transaction, per item)."""

    WRITES = ("PutItem", "UpdateItem", "DeleteItem")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name in self.WRITES:
            self.counts[model.name] += 1
        elif model.name == "TransactWriteItems":
            self.counts["TransactWriteItems items"] += len(params["TransactItems"])
        elif model.name == "BatchWriteItem":
            self.counts["BatchWriteItem items"] += sum(
                len(v) for v in params["RequestItems"].values()
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def writes_per_session(servers: Servers, sessions: int) -> dict[str, Any]:
    """Simulate an hour of the case study's traffic on a manual clock, per policy."""
    out: dict[str, Any] = {}
    for durability in Durability:
        async with redis_client(servers.redis_url) as redis, servers.dynamodb() as ddb:
            await redis.flushdb()
            counter = WriteCounter()
            ddb.meta.events.register("before-call.dynamodb", counter)
            clock = ManualClock(1_900_000_000.0)
            start = clock.now()
            backend = tier(redis, ddb, "tier_bench", "writes", durability, clock)
            store = AsyncSessionStore(backend, policy=POLICY, clock=clock)
            rng = random.Random(7)
            events: list[tuple[float, int, int]] = []  # (when, session index, view number)
            for index in range(sessions):
                arrival = rng.uniform(0, 600)
                events += [
                    (arrival + view * 80 + rng.uniform(-10, 10), index, view) for view in range(16)
                ]
            events.sort()
            ids: dict[int, str] = {}
            next_job = start + SYNC_INTERVAL
            for when, index, view in events:
                while start + when >= next_job:
                    move_to(clock, next_job)
                    await backend.flush(batch_size=1000)
                    await backend.sweep(batch_size=100)
                    next_job += SYNC_INTERVAL
                move_to(clock, start + when)
                if view == 0:
                    ids[index] = (await store.create(attributes(index))).id
                    continue
                session = await store.get(ids[index])
                assert session is not None
                session["current_page"] = f"/products/{view}"
                session["page_views"] = view
                await store.save(session)
            while next_job <= start + HOUR + DEMOTE_AFTER + SYNC_INTERVAL:  # all go cold
                move_to(clock, next_job)
                await backend.flush(batch_size=1000)
                await backend.sweep(batch_size=100)
                next_job += SYNC_INTERVAL
            hot, dirty = await backend.index.sizes()
            assert (hot, dirty) == (0, 0), (hot, dirty)
            for index in range(0, sessions, max(1, sessions // 20)):  # nothing was lost
                final = await AsyncSessionStore(backend.cold, policy=POLICY, clock=clock).get(
                    ids[index], touch=False
                )
                assert final is not None
                assert final["page_views"] == 15, final
            out[str(durability)] = {
                "dynamodb_writes": counter.total,
                "by_request": dict(counter.counts),
                "writes_per_session_hour": round(counter.total / sessions, 2),
            }
    out["write_back_saving"] = round(
        1 - out["write-back"]["dynamodb_writes"] / out["write-through"]["dynamodb_writes"], 3
    )
    return out


async def redis_memory(servers: Servers, hot: int, idle_share: float) -> dict[str, Any]:
    async with redis_client(servers.redis_url) as redis, servers.dynamodb() as ddb:
        await redis.flushdb()
        clock = ManualClock(1_900_000_000.0)
        backend = tier(redis, ddb, "tier_bench", "memory", clock=clock)
        idle = int(hot * idle_share)
        await seed_hot(redis, backend, idle, clock.now() - DEMOTE_AFTER - 60)
        await seed_hot(redis, backend, hot - idle, clock.now())
        before = int((await redis.info("memory"))["used_memory"])
        report = await backend.sweep(batch_size=100)
        after = int((await redis.info("memory"))["used_memory"])
        return {
            "hot_sessions_before": hot,
            "demoted": report.demoted,
            "used_memory_before_mib": round(before / 2**20, 2),
            "used_memory_after_mib": round(after / 2**20, 2),
            "bytes_per_hot_session": round((before - after) / max(1, report.demoted)),
            "reduction": round(1 - after / before, 3),
        }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version()}
    with RedisServer() as redis_server, DynamoDBLocal() as dynamodb:
        servers = Servers(redis_server.url, dynamodb.endpoint_url)
        async with servers.dynamodb() as ddb:
            await AsyncDynamoDBBackend(ddb, table_name="tier_bench").ensure_table(streams=False)
        jobs: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("hot", lambda: hot_hits(servers, args.requests, args.rounds)),
            ("promotion", lambda: promotions(servers, args.requests)),
            ("sweeper", lambda: sweeper(servers, [10_000, 100_000], args.demote)),
            ("writes", lambda: writes_per_session(servers, args.sessions)),
            ("memory", lambda: redis_memory(servers, args.memory_sessions, 0.8)),
        ]
        for name, job in jobs:
            if name in parts:
                began = time.perf_counter()
                report[name] = await job()
                report[name]["bench_seconds"] = round(time.perf_counter() - began, 1)
                print(name, json.dumps(report[name], indent=1), flush=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="hot,promotion,sweeper,writes,memory")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--demote", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--memory-sessions", type=int, default=20_000)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        write_results(arguments.json, result)
