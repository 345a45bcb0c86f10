"""The migration engine on two memory stores: mirrors, repair, backfill, verify, stages."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sessionflow import (
    AsyncMigration,
    AsyncSessionStore,
    BackendError,
    ConfigError,
    ManualClock,
    MigrationRefused,
    SessionRecord,
    Stage,
    VersionConflict,
    storage_key,
)
from sessionflow._async.reconcile import copy_record
from tests._async.migration_helpers import (
    AsyncBrokenWrites,
    AsyncFleet,
    AsyncHeldWrites,
    records_agree,
)


@pytest.fixture
async def fleet(clock: ManualClock) -> AsyncIterator[AsyncFleet]:
    fleet = AsyncFleet(clock)
    yield fleet
    await fleet.close()


async def _assert_stores_agree(fleet: AsyncFleet, keys: list[str]) -> None:
    await fleet.drain()
    for key in keys:
        old, new = await fleet.old.get(key), await fleet.new.get(key)
        assert records_agree(old, new), key[:8]


async def _traffic(store: AsyncSessionStore) -> list[str]:
    """Create, update, touch, regenerate and delete; return every key involved."""
    kept = await store.create({"cart": []}, user_id="u1")
    kept["cart"] = ["book"]
    await store.save(kept)
    await store.touch(kept)
    dropped = await store.create({"x": 1})
    await store.delete(dropped)
    moved = await store.create({"step": 1}, user_id="u2")
    regenerated = await store.regenerate(moved)
    return [kept.key, dropped.key, moved.key, regenerated.key]


@pytest.mark.parametrize("stage", [Stage.DUALWRITE, Stage.SHADOW, Stage.LIVE, Stage.RAMPDOWN])
async def test_mirroring_stages_leave_both_stores_equal(fleet: AsyncFleet, stage: Stage) -> None:
    await fleet.set_stage(stage)
    _, store = fleet.process()
    keys = await _traffic(store)
    await _assert_stores_agree(fleet, keys)
    report = await fleet.migration.verify(recheck_delay=0)
    assert report.inconsistent == 0
    assert report.checked == len(keys)


@pytest.mark.parametrize(("stage", "used"), [(Stage.OFF, "old"), (Stage.COMPLETE, "new")])
async def test_single_store_stages_touch_one_store(
    fleet: AsyncFleet, stage: Stage, used: str
) -> None:
    await fleet.set_stage(stage)
    _, store = fleet.process()
    session = await store.create({"a": 1})
    await fleet.drain()
    other = fleet.new if used == "old" else fleet.old
    assert await other.get(session.key) is None
    assert await (fleet.old if used == "old" else fleet.new).get(session.key) is not None


async def test_a_failed_secondary_never_fails_the_request_and_is_repaired(
    fleet: AsyncFleet,
) -> None:
    await fleet.set_stage(Stage.DUALWRITE)
    broken_new = AsyncBrokenWrites(fleet.new)
    backend, store = fleet.process(new=broken_new)
    broken_new.broken = True
    keys = await _traffic(store)  # every request succeeds
    await fleet.drain()
    assert broken_new.refused > 0
    depth = await fleet.control.repair_depth()
    assert depth.count == len(set(keys))
    assert backend.stats.writes["new", "secondary", "error"] > 0
    broken_new.broken = False
    report = await fleet.migration.repair()
    assert report.handled == len(set(keys))
    assert report.remaining == 0
    await _assert_stores_agree(fleet, keys)


async def test_a_repair_that_fails_keeps_the_key_queued(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.SHADOW)
    broken_new = AsyncBrokenWrites(fleet.new)
    _, store = fleet.process(new=broken_new)
    broken_new.broken = True
    session = await store.create({"a": 1})
    await fleet.drain()
    fleet.migration.new = broken_new
    report = await fleet.migration.repair()
    assert report.failed == 1
    assert report.remaining == 1
    broken_new.broken = False
    assert (await fleet.migration.repair()).remaining == 0
    await _assert_stores_agree(fleet, [session.key])


async def test_bad_job_sizes_are_refused_before_a_store_is_touched(fleet: AsyncFleet) -> None:
    """A zero batch drained nothing and reported an empty queue; a float failed in a slice."""
    for sizes in ({"batch": 0}, {"batch": -1}, {"concurrency": 0}):
        with pytest.raises(ConfigError, match="must be a whole number from 1 to"):
            await fleet.migration.repair(**sizes)
    for sizes in ({"page_size": 0}, {"batch_size": 2.5}, {"concurrency": -1}):
        with pytest.raises(ConfigError, match="must be a whole number from 1 to"):
            await fleet.migration.backfill(**sizes)
    # a page a job holds, and the pages it keeps in flight, are its memory
    for sizes, message in (
        ({"page_size": 10_001}, "page_size must be a whole number from 1 to 10,000"),
        ({"concurrency": 257}, "concurrency must be a whole number from 1 to 256"),
    ):
        with pytest.raises(ConfigError, match=message):
            await fleet.migration.backfill(**sizes)
    with pytest.raises(ConfigError, match="concurrency must be a whole number from 1 to 256"):
        await fleet.migration.repair(concurrency=10**9)
    for page_size in (0, 10_001):
        with pytest.raises(ConfigError, match="page_size must be a whole number from 1 to"):
            await fleet.migration.verify(page_size=page_size)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        # every rate passed "<= inf", and none passed "<= nan"
        ({"verify_threshold": float("inf")}, "verify_threshold must be a number between 0 and 1"),
        ({"verify_threshold": float("nan")}, "verify_threshold must be a number between 0 and 1"),
        ({"verify_threshold": 5}, "verify_threshold must be a number between 0 and 1, not 5"),
        ({"heartbeat_max_age": 0}, "heartbeat_max_age must be a positive number of seconds"),
        ({"heartbeat_max_age": float("inf")}, "heartbeat_max_age must be a positive number"),
        ({"max_record_bytes": 0}, "max_record_bytes must be a whole number of at least 1"),
    ],
)
async def test_bad_migration_knobs_are_refused(
    fleet: AsyncFleet, knobs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        AsyncMigration(fleet.old, fleet.new, fleet.control, **knobs)


@pytest.mark.parametrize("sample", [0, 1e-7, 1.5, float("nan")])
async def test_a_verification_sample_out_of_range_is_refused(
    fleet: AsyncFleet, sample: float
) -> None:
    """1e-7 asked for ten million hash shares, more than a scan splits into."""
    with pytest.raises(ConfigError, match=r"sample must be from 0.000001 \(one session in"):
        await fleet.migration.verify(mode="sample", sample=sample)


async def test_a_nan_compare_sample_is_refused(fleet: AsyncFleet) -> None:
    with pytest.raises(ConfigError, match="compare_sample must be a number between 0 and 1"):
        fleet.process(compare=float("nan"))


async def test_changes_while_a_copy_is_in_flight_are_copied_too(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.LIVE)
    _, store = fleet.process()
    session = await store.create({"n": 0})
    for n in range(1, 6):  # no await between submits: later ones find the first in flight
        session["n"] = n
        await store.save(session)
    await _assert_stores_agree(fleet, [session.key])
    old = await fleet.old.get(session.key)
    assert old is not None
    assert old.version == 6


async def test_backfill_copies_guarded_and_resumes_after_a_kill(
    fleet: AsyncFleet, clock: ManualClock
) -> None:
    _, store = fleet.process(stage_ttl=0)
    sessions = [await store.create({"i": i}, user_id=f"u{i % 7}") for i in range(230)]
    deleted = sessions[:5]
    for session in deleted:
        await store.delete(session)
    expiring = await store.create({"short": True})
    newer = sessions[10]
    await copy_record(fleet.new, (await fleet.old.get(newer.key))._replace(version=9))  # type: ignore[union-attr]
    gone = sessions[11]
    await fleet.new.delete(gone.key, tombstone_expires_at=clock.now() + 60)
    with pytest.raises(MigrationRefused, match="dualwrite or shadow"):
        await fleet.migration.backfill()
    await fleet.set_stage(Stage.DUALWRITE)
    await fleet.old.touch(expiring.key, last_access=0, idle_expires_at=clock.now() + 1)
    await fleet.old.save(
        (await fleet.old.get(expiring.key))._replace(  # type: ignore[union-attr]
            version=2, idle_expires_at=clock.now() - 1
        ),
        expected_version=1,
        changed=(),
        removed=(),
    )

    pages = []

    def killed_after_two_pages(progress: object) -> None:
        pages.append(progress)
        if len(pages) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await fleet.migration.backfill(page_size=50, progress=killed_after_two_pages)
    status = await fleet.migration.status()
    assert not status.backfill_finished
    assert status.backfill[0].scanned == 100
    result = await fleet.migration.backfill(page_size=50)
    assert result.done
    assert result.scanned == 231  # live, deleted (tombstones) and expired sessions
    assert result.expired == 1
    assert result.newer_kept >= 2
    assert (await fleet.migration.status()).backfill_finished
    kept = await fleet.new.get(newer.key)
    assert kept is not None
    assert kept.version == 9  # never overwritten by an older copy
    still_gone = await fleet.new.get(gone.key)
    assert still_gone is not None
    assert still_gone.tombstone  # never resurrected
    for session in deleted:
        tomb = await fleet.new.get(session.key)
        assert tomb is not None
        assert tomb.tombstone
    assert await fleet.new.get(expiring.key) is None
    copied = await fleet.new.get(sessions[100].key)
    original = await fleet.old.get(sessions[100].key)
    assert copied == original  # absolute expiry and every field carried as they are
    again = await fleet.migration.backfill(page_size=50)
    assert again.scanned == result.scanned  # finished: nothing is copied twice


class _FailingBatch:
    """Wraps a backend: every batch holding the `failing` key fails, the others land."""

    def __init__(self, inner: Any, failing: str) -> None:
        self.inner = inner
        self.failing = failing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_guarded_many(self, records: list[SessionRecord]) -> list[Any]:
        if any(record.key == self.failing for record in records):
            raise BackendError("injected failure")
        return await self.inner.put_guarded_many(records)


async def test_a_backfill_that_fails_mid_run_checkpoints_only_whole_pages_before_it(
    fleet: AsyncFleet,
) -> None:
    await fleet.set_stage(Stage.DUALWRITE)
    keys = sorted(_key(i) for i in range(200))  # the memory store scans in key order
    for key in keys:
        await copy_record(fleet.old, _record(key, 1))
    # Pages of 20 in batches of 10, 4 batches in flight across pages: the batch holding
    # record 110 (page 6) fails while later pages may already be written.
    fleet.migration.new = _FailingBatch(fleet.new, keys[110])  # type: ignore[assignment]
    with pytest.raises(BackendError, match="injected"):
        await fleet.migration.backfill(page_size=20, batch_size=10, concurrency=4)
    (progress,) = (await fleet.migration.status()).backfill
    assert progress.scanned == 100  # five whole pages, nothing of the failed one or after
    assert not progress.done
    assert await fleet.new.get(keys[110]) is None

    fleet.migration.new = fleet.new
    result = await fleet.migration.backfill(page_size=20, batch_size=10, concurrency=4)
    assert result.done
    assert result.scanned == 200
    for key in keys:
        assert await fleet.new.get(key) is not None


async def test_backfill_with_workers_splits_the_work(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.DUALWRITE)
    for i in range(90):
        await copy_record(fleet.old, _record(_key(i), 1))
    results = [await fleet.migration.backfill(worker=w, workers=3, page_size=20) for w in range(3)]
    assert sum(r.copied for r in results) == 90
    assert all(r.copied for r in results)
    with pytest.raises(MigrationRefused, match="same split"):
        await fleet.migration.backfill(worker=0, workers=2)


async def test_backfill_quarantines_oversized_records(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.DUALWRITE)
    fleet.migration.max_record_bytes = 1000
    await copy_record(fleet.old, _record(storage_key("a" * 43), 1, {"big": b"x" * 2000}))
    await copy_record(fleet.old, _record(storage_key("b" * 43), 1))
    entries: list[dict[str, str]] = []
    result = await fleet.migration.backfill(quarantined=entries.append)
    assert result.copied == 1
    assert result.quarantine.total == 1
    assert result.quarantine.counts == {"oversized": 1}
    assert entries[0]["reason"].startswith("oversized: ")
    assert entries[0]["key"] == storage_key("a" * 43)[:12]


async def test_verify_counts_missing_extra_and_differing_and_repairs(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.SHADOW)
    missing, extra, differing, deleted = (storage_key(c * 43) for c in "abcd")
    await copy_record(fleet.old, _record(missing, 1))
    await copy_record(fleet.new, _record(extra, 1))
    await copy_record(fleet.old, _record(differing, 2, {"a": b"new"}))
    await copy_record(fleet.new, _record(differing, 1, {"a": b"old"}))
    await copy_record(fleet.new, _record(deleted, 1))
    await fleet.old.delete(deleted, tombstone_expires_at=fleet.clock.now() + 60)
    report = await fleet.migration.verify(recheck_delay=0)
    assert (report.missing, report.extra, report.differing) == (1, 1, 2)
    assert report.rate == pytest.approx(4 / 3)  # extras are counted, not checked
    assert not report.passed
    kinds = {e["kind"]: e["fields"] for e in report.examples}
    assert "version" in kinds["differing"] or kinds["differing"] == ["deleted"]
    saved = await fleet.control.read_document("verify/last")
    assert saved is not None
    assert saved["passed"] is False
    repaired = await fleet.migration.verify(repair=True, recheck_delay=0)
    assert repaired.repaired == 4
    assert repaired.passed
    assert (await fleet.migration.verify(recheck_delay=0)).inconsistent == 0


async def test_verify_sample_checks_a_share(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.SHADOW)
    for i in range(200):
        await copy_record(fleet.old, _record(_key(i), 1))
    report = await fleet.migration.verify(mode="sample", sample=0.25, recheck_delay=0)
    assert 20 < report.checked < 90
    assert report.missing == report.checked


async def test_advance_refuses_unsafe_moves_with_a_reason(fleet: AsyncFleet) -> None:
    migration = fleet.migration
    backend, _ = fleet.process(stage_ttl=0)
    await backend.stage()
    assert (await migration.advance()).stage is Stage.DUALWRITE
    with pytest.raises(MigrationRefused, match="not converged on dualwrite: some still run off"):
        await migration.advance()
    await backend.refresh_stage()
    assert (await migration.advance()).stage is Stage.SHADOW
    await backend.refresh_stage()
    with pytest.raises(MigrationRefused, match="backfill has not finished"):
        await migration.advance()
    await migration.backfill()
    with pytest.raises(MigrationRefused, match="no passing verification"):
        await migration.advance()
    await fleet.control.enqueue_repairs(["k" * 64], fleet.clock.now())
    with pytest.raises(MigrationRefused, match="repair queue holds 1"):
        await migration.advance()
    await fleet.control.finish_repairs(await fleet.control.repair_batch(10))
    await migration.verify(recheck_delay=0)
    assert (await migration.advance()).stage is Stage.CUTOVER
    await backend.refresh_stage()
    assert (await migration.advance()).stage is Stage.LIVE


async def test_force_overrides_a_refusal(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.SHADOW)
    with pytest.raises(MigrationRefused):
        await fleet.migration.advance()
    assert (await fleet.migration.advance(force=True)).stage is Stage.CUTOVER


async def test_complete_is_final(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.COMPLETE)
    with pytest.raises(MigrationRefused, match="last stage"):
        await fleet.migration.advance()
    with pytest.raises(MigrationRefused, match="no stage to roll back"):
        await fleet.migration.rollback()


async def test_rollback_to_old_authority_loses_nothing_written_while_new_led(
    fleet: AsyncFleet,
) -> None:
    await fleet.set_stage(Stage.LIVE)
    broken_old = AsyncBrokenWrites(fleet.old)
    backend, store = fleet.process(old=broken_old, stage_ttl=0)
    broken_old.broken = True  # the old store misses every copy while new leads
    keys = await _traffic(store)
    await fleet.drain()
    broken_old.broken = False
    await fleet.control.finish_repairs(await fleet.control.repair_batch(100))  # lost queue too
    assert (await fleet.migration.rollback()).stage is Stage.CUTOVER
    await backend.refresh_stage()
    assert (await fleet.migration.rollback()).stage is Stage.SHADOW
    await _assert_stores_agree(fleet, keys)
    steps = await fleet.migration.validate()
    assert [s.name for s in steps] == ["create", "read", "update", "delete"]
    assert all(s.ok for s in steps), steps


async def test_validation_reports_a_store_that_lost_a_write(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.SHADOW)
    broken_new = AsyncBrokenWrites(fleet.new)
    fleet.migration.new = broken_new
    broken_new.broken = True
    steps = await fleet.migration.validate()
    assert not steps[0].ok
    assert "new store holds nothing" in steps[0].detail


async def test_shadow_reads_record_confirmed_mismatches_without_values(
    fleet: AsyncFleet,
) -> None:
    await fleet.set_stage(Stage.SHADOW)
    backend, store = fleet.process(compare=1.0)
    session = await store.create({"secret": "value-that-must-not-leak"})
    await fleet.drain()
    stored = await fleet.new.get(session.key)
    assert stored is not None
    await fleet.new.save(
        stored._replace(attributes={"secret": b"tampered"}),
        expected_version=stored.version,
        changed={"secret"},
        removed=(),
    )
    await store.get(session.id, touch=False)
    await fleet.drain()
    assert backend.stats.mismatches == {"differing": 1}
    logged = await fleet.control.mismatches()
    assert logged[0]["fields"] == ["secret"]
    assert logged[0]["key"] == session.key[:12]
    assert "value-that-must-not-leak" not in repr(logged)
    assert session.id not in repr(logged)


# -- the fenced cutover in rolling windows ------------------------------------------------


async def test_shadow_and_cutover_processes_keep_both_writes(fleet: AsyncFleet) -> None:
    """A shadow save whose copy lags; a cutover save on top of it: both kept."""
    await fleet.set_stage(Stage.SHADOW)
    held_new = AsyncHeldWrites(fleet.new)
    _, shadow = fleet.process(new=held_new)
    session = await shadow.create({"a": 0, "b": 0})
    await fleet.drain()
    await fleet.set_stage(Stage.CUTOVER)
    _, cutover = fleet.process(stage_ttl=0)
    held_new.holding = True
    session["a"] = 1
    await shadow.save(session)  # acknowledged by old; its copy to new is held
    await fleet.drain()
    seen = await cutover.get(session.id, touch=False)
    assert seen is not None
    seen["b"] = 2
    await cutover.save(seen)  # new lags: it is brought up to this record
    await held_new.deliver()  # the late copy of the shadow save is kept out
    final_old, final_new = await fleet.old.get(session.key), await fleet.new.get(session.key)
    assert records_agree(final_old, final_new)
    assert final_new is not None
    assert set(final_new.attributes) == {"a", "b"}
    reread = await cutover.get(session.id, touch=False)
    assert reread is not None
    assert (reread["a"], reread["b"]) == (1, 2)


async def test_cutover_save_racing_a_live_save_keeps_both(fleet: AsyncFleet) -> None:
    """The half-written fenced save: old accepted it, new had a live save already."""
    await fleet.set_stage(Stage.CUTOVER)
    _, cutover = fleet.process(stage_ttl=60)
    session = await cutover.create({"a": 0, "b": 0})
    stale = await cutover.get(session.id, touch=False)
    assert stale is not None
    await fleet.set_stage(Stage.LIVE)
    held_old = AsyncHeldWrites(fleet.old)
    _, live = fleet.process(old=held_old, stage_ttl=0)
    held_old.holding = True
    current = await live.get(session.id, touch=False)
    assert current is not None
    current["a"] = 1
    await live.save(current)  # acknowledged by new; its copy to old is held
    await fleet.drain()
    stale["b"] = 2
    await cutover.save(stale)  # old accepts, new refuses: old restored, merged, written again
    await held_old.deliver()
    await fleet.drain()
    final_old, final_new = await fleet.old.get(session.key), await fleet.new.get(session.key)
    assert records_agree(final_old, final_new)
    reread = await live.get(session.id, touch=False)
    assert reread is not None
    assert (reread["a"], reread["b"]) == (1, 2)


async def test_cutover_same_attribute_race_raises_and_keeps_the_acknowledged_one(
    fleet: AsyncFleet,
) -> None:
    await fleet.set_stage(Stage.CUTOVER)
    _, cutover = fleet.process(stage_ttl=60)
    session = await cutover.create({"a": 0})
    stale = await cutover.get(session.id, touch=False)
    assert stale is not None
    await fleet.set_stage(Stage.LIVE)
    _, live = fleet.process(stage_ttl=0)
    current = await live.get(session.id, touch=False)
    assert current is not None
    current["a"] = "live"
    await live.save(current)
    await fleet.drain()
    stale["a"] = "cutover"
    with pytest.raises(VersionConflict):
        await cutover.save(stale)
    old, new = await fleet.old.get(session.key), await fleet.new.get(session.key)
    assert records_agree(old, new)  # the orphan in old was put back
    reread = await live.get(session.id, touch=False)
    assert reread is not None
    assert reread["a"] == "live"


async def test_cutover_read_prefers_a_tombstone_and_the_newer_copy(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.CUTOVER)
    backend, _ = fleet.process()
    key = storage_key("e" * 43)
    await copy_record(fleet.old, _record(key, 3))
    await copy_record(fleet.new, _record(key, 2))
    got = await backend.get(key)
    assert got is not None
    assert got.version == 3
    await fleet.new.delete(key, tombstone_expires_at=fleet.clock.now() + 60)
    got = await backend.get(key)
    assert got is not None
    assert got.tombstone


async def test_live_reads_through_to_the_old_store_on_a_miss(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.LIVE)
    backend, _ = fleet.process()
    key = storage_key("f" * 43)
    await copy_record(fleet.old, _record(key, 1))
    got = await backend.get(key)
    assert got is not None
    assert await fleet.new.get(key) == got
    await fleet.old.delete(key, tombstone_expires_at=fleet.clock.now() + 60)
    gone = storage_key("g" * 43)
    await fleet.old.delete(gone, tombstone_expires_at=fleet.clock.now() + 60)
    assert await backend.get(gone) is None  # a tombstone is never promoted


async def test_an_unreachable_control_plane_keeps_the_last_stage(fleet: AsyncFleet) -> None:
    await fleet.set_stage(Stage.DUALWRITE)
    backend, store = fleet.process(stage_ttl=0)
    assert await backend.stage() is Stage.DUALWRITE

    async def unreachable() -> None:
        raise BackendError("down")

    backend.control.read_stage = unreachable  # type: ignore[method-assign,assignment]
    session = await store.create({"a": 1})
    assert await backend.stage() is Stage.DUALWRITE
    assert backend.stats.stage_read_errors >= 1
    assert await fleet.old.get(session.key) is not None


def _key(number: int) -> str:
    return hashlib.sha256(str(number).encode()).hexdigest()


def _record(key: str, version: int, attributes: dict[str, bytes] | None = None) -> SessionRecord:
    now = time.time()
    return SessionRecord(
        key=key,
        version=version,
        user_id=None,
        created_at=now,
        last_access=now,
        idle_expires_at=now + 600,
        absolute_expires_at=now + 3600,
        attributes=attributes or {"a": b"\x01"},
    )
