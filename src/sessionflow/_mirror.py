"""Secondary writes off the request path: one at a time per key, failures to the repair queue.

In the mirroring stages the authoritative store alone decides a request's outcome; the copy
to the other store runs in the background so a slow or failed secondary costs the request
nothing. Copies of one key never race each other: while one is in flight, later changes of
that key only mark it dirty, and a reconcile (read the authority, copy what it holds)
follows. A copy that fails or times out hands its key to the repair queue; if even that
fails the key is held in memory and handed over again with the next failure or at `drain`.
Hand-written in both flavours (asyncio tasks; a thread pool), like the leaf backends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("sessionflow.migration")


WARN_EVERY_SECONDS = 10.0
"""A failing secondary is reported at most this often (with a count), not once per copy."""


@dataclass
class MirrorStats:
    """Counts of what the mirror did, for metrics and reports."""

    copied: int = 0
    failed: int = 0
    timed_out: int = 0
    queued_for_repair: int = 0
    repair_queue_errors: int = 0
    overflowed: int = 0
    unqueued: set[str] = field(default_factory=set)
    _last_warning: float = float("-inf")
    _since_warning: int = 0

    def failure(self, exc: BaseException) -> None:
        """Count a failed copy; log a warning at most every `WARN_EVERY_SECONDS`."""
        self._since_warning += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            logger.warning(
                "%d secondary write(s) failed and were queued for repair; latest: %r",
                self._since_warning,
                exc,
            )
            self._last_warning, self._since_warning = now, 0


class AsyncMirror:
    """Runs secondary writes as asyncio tasks.

    Args:
        reconcile: copies a key's current authoritative record to the other store.
        enqueue: hands keys to the durable repair queue.
        timeout: seconds a copy may take before its key goes to the repair queue.
        max_in_flight: beyond this many copies in flight, keys go straight to the queue.
    """

    def __init__(
        self,
        *,
        reconcile: Callable[[str], Awaitable[object]],
        enqueue: Callable[[Iterable[str]], Awaitable[None]],
        timeout: float = 2.0,
        max_in_flight: int = 1000,
    ) -> None:
        self._reconcile = reconcile
        self._enqueue = enqueue
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._active: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._helpers: set[asyncio.Future[Any]] = set()
        self.stats = MirrorStats()

    def in_flight(self, key: str) -> bool:
        """Return True if a copy of `key` is running or waiting."""
        return key in self._active

    def submit(self, key: str, write: Callable[[], Awaitable[object]]) -> None:
        """Copy a change of `key` to the secondary store in the background."""
        if key in self._active:
            self._dirty.add(key)
            return
        if len(self._active) >= self._max_in_flight:
            self.stats.overflowed += 1
            self._spawn_helper(self._hand_over([key]))
            return
        self._active[key] = asyncio.get_running_loop().create_task(self._run(key, write))

    async def _run(self, key: str, write: Callable[[], Awaitable[object]]) -> None:
        reconciling = False
        try:
            while True:
                try:
                    step = self._reconcile(key) if reconciling else write()
                    await self._within_timeout(asyncio.ensure_future(step))
                    self.stats.copied += 1
                except Exception as exc:  # noqa: BLE001 - any failure goes to the repair queue
                    if isinstance(exc, TimeoutError):
                        self.stats.timed_out += 1
                    else:
                        self.stats.failed += 1
                    self.stats.failure(exc)
                    self._dirty.discard(key)
                    await self._hand_over([key])
                    return
                if key not in self._dirty:
                    return
                self._dirty.discard(key)
                reconciling = True
        finally:
            self._active.pop(key, None)

    async def _within_timeout(self, copy: asyncio.Future[object]) -> None:
        """Wait up to the timeout for a copy; a late copy keeps running, it is not cancelled.

        Cancelling a request mid-flight can leave its HTTP connection checked out of the
        client's pool (aiohttp), and enough of those starve every later request; the
        client's own read timeout ends a late copy, and the guard makes it harmless.
        """
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(copy)
        except TimeoutError:
            self._helpers.add(copy)
            copy.add_done_callback(self._forget_late_copy)
            raise

    def _forget_late_copy(self, copy: asyncio.Future[object]) -> None:
        self._helpers.discard(copy)
        if not copy.cancelled():
            copy.exception()  # retrieved: the key is already queued for repair

    async def _hand_over(self, keys: Iterable[str]) -> None:
        pending = set(keys) | self.stats.unqueued
        try:
            await self._enqueue(pending)
        except Exception as exc:  # noqa: BLE001 - held in memory, retried with the next one
            self.stats.repair_queue_errors += 1
            self.stats.unqueued = pending
            logger.error(  # noqa: TRY400 - the cause is in the message; no traceback wanted
                "repair queue unreachable; %d key(s) held in memory: %s", len(pending), exc
            )
            return
        self.stats.unqueued = set()
        self.stats.queued_for_repair += len(pending)

    def run_later(self, work: Callable[[], Awaitable[object]]) -> None:
        """Run `work` in the background (shadow comparisons); errors are logged."""
        self._spawn_helper(_logged(work))

    def _spawn_helper(self, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(_awaited(work))
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    async def drain(self) -> None:
        """Wait for every copy in flight; hand over keys still held in memory."""
        while self._active or self._helpers:
            await asyncio.gather(*self._active.values(), *self._helpers, return_exceptions=True)
        if self.stats.unqueued:
            await self._hand_over(())

    async def aclose(self) -> None:
        """Drain; the tasks end with it."""
        await self.drain()


async def _awaited(work: Awaitable[None]) -> None:
    await work


async def _logged(work: Callable[[], Awaitable[object]]) -> None:
    try:
        await work()
    except Exception as exc:  # noqa: BLE001 - background work must not kill the loop
        logger.warning("background migration check failed: %r", exc)


class Mirror:
    """Runs secondary writes on a thread pool (the sync flavour of `AsyncMirror`)."""

    def __init__(
        self,
        *,
        reconcile: Callable[[str], object],
        enqueue: Callable[[Iterable[str]], None],
        timeout: float = 2.0,
        max_in_flight: int = 1000,
        threads: int = 8,
    ) -> None:
        self._reconcile = reconcile
        self._enqueue = enqueue
        self._timeout = timeout  # the clients' own timeouts bound a thread's copy
        self._max_in_flight = max_in_flight
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sessionflow-mirror")
        self._lock = threading.Lock()
        self._active: dict[str, Future[None]] = {}
        self._helpers: set[Future[None]] = set()
        self._dirty: set[str] = set()
        self.stats = MirrorStats()

    def in_flight(self, key: str) -> bool:
        """Return True if a copy of `key` is running or waiting."""
        return key in self._active

    def submit(self, key: str, write: Callable[[], object]) -> None:
        """Copy a change of `key` to the secondary store in the background."""
        with self._lock:
            if key in self._active:
                self._dirty.add(key)
                return
            if len(self._active) >= self._max_in_flight:
                self.stats.overflowed += 1
                overflow = True
            else:
                overflow = False
                self._active[key] = self._pool.submit(self._run, key, write)
        if overflow:
            self._hand_over([key])

    def _run(self, key: str, write: Callable[[], object]) -> None:
        reconciling = False
        while True:
            try:
                if reconciling:
                    self._reconcile(key)
                else:
                    write()
                self.stats.copied += 1
            except Exception as exc:  # noqa: BLE001 - any failure goes to the repair queue
                self.stats.failed += 1
                self.stats.failure(exc)
                self._hand_over([key])  # before leaving `_active`, so `drain` waits for it
                with self._lock:
                    self._dirty.discard(key)  # the repair reads the latest state anyway
                    self._active.pop(key, None)
                return
            with self._lock:
                if key not in self._dirty:
                    self._active.pop(key, None)
                    return
                self._dirty.discard(key)
            reconciling = True

    def run_later(self, work: Callable[[], object]) -> None:
        """Run `work` on the pool (shadow comparisons); errors are logged."""

        def logged() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - background work must not kill a thread
                logger.warning("background migration check failed: %r", exc)

        future = self._pool.submit(logged)
        with self._lock:
            self._helpers.add(future)
        future.add_done_callback(self._forget_helper)

    def _forget_helper(self, future: Future[None]) -> None:
        with self._lock:
            self._helpers.discard(future)

    def _hand_over(self, keys: Iterable[str]) -> None:
        with self._lock:
            pending = set(keys) | self.stats.unqueued
            self.stats.unqueued = set()
        try:
            self._enqueue(pending)
        except Exception as exc:  # noqa: BLE001 - held in memory, retried with the next one
            with self._lock:
                self.stats.repair_queue_errors += 1
                self.stats.unqueued |= pending
            logger.error(  # noqa: TRY400 - the cause is in the message; no traceback wanted
                "repair queue unreachable; %d key(s) held in memory: %s", len(pending), exc
            )
            return
        with self._lock:
            self.stats.queued_for_repair += len(pending)

    def drain(self) -> None:
        """Wait for every copy in flight; hand over keys still held in memory."""
        while True:
            with self._lock:
                futures = [*self._active.values(), *self._helpers]
            if not futures:
                break
            for future in futures:
                future.exception()
        if self.stats.unqueued:
            self._hand_over(())

    def close(self) -> None:
        """Drain, then stop the threads."""
        self.drain()
        self._pool.shutdown(wait=True)
