"""Conversation lists: the newest 50 of an owner's conversations against the raw client.

    python bench/bench_conversations.py [--conversations 1000] [--requests 1000] [--json out.json]

On a real Redis and DynamoDB Local started here. For each backend, `list(owner, limit=50)`
against the same read done with the raw client in the same run, alternating blocks of 50:

- Redis: ``ZRANGE key +inf -inf BYSCORE REV LIMIT 0 51`` and ``HMGET`` of those members
  (the two round trips the backend makes), with redis-py;
- DynamoDB: ``Query`` on the ``by_time`` index, ``ScanIndexForward=False``, ``Limit=51``,
  the tombstone filter and a consistent read, with boto3.

Both fetch one entry more than they return, to know whether another page follows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import redis
from _results import write_results
from hdrh.histogram import HdrHistogram

from sessionflow import DynamoDBConversations, RedisConversations, dynamodb_client_config
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisServer

PAGE = 50


def timed(histogram: HdrHistogram, call: Callable[[], Any]) -> None:
    started = time.perf_counter()
    call()
    histogram.record_value(max(1, int((time.perf_counter() - started) * 1_000_000)))


def summary(histogram: HdrHistogram) -> dict[str, int]:
    return {f"p{p}_us": int(histogram.get_value_at_percentile(p)) for p in (50, 95, 99)}


def compare(ours: Callable[[], Any], raw: Callable[[], Any], requests: int) -> dict[str, Any]:
    for _ in range(50):  # warm-up, unmeasured
        ours()
        raw()
    histograms = {
        "sessionflow": HdrHistogram(1, 10_000_000, 3),
        "raw": HdrHistogram(1, 10_000_000, 3),
    }
    for _ in range(0, requests, 50):
        for _ in range(50):
            timed(histograms["raw"], raw)
        for _ in range(50):
            timed(histograms["sessionflow"], ours)
    out: dict[str, Any] = {name: summary(h) for name, h in histograms.items()}
    for p in ("p50_us", "p95_us"):
        out[f"{p[:3]}_ratio"] = out["sessionflow"][p] / out["raw"][p]
    return out


def seed(backend: Any, owner: str, conversations: int) -> None:
    for i in range(conversations):
        backend.record(
            owner, f"opponent-{i:06d}", {"last": f"message {i}", "unread": i % 7}, 1e9 + i
        )


def bench_redis(conversations: int, requests: int) -> dict[str, Any]:
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        backend = RedisConversations(client, prefix="bench")
        seed(backend, "owner", conversations)
        ranked, data = backend.keys("owner")

        def raw() -> Any:
            members = client.zrange(ranked, "+inf", "-inf", byscore=True, desc=True, offset=0,
                                    num=PAGE + 1)  # fmt: skip
            return client.hmget(data, members[:PAGE])

        page = backend.list("owner", limit=PAGE)
        assert len(page.items) == PAGE
        assert page.cursor is not None
        result = compare(lambda: backend.list("owner", limit=PAGE), raw, requests)
        client.close()
        return result


def bench_dynamodb(conversations: int, requests: int) -> dict[str, Any]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    with DynamoDBLocal() as server:
        client = boto3.client("dynamodb", endpoint_url=server.endpoint_url,
                              config=dynamodb_client_config(), **DUMMY_AWS)  # fmt: skip
        backend = DynamoDBConversations(client, table_name="bench-conversations")
        backend.ensure_table()
        seed(backend, "owner", conversations)

        def raw() -> Any:
            return client.query(
                TableName="bench-conversations", IndexName="by_time",
                KeyConditionExpression="owner_id = :o",
                FilterExpression="attribute_not_exists(deleted)",
                ExpressionAttributeValues={":o": {"S": "owner"}}, ScanIndexForward=False,
                Limit=PAGE + 1, ConsistentRead=True,
            )  # fmt: skip

        page = backend.list("owner", limit=PAGE)
        assert len(page.items) == PAGE
        assert page.cursor is not None
        return compare(lambda: backend.list("owner", limit=PAGE), raw, requests)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {
        "python": sys.version.split()[0],
        "redis": bench_redis(args.conversations, args.requests),
        "dynamodb": bench_dynamodb(args.conversations, args.requests),
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        write_results(args.json, results)


if __name__ == "__main__":
    main()
