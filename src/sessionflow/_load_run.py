"""The load generator: open-model arrivals on a fixed schedule, HdrHistogram latencies.

Requests are due at times fixed before the run starts (the phases' arrival rates) and each
is timed from the moment it was due, not from when it was sent. A target that slows down
therefore shows its queueing delay in the percentiles instead of quietly slowing the
sender (coordinated omission). Nothing waits for a reply before sending the next request;
`max_in_flight` only bounds the generator's memory, and arrivals refused by it are counted
as errors (``client-saturated``), never dropped from the report.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from sessionflow._codec import Codec
from sessionflow._dynamodb_layout import item_size, record_to_item
from sessionflow._errors import SessionflowError, SessionNotFound, VersionConflict
from sessionflow._load_plan import OPERATIONS, Mix, Phase, check_seed_sessions
from sessionflow._load_targets import LoadTarget, TargetError
from sessionflow._record import SessionRecord

MAX_LATENCY_US = 120_000_000  # two minutes; slower replies are recorded as two minutes
DISTRIBUTION_PERCENTILES = (
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
)  # fmt: skip
SEED_CONCURRENCY = 64
SATURATED = "client-saturated"
SPIN_SECONDS = 0.0015
MEMORY_SAMPLE = 200  # sessions whose Redis footprint is measured


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_LATENCY_US, 3)


def _micros(seconds: float) -> int:
    return min(max(int(seconds * 1_000_000), 1), MAX_LATENCY_US)


async def wait_until(loop: asyncio.AbstractEventLoop, due: float) -> None:
    """Wait until `due` on the loop's clock, to within a few microseconds.

    The event loop's timers wake up to a millisecond late, which the open model would
    count as latency of the target; so sleep until a millisecond before and yield to
    the requests in flight until the moment comes.
    """
    early = due - loop.time() - SPIN_SECONDS
    if early > 0:
        await asyncio.sleep(early)
    while loop.time() < due:  # noqa: ASYNC110 - a deadline, not an event
        await asyncio.sleep(0)


def percentile_ms(histogram: HdrHistogram, percentile: float) -> float | None:
    """Return a percentile in milliseconds, or None for an empty histogram."""
    if histogram.get_total_count() == 0:
        return None
    return float(histogram.get_value_at_percentile(percentile)) / 1000


@dataclass
class OperationStats:
    """One operation's results in one phase."""

    histogram: HdrHistogram = field(default_factory=_histogram)
    errors: Counter[str] = field(default_factory=Counter)
    gone: int = 0
    """Sessions this test deleted or regenerated while the request was in flight."""

    @property
    def count(self) -> int:
        """Requests sent (timed), errors included."""
        return int(self.histogram.get_total_count())

    def summary(self) -> dict[str, Any]:
        """Return counts and percentiles for the report."""
        h = self.histogram
        errors = sum(self.errors.values())
        return {
            "count": self.count,
            "errors": dict(self.errors),
            "error_rate": errors / self.count if self.count else 0.0,
            "gone": self.gone,
            "p50_ms": percentile_ms(h, 50),
            "p95_ms": percentile_ms(h, 95),
            "p99_ms": percentile_ms(h, 99),
            "max_ms": float(h.get_max_value()) / 1000 if self.count else None,
            "mean_ms": float(h.get_mean_value()) / 1000 if self.count else None,
            "distribution": [
                [p, percentile_ms(h, p)] for p in DISTRIBUTION_PERCENTILES if self.count
            ],
        }


@dataclass
class PhaseStats:
    """One phase's results: per operation, and what it asked for against what it got."""

    phase: Phase
    started: float = 0.0
    operations: dict[str, OperationStats] = field(default_factory=dict)
    all_operations: HdrHistogram = field(default_factory=_histogram)
    send_lag: HdrHistogram = field(default_factory=_histogram)
    """How late the generator sent each request (its own limit, not the target's)."""
    sent: int = 0
    completed: int = 0

    def op(self, name: str) -> OperationStats:
        """Return the stats of one operation, created on first use."""
        if name not in self.operations:
            self.operations[name] = OperationStats()
        return self.operations[name]

    def summary(self) -> dict[str, Any]:
        """Return the phase's part of the report."""
        errors = sum(sum(s.errors.values()) for s in self.operations.values())
        total = sum(s.count for s in self.operations.values())
        return {
            **self.phase.to_json(),
            "target_rate": self.phase.expected_arrivals / self.phase.duration,
            "sent": self.sent,
            "completed": self.completed,
            "achieved_rate": self.completed / self.phase.duration,
            "errors": errors,
            "error_rate": errors / total if total else 0.0,
            "p50_ms": percentile_ms(self.all_operations, 50),
            "p99_ms": percentile_ms(self.all_operations, 99),
            "send_lag_p99_ms": percentile_ms(self.send_lag, 99),
            "operations": {
                name: self.operations[name].summary()
                for name in OPERATIONS
                if name in self.operations
            },
        }


