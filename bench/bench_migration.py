"""Migration benchmarks: backfill throughput, backfill memory, dual-write request latency.

    python bench/bench_migration.py [--sessions 20000] [--memory-sizes 10000,100000] [--parts ...]
                                    [--requests 2000] [--json out.json]

1. Backfill throughput, Redis -> DynamoDB Local: sessionflow's guarded backfill (batches of
   conditional puts in one TransactWriteItems each, version and tombstone guards,
   checkpoints) against the raw ceiling measured in the same run on the same records: scan
   Redis, HGETALL in pipelines, `batch_write_item` of 25 items with the same concurrency
   into an empty table (no guards possible: BatchWriteItem takes no conditions); and the
   server's guarded ceiling, the same records in bare `transact_write_items` of 100 puts
   with the version condition, as many in flight as the backfill. The unbatched backfill
   (one conditional PutItem per record) runs once for comparison.
2. Backfill memory: peak Python allocations (tracemalloc) of a backfill from Redis into
   Redis for each source size; flat means the job streams.
3. Dual-write latency: one request at a time (get, then save of one changed attribute)
   through a store on Redis alone, and through a migrating backend at `dualwrite` (Redis
   authoritative, background copy to DynamoDB Local); p50 and p99 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import resource
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aioboto3
from _dynamodb import guarded_put
from _results import write_results
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
    new_session_id,
    storage_key,
)
from sessionflow._async.migration import AsyncMigration
from sessionflow._dynamodb_layout import record_to_item, table_definition
from sessionflow._redis_clients import redis_client
from sessionflow._redis_layout import expire_at_ms, parse_hash, record_fields
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


async def raw_ceiling(
    redis: Redis, prefix: str, ddb: Any, table: str, *, guarded: bool = False, in_flight: int
) -> tuple[int, float]:
    """Scan Redis, read each page in one pipeline, write with the bare client.

    Unguarded: `batch_write_item` of 25 items (no conditions possible). Guarded: the
    server's own ceiling for guarded writes, `transact_write_items` of 100 puts carrying
    the backfill's version condition, with no sessionflow code on the way.
    """
    size = 100 if guarded else 25
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=in_flight * 2)
    written = 0

    async def write(batch: list[dict[str, Any]]) -> None:
        if guarded:
            await ddb.transact_write_items(
                TransactItems=[{"Put": guarded_put(table, item)} for item in batch]
            )
            return
        request = {table: [{"PutRequest": {"Item": item}} for item in batch]}
        while request:
            response = await ddb.batch_write_item(RequestItems=request)
            request = response.get("UnprocessedItems") or {}

    async def writer() -> None:
        nonlocal written
        while (batch := await queue.get()) is not None:
            await write(batch)
            written += len(batch)

    began = time.perf_counter()
    writers = [asyncio.create_task(writer()) for _ in range(in_flight)]
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
        for start in range(0, len(items), size):
            await queue.put(items[start : start + size])
        if cursor == 0:
            break
    for _ in writers:
        await queue.put(None)
    await asyncio.gather(*writers)
    return written, time.perf_counter() - began


async def guarded_backfill(
    old: AsyncRedisBackend, ddb: Any, table: str, *, batch_size: int, concurrency: int
) -> float:
    """Run sessionflow's backfill into a fresh table; return records copied per second."""
    new = AsyncDynamoDBBackend(ddb, table_name=table)
    await new.ensure_table(streams=False)
    migration = AsyncMigration(old, new, AsyncMemoryControlPlane(Stage.DUALWRITE))
    began = time.perf_counter()
    done = await migration.backfill(page_size=500, batch_size=batch_size, concurrency=concurrency)
    return done.copied / (time.perf_counter() - began)


