"""Build each kind of backend the suites run against, on the servers the harness started."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow import (
    AsyncBackend,
    AsyncDynamoDBBackend,
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncMemoryControlPlane,
    AsyncMemoryTierIndex,
    AsyncMigratingBackend,
    AsyncRedisBackend,
    AsyncRedisTierIndex,
    AsyncTieredBackend,
    BackendMetrics,
    Durability,
    ManualClock,
    Stage,
)
from tests.clients import async_dynamodb_client_at

TABLE = "sessions_contract"
# True here, False in the generated sync copy: auto-pipelining needs an event loop.
AUTO_PIPELINE = "Async" in AsyncRedisBackend.__name__


async def async_build_backend(  # noqa: PLR0911 - one return per kind
    kind: str,
    servers: Any,
    clock: ManualClock,
    prefix: str,
    *,
    stack: AsyncExitStack,
    dynamodb_client: Any = None,
) -> AsyncBackend:
    """Return a backend of `kind`; clients it opens are closed with `stack`.

    ``migrating-<stage>`` is a migrating backend from memory to memory at that stage;
    ``redis-to-dynamodb-<stage>`` the headline pair on the real servers.
    """
    if kind.startswith(("migrating-", "redis-to-dynamodb-")):
        pair, _, stage = kind.rpartition("-")
        old_kind, new_kind = ("memory", "memory") if pair == "migrating" else ("redis", "dynamodb")
        old = await async_build_backend(
            old_kind, servers, clock, prefix, stack=stack, dynamodb_client=dynamodb_client
        )
        new = await async_build_backend(
            new_kind, servers, clock, prefix, stack=stack, dynamodb_client=dynamodb_client
        )
        control = AsyncMemoryControlPlane(Stage(stage))
        migrating = AsyncMigratingBackend(old, new, control, clock=clock, compare_sample=1.0)
        return await stack.enter_async_context(migrating)
    if kind.startswith(("tiered-", "redis-dynamodb-tiered-")):
        return await _async_tiered(
            kind, servers, clock, prefix, stack=stack, dynamodb_client=dynamodb_client
        )
    if kind == "memory":
        return AsyncMemoryBackend(clock)
    if kind == "instrumented":
        metrics = BackendMetrics(CollectorRegistry())
        return AsyncInstrumentedBackend(AsyncMemoryBackend(clock), name="memory", metrics=metrics)
    if kind == "redis":
        client = await stack.enter_async_context(AsyncRedis(port=servers.redis.port))
        return AsyncRedisBackend(client, prefix=prefix)
    if kind in ("redis-pipelined", "redis-cluster-pipelined"):
        if not AUTO_PIPELINE:
            pytest.skip("auto-pipelining coalesces the reads of an event loop: async only")
        client = await stack.enter_async_context(
            AsyncRedis(port=servers.redis.port)
            if kind == "redis-pipelined"
            else AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port)
        )
        pipelined = AsyncRedisBackend(client, prefix=prefix, auto_pipeline=True)
        stack.push_async_callback(pipelined.aclose)  # its read connection, before the client
        return pipelined
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


async def _async_tiered(
    kind: str,
    servers: Any,
    clock: ManualClock,
    prefix: str,
    *,
    stack: AsyncExitStack,
    dynamodb_client: Any,
) -> AsyncBackend:
    """``tiered-<policy>`` on memory tiers; ``redis-dynamodb-tiered-<policy>`` on the servers.

    ``<policy>`` ``background`` is write-back with promotions after the answer.
    """
    policy = kind.rpartition("tiered-")[2]
    background = policy == "background"
    durability = Durability.WRITE_BACK if background else Durability(policy)
    if kind.startswith("tiered-"):
        hot: Any = AsyncMemoryBackend(clock)
        cold: Any = AsyncMemoryBackend(clock)
        index: Any = AsyncMemoryTierIndex()
    else:
        client = await stack.enter_async_context(AsyncRedis(port=servers.redis.port))
        hot = AsyncRedisBackend(client, prefix=prefix)
        cold = await async_build_backend(
            "dynamodb", servers, clock, prefix, stack=stack, dynamodb_client=dynamodb_client
        )
        index = AsyncRedisTierIndex(client, prefix=prefix)
    tiered = AsyncTieredBackend(
        hot, cold, index, durability=durability, clock=clock, background_promotions=background
    )
    stack.push_async_callback(tiered.settle)  # before the clients close
    return tiered
