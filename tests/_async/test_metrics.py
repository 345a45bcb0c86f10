"""What the instrumented backend and the collectors export."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sessionflow import (
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncSessionStore,
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
