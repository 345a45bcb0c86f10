"""The bounded, in-order fan-out behind the backfill's overlapped pages (`async_in_order`)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator

import pytest

from sessionflow._concurrency import async_in_order, async_sleep


async def numbers(count: int, read: list[int]) -> AsyncIterator[int]:
    for number in range(count):
        read.append(number)
        yield number


async def test_finishes_every_unit_in_order_with_at_most_limit_at_work() -> None:
    lock = threading.Lock()
    at_work, most, finished = 0, 0, []

    async def work(number: int) -> int:
        nonlocal at_work, most
        with lock:
            at_work += 1
            most = max(most, at_work)
        await async_sleep(0.001 * (4 - number % 4))  # later units tend to finish first
        with lock:
            at_work -= 1
        return number * 10

    async def finish(number: int, result: int) -> None:
        finished.append((number, result))

    await async_in_order(numbers(20, []), work, finish, 3)
    assert finished == [(number, number * 10) for number in range(20)]
    assert most == 3


async def test_reads_the_next_unit_while_earlier_ones_are_at_work() -> None:
    read: list[int] = []
    finished: list[int] = []

    async def work(number: int) -> None:
        if number == 0:  # returns only once unit 1 was read: reading did not wait for it
            deadline = time.monotonic() + 5
            while 1 not in read and time.monotonic() < deadline:
                await async_sleep(0.001)
            assert 1 in read

    async def finish(number: int, _: None) -> None:
        finished.append(number)

    await async_in_order(numbers(5, read), work, finish, 2)
    assert finished == [0, 1, 2, 3, 4]


async def test_a_failure_stops_the_run_and_nothing_after_it_is_finished() -> None:
    finished: list[int] = []

    async def work(number: int) -> int:
        if number == 3:
            raise RuntimeError("unit 3 failed")
        return number

    async def finish(number: int, _: int) -> None:
        finished.append(number)

    with pytest.raises(RuntimeError, match="unit 3 failed"):
        await async_in_order(numbers(10, []), work, finish, 2)
    assert finished == [0, 1, 2]


async def test_one_at_a_time_when_the_limit_is_one() -> None:
    events: list[str] = []

    async def work(number: int) -> None:
        events.append(f"work {number}")

    async def finish(number: int, _: None) -> None:
        events.append(f"finish {number}")

    await async_in_order(numbers(3, []), work, finish, 1)
    assert events == ["work 0", "finish 0", "work 1", "finish 1", "work 2", "finish 2"]
