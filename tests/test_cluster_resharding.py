"""A Redis Cluster store under traffic while `redis-cli --cluster reshard` moves its slots.

During a move, a slot's keys answer ``ASK`` (keys already moved) or ``MOVED`` (after the
slot changed owner); redis-py follows both, for single commands, for the Lua
compare-and-set scripts and for the auto-pipelined reads. The ledger of acknowledged writes
must match the store afterwards: nothing lost, nothing stale, nothing deleted brought back.
"""

from __future__ import annotations

import asyncio
import collections
import random
import shutil
import subprocess

import pytest
from redis.asyncio.cluster import RedisCluster

from sessionflow import AsyncRedisBackend, AsyncSessionStore
from sessionflow.local_servers import RedisClusterServers

REDIS_CLI = shutil.which("redis-cli")
pytestmark = pytest.mark.skipif(REDIS_CLI is None, reason="needs redis-cli")


def _reshard(port: int, source: str, target: str, slots: int) -> None:
    subprocess.run(
        [REDIS_CLI or "redis-cli", "--cluster", "reshard", f"127.0.0.1:{port}",
         "--cluster-from", source, "--cluster-to", target, "--cluster-slots", str(slots),
         "--cluster-yes", "--cluster-pipeline", "10"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("auto_pipeline", [False, True], ids=["commands", "auto-pipelined"])
async def test_nothing_is_lost_while_slots_move_under_traffic(auto_pipeline: bool) -> None:
    with RedisClusterServers(3) as cluster:
        host, port = cluster.startup_nodes[0]
        client = RedisCluster(host=host, port=port)
        store = AsyncSessionStore(AsyncRedisBackend(client, auto_pipeline=auto_pipeline))
        sessions = [await store.create({"n": 0}) for _ in range(600)]
        expected = {session.id: 0 for session in sessions}
        deleted: set[str] = set()
        locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        failures: list[str] = []
        done = {"operations": 0}
        moving = True

        async def user() -> None:
            while moving:
                session_id = random.choice(sessions).id
                if session_id in deleted or locks[session_id].locked():
                    await asyncio.sleep(0)
                    continue
                async with locks[session_id]:  # one writer per session: an exact ledger
                    try:
                        read = await store.get(session_id, touch=False)
                        if read is None:
                            failures.append("an acknowledged session was missing")
                        elif random.random() < 0.05:
                            await store.delete(read)
                            deleted.add(session_id)
                        else:
                            read["n"] += 1
                            await store.save(read)
                            expected[session_id] += 1
                        done["operations"] += 1
                    except Exception as exc:  # every failure is the finding
                        failures.append(f"{type(exc).__name__}: {exc}")

        users = [asyncio.create_task(user()) for _ in range(8)]
        nodes = [node["node_id"] for node in (await client.cluster_nodes()).values()]
        before = done["operations"]
        for source, target in ((0, 1), (1, 2), (2, 0)):
            await asyncio.to_thread(_reshard, port, nodes[source], nodes[target], 800)
        during = done["operations"] - before
        moving = False
        await asyncio.gather(*users)

        assert failures == []
        assert during > 100  # traffic really ran while the slots moved
        for session_id, count in expected.items():
            read = await store.get(session_id, touch=False)
            if session_id in deleted:
                assert read is None
            else:
                assert read is not None
                assert read["n"] == count
        await client.aclose()
