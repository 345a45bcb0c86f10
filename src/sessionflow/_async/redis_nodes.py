"""The primaries of a Redis Cluster, for jobs that walk every node (SCAN is per node)."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

logger = logging.getLogger(__name__)


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


async def watch_slot_map(client: Any, position: dict[str, Any], *, first_page: bool) -> None:  # noqa: ANN401 - a Cluster client
    """Record a Cluster's slot map in a scan's cursor `position`, once a page.

    The pass is marked disturbed when the map differs from the one the previous page saw
    (or the cursor predates this record), or while a slot is migrating.
    """
    topology, settled = await cluster_topology(client)
    changed = not first_page and (
        position.get("disturbed", True) or position.get("topology") != topology
    )
    position["topology"], position["disturbed"] = topology, changed or not settled
    position["settled"] = settled


def pass_again(position: dict[str, Any]) -> dict[str, Any] | None:
    """At the end of a pass: the slot map to start another pass with, or None if it held.

    A pass that saw the slot map move may have missed keys that moved to a node already
    scanned; the next pass starts disturbed if a slot is still migrating.
    """
    if not position.get("disturbed"):
        return None
    logger.warning("the Cluster's slots moved during the scan; scanning every node again")
    return {"topology": position["topology"], "disturbed": not position.get("settled", False)}
