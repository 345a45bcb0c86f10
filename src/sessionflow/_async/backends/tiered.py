"""The hybrid tier (ADR-0010): Redis hot, DynamoDB cold, promotion on use, demotion by age.

The cold tier holds every session that left the hot tier; the hot tier holds the sessions in
use, and while a session is hot its hot copy is the one that decides (version checks run
there). Every copy between the tiers is guarded (never over a newer version, never over a
tombstone), so promotion, demotion and flushing can race with requests and with each other
without losing an update or bringing a deleted session back:

- promotion copies the cold record into the hot tier with a guarded write, then reads the
  cold tier again and copies anything newer that landed meanwhile;
- demotion copies the hot record into the cold tier, then evicts the hot copy only if it
  still has the version and last access it read (a session used meanwhile stays hot);
- deletes always reach the cold tier before they are acknowledged, whatever the policy.

When the hot tier fails, requests are served by the cold tier alone (degraded, not failed)
until it answers again; then the hot copies of what changed meanwhile are repaired. With
regions, each region has its own hot tier and they share the cold one: a session promoted
here is first taken over from the other regions' hot tiers (their newest copy reaches the
cold tier, then their copies are evicted), so one region holds it hot at a time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from sessionflow._async.backends.base import (
    AsyncBackend,
    AsyncEvictable,
    check_storable,
    put_guarded_each,
)
from sessionflow._async.reconcile import copy_each, copy_record
from sessionflow._async.tier_index import AsyncTierIndex
from sessionflow._clock import Clock, SystemClock
from sessionflow._concurrency import AsyncBackgroundWork, async_stop_if_cancelled, async_together
from sessionflow._errors import (
    BackendError,
    ConfigError,
    CorruptRecord,
    SessionflowError,
    SessionNotFound,
    VersionConflict,
)
from sessionflow._ids import key_hint
from sessionflow._policy import check_count, check_seconds
from sessionflow._quarantine import REFUSED_BY_STORE, refusal_reason
from sessionflow._record import SessionRecord
from sessionflow._scan import MAX_IN_FLIGHT, MAX_PAGE, GuardedResult, GuardedWrite, ScanPage
from sessionflow._tier import (
    Durability,
    HotTierHealth,
    Lifecycle,
    SweepReport,
    TierStats,
    cold_lifecycle,
    hot_lifecycle,
)

logger = logging.getLogger("sessionflow.tier")

DEFAULT_DEMOTE_AFTER = 1800.0
DEFAULT_ACTIVE_WINDOW = 300.0
JOB_CONCURRENCY = 16  # cold-tier writes in flight in a sweep or a flush

_T = TypeVar("_T")


class _HotDown:
    """What `_in_hot` returns when the hot tier is down: the caller serves from the cold."""


HOT_DOWN = _HotDown()


class AsyncTieredBackend:
    """A hot backend in front of a cold one, with promotion, demotion and a durability policy.

    Args:
        hot: the hot tier (Redis, or memory): it must support `evict`.
        cold: the cold tier (DynamoDB, or any backend).
        index: the last-access and dirty indexes (`AsyncRedisTierIndex` beside a Redis hot
            tier; `AsyncMemoryTierIndex` for one process).
        durability: `Durability.WRITE_THROUGH` (default) or `WRITE_BACK`.
        demote_after: seconds without use after which the sweeper demotes a session (the
            ADR's promotion threshold, 1800).
        active_window: seconds after a use during which a hot session counts as active.
        clock: decides expiry and the age of sessions.
        stats: counters shared with metrics.
        peers: the hot tiers of the other regions (same cold tier): a session promoted here
            is taken over from them.
        health: the hot tier's circuit breaker (defaults: retry after 1 s, doubt its copies
            for 60 s after an outage).
        recheck_promotions: read the cold tier again after a promotion (the default), so a
            cold write that landed meanwhile (another region, a backfill into the tier) is
            carried over. Turning it off saves one cold read per promotion and is safe only
            when nothing but this tier writes the cold tier (docs/tiering.md).
        background_promotions: answer a read served by the cold tier as soon as the cold
            copy is read, and promote it (copy, re-read, index) after the answer. A read
            then costs what the cold read costs; the next request of the session finds it
            hot, or promotes it itself if it comes first (promotions are guarded, so two
            are harmless). `settle` waits for promotions in flight. Sync backends promote
            before answering whatever this says.
    """

    def __init__(
        self,
        hot: AsyncEvictable,
        cold: AsyncBackend,
        index: AsyncTierIndex,
        *,
        durability: Durability = Durability.WRITE_THROUGH,
        demote_after: float = DEFAULT_DEMOTE_AFTER,
        active_window: float = DEFAULT_ACTIVE_WINDOW,
        clock: Clock | None = None,
        stats: TierStats | None = None,
        peers: Sequence[AsyncEvictable] = (),
        health: HotTierHealth | None = None,
        recheck_promotions: bool = True,
        background_promotions: bool = False,
    ) -> None:
        if not isinstance(hot, AsyncEvictable):
            raise ConfigError("the hot tier must support evict (Redis or memory backends do)")
        check_seconds("demote_after", demote_after)
        check_seconds("active_window", active_window)
        self.hot = hot
        self.cold = cold
        self.index = index
        self.durability = Durability(durability)
        self.demote_after = demote_after
        self.active_window = active_window
        self.clock = clock or SystemClock()
        self.stats = stats or TierStats()
        self.peers = tuple(peers)
        self.health = health or HotTierHealth()
        self.recheck_promotions = recheck_promotions
        self.background_promotions = background_promotions
        self._background = AsyncBackgroundWork()
        # Keys changed in the cold tier alone while the hot tier was down (insertion order).
        self._changed_while_down: dict[str, None] = {}

    @property
    def write_through(self) -> bool:
        """True if every change reaches the cold tier before it is acknowledged."""
        return self.durability is Durability.WRITE_THROUGH

    # -- reads ----------------------------------------------------------------------------

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`: the hot copy, else the cold one, promoted."""
        record = await self._in_hot(lambda: self.hot.get(key))
        if not isinstance(record, _HotDown):
            if record is not None:
                self.stats.hot_hits += 1
                return await self._doubt(record)
            return await self._read_cold(key)
        self.stats.degraded_reads += 1
        return await self.cold.get(key)

    async def _read_cold(self, key: str) -> SessionRecord | None:
        cold = await self._fetch_cold(key)
        if cold is None:
            self.stats.misses += 1
            return None
        self.stats.cold_hits += 1
        if cold.tombstone or cold.expires_at <= self.clock.now():
            return cold
        if self.background_promotions:
            self._background.start(lambda: self._promote_quietly(cold))
            return cold
        try:
            return await self._promote(cold)
        except BackendError as exc:  # the hot tier failed between the read and the copy
            self._hot_failed(exc)
            return cold

    async def _promote_quietly(self, record: SessionRecord) -> None:
        """Promote after the read was answered: failures are counted, never raised."""
        try:
            await self._promote(record)
        except BackendError as exc:
            self._hot_failed(exc)
        except Exception as exc:  # noqa: BLE001 - no caller is left to raise to
            logger.warning("promotion of %s left undone: %s", key_hint(record.key), exc)

    async def settle(self) -> None:
        """Wait for promotions started in the background (see `background_promotions`)."""
        await self._background.settle()

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`."""
        found: list[SessionRecord | CorruptRecord | None] = []
        for key in keys:
            try:
                found.append(await self.get(key))
            except CorruptRecord as exc:
                found.append(exc)
        return found

    async def _promote(self, record: SessionRecord) -> SessionRecord:
        """Copy a cold record into the hot tier; return what the hot tier holds after."""
        if not self.recheck_promotions:
            verdict, _ = await async_together(self.hot.put_guarded(record), self._indexed(record))
        else:
            verdict = await self.hot.put_guarded(record)
            # A write to the cold tier that landed after our read did not see a hot copy
            # yet: read again and carry it over, so the hot copy is never older than the
            # cold one.
            latest, _ = await async_together(self.cold.get(record.key), self._indexed(record))
            if latest is not None and latest.version > record.version:
                await self.hot.put_guarded(latest)
                verdict = GuardedWrite.NEWER_KEPT
        if verdict is GuardedWrite.WRITTEN:
            self.stats.promotions += 1
            return record
        current = await self.hot.get(record.key)
        return current if current is not None else record

    async def _indexed(self, record: SessionRecord) -> bool:
        await self.index.accessed(record.key, record.last_access)
        return True

    async def _ensure_hot(self, key: str) -> SessionRecord | None:
        """Return the hot copy of `key`, promoting the cold one if there is no hot copy."""
        record = await self.hot.get(key)
        if record is not None:
            return await self._doubt(record)
        cold = await self._fetch_cold(key)
        if cold is None or cold.tombstone:
            return cold
        return await self._promote(cold)

    async def _fetch_cold(self, key: str) -> SessionRecord | None:
        """Read the cold tier, after taking the session over from other regions' hot tiers.

        A peer's copy newer than the cold one (unflushed under write-back) is copied into
        the cold tier first; then the peer's copy is evicted if it did not change meanwhile.
        An unreachable peer is counted and skipped: its region's unflushed changes are the
        loss a lost region may cause.
        """
        cold = await self.cold.get(key)
        taken = False
        for peer in self.peers:
            try:
                copy = await peer.get(key)
                if copy is None or copy.tombstone:
                    continue
                if cold is None or copy.version > cold.version:
                    await copy_record(self.cold, copy)
                    taken = True
                if await peer.evict(key, version=copy.version, last_access=copy.last_access):
                    self.stats.handoffs += 1
            except BackendError as exc:
                self.stats.peer_failures += 1
                logger.warning("another region's hot tier did not answer: %s", exc)
            except CorruptRecord:
                logger.warning("another region holds an unreadable copy of %s", key_hint(key))
        return await self.cold.get(key) if taken else cold

    async def _doubt(self, record: SessionRecord) -> SessionRecord:
        """After an outage, replace a hot copy older than the cold tier's (see HotTierHealth)."""
        if not self.health.doubted():
            return record
        return await self._newest(record)

    async def _newest(self, record: SessionRecord) -> SessionRecord:
        """Return the newer of a hot copy and the cold one, replacing the hot copy if older."""
        cold = await self.cold.get(record.key)
        if cold is None or cold.version <= record.version:
            return record
        await self.hot.put_guarded(cold)
        self.stats.outage_repairs += 1
        return cold

    # -- the hot tier's health -------------------------------------------------------------

    def _hot_failed(self, exc: BackendError) -> None:
        if self.health.failed():
            self.stats.hot_outages += 1
            at_risk = (
                ""
                if self.write_through
                else "; changes not flushed yet are at risk until it returns"
            )
            logger.warning("hot tier unreachable, serving from the cold tier%s: %s", at_risk, exc)

    async def _hot_answered(self) -> None:
        if self.health.answered():
            logger.warning("hot tier answers again; repairing what changed meanwhile")
        if self.health.instance_check_due():
            await self._check_instance()
        if self._changed_while_down:
            try:
                await self._repair_after_outage()
            except BackendError as exc:
                self._hot_failed(exc)

    async def _in_hot(self, step: Callable[[], Awaitable[_T]]) -> _T | _HotDown:
        """Run `step` against the hot tier; `HOT_DOWN` if it is down (the caller uses the cold)."""
        if not self.health.should_try():
            return HOT_DOWN
        try:
            result = await step()
        except BackendError as exc:
            self._hot_failed(exc)
            return HOT_DOWN
        await self._hot_answered()
        return result

    async def _check_instance(self) -> None:
        try:
            instance = await self.hot.instance()
        except BackendError as exc:
            self._hot_failed(exc)
            return
        if self.health.instance_seen(instance):
            self.stats.hot_outages += 1
            logger.warning(
                "hot tier restarted or failed over; checking its copies for %.0f s",
                self.health.verify_for,
            )

    def _changed_in_cold(self, key: str) -> None:
        self.stats.degraded_writes += 1
        self._changed_while_down[key] = None

    async def _repair_after_outage(self) -> None:
        """Drop hot copies older than what was written to the cold tier during the outage."""
        while self._changed_while_down:
            key = next(iter(self._changed_while_down))
            del self._changed_while_down[key]  # taken before awaiting: requests run this too
            try:
                hot = await self.hot.get(key)
                if hot is not None:
                    await self._newest(hot)
            except CorruptRecord:
                continue
            except BackendError:
                self._changed_while_down[key] = None
                raise

    # -- writes ---------------------------------------------------------------------------

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`: in the hot tier, then written through or marked dirty."""
        self._refuse_what_cold_refuses(record)

        async def in_hot() -> None:
            await self.hot.create(record)
            await self.index.accessed(record.key, record.last_access)

        if not isinstance(await self._in_hot(in_hot), _HotDown):
            await self._after_change(record)
            return
        await self.cold.create(record)
        self._changed_in_cold(record.key)

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],
        removed: Collection[str],
    ) -> None:
        """See `AsyncBackend.save`: checked against the hot copy (promoted first if cold)."""
        self._refuse_what_cold_refuses(record)

        async def in_hot() -> None:
            current = await self._ensure_hot(record.key)
            if current is None or current.tombstone:
                raise SessionNotFound("session not found or deleted")
            await self.hot.save(
                record, expected_version=expected_version, changed=changed, removed=removed
            )
            await self.index.accessed(record.key, record.last_access)

        if not isinstance(await self._in_hot(in_hot), _HotDown):
            await self._after_change(record)
            return
        await self.cold.save(
            record, expected_version=expected_version, changed=changed, removed=removed
        )
        self._changed_in_cold(record.key)

    def _refuse_what_cold_refuses(self, record: SessionRecord) -> None:
        """Under write-through, refuse what the cold tier would refuse before the hot tier has it.

        The caller's error then means that nothing changed anywhere. Under write-back the
        change is accepted; the flusher quarantines it and the session stays hot (`flush`).
        """
        if not self.write_through:
            return
        try:
            check_storable(self.cold, record)
        except REFUSED_BY_STORE:
            self.stats.cold_refusals += 1
            raise

    async def _after_change(self, record: SessionRecord) -> None:
        """Write a hot change through to the cold tier, or mark it for the flusher.

        Under write-through, a cold tier already holding this version or a newer one means
        the hot copy the change was checked against was stale (another region changed the
        session, or a hot tier came back with old copies): the change is taken back out of
        the hot tier and refused, so the caller reloads instead of losing either update.
        """
        if not self.write_through:
            await self.index.changed(record.key, record.version)
            return
        try:
            verdict = await copy_record(self.cold, record)
        except BackendError:
            self.stats.cold_write_failures += 1
            await self.index.changed(record.key, record.version)  # the flusher retries it
            raise
        except REFUSED_BY_STORE:
            self.stats.cold_refusals += 1
            raise
        if verdict is not GuardedWrite.WRITTEN and await self._written_elsewhere(record):
            self.stats.stale_writes += 1
            await self.hot.evict(record.key, version=record.version, last_access=record.last_access)
            if verdict is GuardedWrite.TOMBSTONE_KEPT:
                raise SessionNotFound("session was deleted")
            raise VersionConflict("the session changed elsewhere; reload it")

    async def _written_elsewhere(self, record: SessionRecord) -> bool:
        """Tell a cold version that never went through this hot tier from a later local one.

        A concurrent save here can reach the cold tier first with a higher version: then the
        hot tier holds that version too, and nothing was lost.
        """
        cold = await self.cold.get(record.key)
        if cold is None:
            return False
        if cold.tombstone:
            return True
        if cold.version == record.version:
            return dict(cold.attributes) != dict(record.attributes)
        hot = await self.hot.get(record.key)
        return hot is None or hot.version < cold.version

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """See `AsyncBackend.touch`: in the hot tier; also the cold one under write-through."""
        in_hot = await self._in_hot(lambda: self._touch_hot(key, last_access, idle_expires_at))
        if not isinstance(in_hot, _HotDown):
            if in_hot and self.write_through:
                await self.cold.touch(key, last_access=last_access, idle_expires_at=idle_expires_at)
            return in_hot
        touched = await self.cold.touch(
            key, last_access=last_access, idle_expires_at=idle_expires_at
        )
        if touched:
            self._changed_in_cold(key)
        return touched

    async def _touch_hot(self, key: str, last_access: float, idle_expires_at: float) -> bool:
        touched = await self.hot.touch(
            key, last_access=last_access, idle_expires_at=idle_expires_at
        )
        if not touched:
            current = await self._ensure_hot(key)
            if current is None or current.tombstone:
                return False
            touched = await self.hot.touch(
                key, last_access=last_access, idle_expires_at=idle_expires_at
            )
        if touched:
            await self.index.accessed(key, last_access)
        return touched

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`: a tombstone in the hot tier, then in the cold tier.

        The cold tombstone is written before the delete is acknowledged, under either
        policy: a hot tier lost later must not bring the session back from the cold one.
        """

        async def in_hot() -> tuple[SessionRecord | None, SessionRecord | None]:
            current = await self._ensure_hot(key)
            if current is not None and not current.tombstone:
                await self._newest(current)  # a stale hot copy must not decide a delete
            deleted = await self.hot.delete(
                key, tombstone_expires_at=tombstone_expires_at, expected_version=expected_version
            )
            return deleted, await self.hot.get(key)

        done = await self._in_hot(in_hot)
        if not isinstance(done, _HotDown):
            deleted, tombstone = done
            if tombstone is not None and tombstone.tombstone:
                await self._delete_cold(tombstone, tombstone_expires_at)
            return deleted
        deleted = await self.cold.delete(
            key, tombstone_expires_at=tombstone_expires_at, expected_version=expected_version
        )
        self._changed_in_cold(key)
        return deleted

    async def _delete_cold(self, tombstone: SessionRecord, tombstone_expires_at: float) -> None:
        """Put the hot tier's tombstone into the cold tier (a newer cold copy is deleted too)."""
        try:
            verdict = await self.cold.put_guarded(tombstone)
            if verdict is GuardedWrite.NEWER_KEPT:
                # A version written elsewhere between our check and our delete: a logout
                # must stay a logout, so that version is deleted as well.
                self.stats.stale_writes += 1
                await self.cold.delete(tombstone.key, tombstone_expires_at=tombstone_expires_at)
                latest = await self.cold.get(tombstone.key)
                if latest is not None:
                    await self.hot.put_guarded(latest)
        except BackendError:
            self.stats.cold_write_failures += 1
            await self.index.changed(tombstone.key, tombstone.version)
            raise

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`: into the cold tier, and the hot copy if there is one."""
        verdict = await self.cold.put_guarded(record)
        if await self.hot.get(record.key) is not None:
            verdict = await self.hot.put_guarded(record)
        return verdict

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`."""
        return await put_guarded_each(self, records)

    # -- users and scans ------------------------------------------------------------------

    async def user_keys(self, user_id: str) -> list[str]:
        """See `AsyncBackend.user_keys`: the hot tier's keys, then the cold tier's others."""
        hot: list[str] = []
        if self.health.should_try():
            try:
                hot = await self.hot.user_keys(user_id)
            except BackendError as exc:
                self._hot_failed(exc)
        seen = set(hot)
        return hot + [key for key in await self.cold.user_keys(user_id) if key not in seen]

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """See `AsyncBackend.forget_user_keys`: in both tiers."""
        if self.health.should_try():
            try:
                await self.hot.forget_user_keys(user_id, keys)
            except BackendError as exc:
                self._hot_failed(exc)
        await self.cold.forget_user_keys(user_id, keys)

    async def scan(
        self,
        cursor: str | None = None,
        *,
        count: int = 500,
        worker: int = 0,
        workers: int = 1,
    ) -> ScanPage:
        """See `AsyncBackend.scan`: the cold tier, then what the hot tier holds beyond it.

        A hot record whose cold copy has the same version was returned with the cold
        tier and is skipped; a newer hot copy (a write-back change) comes as well.
        """
        position = {"tier": "cold", "cursor": None} if cursor is None else json.loads(cursor)
        tier = self.cold if position["tier"] == "cold" else self.hot
        page = await tier.scan(position["cursor"], count=count, worker=worker, workers=workers)
        records = page.records
        if tier is self.hot:
            records = await self._beyond_cold(records)
        if page.cursor is not None:
            following = json.dumps({"tier": position["tier"], "cursor": page.cursor})
        elif position["tier"] == "cold":
            following = json.dumps({"tier": "hot", "cursor": None})
        else:
            following = None
        return ScanPage(records, following)

    async def _beyond_cold(
        self, records: list[SessionRecord | CorruptRecord]
    ) -> list[SessionRecord | CorruptRecord]:
        live = [r for r in records if isinstance(r, SessionRecord)]
        cold = await self.cold.get_many([r.key for r in live])
        same = {
            hot.key
            for hot, copy in zip(live, cold, strict=True)
            if isinstance(copy, SessionRecord)
            and (copy.version, copy.tombstone) == (hot.version, hot.tombstone)
        }
        return [r for r in records if isinstance(r, CorruptRecord) or r.key not in same]

    # -- lifecycle ------------------------------------------------------------------------

    async def lifecycle(self, key: str) -> Lifecycle | None:
        """Return the lifecycle state of the session stored under `key` (None if unknown)."""
        now = self.clock.now()
        hot = await self.hot.get(key)
        cold = await self.cold.get(key)
        if hot is not None:
            return hot_lifecycle(
                hot, now=now, active_window=self.active_window, in_cold=cold is not None
            )
        return None if cold is None else cold_lifecycle(cold, now=now)

    async def count_lifecycle(
        self, page_size: int = 500, *, progress: Callable[[int], None] | None = None
    ) -> dict[Lifecycle, int]:
        """Count the sessions of both tiers by lifecycle state (walks both tiers once).

        `progress` is called after every page with the records read so far, both tiers
        together (a cold session is read in each tier it is in).
        """
        check_count("page_size", page_size, most=MAX_PAGE)
        report = progress or _ignore
        now = self.clock.now()
        read = 0
        counts = dict.fromkeys(Lifecycle, 0)
        cursor: str | None = None
        while True:
            await async_stop_if_cancelled()
            page = await self.hot.scan(cursor, count=page_size)
            records = [r for r in page.records if isinstance(r, SessionRecord)]
            marks = await self.index.dirty_versions([r.key for r in records])
            unflushed = [r.key for r, mark in zip(records, marks, strict=True) if mark is not None]
            dirty = set(unflushed)
            in_cold = {
                key
                for key, found in zip(unflushed, await self.cold.get_many(unflushed), strict=True)
                if found is not None
            }
            for record in records:
                known = record.key not in dirty or record.key in in_cold
                state = hot_lifecycle(
                    record, now=now, active_window=self.active_window, in_cold=known
                )
                counts[state] += 1
            read += len(page.records)
            report(read)
            if page.cursor is None:
                break
            cursor = page.cursor
        in_hot = read
        counts.update(
            await self._count_cold(now, page_size, lambda in_cold: report(in_hot + in_cold))
        )
        self.stats.lifecycle = {str(state): number for state, number in counts.items()}
        return counts

    async def _count_cold(
        self, now: float, page_size: int, progress: Callable[[int], None]
    ) -> dict[Lifecycle, int]:
        counts = {Lifecycle.COLD: 0}
        read = 0
        cursor: str | None = None
        while True:
            await async_stop_if_cancelled()
            page = await self.cold.scan(cursor, count=page_size)
            records = [r for r in page.records if isinstance(r, SessionRecord)]
            hot = await self.hot.get_many([r.key for r in records])
            for record, hot_copy in zip(records, hot, strict=True):
                if hot_copy is None and cold_lifecycle(record, now=now) is Lifecycle.COLD:
                    counts[Lifecycle.COLD] += 1
            read += len(page.records)
            progress(read)
            if page.cursor is None:
                return counts
            cursor = page.cursor

    # -- jobs -----------------------------------------------------------------------------

    async def sweep(
        self,
        *,
        batch_size: int = 100,
        max_batches: int | None = None,
        concurrency: int = JOB_CONCURRENCY,
    ) -> SweepReport:
        """Demote sessions unused for `demote_after` seconds, oldest first, a batch at a time.

        Resumable by construction: the access index is the work list, and every step is
        guarded, so a sweep killed halfway leaves nothing to undo. A session whose cold copy
        fails for now stays hot and is counted in `failed`; the next sweep tries it again.
        One the cold tier refuses for good (too large, or invalid there: a record written
        before a limit existed) stays hot and is quarantined: reported with the reason and
        left out of later sweeps until it is used again.
        """
        _check_job(batch_size, max_batches, concurrency)
        report = SweepReport()
        began = time.monotonic()
        batches = 0
        held: set[str] = set()
        while max_batches is None or batches < max_batches:
            cutoff = self.clock.now() - self.demote_after
            due = await self.index.inactive(cutoff, batch_size + len(held))
            candidates = [(key, at) for key, at in due if key not in held][:batch_size]
            if not candidates:
                break
            await self._demote_batch(candidates, cutoff, report, held, concurrency)
            batches += 1
        report.seconds = time.monotonic() - began
        self.stats.hot_sessions, self.stats.dirty_sessions = await self.index.sizes()
        return report

    async def _demote_batch(
        self,
        candidates: list[tuple[str, float]],
        cutoff: float,
        report: SweepReport,
        held: set[str],
        concurrency: int,
    ) -> None:
        found = await self.hot.get_many([key for key, _ in candidates])
        now = self.clock.now()
        due: list[tuple[float, SessionRecord]] = []
        for (key, indexed), record in zip(candidates, found, strict=True):
            report.examined += 1
            if isinstance(record, CorruptRecord):
                report.unreadable += 1
                self.stats.unreadable += 1
                logger.warning("sweeper left unreadable hot record %s in place", key_hint(key))
                await self.index.forget(key, indexed)
            elif record is None:  # expired in Redis, or evicted by another sweeper
                await self.index.forget(key, indexed)
            elif not record.tombstone and record.last_access > cutoff:
                await self.index.accessed(key, record.last_access)  # used since: not due
            else:
                due.append((indexed, record))
        copies = [r for _, r in due if r.tombstone or r.expires_at > now]
        outcomes = dict(
            zip(
                [r.key for r in copies],
                await copy_each(self.cold, copies, limit=concurrency),
                strict=True,
            )
        )
        for indexed, record in due:
            outcome = outcomes.get(record.key)
            if isinstance(outcome, REFUSED_BY_STORE):
                self._quarantine(record, outcome, report, "sweep")
                await self.index.forget(record.key, indexed)
            elif isinstance(outcome, SessionflowError):
                report.failed += 1
                held.add(record.key)
                logger.warning(
                    "sweeper kept %s hot: the cold tier refused it: %s",
                    key_hint(record.key),
                    outcome,
                )
            elif record.tombstone:
                report.tombstones += 1
                await self.index.forget(record.key, indexed)
            else:
                await self._evict(record, indexed, expired=outcome is None, report=report)

    async def _evict(
        self, record: SessionRecord, indexed: float, *, expired: bool, report: SweepReport
    ) -> None:
        key = record.key
        if await self.hot.evict(key, version=record.version, last_access=record.last_access):
            await self.index.forget(key, indexed)
            await self.index.flushed(key, record.version)
            if expired:
                report.expired += 1
            else:
                report.demoted += 1
                self.stats.demotions += 1
        else:  # saved or touched while we copied it: it stays hot, the copy was harmless
            report.left_hot += 1
            self.stats.demotions_skipped += 1

    def _quarantine(
        self, record: SessionRecord, refusal: Exception, report: SweepReport, job: str
    ) -> None:
        """Set aside a session the cold tier refuses for good; its hot copy stays as it is."""
        self.stats.cold_refusals += 1
        report.quarantine.add(key_hint(record.key), refusal_reason(refusal), job)
        logger.warning(
            "%s quarantined %s: the cold tier refuses it for good, it stays hot only: %s",
            job,
            key_hint(record.key),
            refusal,
        )

    async def flush(
        self,
        *,
        batch_size: int = 100,
        max_batches: int | None = None,
        concurrency: int = JOB_CONCURRENCY,
    ) -> SweepReport:
        """Copy the hot changes the cold tier lacks (write-back), a batch at a time.

        A run takes batches until no change is left but those that failed in it, or for at
        most `max_batches` batches; by default as many as the changes waiting when it began
        fill, so a run under a steady stream of saves still ends. A cold tier that does not
        answer ends the run with `BackendError` at the first batch, every mark kept. A
        change whose copy fails for now stays dirty for the next run (counted in `failed`),
        and so does one the cold tier holds a corrupt item for. One the cold tier
        refuses for good (too large, or invalid there) is quarantined and its mark dropped,
        so it cannot hold up the changes behind it; the session stays hot, and its next
        change is tried again.
        """
        _check_job(batch_size, max_batches, concurrency)
        report = SweepReport()
        began = time.monotonic()
        now = self.clock.now()
        lag = 0.0
        if max_batches is None:
            _, waiting = await self.index.sizes()
            max_batches = max(1, -(-waiting // batch_size))
        held: set[str] = set()  # failed in this run: left for the next
        for _ in range(max_batches):
            await async_stop_if_cancelled()
            marks = [
                mark
                for mark in await self.index.dirty(batch_size + len(held))
                if mark[0] not in held
            ][:batch_size]
            if not marks:
                break
            lag = max(lag, await self._flush_batch(marks, now, report, held, concurrency))
        self.stats.flushed += report.flushed
        self.stats.flush_lag_max = lag
        report.seconds = time.monotonic() - began
        self.stats.hot_sessions, self.stats.dirty_sessions = await self.index.sizes()
        return report

    async def _flush_batch(
        self,
        marks: list[tuple[str, int]],
        now: float,
        report: SweepReport,
        held: set[str],
        concurrency: int,
    ) -> float:
        """Copy one batch of dirty sessions; return the longest wait of a change flushed."""
        lag = 0.0
        found = await self.hot.get_many([key for key, _ in marks])
        copies: list[SessionRecord] = []
        for (key, version), record in zip(marks, found, strict=True):
            report.examined += 1
            if isinstance(record, CorruptRecord):
                report.unreadable += 1
                await self.index.flushed(key, version)
            elif record is None:  # demoted (and so copied) or expired since
                await self.index.flushed(key, version)
            else:
                copies.append(record)
        outcomes = await copy_each(self.cold, copies, limit=concurrency)
        for record, outcome in zip(copies, outcomes, strict=True):
            if isinstance(outcome, REFUSED_BY_STORE):
                self._quarantine(record, outcome, report, "flush")
                await self.index.flushed(record.key, record.version)
                continue
            if isinstance(outcome, SessionflowError):  # stays dirty: the next run retries
                report.failed += 1
                held.add(record.key)
                logger.warning(
                    "flush left %s dirty: the cold tier refused it: %s",
                    key_hint(record.key),
                    outcome,
                )
                continue
            await self.index.flushed(record.key, record.version)
            report.flushed += 1
            if not record.tombstone:
                lag = max(lag, now - record.last_access)
        return lag


def _ignore(_: int) -> None:
    """Report nothing: the progress callback of callers that want none."""


def _check_job(batch_size: int, max_batches: int | None, concurrency: int) -> None:
    """Refuse a sweep's or a flush's sizes before it touches a tier (`ConfigError`)."""
    check_count("batch_size", batch_size, most=MAX_PAGE)
    check_count("concurrency", concurrency, most=MAX_IN_FLIGHT)
    if max_batches is not None:
        check_count("max_batches", max_batches)
