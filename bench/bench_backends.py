"""sessionflow against the raw clients, same server, same connection, same run.

    python bench/bench_backends.py [--ops 3000] [--rounds 5] [--json out.json]

Redis: the backend's `get` vs HGETALL of the same hash; the backend's `save` (one attribute
changed, version-checked in Lua) vs a pipelined HSET + EXPIRE of the same fields; sync
(redis-py) and async (redis.asyncio), one connection, one request at a time. DynamoDB
Local: `get` vs boto3 `get_item` (both strongly consistent) and `save` vs `put_item` of an
item of the same size, plus `put_item` carrying the same condition, which separates the
server's cost of a conditional write from ours. The store's `get` and `save` (id check and
hash, expiry, decoding, change detection) are measured beside them against the same raw
call. Rounds alternate raw and sessionflow so drift hits both; the figure is the median.
Sessions look like the case study's: user id, page, page views, last activity, login time,
and a small cart.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import boto3
import redis
import redis.asyncio
from _results import write_results

from sessionflow import (
    AsyncRedisBackend,
    AsyncSessionStore,
    Codec,
    DynamoDBBackend,
    RedisBackend,
    SessionRecord,
    SessionStore,
    dynamodb_client_config,
)
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisServer


def case_study_attributes(index: int) -> dict[str, object]:
    return {
        "username": f"user_{index}",
        "email": f"user_{index}@example.com",
        "current_page": "/products/laptop",
        "page_views": 15,
        "login_time": 1673120000.123,
        "cart": {"items": ["laptop-123|2|999.99", "mouse-456|1|29.99"], "total": "1029.97"},
    }


@dataclass
class Measured:
    name: str
    ops_per_second: float
    p50_us: float
    p99_us: float


@dataclass
class Comparison:
    """sessionflow against the raw call; `ratio` is the median of per-round throughput ratios."""

    what: str
    raw: Measured
    sessionflow: Measured
    target: float
    ratio: float


def _summarise(name: str, rounds: list[list[float]]) -> Measured:
    rates = [len(r) / sum(r) for r in rounds]
    median_round = sorted(rounds, key=lambda r: len(r) / sum(r))[len(rounds) // 2]
    cuts = statistics.quantiles(median_round, n=100)
    return Measured(name, statistics.median(rates), cuts[49] * 1e6, cuts[98] * 1e6)


def _time_each(calls: list[Callable[[], object]]) -> list[float]:
    out = []
    clock = time.perf_counter
    for call in calls:
        start = clock()
        call()
        out.append(clock() - start)
    return out


async def _atime_each(calls: list[Callable[[], Awaitable[object]]]) -> list[float]:
    out = []
    clock = time.perf_counter
    for call in calls:
        start = clock()
        await call()
        out.append(clock() - start)
    return out


BATCH = 50  # raw and sessionflow alternate every BATCH operations, so drift hits both


def _rate(latencies: list[float]) -> float:
    return len(latencies) / sum(latencies)


def _comparison(
    what: str, raw_rounds: list[list[float]], our_rounds: list[list[float]], target: float
) -> Comparison:
    paired = [_rate(o) / _rate(r) for r, o in zip(raw_rounds, our_rounds, strict=True)]
    return Comparison(
        what,
        _summarise("raw", raw_rounds),
        _summarise("sessionflow", our_rounds),
        target,
        statistics.median(paired),
    )


def compare_sync(
    what: str,
    raw: Callable[[int], Callable[[], object]],
    ours: Callable[[int], Callable[[], object]],
    ops: int,
    rounds: int,
    target: float,
) -> Comparison:
    _time_each([raw(i) for i in range(min(ops, 200))])  # warm both paths
    _time_each([ours(i) for i in range(min(ops, 200))])
    raw_rounds, our_rounds = [], []
    for _ in range(rounds):
        raw_latencies: list[float] = []
        our_latencies: list[float] = []
        for start in range(0, ops, BATCH):
            batch = range(start, min(ops, start + BATCH))
            raw_latencies += _time_each([raw(i) for i in batch])
            our_latencies += _time_each([ours(i) for i in batch])
        raw_rounds.append(raw_latencies)
        our_rounds.append(our_latencies)
    return _comparison(what, raw_rounds, our_rounds, target)


async def compare_async(
    what: str,
    raw: Callable[[int], Callable[[], Awaitable[object]]],
    ours: Callable[[int], Callable[[], Awaitable[object]]],
    ops: int,
    rounds: int,
    target: float,
) -> Comparison:
    await _atime_each([raw(i) for i in range(min(ops, 200))])
    await _atime_each([ours(i) for i in range(min(ops, 200))])
    raw_rounds, our_rounds = [], []
    for _ in range(rounds):
        raw_latencies: list[float] = []
        our_latencies: list[float] = []
        for start in range(0, ops, BATCH):
            batch = range(start, min(ops, start + BATCH))
            raw_latencies += await _atime_each([raw(i) for i in batch])
            our_latencies += await _atime_each([ours(i) for i in batch])
        raw_rounds.append(raw_latencies)
        our_rounds.append(our_latencies)
    return _comparison(what, raw_rounds, our_rounds, target)


def _bumped(record: SessionRecord, codec: Codec, views: int) -> SessionRecord:
    """The record a save of one changed attribute (page_views) writes."""
    attributes = dict(record.attributes)
    attributes["page_views"] = codec.encode("page_views", views).stored
    return record._replace(version=record.version + 1, attributes=attributes)


def redis_sync(port: int, ops: int, rounds: int) -> list[Comparison]:
    client = redis.Redis(port=port, single_connection_client=True)
    backend = RedisBackend(client, prefix="bench")
    store = SessionStore(backend)
    sessions = [store.create(case_study_attributes(i), user_id=f"u{i}") for i in range(ops)]
    records = [backend.get(s.key) for s in sessions]
    keys = [backend.redis_key(s.key) for s in sessions]
    raw_keys = [f"raw:{{{s.key}}}" for s in sessions]
    for key, raw_key in zip(keys, raw_keys, strict=True):
        client.hset(raw_key, mapping=client.hgetall(key))

    def raw_get(i: int) -> Callable[[], object]:
        return lambda: client.hgetall(keys[i])

    def raw_save(i: int) -> Callable[[], object]:
        def call() -> object:
            pipe = client.pipeline(transaction=False)
            pipe.hset(
                raw_keys[i], mapping={"a:page_views": str(i).encode(), "_a": b"1.0", "_i": b"2.0"}
            )
            pipe.expire(raw_keys[i], 1800)
            return pipe.execute()

        return call

    def backend_get(i: int) -> Callable[[], object]:
        return lambda: backend.get(sessions[i].key)

    def backend_save(i: int) -> Callable[[], object]:
        def call() -> object:
            current = records[i]
            assert current is not None
            new = _bumped(current, store.codec, current.version)
            backend.save(new, expected_version=current.version, changed=("page_views",), removed=())
            records[i] = new
            return new

        return call

    def store_get(i: int) -> Callable[[], object]:
        return lambda: store.get(sessions[i].id)

    def store_save(i: int) -> Callable[[], object]:
        def call() -> object:
            session = sessions[i]
            session["page_views"] = session["page_views"] + 1
            return store.save(session)

        return call

    result = [
        compare_sync("redis backend get (sync)", raw_get, backend_get, ops, rounds, 0.90),
        compare_sync("redis backend save (sync)", raw_save, backend_save, ops, rounds, 0.80),
    ]
    sessions[:] = [store.get(s.id) for s in sessions]  # the backend rows moved versions on
    result += [
        compare_sync("redis store get (sync)", raw_get, store_get, ops, rounds, 0.0),
        compare_sync("redis store save (sync)", raw_save, store_save, ops, rounds, 0.0),
    ]
    client.close()
    return result


async def redis_async(port: int, ops: int, rounds: int) -> list[Comparison]:
    client = redis.asyncio.Redis(port=port, single_connection_client=True)
    backend = AsyncRedisBackend(client, prefix="abench")
    store = AsyncSessionStore(backend)
    sessions = [await store.create(case_study_attributes(i), user_id=f"u{i}") for i in range(ops)]
    records = [await backend.get(s.key) for s in sessions]
    keys = [backend.redis_key(s.key) for s in sessions]
    raw_keys = [f"araw:{{{s.key}}}" for s in sessions]
    for key, raw_key in zip(keys, raw_keys, strict=True):
        await client.hset(raw_key, mapping=await client.hgetall(key))

    def raw_get(i: int) -> Callable[[], Awaitable[object]]:
        return lambda: client.hgetall(keys[i])

    def raw_save(i: int) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            pipe = client.pipeline(transaction=False)
            pipe.hset(
                raw_keys[i], mapping={"a:page_views": str(i).encode(), "_a": b"1.0", "_i": b"2.0"}
            )
            pipe.expire(raw_keys[i], 1800)
            return await pipe.execute()

        return call

    def backend_get(i: int) -> Callable[[], Awaitable[object]]:
        return lambda: backend.get(sessions[i].key)

    def backend_save(i: int) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            current = records[i]
            assert current is not None
            new = _bumped(current, store.codec, current.version)
            await backend.save(
                new, expected_version=current.version, changed=("page_views",), removed=()
            )
            records[i] = new
            return new

        return call

    def store_get(i: int) -> Callable[[], Awaitable[object]]:
        return lambda: store.get(sessions[i].id)

    def store_save(i: int) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            session = sessions[i]
            session["page_views"] = session["page_views"] + 1
            return await store.save(session)

        return call

    result = [
        await compare_async("redis backend get (async)", raw_get, backend_get, ops, rounds, 0.90),
        await compare_async(
            "redis backend save (async)", raw_save, backend_save, ops, rounds, 0.80
        ),
    ]
    sessions[:] = [await store.get(s.id) for s in sessions]  # the backend rows moved versions on
    result += [
        await compare_async("redis store get (async)", raw_get, store_get, ops, rounds, 0.0),
        await compare_async("redis store save (async)", raw_save, store_save, ops, rounds, 0.0),
    ]
    await client.aclose()
    return result


def dynamodb_sync(endpoint: str, ops: int, rounds: int) -> list[Comparison]:
    client = boto3.client(
        "dynamodb", endpoint_url=endpoint, config=dynamodb_client_config(), **DUMMY_AWS
    )
    table = "bench_sessions"
    backend = DynamoDBBackend(client, table_name=table)
    backend.ensure_table()
    store = SessionStore(backend)
    sessions = [store.create(case_study_attributes(i), user_id=f"u{i}") for i in range(ops)]
    records = [backend.get(s.key) for s in sessions]
    items = [
        client.get_item(TableName=table, Key={"session_id": {"S": s.key}}, ConsistentRead=True)[
            "Item"
        ]
        for s in sessions
    ]
    raw_items = [
        {**item, "session_id": {"S": "raw" + item["session_id"]["S"][3:]}} for item in items
    ]
    for item in raw_items:
        client.put_item(TableName=table, Item=item)

    def raw_get(i: int) -> Callable[[], object]:
        key = {"session_id": items[i]["session_id"]}
        return lambda: client.get_item(TableName=table, Key=key, ConsistentRead=True)

    def raw_put(i: int) -> Callable[[], object]:
        return lambda: client.put_item(TableName=table, Item=raw_items[i])

    def raw_conditional_put(i: int) -> Callable[[], object]:
        def call() -> object:
            item = raw_items[i]
            version = int(item["version"]["N"])
            raw_items[i] = {**item, "version": {"N": str(version + 1)}}
            return client.put_item(
                TableName=table,
                Item=raw_items[i],
                ConditionExpression="#v = :expected AND attribute_not_exists(tombstone)",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":expected": {"N": str(version)}},
            )

        return call

    def backend_get(i: int) -> Callable[[], object]:
        return lambda: backend.get(sessions[i].key)

    def backend_save(i: int) -> Callable[[], object]:
        def call() -> object:
            current = records[i]
            assert current is not None
            new = _bumped(current, store.codec, current.version)
            backend.save(new, expected_version=current.version, changed=("page_views",), removed=())
            records[i] = new
            return new

        return call

    def store_get(i: int) -> Callable[[], object]:
        return lambda: store.get(sessions[i].id)

    # Warm the JVM: DynamoDB Local's first thousands of requests run slower.
    _time_each(
        [raw_get(i % ops) for i in range(3 * ops)] + [raw_put(i % ops) for i in range(3 * ops)]
    )
    result = [
        compare_sync("dynamodb backend get (sync)", raw_get, backend_get, ops, rounds, 0.90),
        compare_sync("dynamodb backend save vs put_item", raw_put, backend_save, ops, rounds, 0.80),
        compare_sync(
            "dynamodb backend save vs conditional put_item",
            raw_conditional_put,
            backend_save,
            ops,
            rounds,
            0.80,
        ),
        compare_sync("dynamodb store get (sync)", raw_get, store_get, ops, rounds, 0.0),
    ]
    client.close()
    return result


def render(comparisons: list[Comparison]) -> str:
    lines = [
        (
            "| operation | raw ops/s | sessionflow ops/s | ratio | target "
            "| raw p50 / p99 (us) | sessionflow p50 / p99 (us) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        verdict = "" if not c.target else " ok" if c.ratio >= c.target else " BELOW"
        lines.append(
            f"| {c.what} | {c.raw.ops_per_second:,.0f} | {c.sessionflow.ops_per_second:,.0f} | "
            f"{c.ratio:.2f}{verdict} | {f'>= {c.target:.2f}' if c.target else 'none'} | "
            f"{c.raw.p50_us:.0f} / {c.raw.p99_us:.0f} | "
            f"{c.sessionflow.p50_us:.0f} / {c.sessionflow.p99_us:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=3000, help="operations per round (Redis)")
    parser.add_argument(
        "--dynamodb-ops", type=int, default=800, help="operations per round (DynamoDB)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--skip-dynamodb", action="store_true")
    args = parser.parse_args()

    comparisons: list[Comparison] = []
    with RedisServer() as server:
        comparisons += redis_sync(server.port, args.ops, args.rounds)
        comparisons += asyncio.run(redis_async(server.port, args.ops, args.rounds))
        redis_version = redis.Redis(port=server.port).info("server")["redis_version"]
    if not args.skip_dynamodb:
        with DynamoDBLocal() as ddb:
            comparisons += dynamodb_sync(ddb.endpoint_url, args.dynamodb_ops, args.rounds)
    print(
        f"python {platform.python_version()}, redis-py {redis.__version__}, server {redis_version}"
    )
    print(render(comparisons))
    if args.json:
        write_results(args.json, [asdict(c) for c in comparisons])


if __name__ == "__main__":
    main()
