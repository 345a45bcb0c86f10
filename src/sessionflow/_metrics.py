"""Prometheus metrics: the instruments every instrumented backend and store report to.

Labels are drawn from small fixed sets (backend name, operation, outcome); a session id or
its hash never becomes a label value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Self

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sessionflow._errors import (
    CorruptRecord,
    SessionExists,
    SessionNotFound,
    SessionTooLarge,
    VersionConflict,
)
from sessionflow._events import SessionEventKind
from sessionflow._migration_stats import MigrationStats
from sessionflow._stages import Stage
from sessionflow._tier import TierStats

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer
    from prometheus_client.metrics_core import Metric

    from sessionflow._dynamodb_layout import CapacityMeter
    from sessionflow._store_stats import StoreStats

# Loopback Redis answers in ~0.1 ms, DynamoDB in ~5 ms, a struggling store in seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)  # fmt: skip

_OUTCOME_OF_ERROR: tuple[tuple[type[BaseException], str], ...] = (
    (VersionConflict, "conflict"),
    (SessionNotFound, "not_found"),
    (SessionExists, "exists"),
    (CorruptRecord, "corrupt"),
    (SessionTooLarge, "too_large"),
)


class BackendMetrics:
    """The instruments backends report to, registered once per registry.

    Share one instance between every instrumented backend of a process: prometheus-client
    refuses to register the same metric name twice in one registry.
    """

    _default: BackendMetrics | None = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.latency = Histogram(
            "sessionflow_backend_request_duration_seconds",
            "Time a backend call took, by backend, operation and outcome.",
            ("backend", "operation", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    @classmethod
    def default(cls) -> BackendMetrics:
        """Return the process-wide instance on prometheus-client's default registry."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def observe(self, backend: str, operation: str, tracer: Tracer | None = None) -> Observation:
        """Return a context manager that times one call and records its outcome.

        With a `tracer`, the call is also an OpenTelemetry span.
        """
        return Observation(self, backend, operation, tracer)


class Observation:
    """Times one backend call; `outcome` may be set inside, errors are classified on exit."""

    __slots__ = (
        "_backend",
        "_metrics",
        "_operation",
        "_scope",
        "_span",
        "_started",
        "_tracer",
        "outcome",
    )

    def __init__(
        self, metrics: BackendMetrics, backend: str, operation: str, tracer: Tracer | None = None
    ) -> None:
        self._metrics = metrics
        self._backend = backend
        self._operation = operation
        self._tracer = tracer
        self._scope: AbstractContextManager[Span] | None = None
        self._span: Span | None = None
        self.outcome = "ok"
        self._started = 0.0

    def __enter__(self) -> Self:
        if self._tracer is not None:
            self._scope = self._tracer.start_as_current_span(
                f"sessionflow {self._operation}",
                attributes={
                    "sessionflow.backend": self._backend,
                    "sessionflow.operation": self._operation,
                },
                record_exception=False,  # messages may name a key hint; the type is enough
                set_status_on_exception=False,
            )
            self._span = self._scope.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.outcome = next(
                (name for kind, name in _OUTCOME_OF_ERROR if isinstance(exc, kind)), "error"
            )
        self._metrics.latency.labels(self._backend, self._operation, self.outcome).observe(
            time.perf_counter() - self._started
        )
        if self._scope is not None and self._span is not None:
            _end_span(self._scope, self._span, self.outcome, (exc_type, exc, tb))


def _end_span(
    scope: AbstractContextManager[Span],
    span: Span,
    outcome: str,
    raised: tuple[type[BaseException] | None, BaseException | None, TracebackType | None],
) -> None:
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

    span.set_attribute("sessionflow.outcome", outcome)
    if outcome == "error" and raised[0] is not None:
        span.set_status(Status(StatusCode.ERROR, raised[0].__name__))
    scope.__exit__(*raised)


