"""A cancellation a client library loses still stops a long job at its next step.

On Python 3.11 `asyncio.wait_for` returns the result instead of raising when the work it
waits for finishes in the loop turn the cancellation arrives in, and redis-py sends every
command through it. A Ctrl-C or SIGTERM landing there was lost and a backfill or a
verification ran on to its end. The stand-ins below lose one cancellation on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sessionflow import (
    AsyncMemoryBackend,
    AsyncMemoryControlPlane,
    AsyncMemoryTierIndex,
    AsyncSessionStore,
    AsyncTieredBackend,
    Stage,
)
from sessionflow._async.migration import AsyncMigration
from sessionflow._concurrency import async_in_order, async_stop_if_cancelled
from sessionflow._scan import ScanPage


class _Loses:
    """Awaits until cancelled, once, and then carries on as if nothing happened."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self.lost = False

    async def __call__(self) -> None:
        if self.lost:
            return
        self.waiting.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.lost = True  # what a library that swallows the cancellation does


class _ScanLosesOneCancellation(AsyncMemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.loses = _Loses()

    async def scan(self, cursor: str | None = None, **options: Any) -> ScanPage:
        await self.loses()
        return await super().scan(cursor, **options)


async def _cancel_when(waiting: asyncio.Event, job: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(job)
    await asyncio.wait_for(waiting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_the_check_raises_only_in_a_task_whose_cancellation_was_lost() -> None:
    await async_stop_if_cancelled()  # not cancelled: nothing happens
    loses = _Loses()
    steps: list[int] = []

    async def job() -> None:
        await loses()
        steps.append(1)
        await async_stop_if_cancelled()
        steps.append(2)

    await _cancel_when(loses.waiting, job())
    assert loses.lost
    assert steps == [1]


async def test_a_run_in_order_stops_at_the_next_unit() -> None:
    loses = _Loses()
    finished: list[int] = []

    async def units() -> AsyncIterator[int]:
        for number in range(100):
            if number == 3:
                await loses()
            yield number

    async def work(number: int) -> int:
        return number

    async def finish(number: int, _: int) -> None:
        finished.append(number)

    await _cancel_when(loses.waiting, async_in_order(units(), work, finish, 2))
    assert loses.lost
    assert len(finished) <= 3


async def _migration(seeded: int) -> tuple[AsyncMigration, _ScanLosesOneCancellation]:
    old = _ScanLosesOneCancellation()
    store = AsyncSessionStore(old)
    for number in range(seeded):
        await store.create({"n": number})
    return AsyncMigration(old, AsyncMemoryBackend(), AsyncMemoryControlPlane(Stage.DUALWRITE)), old


@pytest.mark.parametrize(
    "job",
    [
        pytest.param(lambda m: m.backfill(page_size=10), id="backfill"),
        pytest.param(lambda m: m.verify(mode="full", page_size=10), id="verify"),
    ],
)
async def test_a_long_job_stops_though_its_store_lost_the_cancellation(
    job: Callable[[AsyncMigration], Awaitable[Any]],
) -> None:
    migration, old = await _migration(200)
    await _cancel_when(old.loses.waiting, job(migration))
    assert old.loses.lost
    copied = await migration.new.scan(None, count=1_000)
    assert copied.records == []  # stopped before the first page was copied


async def test_a_count_of_both_tiers_stops_though_a_tier_lost_the_cancellation() -> None:
    hot = _ScanLosesOneCancellation()
    tier = AsyncTieredBackend(hot, AsyncMemoryBackend(), AsyncMemoryTierIndex())
    store = AsyncSessionStore(tier)
    for number in range(50):
        await store.create({"n": number})
    await _cancel_when(hot.loses.waiting, tier.count_lifecycle(page_size=10))
    assert hot.loses.lost


class _ControlLosesOneCancellation(AsyncMemoryControlPlane):
    def __init__(self) -> None:
        super().__init__(Stage.DUALWRITE)
        self.loses = _Loses()

    async def repair_batch(self, limit: int) -> Any:
        await self.loses()
        return await super().repair_batch(limit)


async def test_a_repair_pass_stops_though_its_queue_lost_the_cancellation() -> None:
    old = AsyncMemoryBackend()
    store = AsyncSessionStore(old)
    keys = [(await store.create({"n": number})).key for number in range(20)]
    control = _ControlLosesOneCancellation()
    await control.enqueue_repairs(keys, 0.0)
    migration = AsyncMigration(old, AsyncMemoryBackend(), control)
    await _cancel_when(control.loses.waiting, migration.repair(batch=5))
    assert control.loses.lost
    # the batch in hand when the cancellation was lost is finished, and nothing after it
    assert (await control.repair_depth()).count == len(keys) - 5
