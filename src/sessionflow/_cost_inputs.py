"""Workloads for the cost model, from a load test's report or from scraped Prometheus metrics.

Measured consumed capacity is used when the run was on DynamoDB. Otherwise request units
are derived from the session operations and the item size, with what each operation costs
on sessionflow's DynamoDB backend:

=========== ================================================================
read        one consistent read (plus a touch write when one is due)
update      one read, one conditional write
touch       one read, one write
create      one conditional write
delete      one read, one tombstone write
regenerate  one read, one create, one tombstone write
=========== ================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessionflow._cost_model import Workload
from sessionflow._errors import ConfigError

READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024
READ_BACKEND_OPERATIONS = frozenset({"get", "get_many", "user_keys", "scan"})
DEFAULT_ITEM_BYTES = 1024.0
DEFAULT_REDIS_OVERHEAD = 2.0
"""Without a measurement: Redis holds a session in about twice its DynamoDB item size."""

# (reads, writes) each session operation makes on sessionflow's DynamoDB backend.
_REQUESTS: dict[str, tuple[int, int]] = {
    "read": (1, 0),
    "update": (1, 1),
    "touch": (1, 1),
    "create": (0, 1),
    "delete": (1, 1),
    "regenerate": (1, 2),
}
# Backend operations (as the metrics name them) that read; the rest write.
_BACKEND_REQUESTS: dict[str, tuple[int, int]] = {
    "get": (1, 0),
    "get_many": (1, 0),
    "save": (0, 1),
    "create": (0, 1),
    "touch": (0, 1),
    "delete": (0, 1),
    "put_guarded": (0, 1),
}


def units_per_request(item_bytes: float) -> tuple[float, float]:
    """Read and write units one request of an item this size consumes (consistent reads)."""
    return (
        float(max(1, math.ceil(item_bytes / READ_UNIT_BYTES))),
        float(max(1, math.ceil(item_bytes / WRITE_UNIT_BYTES))),
    )


def units_from_operations(
    counts: Mapping[str, float], item_bytes: float, table: Mapping[str, tuple[int, int]]
) -> tuple[float, float]:
    """Read and write units for these operation counts, by the per-operation request table."""
    read_unit, write_unit = units_per_request(item_bytes)
    reads = sum(table.get(op, (0, 0))[0] * n for op, n in counts.items())
    writes = sum(table.get(op, (0, 0))[1] * n for op, n in counts.items())
    return reads * read_unit, writes * write_unit


def split_capacity(capacity: Mapping[str, float]) -> tuple[float, float]:
    """Measured capacity units by backend operation, split into reads and writes."""
    reads = sum(units for op, units in capacity.items() if op in READ_BACKEND_OPERATIONS)
    writes = sum(units for op, units in capacity.items() if op not in READ_BACKEND_OPERATIONS)
    return reads, writes


@dataclass(frozen=True)
class Scaling:
    """How a measured run maps to production: a rate multiplier and the stored sessions."""

    sessions: int
    scale: float = 1.0
    peak_factor: float | None = None
    item_bytes: float | None = None
    redis_bytes_per_session: float | None = None
    hot_fraction: float = 0.2
    hot_sessions: int | None = None
    """The hot set's size, when known (it overrides `hot_fraction`)."""
    hybrid_read_share: float = 0.05
    hybrid_write_share: float = 0.21

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError("the scale must be a positive number")
        if self.hot_sessions is not None and not 0 <= self.hot_sessions <= self.sessions:
            raise ConfigError("the hot sessions must be between 0 and the stored sessions")

    def workload(
        self,
        read_units: float,
        write_units: float,
        *,
        item_bytes: float,
        redis_bytes: float | None,
        peak_factor: float,
        source: str,
        notes: list[str],
        hot_sessions: float | None = None,
    ) -> Workload:
        """Return a workload at production scale from measured per-second units.

        `hot_sessions` is a measured hot-set size (a tier's gauge); the settings' own
        `hot_sessions` take precedence over it, and both over `hot_fraction`.
        """
        item = self.item_bytes or item_bytes
        hot_fraction = self.hot_fraction
        hot = self.hot_sessions if self.hot_sessions is not None else hot_sessions
        if hot is not None and self.sessions > 0:
            hot_fraction = min(hot / self.sessions, 1.0)
            if self.hot_sessions is None:
                notes.append(f"hot set measured: {hot:,.0f} sessions in the hot tier")
        redis = self.redis_bytes_per_session or redis_bytes
        if redis is None or redis <= 0:
            redis = item * DEFAULT_REDIS_OVERHEAD
            notes.append(f"Redis bytes per session not measured: {redis:,.0f} assumed (2x item)")
        if self.scale != 1:
            notes.append(f"measured rates multiplied by {self.scale:g}")
        return Workload(
            read_units_per_second=read_units * self.scale,
            write_units_per_second=write_units * self.scale,
            sessions=self.sessions,
            item_bytes=item,
            redis_bytes_per_session=redis,
            peak_factor=self.peak_factor or peak_factor,
            hot_fraction=hot_fraction,
            hybrid_read_share=self.hybrid_read_share,
            hybrid_write_share=self.hybrid_write_share,
            source=source,
            notes=tuple(notes),
        )


