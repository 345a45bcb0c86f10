"""Prometheus metrics of a migration: dual-writes, reads, repair queue, jobs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from sessionflow import ManualClock, MigrationCollector, Stage
from tests._sync.migration_helpers import BrokenWrites, Fleet


def test_migration_metrics_follow_traffic_repair_and_jobs() -> None:
    clock = ManualClock()
    fleet = Fleet(clock, Stage.DUALWRITE)
    broken = BrokenWrites(fleet.new)
    backend, store = fleet.process(new=broken)
    fleet.migration.stats = backend.stats  # one process: jobs and traffic share counters
    registry = CollectorRegistry()
    registry.register(MigrationCollector(backend.stats))
    broken.broken = True
    sessions = [store.create({"i": i}) for i in range(3)]
    assert store.get(sessions[0].id) is not None
    fleet.drain()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("sessionflow_migration_stage", stage="dualwrite") == 1.0
    assert value("sessionflow_migration_stage", stage="live") == 0.0
    assert (
        value("sessionflow_migration_writes_total", store="old", role="primary", outcome="ok") == 3
    )
    assert (
        value("sessionflow_migration_writes_total", store="new", role="secondary", outcome="error")
        == 3
    )
    assert value("sessionflow_migration_reads_total", store="old", outcome="hit") == 1
    fleet.migration.status()
    assert value("sessionflow_migration_repair_queue_depth") == 3
    broken.broken = False
    fleet.migration.repair()
    assert value("sessionflow_migration_repair_queue_depth") == 0
    assert value("sessionflow_migration_repaired_total", outcome="copied_to_new") == 3
    fleet.migration.backfill()
    assert value("sessionflow_migration_backfill_scanned_records") == 3
    fleet.migration.verify(recheck_delay=0)
    assert value("sessionflow_migration_verify_checked_sessions") == 3
    assert value("sessionflow_migration_verify_inconsistency_rate") == 0
    exposition = generate_latest(registry).decode()
    for session in sessions:
        assert session.key[:12] not in exposition
        assert session.id not in exposition
    fleet.close()
