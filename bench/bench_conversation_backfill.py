"""Conversation-list backfill benchmarks: throughput into DynamoDB Local, memory of a big owner.

    python bench/bench_conversation_backfill.py [--entries 20000] [--rounds 3]
                                                [--owner-sizes 10000,100000] [--json out.json]

1. Throughput, Redis -> DynamoDB Local: sessionflow's guarded backfill (HSCAN pages, one
   conditional PutItem per entry with the version guard, checkpoints) against the raw
   ceiling measured in the same run on the same entries: SCAN the owners' hashes, HGETALL
   each in one pipeline, `batch_write_item` of 25 items into an empty table with the same
   number of requests in flight (no guard possible: BatchWriteItem takes no conditions).
   Entries are spread over owners of 50, like the drill's.
2. Memory: peak Python allocations (tracemalloc) of a backfill and a full verify of one
   owner with each size, Redis -> Redis under another prefix; flat means the job streams.
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
from _results import write_results
from redis.asyncio import Redis

from sessionflow import AsyncMemoryControlPlane, Stage, dynamodb_client_config
from sessionflow._async.conversations.dynamodb import (
    AsyncDynamoDBConversations,
    conversation_table,
)
from sessionflow._async.conversations.redis import AsyncRedisConversations
from sessionflow._async.migration import AsyncMigration
from sessionflow._redis_clients import redis_client
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisServer

IN_FLIGHT = 32
PER_OWNER = 50


async def bulk_seed(redis: Redis, store: AsyncRedisConversations, owners: dict[str, int]) -> None:
    """Write entries straight into the owners' hashes and sorted sets, in pipelines."""
    for owner, count in owners.items():
        ranked, data = store.keys(owner)
        for start in range(0, count, 5000):
            chunk = range(start, min(count, start + 5000))
            pipe = redis.pipeline(transaction=False)
            pipe.hset(
                data,
                mapping={
                    f"opponent-{i:07d}": f'1:{1.7e9 + i}:0:{{"last":"hi","unread":{i % 7}}}'
                    for i in chunk
                },
            )
            pipe.zadd(ranked, {f"opponent-{i:07d}": 1.7e9 + i for i in chunk})
            await pipe.execute()


def _item(owner: str, opponent: str, raw: bytes) -> dict[str, Any]:
    version, when, _, metadata = raw.split(b":", 3)
    return {
        "owner_id": {"S": owner},
        "opponent_id": {"S": opponent},
        "ts": {"N": when.decode()},
        "v": {"N": version.decode()},
        "meta": {"S": metadata.decode()},
    }


async def raw_ceiling(redis: Redis, prefix: str, ddb: Any, table: str) -> int:
    """Scan the owners' hashes, HGETALL them in pipelines, batch_write_item 25 at a time."""
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=IN_FLIGHT * 2)
    written = 0

    async def writer() -> None:
        nonlocal written
        while (batch := await queue.get()) is not None:
            request = {table: [{"PutRequest": {"Item": item}} for item in batch]}
            while request:
                response = await ddb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}
            written += len(batch)

    writers = [asyncio.create_task(writer()) for _ in range(IN_FLIGHT)]
    start = len(f"{prefix}:conv:{{")
    cursor = 0
    while True:
        cursor, names = await redis.scan(cursor, match=f"{prefix}:conv:{{*}}:data", count=100)
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        items = [
            _item(name.decode()[start : -len("}:data")], opponent.decode(), raw)
            for name, fields in zip(names, await pipe.execute(), strict=True)
            for opponent, raw in fields.items()
        ]
        for at in range(0, len(items), 25):
            await queue.put(items[at : at + 25])
        if cursor == 0:
            break
    for _ in writers:
        await queue.put(None)
    await asyncio.gather(*writers)
    return written