def from_load_report(
    report: Mapping[str, Any], scaling: Scaling, *, target: str | None = None
) -> Workload:
    """Return the workload one target of a `sessionflow bench load` report measured."""
    targets = report.get("targets") if isinstance(report, Mapping) else None
    if not isinstance(targets, dict) or not targets:
        raise ConfigError("not a sessionflow load report: it has no targets")
    name = target or next(iter(targets))
    if name not in targets:
        raise ConfigError(f"the report has no target {name!r}; it has {', '.join(targets)}")
    run = targets[name]
    if not isinstance(run, dict):
        raise ConfigError(f"the load report's target {name!r} is not a table of figures")
    try:
        seconds = float(run["seconds"])
        counts = {op: float(n) for op, n in run["requests_by_operation"].items()}
        item_bytes = float(run.get("dynamodb_item_bytes") or DEFAULT_ITEM_BYTES)
        phases = [
            {"target_rate": float(p["target_rate"]), "duration": float(p["duration"])}
            for p in run["phases"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the load report's target {name!r} is incomplete: {exc}") from exc
    if seconds <= 0 or not counts:
        raise ConfigError(f"the load report's target {name!r} sent no requests")
    notes: list[str] = []
    if run.get("consumed_capacity"):
        reads, writes = split_capacity(run["consumed_capacity"])
        source = f"consumed capacity measured on {name}"
    else:
        reads, writes = units_from_operations(counts, item_bytes, _REQUESTS)
        source = f"operations measured on {name}, units from a {item_bytes:,.0f}-byte item"
    redis_bytes = run.get("redis_bytes_per_session")
    if redis_bytes is None:  # another target of the same run may have been Redis
        for other, other_run in targets.items():
            if isinstance(other_run, dict) and other_run.get("redis_bytes_per_session"):
                redis_bytes = other_run["redis_bytes_per_session"]
                notes.append(f"Redis bytes per session measured on {other}")
                break
    # The peak factor is the plan's shape (its busiest phase over its mean), not what the
    # target achieved: a saturated target would otherwise hide the peak it was asked for.
    planned = sum(float(p["target_rate"]) * float(p["duration"]) for p in phases)
    mean = planned / max(sum(float(p["duration"]) for p in phases), 1e-9)
    peak = max((float(p["target_rate"]) for p in phases), default=mean)
    return scaling.workload(
        reads / seconds,
        writes / seconds,
        item_bytes=item_bytes,
        redis_bytes=redis_bytes,
        peak_factor=max(peak / mean, 1.0) if mean > 0 else 1.0,
        source=source,
        notes=notes,
    )


def from_metrics(
    before: str, after: str, seconds: float, scaling: Scaling, *, backend: str | None = None
) -> Workload:
    """Return the workload two scrapes of a process's /metrics, `seconds` apart, show.

    `backend` keeps only one ``backend`` label (a migrating process reports two stores).
    """
    if seconds <= 0:
        raise ConfigError("the time between the two scrapes must be positive")
    first, second = _scrape(before, backend), _scrape(after, backend)
    capacity = {op: second.capacity.get(op, 0.0) - first.capacity.get(op, 0.0)
                for op in second.capacity}  # fmt: skip
    calls = {op: second.calls.get(op, 0.0) - first.calls.get(op, 0.0) for op in second.calls}
    if any(value < 0 for value in [*capacity.values(), *calls.values()]):
        raise ConfigError("a counter went down between the scrapes: the process restarted")
    item_bytes = scaling.item_bytes or DEFAULT_ITEM_BYTES
    notes: list[str] = []
    if any(units > 0 for units in capacity.values()):
        reads, writes = split_capacity(capacity)
        source = "consumed capacity scraped from sessionflow's metrics"
    elif any(n > 0 for n in calls.values()):
        reads, writes = units_from_operations(calls, item_bytes, _BACKEND_REQUESTS)
        source = f"backend calls scraped from sessionflow's metrics, {item_bytes:,.0f}-byte items"
    else:
        raise ConfigError("the scrapes show no sessionflow backend traffic between them")
    if scaling.peak_factor is None:
        notes.append("peak not measured by two scrapes: 2x the mean assumed (--peak-factor)")
    return scaling.workload(
        reads / seconds,
        writes / seconds,
        item_bytes=item_bytes,
        redis_bytes=None,
        peak_factor=2.0,
        source=source,
        notes=notes,
        hot_sessions=second.hot_sessions,
    )


@dataclass
class _Scrape:
    capacity: dict[str, float]
    calls: dict[str, float]
    hot_sessions: float | None = None


def _scrape(text: str, backend: str | None) -> _Scrape:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    scrape = _Scrape({}, {})
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise ConfigError(f"not Prometheus text exposition: {exc}") from exc
    for family in families:
        for sample in family.samples:
            if backend is not None and sample.labels.get("backend") != backend:
                continue
            operation = sample.labels.get("operation", "")
            if sample.name == "sessionflow_dynamodb_consumed_capacity_units_total":
                scrape.capacity[operation] = scrape.capacity.get(operation, 0.0) + sample.value
            elif sample.name == "sessionflow_backend_request_duration_seconds_count":
                scrape.calls[operation] = scrape.calls.get(operation, 0.0) + sample.value
            elif sample.name == "sessionflow_tier_sessions" and sample.labels.get("tier") == "hot":
                scrape.hot_sessions = (scrape.hot_sessions or 0.0) + sample.value
    return scrape