class StoreStatsCollector(Collector):
    """Exports a store's `StoreStats` as counters, labelled with a store name."""

    def __init__(self, stats: StoreStats, store: str) -> None:
        self._stats = stats
        self._store = store

    def collect(self) -> Iterator[Metric]:
        """Yield the store's counters."""
        for name, help_text, value in (
            ("sessionflow_store_unreadable_records", "Records that read as no session because they could not be decoded.", self._stats.unreadable_records),  # noqa: E501
            ("sessionflow_store_merged_conflicts", "Saves merged onto a concurrent save of other attributes.", self._stats.merged_conflicts),  # noqa: E501
            ("sessionflow_store_raised_conflicts", "Saves refused because another request changed the same attributes.", self._stats.raised_conflicts),  # noqa: E501
        ):  # fmt: skip
            family = CounterMetricFamily(name, help_text, labels=("store",))
            family.add_metric((self._store,), value)
            yield family
        events = CounterMetricFamily(
            "sessionflow_store_session_events",
            "Sessions created, regenerated, deleted, revoked and evicted, by event.",
            labels=("store", "event"),
        )
        for kind in SessionEventKind:
            events.add_metric((self._store, kind.value), self._stats.events[kind])
        yield events
        failures = CounterMetricFamily(
            "sessionflow_store_event_listener_failures",
            "Session events whose listener raised (the store's change stands).",
            labels=("store",),
        )
        failures.add_metric((self._store,), self._stats.listener_failures)
        yield failures


class CapacityCollector(Collector):
    """Exports a DynamoDB backend's consumed capacity per operation."""

    def __init__(self, capacity: CapacityMeter, backend: str) -> None:
        self._capacity = capacity
        self._backend = backend

    def collect(self) -> Iterator[Metric]:
        """Yield consumed capacity units and calls per operation."""
        units = CounterMetricFamily(
            "sessionflow_dynamodb_consumed_capacity_units",
            "Capacity units DynamoDB reported as consumed, by operation.",
            labels=("backend", "operation"),
        )
        for operation, value in sorted(self._capacity.units.items()):
            units.add_metric((self._backend, operation), value)
        yield units


