"""A backend over two backends that moves sessions from one to the other, stage by stage.

The stage comes from the control plane (cached for `stage_ttl` seconds, reported with a
heartbeat on every refresh). In the mirroring stages the authoritative store alone decides
success and the copy to the other store runs in the background (`AsyncMirror`); failed
copies go to the durable repair queue. In ``cutover`` every write passes both stores'
version checks synchronously. docs/migration.md walks through why each pair of adjacent
stages keeps every acknowledged write.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Self, TypeVar

from sessionflow._async.backends.base import AsyncBackend, deletes_are_final, put_guarded_each
from sessionflow._async.control import AsyncControlPlane
from sessionflow._async.reconcile import copy_record, reconcile_key, reconcile_records
from sessionflow._clock import Clock, SystemClock
from sessionflow._control import StageRecord
from sessionflow._errors import (
    ConfigError,
    CorruptRecord,
    SessionExists,
    SessionflowError,
    SessionNotFound,
    VersionConflict,
)
from sessionflow._ids import key_hint
from sessionflow._migration_reports import difference
from sessionflow._migration_stats import MigrationStats
from sessionflow._mirror import AsyncMirror
from sessionflow._policy import check_fraction, check_seconds
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedResult, GuardedWrite, ScanPage
from sessionflow._stages import Stage

logger = logging.getLogger("sessionflow.migration")
_T = TypeVar("_T")


def default_process_id() -> str:
    """Return a name for this process in heartbeats: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def winner(
    old: SessionRecord | None, new: SessionRecord | None, *, deletes_final: bool = True
) -> SessionRecord | None:
    """Return the record a read gives when both stores are consulted (the reconcile rule)."""
    if old is None or new is None:
        return old or new
    if not deletes_final:
        return old if old.version > new.version else new
    if old.tombstone or new.tombstone:
        tombs = [r for r in (old, new) if r.tombstone]
        return max(tombs, key=lambda r: r.version)
    return old if old.version > new.version else new


