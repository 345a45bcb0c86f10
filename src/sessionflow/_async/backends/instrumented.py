"""A backend wrapper that reports latency and outcome of every call to Prometheus."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from sessionflow._async.backends.base import AsyncBackend, AsyncEvictable, check_storable
from sessionflow._errors import CorruptRecord
from sessionflow._metrics import BackendMetrics
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedResult, GuardedWrite, ScanPage

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


class AsyncInstrumentedBackend:
    """Wraps any backend (composites included) and times each call by operation and outcome.

    Outcomes: ``hit``/``miss`` for reads, ``ok`` for writes, ``conflict``, ``not_found``,
    ``exists``, ``corrupt``, ``too_large`` and ``error`` for failures, and the verdict of a
    guarded copy. Label values never include a session id or hash.

    Args:
        inner: the backend to wrap.
        name: the ``backend`` label, e.g. ``"redis"`` or ``"dynamodb-eu"``.
        metrics: the instruments; share one `BackendMetrics` per registry.
        tracer: an OpenTelemetry tracer (the ``otel`` extra): each call becomes a span
            ``sessionflow <operation>`` with the backend, operation and outcome as
            attributes (never a session id or hash).
    """

    def __init__(
        self,
        inner: AsyncBackend,
        *,
        name: str,
        metrics: BackendMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.inner = inner
        self.name = name
        self.metrics = metrics or BackendMetrics.default()
        self.tracer = tracer

    def check_storable(self, record: SessionRecord) -> None:
        """Raise the refusal the wrapped store would give `record` (see `check_storable`)."""
        check_storable(self.inner, record)

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`."""
        with self.metrics.observe(self.name, "create", self.tracer):
            await self.inner.create(record)

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`."""
        with self.metrics.observe(self.name, "get", self.tracer) as observation:
            record = await self.inner.get(key)
            observation.outcome = "miss" if record is None else "hit"
            return record

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`."""
        with self.metrics.observe(self.name, "get_many", self.tracer):
            return await self.inner.get_many(keys)

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],
        removed: Collection[str],
    ) -> None:
        """See `AsyncBackend.save`."""
        with self.metrics.observe(self.name, "save", self.tracer):
            await self.inner.save(
                record, expected_version=expected_version, changed=changed, removed=removed
            )

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """See `AsyncBackend.touch`."""
        with self.metrics.observe(self.name, "touch", self.tracer) as observation:
            touched = await self.inner.touch(
                key, last_access=last_access, idle_expires_at=idle_expires_at
            )
            observation.outcome = "ok" if touched else "miss"
            return touched

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`."""
        with self.metrics.observe(self.name, "delete", self.tracer) as observation:
            old = await self.inner.delete(
                key, tombstone_expires_at=tombstone_expires_at, expected_version=expected_version
            )
            observation.outcome = "miss" if old is None else "ok"
            return old

    async def user_keys(self, user_id: str) -> list[str]:
        """See `AsyncBackend.user_keys`."""
        with self.metrics.observe(self.name, "user_keys", self.tracer):
            return await self.inner.user_keys(user_id)

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """See `AsyncBackend.forget_user_keys`."""
        with self.metrics.observe(self.name, "forget_user_keys", self.tracer):
            await self.inner.forget_user_keys(user_id, keys)

    async def scan(
        self,
        cursor: str | None = None,
        *,
        count: int = 500,
        worker: int = 0,
        workers: int = 1,
    ) -> ScanPage:
        """See `AsyncBackend.scan`."""
        with self.metrics.observe(self.name, "scan", self.tracer):
            return await self.inner.scan(cursor, count=count, worker=worker, workers=workers)

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`."""
        with self.metrics.observe(self.name, "put_guarded", self.tracer) as observation:
            verdict = await self.inner.put_guarded(record)
            observation.outcome = verdict.value
            return verdict

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`."""
        with self.metrics.observe(self.name, "put_guarded_many", self.tracer):
            return await self.inner.put_guarded_many(records)


class AsyncInstrumentedEvictable(AsyncInstrumentedBackend):
    """The metrics wrapper for a hybrid tier's hot store: `evict` is timed too.

    Wrap the hot tier in this (named ``hot``) and the cold tier in an
    `AsyncInstrumentedBackend` (named ``cold``) to get per-tier latency.
    """

    def __init__(
        self,
        inner: AsyncEvictable,
        *,
        name: str,
        metrics: BackendMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        super().__init__(inner, name=name, metrics=metrics, tracer=tracer)
        self.evictable = inner

    async def evict(self, key: str, *, version: int, last_access: float) -> bool:
        """See `AsyncEvictable.evict`."""
        with self.metrics.observe(self.name, "evict", self.tracer) as observation:
            evicted = await self.evictable.evict(key, version=version, last_access=last_access)
            observation.outcome = "ok" if evicted else "miss"
            return evicted

    async def instance(self) -> str:
        """See `AsyncEvictable.instance` (not timed: it is a health probe)."""
        return await self.evictable.instance()
