"""Run callables concurrently: coroutines with gather, functions on threads."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


async def async_run_all(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    return list(await asyncio.gather(*(call() for call in calls)))


def sync_run_all(calls: list[Callable[[], T]]) -> list[T]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]