class AsyncMigratingBackend:
    """Reads and writes two backends according to the migration stage.

    Args:
        old: the store sessions move away from.
        new: the store sessions move to.
        control: the fleet's control plane (stage record, heartbeats, repair queue).
        stage_ttl: seconds a process keeps using the stage it read before reading again.
        compare_sample: the share of reads compared with the other store in ``shadow`` and
            ``live`` (0 to 1).
        mirror_timeout: seconds a background copy may take before its key goes to repair.
        process_id: this process's name in heartbeats (default: host, pid, random suffix).
        heartbeat: report the stage this process runs (off for short-lived tools, which
            would otherwise count as fleet members until their beat ages out).
        clock: the clock of stage caching and expiry checks.
        stats: counters to share with metrics (a new `MigrationStats` by default).
    """

    def __init__(
        self,
        old: AsyncBackend,
        new: AsyncBackend,
        control: AsyncControlPlane,
        *,
        stage_ttl: float = 5.0,
        compare_sample: float = 0.01,
        mirror_timeout: float = 2.0,
        process_id: str | None = None,
        heartbeat: bool = True,
        clock: Clock | None = None,
        stats: MigrationStats | None = None,
    ) -> None:
        check_seconds("stage_ttl", stage_ttl, zero_ok=True)
        check_seconds("mirror_timeout", mirror_timeout)
        check_fraction("compare_sample", compare_sample)
        if old is new:
            raise ConfigError("the old and new backends must be different stores")
        self.old = old
        self.new = new
        self.control = control
        self.stage_ttl = stage_ttl
        self.compare_sample = compare_sample
        self.process_id = process_id or default_process_id()
        self.heartbeat = heartbeat
        self.clock = clock or SystemClock()
        self.stats = stats or MigrationStats()
        self._deletes_final = deletes_are_final(old)
        self._stage: Stage | None = None
        self._record: StageRecord | None = None  # the record this process runs
        self._stage_read_at = float("-inf")
        self.mirror = AsyncMirror(
            reconcile=self._reconcile, enqueue=self._enqueue, timeout=mirror_timeout
        )

    # -- stage ------------------------------------------------------------------------

    async def stage(self) -> Stage:
        """Return the stage this process runs: the control record's, read every `stage_ttl`.

        If the control plane cannot be read, the last stage read stays in use (and the
        failure is counted); with no stage read yet, `BackendError` is raised. A record
        older than the one this process ran (lost in a restart of a control Redis without
        persistence, or deleted) is never followed back: the process keeps its stage and
        writes its record back (`AsyncControlPlane.restore_stage`).
        """
        now = self.clock.now()
        if self._stage is not None and now - self._stage_read_at < self.stage_ttl:
            return self._stage
        try:
            record = await self.control.read_stage()
            if self._record is not None and record.revision < self._record.revision:
                record = await self._restore(record, self._record)
            if self.heartbeat:
                await self.control.heartbeat(self.process_id, record.stage, now)
        except SessionflowError:
            self.stats.stage_read_errors += 1
            if self._stage is None:
                raise
            logger.warning("control plane unreachable; staying at stage %s", self._stage)
            self._stage_read_at = now
            return self._stage
        if record.stage is not self._stage:
            logger.info("migration stage %s -> %s", self._stage, record.stage)
        self._stage, self._record, self._stage_read_at = record.stage, record, now
        self.stats.stage = record.stage
        return record.stage

    async def _restore(self, found: StageRecord, ran: StageRecord) -> StageRecord:
        logger.error(
            "the control record went back to stage %s at revision %d; this process ran %s "
            "at revision %d and writes it back",
            found.stage,
            found.revision,
            ran.stage,
            ran.revision,
        )
        self.stats.stage_records_restored += 1
        return await self.control.restore_stage(ran)

    async def refresh_stage(self) -> Stage:
        """Read the stage now, ignoring the cache (jobs call this before they decide)."""
        self._stage_read_at = float("-inf")
        return await self.stage()

    def _sides(self, stage: Stage) -> tuple[AsyncBackend, AsyncBackend, str, str]:
        if stage.authority == "old":
            return self.old, self.new, "old", "new"
        return self.new, self.old, "new", "old"

    # -- reads ------------------------------------------------------------------------

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`: from the authority; both stores in ``cutover``."""
        stage = await self.stage()
        if stage is Stage.CUTOVER:
            return winner(
                await self._read(self.old, "old", key),
                await self._read(self.new, "new", key),
                deletes_final=self._deletes_final,
            )
        primary, secondary, name, other = self._sides(stage)
        record = await self._read(primary, name, key)
        if record is None and stage in (Stage.LIVE, Stage.RAMPDOWN):
            # Read through on a miss: a session the backfill has not reached yet.
            fallback = await self._read(secondary, other, key)
            if fallback is not None and not fallback.tombstone:
                await copy_record(primary, fallback)
                return await self._read(primary, name, key)
        if stage.compares and self.compare_sample and random.random() < self.compare_sample:
            self.mirror.run_later(lambda: self._compare(key, record, stage))
        return record

    async def _read(self, backend: AsyncBackend, name: str, key: str) -> SessionRecord | None:
        try:
            record = await backend.get(key)
        except SessionflowError:
            self.stats.count_read(name, "error")
            raise
        self.stats.count_read(name, "miss" if record is None else "hit")
        return record

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`."""
        stage = await self.stage()
        if stage is not Stage.CUTOVER:
            return await self._sides(stage)[0].get_many(keys)
        olds = await self.old.get_many(keys)
        news = await self.new.get_many(keys)
        merged: list[SessionRecord | CorruptRecord | None] = []
        for old, new in zip(olds, news, strict=True):
            if isinstance(old, CorruptRecord) or isinstance(new, CorruptRecord):
                merged.append(new if isinstance(new, CorruptRecord) else old)
            else:
                merged.append(winner(old, new, deletes_final=self._deletes_final))
        return merged

    async def user_keys(self, user_id: str) -> list[str]:
        """See `AsyncBackend.user_keys`; both stores' keys in ``cutover``."""
        stage = await self.stage()
        if stage is not Stage.CUTOVER:
            return await self._sides(stage)[0].user_keys(user_id)
        keys = await self.old.user_keys(user_id)
        seen = set(keys)
        return keys + [k for k in await self.new.user_keys(user_id) if k not in seen]

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """See `AsyncBackend.forget_user_keys`: both stores (the index is advisory)."""
        stage = await self.stage()
        primary, secondary, _, _ = self._sides(stage)
        await primary.forget_user_keys(user_id, keys)
        if not stage.single:
            try:
                await secondary.forget_user_keys(user_id, keys)
            except SessionflowError as exc:
                logger.warning("secondary user index not pruned: %r", exc)

    async def scan(
        self, cursor: str | None = None, *, count: int = 500, worker: int = 0, workers: int = 1
    ) -> ScanPage:
        """See `AsyncBackend.scan`: the authoritative store's records."""
        primary = self._sides(await self.stage())[0]
        return await primary.scan(cursor, count=count, worker=worker, workers=workers)

    # -- writes -----------------------------------------------------------------------

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`."""
        stage = await self.stage()
        if stage.fenced:
            await self.old.create(record)
            self.stats.count_write("old", "primary", ok=True)
            await self._fenced_second(record.key, lambda: self._create_or_copy(record))
            return
        primary, secondary, name, other = self._sides(stage)
        await self._primary(name, lambda: primary.create(record))
        if not stage.single:
            self._mirror(other, record.key, lambda: copy_record(secondary, record))

    async def _create_or_copy(self, record: SessionRecord) -> None:
        try:
            await self.new.create(record)
        except SessionExists:
            await copy_record(self.new, record)

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],
        removed: Collection[str],
    ) -> None:
        """See `AsyncBackend.save`."""
        stage = await self.stage()
        if stage.fenced:
            await self._fenced_save(record, expected_version, changed, removed)
            return
        primary, secondary, name, other = self._sides(stage)
        await self._primary(
            name,
            lambda: primary.save(
                record, expected_version=expected_version, changed=changed, removed=removed
            ),
        )
        if not stage.single:
            self._mirror(other, record.key, lambda: copy_record(secondary, record))

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """See `AsyncBackend.touch`."""
        stage = await self.stage()
        if stage.fenced:
            live = await self.old.touch(
                key, last_access=last_access, idle_expires_at=idle_expires_at
            )
            await self._fenced_second(
                key,
                lambda: self.new.touch(
                    key, last_access=last_access, idle_expires_at=idle_expires_at
                ),
            )
            return live
        primary, secondary, name, other = self._sides(stage)
        live = await self._primary(
            name,
            lambda: primary.touch(key, last_access=last_access, idle_expires_at=idle_expires_at),
        )
        if live and not stage.single:
            self._mirror(
                other,
                key,
                lambda: secondary.touch(
                    key, last_access=last_access, idle_expires_at=idle_expires_at
                ),
            )
        return live

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`; the other store gets an unconditional tombstone."""
        stage = await self.stage()
        if stage.fenced:
            return await self._fenced_delete(key, tombstone_expires_at, expected_version)
        primary, secondary, name, other = self._sides(stage)
        deleted = await self._primary(
            name,
            lambda: primary.delete(
                key, tombstone_expires_at=tombstone_expires_at, expected_version=expected_version
            ),
        )
        if not stage.single:
            self._mirror(
                other, key, lambda: secondary.delete(key, tombstone_expires_at=tombstone_expires_at)
            )
        return deleted

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`: into the authority, then copied like any write."""
        stage = await self.stage()
        primary, secondary, name, other = self._sides(stage)
        verdict = await self._primary(name, lambda: primary.put_guarded(record))
        if stage.fenced:
            await self._fenced_second(record.key, lambda: copy_record(secondary, record))
        elif not stage.single:
            self._mirror(other, record.key, lambda: copy_record(secondary, record))
        return verdict

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`: each record as `put_guarded` does it."""
        return await put_guarded_each(self, records)

    async def _primary(self, name: str, write: Callable[[], Awaitable[_T]]) -> _T:
        try:
            result = await write()
        except (VersionConflict, SessionNotFound, SessionExists):
            self.stats.count_write(name, "primary", ok=True)
            raise
        except SessionflowError:
            self.stats.count_write(name, "primary", ok=False)
            raise
        self.stats.count_write(name, "primary", ok=True)
        return result

    def _mirror(self, name: str, key: str, write: Callable[[], Awaitable[object]]) -> None:
        async def counted() -> None:
            try:
                await write()
            except BaseException:
                self.stats.count_write(name, "secondary", ok=False)
                raise
            self.stats.count_write(name, "secondary", ok=True)

        self.mirror.submit(key, counted)

    # -- the fenced stage ---------------------------------------------------------------

    async def _fenced_second(self, key: str, write: Callable[[], Awaitable[object]]) -> None:
        """Write the new store's half of a fenced write; on failure queue the key for repair."""
        try:
            await write()
        except SessionflowError:
            self.stats.count_write("new", "fenced", ok=False)
            await self._enqueue([key])
            raise
        self.stats.count_write("new", "fenced", ok=True)

    async def _fenced_save(
        self,
        record: SessionRecord,
        expected_version: int,
        changed: Collection[str],
        removed: Collection[str],
    ) -> None:
        key = record.key
        try:
            await self.old.save(
                record, expected_version=expected_version, changed=changed, removed=removed
            )
        except (VersionConflict, SessionNotFound):
            # The old store may only lag: a live process's copy has not landed yet.
            if not await self._old_caught_up(key, expected_version):
                raise
            await self.old.save(
                record, expected_version=expected_version, changed=changed, removed=removed
            )
        self.stats.count_write("old", "primary", ok=True)
        try:
            await self.new.save(
                record, expected_version=expected_version, changed=changed, removed=removed
            )
        except (VersionConflict, SessionNotFound):
            current = await self.new.get(key)
            if current is not None and (current.tombstone or current.version >= record.version):
                # A process already at `live` wrote the new store first: that write was
                # acknowledged and ours was not. Put its record back over our orphan.
                await self._restore_old(record, current)
                raise VersionConflict(
                    "session changed since it was read", current_version=current.version
                ) from None
            # The new store only lags behind the old one: bring it up to our record.
            await self._fenced_second(key, lambda: copy_record(self.new, record))
            return
        except SessionflowError:
            self.stats.count_write("new", "fenced", ok=False)
            await self._enqueue([key])
            raise
        self.stats.count_write("new", "fenced", ok=True)

    async def _old_caught_up(self, key: str, expected_version: int) -> bool:
        """Copy the new store's record into a lagging old store; True if that was the gap."""
        old, new = await self.old.get(key), await self.new.get(key)
        if new is None or new.tombstone or new.version != expected_version:
            return False
        if old is not None and (old.tombstone or old.version >= expected_version):
            return False
        await copy_record(self.old, new)
        return True

    async def _restore_old(self, ours: SessionRecord, current: SessionRecord) -> None:
        """Put the new store's acknowledged record over our orphan in the old store."""
        try:
            await reconcile_records(self.old, self.new, ours, current, now=self.clock.now())
        except SessionflowError as exc:
            logger.warning("old store not restored after a fenced conflict: %r", exc)
            await self._enqueue([ours.key])

    async def _fenced_delete(
        self, key: str, tombstone_expires_at: float, expected_version: int | None
    ) -> SessionRecord | None:
        old_deleted = await self.old.delete(
            key, tombstone_expires_at=tombstone_expires_at, expected_version=expected_version
        )
        self.stats.count_write("old", "primary", ok=True)
        new_deleted: SessionRecord | None = None

        async def tombstone_new() -> None:
            nonlocal new_deleted
            new_deleted = await self.new.delete(
                key, tombstone_expires_at=tombstone_expires_at, expected_version=expected_version
            )

        await self._fenced_second(key, tombstone_new)
        if expected_version is not None and (old_deleted is None or new_deleted is None):
            # Another delete (a logout) reached one of the stores first and reports success:
            # a conditional delete (a regeneration) must not succeed as well.
            raise SessionNotFound("session deleted meanwhile")
        return winner(old_deleted, new_deleted)

    # -- background ---------------------------------------------------------------------

    async def _reconcile(self, key: str) -> None:
        await reconcile_key(self.old, self.new, key, now=self.clock.now())

    async def _enqueue(self, keys: Iterable[str]) -> None:
        await self.control.enqueue_repairs(list(keys), self.clock.now())

    async def _compare(self, key: str, seen: SessionRecord | None, stage: Stage) -> None:
        """Compare a read with the other store; re-check before calling it a mismatch."""
        other = self._sides(stage)[1]
        if difference(seen, await other.get(key), self.clock.now()) is None:
            return
        if self.mirror.in_flight(key):
            self.stats.false_positives += 1
            return
        old, new = await self.old.get(key), await self.new.get(key)
        now = self.clock.now()
        truth, copy = (old, new) if stage.authority == "old" else (new, old)
        found = difference(truth, copy, now)
        if found is None or self.mirror.in_flight(key):
            self.stats.false_positives += 1
            return
        kind, fields = found
        self.stats.mismatches[kind] += 1
        await self.control.record_mismatch(
            {"key": key_hint(key), "kind": kind, "fields": fields, "stage": stage.value, "at": now}
        )

    async def drain(self) -> None:
        """Wait for every background copy and comparison of this process."""
        await self.mirror.drain()

    async def aclose(self) -> None:
        """Drain background work (keys not copied go to the repair queue), then stop it."""
        await self.mirror.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = ["AsyncMigratingBackend", "default_process_id", "winner"]