async def throughput(args: argparse.Namespace, redis_url: str, endpoint: str) -> dict[str, Any]:
    session = aioboto3.Session(**DUMMY_AWS)
    config = dynamodb_client_config(max_pool_connections=IN_FLIGHT * 2, read_timeout=30)
    async with (
        redis_client(redis_url) as redis,
        session.client("dynamodb", endpoint_url=endpoint, config=config) as ddb,
    ):
        old = AsyncRedisConversations(redis, prefix="bench")
        owners = {f"owner-{i:06d}": PER_OWNER for i in range(args.entries // PER_OWNER)}
        await bulk_seed(redis, old, owners)
        total = PER_OWNER * len(owners)

        async def raw(table: str) -> float:
            await ddb.create_table(**conversation_table(table))
            began = time.perf_counter()
            count = await raw_ceiling(redis, "bench", ddb, table)
            assert count == total, count
            return count / (time.perf_counter() - began)

        async def guarded(table: str) -> float:
            new = AsyncDynamoDBConversations(ddb, table_name=table)
            await new.ensure_table()
            migration = AsyncMigration.for_conversations(
                old, new, AsyncMemoryControlPlane(Stage.DUALWRITE)
            )
            began = time.perf_counter()
            done = await migration.backfill(
                page_size=500, batch_size=args.batch_size, concurrency=args.batches_in_flight
            )
            assert done.copied == total, done.copied
            return done.copied / (time.perf_counter() - began)

        await raw("warmraw")  # the JVM behind DynamoDB Local speeds up for a while
        await guarded("warmguarded")
        rounds = []
        for round_ in range(args.rounds):
            names = (f"raw{round_}", f"guarded{round_}")
            if round_ % 2:  # alternate which runs first
                guarded_rate = await guarded(names[1])
                raw_rate = await raw(names[0])
            else:
                raw_rate = await raw(names[0])
                guarded_rate = await guarded(names[1])
            rounds.append(
                {
                    "raw_items_per_s": raw_rate,
                    "backfill_items_per_s": guarded_rate,
                    "ratio": guarded_rate / raw_rate,
                }
            )
        return {
            "entries": total,
            "owners": len(owners),
            "batch_size": args.batch_size,
            "batches_in_flight": args.batches_in_flight,
            "raw_requests_in_flight": IN_FLIGHT,
            "rounds": rounds,
            "ratio_median": sorted(r["ratio"] for r in rounds)[len(rounds) // 2],
        }


async def memory(sizes: list[int], redis_url: str) -> list[dict[str, Any]]:
    figures = []
    async with redis_client(redis_url) as redis:
        for size in sizes:
            await redis.flushdb()
            old = AsyncRedisConversations(redis, prefix="src")
            await bulk_seed(redis, old, {"big-owner": size})
            new = AsyncRedisConversations(redis, prefix="dst")
            migration = AsyncMigration.for_conversations(
                old, new, AsyncMemoryControlPlane(Stage.DUALWRITE)
            )
            tracemalloc.start()
            began = time.perf_counter()
            done = await migration.backfill(page_size=500)
            backfill_seconds = time.perf_counter() - began
            _, backfill_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            report = await migration.verify(mode="full", recheck_delay=0)
            _, verify_peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert done.copied == size, done.copied
            assert report.inconsistent == 0, report.inconsistent
            figures.append(
                {
                    "owner_entries": size,
                    "backfill_peak_mib": backfill_peak / 2**20,
                    "verify_peak_mib": verify_peak / 2**20,
                    "backfill_entries_per_s_traced": size / backfill_seconds,
                }
            )
    return figures


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as redis_server, DynamoDBLocal() as dynamodb:
        report: dict[str, Any] = {
            "machine": platform.platform(),
            "python": platform.python_version(),
        }
        parts = set(args.parts.split(","))
        if "throughput" in parts:
            report["throughput"] = await throughput(args, redis_server.url, dynamodb.endpoint_url)
            print(json.dumps(report["throughput"], indent=1))
        if "memory" in parts:
            sizes = [int(s) for s in args.owner_sizes.split(",") if s]
            report["memory"] = await memory(sizes, redis_server.url)
            print(json.dumps(report["memory"], indent=1))
        return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batches-in-flight", type=int, default=4)
    parser.add_argument("--owner-sizes", default="10000,100000")
    parser.add_argument("--parts", default="throughput,memory")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    if arguments.json:
        write_results(arguments.json, result)