async def backfill_throughput(
    args: argparse.Namespace, redis_url: str, endpoint: str
) -> dict[str, Any]:
    session = aioboto3.Session(**DUMMY_AWS)
    config = dynamodb_client_config(max_pool_connections=CONCURRENCY * 2, read_timeout=30)
    async with (
        redis_client(redis_url) as redis,
        session.client("dynamodb", endpoint_url=endpoint, config=config) as ddb,
    ):
        old = AsyncRedisBackend(redis, prefix="bench")
        await seed(AsyncSessionStore(old), args.sessions)
        results: dict[str, Any] = {
            "sessions": args.sessions,
            "batch_size": args.batch_size,
            "batches_in_flight": args.batches_in_flight,
            "raw_requests_in_flight": CONCURRENCY,
        }

        async def raw(table: str, *, guarded: bool = False) -> float:
            await ddb.create_table(**table_definition(table, streams=False))
            in_flight = args.batches_in_flight if guarded else CONCURRENCY
            count, seconds = await raw_ceiling(
                redis, "bench", ddb, table, guarded=guarded, in_flight=in_flight
            )
            return count / seconds

        async def backfill(table: str) -> float:
            return await guarded_backfill(
                old, ddb, table, batch_size=args.batch_size, concurrency=args.batches_in_flight
            )

        # The JVM behind DynamoDB Local speeds up for a while: unmeasured rounds first.
        for warm in range(args.warmup_rounds):
            await raw(f"warmraw{warm}")
            await raw(f"warmtransact{warm}", guarded=True)
            await backfill(f"warmbackfill{warm}")
        for round_ in range(args.rounds):
            # rotate which runs first, so the JVM's drift hits each alike
            runs = [
                ("raw_items_per_s", raw),
                ("raw_guarded_items_per_s", functools.partial(raw, guarded=True)),
                ("backfill_items_per_s", backfill),
            ]
            runs = runs[round_ % 3 :] + runs[: round_ % 3]
            figures: dict[str, float] = {}
            for name, run in runs:
                figures[name] = await run(f"r{round_}{name.split('_items')[0]}")
            figures["ratio"] = figures["backfill_items_per_s"] / figures["raw_items_per_s"]
            figures["ratio_to_guarded_ceiling"] = (
                figures["backfill_items_per_s"] / figures["raw_guarded_items_per_s"]
            )
            figures["guarded_ceiling_ratio"] = (
                figures["raw_guarded_items_per_s"] / figures["raw_items_per_s"]
            )
            results.setdefault("rounds", []).append(figures)
        rounds = results["rounds"]
        for name in ("ratio", "ratio_to_guarded_ceiling", "guarded_ceiling_ratio"):
            results[f"{name}_median"] = sorted(r[name] for r in rounds)[len(rounds) // 2]
        results["unbatched_items_per_s"] = await guarded_backfill(
            old, ddb, "unbatched", batch_size=1, concurrency=CONCURRENCY
        )
        return results


async def bulk_seed(redis: Redis, backend: AsyncRedisBackend, count: int) -> None:
    """Write `count` sessions straight into Redis in pipelines (the store is too slow for 1M).

    Each is a copy of one session made through the store, under its own fresh key.
    """
    template = await AsyncSessionStore(backend).create(attributes(0))
    record = await backend.get(template.key)
    assert record is not None
    fields = record_fields(record)
    mapping = dict(zip(fields[::2], fields[1::2], strict=True))
    expire_ms = expire_at_ms(record.expires_at)
    for start in range(1, count, 2000):
        pipe = redis.pipeline(transaction=False)
        for _ in range(start, min(count, start + 2000)):
            name = backend.redis_key(storage_key(new_session_id()))
            pipe.hset(name, mapping=mapping)
            pipe.pexpireat(name, expire_ms)
        await pipe.execute()


async def backfill_memory(
    sizes: list[int], redis_url: str, *, trace: bool = True
) -> list[dict[str, Any]]:
    figures = []
    async with redis_client(redis_url) as redis:
        for size in sizes:
            await redis.flushdb()
            old = AsyncRedisBackend(redis, prefix="src")
            await bulk_seed(redis, old, size)
            new = AsyncRedisBackend(redis, prefix="dst")
            migration = AsyncMigration(old, new, AsyncMemoryControlPlane(Stage.DUALWRITE))
            if trace:
                tracemalloc.start()
            began = time.perf_counter()
            done = await migration.backfill(page_size=500)
            seconds = time.perf_counter() - began
            _, peak = tracemalloc.get_traced_memory() if trace else (0, 0)
            tracemalloc.stop()
            figures.append(
                {
                    "sessions": size,
                    "copied": done.copied,
                    "peak_mib": peak / 2**20 if trace else None,
                    # the process's high-water mark so far: run one size per process to compare
                    "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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
        await new.ensure_table(streams=False)
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
        parts = set(args.parts.split(","))
        if "throughput" in parts:
            report["backfill_throughput"] = await backfill_throughput(
                args, redis_server.url, dynamodb.endpoint_url
            )
            print(json.dumps(report["backfill_throughput"], indent=1))
        if "latency" in parts:
            report["dual_write_latency"] = await dual_write_latency(
                args, redis_server.url, dynamodb.endpoint_url
            )
            print(json.dumps(report["dual_write_latency"], indent=1))
        if "memory" in parts:
            sizes = [int(s) for s in args.memory_sizes.split(",") if s]
            report["backfill_memory"] = await backfill_memory(
                sizes, redis_server.url, trace=not args.no_tracemalloc
            )
            print(json.dumps(report["backfill_memory"], indent=1))
        return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batches-in-flight", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--memory-sizes", default="10000,100000")
    parser.add_argument("--parts", default="throughput,latency,memory")
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="memory: resident set only (faster)"
    )
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        write_results(arguments.json, result)
