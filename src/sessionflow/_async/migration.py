"""The fleet-level side of a migration: status, stage changes, backfill, verify, repair.

`AsyncMigration` works on the two stores and the control plane directly; the fleet's
processes keep serving through their `AsyncMigratingBackend`s meanwhile. Every job streams
(a page of records in memory at a time), checkpoints in the control plane, resumes where it
stopped, and quarantines records it cannot copy instead of failing on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.control import AsyncControlPlane
from sessionflow._async.conversations.base import AsyncMigratableConversations
from sessionflow._async.conversations.records import AsyncConversationRecords
from sessionflow._async.reconcile import (
    copy_record,
    copy_records,
    reconcile_key,
    reconcile_records,
)
from sessionflow._async.validation import probe_for
from sessionflow._clock import Clock, SystemClock
from sessionflow._codec import Codec, encoded_size
from sessionflow._concurrency import (
    async_in_order,
    async_map_limited,
    async_sleep,
    async_stop_if_cancelled,
)
from sessionflow._control import StageRecord
from sessionflow._errors import (
    BackendError,
    ConfigError,
    CorruptRecord,
    MigrationRefused,
    SessionflowError,
)
from sessionflow._ids import key_hint
from sessionflow._migration_reports import (
    BackfillProgress,
    MigrationStatus,
    RepairReport,
    Throttle,
    VerifyReport,
    checkpoint_name,
    difference,
)
from sessionflow._migration_stats import MigrationStats
from sessionflow._policy import check_count, check_fraction, check_seconds
from sessionflow._quarantine import REFUSED_BY_STORE, refusal_reason
from sessionflow._record import SessionRecord
from sessionflow._scan import (
    MAX_IN_FLIGHT,
    MAX_PAGE,
    SAMPLE_RANGE,
    SMALLEST_SAMPLE,
    GuardedResult,
    GuardedWrite,
    ScanPage,
)
from sessionflow._stages import FleetState, Stage, refusal

logger = logging.getLogger("sessionflow.migration")
_T = TypeVar("_T")

BACKFILL_META = "backfill/meta"
LAST_VERIFICATION = "verify/last"
_COPY_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class _PageBatch:
    """One batch of a scanned page's copies; `outcomes` is shared by the page's batches."""

    page: ScanPage
    outcomes: list[str]
    batch: list[tuple[int, SessionRecord]]
    last: bool


@dataclass(frozen=True, slots=True)
class ValidationStep:
    """One checked step of the post-change validation."""

    name: str
    ok: bool
    detail: str = ""


class AsyncMigration:
    """Status, stage changes and the long jobs of one migration between two stores.

    Args:
        old: the store sessions move away from.
        new: the store sessions move to.
        control: the control plane the fleet's migrating backends read.
        clock: decides expiry (records expired at scan time are not copied).
        stats: counters shared with metrics.
        heartbeat_max_age: a process whose last heartbeat is older is considered gone.
        verify_threshold: the largest inconsistency rate a verification may leave to pass.
        max_record_bytes: records larger than this are quarantined rather than copied.
    """

    def __init__(
        self,
        old: AsyncBackend,
        new: AsyncBackend,
        control: AsyncControlPlane,
        *,
        clock: Clock | None = None,
        stats: MigrationStats | None = None,
        heartbeat_max_age: float = 15.0,
        verify_threshold: float = 0.0001,
        max_record_bytes: int | None = None,
    ) -> None:
        check_seconds("heartbeat_max_age", heartbeat_max_age)
        check_fraction("verify_threshold", verify_threshold)
        if max_record_bytes is not None:
            check_count("max_record_bytes", max_record_bytes)
        self.old = old
        self.new = new
        self.control = control
        self.clock = clock or SystemClock()
        self.stats = stats or MigrationStats()
        self.heartbeat_max_age = heartbeat_max_age
        self.verify_threshold = verify_threshold
        self.max_record_bytes = (
            max_record_bytes or getattr(old, "max_record_bytes", None) or Codec().max_session_bytes
        )

    @classmethod
    def for_conversations(
        cls,
        old: AsyncMigratableConversations,
        new: AsyncMigratableConversations,
        control: AsyncControlPlane,
        **options: Any,  # noqa: ANN401 - the keyword arguments of the constructor
    ) -> Self:
        """Return the migration of conversation lists from `old` to `new`.

        The same engine over both stores' record views (`AsyncConversationRecords`);
        entries with metadata over the conversation limit are quarantined by jobs.
        """
        return cls(AsyncConversationRecords(old), AsyncConversationRecords(new), control, **options)

    # -- status and stage changes --------------------------------------------------------

    async def status(self) -> MigrationStatus:
        """Return the stage, live processes, repair queue, backfill and last verification."""
        now = self.clock.now()
        stage = await self.control.read_stage()
        depth = await self.control.repair_depth()
        self.stats.repair_depth = depth.count
        self.stats.repair_oldest_age = depth.oldest_age(now)
        backfill, finished = await self._backfill_state()
        return MigrationStatus(
            stage=stage,
            processes=await self.control.processes(now, self.heartbeat_max_age),
            repair=depth,
            backfill=backfill,
            backfill_finished=finished,
            verification=await self.control.read_document(LAST_VERIFICATION),
            mismatches=await self.control.mismatches(20),
            now=now,
        )

    async def _backfill_state(self) -> tuple[list[BackfillProgress], bool]:
        meta = await self.control.read_document(BACKFILL_META)
        if meta is None:
            return [], False
        workers = int(meta["workers"])
        progress = []
        for worker in range(workers):
            data = await self.control.read_document(checkpoint_name(worker, workers))
            progress.append(
                BackfillProgress.from_dict(data)
                if data
                else BackfillProgress(worker=worker, workers=workers)
            )
        return progress, all(p.done for p in progress)

    async def fleet_state(self) -> FleetState:
        """Return what `refusal` needs to judge a stage change."""
        status = await self.status()
        verification = status.verification or {}
        finished_at = max((p.updated_at for p in status.backfill), default=0.0)
        verified = bool(verification.get("passed")) and verification.get("at", 0) >= finished_at
        return FleetState(
            stage=status.stage.stage,
            process_stages=tuple(p.stage for p in status.processes),
            backfill_finished=status.backfill_finished,
            repair_depth=status.repair.count,
            verification_passed=verified,
        )

    async def advance(self, *, force: bool = False, note: str = "") -> StageRecord:
        """Move the fleet one stage forward; raise `MigrationRefused` if that is unsafe."""
        record = await self.control.read_stage()
        target = record.stage.next()
        if target is None:
            raise MigrationRefused("complete is the last stage")
        return await self._change(record, target, force=force, note=note or "advance")

    async def rollback(
        self,
        *,
        force: bool = False,
        note: str = "",
        progress: Callable[[VerifyReport], None] | None = None,
    ) -> StageRecord:
        """Move the fleet one stage back.

        Leaving ``cutover`` for ``shadow`` hands authority back to the old store: first the
        repair queue is drained and every session in the new store is reconciled into the
        old one (the reverse repair pass), so nothing written while the new store was
        authoritative is lost.
        """
        record = await self.control.read_stage()
        target = record.stage.previous()
        if target is None:
            raise MigrationRefused(f"{record.stage} has no stage to roll back to")
        if not force:
            await self._check(record, target)
        if record.stage is Stage.CUTOVER:
            await self.repair()
            await self.verify(mode="full", repair=True, source="new", progress=progress)
        return await self._change(record, target, force=True, note=note or "rollback")

    async def _check(self, record: StageRecord, target: Stage) -> None:
        state = await self.fleet_state()
        if state.stage is not record.stage:
            raise MigrationRefused("the stage changed meanwhile; look at migrate status again")
        reason = refusal(state, target)
        if reason is not None:
            raise MigrationRefused(reason)

    async def _change(
        self, record: StageRecord, target: Stage, *, force: bool, note: str
    ) -> StageRecord:
        if not force:
            await self._check(record, target)
        changed = await self.control.write_stage(
            target, expected_revision=record.revision, now=self.clock.now(), note=note
        )
        self.stats.stage = target
        logger.info("migration stage %s -> %s (%s)", record.stage, target, note)
        return changed

    async def wait_converged(self, within: float, poll: float = 0.5) -> bool:
        """Wait until every live process reports the current stage; False on timeout."""
        deadline = time.monotonic() + within
        while True:
            await async_stop_if_cancelled()
            stage = (await self.control.read_stage()).stage
            beats = await self.control.processes(self.clock.now(), self.heartbeat_max_age)
            if all(beat.stage is stage for beat in beats):
                return True
            if time.monotonic() >= deadline:
                return False
            await async_sleep(poll)

    # -- backfill -----------------------------------------------------------------------

    async def backfill(
        self,
        *,
        worker: int = 0,
        workers: int = 1,
        page_size: int = 500,
        batch_size: int = 100,
        concurrency: int = 4,
        max_rate: float | None = None,
        max_capacity: float | None = None,
        restart: bool = False,
        force: bool = False,
        progress: Callable[[BackfillProgress], None] | None = None,
        quarantined: Callable[[dict[str, str]], None] | None = None,
    ) -> BackfillProgress:
        """Copy every session of the old store into the new one with guarded writes.

        Never overwrites a newer version and never brings a deleted session back; skips
        expired sessions; keeps absolute expiry times. Checkpoints after every page, so a
        killed run started again with the same worker split resumes where it stopped.
        `max_rate` caps records per second and `max_capacity` the capacity units per
        second the new store reports (DynamoDB). Records go to the new store in batches of
        `batch_size` (one DynamoDB transaction each), `concurrency` batches at a time; the
        next page is scanned while the batches are written, and a page is checkpointed once
        it and every page before it are copied.
        Refused before ``dualwrite`` (sessions changed meanwhile would not be copied),
        unless forced.
        """
        for name, count, most in (
            ("page_size", page_size, MAX_PAGE),
            ("batch_size", batch_size, MAX_PAGE),
            ("concurrency", concurrency, MAX_IN_FLIGHT),
        ):
            check_count(name, count, most=most)
        stage = (await self.control.read_stage()).stage
        if not force and stage not in (Stage.DUALWRITE, Stage.SHADOW):
            raise MigrationRefused(
                f"backfill runs in dualwrite or shadow (so every change is copied too); "
                f"the fleet is at {stage}"
            )
        state = await self._backfill_start(worker, workers, restart=restart)
        if state.done:
            return state
        throttle = Throttle(max_rate, max_capacity)
        units_before = _consumed_units(self.new)
        scanned_before = state.scanned
        last_commit = time.monotonic()

        async def commit(unit: _PageBatch, _: None) -> None:
            nonlocal last_commit
            if not unit.last:
                return
            for record, outcome in zip(unit.page.records, unit.outcomes, strict=True):
                self._tally(state, record, outcome, quarantined)
            state.cursor, state.done = unit.page.cursor, unit.page.cursor is None
            now = time.monotonic()
            state.seconds, last_commit = state.seconds + now - last_commit, now
            state.updated_at = self.clock.now()
            await self.control.write_document(state.name, state.to_dict())
            self.stats.backfill_scanned = state.scanned
            self.stats.backfill_copied = state.copied
            self.stats.backfill_rate = state.rate
            if progress is not None:
                progress(state)
            wait = throttle.delay(
                state.scanned - scanned_before, _consumed_units(self.new) - units_before
            )
            if wait and not state.done:
                await async_sleep(wait)

        await async_in_order(
            self._page_batches(state.cursor, page_size, batch_size, worker, workers),
            self._copy_batch,
            commit,
            concurrency,
        )
        return state

    def _tally(
        self,
        state: BackfillProgress,
        record: SessionRecord | CorruptRecord,
        outcome: str,
        quarantined: Callable[[dict[str, str]], None] | None,
    ) -> None:
        state.scanned += 1
        if outcome == "written":
            state.copied += 1
            if isinstance(record, SessionRecord) and record.tombstone:
                state.tombstones += 1
        elif outcome in ("newer_kept", "tombstone_kept"):
            state.newer_kept += 1
        elif outcome == "expired":
            state.expired += 1
        else:
            hint = record.key_hint if isinstance(record, CorruptRecord) else key_hint(record.key)
            entry = state.quarantine.add(hint, outcome, "backfill")
            logger.warning("backfill quarantined record %s: %s", hint, outcome)
            if quarantined is not None:
                quarantined(entry)

    async def _backfill_start(
        self, worker: int, workers: int, *, restart: bool
    ) -> BackfillProgress:
        """Return this worker's checkpoint, or a fresh start (a new split, or `restart`)."""
        meta = await self.control.read_document(BACKFILL_META)
        if restart or meta is None or int(meta["workers"]) != workers:
            if meta is not None and not restart and int(meta["workers"]) != workers:
                raise MigrationRefused(
                    f"a backfill split over {meta['workers']} worker(s) exists; use the same "
                    f"split or --restart"
                )
            await self.control.delete_documents("backfill/")
            await self.control.write_document(
                BACKFILL_META, {"workers": workers, "started_at": self.clock.now()}
            )
        saved = await self.control.read_document(checkpoint_name(worker, workers))
        if saved:
            return BackfillProgress.from_dict(saved)
        return BackfillProgress(worker=worker, workers=workers, started_at=self.clock.now())

    async def _page_batches(
        self, cursor: str | None, page_size: int, batch_size: int, worker: int, workers: int
    ) -> AsyncIterator[_PageBatch]:
        """Scan the old store from `cursor`; yield each page's copies in batches.

        A page with nothing to copy still yields one empty batch, so it is checkpointed.
        """
        while True:
            page = await self.old.scan(cursor, count=page_size, worker=worker, workers=workers)
            outcomes = [self._screen(record) for record in page.records]
            chosen = [
                (index, record)
                for index, record in enumerate(page.records)
                if isinstance(record, SessionRecord) and not outcomes[index]
            ]
            batches = [chosen[at : at + batch_size] for at in range(0, len(chosen), batch_size)]
            for number, batch in enumerate(batches or [[]]):
                yield _PageBatch(page, outcomes, batch, last=number == max(len(batches) - 1, 0))
            if page.cursor is None:
                return
            cursor = page.cursor

    async def _copy_batch(self, unit: _PageBatch) -> None:
        """Copy one batch; set each record's outcome ("written", "newer_kept" or a reason)."""
        if not unit.batch:
            return
        copies = [record for _, record in unit.batch]
        results = await self._with_retries(lambda: copy_records(self.new, copies))
        for (index, record), result in zip(unit.batch, results, strict=True):
            if isinstance(result, BackendError):  # the store refused this record alone
                unit.outcomes[index] = await self._copy_alone(record)
            else:
                unit.outcomes[index] = _copy_outcome(result)

    def _screen(self, record: SessionRecord | CorruptRecord) -> str:
        """Return why a scanned record is not copied ("expired" or a quarantine reason), or ""."""
        if isinstance(record, CorruptRecord):
            return f"unreadable: {record.reason}"
        if not record.tombstone and record.expires_at <= self.clock.now():
            return "expired"
        size = encoded_size(record.attributes)
        if size > self.max_record_bytes:
            return f"oversized: {size} bytes, over the {self.max_record_bytes}-byte limit"
        return ""

    async def _copy_alone(self, record: SessionRecord) -> str:
        try:
            verdict = await self._with_retries(lambda: copy_record(self.new, record))
        except (*REFUSED_BY_STORE, CorruptRecord) as exc:
            return _copy_outcome(exc)
        return _copy_outcome(verdict)

    @staticmethod
    async def _with_retries(write: Callable[[], Awaitable[_T]]) -> _T:
        for attempt in range(_COPY_ATTEMPTS):
            try:
                return await write()
            except BackendError:
                if attempt == _COPY_ATTEMPTS - 1:
                    raise
                await async_sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- verify -------------------------------------------------------------------------

    async def verify(
        self,
        *,
        mode: str = "full",
        sample: float = 0.01,
        repair: bool = False,
        source: str | None = None,
        page_size: int = 500,
        recheck_delay: float = 0.2,
        progress: Callable[[VerifyReport], None] | None = None,
    ) -> VerifyReport:
        """Compare the two stores in both directions; with `repair`, reconcile what differs.

        ``mode="full"`` checks every session; ``"sample"`` checks the share `sample` of
        sessions, chosen by key hash (on DynamoDB only that share of the table is read).
        The authoritative store of the current stage is the truth, unless `source` names
        ``"old"`` or ``"new"``. Differences are re-checked after `recheck_delay` seconds,
        so copies in flight are not counted. The report is stored as the last verification.
        """
        if mode not in ("full", "sample"):
            raise ConfigError("mode must be 'full' or 'sample'")
        check_count("page_size", page_size, most=MAX_PAGE)
        if not SMALLEST_SAMPLE <= sample <= 1:
            raise ConfigError(f"sample must be {SAMPLE_RANGE}, not {sample!r}")
        stage = (await self.control.read_stage()).stage
        side = source or stage.authority
        if side not in ("old", "new"):
            raise ConfigError("source must be 'old' or 'new'")
        truth, copy = (self.old, self.new) if side == "old" else (self.new, self.old)
        report = VerifyReport(mode=mode, stage=stage.value, threshold=self.verify_threshold)
        share = 1 if mode == "full" else max(1, round(1 / sample))
        began = time.monotonic()
        for direction in ("forward", "backward"):
            run = _VerifyRun(report, direction, repair, recheck_delay, truth_is_old=side == "old")
            scanned = truth if direction == "forward" else copy
            cursor: str | None = None
            while True:
                await async_stop_if_cancelled()
                page = await scanned.scan(cursor, count=page_size, worker=0, workers=share)
                await self._verify_page(page.records, run)
                cursor = page.cursor
                if progress is not None:
                    progress(report)
                if cursor is None:
                    break
        report.seconds = time.monotonic() - began
        report.at = self.clock.now()
        self.stats.verify_checked = report.checked
        self.stats.verify_inconsistent = report.remaining
        self.stats.verify_rate = report.rate
        await self.control.write_document(LAST_VERIFICATION, report.to_dict())
        return report

    async def _verify_page(
        self, records: Sequence[SessionRecord | CorruptRecord], run: _VerifyRun
    ) -> None:
        now = self.clock.now()
        readable = _readable(records, run.report)
        if not readable:
            return
        truth_first = run.truth_is_old == (run.direction == "forward")
        other = self.new if truth_first else self.old
        counterparts = await other.get_many([r.key for r in readable])
        suspects = []
        for record, counterpart in zip(readable, counterparts, strict=True):
            if isinstance(counterpart, CorruptRecord):
                run.report.quarantine.add(counterpart.key_hint, counterpart.reason, "verify")
            elif run.direction == "forward":
                run.report.checked += int(record.tombstone or record.is_live(now))
                run.report.expired += int(not record.tombstone and not record.is_live(now))
                if difference(record, counterpart, now) is not None:
                    suspects.append(record.key)
            elif run.counts(difference(counterpart, record, now)):
                suspects.append(record.key)
        if suspects and run.recheck_delay:
            await async_sleep(run.recheck_delay)  # copies in flight land before the re-check
        for key in suspects:
            await self._recheck(key, run)

    async def _recheck(self, key: str, run: _VerifyRun) -> None:
        report = run.report
        try:
            old, new = await self.old.get(key), await self.new.get(key)
        except CorruptRecord as exc:
            report.quarantine.add(exc.key_hint, exc.reason, "verify")
            return
        now = self.clock.now()
        found = difference(*run.ordered(old, new), now)
        if not run.counts(found):
            report.in_flight += 1
            return
        assert found is not None  # noqa: S101 - counts() is False for None
        kind, fields = found
        report.count(kind, key_hint(key), fields)
        if run.repair:
            try:
                await reconcile_records(self.old, self.new, old, new, now=now)
            except REFUSED_BY_STORE as exc:
                report.quarantine.add(key_hint(key), refusal_reason(exc), "verify")
                report.remaining += 1
                return
            old, new = await self.old.get(key), await self.new.get(key)
            if difference(*run.ordered(old, new), self.clock.now()) is None:
                report.repaired += 1
                return
        report.remaining += 1

    # -- repair -------------------------------------------------------------------------

    async def repair(self, *, batch: int = 200, concurrency: int = 16) -> RepairReport:
        """Drain the repair queue: reconcile every queued key, oldest first, until empty.

        A key that cannot be reconciled now (a store down) stays queued for the next run.
        """
        check_count("batch", batch, most=MAX_PAGE)
        check_count("concurrency", concurrency, most=MAX_IN_FLIGHT)
        report = RepairReport()
        began = time.monotonic()
        seen_failed: set[str] = set()
        while True:
            await async_stop_if_cancelled()
            items = [
                item
                for item in await self.control.repair_batch(batch + len(seen_failed))
                if item.key not in seen_failed
            ][:batch]
            if not items:
                break
            results = await async_map_limited(
                lambda item: self._repair_one(item.key), items, concurrency
            )
            done = []
            for item, result in zip(items, results, strict=True):
                if result is None:
                    report.failed += 1
                    seen_failed.add(item.key)
                    continue
                if isinstance(result, _Refused):
                    report.quarantine.add(key_hint(item.key), result.reason, "repair")
                    outcome = QUARANTINED
                else:
                    outcome = result
                report.outcomes[outcome] += 1
                self.stats.repaired[outcome] += 1
                done.append(item)
            await self.control.finish_repairs(done)
        depth = await self.control.repair_depth()
        report.remaining = depth.count
        self.stats.repair_depth = depth.count
        self.stats.repair_oldest_age = depth.oldest_age(self.clock.now())
        report.seconds = time.monotonic() - began
        return report

    async def _repair_one(self, key: str) -> str | _Refused | None:
        """Reconcile one queued key: its outcome; a refusal no retry can change; None: retry."""
        try:
            return str(await reconcile_key(self.old, self.new, key, now=self.clock.now()))
        except REFUSED_BY_STORE as exc:
            logger.warning("repair of %s refused by the store, quarantined: %s", key_hint(key), exc)
            return _Refused(refusal_reason(exc))
        except SessionflowError as exc:
            logger.warning("repair of %s failed, kept queued: %r", key_hint(key), exc)
            return None

    # -- validation ---------------------------------------------------------------------

    async def validate(self) -> list[ValidationStep]:
        """Create, read, update and delete an item through the current stage; check both.

        What the playbook's validation script does by hand after a rollback. The item (a
        session, or a conversation entry of a throwaway owner) is deleted at the end.
        """
        steps: list[ValidationStep] = []
        backend = AsyncMigratingBackend(
            self.old, self.new, self.control, stage_ttl=0, compare_sample=0, heartbeat=False
        )
        probe = probe_for(backend, self.clock)
        stage = await backend.stage()
        try:
            key = await probe.create()
            await backend.drain()
            steps.append(await self._check_both("create", key, stage, 1))
            ok = await probe.read()
            steps.append(ValidationStep("read", ok, "" if ok else "read back differs"))
            await probe.update()
            await backend.drain()
            steps.append(await self._check_both("update", key, stage, 2))
            await probe.delete()
            await backend.drain()
            steps.append(await self._check_deleted(key, stage))
        except SessionflowError as exc:
            steps.append(ValidationStep("error", ok=False, detail=f"{type(exc).__name__}: {exc}"))
        finally:
            await backend.aclose()
        return steps

    def _stores_for(self, stage: Stage) -> list[tuple[str, AsyncBackend]]:
        if stage is Stage.OFF:
            return [("old", self.old)]
        if stage is Stage.COMPLETE:
            return [("new", self.new)]
        return [("old", self.old), ("new", self.new)]

    async def _check_both(self, name: str, key: str, stage: Stage, version: int) -> ValidationStep:
        problems = []
        for side, backend in self._stores_for(stage):
            record = await backend.get(key)
            if record is None or record.tombstone or record.version != version:
                found = "nothing" if record is None else f"version {record.version}"
                problems.append(f"{side} store holds {found}, expected version {version}")
        return ValidationStep(name, not problems, "; ".join(problems))

    async def _check_deleted(self, key: str, stage: Stage) -> ValidationStep:
        problems = []
        for side, backend in self._stores_for(stage):
            record = await backend.get(key)
            if record is not None and not record.tombstone:
                problems.append(f"{side} store still holds a live copy")
        return ValidationStep("delete", not problems, "; ".join(problems))


