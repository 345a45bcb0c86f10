"""Build each kind of backend the suites run against, on the servers the harness started."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow import (
    AsyncBackend,
    AsyncDynamoDBBackend,
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncRedisBackend,
    BackendMetrics,
    ManualClock,
)
from tests.clients import async_dynamodb_client_at

TABLE = "sessions_contract"


async def async_build_backend(
    kind: str,
    servers: Any,
    clock: ManualClock,
    prefix: str,
    *,
    stack: AsyncExitStack,
    dynamodb_client: Any = None,
) -> AsyncBackend:
    """Return a backend of `kind`; clients it opens are closed with `stack`."""
    if kind == "memory":
        return AsyncMemoryBackend(clock)
    if kind == "instrumented":
        metrics = BackendMetrics(CollectorRegistry())
        return AsyncInstrumentedBackend(AsyncMemoryBackend(clock), name="memory", metrics=metrics)
    if kind == "redis":
        client = await stack.enter_async_context(AsyncRedis(port=servers.redis.port))
        return AsyncRedisBackend(client, prefix=prefix)
    if kind == "redis-cluster":
        cluster = await stack.enter_async_context(
            AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port)
        )
        return AsyncRedisBackend(cluster, prefix=prefix)
    if dynamodb_client is None:
        dynamodb_client = await stack.enter_async_context(
            async_dynamodb_client_at(servers.dynamodb.endpoint_url)
        )
    return AsyncDynamoDBBackend(dynamodb_client, table_name=TABLE)
