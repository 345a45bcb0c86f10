"""Jobs the command line runs on a period: a store's restart or a network blip must not end them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.markup import escape

from sessionflow._concurrency import async_stop_if_cancelled
from sessionflow._errors import BackendError, one_line


async def run_on_period(
    run_once: Callable[[], Awaitable[None]],
    period: float | None,
    *,
    job: str,
    console: Console,
) -> None:
    """Run `run_once`; with a `period`, again every `period` seconds until cancelled.

    Without a period a failure propagates: the command exits with its code. On a period, a
    run that fails because a store did not answer is reported in one line and the next run
    comes at its time, so `tier flush --loop` or `migrate repair --follow` outlives a
    store's restart; a supervisor restarting the process would lose nothing either, but
    the write-back loss window (one sync interval) should not depend on one.
    """
    while True:
        await async_stop_if_cancelled()
        began = time.monotonic()
        try:
            await run_once()
        except (BackendError, OSError) as exc:
            if period is None:
                raise
            console.print(
                f"[red]{job} failed, a store did not answer: {escape(one_line(str(exc)))}; "
                f"next run in {period:g} s[/red]",
                soft_wrap=True,
            )
        if period is None:
            return
        await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))
