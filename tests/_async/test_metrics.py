"""What the instrumented backend and the collectors export."""

from __future__ import annotations

import re
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from sessionflow import (
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncSessionStore,
    BackendError,
    BackendMetrics,
    ManualClock,
    SessionRecord,
    StoreStatsCollector,
    VersionConflict,
    new_session_id,
    storage_key,
)

LATENCY = "sessionflow_backend_request_duration_seconds_count"


def _count(registry: CollectorRegistry, operation: str, outcome: str) -> float:
    value = registry.get_sample_value(
        LATENCY, {"backend": "primary", "operation": operation, "outcome": outcome}
    )
    return value or 0.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def instrumented_store(registry: CollectorRegistry, clock: ManualClock) -> AsyncSessionStore:
    backend = AsyncInstrumentedBackend(
        AsyncMemoryBackend(clock), name="primary", metrics=BackendMetrics(registry)
    )
    store = AsyncSessionStore(backend, clock=clock)
    registry.register(StoreStatsCollector(store.stats, "web"))
    return store


async def test_each_call_is_timed_by_operation_and_outcome(
    instrumented_store: AsyncSessionStore, registry: CollectorRegistry
) -> None:
    store = instrumented_store
    session = await store.create({"a": 1}, user_id="u")
    assert await store.get(session.id) is not None
    assert await store.get(new_session_id()) is None
    session["a"] = 2
    await store.save(session)
    await store.delete(session)
    await store.delete(session)
    assert _count(registry, "create", "ok") == 1
    assert _count(registry, "get", "hit") == 1
    assert _count(registry, "get", "miss") == 1
    assert _count(registry, "save", "ok") == 1
    assert _count(registry, "delete", "ok") == 1
    assert _count(registry, "delete", "miss") == 1


async def test_failures_are_classified(
    instrumented_store: AsyncSessionStore, registry: CollectorRegistry
) -> None:
    store = instrumented_store
    session = await store.create({"n": 0})
    stale = await store.get(session.id)
    assert stale is not None
    session["n"] = 1
    await store.save(session)
    stale["n"] = 2
    with pytest.raises(VersionConflict):
        await store.save(stale)
    assert _count(registry, "save", "conflict") == 1
    await store.delete(session)
    record = SessionRecord(session.key, 1, None, 0.0, 0.0, 1e12, 1e12)
    assert (await store.backend.put_guarded(record)).value == "tombstone_kept"
    assert _count(registry, "put_guarded", "tombstone_kept") == 1
    assert (
        registry.get_sample_value("sessionflow_store_raised_conflicts_total", {"store": "web"}) == 1
    )


async def test_no_session_id_or_hash_ever_becomes_a_label(
    instrumented_store: AsyncSessionStore, registry: CollectorRegistry
) -> None:
    store = instrumented_store
    ids = []
    for i in range(5):
        session = await store.create({"i": i}, user_id=f"user-{i}")
        ids.append(session.id)
        await store.get(session.id)
        await store.list_user(f"user-{i}")
        await store.revoke_user(f"user-{i}")
    exposition = generate_latest(registry).decode()
    for session_id in ids:
        assert session_id not in exposition
        assert storage_key(session_id)[:12] not in exposition
    labels = set(re.findall(r'="([^"]*)"', exposition))
    assert all(len(value) < 32 for value in labels), labels
    assert "user-1" not in exposition


async def test_calls_become_opentelemetry_spans_without_session_ids(
    registry: CollectorRegistry, clock: ManualClock
) -> None:
    exporter, tracer = _tracer()
    inner = AsyncMemoryBackend(clock)
    backend = AsyncInstrumentedBackend(
        inner, name="primary", metrics=BackendMetrics(registry), tracer=tracer
    )
    store = AsyncSessionStore(backend, clock=clock)
    session = await store.create({"a": 1})
    assert await store.get(session.id) is not None
    record = await inner.get(session.key)
    assert record is not None
    with pytest.raises(VersionConflict):
        await backend.save(record, expected_version=99, changed={"a"}, removed=())
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        "sessionflow create",
        "sessionflow get",
        "sessionflow save",
    ]
    assert [span.attributes["sessionflow.outcome"] for span in spans] == ["ok", "hit", "conflict"]
    assert all(span.attributes["sessionflow.backend"] == "primary" for span in spans)
    assert all(span.status.status_code is not StatusCode.ERROR for span in spans)
    text = repr([(span.attributes, span.events) for span in spans])
    assert session.id not in text
    assert session.key not in text


def _tracer() -> tuple[InMemorySpanExporter, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider.get_tracer("tests")


class BrokenBackend(AsyncMemoryBackend):
    async def get(self, key: str) -> SessionRecord | None:
        raise BackendError(f"store unreachable reading {key[:8]}")


async def test_a_failed_call_is_an_error_span_named_by_exception_type_only(
    registry: CollectorRegistry, clock: ManualClock
) -> None:
    exporter, tracer = _tracer()
    backend = AsyncInstrumentedBackend(
        BrokenBackend(clock), name="primary", metrics=BackendMetrics(registry),
        tracer=tracer,
    )  # fmt: skip
    key = storage_key(new_session_id())
    with pytest.raises(BackendError):
        await backend.get(key)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "BackendError"
    assert span.attributes["sessionflow.outcome"] == "error"
    assert key[:8] not in repr((span.attributes, span.events, span.status.description))
