"""What jobs that SCAN Redis need to know: a Cluster's primaries, and when to scan again.

SCAN is per node and per instance: `scan_source` tells whether what a pass walked held
still, and `keys_in_open_slots` reads the keys of slots that migrate while it runs.
`estimate_keys` says how many keys a scan will find, for a progress bar.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow._concurrency import async_map_limited

logger = logging.getLogger(__name__)

COUNT_SAMPLE = 1024
"""Random keys drawn per server to estimate the share of its keys a scan will find."""
_DRAWS_IN_FLIGHT = 16  # on a Cluster node, where a keyless command cannot be pipelined


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


async def scan_source(client: Any) -> tuple[str, list[list[Any]]]:  # noqa: ANN401 - any redis-py client
    """Return a fingerprint of what a SCAN walks, and the Cluster's slots migrating now.

    SCAN's cursor is only good on the instance that gave it, and promises nothing about a
    key that moves between nodes. The fingerprint holds each server's run id, which a
    restart or a failover changes; on a Cluster, also every primary's config epoch, slots
    and open migrations (a finished slot move bumps an epoch). A pass sees every key if
    the fingerprint held from its first page to its last, except keys of a slot that was
    migrating throughout: `keys_in_open_slots` reads those at the end. Open slots come as
    ``[slot, source node name, target node name]``.
    """
    cluster: Any = client  # the sync client's methods are untyped
    if not isinstance(client, AsyncRedisCluster):
        info = await cluster.info("server")
        return str(info["run_id"]), []
    answers = await cluster.execute_command(
        "CLUSTER NODES", target_nodes=AsyncRedisCluster.PRIMARIES
    )
    if any("node_id" in entry for entry in answers.values()):  # one primary: one answer
        answers = {"": answers}
    names = {
        entry["node_id"]: name for answer in answers.values() for name, entry in answer.items()
    }
    own, open_slots = [], []
    for answer in answers.values():
        for name, entry in answer.items():
            if "myself" not in entry["flags"]:
                continue
            own.append((entry["node_id"], entry["epoch"], entry["slots"], entry["migrations"]))
            open_slots += [
                [int(migration["slot"]), name, names.get(migration["node_id"], "")]
                for migration in entry["migrations"]
                if migration["state"] == "migrating"
            ]
    servers = await cluster.info("server", target_nodes=AsyncRedisCluster.PRIMARIES)
    run_ids = sorted(str(info["run_id"]) for info in servers.values())
    fingerprint = json.dumps([sorted(own), run_ids], sort_keys=True).encode()
    return hashlib.sha256(fingerprint).hexdigest()[:16], sorted(open_slots)


async def watch_source(client: Any, position: dict[str, Any], *, first_page: bool) -> None:  # noqa: ANN401 - any redis-py client
    """Record the scanned source's fingerprint (`scan_source`) in a cursor, once a page.

    The pass is marked disturbed when the fingerprint differs from the one the previous
    page saw, or the cursor predates this record.
    """
    fingerprint, open_slots = await scan_source(client)
    changed = not first_page and (
        position.get("disturbed", True) or position.get("source") != fingerprint
    )
    position.update(source=fingerprint, disturbed=changed, open=open_slots)


def pass_again(position: dict[str, Any]) -> dict[str, Any] | None:
    """At the end of a pass: the source to start another pass with, or None if it held.

    A pass during which a server restarted or failed over, or a Cluster's slots moved,
    may have missed keys.
    """
    if not position.get("disturbed"):
        return None
    logger.warning(
        "the scanned Redis restarted, failed over or moved slots during the scan; "
        "scanning every node again"
    )
    return {"source": position["source"], "disturbed": False}


async def keys_in_open_slots(client: Any, open_slots: list[list[Any]]) -> list[bytes]:  # noqa: ANN401 - a Cluster client
    """Return the names of every key in the slots migrating now, from both their nodes.

    While a slot migrates its keys move one by one from the source to the target, so SCAN
    node by node can miss one that moved to a node it had already scanned. Reading the
    source first and the target second finds a key that moves in between at the target.
    """
    cluster: Any = client  # the sync client's methods are untyped
    found: list[bytes] = []
    for slot, source, target in open_slots:
        for name in (source, target):
            node = cluster.get_node(node_name=name)
            if node is None:
                continue
            count = int(
                await cluster.execute_command("CLUSTER COUNTKEYSINSLOT", slot, target_nodes=node)
            )
            if count:
                names = await cluster.execute_command(
                    "CLUSTER GETKEYSINSLOT", slot, count + _SLACK, target_nodes=node
                )
                found += [n if isinstance(n, bytes) else str(n).encode() for n in names]
    return found


_SLACK = 100  # keys created between the count and the listing (new keys are dual-written)


async def estimate_keys(client: Any, prefix: bytes) -> int:  # noqa: ANN401 - any redis-py client
    """Estimate how many keys of every primary start with `prefix`.

    DBSIZE counts every key of a database, and sessions often share theirs with other data
    (their user indexes are keys too). Each server's DBSIZE is scaled by the share of
    `prefix` among `COUNT_SAMPLE` keys RANDOMKEY draws from it: for a share p the relative
    error's standard deviation is sqrt((1 - p) / (p x COUNT_SAMPLE)), 3% at p = 0.5.
    """
    cluster: Any = client  # the sync client's methods are untyped
    nodes = await cluster_primaries(client)
    if not nodes:
        pipe = cluster.pipeline(transaction=False)
        pipe.dbsize()
        for _ in range(COUNT_SAMPLE):
            pipe.randomkey()
        size, *drawn = await pipe.execute()
        return _scaled(int(size), drawn, prefix)
    total = 0
    for node in nodes:
        size = int(await cluster.execute_command("DBSIZE", target_nodes=node))

        async def draw(_: int, node: Any = node) -> Any:  # noqa: ANN401 - a key or None
            return await cluster.execute_command("RANDOMKEY", target_nodes=node)

        drawn = await async_map_limited(draw, range(COUNT_SAMPLE if size else 0), _DRAWS_IN_FLIGHT)
        total += _scaled(size, drawn, prefix)
    return total


def _scaled(size: int, drawn: list[Any], prefix: bytes) -> int:
    """DBSIZE times the share of the drawn keys that start with the prefix."""
    keys = [
        key if isinstance(key, bytes) else str(key).encode() for key in drawn if key is not None
    ]
    if not keys:
        return 0
    return round(size * sum(key.startswith(prefix) for key in keys) / len(keys))