class MigrationCollector(Collector):
    """Exports a migration's `MigrationStats`: stage, dual-writes, reads, repairs, jobs.

    Register one per process with the stats its `AsyncMigratingBackend` (and any jobs it
    runs) share. Labels are fixed sets: store old/new, role, outcome, kind.
    """

    def __init__(self, stats: MigrationStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """Yield the migration's metrics."""
        stats = self._stats
        stage = GaugeMetricFamily(
            "sessionflow_migration_stage", "1 for the stage this process runs.", labels=("stage",)
        )
        for each in Stage:
            stage.add_metric((each.value,), 1.0 if each is stats.stage else 0.0)
        yield stage
        writes = CounterMetricFamily(
            "sessionflow_migration_writes",
            "Writes by store (old/new), role (primary/secondary/fenced) and outcome (ok/error).",
            labels=("store", "role", "outcome"),
        )
        for (store, role, outcome), value in sorted(stats.writes.items()):
            writes.add_metric((store, role, outcome), value)
        yield writes
        reads = CounterMetricFamily(
            "sessionflow_migration_reads",
            "Reads by store and outcome (hit/miss/error).",
            labels=("store", "outcome"),
        )
        for (store, outcome), value in sorted(stats.reads.items()):
            reads.add_metric((store, outcome), value)
        yield reads
        yield _counter_by(
            "sessionflow_migration_mismatches",
            "Compared reads that differed after a re-check, by kind.",
            "kind",
            stats.mismatches,
        )
        yield _counter_by(
            "sessionflow_migration_repaired",
            "Keys the repairer reconciled, by outcome.",
            "outcome",
            stats.repaired,
        )
        for name, help_text, value in (
            ("sessionflow_migration_mismatch_false_positives_total", "Compared reads that agreed on re-check (copies in flight).", stats.false_positives),  # noqa: E501
            ("sessionflow_migration_stage_read_errors_total", "Failed reads of the control record (the last stage stays in use).", stats.stage_read_errors),  # noqa: E501
            ("sessionflow_migration_stage_records_restored_total", "Control records found gone back (lost) and written back by this process.", stats.stage_records_restored),  # noqa: E501
        ):  # fmt: skip
            family = CounterMetricFamily(name.removesuffix("_total"), help_text)
            family.add_metric((), value)
            yield family
        for name, help_text, gauge in (
            ("sessionflow_migration_repair_queue_depth", "Keys waiting in the repair queue.", stats.repair_depth),  # noqa: E501
            ("sessionflow_migration_repair_queue_oldest_age_seconds", "Seconds the oldest queued key has waited.", stats.repair_oldest_age),  # noqa: E501
            ("sessionflow_migration_backfill_scanned_records", "Records the backfill scanned so far.", stats.backfill_scanned),  # noqa: E501
            ("sessionflow_migration_backfill_copied_records", "Records the backfill copied so far.", stats.backfill_copied),  # noqa: E501
            ("sessionflow_migration_backfill_rate", "Records per second the backfill scans.", stats.backfill_rate),  # noqa: E501
            ("sessionflow_migration_verify_checked_sessions", "Sessions the last verification checked.", stats.verify_checked),  # noqa: E501
            ("sessionflow_migration_verify_inconsistent_sessions", "Sessions the last verification left inconsistent.", stats.verify_inconsistent),  # noqa: E501
            ("sessionflow_migration_verify_inconsistency_rate", "The last verification's inconsistency rate.", stats.verify_rate),  # noqa: E501
        ):  # fmt: skip
            yield GaugeMetricFamily(name, help_text, value=float(gauge))


def _counter_by(name: str, help_text: str, label: str, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=(label,))
    for key, value in sorted(values.items()):
        family.add_metric((key,), value)
    return family


class TierCollector(Collector):
    """Exports a tiered backend's `TierStats`: hits per tier, promotions, demotions, flushes.

    The hot/cold ratio is `sessionflow_tier_sessions{tier="hot"}` over the cold count
    (from the last lifecycle count). Per-tier latency comes from wrapping the hot tier in an
    `AsyncInstrumentedEvictable` named ``hot`` and the cold one in an
    `AsyncInstrumentedBackend` named ``cold``.
    """

    def __init__(self, stats: TierStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """Yield the tier's metrics."""
        stats = self._stats
        yield _counter_by(
            "sessionflow_tier_reads",
            "Reads by where the session was found (hot, cold, miss, degraded).",
            "found",
            {
                "hot": stats.hot_hits,
                "cold": stats.cold_hits,
                "miss": stats.misses,
                "degraded": stats.degraded_reads,
            },
        )
        for name, help_text, value in (
            ("sessionflow_tier_promotions", "Sessions copied from the cold tier into the hot one.", stats.promotions),  # noqa: E501
            ("sessionflow_tier_demotions", "Sessions moved from the hot tier to the cold one.", stats.demotions),  # noqa: E501
            ("sessionflow_tier_demotions_skipped", "Sessions left hot because they were used during demotion.", stats.demotions_skipped),  # noqa: E501
            ("sessionflow_tier_flushed", "Write-back changes copied to the cold tier.", stats.flushed),  # noqa: E501
            ("sessionflow_tier_cold_write_failures", "Writes to the cold tier that failed (queued for the flusher).", stats.cold_write_failures),  # noqa: E501
            ("sessionflow_tier_cold_refusals", "Copies the cold tier refused for good (too large, or invalid there): kept hot only.", stats.cold_refusals),  # noqa: E501
            ("sessionflow_tier_degraded_writes", "Writes made in the cold tier alone while the hot tier was down.", stats.degraded_writes),  # noqa: E501
            ("sessionflow_tier_hot_outages", "Times the hot tier stopped answering.", stats.hot_outages),  # noqa: E501
            ("sessionflow_tier_outage_repairs", "Hot copies replaced after an outage by a newer cold version.", stats.outage_repairs),  # noqa: E501
            ("sessionflow_tier_handoffs", "Sessions taken over from another region's hot tier.", stats.handoffs),  # noqa: E501
            ("sessionflow_tier_peer_failures", "Other regions' hot tiers that did not answer during a promotion.", stats.peer_failures),  # noqa: E501
            ("sessionflow_tier_stale_writes", "Saves refused because the hot copy was older than the cold tier's.", stats.stale_writes),  # noqa: E501
        ):  # fmt: skip
            family = CounterMetricFamily(name, help_text)
            family.add_metric((), value)
            yield family
        sessions = GaugeMetricFamily(
            "sessionflow_tier_sessions", "Sessions per tier (hot: indexed).", labels=("tier",)
        )
        sessions.add_metric(("hot",), stats.hot_sessions)
        sessions.add_metric(("cold",), stats.lifecycle.get("cold", 0))
        yield sessions
        states = GaugeMetricFamily(
            "sessionflow_tier_lifecycle_sessions",
            "Sessions per lifecycle state (from the last count).",
            labels=("state",),
        )
        for state, count in sorted(stats.lifecycle.items()):
            states.add_metric((state,), count)
        yield states
        for name, help_text, gauge in (
            ("sessionflow_tier_dirty_sessions", "Write-back changes not yet in the cold tier.", stats.dirty_sessions),  # noqa: E501
            ("sessionflow_tier_flush_lag_seconds", "Longest wait of a change flushed in the last flush.", stats.flush_lag_max),  # noqa: E501
        ):  # fmt: skip
            yield GaugeMetricFamily(name, help_text, value=float(gauge))
