"""The sleeps that the generated sync code and the async source call by name."""

from __future__ import annotations

import asyncio
import time


async def async_sleep(seconds: float) -> None:
    """Sleep without blocking the event loop."""
    await asyncio.sleep(seconds)


def sync_sleep(seconds: float) -> None:
    """Sleep the current thread."""
    time.sleep(seconds)
