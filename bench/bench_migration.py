"""Migration benchmarks: backfill throughput, backfill memory, dual-write request latency.

    python bench/bench_migration.py [--sessions 20000] [--memory-sizes 10000,100000]
                                    [--requests 2000] [--json out.json]

1. Backfill throughput, Redis -> DynamoDB Local: sessionflow's guarded backfill (conditional
   puts, version and tombstone guards, checkpoints) against the raw ceiling measured in the
   same run on the same records: scan Redis, HGETALL in pipelines, `batch_write_item` of
   25 items with the same concurrency into an empty table (no guards possible: BatchWriteItem
   takes no conditions).
2. Backfill memory: peak Python allocations (tracemalloc) of a backfill from Redis into
   Redis for each source size; flat means the job streams.
3. Dual-write latency: one request at a time (get, then save of one changed attribute)
   through a store on Redis alone, and through a migrating backend at `dualwrite` (Redis
   authoritative, background copy to DynamoDB Local); p50 and p99 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aioboto3
from hdrh.histogram import HdrHistogram
from redis.asyncio import Redis

from sessionflow import (
    AsyncDynamoDBBackend,
    AsyncMemoryControlPlane,
    AsyncMigratingBackend,
    AsyncRedisBackend,
    AsyncSessionStore,
    Stage,
    dynamodb_client_config,
)
from sessionflow._async.migration import AsyncMigration
from sessionflow._dynamodb_layout import record_to_item, table_definition
from sessionflow._open_backend import redis_client
from sessionflow._redis_layout import parse_hash
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisServer

CONCURRENCY = 32


def attributes(index: int) -> dict[str, object]:
    return {
        "username": f"user_{index}",
        "current_page": "/products/laptop",
        "page_views": 15,
        "cart": {"items": ["laptop-123|2|999.99", "mouse-456|1|29.99"], "total": "1029.97"},
    }


async def seed(store: AsyncSessionStore, count: int) -> None:
    for start in range(0, count, 1000):
        await asyncio.gather(
            *(
                store.create(attributes(i), user_id=f"u{i % 1000}")
                for i in range(start, min(count, start + 1000))
            )
        )


async def raw_ceiling(redis: Redis, prefix: str, ddb: Any, table: str) -> tuple[int, float]:
    """Scan Redis, read each page in one pipeline, batch_write_item 25 at a time."""
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=CONCURRENCY * 2)
    written = 0

    async def writer() -> None:
        nonlocal written
        while (batch := await queue.get()) is not None:
            request = {table: [{"PutRequest": {"Item": item}} for item in batch]}
            while request:
                response = await ddb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}
            written += len(batch)

    began = time.perf_counter()
    writers = [asyncio.create_task(writer()) for _ in range(CONCURRENCY)]
    cursor = 0
    while True:
        cursor, names = await redis.scan(cursor, match=f"{prefix}:{{*", count=500)
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        replies = await pipe.execute()
        items = []
        for name, reply in zip(names, replies, strict=True):
            key = name.decode().split("{", 1)[1].rstrip("}")
            items.append(record_to_item(parse_hash(key, reply)))
        for start in range(0, len(items), 25):
            await queue.put(items[start : start + 25])
        if cursor == 0:
            break
    for _ in writers:
        await queue.put(None)
    await asyncio.gather(*writers)
    return written, time.perf_counter() - began


async def backfill_throughput(
    args: argparse.Namespace, redis_url: str, endpoint: str
) -> dict[str, Any]:
    session = aioboto3.Session(**DUMMY_AWS)
    config = dynamodb_client_config(max_pool_connections=CONCURRENCY * 2)
    async with (
        redis_client(redis_url) as redis,
        session.client("dynamodb", endpoint_url=endpoint, config=config) as ddb,
    ):
        old = AsyncRedisBackend(redis, prefix="bench")
        await seed(AsyncSessionStore(old), args.sessions)
        results: dict[str, Any] = {"sessions": args.sessions, "concurrency": CONCURRENCY}
        for round_ in range(args.rounds):
            raw_table, guarded_table = f"raw{round_}", f"guarded{round_}"
            await ddb.create_table(**table_definition(raw_table))
            new = AsyncDynamoDBBackend(ddb, table_name=guarded_table)
            await new.ensure_table()
            count, seconds = await raw_ceiling(redis, "bench", ddb, raw_table)
            migration = AsyncMigration(old, new, AsyncMemoryControlPlane(Stage.DUALWRITE))
            began = time.perf_counter()
            done = await migration.backfill(page_size=500, concurrency=CONCURRENCY)
            guarded_seconds = time.perf_counter() - began
            results.setdefault("rounds", []).append(
                {
                    "raw_items_per_s": count / seconds,
                    "backfill_items_per_s": done.copied / guarded_seconds,
                    "ratio": (done.copied / guarded_seconds) / (count / seconds),
                }
            )
        rounds = results["rounds"]
        results["ratio_median"] = sorted(r["ratio"] for r in rounds)[len(rounds) // 2]
        return results


async def backfill_memory(sizes: list[int], redis_url: str) -> list[dict[str, Any]]:
    figures = []
    async with redis_client(redis_url) as redis:
        for size in sizes:
            await redis.flushdb()
            old = AsyncRedisBackend(redis, prefix="src")
            await seed(AsyncSessionStore(old), size)
            new = AsyncRedisBackend(redis, prefix="dst")
            migration = AsyncMigration(old, new, AsyncMemoryControlPlane(Stage.DUALWRITE))
            tracemalloc.start()
            began = time.perf_counter()
            done = await migration.backfill(page_size=500, concurrency=CONCURRENCY)
            seconds = time.perf_counter() - began
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures.append(
                {
                    "sessions": size,
                    "copied": done.copied,
                    "peak_mib": peak / 2**20,
                    "records_per_s": done.copied / seconds,
                }
            )
    return figures


async def dual_write_latency(
    args: argparse.Namespace, redis_url: str, endpoint: str
) -> dict[str, Any]:
    session = aioboto3.Session(**DUMMY_AWS)
    async with (
        redis_client(redis_url) as redis,
        session.client("dynamodb", endpoint_url=endpoint, config=dynamodb_client_config()) as ddb,
    ):
        await redis.flushdb()
        single = AsyncRedisBackend(redis, prefix="lat")
        new = AsyncDynamoDBBackend(ddb, table_name="latency")
        await new.ensure_table()
        migrating = AsyncMigratingBackend(
            single, new, AsyncMemoryControlPlane(Stage.DUALWRITE), compare_sample=0
        )
        out: dict[str, Any] = {}
        for name, backend in (("redis alone", single), ("dualwrite", migrating)):
            store = AsyncSessionStore(backend)
            ids = [(await store.create(attributes(i))).id for i in range(200)]
            if backend is migrating:
                await migrating.drain()
            histograms = {"get+save": HdrHistogram(1, 10_000_000, 3)}
            for i in range(args.requests):
                began = time.perf_counter()
                current = await store.get(ids[i % len(ids)], touch=False)
                assert current is not None
                current["page_views"] = i
                await store.save(current)
                histograms["get+save"].record_value(int((time.perf_counter() - began) * 1e6))
                await asyncio.sleep(0.001)  # requests arrive apart; copies run in between
            if backend is migrating:
                await migrating.drain()
            h = histograms["get+save"]
            out[name] = {
                "p50_us": h.get_value_at_percentile(50),
                "p99_us": h.get_value_at_percentile(99),
            }
        out["p50_ratio"] = out["dualwrite"]["p50_us"] / out["redis alone"]["p50_us"]
        out["p99_ratio"] = out["dualwrite"]["p99_us"] / out["redis alone"]["p99_us"]
        await migrating.aclose()
        return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as redis_server, DynamoDBLocal() as dynamodb:
        report: dict[str, Any] = {
            "machine": platform.platform(),
            "python": platform.python_version(),
        }
        report["backfill_throughput"] = await backfill_throughput(
            args, redis_server.url, dynamodb.endpoint_url
        )
        print(json.dumps(report["backfill_throughput"], indent=1))
        report["dual_write_latency"] = await dual_write_latency(
            args, redis_server.url, dynamodb.endpoint_url
        )
        print(json.dumps(report["dual_write_latency"], indent=1))
        sizes = [int(s) for s in args.memory_sizes.split(",") if s]
        report["backfill_memory"] = await backfill_memory(sizes, redis_server.url)
        print(json.dumps(report["backfill_memory"], indent=1))
        return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--memory-sizes", default="10000,100000")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2))
