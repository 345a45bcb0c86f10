"""Sleeps and bounded fan-out that the async source and the generated sync code call by name."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


async def async_sleep(seconds: float) -> None:
    """Sleep without blocking the event loop."""
    await asyncio.sleep(seconds)


def sync_sleep(seconds: float) -> None:
    """Sleep the current thread."""
    time.sleep(seconds)


async def async_stop_if_cancelled() -> None:
    """Raise `asyncio.CancelledError` if this task was cancelled and the cancellation was lost.

    On Python 3.11 `asyncio.wait_for` returns the result instead of raising when the work
    it waits for finishes in the loop turn the cancellation arrives in (fixed in 3.12),
    and redis-py sends every command through it. So long jobs (a backfill, a verification,
    a repair pass, the drill) call this between steps: Ctrl-C or SIGTERM then stops them
    at the next step instead of never. Only between steps of work going forward: clean-up
    after a cancellation runs while the task is still marked cancelled, and must finish.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def sync_stop_if_cancelled() -> None:
    """Nothing to check: a thread is stopped by `KeyboardInterrupt`, which nothing loses."""


async def async_together(first: Awaitable[_T], second: Awaitable[_R]) -> tuple[_T, _R]:
    """Await two calls at once; return both results."""
    both = await asyncio.gather(first, second)
    return both[0], both[1]


def sync_together(first: _T, second: _R) -> tuple[_T, _R]:
    """Return both results (sync flavour: the calls ran in order as arguments)."""
    return first, second


async def async_map_limited(
    function: Callable[[_T], Awaitable[_R]], items: Sequence[_T], limit: int
) -> list[_R]:
    """Apply `function` to every item, at most `limit` at a time; results in order."""
    if limit <= 1 or len(items) <= 1:
        return [await function(item) for item in items]
    semaphore = asyncio.Semaphore(limit)

    async def limited(item: _T) -> _R:
        async with semaphore:
            return await function(item)

    return list(await asyncio.gather(*(limited(item) for item in items)))


def sync_map_limited(function: Callable[[_T], _R], items: Sequence[_T], limit: int) -> list[_R]:
    """Apply `function` to every item on up to `limit` threads; results in order."""
    if limit <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        return list(pool.map(function, items))


async def async_in_order(
    units: AsyncIterator[_T],
    work: Callable[[_T], Awaitable[_R]],
    finish: Callable[[_T, _R], Awaitable[None]],
    limit: int,
) -> None:
    """Run `work` on up to `limit` units at once and `finish` each unit in their order.

    The next unit is read while earlier ones are at work, so reading and working overlap
    (a backfill scans its next page while the last page's batches are written). `finish`
    sees a unit only after every unit before it finished, which is what makes a
    checkpoint written there safe to resume from. A failure stops everything: the units
    still at work are cancelled and the error is raised.
    """
    at_work: deque[tuple[_T, asyncio.Task[_R]]] = deque()

    async def run(unit: _T) -> _R:
        return await work(unit)

    try:
        async for unit in units:
            await async_stop_if_cancelled()
            at_work.append((unit, asyncio.get_running_loop().create_task(run(unit))))
            while at_work and (len(at_work) >= limit or at_work[0][1].done()):
                done, task = at_work.popleft()
                await finish(done, await task)
                await async_stop_if_cancelled()
        while at_work:
            done, task = at_work.popleft()
            await finish(done, await task)
            await async_stop_if_cancelled()
    finally:
        for _, task in at_work:
            task.cancel()
        await asyncio.gather(*(task for _, task in at_work), return_exceptions=True)


def sync_in_order(
    units: Iterator[_T],
    work: Callable[[_T], _R],
    finish: Callable[[_T, _R], None],
    limit: int,
) -> None:
    """`async_in_order` on up to `limit` threads: `work` in the pool, `finish` in the caller."""
    if limit <= 1:
        for unit in units:
            finish(unit, work(unit))
        return
    at_work: deque[tuple[_T, Future[_R]]] = deque()
    with ThreadPoolExecutor(max_workers=limit) as pool:
        try:
            for unit in units:
                at_work.append((unit, pool.submit(work, unit)))
                while at_work and (len(at_work) >= limit or at_work[0][1].done()):
                    done, future = at_work.popleft()
                    finish(done, future.result())
            while at_work:
                done, future = at_work.popleft()
                finish(done, future.result())
        finally:
            for _, future in at_work:
                future.cancel()


class AsyncBackgroundWork:
    """Work started now and finished after the caller returned (the tier's promotions).

    `settle` waits for everything started so far; a failure is the work's own to handle.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` in the background."""
        task = asyncio.get_running_loop().create_task(_awaited(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """How many pieces of work have not finished."""
        return len(self._tasks)

    async def settle(self) -> None:
        """Wait until every piece of work started so far (and any they started) is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _awaited(work: Callable[[], Awaitable[None]]) -> None:
    await work()


class BackgroundWork:
    """The sync flavour of `AsyncBackgroundWork`: work runs at once, in the caller's thread."""

    pending = 0

    def start(self, work: Callable[[], None]) -> None:
        """Run `work` now (a sync caller has no event loop to leave it to)."""
        work()

    def settle(self) -> None:
        """Nothing to wait for: work finished when it was started."""
