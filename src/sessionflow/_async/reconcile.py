"""Bringing one key's two copies together: the step shared by mirror, repair, verify, rollback.

The rule, the same in every stage (docs/migration.md explains why it is safe in each):
a tombstone on either side wins; otherwise the higher version wins; at equal versions the
new store's copy wins if the contents differ (only a half-failed fenced write leaves such
an orphan, always in the old store), and the later idle expiry wins if only expiry differs.
Records that expired are left alone: they read as no session on both sides.

Stores whose deletes are not final (conversation entries come back with a later message)
order two copies by version alone: the higher version wins, tombstone or not, and at equal
versions the new store's copy wins if they differ. A tombstone's version is above every
live version before it, so a stale copy still cannot undo a delete.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from sessionflow._async.backends.base import AsyncBackend, deletes_are_final, put_guarded_each
from sessionflow._errors import CorruptRecord
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedResult, GuardedWrite


class Outcome(enum.StrEnum):
    """What reconciling a key found and did."""

    IN_SYNC = "in_sync"
    COPIED_TO_NEW = "copied_to_new"
    COPIED_TO_OLD = "copied_to_old"
    DELETED_IN_NEW = "deleted_in_new"
    DELETED_IN_OLD = "deleted_in_old"
    EXPIRED = "expired"
    CORRUPT = "corrupt"


def same_content(a: SessionRecord, b: SessionRecord) -> bool:
    """Return True if two live records hold the same session (expiry and access aside)."""
    return (
        a.version == b.version
        and a.user_id == b.user_id
        and a.absolute_expires_at == b.absolute_expires_at
        and dict(a.attributes) == dict(b.attributes)
    )


async def copy_record(target: AsyncBackend, record: SessionRecord) -> GuardedWrite:
    """Copy `record` into `target` with a guarded write, carrying a later idle expiry over.

    The guard keeps a newer version or a tombstone; when it keeps the same version, the
    record's idle expiry still moves the target's forward (a touch never moves it back).
    """
    verdict = await target.put_guarded(record)
    await _carry_expiry(target, record, verdict)
    return verdict


async def copy_records(
    target: AsyncBackend, records: Sequence[SessionRecord]
) -> list[GuardedResult]:
    """`copy_record` for many records, through the target's batch write."""
    return await _carry_expiries(target, records, await target.put_guarded_many(records))


async def copy_each(
    target: AsyncBackend, records: Sequence[SessionRecord], *, limit: int = 16
) -> list[GuardedResult]:
    """`copy_record` for many records: one guarded write each, up to `limit` at a time.

    For jobs that run all day (the tier's sweeper and flusher): on DynamoDB a conditional
    put costs one write unit, where `copy_records`' transactions cost two per item.
    """
    return await _carry_expiries(
        target, records, await put_guarded_each(target, records, limit=limit)
    )


async def _carry_expiries(
    target: AsyncBackend, records: Sequence[SessionRecord], results: list[GuardedResult]
) -> list[GuardedResult]:
    for record, result in zip(records, results, strict=True):
        if isinstance(result, GuardedWrite):
            await _carry_expiry(target, record, result)
    return results


async def _carry_expiry(target: AsyncBackend, record: SessionRecord, verdict: GuardedWrite) -> None:
    if verdict is GuardedWrite.NEWER_KEPT and not record.tombstone:
        await target.touch(
            record.key, last_access=record.last_access, idle_expires_at=record.idle_expires_at
        )


async def reconcile_key(old: AsyncBackend, new: AsyncBackend, key: str, *, now: float) -> Outcome:
    """Make `old` and `new` agree on `key` by the rule above; return what was done."""
    try:
        old_record = await old.get(key)
        new_record = await new.get(key)
    except CorruptRecord:
        return Outcome.CORRUPT
    return await reconcile_records(old, new, old_record, new_record, now=now)


async def reconcile_records(
    old: AsyncBackend,
    new: AsyncBackend,
    old_record: SessionRecord | None,
    new_record: SessionRecord | None,
    *,
    now: float,
) -> Outcome:
    """Like `reconcile_key`, for records already read from both stores."""
    if not deletes_are_final(old):
        return await _reconcile_by_version(old, new, old_record, new_record)
    return await _reconcile_deletes_final(old, new, old_record, new_record, now=now)