@dataclass(frozen=True, slots=True)
class _VerifyRun:
    """One direction of a verification: the report it adds to and how it treats differences."""

    report: VerifyReport
    direction: str
    """"forward" scans the authority; "backward" scans the copy for sessions it lacks."""
    repair: bool
    recheck_delay: float
    truth_is_old: bool

    def ordered(
        self, old: SessionRecord | None, new: SessionRecord | None
    ) -> tuple[SessionRecord | None, SessionRecord | None]:
        """Return (truth, copy) from a key's old and new records."""
        return (old, new) if self.truth_is_old else (new, old)

    def counts(self, found: tuple[str, list[str]] | None) -> bool:
        """Return True if a difference belongs here (backward counts only extras)."""
        return found is not None and (self.direction == "forward" or found[0] == "extra")


def _readable(
    records: Sequence[SessionRecord | CorruptRecord], report: VerifyReport
) -> list[SessionRecord]:
    """Return the readable records; quarantine the rest in the report."""
    readable = []
    for record in records:
        if isinstance(record, CorruptRecord):
            report.quarantine.add(record.key_hint, f"unreadable: {record.reason}", "verify")
        else:
            readable.append(record)
    return readable


def _consumed_units(backend: AsyncBackend) -> float:
    """Capacity units a DynamoDB backend consumed so far (0 for other stores)."""
    meter = getattr(backend, "capacity", None)
    return float(meter.total) if meter is not None else 0.0


QUARANTINED = "quarantined"
"""The repair outcome of a key whose copy the store refuses (too large, or invalid there)."""


@dataclass(frozen=True)
class _Refused:
    """A queued key whose copy the store refused; `reason` goes to the quarantine."""

    reason: str


def _copy_outcome(result: GuardedResult) -> str:
    """Name a guarded copy's result as the backfill tallies it."""
    if isinstance(result, GuardedWrite):
        return result.value
    return refusal_reason(result)
