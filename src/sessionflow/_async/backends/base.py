"""The backend contract: what every store of session records provides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from sessionflow._concurrency import async_map_limited
from sessionflow._errors import BackendError, CorruptRecord, SessionflowError
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedResult, GuardedWrite, ScanPage

_T = TypeVar("_T")


@runtime_checkable
class AsyncBackend(Protocol):
    """Storage of `SessionRecord`s keyed by the hashed session id.

    Backends are thin: expiry, merging and validation live in the store above them. They
    guarantee that writes are atomic per record and that a tombstone is never overwritten
    by `save` or `touch`, and they keep a per-user index that may hold stale keys (the
    store prunes it).
    """

    async def create(self, record: SessionRecord) -> None:
        """Store a new record; raise `SessionExists` if any record (tombstones too) has its key."""
        ...

    async def get(self, key: str) -> SessionRecord | None:
        """Return the record (tombstones included) or None; raise `CorruptRecord` if unreadable."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """Return the records of `keys` in order; an unreadable one is returned as its error."""
        ...

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],
        removed: Collection[str],
    ) -> None:
        """Replace a live record whose version is `expected_version` with `record`.

        `changed` and `removed` name the attributes that differ from the stored record, so
        backends that store attributes separately write only those. Raise `VersionConflict`
        if the version differs and `SessionNotFound` if the record is missing or a tombstone.
        """
        ...

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """Move a live record's idle expiry later, without changing version or attributes.

        A touch never moves the expiry backwards: if the record already expires at or after
        `idle_expires_at` (a later touch landed first) nothing is written. Return False if
        the record is missing or a tombstone, True if it is live.
        """
        ...

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """Replace the record with a tombstone that lives until `tombstone_expires_at`.

        A tombstone is written even if no record exists, so a late copy cannot land. Return
        the live record that was deleted, or None. With `expected_version`, raise
        `VersionConflict` if a live record has another version.
        """
        ...

    async def user_keys(self, user_id: str) -> list[str]:
        """Return the keys indexed for a user, oldest first; stale keys may be included."""
        ...

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """Drop keys from a user's index (the store calls this for dead keys it found)."""
        ...

    async def scan(
        self,
        cursor: str | None = None,
        *,
        count: int = 500,
        worker: int = 0,
        workers: int = 1,
    ) -> ScanPage:
        """Return the next page of this worker's share of all records, tombstones included.

        Start with `cursor` None and pass each page's cursor to the next call until it is
        None. A record present for the whole scan is returned at least once; one created or
        deleted meanwhile may or may not be. Memory stays flat: a page holds about `count`
        records.
        """
        ...

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """Copy a record (live or tombstone) unless the target holds its version or a newer one.

        A live record never replaces a tombstone. Used by backfill and repair, so a copy
        can never overwrite newer data or bring a deleted session back.
        """
        ...

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """`put_guarded` for many records, in batches where the store has them; results in order.

        A record the store refuses (too large, unencodable, a corrupt record in the way)
        gets its error in its place; a failure of the store itself raises `BackendError`,
        after which some of the records may have been written (guarded copies can simply
        be sent again). Two records with one key are written in their order.
        """
        ...


def check_storable(backend: AsyncBackend, record: SessionRecord) -> None:
    """Raise the refusal `backend` would give `record` for good, without writing it.

    A store with limits of its own (DynamoDB: the item size, a user index key of at most
    2,048 bytes) provides ``check_storable(record)`` raising `SessionTooLarge` or
    `InvalidAttribute`; a composite forwards to the store it would write. A store without
    one takes any record the session codec produced, and this returns.
    """
    check: Callable[[SessionRecord], None] | None = getattr(backend, "check_storable", None)
    if check is not None:
        check(record)


def deletes_are_final(backend: AsyncBackend) -> bool:
    """Return True if a tombstone in `backend` is final (sessions), False if not.

    A store whose records may come back after a delete at a higher version (conversation
    entries, when the pair exchange a message again) sets ``deletes_are_final = False``;
    the engine then orders two copies by version alone (see `reconcile`).
    """
    return bool(getattr(backend, "deletes_are_final", True))


@runtime_checkable
class AsyncEvictable(AsyncBackend, Protocol):
    """A backend that can drop a live record without leaving a tombstone: a hot tier."""

    async def evict(self, key: str, *, version: int, last_access: float) -> bool:
        """Remove the live record if it still has this version and last access.

        Return False, and change nothing, if it was saved, touched or deleted since it was
        read (or is gone). Used by demotion once the record is safe in the cold tier.
        """
        ...

    async def instance(self) -> str:
        """Name the server instance holding the records (Redis: its run id).

        It changes when the records may have been replaced behind the client's back: a
        restart, or a failover to a replica. The tier then checks its hot copies against
        the cold tier for a while.
        """
        ...


async def put_guarded_each(
    backend: AsyncBackend, records: Sequence[SessionRecord], *, limit: int = 16
) -> list[GuardedResult]:
    """`put_guarded_many` for a store without batch writes: one `put_guarded` per record.

    Up to `limit` run at a time; two records with one key are never in flight together.
    """
    return await guarded_each(backend.put_guarded, records, key=lambda r: r.key, limit=limit)


async def guarded_each(
    write: Callable[[_T], Awaitable[GuardedResult]],
    items: Sequence[_T],
    *,
    key: Callable[[_T], object],
    limit: int,
) -> list[GuardedResult]:
    """Run one guarded `write` per item, `limit` at a time; results in order.

    An item the store refuses gets its error in its place; a `BackendError` (the store
    itself failed) is raised. Items with one `key` run one at a time, in their order.
    """

    async def one(item: _T) -> GuardedResult:
        try:
            return await write(item)
        except BackendError:
            raise
        except SessionflowError as exc:
            return exc

    if len({key(item) for item in items}) < len(items):
        limit = 1  # a repeated key must land in order
    return await async_map_limited(one, items, limit)