async def _reconcile_deletes_final(  # noqa: PLR0911 - one return per rule, in order
    old: AsyncBackend,
    new: AsyncBackend,
    old_record: SessionRecord | None,
    new_record: SessionRecord | None,
    *,
    now: float,
) -> Outcome:
    """Reconcile by the rule for stores whose deletes are final (sessions)."""
    tombstones = [r for r in (old_record, new_record) if r is not None and r.tombstone]
    if tombstones:
        tomb = max(tombstones, key=lambda r: r.version)
        if old_record is None or not old_record.tombstone:
            await old.delete(tomb.key, tombstone_expires_at=tomb.expires_at)
            return Outcome.DELETED_IN_OLD
        if new_record is None or not new_record.tombstone:
            await new.delete(tomb.key, tombstone_expires_at=tomb.expires_at)
            return Outcome.DELETED_IN_NEW
        return Outcome.IN_SYNC
    live = [r for r in (old_record, new_record) if r is not None and r.expires_at > now]
    if not live:
        return Outcome.EXPIRED if old_record or new_record else Outcome.IN_SYNC
    if old_record is None or new_record is None:
        source = old_record or new_record
        assert source is not None  # noqa: S101 - one of them is live
        if source.expires_at <= now:
            return Outcome.EXPIRED
        return await _copy(old, new, source, to_new=new_record is None)
    if old_record.version != new_record.version:
        to_new = old_record.version > new_record.version
        return await _copy(old, new, old_record if to_new else new_record, to_new=to_new)
    if not same_content(old_record, new_record):
        # An orphan of a half-failed fenced write: the new store's copy is the one that
        # was acknowledged. Replace the old store's copy at exactly its version.
        await old.save(
            new_record,
            expected_version=old_record.version,
            changed=set(new_record.attributes),
            removed=set(old_record.attributes) - set(new_record.attributes),
        )
        return Outcome.COPIED_TO_OLD
    if old_record.idle_expires_at != new_record.idle_expires_at:
        later = max(old_record, new_record, key=lambda r: r.idle_expires_at)
        target = new if later is old_record else old
        await target.touch(
            later.key, last_access=later.last_access, idle_expires_at=later.idle_expires_at
        )
        return Outcome.COPIED_TO_NEW if target is new else Outcome.COPIED_TO_OLD
    return Outcome.IN_SYNC


async def _copy(
    old: AsyncBackend, new: AsyncBackend, record: SessionRecord, *, to_new: bool
) -> Outcome:
    await copy_record(new if to_new else old, record)
    return Outcome.COPIED_TO_NEW if to_new else Outcome.COPIED_TO_OLD


async def _reconcile_by_version(
    old: AsyncBackend,
    new: AsyncBackend,
    old_record: SessionRecord | None,
    new_record: SessionRecord | None,
) -> Outcome:
    """Reconcile by the rule for stores whose deletes are not final: higher version wins."""
    if old_record is None and new_record is None:
        return Outcome.IN_SYNC
    old_version = -1 if old_record is None else old_record.version
    new_version = -1 if new_record is None else new_record.version
    if old_version != new_version:
        to_new = old_version > new_version
        source = old_record if to_new else new_record
        assert source is not None  # noqa: S101 - the higher version exists
        await copy_record(new if to_new else old, source)
        if source.tombstone:
            return Outcome.DELETED_IN_NEW if to_new else Outcome.DELETED_IN_OLD
        return Outcome.COPIED_TO_NEW if to_new else Outcome.COPIED_TO_OLD
    assert old_record is not None  # noqa: S101 - equal versions: both exist
    assert new_record is not None  # noqa: S101
    if old_record.tombstone == new_record.tombstone and (
        old_record.tombstone or same_content(old_record, new_record)
    ):
        return Outcome.IN_SYNC
    # Two writers wrote one version, one per store (possible only around cutover): the
    # new store's copy is the one that was acknowledged last. Replace the old one exactly.
    await old.save(
        new_record,
        expected_version=old_record.version,
        changed=set(new_record.attributes),
        removed=set(old_record.attributes) - set(new_record.attributes),
    )
    return Outcome.DELETED_IN_OLD if new_record.tombstone else Outcome.COPIED_TO_OLD
