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


async def scan_source(client: Any) -> tuple[str, bool]:  # noqa: ANN401 - any redis-py client
    """Return a fingerprint of what a SCAN walks, and whether it is settled.

    SCAN's cursor is only good on the instance that gave it, and promises nothing about a
    key that moves between nodes. The fingerprint holds each server's run id, which a
    restart or a failover changes; on a Cluster, also every primary's config epoch, slots
    and open migrations (a slot move bumps an epoch). The source is not settled while a
    slot is migrating. A pass sees every key only if the fingerprint held, settled, from
    its first page to its last.
    """
    cluster: Any = client  # the sync client's methods are untyped
    if not isinstance(client, AsyncRedisCluster):
        info = await cluster.info("server")
        return str(info["run_id"]), True
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
    servers = await cluster.info("server", target_nodes=AsyncRedisCluster.PRIMARIES)
    run_ids = sorted(str(info["run_id"]) for info in servers.values())
    settled = not any(migrations for *_, migrations in own)
    fingerprint = json.dumps([own, run_ids], sort_keys=True).encode()
    return hashlib.sha256(fingerprint).hexdigest()[:16], settled


async def watch_source(client: Any, position: dict[str, Any], *, first_page: bool) -> None:  # noqa: ANN401 - any redis-py client
    """Record the scanned source's fingerprint (`scan_source`) in a cursor, once a page.

    The pass is marked disturbed when the fingerprint differs from the one the previous
    page saw (or the cursor predates this record), or while the source is not settled.
    """
    fingerprint, settled = await scan_source(client)
    changed = not first_page and (
        position.get("disturbed", True) or position.get("source") != fingerprint
    )
    position["source"], position["disturbed"] = fingerprint, changed or not settled
    position["settled"] = settled


def pass_again(position: dict[str, Any]) -> dict[str, Any] | None:
    """At the end of a pass: the source to start another pass with, or None if it held.

    A pass during which a server restarted or failed over, or a Cluster's slots moved,
    may have missed keys; the next pass starts disturbed if a slot is still migrating.
    """
    if not position.get("disturbed"):
        return None
    logger.warning(
        "the scanned Redis restarted, failed over or moved slots during the scan; "
        "scanning every node again"
    )
    return {"source": position["source"], "disturbed": not position.get("settled", False)}