@dataclass(frozen=True)
class LiveStatus:
    """What the live display shows, sampled while the test runs."""

    phase: str
    phase_index: int
    phases: int
    elapsed: float
    duration: float
    target_rate: float
    sent: int
    completed: int
    in_flight: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


class _Pool:
    """Live session ids the test may pick, with O(1) random pick and removal."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self.retired: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, session_id: str) -> None:
        self._index[session_id] = len(self._ids)
        self._ids.append(session_id)

    def pick(self) -> str:
        return self._ids[self._rng.randrange(len(self._ids))]

    def take(self) -> str:
        """Remove and return a random id (for delete and regenerate: no one else picks it)."""
        session_id = self.pick()
        self.discard(session_id)
        self.retired.add(session_id)
        return session_id

    def discard(self, session_id: str) -> None:
        index = self._index.pop(session_id, None)
        if index is None:
            return
        last = self._ids.pop()
        if last != session_id:
            self._ids[index] = last
            self._index[last] = index


class _Timeline:
    """Every request's second (from the run's start), latency and outcome, for the plots."""

    def __init__(self) -> None:
        self.second = array("I")
        self.latency_us = array("I")
        self.failed = array("B")
        self.answered: Counter[int] = Counter()
        """Successful replies by the second they arrived in (the achieved throughput)."""

    def add(self, second: int, latency_us: int, *, failed: bool, answered: int | None) -> None:
        self.second.append(second)
        self.latency_us.append(latency_us)
        self.failed.append(1 if failed else 0)
        if answered is not None:
            self.answered[answered] += 1

    def per_second(self, phases: Sequence[Phase]) -> list[dict[str, Any]]:
        """Return requests, errors and latency percentiles for each second of the run."""
        buckets: dict[int, list[int]] = {}
        errors: Counter[int] = Counter()
        for second, latency, failed in zip(self.second, self.latency_us, self.failed, strict=True):
            buckets.setdefault(second, []).append(latency)
            errors[second] += failed
        rows = []
        for second in sorted(buckets):
            values = sorted(buckets[second])
            rows.append(
                {
                    "second": second,
                    "requests": len(values),
                    "errors": errors[second],
                    "answered": self.answered[second],
                    "target_rate": _rate_at(phases, second + 0.5),
                    "p50_ms": values[len(values) // 2] / 1000,
                    "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] / 1000,
                    "max_ms": values[-1] / 1000,
                }
            )
        return rows


def _rate_at(phases: Sequence[Phase], offset: float) -> float:
    for phase in phases:
        if offset < phase.duration:
            return phase.rate_at(offset)
        offset -= phase.duration
    return 0.0


def payload(size: int, rng: random.Random) -> dict[str, Any]:
    """Session attributes of about `size` bytes encoded: a user, a cart and page counters."""
    cart_items = max(1, size // 40)
    return {
        "user": f"user-{rng.randrange(1_000_000)}",
        "cart": [
            f"sku-{rng.randrange(100_000):05d}|{rng.randrange(1, 5)}|{rng.randrange(100, 99_999)}"
            for _ in range(cart_items)
        ],
        "views": rng.randrange(1000),
    }


def dynamodb_item_bytes(attributes: dict[str, Any]) -> int:
    """Return the size DynamoDB bills for a session with these attributes (encoded as stored)."""
    codec = Codec()
    now = time.time()
    record = SessionRecord(
        key="0" * 64,
        version=1,
        user_id=None,
        created_at=now,
        last_access=now,
        idle_expires_at=now + 1800,
        absolute_expires_at=now + 43200,
        attributes={name: codec.encode(name, value).stored for name, value in attributes.items()},
    )
    return item_size(record_to_item(record))


class LoadRun:
    """One target under one plan; `run` returns the target's part of the report."""

    def __init__(
        self,
        target: LoadTarget,
        phases: Sequence[Phase],
        mix: Mix,
        *,
        seed_sessions: int = 1000,
        payload_bytes: int = 512,
        max_in_flight: int = 2000,
        seed: int = 1,
        on_status: Callable[[LiveStatus], None] | None = None,
        status_every: float = 0.5,
    ) -> None:
        if not phases:
            raise ValueError("a load test needs at least one phase")
        check_seed_sessions(seed_sessions)
        self.target = target
        self.phases = list(phases)
        self._last_second = max(int(sum(p.duration for p in self.phases)) - 1, 0)
        self.mix = mix
        self.seed_sessions = seed_sessions
        self.payload_bytes = payload_bytes
        self.max_in_flight = max_in_flight
        self.on_status = on_status
        self.status_every = status_every
        self._rng = random.Random(seed)
        self._pool = _Pool(self._rng)
        self._ops, self._weights = mix.cumulative()
        self._stats = [PhaseStats(phase) for phase in self.phases]
        self._timeline = _Timeline()
        self._in_flight = 0
        self._run_started = 0.0
        self._current = 0

    async def run(self) -> dict[str, Any]:
        """Seed sessions, send every phase's arrivals, wait for the last reply, summarise."""
        await self._seed(self.seed_sessions)
        sample = [self._pool.pick() for _ in range(min(MEMORY_SAMPLE, len(self._pool)))]
        redis_bytes = await self.target.redis_bytes_per_session(sample)
        capacity_before = self.target.consumed_capacity()
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        reporter = asyncio.create_task(self._report_status()) if self.on_status else None
        self._run_started = loop.time()
        wall_started = time.time()
        phase_start = self._run_started
        try:
            for index, stats in enumerate(self._stats):
                self._current = index
                stats.started = phase_start
                for offset in stats.phase.arrivals():
                    due = phase_start + offset
                    await wait_until(loop, due)
                    stats.send_lag.record_value(_micros(loop.time() - due))
                    self._send(index, due, tasks)
                phase_start += stats.phase.duration
                wait = phase_start - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            if reporter is not None:
                reporter.cancel()
        capacity_after = self.target.consumed_capacity()
        summary = self._summary(wall_started, loop.time(), capacity_before, capacity_after)
        summary["dynamodb_item_bytes"] = dynamodb_item_bytes(
            payload(self.payload_bytes, random.Random(0))
        )
        if redis_bytes is not None:
            summary["redis_bytes_per_session"] = redis_bytes
        return summary

    async def _seed(self, count: int) -> None:
        # A fixed set of workers share one countdown, so what is pending stays bounded
        # whatever the count (one task per session would hold them all in memory).
        remaining = count

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                self._pool.add(await self.target.create(payload(self.payload_bytes, self._rng)))

        await asyncio.gather(*(worker() for _ in range(min(SEED_CONCURRENCY, count))))

    def _send(self, phase_index: int, due: float, tasks: set[asyncio.Task[None]]) -> None:
        stats = self._stats[phase_index]
        stats.sent += 1
        op = self._rng.choices(self._ops, cum_weights=self._weights)[0]
        if op != "create" and not self._pool:
            op = "create"
        if self._in_flight >= self.max_in_flight:
            self._record(phase_index, op, due, due, SATURATED)
            return
        self._in_flight += 1
        task = asyncio.create_task(self._one(phase_index, op, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _one(self, phase_index: int, op: str, due: float) -> None:
        cause: str | None = None
        try:
            cause = await self._perform(op, phase_index)
        except TargetError as exc:
            cause = exc.cause
        except VersionConflict:
            cause = "conflict"
        except SessionNotFound:
            cause = "not found"
        except SessionflowError as exc:
            cause = type(exc).__name__
        except (OSError, TimeoutError) as exc:
            cause = type(exc).__name__
        finally:
            self._in_flight -= 1
        self._record(phase_index, op, due, asyncio.get_running_loop().time(), cause)

    async def _perform(self, op: str, phase_index: int) -> str | None:
        """Send one operation; return an error cause for an unexpected "not live"."""
        pool = self._pool
        if op == "create":
            pool.add(await self.target.create(payload(self.payload_bytes, self._rng)))
            return None
        if op in ("delete", "regenerate"):
            session_id = pool.take()
            if op == "delete":
                found = await self.target.delete(session_id)
            else:
                new_id = await self.target.regenerate(session_id)
                found = new_id is not None
                if new_id is not None:
                    pool.add(new_id)
            return None if found else "not found"
        session_id = pool.pick()
        if op == "read":
            found = await self.target.read(session_id)
        elif op == "update":
            found = await self.target.update(
                session_id, {f"page-{self._rng.randrange(8)}": self._rng.randrange(10_000)}
            )
        else:
            found = await self.target.touch(session_id)
        if found:
            return None
        if session_id in pool.retired:  # deleted by this test while the request was in flight
            self._stats[phase_index].op(op).gone += 1
            return None
        return "not found"

    def _record(
        self, phase_index: int, op: str, due: float, done: float, cause: str | None
    ) -> None:
        latency_us = _micros(done - due)
        stats = self._stats[phase_index]
        op_stats = stats.op(op)
        op_stats.histogram.record_value(latency_us)
        stats.all_operations.record_value(latency_us)
        if cause is not None:
            op_stats.errors[cause] += 1
        if cause is None:  # a reply counts toward the rate of the phase it arrived in
            window = self._phase_at(done - self._run_started)
            if window is not None:
                window.completed += 1
        second = min(int(due - self._run_started), self._last_second)
        answered = None if cause is not None else int(done - self._run_started)
        self._timeline.add(second, latency_us, failed=cause is not None, answered=answered)

    def _phase_at(self, offset: float) -> PhaseStats | None:
        for stats in self._stats:
            if offset < stats.phase.duration:
                return stats
            offset -= stats.phase.duration
        return None

    async def _report_status(self) -> None:
        assert self.on_status is not None  # noqa: S101 - only started with a callback
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.status_every)
            stats = self._stats[self._current]
            elapsed = loop.time() - stats.started
            errors = sum(sum(s.errors.values()) for s in stats.operations.values())
            self.on_status(
                LiveStatus(
                    phase=stats.phase.name,
                    phase_index=self._current,
                    phases=len(self._stats),
                    elapsed=min(elapsed, stats.phase.duration),
                    duration=stats.phase.duration,
                    target_rate=stats.phase.rate_at(elapsed),
                    sent=stats.sent,
                    completed=stats.completed,
                    in_flight=self._in_flight,
                    errors=errors,
                    p50_ms=percentile_ms(stats.all_operations, 50),
                    p99_ms=percentile_ms(stats.all_operations, 99),
                )
            )

    def _summary(
        self,
        wall_started: float,
        finished: float,
        capacity_before: dict[str, float] | None,
        capacity_after: dict[str, float] | None,
    ) -> dict[str, Any]:
        overall: dict[str, OperationStats] = {}
        for stats in self._stats:
            for name, op in stats.operations.items():
                merged = overall.setdefault(name, OperationStats())
                merged.histogram.add(op.histogram)
                merged.errors.update(op.errors)
                merged.gone += op.gone
        totals = {name: op.count for name, op in overall.items()}
        errors = sum(sum(op.errors.values()) for op in overall.values())
        requests = sum(totals.values())
        capacity = None
        if capacity_after is not None:
            before = capacity_before or {}
            capacity = {
                op: units - before.get(op, 0.0)
                for op, units in sorted(capacity_after.items())
                if units - before.get(op, 0.0) > 0
            }
        return {
            "started_at": wall_started,
            "seconds": finished - self._run_started,
            "planned_seconds": sum(p.duration for p in self.phases),
            "mix": self.mix.describe(),
            "payload_bytes": self.payload_bytes,
            "seed_sessions": self.seed_sessions,
            "requests": requests,
            "requests_by_operation": totals,
            "errors": errors,
            "error_rate": errors / requests if requests else 0.0,
            "consumed_capacity": capacity,
            "operations": {name: overall[name].summary() for name in OPERATIONS if name in overall},
            "phases": [stats.summary() for stats in self._stats],
            "timeline": self._timeline.per_second(self.phases),
        }
