"""The primaries of a Redis Cluster, for jobs that walk every node (SCAN is per node)."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster


async def cluster_primaries(client: Any) -> list[Any]:  # noqa: ANN401 - any redis-py client
    """Return a Cluster client's primary nodes in a stable order; [] for one server."""
    if not isinstance(client, AsyncRedisCluster):
        return []
    cluster: Any = client  # the sync client's methods are untyped
    nodes = cluster.get_primaries()
    if not nodes:  # an async cluster client learns its nodes on its first command
        await cluster.ping()
        nodes = cluster.get_primaries()
    return sorted(nodes, key=lambda node: str(node.name))
