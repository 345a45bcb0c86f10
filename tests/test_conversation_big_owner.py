"""An owner with 100,000 conversations migrates and verifies a page at a time (Redis to Cluster).

Async only (the sync flavour runs the same engine code): the heaviest test of the suite.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from sessionflow._stages import Stage
from tests._async.test_conversation_migration import _move, _owner


async def test_an_owner_with_100k_conversations_moves_a_page_at_a_time(servers: Any) -> None:
    """Redis to Redis Cluster: HSCAN in pages, never the whole set in one reply.

    Memory then stays at a page whatever the owner's size; bench_conversation_backfill.py
    measures the peak at 10k and 100k (docs/benchmarks.md).
    """
    async with AsyncExitStack() as stack:
        move = await _move("redis>redis-cluster", servers, stack)
        owner, size = _owner(), 100_000
        ranked, data = move.old.keys(owner)
        redis = move.stores.redis
        for start in range(0, size, 5000):
            chunk = range(start, min(start + 5000, size))
            await redis.hset(
                data, mapping={f"op-{i:06d}": f'1:{i}.0:0:{{"i":{i}}}'.encode() for i in chunk}
            )
            await redis.zadd(ranked, {f"op-{i:06d}": float(i) for i in chunk})
        await move.set_stage(Stage.DUALWRITE)
        backfill_pages: list[int] = []
        verify_pages: list[int] = []
        progress = await move.migration.backfill(
            page_size=1000,
            batch_size=250,
            progress=lambda p: backfill_pages.append(p.scanned - sum(backfill_pages)),
        )
        report = await move.migration.verify(
            mode="full",
            page_size=1000,
            recheck_delay=0,
            progress=lambda r: verify_pages.append(r.checked - sum(verify_pages)),
        )
        assert progress.copied == size
        assert (report.checked, report.inconsistent) == (size, 0)
        # HSCAN's COUNT is a hint: pages come near the asked size, never the whole hash.
        assert len(backfill_pages) >= 50
        assert max(backfill_pages) <= 2000
        assert max(verify_pages) <= 2000
        page = await move.new.list(owner, limit=3)
        assert [e.opponent for e in page.items] == ["op-099999", "op-099998", "op-099997"]
