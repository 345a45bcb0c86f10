"""The primaries of a Redis Cluster, for jobs that walk every node (SCAN is per node)."""

from __future__ import annotations

import hashlib
import json
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


async def cluster_topology(client: Any) -> tuple[str, bool]:  # noqa: ANN401 - a Cluster client
    """Return a fingerprint of a Cluster's slot map, and whether the map is settled.

    The fingerprint changes when a slot changes owner (each move bumps a config epoch), a
    node comes or goes, or a slot migration opens or closes; the map is not settled while a
    slot is migrating. A SCAN of every primary sees every key only if the map was the same,
    and settled, from the first page to the last: SCAN promises nothing about a key that
    moved between nodes meanwhile.
    """
    cluster: Any = client  # the sync client's methods are untyped
    answers = await cluster.execute_command(
        "CLUSTER NODES", target_nodes=AsyncRedisCluster.PRIMARIES
    )
    if any("node_id" in entry for entry in answers.values()):  # one primary: one answer
        answers = {"": answers}
    own = sorted(
        (entry["node_id"], entry["epoch"], entry["slots"], entry["migrations"])
        for answer in answers.values()
        for entry in answer.values()
        if "myself" in entry["flags"]
    )
    settled = not any(migrations for *_, migrations in own)
    return hashlib.sha256(json.dumps(own, sort_keys=True).encode()).hexdigest()[:16], settled
